//! The `[state]` section: where the derived state's changelog and
//! membership live, how often it is checkpointed and published to readers,
//! and how much of it is kept.

use serde::{Deserialize, Serialize};
use shoal_config::{SettingsError, at_least, in_range, non_empty};
use shoal_state::StateConfig;

use crate::rules::RulesSettings;

/// The `[state]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateSettings {
    /// The changelog of input topic `T` is the compacted topic `T` followed
    /// by this suffix, with as many partitions as `T`.
    pub changelog_suffix: String,
    /// Compacted topic where each instance says which shards it owns and
    /// where its API listens.
    pub members_topic: String,
    /// A shard writes the entities it changed (and its watermark) to its
    /// changelog at most this long after the first change, milliseconds.
    pub checkpoint_interval_ms: u64,
    /// ... or after this many inputs, whichever comes first. A restore
    /// replays at most about this many inputs after reading the changelog.
    pub checkpoint_max_inputs: u64,
    /// Readers (API, subscribers) see changes at most this long after they
    /// are applied, milliseconds; `0` publishes after every input.
    pub publish_interval_ms: u64,
    /// Bound on restoring one shard (changelog plus catch-up), milliseconds.
    pub restore_timeout_ms: u64,
    /// Entities kept per kind; the least recently updated are evicted.
    pub max_entities: usize,
    /// Recent transactions per account, readings per device metric and
    /// outcomes per command key.
    pub max_recent: usize,
    /// Closed bars kept per symbol and resolution.
    pub max_closed_bars: usize,
    /// Trades in a symbol's rolling window (and amounts in an account's
    /// 24-hour window) kept at most.
    pub max_window_samples: usize,
    /// Alerts kept.
    pub max_alerts: usize,
    /// A command's lifecycle is dropped from the state this long after its
    /// last update, in event time, seconds (`0`: kept until `max_entities`
    /// evicts it). The log keeps it; the state serves the recent ones.
    pub command_retention_secs: u64,
}

impl Default for StateSettings {
    fn default() -> Self {
        let model = StateConfig::default();
        Self {
            changelog_suffix: ".changelog".into(),
            members_topic: "shoal.state.members".into(),
            checkpoint_interval_ms: 5_000,
            checkpoint_max_inputs: 20_000,
            publish_interval_ms: 50,
            restore_timeout_ms: 120_000,
            max_entities: model.max_entities,
            max_recent: model.max_recent,
            max_closed_bars: model.max_closed_bars,
            max_window_samples: model.max_window_samples,
            max_alerts: model.max_alerts,
            command_retention_secs: model.command_retention_secs,
        }
    }
}

impl StateSettings {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), SettingsError> {
        non_empty("state.changelog_suffix", &self.changelog_suffix, "a topic name suffix such as .changelog")?;
        non_empty("state.members_topic", &self.members_topic, "a topic name")?;
        in_range("state.checkpoint_interval_ms", self.checkpoint_interval_ms, 10..=600_000, "milliseconds")?;
        at_least("state.checkpoint_max_inputs", self.checkpoint_max_inputs, 1, "an integer")?;
        in_range("state.publish_interval_ms", self.publish_interval_ms, 0..=60_000, "milliseconds")?;
        at_least("state.restore_timeout_ms", self.restore_timeout_ms, 1_000, "milliseconds")?;
        at_least("state.max_entities", self.max_entities, 1, "an integer")?;
        at_least("state.max_recent", self.max_recent, 2, "an integer")?;
        at_least("state.max_closed_bars", self.max_closed_bars, 1, "an integer")?;
        at_least("state.max_window_samples", self.max_window_samples, 2, "an integer")?;
        at_least("state.max_alerts", self.max_alerts, 1, "an integer")
    }

    /// The state model's configuration: the entity kinds follow the rules'
    /// event mapping, and a symbol's rolling window covers the rules'
    /// window.
    pub fn model(&self, rules: &RulesSettings) -> StateConfig {
        StateConfig {
            max_entities: self.max_entities,
            max_recent: self.max_recent,
            max_closed_bars: self.max_closed_bars,
            max_window_samples: self.max_window_samples,
            max_alerts: self.max_alerts,
            command_retention_secs: self.command_retention_secs,
            rolling_window_secs: rules.window_secs.saturating_add(1).max(60),
            ..StateConfig::from_rule_events(&rules.events)
        }
    }

    /// The changelog topic of `input`.
    pub fn changelog_of(&self, input: &str) -> String {
        format!("{input}{}", self.changelog_suffix)
    }
}
