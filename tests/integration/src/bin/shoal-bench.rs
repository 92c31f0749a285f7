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
//! are reported.

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
use shoal_common::kafka::outputs::MessageMeta;
use shoal_common::messages::{Command, WireMessage};
use shoal_common::settings::TopicsSettings;
use shoal_common::trace::DecisionSampler;
use shoal_integration_tests::otlp::Receiver;
use shoal_integration_tests::{Proc, alert_command, bin, producer_for, topic_env, topics_named};

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
    /// summary lines need all nine.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Sample ratio of the `-otlp10` runs, uncapped (0.1 unless set: the
    /// names keep the 10). At 0, export is on but nothing is traced, which isolates
    /// the cost of the machinery from that of the spans.
    #[arg(long, default_value_t = 0.1)]
    sampled_ratio: f64,
    /// With export off, commands still carry a not-sampled `traceparent`,
    /// which the workers pass on to their results: isolates what the
    /// trace-context header itself costs.
    #[arg(long)]
    context_when_off: bool,
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
    median(a.rounds.iter().zip(&b.rounds).map(|(x, y)| x / y).collect())
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

    /// A decision that is never traced (`--context-when-off`).
    fn never() -> Self {
        Self::new(&Export { endpoint: String::new(), ratio: 0.0, max_traced_per_sec: 0 }, 1.0)
    }

    /// The next command's trace context, and whether it is traced.
    fn next(&self) -> shoal_common::kafka::headers::TraceParent {
        use shoal_common::kafka::headers::TraceParent;
        self.clock.advance(self.interval);
        if self.sampler.draw() {
            let (trace, span) = (rand::random::<u128>().max(1), rand::random::<u64>().max(1));
            TraceParent { traceparent: format!("00-{trace:032x}-{span:016x}-01"), tracestate: None }
        } else {
            TraceParent::unsampled()
        }
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

/// One command to issue: key, body, and the headers the orchestrator would
/// have written on it.
type Issue = (String, Vec<u8>, rdkafka::message::OwnedHeaders);

/// The backlog: `n` commands over 200 keys, encoded before timing starts.
fn backlog(n: usize, sampling: Option<&Decider>) -> Vec<Issue> {
    (0..n)
        .map(|i| {
            let command = alert_command(&format!("key-{}", i % 200), (i / 200) as u64 + 1);
            (command.key.clone(), command.encode(), orchestrator_headers(&command, sampling))
        })
        .collect()
}

/// The headers the orchestrator writes on a command (made by the same
/// code): type, schema version, producer, command id, and, when it exports,
/// a `traceparent` on every command whose sampled flag is drawn by the
/// orchestrator's sampler (see `shoal_common::trace` and [`Decider`]). The bench stands in for the
/// orchestrator, so workers parse, follow and carry on what they would in a
/// deployment.
fn orchestrator_headers(command: &Command, sampling: Option<&Decider>) -> rdkafka::message::OwnedHeaders {
    let trace = sampling.map(Decider::next);
    let meta = MessageMeta { message_type: "command", producer_id: "bench-issuer", command_id: Some(command.id) };
    meta.headers(None, trace.as_ref())
}

/// Whether issued headers mark the command as traced.
fn is_sampled(headers: &rdkafka::message::OwnedHeaders) -> bool {
    shoal_common::kafka::headers::HeaderView(Some(headers)).trace_parent().is_some_and(|p| p.sampled())
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
    for (key, body, headers) in commands {
        send_waiting(&producer, BaseRecord::to(topic).key(key).payload(body).headers(headers.clone()));
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
    fn read(&self, n: usize) -> Vec<(Instant, chrono::DateTime<chrono::Utc>, shoal_common::messages::CommandResult)> {
        let mut got = Vec::with_capacity(n);
        let deadline = Instant::now() + Duration::from_secs(600);
        while got.len() < n {
            assert!(Instant::now() < deadline, "only {} of {n} results after 10 minutes", got.len());
            if let Some(Ok(message)) = self.consumer.poll(Duration::from_millis(50)) {
                let result =
                    shoal_common::messages::CommandResult::decode(message.payload().unwrap_or_default()).unwrap();
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

/// Stop and pause switches of the raw loop.
#[derive(Default)]
struct RawControl {
    stop: std::sync::atomic::AtomicBool,
    paused: std::sync::Mutex<bool>,
    resumed: std::sync::Condvar,
}

impl RawControl {
    fn set_paused(&self, paused: bool) {
        *self.paused.lock().unwrap() = paused;
        self.resumed.notify_all();
    }

    /// Blocks while paused.
    fn wait_while_paused(&self) {
        let guard = self.paused.lock().unwrap();
        drop(self.resumed.wait_while(guard, |paused| *paused).unwrap());
    }
}

fn raw_loop(bootstrap: &str, input: &str, output: &str, control: std::sync::Arc<RawControl>) {
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
    while !control.stop.load(std::sync::atomic::Ordering::Relaxed) {
        control.wait_while_paused();
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else { continue };
        // The same work as the worker's framing: decode the command, encode
        // a result keyed like it (the handler itself is trivial).
        let command = shoal_common::messages::Command::decode(message.payload().unwrap_or_default()).unwrap();
        let now = chrono::Utc::now();
        let result = shoal_common::messages::CommandResult {
            schema_version: shoal_common::messages::SCHEMA_VERSION,
            command_id: command.id,
            kind: command.kind.clone(),
            key: command.key.clone(),
            seq: command.seq,
            worker_id: "raw".into(),
            status: shoal_common::messages::ResultStatus::Succeeded,
            output: serde_json::json!({}),
            started_at: now,
            finished_at: now,
            sequence: None,
        };
        let body = result.encode();
        send_waiting(&producer, BaseRecord::to(output).key(&command.key).payload(&body));
    }
    let _ = producer.flush(Duration::from_secs(10));
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

struct Consumers {
    raw: Option<(std::thread::JoinHandle<()>, std::sync::Arc<RawControl>)>,
    workers: Vec<Proc>,
}

impl Consumers {
    /// CPU seconds used so far by the Shoal workers (0 for the raw loop,
    /// which runs in this process).
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
        let mut consumers = Self { raw: None, workers: Vec::new() };
        match mode {
            None => {
                let control = std::sync::Arc::new(RawControl::default());
                let (bootstrap, input, output, shared) =
                    (cli.bootstrap.clone(), topics.commands.name.clone(), topics.results.name.clone(), control.clone());
                consumers.raw =
                    Some((std::thread::spawn(move || raw_loop(&bootstrap, &input, &output, shared)), control));
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
        if let Some((_, control)) = &self.raw {
            control.set_paused(true);
        }
        for w in &self.workers {
            w.signal(Signal::SIGSTOP);
        }
    }

    fn resume(&self) {
        if let Some((_, control)) = &self.raw {
            control.set_paused(false);
        }
        for w in &self.workers {
            w.signal(Signal::SIGCONT);
        }
    }

    fn stop(self) {
        if let Some((thread, control)) = self.raw {
            control.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            thread.join().unwrap();
        }
        for w in &self.workers {
            w.signal(Signal::SIGTERM);
        }
        for mut w in self.workers {
            tokio::task::block_in_place(|| w.wait_exit(Duration::from_secs(30)));
        }
    }
}

/// Measures one run. `decided_per_sec` is the rate at which an orchestrator
/// would decide the backlog's commands (see [`Decider`]).
async fn measure(
    cli: &Cli,
    name: &'static str,
    mode: Option<&str>,
    otlp: Option<&Export>,
    decided_per_sec: f64,
) -> Measured {
    let run = format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let topics = topics_named(&format!("bench.{run}"), 1);
    let kafka =
        shoal_common::settings::KafkaSettings { bootstrap_servers: cli.bootstrap.clone(), ..Default::default() };
    shoal_common::kafka::ensure_topics(&kafka, &topics).await.unwrap();
    let dir = std::env::temp_dir().join(format!("shoal-bench-{run}"));
    std::fs::create_dir_all(&dir).unwrap();

    // Latency: consumers running and warmed up (group joined), then a paced
    // stream.
    let reader = std::sync::Arc::new(TimedReader::new(&cli.bootstrap, &topics.results.name));
    let consumers = Consumers::start(cli, &run, &topics, mode, otlp, &dir);
    if mode.is_some() {
        // Latency is measured on a settled group, not during its joins.
        let group = format!("bench.{run}.workers");
        let deadline = Instant::now() + Duration::from_secs(60);
        while shoal_integration_tests::group_members_with_assignment(&group) < cli.workers {
            assert!(Instant::now() < deadline, "workers did not all join {group}");
            tokio::time::sleep(Duration::from_millis(100)).await; // poll interval
        }
    }
    // Commands carry trace context when the workers export (or with
    // `--context-when-off`), sampled as the orchestrator would at the pace
    // they are issued (the latency phase) or would be decided (the backlog).
    let decider = |per_sec: f64| match otlp {
        Some(export) => Some(Decider::new(export, per_sec)),
        None => cli.context_when_off.then(Decider::never),
    };
    paced_latencies(&reader, &cli.bootstrap, &topics.commands.name, 100, 1, decider(100.0).as_ref()).await;
    let mut latencies = paced_latencies(
        &reader,
        &cli.bootstrap,
        &topics.commands.name,
        cli.rate,
        cli.seconds,
        decider(cli.rate as f64).as_ref(),
    )
    .await;

    // Throughput: the same consumers (their group settled: a member
    // joining mid-drain costs seconds of rebalancing, as much as the drain
    // itself) drain a backlog. They are paused while it is issued, so the
    // drain is the pipeline's alone, not shared with the issuing producer
    // on the same cores; it is timed from their resumption to the last
    // result visible. The reader sees a result only once committed, so
    // exactly-once is timed to its last transaction.
    let commands = backlog(cli.backlog, decider(decided_per_sec).as_ref());
    let traced = commands.iter().filter(|(_, _, headers)| is_sampled(headers)).count();
    if otlp.is_some() {
        println!(
            "bench:     backlog decided at {decided_per_sec:.0}/s: {traced} of {} commands traced ({:.2}%)",
            cli.backlog,
            traced as f64 * 100.0 / cli.backlog as f64
        );
    }
    consumers.pause();
    let (bootstrap, topic) = (cli.bootstrap.clone(), topics.commands.name.clone());
    tokio::task::spawn_blocking(move || issue_backlog(&bootstrap, &topic, &commands)).await.unwrap();
    let receiving = {
        let (reader, n) = (reader.clone(), cli.backlog);
        tokio::task::spawn_blocking(move || reader.read(n))
    };
    let cpu_before = consumers.cpu();
    let started = Instant::now();
    consumers.resume();
    let received = receiving.await.unwrap();
    let elapsed = received.last().unwrap().0.duration_since(started).as_secs_f64().max(1e-3);
    let mut shares = std::collections::BTreeMap::<String, usize>::new();
    for (_, _, result) in &received {
        *shares.entry(result.worker_id.clone()).or_default() += 1;
    }
    let shares: Vec<String> =
        shares.iter().map(|(w, n)| format!("{w} {:.0}%", *n as f64 * 100.0 / received.len() as f64)).collect();
    println!("bench:     results by worker: {}", shares.join(", "));
    let cpu_us_per_command = (consumers.cpu() - cpu_before) * 1e6 / cli.backlog as f64;
    consumers.stop();
    // Each run writes hundreds of thousands of records; left behind, they
    // slow the broker (and fill the disk) for the runs after.
    delete_topics(&cli.bootstrap, &topics).await;
    latencies.sort_by(f64::total_cmp);
    let throughput = cli.backlog as f64 / elapsed;
    Measured { name, throughput, latencies_ms: latencies, rounds: vec![throughput], cpu_us: vec![cpu_us_per_command] }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cli = Cli::parse();
    println!(
        "bench: backlog={} latency phase {}/s for {}s, {} workers, broker {}",
        cli.backlog, cli.rate, cli.seconds, cli.workers, cli.bootstrap
    );
    let receiver = Receiver::start(false).await.expect("starting the OTLP receiver");
    let endpoint = receiver.http_endpoint();
    let export = |ratio: f64, max_traced_per_sec: u32| Export { endpoint: endpoint.clone(), ratio, max_traced_per_sec };
    let (every, default, sampled) =
        (export(1.0, 0), export(1.0, shoal_common::trace::DEFAULT_MAX_TRACED_PER_SEC), export(cli.sampled_ratio, 0));
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
    ];
    let runs: Vec<_> =
        runs.iter().filter(|(name, ..)| cli.only.is_empty() || cli.only.iter().any(|o| o == name)).collect();
    // Rounds of every run in turn: a slow spell of a shared machine then
    // touches every pipeline alike, and the median of the rounds is kept.
    let mut rounds: Vec<Vec<Measured>> = runs.iter().map(|_| Vec::new()).collect();
    // A freshly started broker is slower while its JIT warms up: the first
    // measured rounds ran up to 2.5× slower than later ones.
    println!("bench: warming up the broker (one unreported run) ...");
    let warm_up = Cli { backlog: cli.backlog.min(60_000), seconds: 1, ..cli.clone() };
    let warm = measure(&warm_up, "warm-up", Some("at_least_once"), None, 0.0).await;
    for round in 1..=cli.rounds {
        // What each delivery mode drained with export off this round: the
        // rate at which a saturated orchestrator decides (see `Decider`).
        let mut decided_per_sec = std::collections::HashMap::new();
        for (i, (name, mode, otlp)) in runs.iter().enumerate() {
            println!("bench: round {round}/{}: measuring {name} ...", cli.rounds);
            let rate = mode.and_then(|m| decided_per_sec.get(m).copied()).unwrap_or(warm.throughput);
            let m = measure(&cli, name, *mode, *otlp, rate).await;
            println!("bench:   {name}: {:.0} results/s, workers' CPU {:.1} µs/command", m.throughput, m.cpu_us[0]);
            if let (Some(mode), None) = (mode, otlp) {
                decided_per_sec.insert(*mode, m.throughput);
            }
            rounds[i].push(m);
        }
    }
    let all: Vec<Measured> = rounds.into_iter().map(median_round).collect();
    if all.len() < 9 {
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
        let by = |n: &str| all.iter().find(|m| m.name == n);
        for mode in ["at-least-once", "exactly-once"] {
            let Some(off) = by(&format!("shoal-{mode}")) else { continue };
            for suffix in ["otlp", "otlp10", "otlp-all"] {
                if let Some(on) = by(&format!("shoal-{mode}-{suffix}")) {
                    println!(
                        "bench: {mode} {suffix} / off throughput (median of per-round ratios) = {:.2}",
                        paired_ratio(on, off)
                    );
                }
            }
        }
        println!("bench: {} spans received by the OTLP receiver", receiver.count());
        return;
    }
    let raw = all[0].throughput;
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
    let (alo, eos) = (all[1].throughput, all[2].throughput);
    println!("bench: exactly-once / at-least-once throughput = {:.2}", eos / alo);
    println!(
        "bench: OTLP export on / off throughput (median of per-round ratios), default sampling \
         (every decision, at most {} traced a second): at-least-once = {:.2}, exactly-once = {:.2}",
        shoal_common::trace::DEFAULT_MAX_TRACED_PER_SEC,
        paired_ratio(&all[3], &all[1]),
        paired_ratio(&all[4], &all[2]),
    );
    println!(
        "bench: OTLP export on / off throughput (median of per-round ratios), {:.0}% of decisions traced: \
         at-least-once = {:.2}, exactly-once = {:.2}",
        cli.sampled_ratio * 100.0,
        paired_ratio(&all[5], &all[1]),
        paired_ratio(&all[6], &all[2]),
    );
    println!(
        "bench: OTLP export on / off throughput (median of per-round ratios), every decision traced (no cap): \
         at-least-once = {:.2}, exactly-once = {:.2}",
        paired_ratio(&all[7], &all[1]),
        paired_ratio(&all[8], &all[2]),
    );
    println!("bench: {} spans received by the OTLP receiver", receiver.count());
    // The summary line: ratios are against the raw pipe; the percentiles are
    // the default mode's (exactly-once), issue to result received.
    let l = &all[2].latencies_ms;
    println!(
        "bench: eos_cmds_per_s={eos:.0} alo_cmds_per_s={alo:.0} raw_msgs_per_s={raw:.0} eos_ratio={:.2} alo_ratio={:.2} p50_ms={:.1} p99_ms={:.1}",
        eos / raw,
        alo / raw,
        percentile(l, 50.0),
        percentile(l, 99.0)
    );
}
