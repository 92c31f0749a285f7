//! The decisions stage's state, one shard per input partition: each shard
//! is a [`State`] over its partition's records, owned by the stage's task.
//!
//! - **Apply**: the stage applies a record and runs the rules
//!   ([`crate::rules::decide`]) on its shard.
//! - **Checkpoint**: every `state.checkpoint_interval_ms` (or
//!   `checkpoint_max_inputs` inputs) a shard writes the entities it changed
//!   since its last checkpoint (a tombstone for those evicted) and then its
//!   meta record (watermark, counters) to its changelog partition, as
//!   outputs of the record being processed: with exactly-once delivery they
//!   commit in the same transaction as that record's offset, so a committed
//!   checkpoint never reflects an input whose offset is not committed.
//! - **Load on assignment**: when the group assigns a partition, its shard
//!   is loaded from its changelog alone (read to the end: the entity
//!   records and the last meta record of its last committed checkpoint)
//!   and published, *provisional*: readers see it at once, with the
//!   checkpoint's watermark, even if the partition brings no record.
//! - **Restore**: when the first record of a partition arrives (after
//!   start, a rebalance, or a rewind), its shard (the provisional one, or
//!   its checkpoint read now) is caught up: the inputs between the
//!   checkpoint's watermark and the record (already decided and committed
//!   before) are applied again with the rules, whose commands are dropped.
//!   The rules are deterministic, so their memory (kept in the state) ends
//!   as it was, whichever committed checkpoint it started from.
//! - **Publish**: changed entities are published to the readers' [`Hub`]
//!   at most every `state.publish_interval_ms`.
//! - **Drop**: a revoked partition's shard, and every shard that applied
//!   inputs not covered by a committed transaction after a rewind (an
//!   aborted transaction takes its inputs' effects with it), is dropped and
//!   restored again when its records come back. Provisional shards hold a
//!   committed checkpoint only and are kept.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shoal_api::{Change, EntityDoc, Hub, ShardId, ShardView, Watermark};
use shoal_kafka::outputs::Outputs;
use shoal_state::{Applied, EntityRef, Input, State, StateConfig, changelog_key, parse_changelog_key};

use super::decode::{InputTopics, decode};
use super::log::{LogError, LogReader};
use super::settings::StateSettings;
use super::stats::StateStats;
use crate::rules::{Decision, RulesSettings, decide};

/// Bound on loading a shard's checkpoint when its partition is assigned.
/// That load only lets readers see the shard before its first record, and
/// it runs on the stage's loop: a changelog partition without a leader
/// (a broker just died) must not hold every other partition's records
/// back for `state.restore_timeout_ms`. The first record restores the
/// shard within the full bound.
const CHECKPOINT_LOAD_ON_ASSIGN: Duration = Duration::from_secs(5);

/// Key of a shard's meta record in its changelog.
pub const META_KEY: &str = "_meta";

/// Why a shard could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Reading the changelog or the input failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The changelog holds something the state cannot be rebuilt from.
    #[error("changelog {topic}/{partition}: {detail}")]
    Changelog {
        /// Changelog topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// What was wrong.
        detail: String,
    },
}

/// What restoring one shard did.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    /// Changelog records read.
    pub changelog_records: u64,
    /// Entities restored.
    pub entities: usize,
    /// Inputs applied again after the checkpoint.
    pub caught_up: u64,
    /// How long it took.
    pub took: Duration,
}

/// One shard.
#[derive(Debug)]
pub struct Shard {
    /// The state of its partition.
    pub state: State,
    /// Entities changed since the last checkpoint.
    dirty: BTreeSet<EntityRef>,
    /// Entities changed since the last publication.
    unpublished: BTreeSet<EntityRef>,
    inputs_since_checkpoint: u64,
    first_change: Option<Instant>,
    /// What readers see of it.
    entities: shoal_api::hub::Entities,
    /// Loaded from its checkpoint alone (on assignment), not yet caught up
    /// with the inputs after it: served, but restored before it applies.
    provisional: bool,
    /// What reading its checkpoint found.
    checkpoint: RestoreReport,
}

