//! The load: commands issued as the orchestrator would write them (in a
//! burst for throughput, paced for latency), and results read back with the
//! time they became visible.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use governor::clock::FakeRelativeClock;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, FutureRecord, Producer, ThreadedProducer};
use shoal_kafka::outputs::MessageMeta;
use shoal_kafka::trace::DecisionSampler;
use shoal_protocol::messages::{Command, CommandResult, WireMessage};

use super::cli::Export;
use crate::{alert_command, producer_for};

/// The bench's stand-in for the orchestrator's sampling of decisions: the
/// orchestrator's own [`DecisionSampler`], on a clock that advances one
/// decision interval per command. The backlog is issued in a burst while the
/// consumers are paused, far faster than an orchestrator would decide it;
/// the clock makes the sampler see the commands at the rate a saturated
/// pipeline decides them instead (the export-off run's throughput in the
/// same round), so its cap binds as it would in a deployment.
pub(crate) struct Decider {
    sampler: DecisionSampler<FakeRelativeClock>,
    clock: FakeRelativeClock,
    interval: Duration,
}

impl Decider {
    pub(crate) fn new(export: &Export, decided_per_sec: f64) -> Self {
        let clock = FakeRelativeClock::default();
        Self {
            sampler: DecisionSampler::with_clock(export.ratio, export.max_traced_per_sec, clock.clone()),
            clock,
            interval: Duration::from_secs_f64(1.0 / decided_per_sec.max(1.0)),
        }
    }

    /// The next command's trace context: a sampled `traceparent` when it
    /// is traced, none when not (as the orchestrator writes them).
    fn next(&self) -> Option<shoal_kafka::headers::TraceParent> {
        self.clock.advance(self.interval);
        self.sampler.draw().then(|| {
            let (trace, span) = (rand::random::<u128>().max(1), rand::random::<u64>().max(1));
            shoal_kafka::headers::TraceParent {
                traceparent: format!("00-{trace:032x}-{span:016x}-01"),
                tracestate: None,
            }
        })
    }
}

/// One command to issue: partition, key, body, and the headers the
/// orchestrator would have written on it.
pub(crate) type Issue = (i32, String, Vec<u8>, OwnedHeaders);

/// Keys of the throughput backlog: 20 per commands partition.
const BACKLOG_KEYS: usize = 240;

/// The backlog: `n` commands over [`BACKLOG_KEYS`] keys, encoded before
/// timing starts. Key `k` goes to partition `k % partitions`, so every
/// partition (and every worker, holding as many partitions as the others)
/// gets the same share. Hashed keys gave shares of 40/32/28% in one
/// pipeline and 35/35/30% in another, fixed for the pipeline's life: the
/// busiest worker finishing last made identical pipelines differ by up to
/// 18% in one round.
pub(crate) fn backlog(n: usize, partitions: i32, sampling: Option<&Decider>) -> Vec<Issue> {
    (0..n)
        .map(|i| {
            let k = i % BACKLOG_KEYS;
            let command = alert_command(&format!("key-{k}"), (i / BACKLOG_KEYS) as u64 + 1);
            let partition = i32::try_from(k).unwrap() % partitions;
            (partition, command.key.clone(), command.encode(), orchestrator_headers(&command, sampling))
        })
        .collect()
}

/// The headers the orchestrator writes on a command (made by the same
/// code): type, schema version, producer, command id, and, when it exports,
/// a `traceparent` on every command whose sampled flag is drawn by the
/// orchestrator's sampler (see `shoal_kafka::trace` and [`Decider`]). The bench stands in for the
/// orchestrator, so workers parse, follow and carry on what they would in a
/// deployment.
fn orchestrator_headers(command: &Command, sampling: Option<&Decider>) -> OwnedHeaders {
    let trace = sampling.and_then(Decider::next);
    let meta = MessageMeta { message_type: "command", producer_id: "bench-issuer", command_id: Some(command.id) };
    meta.headers(None, trace.as_ref())
}

/// Whether issued headers mark the command as traced.
pub(crate) fn is_sampled(headers: &OwnedHeaders) -> bool {
    shoal_kafka::headers::HeaderView(Some(headers)).trace_parent().is_some_and(|p| p.sampled())
}

/// A producer that does not wait for each acknowledgement, with a linger
/// of 5 ms; `queue.buffering.max.messages` when given.
pub(crate) fn batching_producer(bootstrap: &str, queue: Option<&str>) -> ThreadedProducer<DefaultProducerContext> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap).set("enable.idempotence", "true").set("acks", "all");
    config.set("linger.ms", "5");
    if let Some(queue) = queue {
        config.set("queue.buffering.max.messages", queue);
    }
    config.create().unwrap()
}

/// A producer that sends each record at once (`linger.ms=0`, Nagle off):
/// the raw loop's latency settings.
pub(crate) fn latency_producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap).set("enable.idempotence", "true").set("acks", "all");
    config.set("linger.ms", "0").set("socket.nagle.disable", "true");
    config.create().unwrap()
}

