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
mod history;
mod in_flight;
mod steps;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::message::OwnedMessage;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::consumer::{GroupConsumer, GroupStats, close_bounded};
use crate::outputs::Outputs;
use crate::producer::TrackedProducer;
use crate::settings::KafkaSettings;
use in_flight::InFlight;

pub use history::output_digest;

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

    /// Partitions this process no longer owns (their records are not
    /// consumed here any more): drop what is kept for them.
    fn revoked(&mut self, _partitions: &[(String, i32)]) {}

    /// Partitions newly assigned to this process, told between records
    /// (possibly after some of theirs were started): load what is kept for
    /// them ahead of their records.
    fn assigned(&mut self, _partitions: &[(String, i32)]) {}

    /// A transaction committed (exactly-once): the next offset to read of
    /// each partition it committed, `(topic, partition, offset)`. What was
    /// processed below these offsets survives any later rewind.
    fn committed(&mut self, _offsets: &[(String, i32, i64)]) {}

    /// How often [`Processor::tick`] runs; `None` (the default) for never.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Periodic work between records (publishing what was applied to
    /// readers, for example), on the loop's task.
    fn tick(&mut self) {}
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
    /// Abort every Nth transaction (fault injection for tests); 0 never.
    pub inject_abort_every: u64,
}

shoal_telemetry::counters! {
    /// Pipeline counters.
    pub struct PipelineStats {
        /// Records consumed and processed.
        records => counter("shoal_pipeline_records", "Records consumed by the stage"),
        /// Outputs produced (committed, in exactly-once mode).
        outputs => counter("shoal_pipeline_outputs", "Records produced (committed, with exactly-once delivery)"),
        /// Outputs that could not be enqueued (at-least-once).
        produce_errors => counter("shoal_pipeline_produce_errors", "Outputs that could not be enqueued (at-least-once)"),
        /// Transactions committed.
        transactions => counter(
            "shoal_transactions",
            "Kafka transactions of the stage (exactly-once delivery), by outcome",
            outcome = "committed"
        ),
        /// Transactions aborted (input rewound).
        aborts => counter(
            "shoal_transactions",
            "Kafka transactions of the stage (exactly-once delivery), by outcome",
            outcome = "aborted"
        ),
        /// Transactional producers recreated after a fatal error.
        producer_restarts => counter(
            "shoal_pipeline_producer_restarts",
            "Transactional producers recreated after a fatal error"
        ),
        /// Records skipped because the commit metadata says an earlier owner
        /// finished them.
        skipped_done => counter(
            "shoal_pipeline_skipped_done",
            "Records skipped because an earlier owner finished them"
        ),
        /// Finished work dropped because its partition moved or the input was
        /// rewound before it could be delivered.
        discarded => counter(
            "shoal_pipeline_discarded",
            "Finished work dropped because its partition moved or the input was rewound"
        ),
        /// Pauses of this process long enough to have lost the partitions
        /// (at-least-once drops its work in hand and rewinds).
        freezes => counter("shoal_pipeline_freezes", "Process pauses long enough to have lost the partitions"),
        /// Times partitions were read again because outputs could not be
        /// delivered (at-least-once).
        redeliveries,
        /// Times the loop found records counted unfinished with no work left
        /// for them, and rewound (a safety net for a bug not yet found).
        stalls,
        /// Records read and not finished (at-least-once: not acknowledged).
        in_flight => gauge(
            "shoal_pipeline_in_flight",
            "Records read and not yet finished (delivered, at-least-once)"
        ),
    }
    with {
        /// The exactly-once producer is initialised and usable (false while it
        /// is created or recreated, and after it was fenced).
        pub producer_ready: AtomicBool,
    }
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
    /// Exactly-once: the last transaction was aborted because the group
    /// moved on (a rebalance raced the drain, the broker refused its
    /// offsets for an old generation). Its records are read again from
    /// the committed offsets by whoever owns their partitions next;
    /// nothing is lost, as when a rebalance revokes them outside a drain.
    pub handed_over: bool,
}

impl DrainReport {
    /// Whether the drain left nothing behind that is not the design's: every
    /// step finished, or the group took the uncommitted work back.
    pub fn clean(&self) -> bool {
        (self.handed_over || (self.flushed && self.committed)) && self.closed
    }
}

/// Runs the loop until `shutdown` is cancelled (or, exactly-once, the
/// producer is fenced), then drains within `settings.shutdown_timeout`
/// (see [`Stage::run`](crate::stage::Stage::run)).
pub(crate) async fn run<P: Processor>(
    consumer: GroupConsumer,
    group: Arc<GroupStats>,
    delivery: Delivery,
    processor: &mut P,
    shutdown: CancellationToken,
    settings: &LoopSettings,
    stats: Arc<PipelineStats>,
) -> DrainReport {
    let never = Duration::from_secs(u64::from(u32::MAX));
    let status_tick = interval(settings.status_interval.unwrap_or(never));
    let housekeeping_on = processor.tick_interval().is_some();
    let housekeeping = interval(processor.tick_interval().unwrap_or(never));
    let mut ctx = LoopContext {
        consumer: &consumer,
        group: &group,
        settings,
        stats: &stats,
        status_tick,
        housekeeping,
        housekeeping_on,
    };
    let (flushed, committed, handed_over) = match delivery {
        Delivery::AtLeastOnce(producer) => {
            let (flushed, committed) = at_least_once::run(&mut ctx, producer, processor, &shutdown).await;
            (flushed, committed, false)
        }
        Delivery::ExactlyOnce(tx) => exactly_once::run(&mut ctx, &tx, processor, &shutdown).await,
    };
    let closed = close_bounded(consumer, settings.shutdown_timeout).await;
    processor.tick();
    processor.status();
    stats.log_status("pipeline status", settings.name);
    group.log_status("group status", settings.name);
    let report = DrainReport { flushed, committed, closed, handed_over };
    tracing::info!(stage = settings.name, ?report, "stage stopped");
    report
}

/// What both loops share.
struct LoopContext<'a> {
    consumer: &'a GroupConsumer,
    group: &'a GroupStats,
    settings: &'a LoopSettings,
    stats: &'a PipelineStats,
    status_tick: tokio::time::Interval,
    /// Drives [`Processor::tick`], when `housekeeping_on`.
    housekeeping: tokio::time::Interval,
    housekeeping_on: bool,
}

impl LoopContext<'_> {
    fn status<P: Processor>(&self, processor: &P, in_flight: &InFlight) {
        processor.status();
        self.stats.log_status("pipeline status", self.settings.name);
        self.group.log_status("group status", self.settings.name);
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

#[cfg(test)]
mod tests {
    use super::DrainReport;

    #[test]
    fn a_drain_is_clean_when_everything_finished_or_the_group_took_the_work_back() {
        let all = DrainReport { flushed: true, committed: true, closed: true, handed_over: false };
        assert!(all.clean());
        let aborted = DrainReport { flushed: false, committed: false, ..all };
        assert!(!aborted.clean());
        assert!(DrainReport { handed_over: true, ..aborted }.clean());
        assert!(!DrainReport { closed: false, handed_over: true, ..aborted }.clean());
        assert!(!DrainReport { committed: false, ..all }.clean());
    }
}
