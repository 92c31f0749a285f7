//! A chaos run's processes: workers, and with `--orchestrator` the
//! simulator and the orchestrator's three stages, each in its own process
//! so that each can be killed alone.

use std::path::PathBuf;

use shoal_kafka::settings::TopicsSettings;

use super::Cli;
use crate::{ADMIN_TOKEN, NetFaults, Proc, READ_TOKEN, bin, repo_root, start_sim, topic_env, topics_named};

pub(super) const THREE_NODE_BOOTSTRAP: &str = "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096";
pub(super) const SESSION_TIMEOUT_MS: u64 = 6_000;
/// `SHOAL_KAFKA_PROXY_PORT` of the three-node cluster with --partitions:
/// Toxiproxy listens on 19192-19194, the brokers' FAULTY listeners are
/// 19195-19197 (clear of the cluster's 19092-19097).
const PROXY_PORT: u16 = 19_192;
/// The worker whose connections go through the fault proxy.
pub(super) const PROXIED_WORKER: &str = "w-1";

/// The orchestrator's stages, one process each.
pub(super) const STAGES: [&str; 3] = ["ingest", "decisions", "results"];

pub(super) struct Run {
    pub cli: Cli,
    pub bootstrap: String,
    pub id: String,
    pub dir: PathBuf,
    pub topics: TopicsSettings,
    pub workers: Vec<Proc>,
    /// Worker id of each slot (restarts keep the id).
    pub ids: Vec<String>,
    /// The orchestrator's stage processes, in [`STAGES`] order.
    pub stages: Vec<Proc>,
    /// The simulator (`--orchestrator`) and its URL.
    pub sim: Option<(Proc, String)>,
    pub restarts: usize,
    pub next_worker: usize,
    pub kills: usize,
    pub orchestrator_kills: usize,
    pub partitions: usize,
    /// Orchestrator stages that exited on their own (and were restarted).
    pub stage_exits: usize,
    /// The fault proxy in front of the brokers (--partitions).
    pub net: Option<NetFaults>,
    /// The webhook endpoint counting effects (`--webhook-every`).
    pub effects: Option<super::effects::Effects>,
    log: std::fs::File,
}

