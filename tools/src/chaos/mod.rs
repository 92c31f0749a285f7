//! `shoal-chaos`: runs real Shoal processes under a seeded fault schedule,
//! then checks the history against the log.
//!
//! Without `--orchestrator` it stands in for the orchestrator: it issues
//! commands with per-key sequence numbers to the workers. With
//! `--orchestrator` the real pipeline runs: the simulator's trades, the
//! orchestrator's ingest, decisions and results stages (one process each)
//! and the workers; the commands are whatever the rules decide.
//!
//! Faults: SIGKILL and restart of workers (same id, so the restart fences
//! the dead instance's transactions), a worker SIGSTOPped past its session
//! timeout and resumed (a zombie that must be fenced by the group), workers
//! added and removed, with `--orchestrator` SIGKILL and restart of each
//! orchestrator stage, and with `--cluster three` a broker killed and
//! restarted.
//!
//! The checker: every command has exactly one committed result, in per-key
//! order, and no result of an aborted transaction is visible; per key the
//! commands' `seq` runs 1, 2, 3, ...; the commands issued are exactly those
//! that replaying the ticks through the rules decides (`--orchestrator`;
//! otherwise those the tool issued); and the state the stages serve equals
//! a replay of their input partitions.

mod check;
mod effects;
mod faults;
mod pipeline;
mod run;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rdkafka::Message;
use shoal_kafka::pipeline::output_digest;
use shoal_protocol::messages::WireMessage;

use self::check::{
    Anomalies, aborted_outputs, check_results, ingest_unaccounted, rebalances, repeats, seq_anomalies, skipped, stalls,
};
use self::faults::{inject_faults, schedule};
use self::run::Run;
use crate::{TopicReader, alert_command, decode_commands, decode_results, produce, producer_for};

