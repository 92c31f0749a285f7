//! Exactly-once delivery: finished records' outputs and the consumed offsets
//! (with the metadata naming finished records above them) are committed in
//! one Kafka transaction. One transaction commits at a time, on a blocking
//! thread, while the loop goes on reading and processing into the next one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use foldhash::fast::RandomState;
use futures::StreamExt as _;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer as _;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::history::{output_digest, record_history};
use super::in_flight::PartitionKey;
use super::steps::{LoopState, rewind_to_committed, until};
use super::{LoopContext, Processor, TxSettings};
use crate::offsets::{OffsetTracker, Origin};
use crate::outputs::{Output, Outputs};
use crate::transactions::{TransactionalProducer, TxError};

/// Finished records waiting for the next transaction.
#[derive(Debug, Default)]
struct OpenTxn {
    outputs: HashMap<PartitionKey, Vec<Output>, RandomState>,
    records: usize,
    opened: Option<Instant>,
}

impl OpenTxn {
    fn add(&mut self, origin: &Origin, mut outputs: Outputs) {
        let items = outputs.take();
        self.outputs.entry((origin.topic.clone(), origin.partition)).or_default().extend(items);
        self.records += 1;
        self.opened.get_or_insert_with(Instant::now);
    }

    /// Drops what revoked partitions finished: their new owner redoes it.
    fn drop_partitions(&mut self, revoked: &[PartitionKey]) {
        for key in revoked {
            self.outputs.remove(key);
        }
    }

    fn is_empty(&self) -> bool {
        self.records == 0
    }

    fn due(&self, tx: &TxSettings) -> Option<Instant> {
        if self.records >= tx.max_records { Some(Instant::now()) } else { self.opened.map(|t| t + tx.max_age) }
    }

    fn take(&mut self) -> (Vec<Output>, usize) {
        let outputs = self.outputs.drain().flat_map(|(_, v)| v).collect();
        let records = std::mem::take(&mut self.records);
        self.opened = None;
        (outputs, records)
    }
}

/// A transaction being committed on a blocking thread.
struct Committing {
    task: JoinHandle<Result<(), TxError>>,
    /// When the commit started, for its bound.
    started: Instant,
    offsets: TopicPartitionList,
    outputs: u64,
    records: usize,
}

/// What the loop does after a commit attempt.
enum AfterCommit {
    /// Committed: go on.
    Committed,
    /// Aborted: rewind and go on with the same producer.
    Rewind,
    /// The producer is unusable: rewind and create a new one (which also
    /// aborts anything it left open).
    RecreateProducer,
    /// Another instance owns the transactional id, or the principal lacks
    /// an ACL: stop.
    Stop,
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

/// Runs the loop; returns (flushed, committed, handed over): the drain report.
pub(super) async fn run<P: Processor>(
    ctx: &mut LoopContext<'_>,
    tx: &TxSettings,
    processor: &mut P,
    shutdown: &CancellationToken,
) -> (bool, bool, bool) {
    let stage = ctx.settings.name;
    let producer = match create_producer(tx).await {
        Ok(p) => {
            ctx.stats.producer_ready.store(true, Ordering::Relaxed);
            p
        }
        Err(error) => {
            tracing::error!(stage, %error, transactional_id = %tx.transactional_id, "cannot create the transactional producer");
            shutdown.cancel();
            return (false, false, false);
        }
    };
    // Offsets travel in transactions; the tracker only says which ones are
    // finished.
    let tracker = Arc::new(OffsetTracker::new());
    let mut delivery = ExactlyOnce {
        state: LoopState::new(ctx.settings.max_concurrency, tracker.clone()),
        tracker,
        producer,
        tx,
        open: OpenTxn::default(),
        committing: None,
        last_committed: true,
        handed_over: false,
    };
    if let Next::Stop = delivery.run(ctx, processor, shutdown).await {
        return (false, false, false);
    }
    let committed = delivery.last_committed;
    let handed_over = !committed && delivery.handed_over;
    if handed_over {
        tracing::info!(stage, "drained: the group moved on; the last transaction's records go to the next owner");
    } else {
        delivery.state.report_unfinished(ctx);
        tracing::info!(stage, last_transaction_committed = committed, "drained");
    }
    (committed, committed, handed_over)
}

/// What the loop does next.
enum Next {
    /// Go on.
    Continue,
    /// The drain is over.
    Drained,
    /// Stop at once, unclean (fenced, or no usable producer).
    Stop,
}

/// The loop's state besides what at-least-once shares.
struct ExactlyOnce<'t> {
    state: LoopState,
    tracker: Arc<OffsetTracker>,
    producer: Arc<TransactionalProducer>,
    tx: &'t TxSettings,
    /// Finished records waiting for the next transaction.
    open: OpenTxn,
    /// The transaction being committed, if any.
    committing: Option<Committing>,
    last_committed: bool,
    handed_over: bool,
}

