//! The orchestrator's configuration (see the README's configuration reference).

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use shoal_config::{SettingsError, Validate, at_least, in_range, non_empty, one_of};

pub use crate::feed::{FeedFormat, FeedSettings};
pub use crate::rules::RulesSettings;

shoal_app::app_settings! {
    /// Everything `shoal-orchestrator` reads at start-up: the shared sections
    /// (`kafka`, `topics`, `log`, `shutdown`, `delivery`, `observability`)
    /// and the orchestrator's own.
    pub struct OrchestratorSettings {
        /// Which stages run and their consumer groups.
        pub orchestrator: OrchestratorSection,
        /// The market data feed.
        pub feed: FeedSettings,
        /// Decision rules.
        pub rules: RulesSettings,
        /// Result recording.
        pub results: ResultsSettings,
        /// The derived state: changelog, checkpoints, bounds.
        pub state: crate::state::StateSettings,
        /// The state query API.
        pub api: shoal_api::ApiSettings,
        /// The worker's section is accepted and ignored, so one file or one
        /// environment can configure both binaries.
        #[serde(skip_serializing)]
        pub worker: IgnoredAny,
        /// The worker's LLM skill section; see `worker`.
        #[serde(skip_serializing)]
        pub llm: IgnoredAny,
    }
}

/// Orchestrator stages; all run in one process by default.
pub const STAGES: [&str; 3] = ["ingest", "decisions", "results"];

/// The `[orchestrator]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestratorSection {
    /// Instance identity (Kafka client id, `shoal-producer` header).
    pub id: String,
    /// Stages to run: any of `ingest`, `decisions`, `results`.
    pub stages: Vec<String>,
    /// Consumer group of the decisions stage.
    pub decisions_group: String,
    /// Consumer group of the results stage.
    pub results_group: String,
    /// How often completed offsets are committed, milliseconds.
    pub commit_interval_ms: u64,
}

impl Default for OrchestratorSection {
    fn default() -> Self {
        Self {
            id: "shoal-orchestrator".into(),
            stages: STAGES.iter().map(|s| s.to_string()).collect(),
            decisions_group: "shoal-orchestrator-decisions".into(),
            results_group: "shoal-orchestrator-results".into(),
            commit_interval_ms: 1_000,
        }
    }
}

impl OrchestratorSection {
    /// Whether `stage` is enabled.
    pub fn runs(&self, stage: &str) -> bool {
        self.stages.iter().any(|s| s == stage)
    }

    /// Checks the section.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.stages.is_empty() {
            return Err(SettingsError::invalid(
                "orchestrator.stages",
                "empty",
                format!("a list of {}", STAGES.join(", ")),
            ));
        }
        for stage in &self.stages {
            one_of("orchestrator.stages", stage, &STAGES)?;
        }
        non_empty("orchestrator.id", &self.id, "a non-empty identity")?;
        in_range("orchestrator.commit_interval_ms", self.commit_interval_ms, 10..=60_000, "milliseconds")
    }
}

/// The `[results]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResultsSettings {
    /// Append each recorded outcome as a JSON line to this file; empty for
    /// none.
    pub record_path: String,
    /// Issued commands awaiting a result that are remembered at most; the
    /// oldest are forgotten (and counted) beyond it.
    pub max_pending: usize,
}

impl Default for ResultsSettings {
    fn default() -> Self {
        Self { record_path: String::new(), max_pending: 100_000 }
    }
}

impl OrchestratorSettings {
    /// The input topics, by role.
    pub fn input_topics(&self) -> crate::state::decode::InputTopics {
        let t = &self.topics;
        crate::state::decode::InputTopics {
            ticks: t.ticks.name.clone(),
            events: t.events.name.clone(),
            commands: t.commands.name.clone(),
            results: t.results.name.clone(),
            dlq: t.dlq.name.clone(),
            approvals: t.approvals.name.clone(),
        }
    }

    /// What rebuilding the state from the log needs.
    pub fn replay_settings(&self) -> crate::state::replay::ReplaySettings {
        crate::state::replay::ReplaySettings {
            state: self.state.clone(),
            rules: self.rules.clone(),
            topics: self.input_topics(),
        }
    }
}

