//! The worker's configuration (see the README's configuration reference).

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use shoal_config::{SettingsError, Validate, in_range, initial_delay, non_empty};

shoal_app::app_settings! {
    /// Everything `shoal-worker` reads at start-up: the shared sections
    /// (`kafka`, `topics`, `log`, `shutdown`, `delivery`, `observability`)
    /// and the worker's own.
    pub struct WorkerSettings {
        /// Worker behaviour.
        pub worker: WorkerSection,
        /// The LLM agent skill (`llm_decide`), off by default.
        pub llm: crate::handlers::llm::LlmSettings,
        /// The orchestrator's sections are accepted and ignored, so one file or
        /// one environment can configure both binaries.
        #[serde(skip_serializing)]
        pub orchestrator: IgnoredAny,
        /// See `orchestrator`.
        #[serde(skip_serializing)]
        pub feed: IgnoredAny,
        /// See `orchestrator`.
        #[serde(skip_serializing)]
        pub rules: IgnoredAny,
        /// See `orchestrator`.
        #[serde(skip_serializing)]
        pub results: IgnoredAny,
        /// See `orchestrator`.
        #[serde(skip_serializing)]
        pub state: IgnoredAny,
        /// See `orchestrator`.
        #[serde(skip_serializing)]
        pub api: IgnoredAny,
    }
}

/// The `[worker]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    /// This instance's identity, written into every result. Defaults to the
    /// host name (the pod name on Kubernetes) or `worker-<pid>`.
    pub id: String,
    /// Consumer group shared by all workers.
    pub group_id: String,
    /// How often completed offsets are committed, milliseconds.
    pub commit_interval_ms: u64,
    /// A handler running longer than this fails the attempt, milliseconds
    /// (a time-out is retried like any transient failure).
    pub handler_timeout_ms: u64,
    /// Attempts per command before a transient failure becomes final (and
    /// the command is dead-lettered).
    pub max_attempts: u32,
    /// First retry delay, milliseconds; doubles per attempt, with jitter.
    pub retry_initial_ms: u64,
    /// Largest retry delay, milliseconds.
    pub retry_max_ms: u64,
    /// Keys handled concurrently; commands of one key always run one after
    /// another in `seq` order.
    pub max_concurrency: usize,
    /// Commands read but not finished (running or waiting behind their key);
    /// reading pauses at this bound. At most 512: the commit metadata names
    /// unfinished commands and must fit Kafka's 4 KiB limit.
    pub max_in_flight: usize,
    /// At-least-once only: how many command ids with results the worker
    /// remembers to skip repeats (read from the results topic's tail when
    /// its partitions change).
    pub dedupe_window: usize,
    /// Register the diagnostic `probe` handler (for rehearsing failures).
    pub probe_handler: bool,
    /// The `notify_webhook` skill (`[worker.webhook]`); off unless its URL is set.
    pub webhook: crate::handlers::webhook::WebhookSettings,
    /// The `paper_order` skill (`[worker.paper]`); off by default.
    pub paper: crate::handlers::paper::PaperSettings,
    /// The `check_device` skill's detectors (`[worker.iot]`).
    pub iot: crate::handlers::iot::IotSkillSettings,
    /// `evaluate_strategy`'s orders for the next level (`[worker.strategy]`).
    pub strategy: crate::handlers::strategy::StrategySettings,
    /// `score_transaction`'s cases for the next level (`[worker.fraud]`).
    pub fraud: crate::handlers::fraud::FraudSkillSettings,
    /// The fraud topology's `build_case` and `decide_case` (`[worker.cases]`).
    pub cases: crate::handlers::cases::CasesSettings,
    /// The IoT topology's `correlate_incident` and `notify_incident`
    /// (`[worker.incidents]`).
    pub incidents: crate::handlers::incidents::IncidentsSettings,
    /// Results read from the results topic's tail to restore the state of
    /// stateful skills (`build_case`, `correlate_incident`) when the worker
    /// starts, its partitions change or it rewinds.
    pub state_restore_results: usize,
    /// Where commands emitted by skills go (the next level's commands
    /// topic); empty: they stay in the result.
    pub next_topic: String,
    /// Flow control (`[worker.flow]`): priorities and limits per kind and
    /// key, the LLM skill's token budget per key.
    pub flow: crate::flow::FlowSettings,
}

