//! One subscriber's state: what it subscribed to, what it has been sent,
//! and what awaits sending. No I/O: the connection feeds it change batches
//! and client requests, and asks it for the next frame whenever the socket
//! can take one. The semantics are described in the module root.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use shoal_state::EntityKind;

use super::protocol::{EntityFrame, FrameType, Refusal, Spec, absent_snapshot, overflow, pong};
use crate::hub::{ChangeBatch, EntityDoc, ShardId, StateView, Watermark};

/// One entity instance: kind, key and the shard holding it.
pub(crate) type EntityId = (EntityKind, String, ShardId);

/// Subscriptions (keys and kinds) one connection may hold.
pub const MAX_ENTITIES: usize = 10_000;

/// Control frames (errors, pongs, snapshots of absent keys) queued at most
/// before the connection stops reading the client's messages.
pub(crate) const CONTROL_MAX: usize = 64;

/// What a connection subscribed to.
#[derive(Debug, Default)]
struct Subscriptions {
    keys: HashMap<EntityKind, HashSet<String>>,
    kinds: HashSet<EntityKind>,
}

impl Subscriptions {
    fn matches(&self, kind: EntityKind, key: &str) -> bool {
        self.kinds.contains(&kind) || self.keys.get(&kind).is_some_and(|keys| keys.contains(key))
    }

    fn contains(&self, spec: &Spec) -> bool {
        match &spec.key {
            None => self.kinds.contains(&spec.kind),
            Some(key) => self.keys.get(&spec.kind).is_some_and(|keys| keys.contains(key)),
        }
    }

    fn len(&self) -> usize {
        self.kinds.len() + self.keys.values().map(HashSet::len).sum::<usize>()
    }

    fn insert(&mut self, spec: Spec) {
        match spec.key {
            None => self.kinds.insert(spec.kind),
            Some(key) => self.keys.entry(spec.kind).or_default().insert(key),
        };
    }

    fn remove(&mut self, spec: &Spec) {
        match &spec.key {
            None => {
                self.kinds.remove(&spec.kind);
            }
            Some(key) => {
                if let Some(keys) = self.keys.get_mut(&spec.kind) {
                    keys.remove(key);
                    if keys.is_empty() {
                        self.keys.remove(&spec.kind);
                    }
                }
            }
        }
    }
}

/// What the subscriber knows of one entity.
#[derive(Debug, Default)]
struct Tracked {
    /// Changes counted since subscribing (plus one per lag resync).
    seq: u64,
    /// `seq` of the last frame sent (`None`: nothing sent yet).
    sent: Option<u64>,
    /// The latest change not sent yet (the entity is then in the queue).
    pending: Option<Pending>,
}

impl Tracked {
    /// Changes coalesced away before a frame of `seq`.
    fn missed(&self, seq: u64) -> u64 {
        seq.saturating_sub(self.sent.unwrap_or(0)).saturating_sub(1)
    }
}

#[derive(Debug)]
struct Pending {
    doc: Option<Arc<EntityDoc>>,
    watermark: Watermark,
}

/// A frame read from a view: a snapshot, or a resync's update.
#[derive(Debug)]
struct Backlogged {
    id: EntityId,
    doc: Option<Arc<EntityDoc>>,
    watermark: Option<Watermark>,
    seq: u64,
    /// `None` for a snapshot; else a resync, with the batches lost if any.
    resync: Option<Option<u64>>,
}

/// Changes were not queued: resend from the view once the writer catches
/// up.
#[derive(Debug, Default)]
struct Resync {
    /// The queue was full (an `overflow` frame is due).
    overflowed: bool,
    /// Changes counted but not queued.
    dropped: u64,
    /// Change batches lost (the broadcast receiver lagged).
    lagged: u64,
    /// Entities whose changes were not queued; empty after a lag, when
    /// every subscribed entity is resent.
    stale: BTreeSet<EntityId>,
}

/// One connection's subscriptions and the frames awaiting its socket.
#[derive(Debug)]
pub(crate) struct Subscriber {
    /// Distinct entities queued at most (`api.stream_buffer`).
    buffer: usize,
    subs: Subscriptions,
    tracked: HashMap<EntityId, Tracked>,
    /// Entities with a pending change, oldest first, each once.
    queue: VecDeque<EntityId>,
    /// Snapshots and resync updates, sent before the queue.
    backlog: VecDeque<Backlogged>,
    /// Errors, pongs, overflow notices, snapshots of absent keys: first.
    control: VecDeque<String>,
    resync: Option<Resync>,
}

fn id_of(doc: &Arc<EntityDoc>) -> EntityId {
    (doc.kind, doc.key.clone(), doc.shard.clone())
}

