//! The state as a changelog: one record per entity, keyed by
//! [`changelog_key`] with [`State::entity_value`] as its value (a tombstone
//! once [`State::entity_value`] is `None`), and one meta record
//! ([`State::meta_value`]) for everything that is not an entity.
//! [`State::restore`] rebuilds the state from the latest of each, as a
//! compacted topic keeps them.
//!
//! Values are JSON objects with sorted keys, so `serde_json::to_vec` of a
//! value is deterministic: equal entities give equal bytes.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::alerts::{Alert, Alerts};
use crate::commands::{CommandState, Commands, KeyOutcomes};
use crate::entities::{AccountState, DeviceState};
use crate::freshness::{Stamp, Watermarks};
use crate::market::SymbolState;
use crate::table::{Entity, Table};
use crate::{EntityKind, EntityRef, FORMAT_VERSION, State, StateConfig, StateError};

/// The changelog key of an entity: `{kind}/{key}` (e.g. `symbol/SIM-A`).
pub fn changelog_key(entity: &EntityRef) -> String {
    format!("{}/{}", entity.kind, entity.key)
}

/// The entity named by a [`changelog_key`]: the kind before the first `/`,
/// the key (which may hold more `/`) after it. `None` when there is no `/`
/// or the kind is unknown.
pub fn parse_changelog_key(key: &str) -> Option<EntityRef> {
    let (kind, key) = key.split_once('/')?;
    Some(EntityRef { kind: EntityKind::parse(kind)?, key: key.to_string() })
}

/// Everything in a state that is not an entity.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    format: u32,
    config: StateConfig,
    watermarks: Watermarks,
    evicted: Evicted,
}

/// Entities evicted so far, per kind (alerts are never evicted).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Evicted {
    symbol: u64,
    account: u64,
    device: u64,
    command: u64,
    outcomes: u64,
}

/// `value` as JSON with every object's keys sorted (whatever serde_json's
/// features); `Null` only if it cannot be (it always can: every map key in
/// the state is a string or an integer).
pub(crate) fn to_sorted_value<T: Serialize>(value: &T) -> Value {
    let mut value = serde_json::to_value(value).unwrap_or(Value::Null);
    value.sort_all_objects();
    value
}

impl State {
    /// Every entity held, ordered by kind ([`EntityKind::ALL`]'s order) then
    /// key: symbols, accounts, devices, commands, the command keys with
    /// outcomes, and the entities (command keys) with alerts.
    pub fn entity_refs(&self) -> Vec<EntityRef> {
        fn refs<V: Entity>(kind: EntityKind, t: &Table<V>) -> impl Iterator<Item = EntityRef> + '_ {
            t.iter().map(move |(key, _)| EntityRef { kind, key: key.to_string() })
        }
        let alerts =
            self.alerts.entities().into_keys().map(|key| EntityRef { kind: EntityKind::Alerts, key: key.into() });
        refs(EntityKind::Symbol, &self.symbols)
            .chain(refs(EntityKind::Account, &self.accounts))
            .chain(refs(EntityKind::Device, &self.devices))
            .chain(refs(EntityKind::Command, &self.commands.by_id))
            .chain(refs(EntityKind::Outcomes, &self.commands.by_key))
            .chain(alerts)
            .collect()
    }

    /// One entity's whole state as JSON (keys sorted), `None` when it is not
    /// held: the value under its key in the state's canonical JSON, or for
    /// [`EntityKind::Alerts`] the alerts about the key, newest first (as
    /// [`State::entity_json`]). With [`State::meta_value`], what
    /// [`State::restore`] needs.
    pub fn entity_value(&self, entity: &EntityRef) -> Option<Value> {
        let key = entity.key.as_str();
        Some(match entity.kind {
            EntityKind::Symbol => to_sorted_value(self.symbols.get(key)?),
            EntityKind::Account => to_sorted_value(self.accounts.get(key)?),
            EntityKind::Device => to_sorted_value(self.devices.get(key)?),
            EntityKind::Command => to_sorted_value(self.commands.by_id.get(key)?),
            EntityKind::Outcomes => to_sorted_value(self.commands.by_key.get(key)?),
            EntityKind::Alerts => {
                let alerts = self.alerts.query(None, None, Some(key));
                if alerts.is_empty() {
                    return None;
                }
                to_sorted_value(&alerts)
            }
        })
    }

    /// Event time and record of the newest input that changed the entity,
    /// `None` when it is not held. For symbols, accounts, devices and
    /// commands, their `updated` stamp (the newest of the inputs applied to
    /// them, duplicates included); for a key's outcomes, the newest settling
    /// record (result, by its `finished_at`, or dead letter) among the
    /// outcomes it was given; for alerts, the newest alert's (its result's
    /// `finished_at` and record: an alert pushed out of the bounded list does
    /// not move it).
    pub fn entity_stamp(&self, entity: &EntityRef) -> Option<Stamp> {
        let key = entity.key.as_str();
        match entity.kind {
            EntityKind::Symbol => self.symbols.get(key).map(|s| s.updated.clone()),
            EntityKind::Account => self.accounts.get(key).map(|a| a.updated.clone()),
            EntityKind::Device => self.devices.get(key).map(|d| d.updated.clone()),
            EntityKind::Command => self.commands.by_id.get(key).map(|c| c.updated.clone()),
            EntityKind::Outcomes => self.commands.by_key.get(key).map(|o| o.updated.clone()),
            EntityKind::Alerts => self.alerts.query(None, None, Some(key)).first().map(|a| a.stamp.clone()),
        }
    }

    /// Everything in the state that is not an entity, as JSON (keys sorted):
    /// `format`, `config`, `watermarks` and the eviction counters per kind
    /// (`evicted`). The alerts' order is not in it: [`State::restore`]
    /// rebuilds it from the alerts' times and command ids.
    pub fn meta_value(&self) -> Value {
        to_sorted_value(&Meta {
            format: self.format,
            config: self.config.clone(),
            watermarks: self.watermarks.clone(),
            evicted: Evicted {
                symbol: self.symbols.evicted(),
                account: self.accounts.evicted(),
                device: self.devices.evicted(),
                command: self.commands.by_id.evicted(),
                outcomes: self.commands.by_key.evicted(),
            },
        })
    }

    /// Rebuilds a state from its [`State::meta_value`] and the
    /// [`State::entity_value`] of each of its entities (in any order),
    /// rebuilding what is derived (the tables' recency indexes, the alerts'
    /// order). The result has the same canonical JSON as the state they
    /// were taken from, and behaves the same.
    ///
    /// Errors: a meta record of another format ([`StateError::UnsupportedFormat`])
    /// or shape ([`StateError::Meta`]); an entity given twice, a value that
    /// is not its kind's shape, a command whose id is not its key, an alert
    /// about another entity than its key, or two alerts of one command
    /// ([`StateError::Entity`], naming the record). Bounds are not
    /// checked: the next input applies them.
    pub fn restore(meta: &Value, entities: impl IntoIterator<Item = (EntityRef, Value)>) -> Result<State, StateError> {
        if let Some(found) = meta.get("format").and_then(Value::as_u64)
            && found != u64::from(FORMAT_VERSION)
        {
            return Err(StateError::UnsupportedFormat { found, supported: FORMAT_VERSION });
        }
        let meta = Meta::deserialize(meta).map_err(StateError::Meta)?;
        let mut parts = Parts::default();
        for (entity, value) in entities {
            parts.add(entity, value)?;
        }
        let alerts = Alerts::from_list(parts.alerts).map_err(|id| StateError::Entity {
            entity: parts.alert_keys.get(&id).cloned().unwrap_or_default(),
            detail: format!("command {id} has two alerts"),
        })?;
        let evicted = meta.evicted;
        Ok(State {
            format: meta.format,
            config: meta.config,
            watermarks: meta.watermarks,
            symbols: Table::from_parts(parts.symbols, evicted.symbol),
            accounts: Table::from_parts(parts.accounts, evicted.account),
            devices: Table::from_parts(parts.devices, evicted.device),
            commands: Commands {
                by_id: Table::from_parts(parts.commands, evicted.command),
                by_key: Table::from_parts(parts.outcomes, evicted.outcomes),
            },
            alerts,
        })
    }
}

