//! `shoal-bench`: measures the real worker pipeline against a raw
//! librdkafka consume→produce loop on the same broker, in the same run.
//!
//! For each of: raw baseline, Shoal at-least-once, Shoal exactly-once:
//! - throughput: with the consumers running and their group settled, N
//!   commands are issued as fast as a producer takes them, timed from the
//!   first issued to the last result visible to a `read_committed` reader;
//! - latency: commands are issued at a fixed rate and each result's
//!   end-to-end latency (issue → visible to the reader) is recorded;
//!   percentiles p50/p90/p99/max.
//!
//! Ratios are reported against the raw baseline. Both Shoal modes are also
//! measured with OTLP trace export on (to a real OTLP receiver in this
//! process, OTLP/HTTP): with the default sampling (every decision, at most
//! `DEFAULT_MAX_TRACED_PER_SEC` traced a second), with 10% traced, and with
//! every decision traced, and the export-on / export-off throughput ratios
//! are reported. A control per mode (export off again) measures how far two
//! identical pipelines differ in the same run: the noise the ratios carry.

// A CLI that reports by printing.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use clap::Parser;
use governor::clock::FakeRelativeClock;
use nix::sys::signal::Signal;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, FutureRecord, Producer, ThreadedProducer};
use shoal_kafka::outputs::MessageMeta;
use shoal_kafka::settings::TopicsSettings;
use shoal_kafka::trace::DecisionSampler;
use shoal_protocol::messages::{Command, WireMessage};
use shoal_tools::otlp::Receiver;
use shoal_tools::{Proc, alert_command, bin, producer_for, topic_env, topics_named};

/// Benchmark of the worker pipeline against raw librdkafka.
#[derive(Debug, Clone, Parser)]
#[command(name = "shoal-bench", version)]
struct Cli {
    /// Commands in the throughput backlog (large, so start-up is a small
    /// part of the timed drain).
    #[arg(long, default_value_t = 120_000)]
    backlog: usize,
    /// Commands per second in the latency phase.
    #[arg(long, default_value_t = 500)]
    rate: usize,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Workers (Shoal runs).
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Broker.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Rounds of all runs; each run's median throughput is reported, and
    /// its latencies over all rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Measure only these runs (comma-separated names, e.g.
    /// `shoal-at-least-once,shoal-at-least-once-otlp`), for profiling; the
    /// summary lines need all runs.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Sample ratio of the `-otlp10` runs, uncapped (0.1 unless set: the
    /// names keep the 10). At 0, export is on but nothing is traced, which isolates
    /// the cost of the machinery from that of the spans.
    #[arg(long, default_value_t = 0.1)]
    sampled_ratio: f64,
    /// Decisions a second a saturated orchestrator is assumed to make until
    /// an export-off run of the same delivery mode has measured it (the
    /// first drains of the first round, or all of them with `--only`
    /// leaving out the export-off runs); capped sampling draws at this pace.
    #[arg(long, default_value_t = 60_000.0)]
    decided_per_sec: f64,
    /// Internal: run the raw baseline loop from `<input>,<output>` (the
    /// bench starts itself with this to measure the baseline).
    #[arg(long, hide = true, value_name = "INPUT,OUTPUT")]
    raw_loop: Option<String>,
}

struct Measured {
    name: &'static str,
    throughput: f64,
    latencies_ms: Vec<f64>,
    /// Throughput of each round (one entry until rounds are combined).
    rounds: Vec<f64>,
    /// Workers' CPU µs per command in the throughput phase, each round.
    cpu_us: Vec<f64>,
}

