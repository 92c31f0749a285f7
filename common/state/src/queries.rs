//! Reading the state, and the marks the decision rules leave on entities.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::alerts::Alerts;
use crate::commands::{CommandState, KeyOutcomes, Lifecycle};
use crate::entities::{AccountState, DeviceState};
use crate::freshness::Watermarks;
use crate::market::SymbolState;
use crate::table::{Entity, Table};
use crate::{EntityKind, State, StateConfig};

impl State {
    /// The configuration it was built with.
    pub fn config(&self) -> &StateConfig {
        &self.config
    }

    /// The watermark of every input partition.
    pub fn watermarks(&self) -> &Watermarks {
        &self.watermarks
    }

    /// Event time of the newest input applied: how fresh the state is.
    pub fn freshness(&self) -> Option<DateTime<Utc>> {
        self.watermarks.newest_event_time()
    }

    /// One symbol.
    pub fn symbol(&self, symbol: &str) -> Option<&SymbolState> {
        self.symbols.get(symbol)
    }

    /// One account.
    pub fn account(&self, key: &str) -> Option<&AccountState> {
        self.accounts.get(key)
    }

    /// One device.
    pub fn device(&self, key: &str) -> Option<&DeviceState> {
        self.devices.get(key)
    }

    /// One command.
    pub fn command(&self, id: Uuid) -> Option<&CommandState> {
        self.commands.by_id.get(&id.to_string())
    }

    /// Commands of `key` and in `status` (each filter optional), by id.
    pub fn commands(&self, key: Option<&str>, status: Option<Lifecycle>) -> Vec<&CommandState> {
        let keep = |c: &&CommandState| key.is_none_or(|k| c.key == k) && status.is_none_or(|s| c.status == s);
        self.commands.by_id.iter().map(|(_, c)| c).filter(keep).collect()
    }

    /// The recent outcomes of a command key.
    pub fn outcomes(&self, key: &str) -> Option<&KeyOutcomes> {
        self.commands.by_key.get(key)
    }

    /// The recent alerts.
    pub fn alerts(&self) -> &Alerts {
        &self.alerts
    }

    /// The keys of one kind with their last update (event time), by key.
    pub fn entities(&self, kind: EntityKind) -> Vec<(&str, DateTime<Utc>)> {
        fn keys<V: Entity>(t: &Table<V>) -> Vec<(&str, DateTime<Utc>)> {
            t.iter().map(|(k, v)| (k, v.updated_at())).collect()
        }
        match kind {
            EntityKind::Symbol => keys(&self.symbols),
            EntityKind::Account => keys(&self.accounts),
            EntityKind::Device => keys(&self.devices),
            EntityKind::Command => keys(&self.commands.by_id),
            EntityKind::Outcomes => keys(&self.commands.by_key),
            EntityKind::Alerts => self.alerts.entities().into_iter().collect(),
        }
    }

    /// Entities of `kind` evicted so far to keep [`StateConfig::max_entities`]
    /// (alerts are bounded by count, not evicted: always 0).
    pub fn evictions(&self, kind: EntityKind) -> u64 {
        match kind {
            EntityKind::Symbol => self.symbols.evicted(),
            EntityKind::Account => self.accounts.evicted(),
            EntityKind::Device => self.devices.evicted(),
            EntityKind::Command => self.commands.by_id.evicted(),
            EntityKind::Outcomes => self.commands.by_key.evicted(),
            EntityKind::Alerts => 0,
        }
    }

    /// Sets the mark `name` of one entity to `at`: memory the decision rules
    /// keep with the entity (e.g. when a rule last fired), part of its value
    /// and so of its changelog record. Only symbols, accounts and devices
    /// have marks. Whether the entity exists (and was marked). The entity's
    /// stamp stays that of the input that last changed it: a rule marks it
    /// while deciding on that input, which named it in [`Applied::changed`]
    /// (the entity's changelog record is written after the mark).
    ///
    /// [`Applied::changed`]: crate::Applied::changed
    pub fn mark(&mut self, kind: EntityKind, key: &str, name: &str, at: DateTime<Utc>) -> bool {
        let set = |marks: &mut BTreeMap<String, DateTime<Utc>>| {
            marks.insert(name.to_string(), at);
        };
        match kind {
            EntityKind::Symbol => self.symbols.update(key, |s| set(&mut s.marks)).is_some(),
            EntityKind::Account => self.accounts.update(key, |a| set(&mut a.marks)).is_some(),
            EntityKind::Device => self.devices.update(key, |d| set(&mut d.marks)).is_some(),
            EntityKind::Command | EntityKind::Outcomes | EntityKind::Alerts => false,
        }
    }
}
