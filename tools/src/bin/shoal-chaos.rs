//! `shoal-chaos`: issues commands with per-key sequence numbers to real
//! worker processes while injecting faults on a seeded schedule, then checks
//! the history: every issued command must have exactly one committed
//! result, in per-key order, and no result of an aborted transaction may be
//! visible.
//!
//! Faults: SIGKILL and restart of workers (same id, so the restart fences
//! the dead instance's transactions), a worker SIGSTOPped past its session
//! timeout and resumed (a zombie that must be fenced by the group), workers
//! added and removed, and (with `--cluster three`) a broker killed and
//! restarted.

// A CLI that reports by printing and exits non-zero on a failed check.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::Message;
use shoal_kafka::pipeline::output_digest;
use shoal_kafka::settings::TopicsSettings;
use shoal_protocol::messages::{CommandResult, WireMessage};
use shoal_tools::{
    Proc, TopicReader, alert_command, bin, decode_results, produce, producer_for, repo_root, topic_env, topics_named,
};

/// Fault-injection run and checker for Shoal's delivery guarantees.
#[derive(Debug, Parser)]
#[command(name = "shoal-chaos", version)]
struct Cli {
    /// Commands to issue.
    #[arg(long, default_value_t = 20_000)]
    commands: usize,
    /// Distinct keys (each with its own sequence).
    #[arg(long, default_value_t = 100)]
    keys: usize,
    /// Commands issued per second.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Workers at the start (at least 3).
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Seed of the fault schedule (logged; same seed, same schedule).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Delivery mode of the workers: exactly_once or at_least_once.
    #[arg(long, default_value = "exactly_once")]
    mode: String,
    /// Worker SIGKILLs (each followed by a restart).
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// Zombies: a worker SIGSTOPped past its session timeout, then resumed.
    #[arg(long, default_value_t = 1)]
    zombies: usize,
    /// `single`: the broker at --bootstrap; `three`: the three-node cluster
    /// of `scripts/kafka.sh --brokers 3`, with one broker killed and restarted.
    #[arg(long, default_value = "single")]
    cluster: String,
    /// Bootstrap servers for `--cluster single`.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Where logs and histories go (default target/chaos/<run id>).
    #[arg(long)]
    out: Option<PathBuf>,
}

const THREE_NODE_BOOTSTRAP: &str = "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096";
const SESSION_TIMEOUT_MS: u64 = 6_000;

struct Run {
    cli: Cli,
    bootstrap: String,
    id: String,
    dir: PathBuf,
    topics: TopicsSettings,
    workers: Vec<Proc>,
    /// Worker id of each slot (restarts keep the id).
    ids: Vec<String>,
    restarts: usize,
    next_worker: usize,
    kills: usize,
    log: std::fs::File,
}

