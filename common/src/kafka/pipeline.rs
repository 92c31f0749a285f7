//! The consume → process → produce loop every Kafka-to-Kafka stage runs,
//! with periodic commits of completed offsets, periodic status lines, and a
//! bounded graceful drain on shutdown.

use std::future::Future;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::CommitMode;
use rdkafka::message::BorrowedMessage;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::consumer::{GroupConsumer, close_bounded, commit_done};
use super::offsets::Origin;
use super::producer::TrackedProducer;

/// One stage's handling of a consumed record.
pub trait Processor: Send {
    /// Handles one record. Outputs must be sent with
    /// `producer.send(record, Some(origin.clone()))` so the record's offset is
    /// committed only after they are acknowledged.
    fn process(&mut self, message: &BorrowedMessage<'_>, origin: &Origin) -> impl Future<Output = ()> + Send;

    /// Logs one status line (counters).
    fn status(&self);
}

/// Timing of the loop.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    /// Stage name for logs.
    pub name: &'static str,
    /// How often completed offsets are committed.
    pub commit_interval: Duration,
    /// How often a status line is logged; `None` for never.
    pub status_interval: Option<Duration>,
    /// Bound on the whole drain after shutdown is requested.
    pub shutdown_timeout: Duration,
}

/// How the drain went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Every produced record was acknowledged.
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

/// Runs the loop until `shutdown` is cancelled, then drains: stop reading,
/// wait for outputs to be acknowledged, commit, leave the group — all within
/// `settings.shutdown_timeout`.
pub async fn run<P: Processor>(
    consumer: GroupConsumer,
    producer: TrackedProducer,
    processor: &mut P,
    shutdown: CancellationToken,
    settings: &LoopSettings,
) -> DrainReport {
    let tracker = producer.tracker().clone();
    let mut commit_tick = tokio::time::interval(settings.commit_interval);
    commit_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let status_period = settings.status_interval.unwrap_or(Duration::from_secs(u64::from(u32::MAX)));
    let mut status_tick = tokio::time::interval_at(Instant::now() + status_period, status_period);
    status_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut consecutive_errors = 0u32;

    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = commit_tick.tick() => {
                if let Err(error) = commit_done(&consumer, &tracker, CommitMode::Async) {
                    tracing::warn!(stage = settings.name, %error, "periodic commit failed; will retry");
                }
            }
            _ = status_tick.tick() => processor.status(),
            received = consumer.recv() => match received {
                Ok(message) => {
                    consecutive_errors = 0;
                    let origin = Origin {
                        topic: message.topic().to_string(),
                        partition: message.partition(),
                        offset: message.offset(),
                    };
                    tracker.begin(&origin);
                    processor.process(&message, &origin).await;
                    tracker.complete(&origin);
                }
                Err(error) => {
                    // Consumer errors here are per-fetch (e.g. a partition
                    // leader moving); librdkafka recovers by itself. Back off
                    // a little so a persistent error does not spin.
                    consecutive_errors = consecutive_errors.saturating_add(1);
                    tracing::warn!(stage = settings.name, %error, consecutive_errors, "consumer error");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(consecutive_errors.min(20)))).await;
                }
            },
        }
    }

    tracing::info!(stage = settings.name, in_flight = tracker.in_flight(), "draining: no new records will be read");
    let deadline = Instant::now() + settings.shutdown_timeout;
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let flushed = match producer.flush(remaining()).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(stage = settings.name, %error, "flush did not complete; unacknowledged records will be processed again");
            false
        }
    };
    let committed = match tokio::task::block_in_place(|| commit_done(&consumer, &tracker, CommitMode::Sync)) {
        Ok(count) => {
            tracing::info!(stage = settings.name, partitions = count, "committed final offsets");
            true
        }
        Err(error) => {
            tracing::warn!(stage = settings.name, %error, "final commit failed");
            false
        }
    };
    let closed = close_bounded(consumer, remaining()).await;
    processor.status();
    let report = DrainReport { flushed, committed, closed };
    tracing::info!(stage = settings.name, ?report, "stage stopped");
    report
}
