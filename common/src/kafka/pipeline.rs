//! The consume → process → produce loop every Kafka-to-Kafka stage runs, in
//! one of two delivery modes, with periodic status lines and a bounded
//! graceful drain on shutdown.
//!
//! - **At-least-once**: each output is produced as soon as its record is
//!   processed; a record's offset is committed (periodically) once all its
//!   outputs are acknowledged.
//! - **Exactly-once**: records are processed into a batch of outputs; the
//!   batch and the consumed offsets are committed in one Kafka transaction
//!   (bounded by count and age, so throughput survives). On an abortable
//!   error the transaction is aborted and the input rewound to the last
//!   committed position; on a fatal one the producer is recreated; a fenced
//!   producer (a newer instance with the same transactional id) stops.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt as _;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::KafkaSetupError;
use super::consumer::{GroupConsumer, GroupStats, close_bounded, commit_done};
use super::offsets::OffsetTracker;
use super::offsets::Origin;
use super::outputs::{Output, Outputs};
use super::producer::TrackedProducer;
use super::transactions::{TransactionalProducer, TxError};
use crate::settings::{DeliveryMode, DeliverySettings, KafkaSettings};

/// One stage's handling of consumed records.
pub trait Processor: Send {
    /// Handles one record, describing what to produce in `out`.
    fn process(&mut self, message: &OwnedMessage, out: &mut Outputs) -> impl Future<Output = ()> + Send;

    /// Handles records in consumption order and returns each one's outputs,
    /// in the same order. One at a time by default; a processor may overlap
    /// independent records (the worker runs different keys concurrently).
    fn process_batch(&mut self, records: &[OwnedMessage]) -> impl Future<Output = Vec<Outputs>> + Send {
        async move {
            let mut all = Vec::with_capacity(records.len());
            for record in records {
                let mut out = Outputs::new();
                self.process(record, &mut out).await;
                all.push(out);
            }
            all
        }
    }

    /// Logs one status line (counters).
    fn status(&self);
}

/// Timing of the loop.
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
    /// Most records processed together (at-least-once; exactly-once uses
    /// the transaction bound).
    pub max_batch: usize,
}

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
    let mut status_tick = interval(settings.status_interval.unwrap_or(Duration::from_secs(u64::from(u32::MAX))));
    let (flushed, committed) = match delivery {
        Delivery::AtLeastOnce(producer) => {
            at_least_once(&consumer, producer, processor, &shutdown, settings, &stats, &mut status_tick).await
        }
        Delivery::ExactlyOnce(tx) => {
            exactly_once(&consumer, &group, &tx, processor, &shutdown, settings, &stats, &mut status_tick).await
        }
    };
    let closed = close_bounded(consumer, settings.shutdown_timeout).await;
    processor.status();
    log_status(settings.name, &stats);
    let report = DrainReport { flushed, committed, closed };
    tracing::info!(stage = settings.name, ?report, "stage stopped");
    report
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
        "pipeline status"
    );
}

fn origin_of<M: Message>(message: &M) -> Origin {
    Origin { topic: message.topic().to_string(), partition: message.partition(), offset: message.offset() }
}

/// Backs off a little after a consumer error so a persistent one does not
/// spin; librdkafka recovers from per-fetch errors by itself.
async fn consumer_error(stage: &str, error: rdkafka::error::KafkaError, consecutive: &mut u32) {
    *consecutive = consecutive.saturating_add(1);
    tracing::warn!(stage, %error, consecutive_errors = *consecutive, "consumer error");
    tokio::time::sleep(Duration::from_millis(50 * u64::from((*consecutive).min(20)))).await;
}