impl ExactlyOnce<'_> {
    async fn run<P: Processor>(
        &mut self,
        ctx: &mut LoopContext<'_>,
        processor: &mut P,
        shutdown: &CancellationToken,
    ) -> Next {
        loop {
            let revoked = self.state.take_revoked(ctx, processor);
            self.open.drop_partitions(&revoked);
            let draining = self.state.draining();
            let work_done = self.state.in_flight.idle() || self.state.drain_expired();
            if self.committing.is_none() {
                let due = self.open.due(self.tx).is_some_and(|t| t <= Instant::now());
                if !self.open.is_empty() && (due || (draining && work_done)) {
                    self.start_commit(ctx);
                } else if draining && work_done && self.open.is_empty() {
                    return Next::Drained;
                }
            }
            let unfinished = self.state.in_flight.unfinished();
            ctx.stats.in_flight.store(unfinished as u64, Ordering::Relaxed);
            let can_read = !draining && unfinished < ctx.settings.max_in_flight;
            if !can_read && !draining && self.stalled() {
                self.recover_stall(ctx, processor, shutdown);
                continue;
            }
            let next_commit = if self.committing.is_none() { self.open.due(self.tx) } else { None };
            let commit_overrun = self.committing.as_ref().map(|c| c.started + self.producer.commit_bound());
            let drain_deadline = self.state.drain_deadline();
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if !draining => self.state.begin_drain(ctx),
                joined = async { self.committing.as_mut().map(|c| &mut c.task).expect("guarded").await }, if self.committing.is_some() => {
                    let result = joined.unwrap_or(Err(TxError::Fatal(rdkafka::error::KafkaError::Canceled)));
                    match self.committed(ctx, processor, shutdown, result).await {
                        Next::Continue => {}
                        end => return end,
                    }
                }
                Some(done) = self.state.in_flight.running.next(), if !self.state.in_flight.running.is_empty() => {
                    // The collect step: finished work joins the open transaction.
                    if let Some((origin, outputs)) = self.state.in_flight.finish(done, ctx.stats) {
                        self.tracker.complete(&origin);
                        self.open.add(&origin, outputs);
                    }
                }
                () = until(next_commit), if next_commit.is_some() => {}
                () = until(commit_overrun), if commit_overrun.is_some() => {
                    match self.commit_overran(ctx, processor, shutdown).await {
                        Next::Continue => {}
                        end => return end,
                    }
                }
                () = until(drain_deadline), if draining => {}
                _ = ctx.status_tick.tick() => ctx.status(processor, &self.state.in_flight),
                _ = ctx.housekeeping.tick(), if ctx.housekeeping_on => processor.tick(),
                received = ctx.consumer.recv(), if can_read => {
                    let (revoked, already_done) = self.state.receive(ctx, processor, received).await;
                    self.open.drop_partitions(&revoked);
                    if let Some(origin) = already_done {
                        self.tracker.complete(&origin);
                        self.open.add(&origin, Outputs::new());
                    }
                }
            }
        }
    }

    /// The commit step: starts committing the open transaction on a
    /// blocking thread.
    fn start_commit(&mut self, ctx: &LoopContext<'_>) {
        match start_commit(ctx, &self.producer, &self.tracker, &mut self.open, self.tx) {
            Started::Committing(c) => self.committing = Some(c),
            Started::Nothing => {}
            // No group metadata yet: try again shortly.
            Started::NoGroupMetadata => self.open.opened = Some(Instant::now()),
        }
    }

    /// Records counted as unfinished with no work left for them: the loop
    /// would wait forever.
    fn stalled(&self) -> bool {
        self.state.in_flight.idle() && self.committing.is_none() && self.open.is_empty()
    }

    /// Starts again from what is committed, as after an abort. Seen once in
    /// a chaos run after a broker kill (cause not found yet).
    fn recover_stall<P: Processor>(&mut self, ctx: &LoopContext<'_>, processor: &mut P, shutdown: &CancellationToken) {
        ctx.stats.stalls.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            stage = ctx.settings.name,
            unfinished = self.state.in_flight.unfinished(),
            "records unfinished with no work running; rewinding to the committed offsets"
        );
        self.state.in_flight.reset();
        processor.reset();
        if !rewind_to_committed(ctx.consumer, ctx.settings.name) {
            let _ = stop_unrewound(ctx, shutdown);
        }
    }

    /// What follows a commit attempt: go on, or rewind (and recreate the
    /// producer if it is unusable), or stop when fenced.
    async fn committed<P: Processor>(
        &mut self,
        ctx: &LoopContext<'_>,
        processor: &mut P,
        shutdown: &CancellationToken,
        result: Result<(), TxError>,
    ) -> Next {
        let Some(done) = self.committing.take() else { return Next::Continue };
        let offsets: Vec<(String, i32, i64)> = done
            .offsets
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                rdkafka::Offset::Offset(at) => Some((e.topic().to_string(), e.partition(), at)),
                _ => None,
            })
            .collect();
        let group_moved_on = result.as_ref().is_err_and(TxError::group_moved_on);
        let after = finish_commit(ctx, &self.producer, &self.tracker, done, result).await;
        if matches!(after, AfterCommit::Committed) {
            processor.committed(&offsets);
        }
        self.last_committed = matches!(after, AfterCommit::Committed);
        self.handed_over = self.state.draining() && group_moved_on && matches!(after, AfterCommit::Rewind);
        let recreate = match after {
            AfterCommit::Committed => return Next::Continue,
            AfterCommit::Stop => {
                ctx.stats.producer_ready.store(false, Ordering::Relaxed);
                shutdown.cancel();
                return Next::Stop;
            }
            AfterCommit::Rewind => false,
            AfterCommit::RecreateProducer => true,
        };
        self.restart_from_committed(ctx, processor, shutdown, recreate).await
    }

    /// A commit still running past its bound: librdkafka's call is stuck
    /// (seen after a broker kill or restart: the loop stayed alive with its
    /// records done and never committed). The
    /// blocking call cannot be cancelled; it is left to end on its own, and
    /// a new producer with the same transactional id fences it, as after a
    /// fatal error. Counted as a stall.
    async fn commit_overran<P: Processor>(
        &mut self,
        ctx: &LoopContext<'_>,
        processor: &mut P,
        shutdown: &CancellationToken,
    ) -> Next {
        let Some(stuck) = self.committing.take() else { return Next::Continue };
        ctx.stats.stalls.fetch_add(1, Ordering::Relaxed);
        ctx.stats.aborts.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            stage = ctx.settings.name,
            records = stuck.records,
            running_for_ms = stuck.started.elapsed().as_millis() as u64,
            "transaction commit overran its bound; recreating the producer and rewinding to the committed offsets"
        );
        self.last_committed = false;
        self.restart_from_committed(ctx, processor, shutdown, true).await
    }

    /// Drops what is not committed and reads again from the committed
    /// offsets, with a new producer when `recreate`; stops the stage when
    /// it cannot rewind.
    async fn restart_from_committed<P: Processor>(
        &mut self,
        ctx: &LoopContext<'_>,
        processor: &mut P,
        shutdown: &CancellationToken,
        recreate: bool,
    ) -> Next {
        self.state.in_flight.reset();
        self.open = OpenTxn::default();
        processor.reset();
        if !rewind_to_committed(ctx.consumer, ctx.settings.name) {
            return stop_unrewound(ctx, shutdown);
        }
        if recreate {
            ctx.stats.producer_ready.store(false, Ordering::Relaxed);
            match create_producer(self.tx).await {
                Ok(p) => {
                    ctx.stats.producer_restarts.fetch_add(1, Ordering::Relaxed);
                    ctx.stats.producer_ready.store(true, Ordering::Relaxed);
                    self.producer = p;
                }
                Err(error) => {
                    tracing::error!(stage = ctx.settings.name, %error, "cannot recreate the transactional producer; stopping");
                    shutdown.cancel();
                    return Next::Stop;
                }
            }
        }
        // While draining, what was rewound is redone by the next owner.
        if self.state.draining() { Next::Drained } else { Next::Continue }
    }
}

