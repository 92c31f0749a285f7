//! The pipelines under test: their consumers (the raw loop or Shoal worker
//! processes) on topics of their own, measured phase by phase.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rdkafka::ClientConfig;
use shoal_kafka::settings::TopicsSettings;

use super::cli::{Cli, Export, Run};
use super::load::{Decider, Issue, Received, TimedReader, backlog, is_sampled, issue_backlog, paced_latencies};
use super::stats::Measured;
use crate::{Proc, bin, topic_env, topics_named};

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

/// Peak resident memory of a process (`VmHWM` in `/proc/<pid>/status`),
/// MiB; 0 when it cannot be read.
pub(crate) fn peak_rss_mib(pid: u32) -> f64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return 0.0 };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Environment of Shoal worker `i` of `run` in delivery `mode`.
fn worker_env(
    cli: &Cli,
    run: &str,
    topics: &TopicsSettings,
    mode: &str,
    otlp: Option<&Export>,
    i: usize,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("SHOAL__KAFKA__BOOTSTRAP_SERVERS".to_string(), cli.bootstrap.clone()),
        ("SHOAL__DELIVERY__MODE".into(), mode.to_string()),
        ("SHOAL__DELIVERY__TRANSACTIONAL_ID_PREFIX".into(), format!("bench.{run}")),
        ("SHOAL__WORKER__ID".into(), format!("b-{i}")),
        ("SHOAL__WORKER__GROUP_ID".into(), format!("bench.{run}.workers")),
        ("SHOAL__TOPICS__CREATE".into(), "false".into()),
        ("RUST_LOG".into(), std::env::var("SHOAL_BENCH_WORKER_LOG").unwrap_or_else(|_| "warn".into())),
        ("SHOAL__OBSERVABILITY__LISTEN".into(), String::new()),
        // The keys-and-skew phase's commands: `probe` with its handler work.
        ("SHOAL__WORKER__PROBE_HANDLER".into(), "true".into()),
    ];
    if let Some(export) = otlp {
        env.extend([
            ("SHOAL__OBSERVABILITY__OTLP_ENABLED".to_string(), "true".to_string()),
            ("SHOAL__OBSERVABILITY__SAMPLE_RATIO".into(), export.ratio.to_string()),
            ("SHOAL__OBSERVABILITY__MAX_TRACED_PER_SEC".into(), export.max_traced_per_sec.to_string()),
            // OTLP/HTTP: the receiver then counts spans without decoding
            // them (see `otlp`), so it takes little of the CPU the workers
            // share.
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "http/protobuf".into()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), export.endpoint.clone()),
        ]);
    }
    env.extend(topic_env(topics));
    env
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

    /// Their peak resident memory together, MiB.
    fn peak_rss_mib(&self) -> f64 {
        self.workers.iter().map(|w| peak_rss_mib(w.pid())).sum()
    }

    fn start(
        cli: &Cli,
        run: &str,
        topics: &TopicsSettings,
        mode: Option<&str>,
        otlp: Option<&Export>,
        dir: &Path,
    ) -> Self {
        let workers = match mode {
            None => {
                let me = std::env::current_exe().unwrap();
                let topics = format!("{},{}", topics.commands.name, topics.results.name);
                let env = [("KAFKA_BOOTSTRAP_SERVERS".to_string(), cli.bootstrap.clone())];
                let mut args = vec!["--raw-loop", &topics];
                if run.starts_with(super::raw::LATENCY_RUN) {
                    args.push("--raw-latency");
                }
                vec![Proc::spawn("raw", &me, &args, &env, dir)]
            }
            Some(mode) => (1..=cli.workers)
                .map(|i| {
                    let env = worker_env(cli, run, topics, mode, otlp, i);
                    Proc::spawn(&format!("b-{i}"), &bin("shoal-worker"), &[], &env, dir)
                })
                .collect(),
        };
        Self { workers }
    }

    /// Ends the bench with the log of a process under test that exited
    /// before its group settled (a worker that refused its configuration,
    /// say), instead of waiting out the join deadline.
    fn fail_if_one_exited(&mut self) {
        if let Some(report) = self.one_exited() {
            panic!("{report}");
        }
    }

    /// The name, exit status and end of the log of a process under test that
    /// is no longer running, if any.
    fn one_exited(&mut self) -> Option<String> {
        let i = self.workers.iter_mut().position(|w| !w.running())?;
        let gone = &mut self.workers[i];
        let status = gone.status_text();
        let log = gone.log_text();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Some(format!("{} ({status}) exited; the end of its log:\n{}", gone.name, tail.join("\n")))
    }

    fn signal(&self, signal: Signal) {
        for w in &self.workers {
            w.signal(signal);
        }
    }

    /// Stops consuming (workers: SIGSTOP, well inside the group's session
    /// timeout) so a backlog can be issued without the consumers competing
    /// with the issuer for the CPU.
    fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn stop(self) {
        self.signal(Signal::SIGTERM);
        for mut w in self.workers {
            tokio::task::block_in_place(|| w.wait_exit(Duration::from_secs(30)));
        }
    }
}