impl Run {
    /// Checks the options, creates the run's directory and topics (starting
    /// the three-node cluster first with `--cluster three`) and starts the
    /// first workers, and with `--orchestrator` the simulator and stages.
    pub async fn start(cli: Cli) -> Self {
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
            stages: Vec::new(),
            sim: None,
            restarts: 0,
            next_worker: 0,
            kills: 0,
            orchestrator_kills: 0,
            partitions: 0,
            stage_exits: 0,
            net: None,
            effects: None,
            log,
        };
        run.note(&format!(
            "run {} mode={} seed={} {} keys={} cluster={} logs in {}",
            run.id,
            run.cli.mode,
            run.cli.seed,
            if run.cli.orchestrator {
                format!("orchestrator: {} symbols for {}s", run.cli.symbols, run.cli.seconds)
            } else {
                format!("commands={}", run.cli.commands)
            },
            run.cli.keys,
            run.cli.cluster,
            run.dir.display()
        ));
        assert!(
            run.cli.partitions == 0 || three,
            "--partitions needs --cluster three (its brokers get a proxied listener)"
        );
        if three && run.cli.partitions > 0 {
            // A running cluster without the proxied listener cannot be reused.
            run.kafka_sh(&["down"]);
            run.kafka_sh(&["up", "--fresh"]);
            run.net = Some(NetFaults::start(PROXY_PORT, 3, &run.dir).await);
            run.note(&format!("fault proxy in front of the brokers; {PROXIED_WORKER} connects through it"));
        } else if three {
            run.kafka_sh(&["up"]);
        }
        let kafka =
            shoal_kafka::settings::KafkaSettings { bootstrap_servers: run.bootstrap.clone(), ..Default::default() };
        shoal_kafka::ensure_topics(&kafka, &run.topics).await.expect("create topics");
        if (run.cli.webhook_every > 0 || run.cli.llm_every > 0) && !run.cli.orchestrator {
            let effects = super::effects::Effects::start().await;
            run.note(&format!(
                "effects endpoint {} (webhook every {}th command, llm_decide every {}th)",
                effects.url, run.cli.webhook_every, run.cli.llm_every
            ));
            run.effects = Some(effects);
        }
        for _ in 0..run.cli.workers {
            run.add_worker();
        }
        if run.cli.orchestrator {
            let symbols: Vec<String> = (0..run.cli.symbols).map(|i| format!("CH-{i:02}")).collect();
            let (rate, seed) = (run.cli.tick_rate.to_string(), run.cli.seed.to_string());
            let args = ["--rate", rate.as_str(), "--seed", seed.as_str(), "--symbols", &symbols.join(",")];
            let (sim, url) = start_sim(&args, &run.dir);
            run.note(&format!("simulator on {url} (pid {})", sim.pid()));
            run.sim = Some((sim, url));
            for stage in STAGES {
                let proc = run.spawn_stage(stage, stage);
                run.note(&format!("start {stage} stage (pid {})", proc.pid()));
                run.stages.push(proc);
            }
        }
        run
    }

    pub fn note(&mut self, what: &str) {
        use std::io::Write as _;
        let line = format!("{} {what}", chrono::Utc::now().format("%H:%M:%S%.3f"));
        println!("chaos: {line}");
        let _ = writeln!(self.log, "{line}");
    }

    /// Settings every process of the run shares.
    fn common_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("SHOAL__KAFKA__BOOTSTRAP_SERVERS".to_string(), self.bootstrap.clone()),
            // Several processes on one machine: each picks a free port.
            ("SHOAL__OBSERVABILITY__LISTEN".into(), "127.0.0.1:0".into()),
            ("SHOAL__KAFKA__SESSION_TIMEOUT_MS".into(), SESSION_TIMEOUT_MS.to_string()),
            ("SHOAL__KAFKA__MESSAGE_TIMEOUT_MS".into(), "10000".into()),
            ("SHOAL__DELIVERY__TRANSACTION_CALL_TIMEOUT_MS".into(), "5000".into()),
            ("SHOAL__DELIVERY__TRANSACTIONAL_ID_PREFIX".into(), format!("chaos.{}", self.id)),
            ("SHOAL__WORKER__GROUP_ID".into(), format!("chaos.{}.workers", self.id)),
            ("SHOAL__LOG__STATUS_INTERVAL_SECS".into(), "2".into()),
            ("NO_COLOR".into(), "1".into()),
        ];
        env.extend(topic_env(&self.topics));
        env
    }

    /// A worker's settings.
    pub fn worker_env(&self, worker_id: &str) -> Vec<(String, String)> {
        let mut env = self.common_env();
        if let Some(net) = self.net.as_ref().filter(|_| worker_id == PROXIED_WORKER) {
            env.push(("SHOAL__KAFKA__BOOTSTRAP_SERVERS".into(), net.bootstrap()));
        }
        env.extend([
            ("SHOAL__DELIVERY__MODE".into(), self.cli.mode.clone()),
            (
                "SHOAL__DELIVERY__HISTORY_PATH".into(),
                self.dir.join(format!("history-{worker_id}.jsonl")).display().to_string(),
            ),
            ("SHOAL__WORKER__ID".into(), worker_id.to_string()),
            ("SHOAL__TOPICS__CREATE".into(), "false".into()),
            // Status lines (with the skips) but no line per command.
            ("RUST_LOG".into(), "info,librdkafka=warn,shoal_worker::command=warn".into()),
        ]);
        env.extend(self.effects.iter().flat_map(|e| e.worker_env()));
        env
    }

    /// An orchestrator stage's settings: exactly-once always (it decides and
    /// numbers), a fixed id per stage so a restart fences its dead instance,
    /// rules that fire often, frequent checkpoints.
    pub fn stage_env(&self, stage: &str) -> Vec<(String, String)> {
        let mut env = self.common_env();
        let url = self.sim.as_ref().map(|(_, url)| url.clone()).unwrap_or_default();
        env.extend([
            ("SHOAL__ORCHESTRATOR__STAGES".into(), stage.to_string()),
            ("SHOAL__ORCHESTRATOR__ID".into(), format!("chaos-{stage}")),
            ("SHOAL__ORCHESTRATOR__DECISIONS_GROUP".into(), format!("chaos.{}.decisions", self.id)),
            ("SHOAL__ORCHESTRATOR__RESULTS_GROUP".into(), format!("chaos.{}.results", self.id)),
            ("SHOAL__DELIVERY__MODE".into(), "exactly_once".into()),
            ("SHOAL__FEED__URL".into(), url),
            ("SHOAL__FEED__RECONNECT_INITIAL_MS".into(), "100".into()),
            ("SHOAL__RULES__LEVEL_STEP".into(), "0.20".into()),
            ("SHOAL__RULES__MOVE_THRESHOLD_BPS".into(), "5".into()),
            ("SHOAL__RULES__MOVE_COOLDOWN_SECS".into(), "1".into()),
            ("SHOAL__STATE__CHECKPOINT_INTERVAL_MS".into(), "500".into()),
            ("SHOAL__STATE__MEMBERS_TOPIC".into(), format!("chaos.{}.members", self.id)),
            ("SHOAL__API__LISTEN".into(), "127.0.0.1:0".into()),
            ("SHOAL_API_TOKENS".into(), format!("read:{READ_TOKEN},admin:{ADMIN_TOKEN}")),
            ("RUST_LOG".into(), "info,librdkafka=warn".into()),
        ]);
        env
    }

    pub fn spawn_worker(&mut self, worker_id: &str, log_name: &str) -> Proc {
        let env = self.worker_env(worker_id);
        Proc::spawn(log_name, &bin("shoal-worker"), &[], &env, &self.dir)
    }

    pub fn spawn_stage(&mut self, stage: &str, log_name: &str) -> Proc {
        let env = self.stage_env(stage);
        Proc::spawn(log_name, &bin("shoal-orchestrator"), &[], &env, &self.dir)
    }

    pub fn add_worker(&mut self) {
        self.next_worker += 1;
        let id = format!("w-{}", self.next_worker);
        let proc = self.spawn_worker(&id, &id);
        self.note(&format!("start {id} (pid {})", proc.pid()));
        self.workers.push(proc);
        self.ids.push(id);
    }

    pub fn kafka_sh(&mut self, args: &[&str]) {
        let status = std::process::Command::new("bash")
            .arg(repo_root().join("scripts/kafka.sh"))
            .args(["--brokers", "3"])
            .args(args)
            .envs(self.cli.partitions.gt(&0).then(|| ("SHOAL_KAFKA_PROXY_PORT", PROXY_PORT.to_string())))
            .status()
            .expect("run scripts/kafka.sh");
        assert!(status.success(), "scripts/kafka.sh {args:?} failed");
    }
}
