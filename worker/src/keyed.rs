//! Per-key state of stateful skills — the middle levels of the fraud and
//! IoT topologies, which correlate across the keys below them — kept in
//! memory and derived from the log.
//!
//! Each result of a stateful skill carries its key's state after the
//! command, under [`STATE_FIELD`] in its output (`{"version", "value"}`):
//! the results topic is the state's changelog. When the worker starts,
//! when its partitions change, and after its pipeline rewinds, the
//! [`Restorer`] reads the results topic's tail and restores the newest
//! state of each key from it, as a Kafka Streams store restores from its
//! changelog topic. With exactly-once delivery only committed results are
//! read, so the restored state holds exactly the commands whose offsets
//! were committed; the next command of a key starts from there.
//!
//! Bounds: the tail read covers `worker.state_restore_results` results; a
//! key whose newest result is older than that starts empty again. Each
//! result carries the whole state of its key, so keep a stateful skill's
//! state small (the bundled ones are windowed or capped).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shoal_kafka::settings::KafkaSettings;
use shoal_protocol::messages::{CommandResult, ResultStatus, WireMessage};

/// The output field holding a stateful skill's state after the command.
pub const STATE_FIELD: &str = "state";

/// A key's state and how many commands made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versioned<T> {
    /// Commands applied to the key's state so far.
    pub version: u64,
    /// The state.
    pub value: T,
}

/// How a restore treats the state in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restore {
    /// After a rewind: memory may hold state of commands whose results were
    /// discarded; the log's state replaces all of it, and work started
    /// before cannot store what it computed.
    Replace,
    /// After the partitions changed: memory is current for the partitions
    /// kept (and work on them goes on); a key takes the log's state when it
    /// is newer (a partition that came from another worker).
    Merge,
}

/// A store the [`Restorer`] can fill from the results topic.
pub trait Restorable: Send + Sync {
    /// The command kind whose results carry this store's state.
    fn kind(&self) -> &str;
    /// Restores from the newest `state` of each key in the results read.
    /// Returns the keys taken; a state that does not decode is skipped and
    /// logged with its key.
    fn restore(&self, newest: HashMap<String, serde_json::Value>, how: Restore) -> usize;
    /// Keys held.
    fn keys_held(&self) -> usize;
}

struct Inner<T> {
    /// Changes on every [`Restore::Replace`].
    generation: u64,
    entries: HashMap<String, Versioned<T>>,
}

/// One stateful skill's state by key. Cheap to share (`Arc`); the lock is
/// never held across an await.
pub struct KeyedState<T> {
    kind: String,
    inner: Mutex<Inner<T>>,
}

impl<T> std::fmt::Debug for KeyedState<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedState").field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl<T: Clone + Serialize + DeserializeOwned + Send + 'static> KeyedState<T> {
    /// An empty store for `kind`'s state.
    pub fn new(kind: &str) -> Self {
        Self { kind: kind.to_string(), inner: Mutex::new(Inner { generation: 0, entries: HashMap::new() }) }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner<T>) -> R) -> R {
        // Every update leaves the map consistent, so a poisoned lock's data
        // is still good.
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The key's state, if any, and the generation to hand to
    /// [`KeyedState::put`].
    pub fn get(&self, key: &str) -> (Option<Versioned<T>>, u64) {
        self.with(|inner| (inner.entries.get(key).cloned(), inner.generation))
    }

    /// Stores the key's new state, unless a [`Restore::Replace`] happened
    /// since `generation` (the command's result is being discarded; the
    /// command runs again). Returns whether it was stored.
    pub fn put(&self, key: &str, state: Versioned<T>, generation: u64) -> bool {
        self.with(|inner| {
            if inner.generation != generation {
                return false;
            }
            inner.entries.insert(key.to_string(), state);
            true
        })
    }
}

impl<T: Clone + Serialize + DeserializeOwned + Send + 'static> Restorable for KeyedState<T> {
    fn kind(&self) -> &str {
        &self.kind
    }

    fn restore(&self, newest: HashMap<String, serde_json::Value>, how: Restore) -> usize {
        let mut decoded = HashMap::with_capacity(newest.len());
        for (key, value) in newest {
            match Versioned::<T>::deserialize(value) {
                Ok(state) => {
                    decoded.insert(key, state);
                }
                Err(error) => {
                    tracing::warn!(kind = %self.kind, %key, %error, "a result's state does not decode; the key starts without it");
                }
            }
        }
        self.with(|inner| match how {
            Restore::Replace => {
                inner.generation += 1;
                let taken = decoded.len();
                inner.entries = decoded;
                taken
            }
            Restore::Merge => {
                let mut taken = 0;
                for (key, state) in decoded {
                    let newer = inner.entries.get(&key).is_none_or(|held| state.version > held.version);
                    if newer {
                        inner.entries.insert(key, state);
                        taken += 1;
                    }
                }
                taken
            }
        })
    }

    fn keys_held(&self) -> usize {
        self.with(|inner| inner.entries.len())
    }
}

/// Bound on one restore; a slower cluster leaves keys without their state
/// (logged).
const RESTORE_BOUND: Duration = Duration::from_secs(15);