/// One pipeline under test on its own topics and consumer group: started,
/// its group settled, then measured phase by phase.
pub(crate) struct Pipeline {
    name: &'static str,
    bootstrap: String,
    export: Option<Export>,
    topics: TopicsSettings,
    reader: Arc<TimedReader>,
    consumers: Consumers,
    latencies_ms: Vec<f64>,
    latencies_high_ms: Vec<f64>,
    /// Commands drained, seconds spent draining them, and the workers' CPU
    /// seconds meanwhile, over all drains.
    drained: usize,
    drain_secs: f64,
    cpu_secs: f64,
}

impl Pipeline {
    pub(crate) async fn start(cli: &Cli, name: &'static str, mode: Option<&str>, export: Option<&Export>) -> Self {
        let run = format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let topics = topics_named(&format!("bench.{run}"), 1);
        let kafka =
            shoal_kafka::settings::KafkaSettings { bootstrap_servers: cli.bootstrap.clone(), ..Default::default() };
        shoal_kafka::ensure_topics(&kafka, &topics).await.unwrap();
        let dir = std::env::temp_dir().join(format!("shoal-bench-{run}"));
        std::fs::create_dir_all(&dir).unwrap();
        let reader = Arc::new(TimedReader::new(&cli.bootstrap, &topics.results.name));
        let mut consumers = Consumers::start(cli, &run, &topics, mode, export, &dir);
        if mode.is_some() {
            // Measured on a settled group, not during its joins: a member
            // joining mid-drain costs seconds of rebalancing.
            let group = format!("bench.{run}.workers");
            let deadline = Instant::now() + Duration::from_secs(60);
            while crate::group_members_with_assignment(&group) < cli.workers {
                consumers.fail_if_one_exited();
                assert!(Instant::now() < deadline, "workers did not all join {group}; logs in {}", dir.display());
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
            latencies_high_ms: Vec::new(),
            drained: 0,
            drain_secs: 0.0,
            cpu_secs: 0.0,
        }
    }

    /// Partitions of the commands topic.
    pub(crate) fn commands_partitions(&self) -> i32 {
        self.topics.commands.partitions
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
        if cli.rate_high > 0 {
            let loaded = self.decider(cli.rate_high as f64);
            self.latencies_high_ms =
                paced_latencies(&self.reader, &cli.bootstrap, &topic, cli.rate_high, cli.seconds_high, loaded.as_ref())
                    .await;
        }
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
        let (throughput, received) = self.drain_issued(cli, commands).await;
        let mut shares = std::collections::BTreeMap::<String, usize>::new();
        for (_, _, result) in &received {
            *shares.entry(result.worker_id.clone()).or_default() += 1;
        }
        let shares: Vec<String> =
            shares.iter().map(|(w, n)| format!("{w} {:.0}%", *n as f64 * 100.0 / received.len() as f64)).collect();
        println!("bench:     {}: {throughput:.0} results/s (results by worker: {})", self.name, shares.join(", "));
        throughput
    }

    /// Issues `commands` while the consumers are paused, then times their
    /// drain (see [`Pipeline::drain`]); returns the throughput and the
    /// results as received.
    pub(crate) async fn drain_issued(&mut self, cli: &Cli, commands: Vec<Issue>) -> (f64, Vec<Received>) {
        let n = commands.len();
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
        // The reader waits for every result; a process under test that dies
        // meanwhile (killed from outside, say) would leave it waiting for
        // ever, so its exit ends the bench with its log instead.
        tokio::pin!(receiving);
        let mut watch = tokio::time::interval(Duration::from_secs(1));
        let received = loop {
            tokio::select! {
                received = &mut receiving => break received.unwrap(),
                _ = watch.tick() => {
                    if let Some(report) = self.consumers.one_exited() {
                        eprintln!("bench: a process under test died during a drain: {report}");
                        std::process::exit(1);
                    }
                }
            }
        };
        let elapsed = received.last().unwrap().0.duration_since(started).as_secs_f64().max(1e-3);
        self.cpu_secs += self.consumers.cpu() - cpu_before;
        self.drained += n;
        self.drain_secs += elapsed;
        (n as f64 / elapsed, received)
    }

    pub(crate) async fn finish(self) -> Measured {
        let rss_mib = self.consumers.peak_rss_mib();
        self.consumers.stop();
        self.reader.close();
        // Each run writes hundreds of thousands of records; left behind, they
        // slow the broker (and fill the disk) for the runs after.
        delete_topics(&self.bootstrap, &self.topics).await;
        let mut latencies = self.latencies_ms;
        latencies.sort_by(f64::total_cmp);
        let mut high = self.latencies_high_ms;
        high.sort_by(f64::total_cmp);
        let throughput = self.drained as f64 / self.drain_secs.max(1e-3);
        let cpu_us = self.cpu_secs * 1e6 / self.drained.max(1) as f64;
        println!("bench:   {}: {throughput:.0} results/s, workers' CPU {cpu_us:.1} µs/command", self.name);
        Measured {
            name: self.name,
            throughput,
            latencies_ms: latencies,
            latencies_high_ms: high,
            rounds: vec![throughput],
            cpu_us: vec![cpu_us],
            rss_mib: vec![rss_mib],
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
pub(crate) async fn measure_group(
    cli: &Cli,
    runs: &[&Run<'_>],
    round: usize,
    decided_per_sec: &mut f64,
) -> Vec<Measured> {
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
