//! Feed counters: read by status lines, metrics and tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

shoal_telemetry::counters! {
    /// Feed counters; read by status lines, metrics and tests.
    pub struct FeedStats {
        /// Frames received (any kind).
        frames => counter("shoal_feed_frames", "WebSocket frames received from the feed"),
        /// Trades written to Kafka.
        ticks => counter("shoal_feed_ticks", "Ticks ingested (written to the ticks topic)"),
        /// Book tops written to Kafka.
        book_tops,
        /// Data-quality events written to Kafka.
        data_quality,
        /// Frames that could not be parsed, or of an unexpected kind.
        malformed => counter("shoal_feed_malformed", "Feed frames that could not be parsed"),
        /// Heartbeats received.
        heartbeats => counter("shoal_feed_heartbeats", "Feed heartbeats received"),
        /// Sequence or trade-id gaps seen.
        sequence_gaps => counter("shoal_feed_sequence_gaps", "Feed sequence numbers that skipped ahead"),
        /// Trades dropped as repeats of trades already accepted.
        duplicates,
        /// Messages dropped because their sequence number was not newer.
        out_of_order,
        /// Items replaced by a newer one of the same symbol while Kafka was
        /// behind.
        coalesced,
        /// Most items ever waiting between the socket and Kafka.
        queue_high_water,
        /// Connection attempts after the first.
        reconnects => counter("shoal_feed_reconnects", "Feed connection attempts after the first"),
        /// Connections replaced because nothing arrived for `stale_after_ms`.
        stale_reconnects,
        /// Subscription confirmations received.
        subscriptions,
        /// Errors the exchange reported.
        exchange_errors,
        /// Records that could not be enqueued for Kafka.
        produce_errors => counter("shoal_feed_produce_errors", "Ticks that could not be enqueued for Kafka"),
    }
    with {
        /// Whether the feed is connected and subscribed now.
        pub connected: AtomicBool,
    }
    status {
        connected = |s: &FeedStats| s.connected.load(Ordering::Relaxed),
    }
}

impl FeedStats {
    /// Registers the counters as metrics, read at each scrape, and the
    /// connection gauge.
    pub fn register_all(self: &Arc<Self>, metrics: &shoal_telemetry::metrics::Metrics) {
        self.register_metrics(metrics, &[]);
        let stats = self.clone();
        metrics.gauge("shoal_feed_connected", "1 when the feed is connected and subscribed", vec![], move || {
            i64::from(stats.connected.load(Ordering::Relaxed))
        });
    }

    /// Logs the status line (`feed status`).
    pub fn status(&self) {
        self.log_status("feed status", "ingest");
    }
}

/// What became of the records ingest handed to its producer, once it has
/// stopped and the producer has been flushed: each must have been
/// acknowledged by the brokers or reported failed. One that is neither is a
/// record lost without a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryAccount {
    /// Records enqueued (ticks, book tops, data-quality events).
    pub enqueued: u64,
    /// Delivery reports: acknowledged.
    pub acknowledged: u64,
    /// Delivery reports: failed (each logged with its error).
    pub failed: u64,
}

impl DeliveryAccount {
    /// The account of `stats` against the delivery reports of ingest's own
    /// producer (`(acknowledged, failed)`).
    pub fn of(stats: &FeedStats, (acknowledged, failed): (u64, u64)) -> Self {
        let enqueued = stats.ticks.load(Ordering::Relaxed)
            + stats.book_tops.load(Ordering::Relaxed)
            + stats.data_quality.load(Ordering::Relaxed);
        Self { enqueued, acknowledged, failed }
    }

    /// Records enqueued with no delivery report.
    pub fn unaccounted(&self) -> u64 {
        self.enqueued.saturating_sub(self.acknowledged + self.failed)
    }

    /// Logs the account: `info` when every record was acknowledged, `error`
    /// otherwise.
    pub fn log(&self) {
        let (enqueued, acknowledged, failed, unaccounted) =
            (self.enqueued, self.acknowledged, self.failed, self.unaccounted());
        if acknowledged == enqueued && failed == 0 {
            tracing::info!(enqueued, acknowledged, failed, unaccounted, "ingest delivery account");
        } else {
            tracing::error!(
                enqueued,
                acknowledged,
                failed,
                unaccounted,
                "ingest delivery account: records not acknowledged"
            );
        }
    }
}

#[cfg(test)]
mod account_tests {
    use super::*;

    #[test]
    fn unaccounted_is_what_has_no_delivery_report() {
        let stats = FeedStats::default();
        stats.ticks.store(10, Ordering::Relaxed);
        stats.data_quality.store(1, Ordering::Relaxed);
        assert_eq!(DeliveryAccount::of(&stats, (11, 0)).unaccounted(), 0);
        assert_eq!(DeliveryAccount::of(&stats, (9, 1)).unaccounted(), 1);
        assert_eq!(DeliveryAccount::of(&stats, (8, 3)).unaccounted(), 0);
    }
}