/// One run's rounds combined: the median throughput, all latencies.
fn median_round(rounds: Vec<Measured>) -> Measured {
    // In round order: `paired_ratio` pairs rounds of two runs.
    let throughputs: Vec<f64> = rounds.iter().map(|m| m.throughput).collect();
    let median = median(throughputs.clone());
    let mut latencies: Vec<f64> = rounds.iter().flat_map(|m| m.latencies_ms.iter().copied()).collect();
    latencies.sort_by(f64::total_cmp);
    let mut cpu_us: Vec<f64> = rounds.iter().flat_map(|m| m.cpu_us.iter().copied()).collect();
    cpu_us.sort_by(f64::total_cmp);
    Measured { name: rounds[0].name, throughput: median, latencies_ms: latencies, rounds: throughputs, cpu_us }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The median over rounds of `a`'s throughput over `b`'s in the same round.
/// Runs of one round follow each other within a minute, so a slow spell of
/// the shared machine (it swings throughput by ±25% over minutes) touches
/// both sides of each ratio alike; a ratio of two medians taken from
/// different rounds does not have that property.
fn paired_ratio(a: &Measured, b: &Measured) -> f64 {
    median(round_ratios(a, b))
}

/// `a`'s throughput over `b`'s, round by round.
fn round_ratios(a: &Measured, b: &Measured) -> Vec<f64> {
    a.rounds.iter().zip(&b.rounds).map(|(x, y)| x / y).collect()
}

/// Two-sided 95% quantiles of Student's t distribution for 1 to 30 degrees
/// of freedom (any statistics table); 1.96 (the normal's) beyond.
const T95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
    2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/// The geometric mean of per-round ratios with its 95% confidence interval
/// (a t interval on their logarithms, so that 0.9 and 1/0.9 weigh alike);
/// `None` with fewer than two rounds. With the ±10% spread of one round on
/// this machine, five rounds leave an interval about ±10% wide: the
/// controls' ratio shows whether a difference is more than noise.
fn ratio_interval(ratios: &[f64]) -> Option<(f64, f64, f64)> {
    let n = ratios.len();
    if n < 2 {
        return None;
    }
    let logs: Vec<f64> = ratios.iter().map(|r| r.ln()).collect();
    let mean = logs.iter().sum::<f64>() / n as f64;
    let variance = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = T95.get(n - 2).copied().unwrap_or(1.96) * (variance / n as f64).sqrt();
    Some((mean.exp(), (mean - half).exp(), (mean + half).exp()))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The bench's stand-in for the orchestrator's sampling of decisions: the
/// orchestrator's own [`DecisionSampler`], on a clock that advances one
/// decision interval per command. The backlog is issued in a burst while the
/// consumers are paused, far faster than an orchestrator would decide it;
/// the clock makes the sampler see the commands at the rate a saturated
/// pipeline decides them instead (the export-off run's throughput in the
/// same round), so its cap binds as it would in a deployment.
struct Decider {
    sampler: DecisionSampler<FakeRelativeClock>,
    clock: FakeRelativeClock,
    interval: Duration,
}

impl Decider {
    fn new(export: &Export, decided_per_sec: f64) -> Self {
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

/// OTLP export of a run's workers, and how the decisions they process were
/// sampled.
#[derive(Debug, Clone)]
struct Export {
    endpoint: String,
    ratio: f64,
    /// `observability.max_traced_per_sec` (0: no cap).
    max_traced_per_sec: u32,
}

/// One command to issue: partition, key, body, and the headers the
/// orchestrator would have written on it.
type Issue = (i32, String, Vec<u8>, rdkafka::message::OwnedHeaders);

/// Keys of the throughput backlog: 20 per commands partition.
const BACKLOG_KEYS: usize = 240;

/// The backlog: `n` commands over [`BACKLOG_KEYS`] keys, encoded before
/// timing starts. Key `k` goes to partition `k % partitions`, so every
/// partition (and every worker, holding as many partitions as the others)
/// gets the same share. Hashed keys gave shares of 40/32/28% in one
/// pipeline and 35/35/30% in another, fixed for the pipeline's life: the
/// busiest worker finishing last made identical pipelines differ by up to
/// 18% in one round.
fn backlog(n: usize, partitions: i32, sampling: Option<&Decider>) -> Vec<Issue> {
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
fn orchestrator_headers(command: &Command, sampling: Option<&Decider>) -> rdkafka::message::OwnedHeaders {
    let trace = sampling.and_then(Decider::next);
    let meta = MessageMeta { message_type: "command", producer_id: "bench-issuer", command_id: Some(command.id) };
    meta.headers(None, trace.as_ref())
}

/// Whether issued headers mark the command as traced.
fn is_sampled(headers: &rdkafka::message::OwnedHeaders) -> bool {
    shoal_kafka::headers::HeaderView(Some(headers)).trace_parent().is_some_and(|p| p.sampled())
}

/// Enqueues `record`, waiting while the producer's queue is full.
fn send_waiting<K, P>(producer: &ThreadedProducer<DefaultProducerContext>, mut record: BaseRecord<'_, K, P>)
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
fn issue_backlog(bootstrap: &str, topic: &str, commands: &[Issue]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
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
) -> std::collections::HashMap<uuid::Uuid, chrono::DateTime<chrono::Utc>> {
    let producer = producer_for(bootstrap);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = (rate / 100).max(1);
    let mut n = 0;
    let mut issued = std::collections::HashMap::new();
    for _ in 0..paced_ticks(seconds) {
        tick.tick().await;
        let commands: Vec<_> =
            (0..per_tick).map(|i| alert_command(&format!("key-{}", (n + i) % 200), (n + i) as u64)).collect();
        let bodies: Vec<(Vec<u8>, rdkafka::message::OwnedHeaders)> =
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
struct TimedReader {
    consumer: BaseConsumer,
}

impl TimedReader {
    fn new(bootstrap: &str, topic: &str) -> Self {
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

    /// Reads until `n` results arrived; returns (received at, result).
    fn read(&self, n: usize) -> Vec<(Instant, chrono::DateTime<chrono::Utc>, shoal_protocol::messages::CommandResult)> {
        let mut got = Vec::with_capacity(n);
        let deadline = Instant::now() + Duration::from_secs(600);
        while got.len() < n {
            assert!(Instant::now() < deadline, "only {} of {n} results after 10 minutes", got.len());
            if let Some(Ok(message)) = self.consumer.poll(Duration::from_millis(50)) {
                let result =
                    shoal_protocol::messages::CommandResult::decode(message.payload().unwrap_or_default()).unwrap();
                got.push((Instant::now(), chrono::Utc::now(), result));
            }
        }
        got
    }
}

/// Issues a paced stream while the reader receives it concurrently, and
/// returns each result's latency, ms from issue to receipt.
async fn paced_latencies(
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

/// The baseline: a raw librdkafka consumer → producer loop, no Shoal.
/// Deletes a run's topics (a failure is reported, not fatal: the numbers
/// are measured already).
async fn delete_topics(bootstrap: &str, topics: &TopicsSettings) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        match ClientConfig::new().set("bootstrap.servers", bootstrap).create() {
            Ok(admin) => admin,
            Err(error) => return eprintln!("bench: could not delete the run's topics: {error}"),
        };
    let names: Vec<&str> = topics.all().iter().map(|(_, t)| t.name.as_str()).collect();
    if let Err(error) = admin.delete_topics(&names, &AdminOptions::new()).await {
        eprintln!("bench: could not delete the run's topics: {error}");
    }
}

/// The baseline: a raw librdkafka consumer → producer loop, no Shoal, in a
/// child process (`shoal-bench --raw-loop <input>,<output>`) so that it is
/// paused, resumed and its CPU counted exactly like the workers (pausing a
/// thread instead left librdkafka prefetching the backlog meanwhile, which
/// flattered the baseline). Runs until killed.
fn raw_loop(bootstrap: &str, input: &str, output: &str) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{input}.raw"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .create()
        .unwrap();
    consumer.subscribe(&[input]).unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    loop {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else { continue };
        // The same work as the worker's framing: decode the command, encode
        // a result keyed like it (the handler itself is trivial).
        let command = shoal_protocol::messages::Command::decode(message.payload().unwrap_or_default()).unwrap();
        let now = chrono::Utc::now();
        let result = shoal_protocol::messages::CommandResult {
            schema_version: shoal_protocol::messages::SCHEMA_VERSION,
            command_id: command.id,
            kind: command.kind.clone(),
            key: command.key.clone(),
            seq: command.seq,
            worker_id: "raw".into(),
            status: shoal_protocol::messages::ResultStatus::Succeeded,
            output: serde_json::json!({}),
            started_at: now,
            finished_at: now,
            sequence: None,
        };
        let body = result.encode();
        send_waiting(&producer, BaseRecord::to(output).key(&command.key).payload(&body));
    }
}

/// The consumers under test: raw loop or Shoal worker processes.
/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of them, in clock ticks.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    // /proc reports USER_HZ ticks, 100 per second on Linux whatever the
    // kernel's own tick rate.
    ticks / 100.0
}

/// The processes under test: the raw loop or the Shoal workers.
struct Consumers {
    workers: Vec<Proc>,
}

impl Consumers {
    /// CPU seconds used so far by the processes.
    fn cpu(&self) -> f64 {
        self.workers.iter().map(|w| cpu_seconds(w.pid())).sum()
    }

    fn start(
        cli: &Cli,
        run: &str,
        topics: &TopicsSettings,
        mode: Option<&str>,
        otlp: Option<&Export>,
        dir: &std::path::Path,
    ) -> Self {
        let mut consumers = Self { workers: Vec::new() };
        match mode {
            None => {
                let me = std::env::current_exe().unwrap();
                let topics = format!("{},{}", topics.commands.name, topics.results.name);
                let env = [("KAFKA_BOOTSTRAP_SERVERS".to_string(), cli.bootstrap.clone())];
                consumers.workers.push(Proc::spawn("raw", &me, &["--raw-loop", &topics], &env, dir));
            }
            Some(mode) => {
                for i in 1..=cli.workers {
                    let mut env = vec![
                        ("SHOAL__KAFKA__BOOTSTRAP_SERVERS".to_string(), cli.bootstrap.clone()),
                        ("SHOAL__DELIVERY__MODE".into(), mode.to_string()),
                        ("SHOAL__DELIVERY__TRANSACTIONAL_ID_PREFIX".into(), format!("bench.{run}")),
                        ("SHOAL__WORKER__ID".into(), format!("b-{i}")),
                        ("SHOAL__WORKER__GROUP_ID".into(), format!("bench.{run}.workers")),
                        ("SHOAL__TOPICS__CREATE".into(), "false".into()),
                        ("RUST_LOG".into(), std::env::var("SHOAL_BENCH_WORKER_LOG").unwrap_or_else(|_| "warn".into())),
                        ("SHOAL__OBSERVABILITY__LISTEN".into(), String::new()),
                    ];
                    if let Some(export) = otlp {
                        env.extend([
                            ("SHOAL__OBSERVABILITY__OTLP_ENABLED".to_string(), "true".to_string()),
                            ("SHOAL__OBSERVABILITY__SAMPLE_RATIO".into(), export.ratio.to_string()),
                            ("SHOAL__OBSERVABILITY__MAX_TRACED_PER_SEC".into(), export.max_traced_per_sec.to_string()),
                            // OTLP/HTTP: the receiver then counts spans
                            // without decoding them (see `otlp`), so it
                            // takes little of the CPU the workers share.
                            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "http/protobuf".into()),
                            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), export.endpoint.clone()),
                        ]);
                    }
                    env.extend(topic_env(topics));
                    consumers.workers.push(Proc::spawn(&format!("b-{i}"), &bin("shoal-worker"), &[], &env, dir));
                }
            }
        }
        consumers
    }

    /// Stops consuming (workers: SIGSTOP, well inside the group's session
    /// timeout) so a backlog can be issued without the consumers competing
    /// with the issuer for the CPU.
    fn pause(&self) {
        for w in &self.workers {
            w.signal(Signal::SIGSTOP);
        }
    }

    fn resume(&self) {
        for w in &self.workers {
            w.signal(Signal::SIGCONT);
        }
    }

    fn stop(self) {
        for w in &self.workers {
            w.signal(Signal::SIGTERM);
        }
        for mut w in self.workers {
            tokio::task::block_in_place(|| w.wait_exit(Duration::from_secs(30)));
        }
    }
}

/// One pipeline under test on its own topics and consumer group: started,
/// its group settled, then measured phase by phase.
struct Pipeline {
    name: &'static str,
    bootstrap: String,
    export: Option<Export>,
    topics: TopicsSettings,
    reader: std::sync::Arc<TimedReader>,
    consumers: Consumers,
    latencies_ms: Vec<f64>,
    /// Commands drained, seconds spent draining them, and the workers' CPU
    /// seconds meanwhile, over all drains.
    drained: usize,
    drain_secs: f64,
    cpu_secs: f64,
}

impl Pipeline {
    async fn start(cli: &Cli, name: &'static str, mode: Option<&str>, export: Option<&Export>) -> Self {
        let run = format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let topics = topics_named(&format!("bench.{run}"), 1);
        let kafka =
            shoal_kafka::settings::KafkaSettings { bootstrap_servers: cli.bootstrap.clone(), ..Default::default() };
        shoal_kafka::ensure_topics(&kafka, &topics).await.unwrap();
        let dir = std::env::temp_dir().join(format!("shoal-bench-{run}"));
        std::fs::create_dir_all(&dir).unwrap();
        let reader = std::sync::Arc::new(TimedReader::new(&cli.bootstrap, &topics.results.name));
        let consumers = Consumers::start(cli, &run, &topics, mode, export, &dir);
        if mode.is_some() {
            // Measured on a settled group, not during its joins: a member
            // joining mid-drain costs seconds of rebalancing.
            let group = format!("bench.{run}.workers");
            let deadline = Instant::now() + Duration::from_secs(60);
            while shoal_tools::group_members_with_assignment(&group) < cli.workers {
                assert!(Instant::now() < deadline, "workers did not all join {group}");
                tokio::time::sleep(Duration::from_millis(100)).await; // poll interval
            }
        }
        Self {
            name,
            bootstrap: cli.bootstrap.clone(),
            export: export.cloned(),
            topics,
            reader,
            consumers,
            latencies_ms: Vec::new(),
            drained: 0,
            drain_secs: 0.0,
            cpu_secs: 0.0,
        }
    }

    /// Commands of traced decisions carry trace context when the workers
    /// export, sampled as the orchestrator would at `per_sec` decisions a
    /// second.
    fn decider(&self, per_sec: f64) -> Option<Decider> {
        self.export.as_ref().map(|export| Decider::new(export, per_sec))
    }

    /// Latency: a short warm-up stream, then the paced stream.
    async fn latency_phase(&mut self, cli: &Cli) {
        let topic = self.topics.commands.name.clone();
        let warm = self.decider(100.0);
        paced_latencies(&self.reader, &cli.bootstrap, &topic, 100, 1, warm.as_ref()).await;
        let paced = self.decider(cli.rate as f64);
        self.latencies_ms =
            paced_latencies(&self.reader, &cli.bootstrap, &topic, cli.rate, cli.seconds, paced.as_ref()).await;
    }

    /// Throughput: `n` commands are issued while the consumers are paused
    /// (so the drain has the cores to itself instead of sharing them with
    /// the issuing producer), then drained, timed from the consumers'
    /// resumption to the last result visible to the reader (which sees a
    /// result only once committed, so exactly-once is timed to its last
    /// transaction). Returns the drain's throughput.
    async fn drain(&mut self, cli: &Cli, n: usize, decided_per_sec: f64) -> f64 {
        let commands = backlog(n, self.topics.commands.partitions, self.decider(decided_per_sec).as_ref());
        if self.export.is_some() {
            let traced = commands.iter().filter(|(.., headers)| is_sampled(headers)).count();
            println!(
                "bench:     {}: {n} commands decided at {decided_per_sec:.0}/s, {traced} traced ({:.2}%)",
                self.name,
                traced as f64 * 100.0 / n as f64
            );
        }
        self.consumers.pause();
        let (bootstrap, topic) = (cli.bootstrap.clone(), self.topics.commands.name.clone());
        tokio::task::spawn_blocking(move || issue_backlog(&bootstrap, &topic, &commands)).await.unwrap();
        let receiving = {
            let reader = self.reader.clone();
            tokio::task::spawn_blocking(move || reader.read(n))
        };
        let cpu_before = self.consumers.cpu();
        let started = Instant::now();
        self.consumers.resume();
        let received = receiving.await.unwrap();
        let elapsed = received.last().unwrap().0.duration_since(started).as_secs_f64().max(1e-3);
        self.cpu_secs += self.consumers.cpu() - cpu_before;
        self.drained += n;
        self.drain_secs += elapsed;
        let mut shares = std::collections::BTreeMap::<String, usize>::new();
        for (_, _, result) in &received {
            *shares.entry(result.worker_id.clone()).or_default() += 1;
        }
        let shares: Vec<String> =
            shares.iter().map(|(w, n)| format!("{w} {:.0}%", *n as f64 * 100.0 / received.len() as f64)).collect();
        let throughput = n as f64 / elapsed;
        println!("bench:     {}: {throughput:.0} results/s (results by worker: {})", self.name, shares.join(", "));
        throughput
    }

    async fn finish(self) -> Measured {
        self.consumers.stop();
        // Each run writes hundreds of thousands of records; left behind, they
        // slow the broker (and fill the disk) for the runs after.
        delete_topics(&self.bootstrap, &self.topics).await;
        let mut latencies = self.latencies_ms;
        latencies.sort_by(f64::total_cmp);
        let throughput = self.drained as f64 / self.drain_secs.max(1e-3);
        let cpu_us = self.cpu_secs * 1e6 / self.drained.max(1) as f64;
        println!("bench:   {}: {throughput:.0} results/s, workers' CPU {cpu_us:.1} µs/command", self.name);
        Measured {
            name: self.name,
            throughput,
            latencies_ms: latencies,
            rounds: vec![throughput],
            cpu_us: vec![cpu_us],
        }
    }
}

/// Measures pipelines that are compared with each other (the first, export
/// off, against the others) so that their drains are seconds apart, not
/// minutes: all are started and settled first and their latency phases run
/// in turn; then each drains half the backlog in order, and the other half
/// in reverse order (A B C C B A), so that a drift of this shared machine's
/// speed touches each of them alike. The order is rotated by `round` (B C A
/// A C B in the next), so no pipeline always takes the first drain, which
/// ran faster than the rest (the broker rested during the latency phases).
///
/// `decided_per_sec` is the last export-off drain's throughput (the rate at
/// which a saturated orchestrator decides, see [`Decider`]); this group's
/// export-off drains update it.
async fn measure_group(cli: &Cli, runs: &[&Run<'_>], round: usize, decided_per_sec: &mut f64) -> Vec<Measured> {
    let mut pipelines = Vec::new();
    for (name, mode, export) in runs {
        pipelines.push(Pipeline::start(cli, name, *mode, *export).await);
    }
    for p in &mut pipelines {
        println!("bench:     {}: latency phase", p.name);
        p.latency_phase(cli).await;
    }
    let half = cli.backlog / 2;
    let n = pipelines.len();
    let order: Vec<usize> = (0..n).map(|k| (k + round) % n).collect();
    for &i in order.iter().chain(order.iter().rev()) {
        let throughput = pipelines[i].drain(cli, half, *decided_per_sec).await;
        if pipelines[i].export.is_none() {
            *decided_per_sec = throughput;
        }
    }
    let mut measured = Vec::new();
    for p in pipelines {
        measured.push(p.finish().await);
    }
    measured
}

/// A run: name, delivery mode (`None` for the raw loop), OTLP export.
type Run<'a> = (&'static str, Option<&'static str>, Option<&'a Export>);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cli = Cli::parse();
    if let Some(topics) = &cli.raw_loop {
        let (input, output) = topics.split_once(',').expect("--raw-loop <input>,<output>");
        return raw_loop(&cli.bootstrap, input, output);
    }
    println!(
        "bench: backlog={} latency phase {}/s for {}s, {} workers, broker {}",
        cli.backlog, cli.rate, cli.seconds, cli.workers, cli.bootstrap
    );
    let receiver = Receiver::start(false).await.expect("starting the OTLP receiver");
    let endpoint = receiver.http_endpoint();
    let export = |ratio: f64, max_traced_per_sec: u32| Export { endpoint: endpoint.clone(), ratio, max_traced_per_sec };
    let (every, default, sampled) =
        (export(1.0, 0), export(1.0, shoal_kafka::trace::DEFAULT_MAX_TRACED_PER_SEC), export(cli.sampled_ratio, 0));
    let runs = [
        ("raw-librdkafka", None, None),
        ("shoal-at-least-once", Some("at_least_once"), None),
        ("shoal-exactly-once", Some("exactly_once"), None),
        ("shoal-at-least-once-otlp", Some("at_least_once"), Some(&default)),
        ("shoal-exactly-once-otlp", Some("exactly_once"), Some(&default)),
        ("shoal-at-least-once-otlp10", Some("at_least_once"), Some(&sampled)),
        ("shoal-exactly-once-otlp10", Some("exactly_once"), Some(&sampled)),
        ("shoal-at-least-once-otlp-all", Some("at_least_once"), Some(&every)),
        ("shoal-exactly-once-otlp-all", Some("exactly_once"), Some(&every)),
        // Controls: export off again, so that their ratio to the export-off
        // run shows how far two identical pipelines differ in this run.
        ("shoal-at-least-once-control", Some("at_least_once"), None),
        ("shoal-exactly-once-control", Some("exactly_once"), None),
    ];
    let selected = |name: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == name);
    // Runs compared with each other are measured together (see
    // `measure_group`): the raw loop alone, then each delivery mode with
    // export off first.
    let groups: Vec<Vec<&Run<'_>>> = [vec![0], vec![1, 3, 5, 7, 9], vec![2, 4, 6, 8, 10]]
        .iter()
        .map(|group| group.iter().map(|&i| &runs[i]).filter(|(name, ..)| selected(name)).collect::<Vec<_>>())
        .filter(|group| !group.is_empty())
        .collect();
    let order: Vec<&'static str> = groups.iter().flatten().map(|(name, ..)| *name).collect();
    let mut rounds: Vec<Vec<Measured>> = order.iter().map(|_| Vec::new()).collect();
    // A freshly started broker is slower while its JIT warms up: the first
    // measured rounds ran up to 2.5× slower than later ones.
    println!("bench: warming up the broker (one unreported run) ...");
    let warm_up = Cli { backlog: cli.backlog.min(60_000), seconds: 1, ..cli.clone() };
    let mut warm_rate = cli.decided_per_sec;
    measure_group(&warm_up, &[&("warm-up", Some("at_least_once"), None)], 0, &mut warm_rate).await;
    // Per delivery mode: the last export-off throughput measured.
    let mut decided_per_sec: Vec<f64> = groups.iter().map(|_| cli.decided_per_sec).collect();
    for round in 1..=cli.rounds {
        for (g, group) in groups.iter().enumerate() {
            let names: Vec<&str> = group.iter().map(|(name, ..)| *name).collect();
            println!("bench: round {round}/{}: measuring {} ...", cli.rounds, names.join(", "));
            for m in measure_group(&cli, group, round - 1, &mut decided_per_sec[g]).await {
                let i = order.iter().position(|n| *n == m.name).unwrap();
                rounds[i].push(m);
            }
        }
    }
    // In the runs' order, whatever order they were measured in.
    let mut rounds: Vec<Vec<Measured>> = rounds;
    rounds.sort_by_key(|r| runs.iter().position(|(name, ..)| *name == r[0].name));
    let all: Vec<Measured> = rounds.into_iter().map(median_round).collect();
    let by = |n: &str| all.iter().find(|m| m.name == n);
    let ratio_lines = || {
        for mode in ["at-least-once", "exactly-once"] {
            let Some(off) = by(&format!("shoal-{mode}")) else { continue };
            for suffix in ["otlp", "otlp10", "otlp-all", "control"] {
                if let Some(on) = by(&format!("shoal-{mode}-{suffix}")) {
                    let ratios = round_ratios(on, off);
                    let interval = ratio_interval(&ratios).map_or(String::new(), |(geo, lo, hi)| {
                        format!("geometric mean {geo:.2}, 95% interval {lo:.2}-{hi:.2}; ")
                    });
                    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
                    println!(
                        "bench: {mode} {suffix} / off throughput (median of per-round ratios) = {:.2} \
                         ({interval}per round: {})",
                        median(ratios.clone()),
                        each.join(" ")
                    );
                }
            }
        }
    };
    if all.len() < runs.len() {
        for m in &all {
            let l = &m.latencies_ms;
            println!(
                "bench: {} results/s={:.0} cpu_us_per_command={:.1} p50_ms={:.1} p99_ms={:.1}",
                m.name,
                m.throughput,
                m.cpu_us[m.cpu_us.len() / 2],
                percentile(l, 50.0),
                percentile(l, 99.0)
            );
        }
        ratio_lines();
        println!("bench: {} spans received by the OTLP receiver", receiver.count());
        return;
    }
    let run = |n: &str| by(n).expect("every run measured");
    let raw = run("raw-librdkafka").throughput;
    println!(
        "{:<28} {:>10} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}  rounds (results/s)",
        "pipeline", "results/s", "vs raw", "p50 ms", "p90 ms", "p99 ms", "max ms", "CPU µs"
    );
    for m in &all {
        let l = &m.latencies_ms;
        println!(
            "{:<28} {:>10.0} {:>7.2} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8}  {}",
            m.name,
            m.throughput,
            m.throughput / raw,
            percentile(l, 50.0),
            percentile(l, 90.0),
            percentile(l, 99.0),
            l.last().copied().unwrap_or(f64::NAN),
            if m.cpu_us.iter().all(|c| *c == 0.0) {
                "-".to_string()
            } else {
                format!("{:.1}", m.cpu_us[m.cpu_us.len() / 2])
            },
            m.rounds.iter().map(|t| format!("{t:.0}")).collect::<Vec<_>>().join(" ")
        );
    }
    let (alo, eos) = (run("shoal-at-least-once").throughput, run("shoal-exactly-once").throughput);
    println!("bench: exactly-once / at-least-once throughput = {:.2}", eos / alo);
    println!(
        "bench: OTLP export on / off throughput (median of per-round ratios), default sampling \
         (every decision, at most {} traced a second): at-least-once = {:.2}, exactly-once = {:.2}",
        shoal_kafka::trace::DEFAULT_MAX_TRACED_PER_SEC,
        paired_ratio(run("shoal-at-least-once-otlp"), run("shoal-at-least-once")),
        paired_ratio(run("shoal-exactly-once-otlp"), run("shoal-exactly-once")),
    );
    println!(
        "bench: OTLP export on / off throughput (median of per-round ratios), {:.0}% of decisions traced: \
         at-least-once = {:.2}, exactly-once = {:.2}",
        cli.sampled_ratio * 100.0,
        paired_ratio(run("shoal-at-least-once-otlp10"), run("shoal-at-least-once")),
        paired_ratio(run("shoal-exactly-once-otlp10"), run("shoal-exactly-once")),
    );
    println!(
        "bench: OTLP export on / off throughput (median of per-round ratios), every decision traced (no cap): \
         at-least-once = {:.2}, exactly-once = {:.2}",
        paired_ratio(run("shoal-at-least-once-otlp-all"), run("shoal-at-least-once")),
        paired_ratio(run("shoal-exactly-once-otlp-all"), run("shoal-exactly-once")),
    );
    println!(
        "bench: export off / off again (controls: two identical pipelines, median of per-round ratios): \
         at-least-once = {:.2}, exactly-once = {:.2}",
        paired_ratio(run("shoal-at-least-once-control"), run("shoal-at-least-once")),
        paired_ratio(run("shoal-exactly-once-control"), run("shoal-exactly-once")),
    );
    ratio_lines();
    println!("bench: {} spans received by the OTLP receiver", receiver.count());
    // The summary line: ratios are against the raw pipe; the percentiles are
    // the default mode's (exactly-once), issue to result received.
    let l = &run("shoal-exactly-once").latencies_ms;
    println!(
        "bench: eos_cmds_per_s={eos:.0} alo_cmds_per_s={alo:.0} raw_msgs_per_s={raw:.0} eos_ratio={:.2} alo_ratio={:.2} p50_ms={:.1} p99_ms={:.1}",
        eos / raw,
        alo / raw,
        percentile(l, 50.0),
        percentile(l, 99.0)
    );
}

#[cfg(test)]
mod tests {
    use super::ratio_interval;

    #[test]
    fn the_ratio_interval_is_a_t_interval_on_logarithms() {
        assert_eq!(ratio_interval(&[0.9]), None);
        let (geo, lo, hi) = ratio_interval(&[0.9, 1.0 / 0.9]).unwrap();
        assert!((geo - 1.0).abs() < 1e-12, "{geo}");
        // ln 0.9 = -0.10536; sd of {-0.10536, 0.10536} = 0.149; half
        // width 12.706 × 0.149 / √2 = 1.3387.
        assert!((lo.ln() + 1.3387).abs() < 1e-3 && (hi.ln() - 1.3387).abs() < 1e-3, "{lo} {hi}");
        let (geo, lo, hi) = ratio_interval(&[0.95; 5]).unwrap();
        assert!((geo - 0.95).abs() < 1e-12 && (lo - 0.95).abs() < 1e-12 && (hi - 0.95).abs() < 1e-12);
    }
}
