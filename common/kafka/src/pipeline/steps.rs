//! The steps both delivery loops share: receive a record and start its
//! work, take revocations, begin and bound the drain, back off after
//! consumer errors, rewind to the committed offsets.

use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;

use super::in_flight::{Dispatched, InFlight, PartitionKey};
use super::{LoopContext, Processor};
use crate::consumer::GroupConsumer;
use crate::offsets::{OffsetTracker, Origin};

/// How long a read waits before trying a partition whose commit metadata
/// could not be read again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// At most one pause after consumer errors per this interval.
const ERROR_PAUSE_EVERY: Duration = Duration::from_secs(1);

/// Resolves at `deadline`; never without one.
pub(super) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What both loops keep between steps.
pub(super) struct LoopState {
    /// Records between consumption and completion.
    pub(super) in_flight: InFlight,
    /// Set once shutdown was requested: reading stops, work in hand finishes
    /// until the deadline.
    drain_deadline: Option<Instant>,
    consecutive_errors: u32,
    /// When the loop last paused after a consumer error.
    last_error_pause: Option<Instant>,
}

impl LoopState {
    pub(super) fn new(max_concurrency: usize, tracker: std::sync::Arc<OffsetTracker>) -> Self {
        Self {
            in_flight: InFlight::new(max_concurrency, tracker),
            drain_deadline: None,
            consecutive_errors: 0,
            last_error_pause: None,
        }
    }

    /// Whether the drain has begun.
    pub(super) fn draining(&self) -> bool {
        self.drain_deadline.is_some()
    }

    /// Whether the drain has begun and its deadline passed.
    pub(super) fn drain_expired(&self) -> bool {
        self.drain_deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The drain step: no new records are read from now on; work in hand
    /// gets half the shutdown bound.
    pub(super) fn begin_drain(&mut self, ctx: &LoopContext<'_>) {
        tracing::info!(
            stage = ctx.settings.name,
            running = self.in_flight.running.len(),
            "draining: no new records will be read"
        );
        self.drain_deadline = Some(Instant::now() + ctx.settings.shutdown_timeout / 2);
    }

    /// The drain's deadline, once it began.
    pub(super) fn drain_deadline(&self) -> Option<Instant> {
        self.drain_deadline
    }

    /// Forgets partitions revoked since the last look; returns them.
    pub(super) fn take_revoked<P: Processor>(&mut self, ctx: &LoopContext<'_>, processor: &mut P) -> Vec<PartitionKey> {
        let revoked = ctx.group.take_revoked();
        if !revoked.is_empty() {
            self.in_flight.revoke(&revoked);
            processor.revoked(&revoked);
        }
        let assigned = ctx.group.take_assigned();
        if !assigned.is_empty() {
            processor.assigned(&assigned);
        }
        revoked
    }

    /// The receive step: counts the record, applies the revocations that
    /// came with the poll (the record may belong to a partition that just
    /// came back) and starts its work. Returns the partitions revoked, and
    /// the record when an earlier owner already finished it (the caller
    /// passes its offset on).
    pub(super) async fn receive<P: Processor>(
        &mut self,
        ctx: &LoopContext<'_>,
        processor: &mut P,
        received: KafkaResult<BorrowedMessage<'_>>,
    ) -> (Vec<PartitionKey>, Option<Origin>) {
        let stage = ctx.settings.name;
        let message = match received {
            Ok(message) => message,
            Err(error) => {
                // librdkafka recovers from per-fetch errors by itself. Back
                // off a little so a flood of errors does not spin, but at
                // most once per ERROR_PAUSE_EVERY: errors are events queued
                // ahead of everything else (a rebalance among them), and a
                // pause per event let a backlog of all-brokers-down events
                // hold back the revoke of lost partitions for most of a
                // minute after an outage, keeping the member out of its group.
                self.consecutive_errors = self.consecutive_errors.saturating_add(1);
                tracing::warn!(stage, %error, consecutive_errors = self.consecutive_errors, "consumer error");
                if self.last_error_pause.is_none_or(|at| at.elapsed() >= ERROR_PAUSE_EVERY) {
                    let pause = 50 * u64::from(self.consecutive_errors.min(20));
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    self.last_error_pause = Some(Instant::now());
                }
                return (Vec::new(), None);
            }
        };
        self.consecutive_errors = 0;
        ctx.stats.records.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let revoked = self.take_revoked(ctx, processor);
        match self.in_flight.dispatch(ctx.consumer, processor, message.detach(), stage) {
            Dispatched::Started => (revoked, None),
            Dispatched::AlreadyDone(origin) => {
                ctx.stats.skipped_done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (revoked, Some(origin))
            }
            Dispatched::Retry => {
                tokio::time::sleep(RETRY_PAUSE).await;
                (revoked, None)
            }
        }
    }

    /// Says what the drain leaves to the next owner, if anything.
    pub(super) fn report_unfinished(&self, ctx: &LoopContext<'_>) {
        if !self.in_flight.idle() {
            tracing::warn!(
                stage = ctx.settings.name,
                running = self.in_flight.running.len(),
                queued = self.in_flight.chains.queued(),
                "drain bound reached; unfinished records will be processed again by the next owner"
            );
        }
    }
}

/// Seeks `partitions` back to their committed offsets.
pub(super) fn rewind_partitions(consumer: &GroupConsumer, partitions: &[PartitionKey], stage: &str) {
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
///
/// Reading the committed offsets is tried [`REWIND_ATTEMPTS`] times (a
/// coordinator moving after a broker restart answers with a timeout for a
/// while). A caller that cannot rewind must not read on: the consumer's
/// position is past the records it dropped, which would then be skipped.
pub(super) fn rewind_to_committed(consumer: &GroupConsumer, stage: &str) -> bool {
    for attempt in 1..=REWIND_ATTEMPTS {
        match tokio::task::block_in_place(|| consumer.committed(Duration::from_secs(10))) {
            Ok(committed) => return seek_all(consumer, &committed, stage),
            Err(error) => {
                tracing::warn!(stage, %error, attempt, "cannot read committed offsets to rewind");
                if attempt < REWIND_ATTEMPTS {
                    tokio::task::block_in_place(|| std::thread::sleep(Duration::from_secs(1)));
                }
            }
        }
    }
    false
}

/// Attempts at reading the committed offsets for a rewind.
const REWIND_ATTEMPTS: u32 = 6;

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