/// Restores the stateful skills' stores from the results topic's tail.
pub struct Restorer {
    tail: shoal_kafka::tail::TailReader,
    stores: Vec<Arc<dyn Restorable>>,
    budget: usize,
    /// Rebalance count at the last restore; `None`: restore before the next
    /// command.
    loaded_at: Option<u64>,
    /// The next restore replaces (first start, after a rewind).
    replace: bool,
}

impl std::fmt::Debug for Restorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<&str> = self.stores.iter().map(|s| s.kind()).collect();
        f.debug_struct("Restorer").field("kinds", &kinds).field("budget", &self.budget).finish_non_exhaustive()
    }
}

impl Restorer {
    /// A restorer of `stores` reading about the last `budget` results of
    /// `topic`; `None` when there is no store.
    pub fn new(
        kafka: &KafkaSettings,
        client_id: &str,
        topic: &str,
        stores: Vec<Arc<dyn Restorable>>,
        budget: usize,
    ) -> Result<Option<Self>, KafkaError> {
        if stores.is_empty() {
            return Ok(None);
        }
        let tail = shoal_kafka::tail::TailReader::new(kafka, client_id, topic)?;
        Ok(Some(Self { tail, stores, budget, loaded_at: None, replace: true }))
    }

    /// The next command waits for a restore that replaces the state.
    pub fn reset(&mut self) {
        self.loaded_at = None;
        self.replace = true;
    }

    /// Restores when the partitions changed (`rebalances`) or after a
    /// reset. Blocking: it calls `block_in_place`.
    pub fn refresh(&mut self, rebalances: u64) {
        if self.loaded_at == Some(rebalances) {
            return;
        }
        let how = if self.replace { Restore::Replace } else { Restore::Merge };
        match tokio::task::block_in_place(|| self.read()) {
            Ok(mut newest) => {
                for store in &self.stores {
                    let of_kind = newest.remove(store.kind()).unwrap_or_default();
                    let seen = of_kind.len();
                    let taken = store.restore(of_kind, how);
                    tracing::info!(kind = store.kind(), seen, taken, held = store.keys_held(), how = ?how, "skill state restored from the results topic");
                }
                self.loaded_at = Some(rebalances);
                self.replace = false;
            }
            Err(error) => {
                // Tried again before the next command; until then the
                // stores keep what they hold.
                tracing::warn!(%error, "cannot read the results tail to restore the skills' state");
            }
        }
    }

    /// The newest `state` per kind and key among the tail's successful
    /// results.
    fn read(&self) -> Result<HashMap<String, HashMap<String, serde_json::Value>>, KafkaError> {
        let started = Instant::now();
        let mut newest: HashMap<String, HashMap<String, serde_json::Value>> = HashMap::new();
        let read = self.tail.read(self.budget, RESTORE_BOUND, |message| {
            let Some(result) = message.payload().and_then(|p| CommandResult::decode(p).ok()) else { return };
            if result.status != ResultStatus::Succeeded || !self.stores.iter().any(|s| s.kind() == result.kind) {
                return;
            }
            if let Some(state) = result.output.get(STATE_FIELD) {
                newest.entry(result.kind).or_default().insert(result.key, state.clone());
            }
        })?;
        if !read.complete {
            tracing::warn!("results tail not read to the end in time; some keys of stateful skills start empty");
        }
        tracing::debug!(
            records = read.records,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "results tail read for skill state"
        );
        Ok(newest)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn state(version: u64, value: &str) -> serde_json::Value {
        serde_json::to_value(Versioned { version, value: value.to_string() }).unwrap()
    }

    #[test]
    fn a_replace_drops_what_work_started_before_it_computed() {
        let store = KeyedState::<String>::new("k");
        let (held, generation) = store.get("a");
        assert!(held.is_none());
        assert!(store.put("a", Versioned { version: 1, value: "one".into() }, generation));
        // A rewind: the log holds nothing for `a` yet (its result was discarded).
        store.restore(HashMap::new(), Restore::Replace);
        assert!(store.get("a").0.is_none(), "the discarded command's state is gone");
        assert!(!store.put("a", Versioned { version: 1, value: "late".into() }, generation), "stale work cannot store");
        let (_, now) = store.get("a");
        assert!(store.put("a", Versioned { version: 1, value: "again".into() }, now));
    }

    #[test]
    fn a_merge_keeps_newer_memory_and_takes_newer_log_state() {
        let store = KeyedState::<String>::new("k");
        let (_, generation) = store.get("kept");
        store.put("kept", Versioned { version: 5, value: "memory".into() }, generation);
        store.put("moved", Versioned { version: 1, value: "old".into() }, generation);
        let newest = HashMap::from([
            ("kept".to_string(), state(4, "log")),
            ("moved".to_string(), state(3, "other owner")),
            ("new".to_string(), state(2, "from log")),
            ("broken".to_string(), serde_json::json!({"version": "x"})),
        ]);
        assert_eq!(store.restore(newest, Restore::Merge), 2);
        assert_eq!(store.get("kept").0.unwrap().value, "memory");
        assert_eq!(store.get("moved").0.unwrap().value, "other owner");
        assert_eq!(store.get("new").0.unwrap().value, "from log");
        assert!(store.get("broken").0.is_none());
        assert!(
            store.put("kept", Versioned { version: 6, value: "on".into() }, generation),
            "a merge keeps work going"
        );
    }
}