impl Validate for OrchestratorSettings {
    const LIST_KEYS: &'static [&'static str] = &[
        "orchestrator.stages",
        "feed.symbols",
        "feed.channels",
        "rules.approval_kinds",
        shoal_api::settings::LIST_KEYS[0],
        shoal_api::settings::LIST_KEYS[1],
    ];

    fn validate(&self) -> Result<(), SettingsError> {
        self.validate_shared()?;
        self.orchestrator.validate()?;
        if self.orchestrator.runs("ingest") {
            self.feed.validate()?;
        }
        self.rules.validate()?;
        self.state.validate()?;
        self.api.validate()?;
        at_least("results.max_pending", self.results.max_pending, 1, "an integer")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_config::load_from;

    fn load(pairs: &[(&str, &str)]) -> Result<OrchestratorSettings, SettingsError> {
        load_from(None, pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn every_list_key_of_the_api_section_reads_as_a_list() {
        for key in shoal_api::settings::LIST_KEYS {
            assert!(<OrchestratorSettings as Validate>::LIST_KEYS.contains(key), "{key}");
        }
    }

    #[test]
    fn defaults_are_valid_and_run_every_stage() {
        let s = load(&[]).unwrap();
        assert!(STAGES.iter().all(|st| s.orchestrator.runs(st)));
        assert_eq!(s.rules.level_step.to_string(), "1.00");
    }

    #[test]
    fn lists_come_from_comma_separated_environment_values() {
        let s = load(&[("SHOAL__ORCHESTRATOR__STAGES", "ingest,results"), ("SHOAL__FEED__SYMBOLS", "SIM-A,SIM-B")])
            .unwrap();
        assert_eq!(s.orchestrator.stages, vec!["ingest", "results"]);
        assert_eq!(s.feed.symbols, vec!["SIM-A", "SIM-B"]);
    }

    #[test]
    fn exchange_feeds_need_symbols_and_known_channels() {
        let base = [("SHOAL__FEED__FORMAT", "binance"), ("SHOAL__FEED__SYMBOLS", "BTCUSDT,ETHUSDT")];
        let s = load(&base).unwrap();
        assert_eq!(s.feed.format, FeedFormat::Binance);
        assert_eq!(shoal_config::redacted(&s)["feed"]["format"], "binance");
        assert_eq!(s.feed.effective_channels(), ["trade", "bookTicker"]);
        let err = load(&[("SHOAL__FEED__FORMAT", "kraken")]).unwrap_err().to_string();
        assert!(err.contains("feed.symbols"), "{err}");
        let mut with_channels = base.to_vec();
        with_channels.push(("SHOAL__FEED__CHANNELS", "aggTrade,ticker"));
        let err = load(&with_channels).unwrap_err().to_string();
        assert!(err.contains("feed.channels") && err.contains("ticker"), "{err}");
    }

    #[test]
    fn handshake_headers_come_from_the_environment_and_are_redacted() {
        let s = load(&[("SHOAL__FEED__HEADERS__X_API_KEY", "s3cret-value")]).unwrap();
        assert_eq!(s.feed.headers.get("x_api_key").map(String::as_str), Some("s3cret-value"));
        assert_eq!(FeedSettings::header_name("x_api_key"), "x-api-key");
        let dump = shoal_config::redacted(&s).to_string();
        assert!(!dump.contains("s3cret-value"), "{dump}");
        assert!(dump.contains("x_api_key"), "the name stays visible");
    }

    #[test]
    fn the_workers_section_is_ignored_but_typos_are_not() {
        assert!(load(&[("SHOAL__WORKER__ID", "w-1")]).is_ok());
        let err = load(&[("SHOAL__WROKER__ID", "w-1")]).unwrap_err().to_string();
        assert!(err.contains("wroker"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (var, value, key) in [
            ("SHOAL__FEED__URL", "http://x", "feed.url"),
            ("SHOAL__ORCHESTRATOR__STAGES", "ingest,dance", "orchestrator.stages"),
            ("SHOAL__RULES__LEVEL_STEP", "-1", "rules.level_step"),
            ("SHOAL__RULES__LEVEL_STEP", "abc", "level_step"),
            ("SHOAL__RULES__WINDOW_SECS", "0", "rules.window_secs"),
            ("SHOAL__FEED__FORMAT", "ftx", "feed.format"),
            ("SHOAL__FEED__STALE_AFTER_MS", "10", "feed.stale_after_ms"),
            ("SHOAL__FEED__CHANNELS", "depth", "feed.channels"),
        ] {
            let err = load(&[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(key), "{var}={value}: {err}");
        }
    }

    /// The orchestrators of `examples/topologies` load and validate as
    /// shipped.
    #[test]
    fn the_example_topologies_orchestrator_configs_load() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/topologies");
        for topology in ["trading", "fraud", "iot"] {
            let path = dir.join(topology).join("orchestrator.toml");
            let s: OrchestratorSettings =
                load_from(Some(&path), std::iter::empty()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if topology == "iot" {
                assert_eq!(s.rules.events.get("vibration").map(String::as_str), Some("check_device"));
            }
        }
    }
}
