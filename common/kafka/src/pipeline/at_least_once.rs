//! At-least-once delivery: a record's outputs are produced as soon as its
//! work finishes, and its offset is committed (periodically, and before its
//! partition is handed over) once they are acknowledged.
//!
//! The loop's steps: **receive** a record and start its work (shared with
//! exactly-once, see [`LoopState::receive`]); **collect** finished work and
//! produce its outputs; **commit** acknowledged offsets on a timer, reading
//! again partitions whose outputs were not delivered; and, on shutdown,
//! **drain** within the bound.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt as _;
use rdkafka::consumer::CommitMode;
use tokio_util::sync::CancellationToken;

use super::freeze::FreezeGuard;
use super::in_flight::Finished;
use super::steps::{LoopState, rewind_partitions, rewind_to_committed, until};
use super::{LoopContext, Processor, interval};
use crate::consumer::commit_done;
use crate::offsets::OffsetTracker;
use crate::producer::TrackedProducer;

/// Runs the loop; returns (flushed, committed) for the drain report.
pub(super) async fn run<P: Processor>(
    ctx: &mut LoopContext<'_>,
    producer: TrackedProducer,
    processor: &mut P,
    shutdown: &CancellationToken,
) -> (bool, bool) {
    let settings = ctx.settings;
    let tracker = producer.tracker().clone();
    let freeze = match FreezeGuard::start(settings.session_timeout / 2) {
        Ok(guard) => Some(guard),
        Err(error) => {
            tracing::warn!(stage = settings.name, %error, "cannot start the pause watcher; a frozen worker may repeat results");
            None
        }
    };
    let mut delivery = AtLeastOnce {
        state: LoopState::new(settings.max_concurrency, tracker.clone()),
        producer,
        tracker,
        commit_tick: interval(settings.commit_interval),
        freeze,
        refused: false,
    };
    delivery.run(ctx, processor, shutdown).await;
    delivery.state.report_unfinished(ctx);
    delivery.finish(ctx).await
}

/// The loop's state besides what exactly-once shares.
struct AtLeastOnce {
    state: LoopState,
    producer: TrackedProducer,
    tracker: Arc<OffsetTracker>,
    commit_tick: tokio::time::Interval,
    freeze: Option<FreezeGuard>,
    /// The broker refused an output for good: the drain is not clean.
    refused: bool,
}

