//! Merging the values one entity has in several state shards (one state per
//! input partition) into the value a single state would hold had it applied
//! all their inputs.
//!
//! A symbol, an account or a device comes from one partition: of several
//! values, the one with the newest stamp stands. A command's parts come from
//! three topics (the command, its result, its dead letter), a key's outcomes
//! from the results and dead-letter topics, alerts from the results
//! partitions: their values are joined the way the model joins parts,
//! whatever their order.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::alerts::Alert;
use crate::changelog::to_sorted_value;
use crate::commands::{CommandState, KeyOutcomes, Lifecycle, Outcome, Part, record, set_held};
use crate::freshness::Stamp;
use crate::{EntityKind, StateError};

/// Merges the [`State::entity_value`](crate::State::entity_value)s one
/// entity has in several shards (at least one; their order does not
/// matter) into one value of the same shape:
///
/// - symbol, account, device: the value with the newest `updated` stamp;
/// - command: its parts joined as the model joins them (the earliest
///   command, result and dead letter by stamp, when several shards hold one;
///   the extra ones counted in `duplicates`), status and timings derived
///   again, the newest `updated` stamp;
/// - outcomes: one outcome per command (from its result when a shard has
///   one, else its dead letter), ordered by (time, command id), the newest
///   `updated` stamp. A shard holding results knows no command, so
///   `end_to_end_ms` (and `kind` and `seq` of a dead letter alone) stay
///   as the shards have them: [`complete_outcomes`] fills them in from the
///   merged commands;
/// - alerts: one alert per command, newest first.
///
/// Merged lists are not cut to the configured bounds (the values do not
/// carry them), so they equal the single state's while no bound was
/// reached. Errors name a value that is not the kind's shape, commands of
/// different ids, or alerts about different entities.
pub fn merge_entities(kind: EntityKind, values: &[Value]) -> Result<Value, StateError> {
    let error = move |detail: String| StateError::Merge { kind, detail };
    if values.is_empty() {
        return Err(error("no values".into()));
    }
    Ok(match kind {
        EntityKind::Symbol | EntityKind::Account | EntityKind::Device => newest(values, error)?.clone(),
        EntityKind::Command => to_sorted_value(&join_commands(parse_all(values, error)?, error)?),
        EntityKind::Outcomes => to_sorted_value(&join_outcomes(parse_all(values, error)?, error)?),
        EntityKind::Alerts => to_sorted_value(&join_alerts(parse_all(values, error)?, error)?),
    })
}

/// A key's merged outcomes ([`merge_entities`] of
/// [`EntityKind::Outcomes`]) with each outcome whose command is among
/// `commands` (merged command values, e.g. [`merge_entities`] of
/// [`EntityKind::Command`]) derived again from it, as the model derives it:
/// with the command's `kind`, `seq` and end-to-end latency.
pub fn complete_outcomes(outcomes: &Value, commands: &[Value]) -> Result<Value, StateError> {
    let error = |detail: String| StateError::Merge { kind: EntityKind::Outcomes, detail };
    let mut merged = KeyOutcomes::deserialize(outcomes).map_err(|e| error(format!("not outcomes: {e}")))?;
    let commands: Vec<CommandState> =
        parse_all(commands, |d| StateError::Merge { kind: EntityKind::Command, detail: d })?;
    for fresh in commands.iter().filter_map(Outcome::of) {
        if let Some(slot) = merged.recent.iter_mut().find(|o| o.command_id == fresh.command_id) {
            merged.updated.merge(&fresh.stamp);
            *slot = fresh;
        }
    }
    merged.recent.make_contiguous().sort_by_key(|o| (o.stamp.at, o.command_id));
    Ok(to_sorted_value(&merged))
}

fn parse_all<T: DeserializeOwned>(
    values: &[Value],
    error: impl Fn(String) -> StateError,
) -> Result<Vec<T>, StateError> {
    let parse = |(i, v): (usize, &Value)| T::deserialize(v).map_err(|e| error(format!("value {i}: {e}")));
    values.iter().enumerate().map(parse).collect()
}

/// The value with the newest `updated` stamp (the first of equals).
fn newest(values: &[Value], error: impl Fn(String) -> StateError) -> Result<&Value, StateError> {
    let mut best: Option<(Stamp, &Value)> = None;
    for (i, value) in values.iter().enumerate() {
        let stamp = value.get("updated").map(Stamp::deserialize).transpose();
        let stamp = stamp.ok().flatten().ok_or_else(|| error(format!("value {i} has no `updated` stamp")))?;
        if best.as_ref().is_none_or(|(b, _)| stamp > *b) {
            best = Some((stamp, value));
        }
    }
    best.map(|(_, v)| v).ok_or_else(|| error("no values".into()))
}