impl Shard {
    /// Notes what an input changed; whether the checkpoint is due.
    fn note(&mut self, applied: &Applied, settings: &StateSettings) -> bool {
        for entity in applied.changed.iter().chain(&applied.evicted) {
            self.dirty.insert(entity.clone());
            self.unpublished.insert(entity.clone());
        }
        self.inputs_since_checkpoint += 1;
        let first = *self.first_change.get_or_insert_with(Instant::now);
        self.inputs_since_checkpoint >= settings.checkpoint_max_inputs
            || first.elapsed() >= Duration::from_millis(settings.checkpoint_interval_ms)
    }

    fn new(state: State, checkpoint: RestoreReport, provisional: bool) -> Self {
        let unpublished = state.entity_refs().into_iter().collect();
        Self {
            state,
            dirty: BTreeSet::new(),
            unpublished,
            inputs_since_checkpoint: 0,
            first_change: None,
            entities: Default::default(),
            provisional,
            checkpoint,
        }
    }
}

/// Every shard this instance owns, and how to restore, checkpoint and
/// publish them.
pub struct Shards {
    settings: StateSettings,
    model: StateConfig,
    rules: RulesSettings,
    topics: InputTopics,
    reader: LogReader,
    hub: Arc<Hub>,
    shards: HashMap<ShardId, Shard>,
    /// The next offset to read of each partition, as last committed with
    /// the stage's transactions (exactly-once only).
    committed: HashMap<ShardId, i64>,
    last_publish: Instant,
    stats: Arc<StateStats>,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shards").field("shards", &self.shards.len()).finish_non_exhaustive()
    }
}

impl Shards {
    /// No shards yet.
    pub fn new(
        settings: StateSettings,
        rules: RulesSettings,
        topics: InputTopics,
        reader: LogReader,
        hub: Arc<Hub>,
        stats: Arc<StateStats>,
    ) -> Self {
        let model = settings.model(&rules);
        Self {
            settings,
            model,
            rules,
            topics,
            reader,
            hub,
            shards: HashMap::new(),
            committed: HashMap::new(),
            last_publish: Instant::now(),
            stats,
        }
    }

    /// Notes offsets committed with the stage's transaction: a shard
    /// whose inputs are all below them survives a later rewind.
    pub fn committed(&mut self, offsets: &[(String, i32, i64)]) {
        for (topic, partition, next) in offsets {
            self.committed.insert(ShardId { topic: topic.clone(), partition: *partition }, *next);
        }
    }