impl Default for WorkerSection {
    fn default() -> Self {
        let id = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| format!("worker-{}", std::process::id()));
        Self {
            id,
            group_id: "shoal-workers".into(),
            commit_interval_ms: 1_000,
            handler_timeout_ms: 5_000,
            max_attempts: 5,
            retry_initial_ms: 100,
            retry_max_ms: 5_000,
            max_concurrency: 16,
            max_in_flight: 256,
            dedupe_window: 100_000,
            probe_handler: false,
            webhook: Default::default(),
            paper: Default::default(),
            iot: Default::default(),
            strategy: Default::default(),
            fraud: Default::default(),
            cases: Default::default(),
            incidents: Default::default(),
            state_restore_results: 10_000,
            next_topic: String::new(),
            flow: Default::default(),
        }
    }
}

impl WorkerSection {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), SettingsError> {
        non_empty("worker.id", &self.id, "a non-empty identity, e.g. worker-1")?;
        non_empty("worker.group_id", &self.group_id, "a consumer group name")?;
        in_range("worker.commit_interval_ms", self.commit_interval_ms, 10..=60_000, "milliseconds")?;
        in_range("worker.handler_timeout_ms", self.handler_timeout_ms, 1..=600_000, "milliseconds")?;
        in_range("worker.max_attempts", self.max_attempts, 1..=100, "an integer")?;
        initial_delay("worker.retry_initial_ms", self.retry_initial_ms, "worker.retry_max_ms", self.retry_max_ms)?;
        in_range("worker.max_concurrency", self.max_concurrency, 1..=10_000, "an integer")?;
        in_range("worker.max_in_flight", self.max_in_flight, 1..=shoal_kafka::pipeline::MAX_IN_FLIGHT, "an integer")?;
        in_range("worker.dedupe_window", self.dedupe_window, 1..=10_000_000, "an integer")?;
        self.webhook.validate()?;
        self.paper.validate()?;
        self.iot.validate()?;
        self.strategy.validate()?;
        self.incidents.validate()?;
        in_range("worker.state_restore_results", self.state_restore_results, 1..=10_000_000, "an integer")?;
        self.flow.validate(self.max_concurrency)
    }
}

impl Validate for WorkerSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.validate_shared()?;
        self.worker.validate()?;
        self.llm.validate()?;
        if self.llm.enabled && self.worker.handler_timeout_ms < self.llm.call_timeout_ms {
            return Err(SettingsError::invalid(
                "worker.handler_timeout_ms",
                format!(
                    "{} is below llm.call_timeout_ms = {}",
                    self.worker.handler_timeout_ms, self.llm.call_timeout_ms
                ),
                "at least llm.call_timeout_ms (better: llm.max_rounds times it) when [llm] is enabled",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The worker levels of `examples/topologies` load and validate as they
    /// are shipped, and turn on what their level needs.
    #[test]
    fn the_example_topologies_worker_configs_load() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/topologies");
        let mut loaded = Vec::new();
        for topology in ["trading", "fraud", "iot"] {
            for entry in std::fs::read_dir(dir.join(topology)).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if !name.ends_with(".toml") || name == "orchestrator.toml" {
                    continue;
                }
                let settings: WorkerSettings = shoal_config::load_from(Some(&path), std::iter::empty())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                loaded.push((format!("{topology}/{name}"), settings));
            }
        }
        loaded.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<&str> = loaded.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), 8, "{names:?}");
        let get = |n: &str| &loaded.iter().find(|(name, _)| name == n).unwrap().1.worker;
        assert_eq!(get("fraud/scoring.toml").fraud.case_key, "cases-eu");
        assert!(get("fraud/cases.toml").cases.enabled && get("iot/sites.toml").incidents.enabled);
        assert!(get("iot/devices.toml").iot.correlate);
        assert_eq!(get("trading/strategy.toml").next_topic, "shoal.orders");
        assert!(get("trading/paper.toml").paper.enabled);
    }
}