fn join_commands(values: Vec<CommandState>, error: impl Fn(String) -> StateError) -> Result<CommandState, StateError> {
    let first = values.first().ok_or_else(|| error("no values".into()))?;
    let id = first.id;
    if let Some(other) = values.iter().find(|c| c.id != id) {
        return Err(error(format!("values of commands {id} and {}", other.id)));
    }
    let issued = values.iter().filter_map(|c| c.issued.as_ref()).min_by(|a, b| a.stamp.cmp(&b.stamp));
    let result = values.iter().filter_map(|c| c.result.as_ref()).min_by(|a, b| a.stamp.cmp(&b.stamp));
    let dead = values.iter().filter_map(|c| c.dead_letter.as_ref().map(|d| (d, &c.key)));
    let dead = dead.min_by(|a, b| a.0.stamp.cmp(&b.0.stamp));
    let parts = |has: fn(&CommandState) -> bool| values.iter().filter(|c| has(c)).count().saturating_sub(1) as u64;
    let extra = parts(|c| c.issued.is_some()) + parts(|c| c.result.is_some()) + parts(|c| c.dead_letter.is_some());
    let updated = values.iter().map(|c| &c.updated).max().unwrap_or(&first.updated);
    let key = dead.map_or(&first.key, |(_, key)| key).clone();
    let mut joined = CommandState::new(id, &key, updated);
    joined.duplicates = values.iter().map(|c| c.duplicates).sum::<u64>() + extra;
    // Recorded as the model records parts: the command's kind, key and seq
    // take precedence over its result's, whatever the order.
    if let Some(issued) = issued {
        record(&mut joined, Part::Command(&issued.value), &issued.stamp);
    }
    if let Some(result) = result {
        record(&mut joined, Part::Result(&result.value), &result.stamp);
    }
    if let Some((dead, _)) = dead {
        record(&mut joined, Part::DeadLetter(id, &key, &dead.value.reason, &dead.value.stage), &dead.stamp);
    }
    // An approval is one partition's (the approvals topic is keyed by
    // command id): the most recently updated, should several shards hold one.
    if let Some(approval) = values.iter().filter_map(|c| c.approval.as_ref()).max_by(|a, b| a.updated.cmp(&b.updated)) {
        set_held(&mut joined, approval);
        joined.approval = Some(approval.clone());
    }
    joined.refresh();
    Ok(joined)
}

fn join_outcomes(values: Vec<KeyOutcomes>, error: impl Fn(String) -> StateError) -> Result<KeyOutcomes, StateError> {
    let updated = values.iter().map(|o| &o.updated).max().cloned().ok_or_else(|| error("no values".into()))?;
    // A result settles a command before its dead letter; of two results,
    // the earliest stands (as for the command).
    let rank = |o: &Outcome| (o.status == Lifecycle::DeadLettered, o.stamp.clone());
    let mut by_id: BTreeMap<uuid::Uuid, Outcome> = BTreeMap::new();
    for outcome in values.into_iter().flat_map(|v| v.recent) {
        match by_id.entry(outcome.command_id) {
            Entry::Vacant(slot) => {
                slot.insert(outcome);
            }
            Entry::Occupied(mut slot) if rank(&outcome) < rank(slot.get()) => {
                slot.insert(outcome);
            }
            Entry::Occupied(_) => {}
        }
    }
    let mut recent: Vec<Outcome> = by_id.into_values().collect();
    recent.sort_by_key(|o| (o.stamp.at, o.command_id));
    Ok(KeyOutcomes { updated, recent: recent.into() })
}

fn join_alerts(values: Vec<Vec<Alert>>, error: impl Fn(String) -> StateError) -> Result<Vec<Alert>, StateError> {
    let mut by_id: BTreeMap<uuid::Uuid, Alert> = BTreeMap::new();
    for alert in values.into_iter().flatten() {
        match by_id.entry(alert.command_id) {
            Entry::Vacant(slot) => {
                slot.insert(alert);
            }
            Entry::Occupied(mut slot) if alert.stamp < slot.get().stamp => {
                slot.insert(alert);
            }
            Entry::Occupied(_) => {}
        }
    }
    let mut alerts: Vec<Alert> = by_id.into_values().collect();
    if let Some(first) = alerts.first()
        && let Some(other) = alerts.iter().find(|a| a.entity != first.entity)
    {
        return Err(error(format!("alerts about {:?} and {:?}", first.entity, other.entity)));
    }
    alerts.sort_by_key(|a| std::cmp::Reverse((a.stamp.at, a.command_id)));
    Ok(alerts)
}