fn frame_type(doc: &Option<Arc<EntityDoc>>) -> FrameType {
    if doc.is_some() { FrameType::Update } else { FrameType::Removed }
}

impl Subscriber {
    /// A subscriber queueing at most `buffer` distinct entities.
    pub(crate) fn new(buffer: usize) -> Self {
        Self {
            buffer: buffer.max(1),
            subs: Subscriptions::default(),
            tracked: HashMap::new(),
            queue: VecDeque::new(),
            backlog: VecDeque::new(),
            control: VecDeque::new(),
            resync: None,
        }
    }

    /// Whether the client's next message may be read now.
    pub(crate) fn accepts_input(&self) -> bool {
        self.control.len() < CONTROL_MAX
    }

    /// Answers a `ping`.
    pub(crate) fn ping(&mut self) {
        self.control.push_back(pong());
    }

    /// Answers a bad message with an `error` frame.
    pub(crate) fn refuse(&mut self, refusal: &Refusal) {
        self.control.push_back(refusal.frame());
    }

    /// Subscribes to `specs`, queueing a snapshot of every entity of `view`
    /// they match that no earlier subscription matched.
    pub(crate) fn subscribe(&mut self, specs: Vec<Spec>, view: &StateView) {
        let mut seen = HashSet::new();
        let fresh: Vec<Spec> =
            specs.into_iter().filter(|spec| !self.subs.contains(spec) && seen.insert(spec.clone())).collect();
        let total = self.subs.len() + fresh.len();
        if total > MAX_ENTITIES {
            let message = format!(
                "this subscribe would hold {total} subscriptions on this connection (limit {MAX_ENTITIES}); \
                 nothing was subscribed: unsubscribe first, or subscribe to a whole kind (no `key`)"
            );
            return self.refuse(&Refusal::new("too_many_entities", message));
        }
        for spec in &fresh {
            self.snapshot(spec, view);
        }
        for spec in fresh {
            self.subs.insert(spec);
        }
    }

    fn snapshot(&mut self, spec: &Spec, view: &StateView) {
        let docs: Vec<Arc<EntityDoc>> = match &spec.key {
            Some(key) => view.lookup(spec.kind, key),
            None => view.of_kind(spec.kind).cloned().collect(),
        };
        if let Some(key) = &spec.key
            && docs.is_empty()
            && !self.subs.matches(spec.kind, key)
        {
            self.control.push_back(absent_snapshot(spec.kind, key));
        }
        for doc in docs {
            let id = id_of(&doc);
            if self.subs.matches(doc.kind, &doc.key) || self.tracked.contains_key(&id) {
                continue;
            }
            self.tracked.insert(id.clone(), Tracked::default());
            let watermark = view.shards.get(&doc.shard).map(|s| s.watermark.clone());
            self.backlog.push_back(Backlogged { id, doc: Some(doc), watermark, seq: 0, resync: None });
        }
    }

    /// Unsubscribes from `specs`; frames of entities no longer matched are
    /// dropped.
    pub(crate) fn unsubscribe(&mut self, specs: &[Spec]) {
        for spec in specs {
            self.subs.remove(spec);
        }
        let subs = &self.subs;
        self.tracked.retain(|(kind, key, _), _| subs.matches(*kind, key));
        let tracked = &self.tracked;
        self.queue.retain(|id| tracked.contains_key(id));
        self.backlog.retain(|b| tracked.contains_key(&b.id));
        if let Some(resync) = &mut self.resync {
            resync.stale.retain(|id| tracked.contains_key(id));
        }
    }

    /// Counts and queues the changes of `batch` to subscribed entities.
    pub(crate) fn apply(&mut self, batch: &ChangeBatch) {
        for change in &batch.changes {
            if !self.subs.matches(change.kind, &change.key) {
                continue;
            }
            let id = (change.kind, change.key.clone(), batch.shard.clone());
            let tracked = self.tracked.entry(id.clone()).or_default();
            tracked.seq += 1;
            let pending = Pending { doc: change.doc.clone(), watermark: batch.watermark.clone() };
            if let Some(queued) = &mut tracked.pending {
                *queued = pending;
                continue;
            }
            if self.resync.is_none() {
                if self.queue.len() < self.buffer {
                    tracked.pending = Some(pending);
                    self.queue.push_back(id);
                    continue;
                }
                self.resync = Some(Resync { overflowed: true, ..Resync::default() });
            }
            if let Some(resync) = &mut self.resync {
                resync.dropped += 1;
                if resync.lagged == 0 {
                    resync.stale.insert(id);
                }
            }
        }
    }

