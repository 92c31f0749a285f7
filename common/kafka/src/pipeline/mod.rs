//! The consume → process → produce loop every Kafka-to-Kafka stage runs, in
//! one of two delivery modes, with periodic status lines and a bounded
//! graceful drain on shutdown.
//!
//! Records are started in consumption order; the work of records with the
//! same key runs one after another, and different keys run concurrently (up
//! to `max_concurrency`, with at most `max_in_flight` records unfinished), so
//! one key waiting on retries holds up neither other keys nor the commits of
//! their results. A partition's committed offset only advances past finished
//! records; finished records above it are named in the commit's metadata
//! ([`DoneAbove`]) and skipped by whoever reads the partition next.
//!
//! - **At-least-once** ([`at_least_once`]): a record's outputs are produced
//!   as soon as it finishes; its offset is committed (periodically) once they
//!   are acknowledged.
//! - **Exactly-once** ([`exactly_once`]): finished records' outputs and the
//!   consumed offsets are committed in one Kafka transaction, bounded by
//!   count and age; records keep being processed while a transaction
//!   commits. On an abortable error the transaction is aborted and the input
//!   rewound to the last committed position; on a fatal one the producer is
//!   recreated; a fenced producer (a newer instance with the same
//!   transactional id) stops.

mod at_least_once;
mod chains;
mod exactly_once;
pub mod freeze;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::KafkaSetupError;
use super::consumer::{GroupConsumer, GroupStats, close_bounded};
use super::offsets::{DoneAbove, OffsetTracker, Origin};
use super::outputs::Outputs;
use super::producer::TrackedProducer;
use crate::settings::{DeliveryMode, DeliverySettings, KafkaSettings};
use chains::Chains;

pub use exactly_once::output_digest;

/// The work of one record: a future yielding what to produce for it.
pub type Work = BoxFuture<'static, Outputs>;

/// One stage's handling of consumed records.
pub trait Processor: Send {
    /// Starts one record; called in consumption order. The returned work of
    /// records with the same key runs one after another in that order, other
    /// keys' concurrently. A processor whose state must see every record in
    /// order does its work here and returns a ready future.
    fn start(&mut self, record: OwnedMessage) -> Work;

    /// The input was rewound (records will be read again) or this process
    /// may have lost its partitions: drop what is cached about them.
    fn reset(&mut self) {}

    /// Logs one status line (counters).
    fn status(&self);
}

/// Work that is already done.
pub fn ready(outputs: Outputs) -> Work {
    Box::pin(std::future::ready(outputs))
}

/// Timing and bounds of the loop.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    /// Stage name for logs.
    pub name: &'static str,
    /// How often completed offsets are committed (at-least-once).
    pub commit_interval: Duration,
    /// How often a status line is logged; `None` for never.
    pub status_interval: Option<Duration>,
    /// Bound on the whole drain after shutdown is requested.
    pub shutdown_timeout: Duration,
    /// Keys whose work runs at the same time.
    pub max_concurrency: usize,
    /// Records started but not finished; reading pauses at this bound. It
    /// also bounds the commit metadata (see [`MAX_IN_FLIGHT`]).
    pub max_in_flight: usize,
    /// Consumer session timeout: a pause this long may have cost the
    /// partitions (at-least-once drops what it had in hand).
    pub session_timeout: Duration,
}

/// Largest `max_in_flight`: the commit metadata lists unfinished records and
/// must stay under Kafka's default 4 KiB `offset.metadata.max.bytes`.
pub const MAX_IN_FLIGHT: usize = 512;

/// How outputs are delivered.
#[derive(Debug)]
pub enum Delivery {
    /// Tracked, acknowledged outputs; offsets committed after them.
    AtLeastOnce(TrackedProducer),
    /// Kafka transactions.
    ExactlyOnce(TxSettings),
}

/// What the exactly-once loop needs to (re)create its producer and size its
/// transactions.
#[derive(Debug, Clone)]
pub struct TxSettings {
    /// Cluster.
    pub kafka: KafkaSettings,
    /// Client id.
    pub client_id: String,
    /// Stable transactional id of this stage instance.
    pub transactional_id: String,
    /// Most records per transaction.
    pub max_records: usize,
    /// Longest a transaction collects records.
    pub max_age: Duration,
    /// Bound on each transactional call.
    pub call_timeout: Duration,
    /// Transaction history file, if any.
    pub history: Option<std::path::PathBuf>,
}

