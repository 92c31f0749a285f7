//! The read side of the state: the stage that owns a shard publishes an
//! immutable view of it after applying inputs; readers (HTTP handlers,
//! WebSocket subscribers, the MCP server) take the current [`StateView`]
//! without blocking the writer and without locks held across awaits.
//!
//! A shard is one input partition (`topic`, `partition`): its owner applies
//! that partition's records in offset order. Entities are persistent maps
//! ([`imbl::OrdMap`]), so publishing a new view after changing a few
//! entities copies a few tree nodes, not the state.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shoal_state::{EntityKind, Provenance};
use tokio::sync::broadcast;

/// One shard: an input partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardId {
    /// Input topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// How far a shard's input has been applied: the watermark of its
/// partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// Input topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset of the last input applied (`-1` for none).
    pub offset: i64,
    /// Event time of the newest input applied.
    pub event_time: Option<DateTime<Utc>>,
}

/// One entity as served: its state (the same JSON the changelog holds)
/// and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityDoc {
    /// Kind.
    pub kind: EntityKind,
    /// Key.
    pub key: String,
    /// The shard that owns it.
    pub shard: ShardId,
    /// Event time of the newest input that changed it.
    pub updated_at: DateTime<Utc>,
    /// The input that last changed it. Values inside `state` carry their
    /// own `at` and `provenance`.
    pub provenance: Provenance,
    /// The entity's state.
    pub state: serde_json::Value,
}

/// Entities of a shard, by (kind, key).
pub type Entities = imbl::OrdMap<(EntityKind, String), Arc<EntityDoc>>;

/// An immutable view of one shard.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardView {
    /// Which shard.
    pub id: ShardId,
    /// How far its input has been applied.
    pub watermark: Watermark,
    /// Its entities.
    pub entities: Entities,
}

/// An immutable view of every shard this instance owns.
#[derive(Debug, Clone, Default)]
pub struct StateView {
    /// Shards by id.
    pub shards: imbl::OrdMap<ShardId, Arc<ShardView>>,
    /// Increases with every publication.
    pub version: u64,
}

impl StateView {
    /// Every document of `(kind, key)` across shards (several only for
    /// kinds fed by more than one partition, such as commands).
    pub fn lookup(&self, kind: EntityKind, key: &str) -> Vec<Arc<EntityDoc>> {
        let wanted = (kind, key.to_string());
        self.shards.values().filter_map(|s| s.entities.get(&wanted).cloned()).collect()
    }

    /// Every document of `kind`, by shard then key.
    pub fn of_kind(&self, kind: EntityKind) -> impl Iterator<Item = &Arc<EntityDoc>> + '_ {
        self.shards.values().flat_map(move |s| {
            s.entities.range((kind, String::new())..).take_while(move |((k, _), _)| *k == kind).map(|(_, d)| d)
        })
    }

    /// The watermarks of every shard.
    pub fn watermarks(&self) -> Vec<Watermark> {
        self.shards.values().map(|s| s.watermark.clone()).collect()
    }
}

/// One change to an entity, as sent to subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Kind.
    pub kind: EntityKind,
    /// Key.
    pub key: String,
    /// The new document; `None` when the entity was removed (evicted, or its
    /// shard moved to another instance).
    pub doc: Option<Arc<EntityDoc>>,
}

/// The changes of one publication of one shard, in the order applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeBatch {
    /// The shard.
    pub shard: ShardId,
    /// Its watermark after the changes.
    pub watermark: Watermark,
    /// The changes.
    pub changes: Vec<Change>,
}

/// Where the owners of shards publish and readers read.
#[derive(Debug)]
pub struct Hub {
    view: ArcSwap<StateView>,
    changes: broadcast::Sender<Arc<ChangeBatch>>,
    version: AtomicU64,
}

/// Change batches kept for slow subscribers before they lag (a lagging
/// subscriber catches up from the current view: see the stream module).
pub const CHANGE_BUFFER: usize = 1_024;

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        Self { view: ArcSwap::from_pointee(StateView::default()), changes, version: AtomicU64::new(0) }
    }

    /// The current view; never blocks.
    pub fn view(&self) -> Arc<StateView> {
        self.view.load_full()
    }

    /// Receives every change batch published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeBatch>> {
        self.changes.subscribe()
    }

    /// Publishes a shard's new view and the changes that led to it. Called
    /// by the shard's owner only (one writer per shard).
    pub fn publish(&self, shard: Arc<ShardView>, changes: Vec<Change>) {
        let batch = Arc::new(ChangeBatch { shard: shard.id.clone(), watermark: shard.watermark.clone(), changes });
        self.view.rcu(|current| {
            let mut next = StateView::clone(current);
            next.shards.insert(shard.id.clone(), shard.clone());
            next.version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
            next
        });
        // No subscriber is not an error.
        let _ = self.changes.send(batch);
    }

    /// Removes a shard this instance no longer owns; subscribers see its
    /// entities removed.
    pub fn remove(&self, id: &ShardId) {
        let mut removed = None;
        self.view.rcu(|current| {
            let mut next = StateView::clone(current);
            removed = next.shards.remove(id);
            next.version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
            next
        });
        if let Some(shard) = removed {
            let changes =
                shard.entities.keys().map(|(kind, key)| Change { kind: *kind, key: key.clone(), doc: None }).collect();
            let _ = self.changes.send(Arc::new(ChangeBatch {
                shard: shard.id.clone(),
                watermark: shard.watermark.clone(),
                changes,
            }));
        }
    }
}

/// One entity's parts (oldest first) merged into its state with
/// [`shoal_state::merge_entities`]; parts that cannot be merged (not the
/// kind's shape) leave the newest part standing for the whole.
pub fn merge_docs(kind: EntityKind, values: &[serde_json::Value]) -> serde_json::Value {
    if let [one] = values {
        return one.clone();
    }
    match shoal_state::merge_entities(kind, values) {
        Ok(merged) => merged,
        Err(error) => {
            tracing::warn!(%error, kind = kind.as_str(), "cannot merge an entity's parts; serving the newest");
            values.last().cloned().unwrap_or(serde_json::Value::Null)
        }
    }
}