async fn at_least_once<P: Processor>(
    consumer: &GroupConsumer,
    producer: TrackedProducer,
    processor: &mut P,
    shutdown: &CancellationToken,
    settings: &LoopSettings,
    stats: &PipelineStats,
    status_tick: &mut tokio::time::Interval,
) -> (bool, bool) {
    let tracker = producer.tracker().clone();
    let mut commit_tick = interval(settings.commit_interval);
    let mut consecutive_errors = 0u32;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = commit_tick.tick() => {
                if let Err(error) = commit_done(consumer, &tracker, CommitMode::Async) {
                    tracing::warn!(stage = settings.name, %error, "periodic commit failed; will retry");
                }
            }
            _ = status_tick.tick() => {
                processor.status();
                log_status(settings.name, stats);
            }
            received = consumer.recv() => match received {
                Ok(first) => {
                    consecutive_errors = 0;
                    // Take whatever else is already fetched, so independent
                    // records can be processed together.
                    let mut records = vec![first.detach()];
                    while records.len() < settings.max_batch {
                        match consumer.recv().now_or_never() {
                            Some(Ok(message)) => records.push(message.detach()),
                            _ => break,
                        }
                    }
                    let origins: Vec<Origin> = records.iter().map(origin_of).collect();
                    for origin in &origins {
                        tracker.begin(origin);
                    }
                    let outputs = processor.process_batch(&records).await;
                    stats.records.fetch_add(records.len() as u64, Ordering::Relaxed);
                    for (origin, mut out) in origins.iter().zip(outputs) {
                        for output in out.take() {
                            match producer.send(output, Some(origin.clone())).await {
                                Ok(()) => {
                                    stats.outputs.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(error) => {
                                    stats.produce_errors.fetch_add(1, Ordering::Relaxed);
                                    tracing::error!(stage = settings.name, %error, ?origin, "cannot enqueue output; the record will be processed again");
                                }
                            }
                        }
                        tracker.complete(origin);
                    }
                }
                Err(error) => consumer_error(settings.name, error, &mut consecutive_errors).await,
            },
        }
    }

    tracing::info!(stage = settings.name, in_flight = tracker.in_flight(), "draining: no new records will be read");
    let deadline = Instant::now() + settings.shutdown_timeout;
    let flushed = match producer.flush(deadline.saturating_duration_since(Instant::now())).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(stage = settings.name, %error, "flush did not complete; unacknowledged records will be processed again");
            false
        }
    };
    let committed = match tokio::task::block_in_place(|| commit_done(consumer, &tracker, CommitMode::Sync)) {
        Ok(count) => {
            tracing::info!(stage = settings.name, partitions = count, "committed final offsets");
            true
        }
        Err(error) => {
            tracing::warn!(stage = settings.name, %error, "final commit failed");
            false
        }
    };
    (flushed, committed)
}

/// Drops records of partitions this member no longer owns: the new owner
/// reads them again from the last committed offset.
fn drop_revoked(pending: &mut Vec<OwnedMessage>, revoked: &[(String, i32)]) {
    if !revoked.is_empty() {
        pending.retain(|m| !revoked.iter().any(|(t, p)| t == m.topic() && *p == m.partition()));
    }
}

/// Records processed but not yet committed, grouped by partition.
#[derive(Debug, Default)]
struct Batch {
    /// Per partition: first offset in the batch, next offset to read, outputs.
    partitions: HashMap<(String, i32), (i64, i64, Vec<Output>)>,
    records: usize,
}

impl Batch {
    fn add(&mut self, origin: &Origin, outputs: Vec<Output>) {
        let entry = self
            .partitions
            .entry((origin.topic.clone(), origin.partition))
            .or_insert_with(|| (origin.offset, origin.offset, Vec::new()));
        entry.1 = origin.offset + 1;
        entry.2.extend(outputs);
        self.records += 1;
    }

    /// Drops the records of partitions this member no longer owns: the new
    /// owner reads them again from the last committed offset.
    fn drop_partitions(&mut self, revoked: &[(String, i32)]) {
        for key in revoked {
            self.partitions.remove(key);
        }
    }

    fn offsets(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), (_, next, _)) in &self.partitions {
            // Adding to a fresh list cannot fail for a valid offset.
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
        }
        tpl
    }

    fn take_outputs(&mut self) -> Vec<Output> {
        self.partitions.values_mut().flat_map(|(_, _, outputs)| std::mem::take(outputs)).collect()
    }
}

/// What the loop does after a commit attempt.
enum AfterCommit {
    /// Committed, or aborted and rewound: go on with the same producer.
    Continue,
    /// The producer is unusable (or the rewind failed): create a new one,
    /// which also aborts anything left open, and go on from the group's
    /// committed offsets.
    RecreateProducer,
    /// Another instance owns the transactional id: stop.
    Fenced,
}

async fn create_producer(tx: &TxSettings) -> Result<Arc<TransactionalProducer>, TxError> {
    let tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        TransactionalProducer::create_blocking(&tx.kafka, &tx.client_id, &tx.transactional_id, tx.call_timeout)
    })
    .await
    .unwrap_or_else(|join| {
        Err(TxError::Fatal(rdkafka::error::KafkaError::Canceled)).inspect_err(|_| {
            tracing::error!(%join, "transactional producer set-up task failed");
        })
    })
    .map(Arc::new)
}