/// Enqueues `record`, waiting while the producer's queue is full.
pub(crate) fn send_waiting<K, P>(producer: &ThreadedProducer<DefaultProducerContext>, mut record: BaseRecord<'_, K, P>)
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    while let Err((_, r)) = producer.send(record) {
        record = r;
        std::thread::sleep(Duration::from_millis(1)); // backoff: producer queue full
    }
}

/// Issues `commands` as fast as the producer takes them (not waiting for
/// each acknowledgement), then flushes.
pub(crate) fn issue_backlog(bootstrap: &str, topic: &str, commands: &[Issue]) {
    let producer = batching_producer(bootstrap, Some("1000000"));
    for (partition, key, body, headers) in commands {
        let record = BaseRecord::to(topic).partition(*partition).key(key).payload(body).headers(headers.clone());
        send_waiting(&producer, record);
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

fn paced_ticks(seconds: u64) -> u64 {
    seconds * 100
}

/// How many commands [`issue_paced`] issues.
fn paced_count(rate: usize, seconds: u64) -> usize {
    (rate / 100).max(1) * usize::try_from(paced_ticks(seconds)).unwrap_or(usize::MAX)
}

/// Issues commands at `rate` per second for `seconds`; returns when each
/// command was issued.
async fn issue_paced(
    bootstrap: &str,
    topic: &str,
    rate: usize,
    seconds: u64,
    sampling: Option<&Decider>,
) -> HashMap<uuid::Uuid, chrono::DateTime<chrono::Utc>> {
    let producer = producer_for(bootstrap);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = (rate / 100).max(1);
    let mut n = 0;
    let mut issued = HashMap::new();
    for _ in 0..paced_ticks(seconds) {
        tick.tick().await;
        let commands: Vec<_> =
            (0..per_tick).map(|i| alert_command(&format!("key-{}", (n + i) % 200), (n + i) as u64)).collect();
        let bodies: Vec<(Vec<u8>, OwnedHeaders)> =
            commands.iter().map(|c| (c.encode(), orchestrator_headers(c, sampling))).collect();
        futures::future::join_all(commands.iter().zip(&bodies).map(|(c, (body, headers))| {
            let record = FutureRecord::to(topic).key(&c.key).payload(body).headers(headers.clone());
            producer.send(record, Duration::from_secs(10))
        }))
        .await
        .into_iter()
        .for_each(|sent| {
            sent.map_err(|(e, _)| e).expect("command issued");
        });
        issued.extend(commands.iter().map(|c| (c.id, c.issued_at)));
        n += per_tick;
    }
    issued
}

/// Reads `topic` from the beginning (read_committed), stamping each
/// record with the time it was received.
pub(crate) struct TimedReader {
    consumer: BaseConsumer,
}

/// A result with when it was received: as an instant and as a time of day.
pub(crate) type Received = (Instant, chrono::DateTime<chrono::Utc>, CommandResult);

impl TimedReader {
    pub(crate) fn new(bootstrap: &str, topic: &str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("bench-reader-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "10")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        Self { consumer }
    }

    /// Stops reading (before the topic is deleted).
    pub(crate) fn close(&self) {
        self.consumer.unsubscribe();
    }

    /// Reads until `n` results arrived; returns (received at, result).
    pub(crate) fn read(&self, n: usize) -> Vec<Received> {
        let mut got = Vec::with_capacity(n);
        let deadline = Instant::now() + Duration::from_secs(600);
        while got.len() < n {
            assert!(Instant::now() < deadline, "only {} of {n} results after 10 minutes", got.len());
            if let Some(Ok(message)) = self.consumer.poll(Duration::from_millis(50)) {
                let result = CommandResult::decode(message.payload().unwrap_or_default()).unwrap();
                got.push((Instant::now(), chrono::Utc::now(), result));
            }
        }
        got
    }
}

/// Issues a paced stream while the reader receives it concurrently, and
/// returns each result's latency, ms from issue to receipt.
pub(crate) async fn paced_latencies(
    reader: &std::sync::Arc<TimedReader>,
    bootstrap: &str,
    topic: &str,
    rate: usize,
    seconds: u64,
    sampling: Option<&Decider>,
) -> Vec<f64> {
    let expected = paced_count(rate, seconds);
    let receiving = {
        let reader = reader.clone();
        tokio::task::spawn_blocking(move || reader.read(expected))
    };
    let issued = issue_paced(bootstrap, topic, rate, seconds, sampling).await;
    receiving
        .await
        .unwrap()
        .into_iter()
        .filter_map(|(_, at, r)| {
            issued.get(&r.command_id).map(|t| (at - *t).num_microseconds().unwrap_or(0) as f64 / 1000.0)
        })
        .collect()
}