/// Fault-injection run and checker for Shoal's delivery guarantees.
#[derive(Debug, Parser)]
#[command(name = "shoal-chaos", version)]
pub struct Cli {
    /// Commands to issue (without --orchestrator).
    #[arg(long, default_value_t = 20_000)]
    pub commands: usize,
    /// Distinct keys, each with its own sequence (without --orchestrator).
    #[arg(long, default_value_t = 100)]
    pub keys: usize,
    /// Commands issued per second (without --orchestrator).
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// Workers at the start (at least 3).
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Seed of the fault schedule and of the simulator (logged; same seed,
    /// same schedule).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Delivery mode of the workers: exactly_once or at_least_once (the
    /// orchestrator's stages always run exactly-once).
    #[arg(long, default_value = "exactly_once")]
    pub mode: String,
    /// Worker SIGKILLs (each followed by a restart).
    #[arg(long, default_value_t = 10)]
    pub kills: usize,
    /// Zombies: a worker SIGSTOPped past its session timeout, then resumed.
    #[arg(long, default_value_t = 1)]
    pub zombies: usize,
    /// `single`: the broker at --bootstrap; `three`: the three-node cluster
    /// of `scripts/kafka.sh --brokers 3`, with one broker killed and restarted.
    #[arg(long, default_value = "single")]
    pub cluster: String,
    /// Bootstrap servers for `--cluster single`.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Drive the real orchestrator: simulator -> ingest -> decisions ->
    /// workers -> results, each stage its own process, killed and restarted
    /// on the schedule (--orchestrator-kills).
    #[arg(long)]
    pub orchestrator: bool,
    /// With --orchestrator: how long the simulator's trades flow, seconds.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// With --orchestrator: simulated symbols (the commands' keys).
    #[arg(long, default_value_t = 8)]
    pub symbols: usize,
    /// With --orchestrator: trades per second per symbol.
    #[arg(long, default_value_t = 20)]
    pub tick_rate: u32,
    /// With --orchestrator: SIGKILLs of orchestrator stages (ingest,
    /// decisions, results in turn from a seeded start), each followed by a
    /// restart with the same orchestrator id.
    #[arg(long, default_value_t = 6)]
    pub orchestrator_kills: usize,
    /// With `--cluster three`: network partitions between the worker `w-1`
    /// and every broker, through Toxiproxy (its connections black-holed or
    /// reset, seeded), each healed after 2 s to --partition-secs.
    #[arg(long, default_value_t = 0)]
    pub partitions: usize,
    /// Longest network partition, seconds (the workers' transaction
    /// timeout is 10 s; longer partitions abort open transactions, which
    /// the worker recovers from: see docs/reliability.md).
    #[arg(long, default_value_t = 8)]
    pub partition_secs: u64,
    /// Without --orchestrator: make every Nth command a `notify_webhook`
    /// command (two notifications, each an effect step journalled by the
    /// workers) delivered to an endpoint in this process that counts them;
    /// every step must be POSTed exactly once. `0`: none.
    #[arg(long, default_value_t = 0)]
    pub webhook_every: usize,
    /// Without --orchestrator: make every Nth command an `llm_decide`
    /// command, decided by the workers' LLM skill against a scripted model
    /// endpoint in this process that counts its calls per command and
    /// round; each must be called exactly once. `0`: none.
    #[arg(long, default_value_t = 0)]
    pub llm_every: usize,
    /// Where logs and histories go (default target/chaos/<run id>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl Cli {
    /// Length of the issuing period, seconds.
    fn issue_secs(&self) -> f64 {
        if self.orchestrator { self.seconds as f64 } else { self.commands as f64 / f64::from(self.rate) }
    }
}

/// An issued command: id, key and sequence number.
type Issued = (uuid::Uuid, String, u64);

/// Issues commands from a separate task, recording each acknowledged one.
fn spawn_issuer(run: &Run) -> tokio::task::JoinHandle<Vec<Issued>> {
    let issuer_bootstrap = run.bootstrap.clone();
    let commands_topic = run.topics.commands.name.clone();
    let (commands, keys, rate) = (run.cli.commands, run.cli.keys, run.cli.rate);
    let (webhook_every, llm_every) =
        if run.effects.is_some() { (run.cli.webhook_every, run.cli.llm_every) } else { (0, 0) };
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
                let key = format!("key-{k}");
                if webhook_every > 0 && n % webhook_every == 0 {
                    batch.push(effects::webhook_command(&key, seqs[k]));
                } else if llm_every > 0 && n % llm_every == 0 {
                    batch.push(effects::llm_command(&key, seqs[k]));
                } else {
                    batch.push(alert_command(&key, seqs[k]));
                }
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

/// SIGTERM to every process still running, then waits for each.
fn stop_all(run: &mut Run) {
    let procs = run.workers.iter_mut().chain(run.stages.iter_mut()).chain(run.sim.iter_mut().map(|(p, _)| p));
    let procs: Vec<_> = procs.collect();
    for p in &procs {
        if p.pid() > 0 {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid() as i32), nix::sys::signal::Signal::SIGTERM);
        }
    }
    for p in procs {
        tokio::task::block_in_place(|| p.wait_exit(Duration::from_secs(30)));
    }
}

/// What the orchestrator's side of the check found (all zero without
/// `--orchestrator`, where the tool issues the commands itself).
#[derive(Debug, Default)]
struct Decisions {
    missing_commands: usize,
    extra_commands: usize,
    state_mismatches: usize,
}