/// The input could not be rewound after dropping uncommitted work: reading
/// on would skip those records. The stage stops without committing; its
/// partitions go to the next owner (or to this stage restarted), which
/// reads them again from the committed offsets.
fn stop_unrewound(ctx: &LoopContext<'_>, shutdown: &CancellationToken) -> Next {
    tracing::error!(
        stage = ctx.settings.name,
        "cannot rewind to the committed offsets; stopping so that the uncommitted records are read again"
    );
    ctx.stats.producer_ready.store(false, Ordering::Relaxed);
    shutdown.cancel();
    Next::Stop
}

/// What [`start_commit`] did.
enum Started {
    Committing(Committing),
    /// Nothing left to commit (what was open belonged to revoked partitions).
    Nothing,
    NoGroupMetadata,
}

/// Starts committing the open transaction on a blocking thread.
fn start_commit(
    ctx: &LoopContext<'_>,
    producer: &Arc<TransactionalProducer>,
    tracker: &OffsetTracker,
    open: &mut OpenTxn,
    tx: &TxSettings,
) -> Started {
    let Some(group_metadata) = ctx.consumer.group_metadata() else {
        tracing::warn!(stage = ctx.settings.name, "no consumer group metadata yet; the transaction waits");
        return Started::NoGroupMetadata;
    };
    let offsets = tracker.commit_list(None);
    let (outputs, records) = open.take();
    if offsets.count() == 0 && outputs.is_empty() {
        return Started::Nothing;
    }
    let count = outputs.len() as u64;
    let span = commit_span(ctx.settings.name, &outputs, records);
    let digests: Option<Vec<(String, String)>> = tx.history.as_ref().map(|_| {
        outputs.iter().map(|o| (o.topic.clone(), output_digest(o.payload.as_deref().unwrap_or_default()))).collect()
    });
    let committing = producer.clone();
    let history = tx.history.clone();
    let sent = offsets.clone();
    let inject_abort = tx.inject_abort_every > 0 && {
        let n = ctx.stats.transactions.load(Ordering::Relaxed) + ctx.stats.aborts.load(Ordering::Relaxed) + 1;
        n.is_multiple_of(tx.inject_abort_every)
    };
    // The history append is file I/O: it runs on the blocking thread too.
    let task = tokio::task::spawn_blocking(move || {
        let _in_span = span.enter();
        let result = if inject_abort {
            committing.produce_then_fail_blocking(outputs)
        } else {
            committing.commit_batch_blocking(outputs, &sent, &group_metadata)
        };
        if let Err(error) = &result {
            tracing::info!(%error, "transaction not committed");
        }
        if let (Some(path), Some(digests)) = (history, digests) {
            let event = match &result {
                Ok(()) => "commit",
                Err(TxError::Abortable(_)) => "abort",
                // A fatal or fenced error leaves the outcome unknown.
                Err(_) => "unknown",
            };
            record_history(&path, committing.transactional_id(), event, records, &digests, &sent);
        }
        result
    });
    Started::Committing(Committing { task, started: Instant::now(), offsets, outputs: count, records })
}