#[allow(clippy::too_many_arguments)]
async fn exactly_once<P: Processor>(
    consumer: &GroupConsumer,
    group: &GroupStats,
    tx: &TxSettings,
    processor: &mut P,
    shutdown: &CancellationToken,
    settings: &LoopSettings,
    stats: &PipelineStats,
    status_tick: &mut tokio::time::Interval,
) -> (bool, bool) {
    let mut producer = match create_producer(tx).await {
        Ok(p) => p,
        Err(error) => {
            tracing::error!(stage = settings.name, %error, transactional_id = %tx.transactional_id, "cannot create the transactional producer");
            shutdown.cancel();
            return (false, false);
        }
    };
    let mut consecutive_errors = 0u32;
    // Records read for the next transaction, processed when it is due.
    let mut pending: Vec<OwnedMessage> = Vec::new();
    let mut opened: Option<Instant> = None;
    let mut stopping = false;
    let far = Duration::from_secs(3600);
    loop {
        let batch_due = opened.map_or(Instant::now() + far, |t| t + tx.max_age);
        if pending.len() < tx.max_records && !stopping {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => stopping = true,
                _ = status_tick.tick() => {
                    processor.status();
                    log_status(settings.name, stats);
                    continue;
                }
                () = tokio::time::sleep_until(batch_due), if !pending.is_empty() => {}
                received = consumer.recv() => {
                    match received {
                        Ok(message) => {
                            consecutive_errors = 0;
                            pending.push(message.detach());
                            opened.get_or_insert_with(Instant::now);
                        }
                        Err(error) => consumer_error(settings.name, error, &mut consecutive_errors).await,
                    }
                    drop_revoked(&mut pending, &group.take_revoked());
                    if pending.len() < tx.max_records && Instant::now() < batch_due {
                        continue;
                    }
                }
            }
        }
        drop_revoked(&mut pending, &group.take_revoked());
        let records = std::mem::take(&mut pending);
        opened = None;
        let mut batch = Batch::default();
        if !records.is_empty() {
            let outputs = processor.process_batch(&records).await;
            stats.records.fetch_add(records.len() as u64, Ordering::Relaxed);
            for (record, mut out) in records.iter().zip(outputs) {
                batch.add(&origin_of(record), out.take());
            }
            // Revocations that happened while processing.
            batch.drop_partitions(&group.take_revoked());
        }
        let committed_before = stats.transactions.load(Ordering::Relaxed);
        let nothing_to_commit = batch.partitions.is_empty();
        if !nothing_to_commit {
            match commit_batch(consumer, &producer, &mut batch, settings, stats, tx.history.as_deref()).await {
                AfterCommit::Continue => {}
                AfterCommit::RecreateProducer => {
                    // Best effort: a partition that cannot be rewound was
                    // revoked and is re-read by its new owner.
                    rewind(consumer, &batch, settings.name);
                    match create_producer(tx).await {
                        Ok(p) => {
                            stats.producer_restarts.fetch_add(1, Ordering::Relaxed);
                            producer = p;
                        }
                        Err(TxError::Fenced(error)) => {
                            tracing::error!(stage = settings.name, %error, "fenced while recreating the producer; stopping");
                            shutdown.cancel();
                            return (false, false);
                        }
                        Err(error) => {
                            tracing::error!(stage = settings.name, %error, "cannot recreate the transactional producer; stopping");
                            shutdown.cancel();
                            return (false, false);
                        }
                    }
                }
                AfterCommit::Fenced => {
                    shutdown.cancel();
                    return (false, false);
                }
            }
        }
        if stopping {
            // An aborted last batch was rewound: the next owner redoes it,
            // but this drain did not finish its work.
            let committed = nothing_to_commit || stats.transactions.load(Ordering::Relaxed) > committed_before;
            tracing::info!(stage = settings.name, last_batch_committed = committed, "drained");
            return (committed, committed);
        }
    }
}