    /// The shards held.
    pub fn ids(&self) -> Vec<ShardId> {
        let mut ids: Vec<ShardId> = self.shards.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The shard of `topic`/`partition`, restored first if it is not held
    /// or only loaded from its checkpoint (`next_offset`: the offset of the
    /// record about to be applied; the inputs before it are caught up).
    /// Blocking while it restores.
    pub fn load(
        &mut self,
        topic: &str,
        partition: i32,
        next_offset: i64,
    ) -> Result<(&mut Shard, Option<RestoreReport>), RestoreError> {
        let id = ShardId { topic: topic.to_string(), partition };
        let mut report = None;
        if self.shards.get(&id).is_none_or(|s| s.provisional) {
            let started = Instant::now();
            let (mut state, mut restored) = match self.shards.remove(&id) {
                Some(shard) => (shard.state, shard.checkpoint),
                None => self.read_checkpoint(&id, Duration::from_millis(self.settings.restore_timeout_ms))?,
            };
            let left = Duration::from_millis(self.settings.restore_timeout_ms).saturating_sub(started.elapsed());
            let changed;
            (restored.caught_up, changed) = self.catch_up(&mut state, &id, next_offset, left)?;
            restored.took += started.elapsed();
            tracing::info!(
                shard = %id,
                changelog_records = restored.changelog_records,
                entities = restored.entities,
                caught_up = restored.caught_up,
                took_ms = restored.took.as_millis() as u64,
                "state shard restored"
            );
            let mut shard = Shard::new(state, restored.clone(), false);
            // What the inputs caught up changed is not in the changelog
            // (the previous owner's checkpoint of it never committed): the
            // next checkpoint writes it, or its meta record would claim
            // inputs whose effects the entity records lack.
            shard.dirty = changed;
            self.shards.insert(id.clone(), shard);
            self.stats.restores.fetch_add(1, Ordering::Relaxed);
            self.stats.caught_up.fetch_add(restored.caught_up, Ordering::Relaxed);
            report = Some(restored);
        }
        let shard = self.shards.get_mut(&id).ok_or_else(|| RestoreError::Changelog {
            topic: id.topic.clone(),
            partition,
            detail: "shard vanished".into(),
        })?;
        Ok((shard, report))
    }

    /// Partitions assigned to this stage: each shard not held is loaded
    /// from its changelog alone (its last committed checkpoint), so that
    /// readers are served at once, with the checkpoint's watermark, before
    /// (or without) the partition's next record. The first record then
    /// catches the shard up from there ([`Shards::load`]). A shard that
    /// cannot be read now is left to that first record. Blocking.
    pub fn assigned(&mut self, partitions: &[(String, i32)]) {
        for (topic, partition) in partitions {
            let id = ShardId { topic: topic.clone(), partition: *partition };
            if self.shards.contains_key(&id) {
                continue;
            }
            let bound = Duration::from_millis(self.settings.restore_timeout_ms).min(CHECKPOINT_LOAD_ON_ASSIGN);
            match tokio::task::block_in_place(|| self.read_checkpoint(&id, bound)) {
                Ok((state, checkpoint)) => {
                    tracing::info!(
                        shard = %id,
                        changelog_records = checkpoint.changelog_records,
                        entities = checkpoint.entities,
                        took_ms = checkpoint.took.as_millis() as u64,
                        "state shard loaded from its checkpoint"
                    );
                    self.shards.insert(id, Shard::new(state, checkpoint, true));
                }
                Err(error) => {
                    tracing::warn!(shard = %id, %error, "cannot load the state shard's checkpoint yet; it is restored with its first record")
                }
            }
        }
        self.publish(true);
    }

    /// Rebuilds a shard: the changelog, then the inputs after its watermark
    /// up to `until` (exclusive).
    pub fn restore(&self, id: &ShardId, until: i64) -> Result<(State, RestoreReport), RestoreError> {
        let started = Instant::now();
        let (mut state, mut report) =
            self.read_checkpoint(id, Duration::from_millis(self.settings.restore_timeout_ms))?;
        let left = Duration::from_millis(self.settings.restore_timeout_ms).saturating_sub(started.elapsed());
        report.caught_up = self.catch_up(&mut state, id, until, left)?.0;
        report.took = started.elapsed();
        Ok((state, report))
    }

    /// A shard's last committed checkpoint: its changelog partition read to
    /// the end, the state rebuilt from the entity records and the last meta
    /// record, within `bound`.
    fn read_checkpoint(&self, id: &ShardId, bound: Duration) -> Result<(State, RestoreReport), RestoreError> {
        let started = Instant::now();
        let changelog = self.settings.changelog_of(&id.topic);
        let mut meta = None;
        let mut entities = std::collections::BTreeMap::new();
        let mut bad = None;
        let read = self.reader.read(&changelog, id.partition, None, None, bound, |message| {
            use rdkafka::Message as _;
            let key = message.key().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
            let value = message.payload().map(serde_json::from_slice::<serde_json::Value>).transpose();
            match (key.as_str(), value) {
                (META_KEY, Ok(value)) => meta = value,
                (_, Ok(value)) => match parse_changelog_key(&key) {
                    Some(entity) => {
                        match value {
                            Some(value) => entities.insert(entity, value),
                            None => entities.remove(&entity),
                        };
                    }
                    None => bad = Some(format!("key {key:?} at offset {} names no entity", message.offset())),
                },
                (_, Err(error)) => bad = Some(format!("value of {key:?} at offset {}: {error}", message.offset())),
            }
        })?;
        let changelog_error =
            |detail: String| RestoreError::Changelog { topic: changelog.clone(), partition: id.partition, detail };
        if let Some(detail) = bad {
            return Err(changelog_error(detail));
        }
        let restored_entities = entities.len();
        let state = match meta {
            Some(meta) => State::restore(&meta, entities).map_err(|e| changelog_error(e.to_string()))?,
            None => State::new(self.model.clone()),
        };
        let report = RestoreReport {
            changelog_records: read.records,
            entities: restored_entities,
            caught_up: 0,
            took: started.elapsed(),
        };
        Ok((state, report))
    }

    /// Applies the inputs after `state`'s watermark up to `until`
    /// (exclusive), decided and committed before, through the rules (their
    /// commands dropped). Returns how many were read and the entities they
    /// changed or evicted.
    fn catch_up(
        &self,
        state: &mut State,
        id: &ShardId,
        until: i64,
        bound: Duration,
    ) -> Result<(u64, BTreeSet<EntityRef>), RestoreError> {
        let from = state.watermarks().mark(&id.topic, id.partition).map(|m| m.offset + 1);
        let mut changed = BTreeSet::new();
        let caught_up = self.reader.read(&id.topic, id.partition, from, Some(until), bound, |message| {
            // What cannot be decoded was dead-lettered when it was read live.
            if let Ok(input) = decode(&self.topics, message) {
                let decision = decide(state, &self.rules, &input);
                changed.extend(decision.applied.changed.into_iter().chain(decision.applied.evicted));
            }
        })?;
        Ok((caught_up.records, changed))
    }

    /// Applies `input` to its shard (restored first if it is not held;
    /// blocking while it restores) and runs the rules over it; notes what
    /// changed, and adds the shard's checkpoint to `out` when it is due.
    pub fn decide(&mut self, input: &Input, out: &mut Outputs) -> Result<Decision, RestoreError> {
        let p = &input.provenance;
        let id = ShardId { topic: p.topic.clone(), partition: p.partition };
        // Off the async thread only when there is a restore to do.
        if self.shards.get(&id).is_none_or(|s| s.provisional) {
            tokio::task::block_in_place(|| self.load(&p.topic, p.partition, p.offset).map(drop))?;
        }
        let vanished = || RestoreError::Changelog {
            topic: p.topic.clone(),
            partition: p.partition,
            detail: "shard vanished".into(),
        };
        let shard = self.shards.get_mut(&id).ok_or_else(vanished)?;
        let decision = decide(&mut shard.state, &self.rules, input);
        let counter = if decision.applied.is_ignored() { &self.stats.ignored } else { &self.stats.applied };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(why) = &decision.applied.ignored
            && why.reason() == "invalid"
        {
            tracing::warn!(topic = %p.topic, partition = p.partition, offset = p.offset, %why, "input not applied to the state");
        }
        // Approvals are few and a pending one must be found after a restart
        // even if no record follows it: each is checkpointed at once.
        if shard.note(&decision.applied, &self.settings) || p.topic == self.topics.approvals {
            checkpoint(shard, &self.settings.changelog_of(&p.topic), p.partition, out);
        }
        Ok(decision)
    }

    /// The states held of `topic`'s partitions (restored or not).
    pub fn states_of<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a State> + 'a {
        self.shards.iter().filter(move |(id, _)| id.topic == topic).map(|(_, s)| &s.state)
    }