/// A stage's consumer and delivery, ready for [`run`].
pub struct Connected {
    /// Group member on the stage's input topics.
    pub consumer: GroupConsumer,
    /// Its group counters.
    pub group: Arc<GroupStats>,
    /// How its outputs are delivered.
    pub delivery: Delivery,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("group", &self.group)
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

/// Creates the producer side for `delivery.mode` and joins `group_id` on
/// `topics`. The transactional id is `<prefix>-<stage>-<instance>`, stable
/// across restarts of the same instance.
pub fn connect(
    kafka: &KafkaSettings,
    delivery: &DeliverySettings,
    stage: &str,
    instance: &str,
    group_id: &str,
    topics: &[&str],
    flush_timeout: Duration,
) -> Result<Connected, KafkaSetupError> {
    let client_id = format!("{instance}-{stage}");
    let (delivery, tracked) = match delivery.mode {
        DeliveryMode::AtLeastOnce => {
            let producer = TrackedProducer::new(kafka, &client_id, Arc::new(OffsetTracker::new()))?;
            (Delivery::AtLeastOnce(producer.clone()), Some(producer))
        }
        DeliveryMode::ExactlyOnce => {
            let tx = TxSettings {
                kafka: kafka.clone(),
                client_id: client_id.clone(),
                transactional_id: delivery.transactional_id(stage, instance),
                max_records: delivery.transaction_max_records,
                max_age: Duration::from_millis(delivery.transaction_max_ms),
                call_timeout: Duration::from_millis(delivery.transaction_call_timeout_ms),
                history: (!delivery.history_path.is_empty()).then(|| delivery.history_path.clone().into()),
            };
            (Delivery::ExactlyOnce(tx), None)
        }
    };
    let (consumer, group) = super::consumer::subscribe(kafka, group_id, &client_id, topics, tracked, flush_timeout)?;
    Ok(Connected { consumer, group, delivery })
}

/// Pipeline counters.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Records consumed and processed.
    pub records: AtomicU64,
    /// Outputs produced (committed, in exactly-once mode).
    pub outputs: AtomicU64,
    /// Outputs that could not be enqueued (at-least-once).
    pub produce_errors: AtomicU64,
    /// Transactions committed.
    pub transactions: AtomicU64,
    /// Transactions aborted (input rewound).
    pub aborts: AtomicU64,
    /// Transactional producers recreated after a fatal error.
    pub producer_restarts: AtomicU64,
    /// Records skipped because the commit metadata says an earlier owner
    /// finished them.
    pub skipped_done: AtomicU64,
    /// Finished work dropped because its partition moved or the input was
    /// rewound before it could be delivered.
    pub discarded: AtomicU64,
    /// Times the loop found records counted unfinished with no work left
    /// for them, and rewound (a safety net for a bug not yet found).
    pub stalls: AtomicU64,
    /// Times partitions were read again because outputs could not be
    /// delivered (at-least-once).
    pub redeliveries: AtomicU64,
    /// Pauses of this process long enough to have lost the partitions
    /// (at-least-once drops its work in hand and rewinds).
    pub freezes: AtomicU64,
    /// Records read and not finished (at-least-once: not acknowledged).
    pub in_flight: AtomicU64,
    /// The exactly-once producer is initialised and usable (false while it
    /// is created or recreated, and after it was fenced).
    pub producer_ready: AtomicBool,
}

/// How the drain went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Every output was acknowledged (or the last transaction committed).
    pub flushed: bool,
    /// Completed offsets were committed.
    pub committed: bool,
    /// The consumer left the group within the bound.
    pub closed: bool,
}

impl DrainReport {
    /// Whether every step finished.
    pub fn clean(&self) -> bool {
        self.flushed && self.committed && self.closed
    }
}

