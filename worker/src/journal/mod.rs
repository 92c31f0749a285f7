//! The durable side-effect journal (see `docs/journal.md`).
//!
//! A handler step with an effect outside Kafka (an HTTP call, a model call,
//! an order) is journalled: a `started` record is written and acknowledged
//! before the effect runs, and a `done` record with the outcome as soon as
//! it completes, both before the command's result is produced (so before its
//! transaction commits). When the command runs again (after a crash, a
//! rebalance, an aborted transaction or a retry), a `done` step's outcome is
//! reused instead of repeating the effect.
//!
//! Records go to the journal topic with an idempotent producer outside any
//! transaction, so an aborted result transaction does not take them with it.
//! A command read from commands partition `p` is journalled in journal
//! partition `p % n`; when a command of partition `p` first needs the
//! journal after a rebalance, this worker reads that journal partition to
//! its end into memory, then keeps the copy up to date with its own writes.
//!
//! This module keeps the records and the index; the step logic a handler
//! calls is `handlers::HandlerContext::effect`.

mod fence;
mod kafka;
pub mod record;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use fence::{Fence, TICK, Verdict};
pub use kafka::KafkaStore;
pub use record::{JournalRecord, StepState, digest, idempotency_key, record_key, valid_step};

shoal_telemetry::counters! {
    /// What the journal has seen; read by status lines, metrics and tests.
    pub struct JournalStats {
        /// Effects run (their outcome then recorded).
        effects_run => counter("shoal_journal_steps", "Journalled effect steps, by how they ended", outcome = "run"),
        /// Steps whose recorded outcome was reused instead of running the effect.
        replayed => counter("shoal_journal_steps", "Journalled effect steps, by how they ended", outcome = "replayed"),
        /// Steps started but not recorded that the handler's `reconcile` found done.
        reconciled => counter("shoal_journal_steps", "Journalled effect steps, by how they ended", outcome = "reconciled"),
        /// Steps started but not recorded, run again because `reconcile` did
        /// not find the effect.
        rerun => counter("shoal_journal_steps", "Journalled effect steps, by how they ended", outcome = "rerun"),
        /// Steps whose arguments differ from the journal's on replay.
        nondeterministic => counter(
            "shoal_journal_nondeterminism",
            "Replayed effect steps whose arguments differ from the journal's (the command fails)"
        ),
        /// Journal reads or writes that failed (the step is retried).
        errors => counter("shoal_journal_errors", "Journal reads or writes that failed"),
        /// Effects not run because the worker no longer owns the command's
        /// partition (it was paused past its session timeout, or the
        /// partition was revoked while the command ran).
        fenced => counter("shoal_journal_fenced", "Effect steps not run because the command's partition moved to another worker"),
        /// Journal partitions read into memory.
        partitions_loaded,
    }
}

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Kafka refused or timed out.
    #[error("journal topic {topic}: {what}: {source}")]
    Kafka {
        /// Topic.
        topic: String,
        /// What was being done.
        what: &'static str,
        /// The librdkafka error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The journal partition was not read to its end in time.
    #[error("journal topic {topic} partition {partition} not read to its end within {seconds} s")]
    Incomplete {
        /// Topic.
        topic: String,
        /// Journal partition.
        partition: i32,
        /// The bound.
        seconds: u64,
    },
    /// Anything else (a blocking task failed, an encoding error).
    #[error("journal: {0}")]
    Other(String),
}

/// Where journal records are kept: the journal topic ([`KafkaStore`]), or
/// memory in tests ([`MemoryStore`]).
#[async_trait::async_trait]
pub trait JournalStore: Send + Sync + std::fmt::Debug {
    /// Every record of the journal partition of commands partition
    /// `partition`, oldest first.
    async fn load(&self, partition: i32) -> Result<Vec<JournalRecord>, JournalError>;
    /// Appends `record` to the journal partition of commands partition
    /// `partition`; returns once it is acknowledged by all in-sync replicas.
    async fn append(&self, partition: i32, record: &JournalRecord) -> Result<(), JournalError>;
}