impl AtLeastOnce {
    async fn run<P: Processor>(&mut self, ctx: &mut LoopContext<'_>, processor: &mut P, shutdown: &CancellationToken) {
        let settings = ctx.settings;
        loop {
            self.state.take_revoked(ctx, processor);
            if self.state.draining() && (self.state.in_flight.idle() || self.state.drain_expired()) {
                break;
            }
            if !self.state.draining()
                && let Some(refused) = self.tracker.refused()
            {
                // Retrying cannot deliver what an ACL refuses: stop, with
                // the refused record's input uncommitted (read again by
                // the next owner once the ACL is granted).
                tracing::error!(
                    stage = settings.name,
                    "not authorized: {refused}; stopping: grant the ACL (shoal-acl prints each role's) and start again"
                );
                self.refused = true;
                shutdown.cancel();
            }
            let unfinished = self.state.in_flight.unfinished();
            ctx.stats.in_flight.store(unfinished as u64, Ordering::Relaxed);
            // Bounded by records being processed, and (loosely, at four times
            // the bound) by outputs awaiting acknowledgement: the commit
            // metadata cuts its list off conservatively when it is long.
            let drain_deadline = self.state.drain_deadline();
            let can_read = !self.state.draining()
                && self.state.in_flight.processing() < settings.max_in_flight
                && unfinished < settings.max_in_flight * 4;
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if !self.state.draining() => self.state.begin_drain(ctx),
                Some(done) = self.state.in_flight.running.next(), if !self.state.in_flight.running.is_empty() => {
                    self.collect(ctx, processor, done, shutdown).await;
                }
                _ = self.commit_tick.tick() => self.commit(ctx, processor).await,
                _ = ctx.status_tick.tick() => ctx.status(processor, &self.state.in_flight),
                _ = ctx.housekeeping.tick(), if ctx.housekeeping_on => processor.tick(),
                // Outputs are acknowledged on librdkafka's thread: wake up
                // when that makes room under the in-flight bound.
                () = self.tracker.progressed(), if !can_read && !self.state.draining() => {}
                () = until(drain_deadline), if drain_deadline.is_some() => {}
                received = ctx.consumer.recv(), if can_read => {
                    let (_, already_done) = self.state.receive(ctx, processor, received).await;
                    if let Some(origin) = already_done {
                        self.tracker.complete(&origin);
                    }
                }
            }
        }
    }

    /// The collect step: produces a finished record's outputs, tracked
    /// against its offset. After a pause long enough to have lost the
    /// partitions, drops everything in hand instead.
    async fn collect<P: Processor>(
        &mut self,
        ctx: &LoopContext<'_>,
        processor: &mut P,
        done: Finished,
        shutdown: &CancellationToken,
    ) {
        let stage = ctx.settings.name;
        let Some((origin, mut outputs)) = self.state.in_flight.finish(done, ctx.stats) else { return };
        if self.freeze.as_mut().is_some_and(FreezeGuard::tripped) {
            // A pause this long may have handed the partitions to another
            // member, which redoes this work: publishing it too would
            // duplicate it. Drop everything in hand and read again from the
            // committed offsets.
            ctx.stats.freezes.fetch_add(1, Ordering::Relaxed);
            ctx.stats.discarded.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(stage, "dropping work in hand after a pause and rewinding to the committed offsets");
            if let Err(error) = self.producer.flush(ctx.settings.shutdown_timeout / 2).await {
                tracing::warn!(stage, %error, "flush after a pause did not finish");
            }
            self.state.in_flight.reset();
            processor.reset();
            if !rewind_to_committed(ctx.consumer, stage) {
                // Reading on from here would skip what was just dropped,
                // and a later commit would pass it: stop with nothing
                // tracked, so nothing is committed, and let the next owner
                // (or the restarted worker) read it again.
                tracing::error!(
                    stage,
                    "cannot rewind to the committed offsets; stopping so that the dropped records are read again"
                );
                shutdown.cancel();
            }
            return;
        }
        for output in outputs.take() {
            match self.producer.send(output, Some(origin.clone())).await {
                Ok(()) => {
                    ctx.stats.outputs.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    ctx.stats.produce_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(stage, %error, ?origin, "cannot enqueue output; the record will be processed again");
                }
            }
        }
        self.tracker.complete(&origin);
    }

    /// The commit step: commits what is acknowledged; partitions with an
    /// output that could not be delivered are read again first.
    async fn commit<P: Processor>(&mut self, ctx: &LoopContext<'_>, processor: &mut P) {
        let stage = ctx.settings.name;
        let failed = self.tracker.failed_partitions();
        if !failed.is_empty() {
            // An output that could not be delivered (e.g. its delivery timed
            // out while a broker was down) holds its partition's position;
            // read the partition again from there. The dedupe window is
            // reloaded from what really reached the results topic, so nothing
            // is skipped that has no result.
            tracing::warn!(stage, partitions = ?failed, "outputs were not delivered; reading these partitions again from their committed offsets");
            ctx.stats.redeliveries.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = self.producer.flush(Duration::from_secs(5)).await {
                tracing::warn!(stage, %error, "flush before re-reading did not finish");
            }
            self.state.in_flight.revoke(&failed);
            processor.reset();
            rewind_partitions(ctx.consumer, &failed, stage);
        }
        if let Err(error) = commit_done(ctx.consumer, &self.tracker, CommitMode::Async) {
            tracing::warn!(stage, %error, "periodic commit failed; will retry");
        }
    }

    /// The end of the drain: waits for acknowledgements, then commits the
    /// final offsets.
    async fn finish(&mut self, ctx: &LoopContext<'_>) -> (bool, bool) {
        let stage = ctx.settings.name;
        let flushed = match self.producer.flush(ctx.settings.shutdown_timeout / 2).await {
            Ok(()) => !self.refused,
            Err(error) => {
                tracing::warn!(stage, %error, "flush did not complete; unacknowledged records will be processed again");
                false
            }
        };
        let committed = match tokio::task::block_in_place(|| commit_done(ctx.consumer, &self.tracker, CommitMode::Sync))
        {
            Ok(count) => {
                tracing::info!(stage, partitions = count, "committed final offsets");
                true
            }
            Err(error) => {
                tracing::warn!(stage, %error, "final commit failed");
                false
            }
        };
        (flushed, committed)
    }
}