    /// The broadcast receiver lost `batches`: every subscribed entity will
    /// be resent from the view, so the queue is dropped.
    pub(crate) fn lagged(&mut self, batches: u64) {
        let resync = self.resync.get_or_insert_with(Resync::default);
        resync.lagged += batches.max(1);
        resync.stale.clear();
        for id in self.queue.drain(..) {
            if let Some(tracked) = self.tracked.get_mut(&id) {
                tracked.pending = None;
            }
        }
    }

    /// Whether a resync is due: changes were not queued and every frame
    /// queued has been sent.
    pub(crate) fn wants_resync(&self) -> bool {
        self.resync.is_some() && self.control.is_empty() && self.backlog.is_empty() && self.queue.is_empty()
    }

    /// Queues the `overflow` notice and, from `view`, the current document
    /// of every entity whose changes were not queued (every subscribed
    /// entity after a lag).
    pub(crate) fn resync(&mut self, view: &StateView) {
        let Some(resync) = self.resync.take() else { return };
        if resync.overflowed {
            self.control.push_back(overflow(resync.dropped));
        }
        let lagged = (resync.lagged > 0).then_some(resync.lagged);
        let ids = if lagged.is_some() { self.everything(view) } else { resync.stale };
        for id in ids {
            self.refresh(id, view, lagged);
        }
    }

    fn everything(&self, view: &StateView) -> BTreeSet<EntityId> {
        let mut ids: BTreeSet<EntityId> = self.tracked.keys().cloned().collect();
        for kind in &self.subs.kinds {
            ids.extend(view.of_kind(*kind).map(id_of));
        }
        for (kind, keys) in &self.subs.keys {
            for key in keys {
                ids.extend(view.lookup(*kind, key).iter().map(id_of));
            }
        }
        ids
    }

    fn refresh(&mut self, id: EntityId, view: &StateView, lagged: Option<u64>) {
        if !self.subs.matches(id.0, &id.1) {
            return;
        }
        let shard = view.shards.get(&id.2);
        let doc = shard.and_then(|s| s.entities.get(&(id.0, id.1.clone())).cloned());
        let tracked = self.tracked.entry(id.clone()).or_default();
        if doc.is_none() && tracked.sent.is_none() {
            // Came and went unseen by the client.
            self.tracked.remove(&id);
            return;
        }
        if lagged.is_some() {
            tracked.seq += 1;
        }
        let watermark = shard.map(|s| s.watermark.clone());
        self.backlog.push_back(Backlogged { id, doc, watermark, seq: tracked.seq, resync: Some(lagged) });
    }

    /// The next frame to send, if any: control frames, then snapshots and
    /// resync updates, then queued changes, oldest entity first.
    pub(crate) fn next_frame(&mut self) -> Option<String> {
        if let Some(frame) = self.control.pop_front() {
            return Some(frame);
        }
        while let Some(item) = self.backlog.pop_front() {
            if let Some(frame) = self.backlogged_frame(item) {
                return Some(frame);
            }
        }
        while let Some(id) = self.queue.pop_front() {
            if let Some(frame) = self.pending_frame(id) {
                return Some(frame);
            }
        }
        None
    }

    fn backlogged_frame(&mut self, item: Backlogged) -> Option<String> {
        let tracked = self.tracked.get_mut(&item.id)?;
        let (frame, missed, lagged) = match item.resync {
            None => (FrameType::Snapshot, None, None),
            Some(None) => (frame_type(&item.doc), Some(Some(tracked.missed(item.seq))), None),
            Some(Some(lagged)) => (frame_type(&item.doc), Some(None), Some(lagged)),
        };
        tracked.sent = Some(item.seq);
        let (kind, key, shard) = &item.id;
        let text = EntityFrame {
            frame,
            kind: *kind,
            key,
            shard: Some(shard),
            seq: item.seq,
            doc: item.doc.as_deref(),
            missed,
            lagged,
            watermark: item.watermark.as_ref(),
        }
        .text();
        if frame == FrameType::Removed && tracked.pending.is_none() {
            self.tracked.remove(&item.id);
        }
        Some(text)
    }

    fn pending_frame(&mut self, id: EntityId) -> Option<String> {
        let tracked = self.tracked.get_mut(&id)?;
        let pending = tracked.pending.take()?;
        let (seq, missed) = (tracked.seq, tracked.missed(tracked.seq));
        tracked.sent = Some(seq);
        let frame = frame_type(&pending.doc);
        let text = EntityFrame {
            frame,
            kind: id.0,
            key: &id.1,
            shard: Some(&id.2),
            seq,
            doc: pending.doc.as_deref(),
            missed: Some(Some(missed)),
            lagged: None,
            watermark: Some(&pending.watermark),
        }
        .text();
        if frame == FrameType::Removed {
            self.tracked.remove(&id);
        }
        Some(text)
    }
}

#[cfg(test)]
#[path = "subscriber_tests.rs"]
mod tests;