/// Most span links on one "commit transaction" span: enough to find sample
/// decisions of a batch from its commit, and cheap (a batch can hold
/// thousands of records; the SDK keeps 128 links per span at most anyway).
const MAX_COMMIT_LINKS: usize = 32;

/// A span for one transaction commit (a root span: it serves many traces),
/// linked to the first traced outputs it makes visible; none when the batch
/// holds no traced output (nothing in the backend would lead to it).
fn commit_span(stage: &'static str, outputs: &[Output], records: usize) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let mut traced = outputs.iter().filter_map(|o| o.traced.as_ref()).peekable();
    if traced.peek().is_none() {
        return tracing::Span::none();
    }
    let span = crate::send_span!(
        "commit transaction",
        None,
        "commit",
        messaging.batch.message_count = outputs.len(),
        shoal.stage = stage,
        shoal.transaction.records = records,
    );
    for context in traced.take(MAX_COMMIT_LINKS) {
        span.add_link(context.clone());
    }
    span
}

/// Accounts for a commit's outcome; aborts on an abortable error.
async fn finish_commit(
    ctx: &LoopContext<'_>,
    producer: &Arc<TransactionalProducer>,
    tracker: &OffsetTracker,
    done: Committing,
    result: Result<(), TxError>,
) -> AfterCommit {
    let stage = ctx.settings.name;
    match result {
        Ok(()) => {
            tracker.mark_committed(&done.offsets);
            ctx.stats.transactions.fetch_add(1, Ordering::Relaxed);
            ctx.stats.outputs.fetch_add(done.outputs, Ordering::Relaxed);
            let took_ms = done.started.elapsed().as_millis() as u64;
            tracing::debug!(stage, records = done.records, outputs = done.outputs, took_ms, "transaction committed");
            AfterCommit::Committed
        }
        Err(TxError::Abortable(error)) => {
            ctx.stats.aborts.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(stage, %error, records = done.records, "aborting transaction; rewinding to the last committed offsets");
            let aborting = producer.clone();
            let aborted = tokio::task::spawn_blocking(move || aborting.abort_blocking())
                .await
                .unwrap_or(Err(TxError::Fatal(rdkafka::error::KafkaError::Canceled)));
            match aborted {
                Ok(()) => AfterCommit::Rewind,
                Err(TxError::Fenced(error)) => fenced(ctx, producer, &done, &error),
                Err(error) => {
                    tracing::error!(stage, %error, "abort failed; recreating the producer");
                    AfterCommit::RecreateProducer
                }
            }
        }
        Err(TxError::Fenced(error)) => {
            // Not committed: aborted by the coordinator or by the fencer.
            ctx.stats.aborts.fetch_add(1, Ordering::Relaxed);
            fenced(ctx, producer, &done, &error)
        }
        Err(TxError::NotAuthorized { operation, resource, error }) => {
            ctx.stats.aborts.fetch_add(1, Ordering::Relaxed);
            tracing::error!(stage, operation, %resource, %error, records = done.records, "not authorized: {operation} on {resource}; aborting the transaction (nothing of it is committed) and stopping: grant the ACL (shoal-acl prints each role's) and start again");
            let aborting = producer.clone();
            if let Ok(Err(error)) = tokio::task::spawn_blocking(move || aborting.abort_blocking()).await {
                tracing::warn!(stage, %error, "abort after the authorization failure failed; the coordinator aborts the transaction at its timeout");
            }
            AfterCommit::Stop
        }
        Err(TxError::Fatal(error)) => {
            ctx.stats.aborts.fetch_add(1, Ordering::Relaxed);
            tracing::error!(stage, %error, "fatal transactional error; recreating the producer and rewinding");
            AfterCommit::RecreateProducer
        }
    }
}

/// What a fenced commit means. A transaction that stayed open past
/// `transaction.timeout.ms` (the broker unreachable meanwhile) was aborted by
/// the coordinator, which bumped the producer's epoch: the producer reads as
/// fenced although no other instance exists, so a new producer (same id) and
/// a rewind recover. Fenced sooner, another instance owns the id: stop.
fn fenced(
    ctx: &LoopContext<'_>,
    producer: &TransactionalProducer,
    done: &Committing,
    error: &rdkafka::error::KafkaError,
) -> AfterCommit {
    let stage = ctx.settings.name;
    let open_for = done.started.elapsed();
    if open_for >= producer.transaction_timeout() {
        tracing::warn!(
            stage,
            %error,
            open_for_ms = open_for.as_millis() as u64,
            transaction_timeout_ms = producer.transaction_timeout().as_millis() as u64,
            "fenced after the transaction outlived its timeout (the coordinator aborted it); recreating the producer and rewinding"
        );
        return AfterCommit::RecreateProducer;
    }
    tracing::error!(stage, %error, "fenced: another instance owns this transactional id; stopping");
    AfterCommit::Stop
}
