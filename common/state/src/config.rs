//! What the state is built from and how much of it is kept.

use std::collections::{BTreeMap, BTreeSet};

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use shoal_protocol::messages::kinds;

/// Default length of a symbol's rolling window, seconds.
pub const DEFAULT_ROLLING_WINDOW_SECS: u64 = 60;

/// Default of [`StateConfig::command_retention_secs`].
pub const DEFAULT_COMMAND_RETENTION_SECS: u64 = 300;

/// What the state is built from and how much of it is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// Event types that are card transactions of an account (the event's
    /// key). Default: `card_transaction`, the type the default rules map to
    /// `score_transaction`.
    pub account_event_types: BTreeSet<String>,
    /// Event types that are sensor readings of a device (the event's key).
    /// Default: `sensor_reading`, the type the default rules map to
    /// `raise_alert`. A type in both lists is an account's.
    pub device_event_types: BTreeSet<String>,
    /// Entities kept per kind (symbols, accounts, devices, commands, keys
    /// with outcomes); the least recently updated beyond it are evicted.
    pub max_entities: usize,
    /// Recent transactions per account, readings per device metric (at
    /// least 2) and outcomes per command key.
    pub max_recent: usize,
    /// Closed bars kept per symbol and resolution.
    pub max_closed_bars: usize,
    /// Trades in a symbol's rolling window, and amounts in an account's
    /// 24-hour spend window, kept at most.
    pub max_window_samples: usize,
    /// Alerts kept.
    pub max_alerts: usize,
    /// How long a command's lifecycle is kept after its last update, in
    /// event time (the newest input the state has applied), seconds; `0`
    /// keeps commands until `max_entities` evicts them. Default: 300.
    pub command_retention_secs: u64,
    /// Length of a symbol's rolling window (the trades behind its rolling
    /// VWAP and volatility), seconds. Default: 60.
    pub rolling_window_secs: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            account_event_types: BTreeSet::from(["card_transaction".to_string()]),
            device_event_types: BTreeSet::from(["sensor_reading".to_string()]),
            max_entities: 100_000,
            max_recent: 20,
            max_closed_bars: 60,
            max_window_samples: 4_096,
            max_alerts: 1_000,
            command_retention_secs: DEFAULT_COMMAND_RETENTION_SECS,
            rolling_window_secs: DEFAULT_ROLLING_WINDOW_SECS,
        }
    }
}

impl StateConfig {
    /// The default configuration (bounds, rolling window) with the entity
    /// kinds taken from the rules' event mapping (`rules.events`: event
    /// type → command kind): types mapped to `score_transaction` are
    /// accounts', types mapped to `raise_alert` or `check_device` devices'.
    pub fn from_rule_events(events: &BTreeMap<String, String>) -> Self {
        let of_kind = |kind: &str| events.iter().filter(|(_, k)| *k == kind).map(|(t, _)| t.clone()).collect();
        Self {
            account_event_types: of_kind(kinds::SCORE_TRANSACTION),
            device_event_types: events
                .iter()
                .filter(|(_, k)| *k == kinds::RAISE_ALERT || *k == kinds::CHECK_DEVICE)
                .map(|(t, _)| t.clone())
                .collect(),
            ..Self::default()
        }
    }

    /// [`StateConfig::rolling_window_secs`] as a duration (saturating at the
    /// longest one representable).
    pub fn rolling_window(&self) -> TimeDelta {
        i64::try_from(self.rolling_window_secs).ok().and_then(TimeDelta::try_seconds).unwrap_or(TimeDelta::MAX)
    }

    /// [`StateConfig::command_retention_secs`] as a duration, `None` when
    /// commands are kept by count only.
    pub fn command_retention(&self) -> Option<TimeDelta> {
        match self.command_retention_secs {
            0 => None,
            secs => Some(i64::try_from(secs).ok().and_then(TimeDelta::try_seconds).unwrap_or(TimeDelta::MAX)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_kinds_follow_the_rules_event_mapping() {
        let events = BTreeMap::from([
            ("card_auth".to_string(), kinds::SCORE_TRANSACTION.to_string()),
            ("meter".to_string(), kinds::RAISE_ALERT.to_string()),
            ("probe".to_string(), kinds::CHECK_DEVICE.to_string()),
            ("other".to_string(), kinds::EVALUATE_STRATEGY.to_string()),
        ]);
        let config = StateConfig::from_rule_events(&events);
        assert_eq!(config.account_event_types.iter().collect::<Vec<_>>(), ["card_auth"]);
        assert_eq!(config.device_event_types.iter().collect::<Vec<_>>(), ["meter", "probe"]);
        assert_eq!(config.max_entities, StateConfig::default().max_entities);
        assert_eq!(config.rolling_window_secs, DEFAULT_ROLLING_WINDOW_SECS);
        assert_eq!(config.rolling_window(), TimeDelta::seconds(60));
        let huge = StateConfig { rolling_window_secs: u64::MAX, ..StateConfig::default() };
        assert_eq!(huge.rolling_window(), TimeDelta::MAX);
        assert_eq!(config.command_retention(), Some(TimeDelta::seconds(300)));
        let forever = StateConfig { command_retention_secs: 0, ..StateConfig::default() };
        assert_eq!(forever.command_retention(), None);
        let config: StateConfig = serde_json::from_str("{\"max_entities\": 5}").unwrap();
        assert_eq!((config.max_entities, config.max_recent), (5, StateConfig::default().max_recent));
        assert!(serde_json::from_str::<StateConfig>("{\"max_entitys\": 5}").is_err(), "unknown fields are refused");
    }
}