impl Run {
    /// Checks the options, creates the run's directory and topics (starting
    /// the three-node cluster first with `--cluster three`) and starts the
    /// first workers.
    async fn start(cli: Cli) -> Self {
        assert!(cli.workers >= 3, "--workers must be at least 3");
        assert!(matches!(cli.mode.as_str(), "exactly_once" | "at_least_once"), "--mode: exactly_once or at_least_once");
        assert!(matches!(cli.cluster.as_str(), "single" | "three"), "--cluster: single or three");
        let id = format!("{}-{}", cli.seed, &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let dir = cli.out.clone().unwrap_or_else(|| repo_root().join("target/chaos").join(&id));
        std::fs::create_dir_all(&dir).unwrap();
        let three = cli.cluster == "three";
        let replication = if three { 3 } else { 1 };
        let topics = topics_named(&format!("chaos.{id}"), replication);
        let bootstrap = if three { THREE_NODE_BOOTSTRAP.to_string() } else { cli.bootstrap.clone() };
        let log = std::fs::File::create(dir.join("schedule.log")).unwrap();
        let mut run = Run {
            cli,
            bootstrap,
            id,
            dir,
            topics,
            workers: Vec::new(),
            ids: Vec::new(),
            restarts: 0,
            next_worker: 0,
            kills: 0,
            log,
        };
        run.note(&format!(
            "run {} mode={} seed={} commands={} keys={} cluster={} logs in {}",
            run.id,
            run.cli.mode,
            run.cli.seed,
            run.cli.commands,
            run.cli.keys,
            run.cli.cluster,
            run.dir.display()
        ));
        if three {
            run.kafka_sh(&["up"]);
        }
        let kafka =
            shoal_kafka::settings::KafkaSettings { bootstrap_servers: run.bootstrap.clone(), ..Default::default() };
        shoal_kafka::ensure_topics(&kafka, &run.topics).await.expect("create topics");
        for _ in 0..run.cli.workers {
            run.add_worker();
        }
        run
    }

    fn note(&mut self, what: &str) {
        use std::io::Write as _;
        let line = format!("{} {what}", chrono::Utc::now().format("%H:%M:%S%.3f"));
        println!("chaos: {line}");
        let _ = writeln!(self.log, "{line}");
    }

    fn env(&self, worker_id: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("SHOAL__KAFKA__BOOTSTRAP_SERVERS".to_string(), self.bootstrap.clone()),
            // Several workers on one machine: each picks a free port.
            ("SHOAL__OBSERVABILITY__LISTEN".into(), "127.0.0.1:0".into()),
            ("SHOAL__KAFKA__SESSION_TIMEOUT_MS".into(), SESSION_TIMEOUT_MS.to_string()),
            ("SHOAL__KAFKA__MESSAGE_TIMEOUT_MS".into(), "10000".into()),
            ("SHOAL__DELIVERY__MODE".into(), self.cli.mode.clone()),
            ("SHOAL__DELIVERY__TRANSACTION_CALL_TIMEOUT_MS".into(), "5000".into()),
            ("SHOAL__DELIVERY__TRANSACTIONAL_ID_PREFIX".into(), format!("chaos.{}", self.id)),
            (
                "SHOAL__DELIVERY__HISTORY_PATH".into(),
                self.dir.join(format!("history-{worker_id}.jsonl")).display().to_string(),
            ),
            ("SHOAL__WORKER__ID".into(), worker_id.to_string()),
            ("SHOAL__WORKER__GROUP_ID".into(), format!("chaos.{}.workers", self.id)),
            ("SHOAL__TOPICS__CREATE".into(), "false".into()),
            ("SHOAL__LOG__STATUS_INTERVAL_SECS".into(), "5".into()),
            ("RUST_LOG".into(), "info,librdkafka=warn,shoal_worker::processor=warn".into()),
            ("NO_COLOR".into(), "1".into()),
        ];
        env.extend(topic_env(&self.topics));
        env
    }

    fn spawn_worker(&mut self, worker_id: &str, log_name: &str) -> Proc {
        let env = self.env(worker_id);
        Proc::spawn(log_name, &bin("shoal-worker"), &[], &env, &self.dir)
    }

    fn add_worker(&mut self) {
        self.next_worker += 1;
        let id = format!("w-{}", self.next_worker);
        let proc = self.spawn_worker(&id, &id);
        self.note(&format!("start {id} (pid {})", proc.pid()));
        self.workers.push(proc);
        self.ids.push(id);
    }

    fn kafka_sh(&mut self, args: &[&str]) {
        let status = std::process::Command::new("bash")
            .arg(repo_root().join("scripts/kafka.sh"))
            .args(["--brokers", "3"])
            .args(args)
            .status()
            .expect("run scripts/kafka.sh");
        assert!(status.success(), "scripts/kafka.sh {args:?} failed");
    }
}

