//! Starting Shoal's binaries in a test's scope: the scope's environment
//! plus the settings a test adds.

use std::path::Path;

use super::proc::Proc;
use super::scope::{Scope, bin};

/// A Shoal binary about to be started in a scope, with the scope's
/// environment ([`Scope::env`]) and settings added after it (a later
/// setting wins over an earlier one of the same name).
#[derive(Debug, Clone)]
#[must_use = "nothing starts until `spawn`"]
pub struct Launch {
    program: &'static str,
    name: String,
    dir: std::path::PathBuf,
    env: Vec<(String, String)>,
}

impl Scope {
    /// `shoal-worker`, logging to `<dir>/<name>.log`.
    pub fn worker(&self, name: &str) -> Launch {
        self.launch("shoal-worker", name)
    }

    /// `shoal-orchestrator`, logging to `<dir>/<name>.log`.
    pub fn orchestrator(&self, name: &str) -> Launch {
        self.launch("shoal-orchestrator", name)
    }

    fn launch(&self, program: &'static str, name: &str) -> Launch {
        Launch { program, name: name.into(), dir: self.dir.clone(), env: self.env() }
    }

    /// `n` workers, `worker-1` to `worker-n`, each set up by
    /// `configure(i, launch)`.
    pub fn start_workers(&self, n: usize, configure: impl Fn(usize, Launch) -> Launch) -> Vec<Proc> {
        (1..=n).map(|i| configure(i, self.worker(&format!("worker-{i}"))).spawn()).collect()
    }
}

impl Launch {
    /// Adds one setting.
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }

    /// Adds settings.
    pub fn with_all<'a>(mut self, settings: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        self.env.extend(settings.into_iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// `worker.id`.
    pub fn id(self, id: impl Into<String>) -> Self {
        self.with("SHOAL__WORKER__ID", id)
    }

    /// A cluster nothing answers for (nothing listens on port 1: every
    /// connection attempt is refused), no topic creation, and a shutdown
    /// bound of 2 s.
    pub fn without_kafka(self) -> Self {
        self.with_all([
            ("SHOAL__KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1"),
            ("SHOAL__TOPICS__CREATE", "false"),
            ("SHOAL__SHUTDOWN__TIMEOUT_MS", "2000"),
        ])
    }

    /// `delivery.mode`.
    pub fn mode(self, mode: &str) -> Self {
        self.with("SHOAL__DELIVERY__MODE", mode)
    }

    /// `orchestrator.stages`.
    pub fn stages(self, stages: &str) -> Self {
        self.with("SHOAL__ORCHESTRATOR__STAGES", stages)
    }

    /// `feed.url`.
    pub fn feed(self, url: &str) -> Self {
        self.with("SHOAL__FEED__URL", url)
    }

    /// `results.record_path`: outcomes recorded to `path`.
    pub fn record_to(self, path: &Path) -> Self {
        self.with("SHOAL__RESULTS__RECORD_PATH", path.display().to_string())
    }

    /// Small steps and thresholds so the market rules fire often on the
    /// simulator's walk.
    pub fn lively_rules(self) -> Self {
        self.with_all([
            ("SHOAL__RULES__LEVEL_STEP", "0.20"),
            ("SHOAL__RULES__MOVE_THRESHOLD_BPS", "5"),
            ("SHOAL__RULES__MOVE_COOLDOWN_SECS", "1"),
        ])
    }

    /// OTLP trace export over `protocol` (`grpc` or `http/protobuf`) to
    /// `endpoint`, chosen by the standard variables, exporting often so
    /// little waits for the final flush.
    pub fn otlp(self, protocol: &str, endpoint: String) -> Self {
        self.with("SHOAL__OBSERVABILITY__OTLP_ENABLED", "true")
            .with("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .with("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .with("OTEL_BSP_SCHEDULE_DELAY", "500")
    }

    /// The environment it would start with.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Starts it.
    pub fn spawn(self) -> Proc {
        Proc::spawn(&self.name, &bin(self.program), &[], &self.env, &self.dir)
    }
}