/// The entities given to [`State::restore`], by kind.
#[derive(Default)]
struct Parts {
    seen: BTreeSet<EntityRef>,
    symbols: BTreeMap<String, SymbolState>,
    accounts: BTreeMap<String, AccountState>,
    devices: BTreeMap<String, DeviceState>,
    commands: BTreeMap<String, CommandState>,
    outcomes: BTreeMap<String, KeyOutcomes>,
    alerts: Vec<Alert>,
    /// The changelog key each alert came under, by command id.
    alert_keys: BTreeMap<uuid::Uuid, String>,
}

impl Parts {
    fn add(&mut self, entity: EntityRef, value: Value) -> Result<(), StateError> {
        let name = changelog_key(&entity);
        let error = |detail: String| StateError::Entity { entity: name.clone(), detail };
        if !self.seen.insert(entity.clone()) {
            return Err(error("given twice".into()));
        }
        let key = entity.key;
        match entity.kind {
            EntityKind::Symbol => {
                self.symbols.insert(key, parse(value, error)?);
            }
            EntityKind::Account => {
                self.accounts.insert(key, parse(value, error)?);
            }
            EntityKind::Device => {
                self.devices.insert(key, parse(value, error)?);
            }
            EntityKind::Outcomes => {
                self.outcomes.insert(key, parse(value, error)?);
            }
            EntityKind::Command => {
                let command: CommandState = parse(value, error)?;
                if command.id.to_string() != key {
                    return Err(error(format!("holds command {}", command.id)));
                }
                self.commands.insert(key, command);
            }
            EntityKind::Alerts => {
                let alerts: Vec<Alert> = parse(value, error)?;
                if let Some(other) = alerts.iter().find(|a| a.entity != key) {
                    return Err(error(format!("holds an alert about {:?}", other.entity)));
                }
                self.alert_keys.extend(alerts.iter().map(|a| (a.command_id, name.clone())));
                self.alerts.extend(alerts);
            }
        }
        Ok(())
    }
}

fn parse<T: DeserializeOwned>(value: Value, error: impl Fn(String) -> StateError) -> Result<T, StateError> {
    serde_json::from_value(value).map_err(|e| error(format!("not the shape of its kind: {e}")))
}