/// Runs `cli`'s chaos run and checks it; the process's exit status (0: every
/// required counter zero).
pub async fn run(cli: Cli) -> i32 {
    let mut run = Run::start(cli).await;
    let three = run.cli.cluster == "three";
    let mut rng = StdRng::seed_from_u64(run.cli.seed);
    let actions = schedule(&run.cli, three, &mut rng);
    run.note(&format!("schedule: {actions:?}"));

    // The commands issued: by this tool, or by the decisions stage.
    let mut decisions = Decisions::default();
    let (commands, expected_ids) = if run.cli.orchestrator {
        let until = Instant::now() + Duration::from_secs(run.cli.seconds);
        inject_faults(&mut run, &actions, &mut rng, || Instant::now() < until).await;
        let (commands, found) = pipeline::end_and_check(&mut run).await;
        decisions = found;
        let ids: HashSet<uuid::Uuid> = commands.iter().map(|c| c.id).collect();
        (commands, ids)
    } else {
        let issuer = spawn_issuer(&run);
        inject_faults(&mut run, &actions, &mut rng, || !issuer.is_finished()).await;
        let issued = issuer.await.unwrap();
        let ids: HashSet<uuid::Uuid> = issued.iter().map(|(id, _, _)| *id).collect();
        let mut reader = TopicReader::new_at(&run.bootstrap, &run.topics.commands.name);
        reader.read_until(Duration::from_secs(60), "the issued commands", |m| m.len() >= ids.len()).await;
        reader.read_to_end(Duration::from_secs(60)).await;
        let commands = decode_commands(&reader.messages);
        let on_topic: HashSet<uuid::Uuid> = commands.iter().map(|c| c.id).collect();
        decisions.missing_commands = ids.difference(&on_topic).count();
        decisions.extra_commands = commands.len() - commands.iter().filter(|c| ids.contains(&c.id)).count();
        (commands, ids)
    };
    run.note(&format!("{} commands issued; draining results", commands.len()));
    let (seq_anomalies, examples) = seq_anomalies(&commands);
    if seq_anomalies > 0 {
        run.note(&format!("seq anomalies, for example: {examples:?}"));
    }

    let results = drain_results(&run, &expected_ids).await;
    let decoded = decode_results(&results.messages);
    let mut repeats_unaccounted = None;
    if run.cli.orchestrator {
        let recorded = pipeline::check_recorded(&mut run, &repeats(&commands, &decoded)).await;
        decisions.state_mismatches += recorded.mismatches;
        repeats_unaccounted = Some(recorded.repeats_unaccounted);
    }
    stop_all(&mut run);

    let Anomalies { lost, duplicated, unexpected, out_of_order, out_of_order_examples } =
        check_results(&decoded, &expected_ids);
    if out_of_order > 0 {
        run.note(&format!("results out of order, for example: {out_of_order_examples:?}"));
    }
    let effects = run.effects.as_ref().map(|e| e.count(&commands, &decoded));
    for repeat in run.effects.as_ref().map(|e| e.repeats(10)).unwrap_or_default() {
        run.note(&format!("effect repeated: {repeat}"));
    }
    let aborted = aborted_outputs(&run.dir);
    let aborted_read =
        results.messages.iter().filter(|m| aborted.contains(&output_digest(m.payload().unwrap_or_default()))).count();
    let (rebalances, skipped) = (rebalances(&run.dir), skipped(&run.dir));
    let (unaccounted, stalls) = (ingest_unaccounted(&run.dir), stalls(&run.dir));
    run.note(&format!("outputs of aborted transactions (from worker histories): {}", aborted.len()));
    let Decisions { missing_commands, extra_commands, state_mismatches } = decisions;
    let line = format!(
        "chaos: mode={} seed={} issued={} results={} lost={lost} duplicated={duplicated} out_of_order={out_of_order} unexpected={unexpected} aborted_read={aborted_read} missing_commands={missing_commands} extra_commands={extra_commands} seq_anomalies={seq_anomalies} state_mismatches={state_mismatches} kills={} orchestrator_kills={} partitions={} rebalances={rebalances} skipped={skipped} stalls={stalls} ingest_unaccounted={unaccounted} stage_exits={}{}",
        run.cli.mode,
        run.cli.seed,
        commands.len(),
        decoded.len(),
        run.kills,
        run.orchestrator_kills,
        run.partitions,
        run.stage_exits,
        repeats_unaccounted.map(|n| format!(" repeats_unaccounted={n}")).unwrap_or_default(),
    ) + &effects.map(|e| e.summary()).unwrap_or_default();
    println!("{line}");
    std::fs::write(run.dir.join("summary.txt"), format!("{line}\n")).unwrap();
    if three {
        run.kafka_sh(&["down"]);
    }
    let exactly_once = run.cli.mode == "exactly_once";
    let failed = lost > 0
        || unexpected > 0
        || out_of_order > 0
        || aborted_read > 0
        || missing_commands > 0
        || extra_commands > 0
        || seq_anomalies > 0
        || state_mismatches > 0
        || unaccounted > 0
        || repeats_unaccounted.is_some_and(|n| n > 0)
        || effects.is_some_and(|e| e.repeated() > 0 || e.missing > 0)
        || (exactly_once && duplicated > 0);
    i32::from(failed)
}