/// The records of one commands partition known to this worker.
#[derive(Debug, Default)]
struct PartitionIndex {
    /// Rebalance count when it was read from the store; `None` before.
    generation: Option<u64>,
    /// Newest record per record key.
    records: HashMap<String, JournalRecord>,
}

/// What the journal asks before an effect runs: is the worker still the
/// owner of the command's partition?
struct Membership {
    fence: Arc<Fence>,
    owns: Box<dyn Fn(i32) -> bool + Send + Sync>,
    revocations: Box<dyn Fn(i32) -> u64 + Send + Sync>,
}

/// The journal of one worker: a store and an in-memory index of the
/// partitions it has read. Cheap to share (`Arc`).
pub struct Journal {
    store: Arc<dyn JournalStore>,
    worker_id: String,
    /// The consumer group's rebalance count: a partition read under an older
    /// count is read again, as another worker may have written to it since.
    generation: Box<dyn Fn() -> u64 + Send + Sync>,
    index: Mutex<HashMap<i32, PartitionIndex>>,
    /// Whether this worker may run an effect for a partition (none: always).
    membership: Option<Membership>,
    /// One load at a time, so concurrent steps of a partition read it once.
    loading: tokio::sync::Mutex<()>,
    /// Counters.
    pub stats: Arc<JournalStats>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("store", &self.store)
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// A journal over `store`, writing `worker_id` into its records;
    /// `generation` reads the consumer group's rebalance count.
    pub fn new(
        store: Arc<dyn JournalStore>,
        worker_id: &str,
        generation: impl Fn() -> u64 + Send + Sync + 'static,
        stats: Arc<JournalStats>,
    ) -> Self {
        Self {
            store,
            worker_id: worker_id.to_string(),
            generation: Box::new(generation),
            index: Mutex::new(HashMap::new()),
            membership: None,
            loading: tokio::sync::Mutex::new(()),
            stats,
        }
    }

    /// A journal in memory only (tests, and handlers run outside a worker):
    /// steps are journalled within the process and lost with it.
    pub fn in_memory(worker_id: &str) -> Self {
        Self::new(Arc::new(MemoryStore::default()), worker_id, || 0, Arc::default())
    }

    /// Fences effects with `fence` (fed by a ticker), `owns`, which says
    /// whether a commands partition is assigned to this worker now, and
    /// `revocations`, how many times it was revoked from or lost by it.
    pub fn with_membership(
        mut self,
        fence: Arc<Fence>,
        owns: impl Fn(i32) -> bool + Send + Sync + 'static,
        revocations: impl Fn(i32) -> u64 + Send + Sync + 'static,
    ) -> Self {
        self.membership = Some(Membership { fence, owns: Box::new(owns), revocations: Box::new(revocations) });
        self
    }

    /// How many times commands partition `partition` was revoked from this
    /// worker (0 without membership): an execution records it when it
    /// starts, and its effects run only while it is unchanged.
    pub fn assignment(&self, partition: i32) -> u64 {
        self.membership.as_ref().map_or(0, |m| (m.revocations)(partition))
    }

