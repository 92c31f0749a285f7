//! The answer about one entity: its state merged from every shard that
//! holds a part of it, where each part came from, and how fresh it is.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shoal_state::{EntityKind, Provenance};

use crate::hub::{EntityDoc, ShardId, StateView, Watermark, merge_docs};

/// How fresh an answer is: the watermarks of the shards it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Freshness {
    /// The oldest event time among `watermarks`: every shard the answer
    /// came from has applied its input up to at least this time (`null`
    /// when none has applied an input yet).
    pub event_time: Option<DateTime<Utc>>,
    /// One per shard.
    pub watermarks: Vec<Watermark>,
}

impl Freshness {
    /// The freshness of an answer from the shards of `watermarks`
    /// (duplicates dropped).
    pub fn of(mut watermarks: Vec<Watermark>) -> Self {
        watermarks.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        watermarks.dedup_by(|a, b| a.topic == b.topic && a.partition == b.partition);
        let event_time = watermarks.iter().filter_map(|w| w.event_time).min();
        Self { event_time, watermarks }
    }

    /// The freshness of an answer from every shard of `view`.
    pub fn of_view(view: &StateView) -> Self {
        Self::of(view.watermarks())
    }
}

/// One part of an entity: the document one shard holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// The shard.
    pub shard: ShardId,
    /// The input that last changed this part.
    pub provenance: Provenance,
    /// Event time of that input.
    pub updated_at: DateTime<Utc>,
    /// The instance that holds it.
    pub served_by: String,
}

/// The answer of `GET /v1/state/{kind}/{key}` and `GET /v1/commands/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityAnswer {
    /// Kind.
    pub kind: EntityKind,
    /// Key.
    pub key: String,
    /// The newest part's event time.
    pub updated_at: DateTime<Utc>,
    /// The newest part's input.
    pub provenance: Provenance,
    /// The entity's state (its parts merged).
    pub state: serde_json::Value,
    /// Every part, oldest first.
    pub parts: Vec<Part>,
    /// The watermarks of the parts' shards.
    pub freshness: Freshness,
    /// The instance that answered.
    pub served_by: String,
}

impl EntityAnswer {
    /// The answer from this instance's documents of `(kind, key)`, if any.
    pub fn local(view: &StateView, kind: EntityKind, key: &str, instance: &str) -> Option<Self> {
        let mut docs = view.lookup(kind, key);
        docs.sort_by(|a, b| (a.updated_at, &a.provenance).cmp(&(b.updated_at, &b.provenance)));
        let newest = docs.last()?.clone();
        let mut state = merge_docs(kind, &docs.iter().map(|d| d.state.clone()).collect::<Vec<_>>());
        let mut shards: Vec<ShardId> = docs.iter().map(|d| d.shard.clone()).collect();
        if kind == EntityKind::Outcomes {
            let (completed, command_shards) = complete_outcomes(view, state);
            state = completed;
            shards.extend(command_shards);
        }
        let watermarks = shards.iter().filter_map(|s| view.shards.get(s)).map(|s| s.watermark.clone()).collect();
        Some(Self {
            kind,
            key: key.to_string(),
            updated_at: newest.updated_at,
            provenance: newest.provenance.clone(),
            state,
            parts: docs.iter().map(|d| part(d, instance)).collect(),
            freshness: Freshness::of(watermarks),
            served_by: instance.to_string(),
        })
    }

    /// Several answers about the same entity (from several instances)
    /// merged into one, served by `instance`. An answer whose shards are
    /// all covered by earlier ones (a shard held by two instances while it
    /// moves) is left out, so no part counts twice.
    pub fn merged(answers: Vec<Self>, instance: &str) -> Option<Self> {
        let mut covered: Vec<ShardId> = Vec::new();
        let mut answers: Vec<Self> = answers
            .into_iter()
            .filter(|a| {
                let new = a.parts.iter().any(|p| !covered.contains(&p.shard));
                covered.extend(a.parts.iter().map(|p| p.shard.clone()));
                new
            })
            .collect();
        answers.sort_by(|a, b| (a.updated_at, &a.provenance).cmp(&(b.updated_at, &b.provenance)));
        let newest = answers.last()?.clone();
        if answers.len() == 1 {
            return Some(newest);
        }
        let states: Vec<_> = answers.iter().map(|a| a.state.clone()).collect();
        let mut parts: Vec<Part> = answers.iter().flat_map(|a| a.parts.iter().cloned()).collect();
        parts.sort_by(|a, b| (a.updated_at, &a.provenance).cmp(&(b.updated_at, &b.provenance)));
        parts.dedup_by(|a, b| a.shard == b.shard);
        let watermarks = answers.iter().flat_map(|a| a.freshness.watermarks.iter().cloned()).collect();
        Some(Self {
            state: merge_docs(newest.kind, &states),
            parts,
            freshness: Freshness::of(watermarks),
            served_by: instance.to_string(),
            ..newest
        })
    }
}