/// A scheduled fault: when (seconds into the issuing period), and what.
type Action = (f64, &'static str);

/// The fault schedule: seeded, spread over the issuing period.
fn schedule(cli: &Cli, three: bool, rng: &mut StdRng) -> Vec<Action> {
    let issue_secs = cli.commands as f64 / f64::from(cli.rate);
    let mut actions: Vec<Action> = Vec::new();
    for _ in 0..cli.kills {
        actions.push((rng.random_range(0.05..0.85) * issue_secs, "kill"));
    }
    for _ in 0..cli.zombies {
        actions.push((rng.random_range(0.1..0.5) * issue_secs, "zombie"));
    }
    actions.push((rng.random_range(0.2..0.6) * issue_secs, "add"));
    actions.push((rng.random_range(0.6..0.8) * issue_secs, "remove"));
    if three {
        actions.push((rng.random_range(0.3..0.7) * issue_secs, "broker"));
    }
    actions.sort_by(|a, b| a.0.total_cmp(&b.0));
    actions
}

/// An issued command: id, key and sequence number.
type Issued = (uuid::Uuid, String, u64);

/// Issues commands from a separate task, recording each acknowledged one.
fn spawn_issuer(run: &Run) -> tokio::task::JoinHandle<Vec<Issued>> {
    let issuer_bootstrap = run.bootstrap.clone();
    let commands_topic = run.topics.commands.name.clone();
    let (commands, keys, rate) = (run.cli.commands, run.cli.keys, run.cli.rate);
    tokio::spawn(async move {
        let producer = producer_for(&issuer_bootstrap);
        let mut seqs = vec![0u64; keys];
        let mut issued = Vec::with_capacity(commands);
        let mut pace = tokio::time::interval(Duration::from_millis(100));
        let per_tick = (rate as usize / 10).max(1);
        let mut n = 0;
        while n < commands {
            pace.tick().await;
            // Sends of one tick are in flight together; the idempotent
            // producer keeps each partition's order.
            let mut batch = Vec::with_capacity(per_tick);
            for _ in 0..per_tick.min(commands - n) {
                let k = n % keys;
                seqs[k] += 1;
                batch.push(alert_command(&format!("key-{k}"), seqs[k]));
                n += 1;
            }
            let bodies: Vec<Vec<u8>> = batch.iter().map(|c| c.encode()).collect();
            let sends = batch.iter().zip(&bodies).map(|(c, body)| produce(&producer, &commands_topic, &c.key, body));
            futures::future::join_all(sends).await;
            issued.extend(batch.iter().map(|c| (c.id, c.key.clone(), c.seq)));
        }
        issued
    })
}

/// Faults in progress: zombies to resume, killed workers to restart, and a
/// broker to start again, each at its time.
#[derive(Default)]
struct Faults {
    zombies: Vec<(usize, Instant)>,
    pending_restarts: Vec<(usize, Instant)>,
    broker_down: Option<Instant>,
}

impl Faults {
    fn in_progress(&self) -> bool {
        !self.zombies.is_empty() || !self.pending_restarts.is_empty() || self.broker_down.is_some()
    }

    /// Workers neither stopped as zombies, nor waiting for their restart,
    /// nor exited.
    fn live_workers(&self, run: &mut Run) -> Vec<usize> {
        let stopped: HashSet<usize> = self.zombies.iter().map(|(i, _)| *i).collect();
        let restarting: HashSet<usize> = self.pending_restarts.iter().map(|(i, _)| *i).collect();
        (0..run.workers.len())
            .filter(|i| !stopped.contains(i) && !restarting.contains(i) && run.workers[*i].running())
            .collect()
    }

    fn start(&mut self, action: &str, run: &mut Run, rng: &mut StdRng) {
        let live = self.live_workers(run);
        match action {
            "kill" if !live.is_empty() => {
                let i = live[rng.random_range(0..live.len())];
                run.workers[i].signal(Signal::SIGKILL);
                run.kills += 1;
                run.note(&format!("SIGKILL {} (pid {})", run.ids[i], run.workers[i].pid()));
                self.pending_restarts.push((i, Instant::now() + Duration::from_millis(rng.random_range(500..2_000))));
            }
            "zombie" if !live.is_empty() => {
                let i = live[rng.random_range(0..live.len())];
                run.workers[i].signal(Signal::SIGSTOP);
                run.note(&format!("SIGSTOP {}: a zombie until past its session timeout", run.ids[i]));
                self.zombies.push((i, Instant::now() + Duration::from_millis(SESSION_TIMEOUT_MS + 4_000)));
            }
            "add" => run.add_worker(),
            "remove" if live.len() > 3 => {
                let i = *live.last().unwrap();
                run.workers[i].signal(Signal::SIGTERM);
                run.note(&format!("SIGTERM {} (scale down)", run.ids[i]));
            }
            "broker" => {
                run.kafka_sh(&["kill-node", "2"]);
                run.note("SIGKILL broker node 2");
                self.broker_down = Some(Instant::now() + Duration::from_secs(8));
            }
            other => run.note(&format!("skip {other}: not enough live workers")),
        }
    }

    /// Ends the faults whose time has come.
    fn end_due(&mut self, run: &mut Run) {
        let now = Instant::now();
        for (i, until) in std::mem::take(&mut self.zombies) {
            if now >= until {
                run.workers[i].signal(Signal::SIGCONT);
                run.note(&format!("SIGCONT {}: the zombie resumes", run.ids[i]));
            } else {
                self.zombies.push((i, until));
            }
        }
        for (i, at) in std::mem::take(&mut self.pending_restarts) {
            if now >= at {
                // Same id, same transactional id: fences the dead instance.
                run.restarts += 1;
                let id = run.ids[i].clone();
                let proc = run.spawn_worker(&id, &format!("{id}.restart{}", run.restarts));
                run.note(&format!("restart {id} as pid {}", proc.pid()));
                run.workers[i] = proc;
            } else {
                self.pending_restarts.push((i, at));
            }
        }
        if self.broker_down.is_some_and(|at| now >= at) {
            run.kafka_sh(&["start-node", "2"]);
            run.note("broker node 2 restarted");
            self.broker_down = None;
        }
    }
}

/// Applies the schedule while the issuer runs, until every fault has been
/// started and ended.
async fn inject_faults(
    run: &mut Run,
    actions: &[Action],
    rng: &mut StdRng,
    issuer: &tokio::task::JoinHandle<Vec<Issued>>,
) {
    let started = Instant::now();
    let mut faults = Faults::default();
    let mut next_action = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !issuer.is_finished() || next_action < actions.len() || faults.in_progress() {
        tick.tick().await;
        let elapsed = started.elapsed().as_secs_f64();
        while next_action < actions.len() && actions[next_action].0 <= elapsed {
            let action = actions[next_action].1;
            next_action += 1;
            faults.start(action, run, rng);
        }
        faults.end_due(run);
    }
}

/// Reads committed results until every command has one, or gives up; then
/// to the end, so that anything committed late shows as a duplicate.
async fn drain_results(run: &Run, issued_ids: &HashSet<uuid::Uuid>) -> TopicReader {
    let mut results = TopicReader::new_at(&run.bootstrap, &run.topics.results.name);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        tokio::task::block_in_place(|| results.drain());
        let have: HashSet<uuid::Uuid> = decode_results(&results.messages).iter().map(|r| r.command_id).collect();
        if issued_ids.iter().all(|id| have.contains(id)) || Instant::now() > deadline {
            break;
        }
    }
    results.read_to_end(Duration::from_secs(60)).await;
    results
}

