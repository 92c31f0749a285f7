//! The seeded fault schedule and the faults in progress.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::Rng;
use rand::rngs::StdRng;

use super::Cli;
use super::run::{PROXIED_WORKER, Run, SESSION_TIMEOUT_MS, STAGES};

/// A scheduled fault: when (seconds into the issuing period), and what.
pub(super) type Action = (f64, &'static str);

/// The fault schedule: seeded, spread over the issuing period.
pub(super) fn schedule(cli: &Cli, three: bool, rng: &mut StdRng) -> Vec<Action> {
    let issue_secs = cli.issue_secs();
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
    for _ in 0..cli.partitions {
        actions.push((rng.random_range(0.1..0.8) * issue_secs, "partition"));
    }
    if cli.orchestrator {
        // The stages in turn from a seeded start: each is killed once
        // there are three kills or more.
        let first = rng.random_range(0..STAGES.len());
        for i in 0..cli.orchestrator_kills {
            let stage = STAGES[(first + i) % STAGES.len()];
            actions.push((rng.random_range(0.05..0.85) * issue_secs, stage_kill(stage)));
        }
    }
    actions.sort_by(|a, b| a.0.total_cmp(&b.0));
    actions
}

fn stage_kill(stage: &str) -> &'static str {
    match stage {
        "ingest" => "kill-ingest",
        "decisions" => "kill-decisions",
        _ => "kill-results",
    }
}

/// Faults in progress: zombies to resume, killed workers and stages to
/// restart, and a broker to start again, each at its time.
#[derive(Default)]
pub(super) struct Faults {
    zombies: Vec<(usize, Instant)>,
    pending_restarts: Vec<(usize, Instant)>,
    pending_stages: Vec<(usize, Instant)>,
    broker_down: Option<Instant>,
    /// Network partitions in force (each heals itself when its time is up).
    partitions: Vec<crate::Fault>,
}

impl Faults {
    pub fn in_progress(&self) -> bool {
        !self.zombies.is_empty()
            || !self.pending_restarts.is_empty()
            || !self.pending_stages.is_empty()
            || self.broker_down.is_some()
            || !self.partitions.is_empty()
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

    pub async fn start(&mut self, action: &str, run: &mut Run, rng: &mut StdRng) {
        let live = self.live_workers(run);
        match action {
            "partition" => {
                let Some(net) = run.net.as_ref() else { return };
                if !self.partitions.is_empty() {
                    run.note("skip partition: one is in force");
                    return;
                }
                let how = if rng.random_bool(0.5) { crate::Partition::Blackhole } else { crate::Partition::Reset };
                let secs = rng.random_range(2..=run.cli.partition_secs.max(2));
                let fault = net.partition(how, Duration::from_secs(secs)).await;
                self.partitions.push(fault);
                run.partitions += 1;
                run.note(&format!("network partition of {PROXIED_WORKER} from the brokers ({how:?}) for {secs}s"));
            }
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
            kill if kill.starts_with("kill-") => {
                let stage = &kill["kill-".len()..];
                let i = STAGES.iter().position(|s| *s == stage).unwrap();
                if self.pending_stages.iter().any(|(p, _)| *p == i) {
                    run.note(&format!("skip {kill}: the {stage} stage is down already"));
                    return;
                }
                run.stages[i].signal(Signal::SIGKILL);
                run.orchestrator_kills += 1;
                run.note(&format!("SIGKILL the {stage} stage (pid {})", run.stages[i].pid()));
                self.pending_stages.push((i, Instant::now() + Duration::from_millis(rng.random_range(500..3_000))));
            }
            other => run.note(&format!("skip {other}: not enough live workers")),
        }
    }

    /// Ends the faults whose time has come.
    pub fn end_due(&mut self, run: &mut Run) {
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
        // A stage that stopped on its own is restarted, as a supervisor
        // (Kubernetes) would, and counted.
        for (i, stage) in STAGES.iter().copied().enumerate().take(run.stages.len()) {
            if !self.pending_stages.iter().any(|(p, _)| *p == i) && !run.stages[i].running() {
                run.stage_exits += 1;
                run.restarts += 1;
                let proc = run.spawn_stage(stage, &format!("{stage}.restart{}", run.restarts));
                run.note(&format!("the {stage} stage exited on its own; restarted as pid {}", proc.pid()));
                run.stages[i] = proc;
            }
        }
        for (i, at) in std::mem::take(&mut self.pending_stages) {
            if now >= at {
                run.restarts += 1;
                let stage = STAGES[i];
                let proc = run.spawn_stage(stage, &format!("{stage}.restart{}", run.restarts));
                run.note(&format!("restart the {stage} stage as pid {}", proc.pid()));
                run.stages[i] = proc;
            } else {
                self.pending_stages.push((i, at));
            }
        }
        let (healed, held): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.partitions).into_iter().partition(|f| f.ends() <= tokio::time::Instant::now());
        self.partitions = held;
        if !healed.is_empty() {
            run.note(&format!("network partition of {PROXIED_WORKER} healed"));
        }
        if self.broker_down.is_some_and(|at| now >= at) {
            run.kafka_sh(&["start-node", "2"]);
            run.note("broker node 2 restarted");
            self.broker_down = None;
        }
    }
}

/// Applies the schedule while `issuing()` holds, until every fault has been
/// started and ended.
pub(super) async fn inject_faults(
    run: &mut Run,
    actions: &[Action],
    rng: &mut StdRng,
    mut issuing: impl FnMut() -> bool,
) {
    let started = Instant::now();
    let mut faults = Faults::default();
    let mut next_action = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while issuing() || next_action < actions.len() || faults.in_progress() {
        tick.tick().await;
        let elapsed = started.elapsed().as_secs_f64();
        while next_action < actions.len() && actions[next_action].0 <= elapsed {
            let action = actions[next_action].1;
            next_action += 1;
            faults.start(action, run, rng).await;
        }
        faults.end_due(run);
    }
}