    /// Drops the shards of `partitions` (revoked: another instance owns
    /// them now); readers stop seeing them, including a view kept through
    /// a rewind.
    pub fn drop_partitions(&mut self, partitions: &[(String, i32)]) {
        for (topic, partition) in partitions {
            let id = ShardId { topic: topic.clone(), partition: *partition };
            self.committed.remove(&id);
            self.shards.remove(&id);
            self.hub.remove(&id);
        }
    }

    /// After a rewind: drops every shard that applied inputs not covered
    /// by a committed transaction (their effects were rolled back; the
    /// inputs will be read again, and the shard restored from what is
    /// committed when the first of them comes). Shards whose inputs are all
    /// committed are kept, so a partition that brings no new record is
    /// still served. Without committed offsets (at-least-once), every shard
    /// is dropped.
    ///
    /// Readers keep the dropped shards' last published views until the
    /// restored shards replace them: those views were derived from
    /// committed input records only (the inputs are read committed; what
    /// rolled back is this stage's own transaction), which are read and
    /// applied again, so the views are a prefix of what readers will see
    /// next. Removing them would serve each entity without the shard's
    /// part (a command without its `issued` half) for as long as the
    /// rewind and the restore take.
    pub fn rewound(&mut self) {
        let rolled_back: Vec<ShardId> = self
            .shards
            .iter()
            .filter(|(id, shard)| {
                // A provisional shard holds a committed checkpoint only.
                if shard.provisional {
                    return false;
                }
                let applied_up_to = shard.state.watermarks().mark(&id.topic, id.partition).map_or(-1, |m| m.offset);
                self.committed.get(*id).is_none_or(|next| applied_up_to >= *next)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in rolled_back {
            self.committed.remove(&id);
            self.shards.remove(&id);
        }
    }

    /// Publishes the shards' changes to readers when the publication
    /// interval has passed (`force`: now).
    pub fn publish(&mut self, force: bool) {
        let interval = Duration::from_millis(self.settings.publish_interval_ms);
        if !force && self.last_publish.elapsed() < interval {
            return;
        }
        self.last_publish = Instant::now();
        for (id, shard) in &mut self.shards {
            if shard.unpublished.is_empty() && !shard.entities.is_empty() {
                continue;
            }
            let changes = publish_shard(id, shard);
            let view =
                ShardView { id: id.clone(), watermark: watermark(id, &shard.state), entities: shard.entities.clone() };
            self.hub.publish(Arc::new(view), changes);
        }
    }

    /// `state.publish_interval_ms`.
    pub fn publish_interval_ms(&self) -> u64 {
        self.settings.publish_interval_ms
    }

    /// Updates the gauges (entities, evictions, shards) and logs the
    /// state's status line for `stage`.
    pub fn status(&self, stage: &str) {
        let entities: usize = self.shards.values().map(|s| s.entities.len()).sum();
        let evicted: u64 = self
            .shards
            .values()
            .map(|s| shoal_state::EntityKind::ALL.iter().map(|k| s.state.evictions(*k)).sum::<u64>())
            .sum();
        self.stats.entities.store(entities as u64, Ordering::Relaxed);
        self.stats.evicted.store(evicted, Ordering::Relaxed);
        self.stats.shards.store(self.shards.len() as u64, Ordering::Relaxed);
        self.stats.log_status("state status", stage);
    }
}

/// Writes a shard's checkpoint: its changed entities, then its meta record.
fn checkpoint(shard: &mut Shard, changelog: &str, partition: i32, out: &mut Outputs) {
    tracing::debug!(
        changelog,
        partition,
        entities = shard.dirty.len(),
        inputs = shard.inputs_since_checkpoint,
        "state checkpoint"
    );
    for entity in std::mem::take(&mut shard.dirty) {
        let value = shard.state.entity_value(&entity).and_then(|v| serde_json::to_vec(&v).ok());
        out.record(changelog, partition, changelog_key(&entity).into_bytes(), value);
    }
    if let Ok(meta) = serde_json::to_vec(&shard.state.meta_value()) {
        out.record(changelog, partition, META_KEY.as_bytes().to_vec(), Some(meta));
    }
    shard.inputs_since_checkpoint = 0;
    shard.first_change = None;
}

/// Renders a shard's unpublished entities into its reader map.
fn publish_shard(id: &ShardId, shard: &mut Shard) -> Vec<Change> {
    let mut changes = Vec::with_capacity(shard.unpublished.len());
    for entity in std::mem::take(&mut shard.unpublished) {
        let key = (entity.kind, entity.key.clone());
        let doc = shard.state.entity_value(&entity).zip(shard.state.entity_stamp(&entity)).map(|(state, stamp)| {
            Arc::new(EntityDoc {
                kind: entity.kind,
                key: entity.key.clone(),
                shard: id.clone(),
                updated_at: stamp.at,
                provenance: stamp.provenance,
                state,
            })
        });
        match &doc {
            Some(doc) => shard.entities.insert(key, doc.clone()),
            None => shard.entities.remove(&key),
        };
        changes.push(Change { kind: entity.kind, key: entity.key, doc });
    }
    changes
}

/// The watermark of a shard's partition.
pub fn watermark(id: &ShardId, state: &State) -> Watermark {
    let mark = state.watermarks().mark(&id.topic, id.partition);
    Watermark {
        topic: id.topic.clone(),
        partition: id.partition,
        offset: mark.map_or(-1, |m| m.offset),
        event_time: mark.and_then(|m| m.event_time),
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;
    use shoal_kafka::settings::KafkaSettings;
    use shoal_protocol::messages::{MarketTick, SCHEMA_VERSION};
    use shoal_state::{Provenance, Record};

    use super::*;

    const TICKS: &str = "t.ticks";

    fn shards(hub: &Arc<Hub>) -> Shards {
        let reader = LogReader::new(&KafkaSettings::default(), "shards-test").unwrap();
        let topics = InputTopics {
            ticks: TICKS.into(),
            events: "t.events".into(),
            commands: "t.commands".into(),
            results: "t.results".into(),
            dlq: "t.dlq".into(),
            approvals: "t.approvals".into(),
        };
        let stats = Arc::new(StateStats::default());
        Shards::new(StateSettings::default(), RulesSettings::default(), topics, reader, hub.clone(), stats)
    }

    /// A shard of `partition` that applied a trade of `symbol` at `offset`.
    fn applied_shard(shards: &mut Shards, partition: i32, offset: i64, symbol: &str) {
        let mut state = State::new(shards.model.clone());
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let tick = MarketTick {
            schema_version: SCHEMA_VERSION,
            source: "test".into(),
            symbol: symbol.into(),
            price: Decimal::new(10_050, 2),
            size: Decimal::ONE,
            side: None,
            trade_id: Some(offset.to_string()),
            sequence: None,
            exchange_ts: at,
            received_at: at,
            channel: None,
        };
        let input = Input { provenance: Provenance::new(TICKS, partition, offset), record: Record::Tick(tick) };
        decide(&mut state, &shards.rules, &input);
        let id = ShardId { topic: TICKS.into(), partition };
        shards.shards.insert(id, Shard::new(state, RestoreReport::default(), false));
    }

    fn served(hub: &Hub, symbol: &str) -> usize {
        hub.view().lookup(shoal_state::EntityKind::Symbol, symbol).len()
    }

    #[test]
    fn a_rewind_keeps_serving_the_rolled_back_shards_until_they_are_restored() {
        let hub = Arc::new(Hub::new());
        let mut shards = shards(&hub);
        applied_shard(&mut shards, 0, 7, "AAA");
        applied_shard(&mut shards, 1, 3, "BBB");
        shards.publish(true);
        assert_eq!((served(&hub, "AAA"), served(&hub, "BBB")), (1, 1));

        // Partition 0's inputs are committed, partition 1's are not.
        shards.committed(&[(TICKS.into(), 0, 8), (TICKS.into(), 1, 3)]);
        shards.rewound();
        assert_eq!(shards.ids(), vec![ShardId { topic: TICKS.into(), partition: 0 }], "partition 1 rolled back");
        assert_eq!(served(&hub, "BBB"), 1, "readers keep the rolled-back shard's last view");

        // Revoked: the view kept through the rewind goes too.
        shards.drop_partitions(&[(TICKS.into(), 1)]);
        assert_eq!((served(&hub, "AAA"), served(&hub, "BBB")), (1, 0));
    }
}