/// Commits the batch; on an abortable error aborts it and rewinds.
async fn commit_batch(
    consumer: &GroupConsumer,
    producer: &Arc<TransactionalProducer>,
    batch: &mut Batch,
    settings: &LoopSettings,
    stats: &PipelineStats,
    history: Option<&std::path::Path>,
) -> AfterCommit {
    let Some(group_metadata) = consumer.group_metadata() else {
        tracing::warn!(stage = settings.name, "no consumer group metadata yet; retrying the batch");
        return if rewind(consumer, batch, settings.name) {
            AfterCommit::Continue
        } else {
            AfterCommit::RecreateProducer
        };
    };
    let offsets = batch.offsets();
    let outputs = batch.take_outputs();
    let count = outputs.len() as u64;
    let records = batch.records;
    let digests: Option<Vec<(String, String)>> =
        history.map(|_| outputs.iter().map(|o| (o.topic.clone(), output_digest(&o.payload))).collect());
    let committing = producer.clone();
    let history = history.map(std::path::Path::to_path_buf);
    // The history append is file I/O: it runs on the blocking thread too.
    let result = tokio::task::spawn_blocking(move || {
        let result = committing.commit_batch_blocking(outputs, &offsets, &group_metadata);
        if let (Some(path), Some(digests)) = (history, digests) {
            let event = match &result {
                Ok(()) => "commit",
                Err(TxError::Abortable(_)) => "abort",
                // A fatal or fenced error leaves the outcome unknown.
                Err(_) => "unknown",
            };
            record_history(&path, committing.transactional_id(), event, records, &digests);
        }
        result
    })
    .await
    .unwrap_or(Err(TxError::Fatal(rdkafka::error::KafkaError::Canceled)));
    match result {
        Ok(()) => {
            stats.transactions.fetch_add(1, Ordering::Relaxed);
            stats.outputs.fetch_add(count, Ordering::Relaxed);
            tracing::debug!(stage = settings.name, records, outputs = count, "transaction committed");
            AfterCommit::Continue
        }
        Err(TxError::Abortable(error)) => {
            stats.aborts.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(stage = settings.name, %error, records, "aborting transaction; rewinding to the last committed offsets");
            let aborting = producer.clone();
            let aborted = tokio::task::spawn_blocking(move || aborting.abort_blocking())
                .await
                .unwrap_or(Err(TxError::Fatal(rdkafka::error::KafkaError::Canceled)));
            match aborted {
                Ok(()) if rewind(consumer, batch, settings.name) => AfterCommit::Continue,
                Ok(()) => AfterCommit::RecreateProducer,
                Err(TxError::Fenced(error)) => {
                    tracing::error!(stage = settings.name, %error, "fenced: another instance owns this transactional id; stopping");
                    AfterCommit::Fenced
                }
                Err(error) => {
                    tracing::error!(stage = settings.name, %error, "abort failed; recreating the producer");
                    AfterCommit::RecreateProducer
                }
            }
        }
        Err(TxError::Fenced(error)) => {
            tracing::error!(stage = settings.name, %error, "fenced: another instance owns this transactional id; stopping");
            AfterCommit::Fenced
        }
        Err(TxError::Fatal(error)) => {
            stats.aborts.fetch_add(1, Ordering::Relaxed);
            tracing::error!(stage = settings.name, %error, "fatal transactional error; recreating the producer and rewinding");
            AfterCommit::RecreateProducer
        }
    }
}

/// Digest identifying one output record's body across processes (FNV-1a,
/// 64 bit: stable, unlike the standard library's hasher).
pub fn output_digest(payload: &[u8]) -> String {
    let hash =
        payload.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

/// Appends one transaction's outcome to the history file.
fn record_history(
    path: &std::path::Path,
    transactional_id: &str,
    event: &str,
    records: usize,
    digests: &[(String, String)],
) {
    use std::io::Write as _;
    let line = serde_json::json!({
        "ts": chrono::Utc::now(),
        "transactional_id": transactional_id,
        "event": event,
        "records": records,
        "outputs": digests,
    });
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(error) = written {
        tracing::warn!(%error, path = %path.display(), "cannot append to the transaction history");
    }
}

/// Seeks every partition of the batch back to its first record, so the
/// records of an aborted transaction are read and processed again.
fn rewind(consumer: &GroupConsumer, batch: &Batch, stage: &str) -> bool {
    let mut all = true;
    for ((topic, partition), (first, _, _)) in &batch.partitions {
        let seek = tokio::task::block_in_place(|| {
            consumer.seek(topic, *partition, Offset::Offset(*first), Duration::from_secs(10))
        });
        if let Err(error) = seek {
            // A partition revoked meanwhile is re-read by its new owner.
            tracing::warn!(stage, topic, partition, %error, "cannot rewind partition");
            all = false;
        }
    }
    all
}