/// SIGTERM to every worker, then waits for each.
fn stop_workers(run: &mut Run) {
    for w in &run.workers {
        if w.pid() > 0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(w.pid() as i32), Signal::SIGTERM);
        }
    }
    for w in &mut run.workers {
        tokio::task::block_in_place(|| w.wait_exit(Duration::from_secs(30)));
    }
}

/// What the checker found in the results read.
struct Anomalies {
    lost: usize,
    duplicated: usize,
    unexpected: usize,
    out_of_order: usize,
}

/// Checks the results read against the commands issued.
fn check(decoded: &[CommandResult], issued_ids: &HashSet<uuid::Uuid>) -> Anomalies {
    let per_command: HashMap<uuid::Uuid, usize> = decoded.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(r.command_id).or_insert(0) += 1;
        m
    });
    let lost = issued_ids.iter().filter(|id| !per_command.contains_key(id)).count();
    let duplicated = per_command.iter().filter(|(id, n)| issued_ids.contains(id) && **n > 1).count();
    let unexpected = per_command.keys().filter(|id| !issued_ids.contains(id)).count();
    // Order is judged on each command's first result (a repeat is already
    // counted as a duplicate).
    let mut last_seq: HashMap<&str, u64> = HashMap::new();
    let mut seen: HashSet<uuid::Uuid> = HashSet::new();
    let mut out_of_order = 0;
    for r in decoded.iter().filter(|r| seen.insert(r.command_id)) {
        let prev = last_seq.insert(&r.key, r.seq).unwrap_or(0);
        if r.seq <= prev {
            out_of_order += 1;
        }
    }
    Anomalies { lost, duplicated, unexpected, out_of_order }
}