/// Runs the loop until `shutdown` is cancelled (or, exactly-once, the
/// producer is fenced), then drains within `settings.shutdown_timeout`.
pub async fn run<P: Processor>(
    consumer: GroupConsumer,
    group: Arc<GroupStats>,
    delivery: Delivery,
    processor: &mut P,
    shutdown: CancellationToken,
    settings: &LoopSettings,
    stats: Arc<PipelineStats>,
) -> DrainReport {
    register_observability(settings.name, &group, &delivery, &stats);
    let status_tick = interval(settings.status_interval.unwrap_or(Duration::from_secs(u64::from(u32::MAX))));
    let mut ctx = LoopContext { consumer: &consumer, group: &group, settings, stats: &stats, status_tick };
    let (flushed, committed) = match delivery {
        Delivery::AtLeastOnce(producer) => at_least_once::run(&mut ctx, producer, processor, &shutdown).await,
        Delivery::ExactlyOnce(tx) => exactly_once::run(&mut ctx, &tx, processor, &shutdown).await,
    };
    let closed = close_bounded(consumer, settings.shutdown_timeout).await;
    processor.status();
    log_status(settings.name, &stats);
    let report = DrainReport { flushed, committed, closed };
    tracing::info!(stage = settings.name, ?report, "stage stopped");
    report
}

/// Metrics of the stage, and its readiness: connected to Kafka, partitions
/// assigned, producer usable.
fn register_observability(
    stage: &'static str,
    group: &Arc<GroupStats>,
    delivery: &Delivery,
    stats: &Arc<PipelineStats>,
) {
    crate::stage_metrics::register_stage(stage, stats, group);
    let health = shoal_telemetry::health::health();
    let g = group.clone();
    health.register(format!("{stage}.kafka"), move || g.client.connected());
    let g = group.clone();
    health.register(format!("{stage}.partitions"), move || {
        if g.assigned.load(Ordering::Relaxed) > 0 {
            Ok(())
        } else {
            Err(format!(
                "no partitions assigned in group {} (not joined yet, or more members than partitions)",
                g.group_id
            ))
        }
    });
    match delivery {
        Delivery::AtLeastOnce(producer) => {
            let producer = producer.health().clone();
            health.register(format!("{stage}.producer"), move || producer.connected());
        }
        Delivery::ExactlyOnce(_) => {
            let s = stats.clone();
            health.register(format!("{stage}.producer"), move || {
                if s.producer_ready.load(Ordering::Relaxed) {
                    Ok(())
                } else {
                    Err("transactional producer not initialised (starting, recreating after an error, or fenced)"
                        .into())
                }
            });
        }
    }
}

/// What both loops share.
struct LoopContext<'a> {
    consumer: &'a GroupConsumer,
    group: &'a GroupStats,
    settings: &'a LoopSettings,
    stats: &'a PipelineStats,
    status_tick: tokio::time::Interval,
}

impl LoopContext<'_> {
    fn status<P: Processor>(&self, processor: &P, in_flight: &InFlight) {
        processor.status();
        log_status(self.settings.name, self.stats);
        tracing::debug!(
            stage = self.settings.name,
            running = in_flight.running.len(),
            queued = in_flight.chains.queued(),
            "work in flight"
        );
    }
}

