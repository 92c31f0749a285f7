//! At-least-once delivery: a record's outputs are produced as soon as its
//! work finishes, and its offset is committed (periodically, and before its
//! partition is handed over) once they are acknowledged.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt as _;
use rdkafka::consumer::CommitMode;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::freeze::FreezeGuard;
use super::{
    Dispatched, InFlight, LoopContext, Processor, consumer_error, interval, rewind_partitions, rewind_to_committed,
};
use crate::consumer::commit_done;
use crate::producer::TrackedProducer;

/// Runs the loop; returns (flushed, committed) for the drain report.
pub(super) async fn run<P: Processor>(
    ctx: &mut LoopContext<'_>,
    producer: TrackedProducer,
    processor: &mut P,
    shutdown: &CancellationToken,
) -> (bool, bool) {
    let settings = ctx.settings;
    let stage = settings.name;
    let tracker = producer.tracker().clone();
    let mut in_flight = InFlight::new(settings.max_concurrency, tracker.clone());
    let mut commit_tick = interval(settings.commit_interval);
    let mut freeze = match FreezeGuard::start(settings.session_timeout / 2) {
        Ok(guard) => Some(guard),
        Err(error) => {
            tracing::warn!(stage, %error, "cannot start the pause watcher; a frozen worker may repeat results");
            None
        }
    };
    let mut consecutive_errors = 0u32;
    let mut drain_deadline: Option<Instant> = None;
    let far = Instant::now() + Duration::from_secs(3600 * 24 * 365);
    loop {
        in_flight.revoke(&ctx.group.take_revoked());
        if let Some(deadline) = drain_deadline
            && (in_flight.idle() || Instant::now() >= deadline)
        {
            break;
        }
        let unfinished = in_flight.unfinished();
        ctx.stats.in_flight.store(unfinished as u64, Ordering::Relaxed);
        // Bounded by records being processed, and (loosely, at four times
        // the bound) by outputs awaiting acknowledgement: the commit
        // metadata cuts its list off conservatively when it is long.
        let can_read = drain_deadline.is_none()
            && in_flight.processing() < settings.max_in_flight
            && unfinished < settings.max_in_flight * 4;
        tokio::select! {
            biased;
            () = shutdown.cancelled(), if drain_deadline.is_none() => {
                tracing::info!(stage, running = in_flight.running.len(), "draining: no new records will be read");
                drain_deadline = Some(Instant::now() + settings.shutdown_timeout / 2);
            }
            Some(done) = in_flight.running.next(), if !in_flight.running.is_empty() => {
                let Some((origin, mut outputs)) = in_flight.finish(done, ctx.stats) else { continue };
                if freeze.as_mut().is_some_and(FreezeGuard::tripped) {
                    // A pause this long may have handed the partitions to
                    // another member, which redoes this work: publishing it
                    // too would duplicate it. Drop everything in hand and
                    // read again from the committed offsets.
                    ctx.stats.freezes.fetch_add(1, Ordering::Relaxed);
                    ctx.stats.discarded.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(stage, "dropping work in hand after a pause and rewinding to the committed offsets");
                    if let Err(error) = producer.flush(settings.shutdown_timeout / 2).await {
                        tracing::warn!(stage, %error, "flush after a pause did not finish");
                    }
                    in_flight.reset();
                    processor.reset();
                    rewind_to_committed(ctx.consumer, stage);
                    continue;
                }
                for output in outputs.take() {
                    match producer.send(output, Some(origin.clone())).await {
                        Ok(()) => {
                            ctx.stats.outputs.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            ctx.stats.produce_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(stage, %error, ?origin, "cannot enqueue output; the record will be processed again");
                        }
                    }
                }
                tracker.complete(&origin);
            }
            _ = commit_tick.tick() => {
                let failed = tracker.failed_partitions();
                if !failed.is_empty() {
                    // An output that could not be delivered (e.g. its
                    // delivery timed out while a broker was down) holds its
                    // partition's position; read the partition again from
                    // there. The dedupe window is reloaded from what really
                    // reached the results topic, so nothing is skipped that
                    // has no result.
                    tracing::warn!(stage, partitions = ?failed, "outputs were not delivered; reading these partitions again from their committed offsets");
                    ctx.stats.redeliveries.fetch_add(1, Ordering::Relaxed);
                    if let Err(error) = producer.flush(Duration::from_secs(5)).await {
                        tracing::warn!(stage, %error, "flush before re-reading did not finish");
                    }
                    in_flight.revoke(&failed);
                    processor.reset();
                    rewind_partitions(ctx.consumer, &failed, stage);
                }
                if let Err(error) = commit_done(ctx.consumer, &tracker, CommitMode::Async) {
                    tracing::warn!(stage, %error, "periodic commit failed; will retry");
                }
            }
            _ = ctx.status_tick.tick() => ctx.status(processor, &in_flight),
            // Outputs are acknowledged on librdkafka's thread: wake up when
            // that makes room under the in-flight bound.
            () = tracker.progressed(), if !can_read && drain_deadline.is_none() => {}
            () = tokio::time::sleep_until(drain_deadline.unwrap_or(far)), if drain_deadline.is_some() => {}
            received = ctx.consumer.recv(), if can_read => match received {
                Ok(message) => {
                    consecutive_errors = 0;
                    ctx.stats.records.fetch_add(1, Ordering::Relaxed);
                    // Revocations during this poll come first: the record
                    // may belong to a partition that just came back.
                    in_flight.revoke(&ctx.group.take_revoked());
                    match in_flight.dispatch(ctx.consumer, processor, message.detach(), stage) {
                        Dispatched::Started => {}
                        Dispatched::AlreadyDone(origin) => {
                            ctx.stats.skipped_done.fetch_add(1, Ordering::Relaxed);
                            tracker.complete(&origin);
                        }
                        Dispatched::Retry => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
                Err(error) => consumer_error(stage, error, &mut consecutive_errors).await,
            },
        }
    }

    if !in_flight.idle() {
        tracing::warn!(
            stage,
            running = in_flight.running.len(),
            queued = in_flight.chains.queued(),
            "drain bound reached; unfinished records will be processed again by the next owner"
        );
    }
    let remaining = settings.shutdown_timeout / 2;
    let flushed = match producer.flush(remaining).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(stage, %error, "flush did not complete; unacknowledged records will be processed again");
            false
        }
    };
    let committed = match tokio::task::block_in_place(|| commit_done(ctx.consumer, &tracker, CommitMode::Sync)) {
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