    /// Waits, after a pause of this process, until its group membership is
    /// known again (at most a session timeout), then says whether it still
    /// owns commands partition `partition`: `Err` with the reason when it
    /// does not, and the effect must be left to the new owner.
    pub async fn admit(&self, partition: i32, assignment: u64) -> Result<(), String> {
        let Some(membership) = &self.membership else { return Ok(()) };
        let started = std::time::Instant::now();
        while membership.fence.verdict((self.generation)()) == Verdict::Uncertain {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let waited = started.elapsed();
        let revoked_since = (membership.revocations)(partition) != assignment;
        if !revoked_since && (membership.owns)(partition) {
            if waited >= std::time::Duration::from_millis(20) {
                tracing::info!(
                    partition,
                    waited_ms = waited.as_millis() as u64,
                    "membership known again after a pause; still the owner"
                );
            }
            return Ok(());
        }
        self.stats.fenced.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if revoked_since {
            return Err(format!(
                "commands partition {partition} was revoked from this worker since this execution started (its work now belongs to the partition's current assignment); the effect is left to it"
            ));
        }
        Err(format!(
            "commands partition {partition} is no longer assigned to this worker (it was paused or the partition was revoked); the effect is left to its new owner"
        ))
    }

    /// The worker id written into records.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    fn with_index<R>(&self, f: impl FnOnce(&mut HashMap<i32, PartitionIndex>) -> R) -> R {
        // Every update leaves the maps consistent, so a poisoned lock's data
        // is still good.
        f(&mut self.index.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The newest record of `key` in commands partition `partition`,
    /// reading the partition's journal first if this worker has not since
    /// the last rebalance.
    pub async fn lookup(&self, partition: i32, key: &str) -> Result<Option<JournalRecord>, JournalError> {
        let generation = (self.generation)();
        let current = |index: &mut HashMap<i32, PartitionIndex>| {
            index.get(&partition).filter(|p| p.generation == Some(generation)).map(|p| p.records.get(key).cloned())
        };
        if let Some(found) = self.with_index(current) {
            return Ok(found);
        }
        let _loading = self.loading.lock().await;
        if let Some(found) = self.with_index(current) {
            return Ok(found);
        }
        let loaded = self.store.load(partition).await.inspect_err(|_| {
            self.stats.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })?;
        let count = loaded.len();
        let mut records = HashMap::with_capacity(count);
        for record in loaded {
            records.insert(record_key(record.command_id, &record.step), record);
        }
        self.stats.partitions_loaded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(partition, records = count, generation, "journal partition read");
        Ok(self.with_index(|index| {
            // Records this worker wrote while the partition was being read
            // are in `records` already (they were acknowledged before the
            // read reached the end) or newer than it: keep the newer.
            let previous = index.insert(partition, PartitionIndex { generation: Some(generation), records });
            let entry = index.entry(partition).or_default();
            if let Some(previous) = previous {
                for (k, record) in previous.records {
                    if record.worker_id == self.worker_id && record.state == StepState::Done {
                        entry.records.entry(k).or_insert(record);
                    }
                }
            }
            entry.records.get(key).cloned()
        }))
    }

    /// Every record (the newest per step) of commands partition
    /// `partition`, reading the partition's journal first if this worker
    /// has not since the last rebalance. In no particular order.
    pub async fn partition_records(&self, partition: i32) -> Result<Vec<JournalRecord>, JournalError> {
        // A lookup loads the partition for the current generation.
        let _ = self.lookup(partition, "").await?;
        Ok(self.with_index(|index| {
            index.get(&partition).map(|p| p.records.values().cloned().collect()).unwrap_or_default()
        }))
    }

    /// Writes `record` to the store (acknowledged) and then to the index.
    pub async fn write(&self, partition: i32, record: JournalRecord) -> Result<(), JournalError> {
        self.store.append(partition, &record).await.inspect_err(|_| {
            self.stats.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })?;
        let key = record_key(record.command_id, &record.step);
        self.with_index(|index| {
            index.entry(partition).or_default().records.insert(key, record);
        });
        Ok(())
    }
}

/// A [`JournalStore`] in memory, counting appends (tests).
#[derive(Debug, Default)]
pub struct MemoryStore {
    partitions: Mutex<HashMap<i32, Vec<JournalRecord>>>,
}

impl MemoryStore {
    /// Every record appended to `partition`.
    pub fn records(&self, partition: i32) -> Vec<JournalRecord> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner()).get(&partition).cloned().unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl JournalStore for MemoryStore {
    async fn load(&self, partition: i32) -> Result<Vec<JournalRecord>, JournalError> {
        Ok(self.records(partition))
    }

    async fn append(&self, partition: i32, record: &JournalRecord) -> Result<(), JournalError> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner()).entry(partition).or_default().push(record.clone());
        Ok(())
    }
}