fn interval(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

fn log_status(stage: &str, s: &PipelineStats) {
    tracing::info!(
        stage,
        records = s.records.load(Ordering::Relaxed),
        outputs = s.outputs.load(Ordering::Relaxed),
        produce_errors = s.produce_errors.load(Ordering::Relaxed),
        transactions = s.transactions.load(Ordering::Relaxed),
        aborts = s.aborts.load(Ordering::Relaxed),
        producer_restarts = s.producer_restarts.load(Ordering::Relaxed),
        skipped_done = s.skipped_done.load(Ordering::Relaxed),
        discarded = s.discarded.load(Ordering::Relaxed),
        freezes = s.freezes.load(Ordering::Relaxed),
        redeliveries = s.redeliveries.load(Ordering::Relaxed),
        stalls = s.stalls.load(Ordering::Relaxed),
        "pipeline status"
    );
}

/// Backs off a little after a consumer error so a persistent one does not
/// spin; librdkafka recovers from per-fetch errors by itself.
async fn consumer_error(stage: &str, error: rdkafka::error::KafkaError, consecutive: &mut u32) {
    *consecutive = consecutive.saturating_add(1);
    tracing::warn!(stage, %error, consecutive_errors = *consecutive, "consumer error");
    tokio::time::sleep(Duration::from_millis(50 * u64::from((*consecutive).min(20)))).await;
}

type PartitionKey = (String, i32);
/// Topic, partition, the partition's epoch when the record was read, key.
type ChainKey = (String, i32, u64, Option<Vec<u8>>);

struct Job {
    origin: Origin,
    epoch: u64,
    work: Work,
}

struct Finished {
    chain: ChainKey,
    origin: Origin,
    epoch: u64,
    outputs: Outputs,
}

/// What became of a consumed record.
enum Dispatched {
    /// Its work started or waits behind its key.
    Started,
    /// An earlier owner finished it: nothing to do but pass its offset.
    AlreadyDone(Origin),
    /// Its partition's commit metadata could not be read: the partition was
    /// rewound to this record, to try again shortly.
    Retry,
}

/// Records between consumption and completion: per-key chains of work, the
/// work running now, and per-partition epochs. A partition's epoch changes
/// when it is revoked or the input is rewound; work finished under an older
/// epoch is discarded, since the record will be (or was) read again.
struct InFlight {
    chains: Chains<ChainKey, Job>,
    running: FuturesUnordered<BoxFuture<'static, Finished>>,
    epochs: HashMap<PartitionKey, u64>,
    /// Committed position and metadata of partitions read since they were
    /// assigned.
    progress: HashMap<PartitionKey, Committed>,
    tracker: Arc<OffsetTracker>,
}

impl InFlight {
    fn new(max_concurrency: usize, tracker: Arc<OffsetTracker>) -> Self {
        Self {
            chains: Chains::new(max_concurrency),
            running: FuturesUnordered::new(),
            epochs: HashMap::new(),
            progress: HashMap::new(),
            tracker,
        }
    }

    /// Records started and not finished (or, at-least-once, not yet
    /// acknowledged).
    fn unfinished(&self) -> usize {
        self.tracker.in_flight()
    }

    /// Records whose work is running or waiting behind their key.
    fn processing(&self) -> usize {
        self.running.len() + self.chains.queued()
    }

    fn idle(&self) -> bool {
        self.running.is_empty() && self.chains.queued() == 0
    }

    fn dispatch<P: Processor>(
        &mut self,
        consumer: &GroupConsumer,
        processor: &mut P,
        record: OwnedMessage,
        stage: &str,
    ) -> Dispatched {
        let partition: PartitionKey = (record.topic().to_string(), record.partition());
        let origin = Origin { topic: partition.0.clone(), partition: partition.1, offset: record.offset() };
        if !self.progress.contains_key(&partition) && !self.load_progress(consumer, &partition, stage) {
            let seek = tokio::task::block_in_place(|| {
                consumer.seek(&origin.topic, origin.partition, Offset::Offset(origin.offset), Duration::from_secs(10))
            });
            if let Err(error) = seek {
                tracing::warn!(stage, ?origin, %error, "cannot rewind the partition to retry reading its commit metadata");
            }
            return Dispatched::Retry;
        }
        self.tracker.begin(&origin);
        if self.progress.get(&partition).is_some_and(|c| c.is_done(origin.offset)) {
            return Dispatched::AlreadyDone(origin);
        }
        let epoch = *self.epochs.entry(partition.clone()).or_default();
        let chain: ChainKey = (partition.0, partition.1, epoch, record.key().map(<[u8]>::to_vec));
        let work = processor.start(record);
        if let Some(job) = self.chains.push(chain.clone(), Job { origin, epoch, work }) {
            self.launch(chain, job);
        }
        Dispatched::Started
    }

    fn launch(&mut self, chain: ChainKey, job: Job) {
        let Job { origin, epoch, work } = job;
        self.running.push(Box::pin(async move { Finished { chain, origin, epoch, outputs: work.await } }));
    }

    /// Starts what may start now that `done` finished; returns its record
    /// and outputs unless they belong to an older epoch.
    fn finish(&mut self, done: Finished, stats: &PipelineStats) -> Option<(Origin, Outputs)> {
        for (chain, job) in self.chains.finished(&done.chain) {
            self.launch(chain, job);
        }
        let partition = (done.origin.topic.clone(), done.origin.partition);
        if self.epochs.get(&partition).copied().unwrap_or_default() == done.epoch {
            Some((done.origin, done.outputs))
        } else {
            stats.discarded.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Reads the committed offsets and metadata of `partition` and of every
    /// other assigned partition not read yet (one round trip per assignment).
    fn load_progress(&mut self, consumer: &GroupConsumer, partition: &PartitionKey, stage: &str) -> bool {
        let mut wanted = TopicPartitionList::new();
        wanted.add_partition(&partition.0, partition.1);
        if let Ok(assigned) = consumer.assignment() {
            for e in assigned.elements() {
                let key = (e.topic().to_string(), e.partition());
                if key != *partition && !self.progress.contains_key(&key) {
                    wanted.add_partition(&key.0, key.1);
                }
            }
        }
        let fetched = tokio::task::block_in_place(|| consumer.committed_offsets(wanted, Duration::from_secs(10)));
        match fetched {
            Ok(list) => {
                for e in list.elements() {
                    let committed = match e.offset() {
                        Offset::Offset(offset) => Committed { offset, above: DoneAbove::decode(offset, e.metadata()) },
                        _ => Committed { offset: 0, above: None },
                    };
                    self.progress.insert((e.topic().to_string(), e.partition()), committed);
                }
                self.progress.contains_key(partition)
            }
            Err(error) => {
                tracing::warn!(stage, topic = %partition.0, partition = partition.1, %error, "cannot read committed offsets");
                false
            }
        }
    }

    /// Forgets revoked partitions: their waiting work is dropped and their
    /// running work discarded when it finishes.
    fn revoke(&mut self, partitions: &[PartitionKey]) {
        if partitions.is_empty() {
            return;
        }
        for p in partitions {
            *self.epochs.entry(p.clone()).or_default() += 1;
            self.progress.remove(p);
        }
        self.chains.retain(|(topic, partition, _, _), _| !partitions.iter().any(|(t, p)| t == topic && p == partition));
        self.tracker.forget(partitions);
    }

    /// Forgets everything, before the input is rewound.
    fn reset(&mut self) {
        for epoch in self.epochs.values_mut() {
            *epoch += 1;
        }
        self.chains.clear();
        self.progress.clear();
        self.tracker.clear();
    }
}

/// A partition's committed position as read when it was assigned.
#[derive(Debug)]
struct Committed {
    offset: i64,
    above: Option<DoneAbove>,
}

impl Committed {
    /// Whether a record is already done: below the committed position (read
    /// again only if a commit landed after the consumer's position was
    /// fetched), or finished above it per the metadata.
    fn is_done(&self, offset: i64) -> bool {
        offset < self.offset || self.above.as_ref().is_some_and(|a| a.is_done(offset))
    }
}

/// Seeks `partitions` back to their committed offsets.
fn rewind_partitions(consumer: &GroupConsumer, partitions: &[PartitionKey], stage: &str) {
    let mut wanted = TopicPartitionList::new();
    for (topic, partition) in partitions {
        wanted.add_partition(topic, *partition);
    }
    let committed = tokio::task::block_in_place(|| consumer.committed_offsets(wanted, Duration::from_secs(10)));
    match committed {
        Ok(list) => seek_all(consumer, &list, stage),
        Err(error) => {
            tracing::warn!(stage, %error, "cannot read committed offsets to rewind");
            false
        }
    };
}

/// Seeks every assigned partition back to its committed offset. Returns
/// whether it could; a partition revoked meanwhile is re-read by its new
/// owner anyway.
fn rewind_to_committed(consumer: &GroupConsumer, stage: &str) -> bool {
    let committed = tokio::task::block_in_place(|| consumer.committed(Duration::from_secs(10)));
    let committed = match committed {
        Ok(list) => list,
        Err(error) => {
            tracing::warn!(stage, %error, "cannot read committed offsets to rewind");
            return false;
        }
    };
    seek_all(consumer, &committed, stage)
}

fn seek_all(consumer: &GroupConsumer, committed: &TopicPartitionList, stage: &str) -> bool {
    let mut all = true;
    for e in committed.elements() {
        let to = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            // Nothing committed yet: where `auto.offset.reset` starts.
            _ => Offset::Beginning,
        };
        let seek = tokio::task::block_in_place(|| consumer.seek(e.topic(), e.partition(), to, Duration::from_secs(10)));
        if let Err(error) = seek {
            tracing::warn!(stage, topic = e.topic(), partition = e.partition(), %error, "cannot rewind partition");
            all = false;
        }
    }
    all
}
