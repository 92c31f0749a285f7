//! What the log says the state must be: the orchestrator's input partitions
//! replayed from offset 0 through the same rules
//! ([`shoal_orchestrator::state::replay`]), and the API's answers compared
//! with it. Shared by the state tests and `shoal-chaos`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_orchestrator::settings::OrchestratorSettings;
use shoal_orchestrator::state::log::{LogError, LogReader};
use shoal_orchestrator::state::replay::{Until, replay};
use shoal_state::{EntityKind, EntityRef, Stamp, State, complete_outcomes, merge_entities};

use super::proc::api_get;
use super::scope::{ADMIN_TOKEN, READ_TOKEN};

/// A command as the rules decide it: kind, key and payload (ids, sequence
/// numbers and times are the stage's, not the rules').
pub type Decided = (String, String, Value);

/// One replayed partition: its watermark and state.
#[derive(Debug)]
pub struct ReplayedShard {
    /// Input topic.
    pub topic: String,
    /// Input partition.
    pub partition: i32,
    /// Offset of the last input applied (-1: none).
    pub watermark: i64,
    /// The state after the last input.
    pub state: State,
}

/// The replay of some input topics, every partition, with the commands the
/// rules decided on the way (sorted, to compare as multisets).
#[derive(Debug, Default)]
pub struct Replayed {
    /// One per input partition.
    pub shards: Vec<ReplayedShard>,
    /// The commands decided, sorted.
    pub commands: Vec<Decided>,
}

/// Replays every partition of `topics` with `settings` (the settings the
/// stage ran with).
pub fn replay_topics(settings: &OrchestratorSettings, topics: &[&str], bound: Duration) -> Result<Replayed, String> {
    let reader = LogReader::new(&settings.kafka, "replay-check").map_err(|e| e.to_string())?;
    let mut out = Replayed::default();
    for topic in topics {
        for partition in reader.partitions(topic, Duration::from_secs(10)).map_err(|e: LogError| e.to_string())? {
            let (state, _) =
                replay(&settings.replay_settings(), &reader, topic, partition, Until::End, bound, |_, d, _| {
                    out.commands.extend(d.drafts.iter().map(|d| (d.kind.clone(), d.key.clone(), d.payload.clone())));
                })
                .map_err(|e| e.to_string())?;
            let watermark = state.watermarks().mark(topic, partition).map_or(-1, |m| m.offset);
            out.shards.push(ReplayedShard { topic: (*topic).to_string(), partition, watermark, state });
        }
    }
    sort_decided(&mut out.commands);
    Ok(out)
}

/// Sorts decided commands into a canonical order.
pub fn sort_decided(commands: &mut [Decided]) {
    commands.sort_by_cached_key(|c| format!("{c:?}"));
}

/// Multiset differences of decided commands: (in `expected` only, in
/// `actual` only). Both must be sorted ([`sort_decided`]).
pub fn decided_difference(expected: &[Decided], actual: &[Decided]) -> (Vec<Decided>, Vec<Decided>) {
    let key = |c: &Decided| format!("{c:?}");
    let (mut i, mut j) = (0, 0);
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    while i < expected.len() || j < actual.len() {
        match (expected.get(i), actual.get(j)) {
            (Some(e), Some(a)) if key(e) == key(a) => (i, j) = (i + 1, j + 1),
            (Some(e), Some(a)) if key(e) < key(a) => {
                missing.push(e.clone());
                i += 1;
            }
            (Some(_), Some(a)) | (None, Some(a)) => {
                extra.push(a.clone());
                j += 1;
            }
            (Some(e), None) => {
                missing.push(e.clone());
                i += 1;
            }
            (None, None) => break,
        }
    }
    (missing, extra)
}

impl Replayed {
    /// The symbols' states, canonical JSON, by symbol.
    pub fn symbols(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for shard in &self.shards {
            for entity in shard.state.entity_refs() {
                if entity.kind == EntityKind::Symbol
                    && let Some(value) = shard.state.entity_value(&entity)
                {
                    out.insert(entity.key.clone(), serde_json::to_vec(&value).unwrap_or_default());
                }
            }
        }
        out
    }

    /// An entity's parts across the shards, oldest first, merged as the API
    /// merges them.
    pub fn merged(&self, entity: &EntityRef) -> Option<Value> {
        let mut parts: Vec<(Stamp, Value)> = self
            .shards
            .iter()
            .filter_map(|s| Some((s.state.entity_stamp(entity)?, s.state.entity_value(entity)?)))
            .collect();
        parts.sort_by(|a, b| (a.0.at, &a.0.provenance).cmp(&(b.0.at, &b.0.provenance)));
        let values: Vec<Value> = parts.into_iter().map(|(_, v)| v).collect();
        match values.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            _ => merge_entities(entity.kind, &values).ok(),
        }
    }

    /// What the API must serve for `entity` (outcomes completed from their
    /// commands, as the API completes them).
    pub fn expected(&self, entity: &EntityRef) -> Option<Value> {
        let value = self.merged(entity)?;
        if entity.kind != EntityKind::Outcomes {
            return Some(value);
        }
        let commands: Vec<Value> = value["recent"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["command_id"].as_str())
            .filter_map(|id| self.merged(&EntityRef { kind: EntityKind::Command, key: id.to_string() }))
            .collect();
        if commands.is_empty() { Some(value) } else { complete_outcomes(&value, &commands).ok() }
    }

    /// Waits up to `timeout` until the shards `api` serves (its
    /// `/v1/admin/shards`) are at the replay's watermarks; `Err` names the
    /// ones behind.
    pub async fn wait_for_watermarks(&self, api: SocketAddr, timeout: Duration) -> Result<(), String> {
        let wanted: BTreeMap<(String, i32), i64> = self
            .shards
            .iter()
            .filter(|s| s.watermark >= 0)
            .map(|s| ((s.topic.clone(), s.partition), s.watermark))
            .collect();
        let deadline = Instant::now() + timeout;
        loop {
            let served = served_watermarks(api).await.unwrap_or_default();
            let behind: Vec<_> = wanted.iter().filter(|(id, at)| served.get(*id) != Some(*at)).collect();
            if behind.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("behind or missing after {timeout:?}: {behind:?}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await; // poll interval
        }
    }
}

async fn served_watermarks(api: SocketAddr) -> Result<BTreeMap<(String, i32), i64>, String> {
    let (_, body) = api_get(api, "/v1/admin/shards", Some(ADMIN_TOKEN)).await.map_err(|e| e.to_string())?;
    Ok(body["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let partition = i32::try_from(s["partition"].as_i64().unwrap_or(-1)).unwrap_or(-1);
            let id = (s["topic"].as_str().unwrap_or_default().to_string(), partition);
            (id, s["watermark"]["offset"].as_i64().unwrap_or(-2))
        })
        .collect())
}

/// The `state` an API serves at `path`, canonical JSON, or why not.
pub async fn served_state(api: SocketAddr, path: &str) -> Result<Vec<u8>, String> {
    let (status, body) = api_get(api, path, Some(READ_TOKEN)).await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status} {body}"));
    }
    serde_json::to_vec(&body["state"]).map_err(|e| e.to_string())
}
