//! The baseline: a raw librdkafka consumer → producer loop, no Shoal.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::BaseRecord;
use shoal_protocol::messages::{Command, CommandResult, ResultStatus, WireMessage};
use shoal_worker::handlers::alert::alert;
use shoal_worker::handlers::payload;

use super::load::{batching_producer, latency_producer, send_waiting};

/// The run of the raw loop with the latency settings (see [`raw_loop`]);
/// the run named `raw-librdkafka` is the same loop with librdkafka's
/// defaults for linger and fetch wait.
pub(crate) const LATENCY_RUN: &str = "raw-librdkafka-latency";

/// The baseline loop, in a child process (`shoal-bench --raw-loop
/// <input>,<output>`) so that it is paused, resumed and its CPU counted
/// exactly like the workers (pausing a thread instead left librdkafka
/// prefetching the backlog meanwhile, which flattered the baseline). Runs
/// until killed.
///
/// With `latency` (`--raw-latency`), the settings docs/benchmarks.md
/// recommends for latency: the producer sends at once (`linger.ms=0`
/// instead of 5), the consumer's fetch returns after at most 1 ms without
/// data (`fetch.wait.max.ms=1` instead of 500) and both disable Nagle's
/// algorithm. Without, librdkafka's defaults.
pub(crate) fn raw_loop(bootstrap: &str, input: &str, output: &str, latency: bool) {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{input}.raw"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true");
    if latency {
        config.set("fetch.wait.max.ms", "1").set("socket.nagle.disable", "true");
    }
    let consumer: BaseConsumer = config.create().unwrap();
    consumer.subscribe(&[input]).unwrap();
    let producer = if latency { latency_producer(bootstrap) } else { batching_producer(bootstrap, None) };
    loop {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else { continue };
        // The same application work as a worker's: decode the command, run
        // the same skill on it (the backlog's commands are `raise_alert`),
        // encode a result keyed like it. What the workers spend beyond this
        // is the price of Shoal's pipeline.
        let command = Command::decode(message.payload().unwrap_or_default()).unwrap();
        let now = chrono::Utc::now();
        let (status, answer) = match payload(&command).and_then(|p| alert(&p)) {
            Ok(answer) => (ResultStatus::Succeeded, answer),
            Err(error) => (ResultStatus::Failed, serde_json::json!({ "error": error.to_string() })),
        };
        let result = CommandResult::answering(&command, "raw", status, answer, (now, now));
        let body = result.encode();
        send_waiting(&producer, BaseRecord::to(output).key(&command.key).payload(&body));
    }
}