fn part(doc: &Arc<EntityDoc>, instance: &str) -> Part {
    Part {
        shard: doc.shard.clone(),
        provenance: doc.provenance.clone(),
        updated_at: doc.updated_at,
        served_by: instance.to_string(),
    }
}

/// A key's outcomes completed from the commands held here (their kind,
/// seq and end-to-end latency, which the shards of results do not know),
/// and the shards those commands came from.
fn complete_outcomes(view: &StateView, outcomes: serde_json::Value) -> (serde_json::Value, Vec<ShardId>) {
    let recent = outcomes.get("recent").and_then(serde_json::Value::as_array);
    let ids: Vec<&str> =
        recent.into_iter().flatten().filter_map(|o| o.get("command_id").and_then(serde_json::Value::as_str)).collect();
    let (mut commands, mut shards) = (Vec::new(), Vec::new());
    for id in ids {
        let mut docs = view.lookup(EntityKind::Command, id);
        if docs.is_empty() {
            continue;
        }
        docs.sort_by(|a, b| (a.updated_at, &a.provenance).cmp(&(b.updated_at, &b.provenance)));
        shards.extend(docs.iter().map(|d| d.shard.clone()));
        commands.push(merge_docs(EntityKind::Command, &docs.iter().map(|d| d.state.clone()).collect::<Vec<_>>()));
    }
    if commands.is_empty() {
        return (outcomes, shards);
    }
    match shoal_state::complete_outcomes(&outcomes, &commands) {
        Ok(completed) => (completed, shards),
        Err(error) => {
            tracing::warn!(%error, "cannot complete outcomes from their commands; serving them as they are");
            (outcomes, shards)
        }
    }
}

/// Whether a command's state lacks a part another instance may hold: the
/// command itself, or how it settled (result or dead letter).
pub fn incomplete_command(state: &serde_json::Value) -> bool {
    let missing = |name: &str| state.get(name).is_none_or(serde_json::Value::is_null);
    missing("issued") || (missing("result") && missing("dead_letter"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(instance: &str, partitions: &[i32], secs: i64) -> EntityAnswer {
        let at = DateTime::from_timestamp(secs, 0).unwrap();
        let provenance = Provenance::new("ticks", partitions[0], secs);
        let parts = partitions
            .iter()
            .map(|p| Part {
                shard: ShardId { topic: "ticks".into(), partition: *p },
                provenance: provenance.clone(),
                updated_at: at,
                served_by: instance.into(),
            })
            .collect();
        let watermark =
            Watermark { topic: "ticks".into(), partition: partitions[0], offset: secs, event_time: Some(at) };
        EntityAnswer {
            kind: EntityKind::Symbol,
            key: "A".into(),
            updated_at: at,
            provenance: provenance.clone(),
            state: serde_json::json!({"n": secs, "updated": {"at": at, "provenance": provenance}}),
            parts,
            freshness: Freshness::of(vec![watermark]),
            served_by: instance.into(),
        }
    }

    #[test]
    fn merging_answers_skips_shards_already_covered() {
        let merged = EntityAnswer::merged(vec![answer("a", &[0], 5), answer("b", &[0], 5)], "a").unwrap();
        assert_eq!(merged.parts.len(), 1, "the same shard held by two instances counts once");
        let merged = EntityAnswer::merged(vec![answer("a", &[0], 5), answer("b", &[1], 9)], "a").unwrap();
        assert_eq!((merged.parts.len(), merged.state["n"].as_i64(), merged.served_by.as_str()), (2, Some(9), "a"));
        assert_eq!(merged.freshness.event_time, DateTime::from_timestamp(5, 0), "the oldest shard's");
        assert!(EntityAnswer::merged(Vec::new(), "a").is_none());
    }

    #[test]
    fn commands_missing_a_part_are_incomplete() {
        assert!(incomplete_command(&serde_json::json!({"issued": null, "result": {}})));
        assert!(incomplete_command(&serde_json::json!({"issued": {}, "result": null, "dead_letter": null})));
        assert!(!incomplete_command(&serde_json::json!({"issued": {}, "result": null, "dead_letter": {}})));
    }
}