/// Digests of the outputs of aborted transactions, from the workers'
/// histories.
fn aborted_outputs(dir: &std::path::Path) -> HashSet<String> {
    let mut aborted: HashSet<String> = HashSet::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("history-") {
            continue;
        }
        for line in std::fs::read_to_string(entry.path()).unwrap_or_default().lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if event["event"] == "abort" {
                for output in event["outputs"].as_array().into_iter().flatten() {
                    aborted.insert(output[1].as_str().unwrap_or_default().to_string());
                }
            }
        }
    }
    aborted
}

/// Every assignment change a worker went through (each member logs its
/// own), as a count of rebalance events.
fn rebalances(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("w-"))
        .map(|e| {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            text.lines().filter(|l| l.contains("partitions assigned") || l.contains("partitions revoked")).count()
        })
        .sum()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut run = Run::start(Cli::parse()).await;
    let three = run.cli.cluster == "three";
    let mut rng = StdRng::seed_from_u64(run.cli.seed);
    let actions = schedule(&run.cli, three, &mut rng);
    run.note(&format!("schedule: {actions:?}"));
    let issuer = spawn_issuer(&run);
    inject_faults(&mut run, &actions, &mut rng, &issuer).await;
    let issued = issuer.await.unwrap();
    run.note(&format!("issued {} commands; draining", issued.len()));

    let issued_ids: HashSet<uuid::Uuid> = issued.iter().map(|(id, _, _)| *id).collect();
    let results = drain_results(&run, &issued_ids).await;
    stop_workers(&mut run);

    let decoded = decode_results(&results.messages);
    let Anomalies { lost, duplicated, unexpected, out_of_order } = check(&decoded, &issued_ids);
    let aborted = aborted_outputs(&run.dir);
    let aborted_read =
        results.messages.iter().filter(|m| aborted.contains(&output_digest(m.payload().unwrap_or_default()))).count();
    let rebalances = rebalances(&run.dir);
    run.note(&format!("outputs of aborted transactions (from worker histories): {}", aborted.len()));
    let line = format!(
        "chaos: mode={} seed={} issued={} results={} lost={lost} duplicated={duplicated} out_of_order={out_of_order} unexpected={unexpected} aborted_read={aborted_read} kills={} rebalances={rebalances}",
        run.cli.mode,
        run.cli.seed,
        issued.len(),
        decoded.len(),
        run.kills,
    );
    println!("{line}");
    std::fs::write(run.dir.join("summary.txt"), format!("{line}\n")).unwrap();
    if three {
        run.kafka_sh(&["down"]);
    }
    let exactly_once = run.cli.mode == "exactly_once";
    let failed = lost > 0 || unexpected > 0 || out_of_order > 0 || aborted_read > 0 || (exactly_once && duplicated > 0);
    std::process::exit(i32::from(failed));
}
