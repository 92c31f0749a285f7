//! Canonical JSON of the state and of one entity, and restore from a
//! snapshot.
//!
//! Canonical: struct fields in declaration order, every map a `BTreeMap`
//! (keys sorted), lists in their kept order, decimals as strings with their
//! scale, the volatility f64 as its shortest round-trip string, timestamps
//! in RFC 3339. Two states are equal exactly when their canonical JSON is
//! byte-equal, and restoring a snapshot gives back the same bytes.

use serde::Deserialize;

use crate::{EntityKind, FORMAT_VERSION, State};

/// Why a snapshot or changelog could not be restored, or entity values not
/// merged.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not JSON, or not the shape of a state.
    #[error("not a state snapshot: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Written by a build with another snapshot format.
    #[error("unsupported state snapshot format {found} (this build reads {supported})")]
    UnsupportedFormat {
        /// The format found.
        found: u64,
        /// The format this build reads.
        supported: u32,
    },
    /// A changelog's meta record ([`State::meta_value`]) is not one.
    #[error("not a state changelog meta record: {0}")]
    Meta(serde_json::Error),
    /// A changelog's entity record ([`State::entity_value`]) cannot be
    /// restored.
    #[error("changelog record {entity}: {detail}")]
    Entity {
        /// The record's key ([`crate::changelog_key`]).
        entity: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Entity values cannot be merged ([`crate::merge_entities`]).
    #[error("cannot merge {kind} values: {detail}")]
    Merge {
        /// The kind of entity.
        kind: EntityKind,
        /// Why.
        detail: String,
    },
}

impl State {
    /// The whole state as canonical JSON: the snapshot
    /// [`State::from_snapshot`] restores.
    pub fn to_canonical_json(&self) -> String {
        // Cannot fail: every map key is a string or an integer, and every
        // value a string, integer, bool, timestamp, uuid or a struct of them.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// One entity as canonical JSON, or `None` when it is not kept. For
    /// [`EntityKind::Alerts`], the alerts about `key`, newest first.
    pub fn entity_json(&self, kind: EntityKind, key: &str) -> Option<String> {
        let json = match kind {
            EntityKind::Symbol => serde_json::to_string(self.symbols.get(key)?),
            EntityKind::Account => serde_json::to_string(self.accounts.get(key)?),
            EntityKind::Device => serde_json::to_string(self.devices.get(key)?),
            EntityKind::Command => serde_json::to_string(self.commands.by_id.get(key)?),
            EntityKind::Outcomes => serde_json::to_string(self.commands.by_key.get(key)?),
            EntityKind::Alerts => {
                let alerts = self.alerts.query(None, None, Some(key));
                if alerts.is_empty() {
                    return None;
                }
                serde_json::to_string(&alerts)
            }
        };
        json.ok()
    }

    /// Restores a state from [`State::to_canonical_json`]'s output,
    /// checking the format version first.
    pub fn from_snapshot(json: &str) -> Result<State, StateError> {
        #[derive(Deserialize)]
        struct Probe {
            format: u64,
        }
        let probe: Probe = serde_json::from_str(json)?;
        if probe.format != u64::from(FORMAT_VERSION) {
            return Err(StateError::UnsupportedFormat { found: probe.format, supported: FORMAT_VERSION });
        }
        Ok(serde_json::from_str(json)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_state_round_trips() {
        let state = State::default();
        let json = state.to_canonical_json();
        assert!(json.starts_with("{\"format\":1,\"config\":{"), "{json}");
        let back = State::from_snapshot(&json).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.to_canonical_json(), json);
    }

    #[test]
    fn bad_snapshots_are_errors() {
        assert!(matches!(State::from_snapshot("nope"), Err(StateError::Malformed(_))));
        assert!(matches!(State::from_snapshot("{\"format\":1}"), Err(StateError::Malformed(_))));
        let newer = State::default().to_canonical_json().replacen("\"format\":1", "\"format\":2", 1);
        let err = State::from_snapshot(&newer).unwrap_err();
        assert!(matches!(err, StateError::UnsupportedFormat { found: 2, supported: 1 }), "{err}");
    }
}
