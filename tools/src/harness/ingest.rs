//! Feed ingest run in the test process, and what it wrote to the ticks
//! topic.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use shoal_orchestrator::feed::{DeliveryAccount, FeedStats};
use shoal_orchestrator::settings::FeedSettings;
use shoal_protocol::messages::{BookTop, DataQuality, MarketTick, WireMessage};

use super::kafka::header;
use super::proc::eventually;
use super::reader::TopicReader;
use super::scope::{Scope, kafka_settings};

/// Settings of a feed in `format` at `url` for `symbols`, recovering no
/// trade ids from the topic (tests start on empty topics).
pub fn feed_settings(format: &str, url: String, symbols: &[&str]) -> FeedSettings {
    FeedSettings {
        format: format.parse().expect("a feed format name"),
        url,
        symbols: symbols.iter().map(|s| (*s).to_owned()).collect(),
        recover_tail_records: 0,
        ..FeedSettings::default()
    }
}

/// Feed ingest running in this process, writing to a scope's ticks topic.
#[derive(Debug)]
pub struct Ingest {
    /// The feed's counters.
    pub stats: Arc<FeedStats>,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
    producer: shoal_kafka::producer::TrackedProducer,
}

impl Ingest {
    /// Starts ingest of `feed` into the scope's ticks topic from `dedupe`.
    pub fn start(scope: &Scope, feed: FeedSettings, dedupe: shoal_orchestrator::feed::dedupe::Dedupe) -> Self {
        use shoal_kafka::offsets::OffsetTracker;
        use shoal_kafka::producer::TrackedProducer;
        let producer = TrackedProducer::new(&kafka_settings(), "it-ingest", Arc::new(OffsetTracker::new())).unwrap();
        let sink = shoal_orchestrator::feed::TickSink {
            producer: producer.clone(),
            topic: scope.topics.ticks.name.clone(),
            producer_id: "it-ingest".into(),
            sampler: Arc::new(shoal_kafka::trace::Sampler::off()),
        };
        let stats = Arc::new(FeedStats::default());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task =
            tokio::spawn(shoal_orchestrator::feed::run_with(feed, sink, shutdown.clone(), stats.clone(), dedupe));
        Self { stats, shutdown, task, producer }
    }

    /// [`Ingest::start`] from a fresh deduplication state, then waits until
    /// `condition` holds on the counters.
    pub async fn start_until(
        scope: &Scope,
        feed: FeedSettings,
        timeout: Duration,
        what: &str,
        condition: impl Fn(&Self) -> bool,
    ) -> Self {
        let ingest = Self::start(scope, feed, shoal_orchestrator::feed::dedupe::Dedupe::new());
        ingest.wait_for(timeout, what, condition).await;
        ingest
    }

    /// A counter's value.
    pub fn count(&self, counter: impl Fn(&FeedStats) -> &AtomicU64) -> u64 {
        counter(&self.stats).load(Ordering::Relaxed)
    }

    /// Waits until `condition` holds on the counters.
    pub async fn wait_for(&self, timeout: Duration, what: &str, condition: impl Fn(&Self) -> bool) {
        eventually(timeout, what, || {
            let ok = condition(self);
            async move { ok }
        })
        .await;
    }

    /// Stops ingest (close handshake, queue drained) and flushes to Kafka;
    /// checks that every record enqueued was acknowledged by the broker.
    pub async fn stop(self) -> Arc<FeedStats> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task).await.expect("ingest stops in time").unwrap();
        self.producer.flush(Duration::from_secs(10)).await.unwrap();
        let account = DeliveryAccount::of(&self.stats, self.producer.health().deliveries());
        assert_eq!(account.acknowledged, account.enqueued, "every record ingest enqueued acknowledged: {account:?}");
        self.stats
    }

    /// [`Ingest::stop`], then reads back everything it wrote to the scope's
    /// ticks topic ([`FeedRecords::read`]).
    pub async fn stop_and_read(self, scope: &Scope, timeout: Duration) -> (Arc<FeedStats>, FeedRecords) {
        let stats = self.stop().await;
        let records = FeedRecords::read(scope, records_written(&stats), timeout).await;
        (stats, records)
    }
}

/// Records ingest wrote: trades, book tops and data-quality events.
pub fn records_written(stats: &FeedStats) -> u64 {
    stats.ticks.load(Ordering::Relaxed)
        + stats.book_tops.load(Ordering::Relaxed)
        + stats.data_quality.load(Ordering::Relaxed)
}

/// A ticks topic's records, decoded by their `shoal-message-type` header.
#[derive(Debug, Default)]
pub struct FeedRecords {
    /// Trades, in topic order per partition.
    pub ticks: Vec<MarketTick>,
    /// Book tops.
    pub books: Vec<BookTop>,
    /// Data-quality events.
    pub quality: Vec<DataQuality>,
}

impl FeedRecords {
    /// Reads the scope's ticks topic until it holds `written` records, then
    /// to its end, and decodes it.
    pub async fn read(scope: &Scope, written: u64, timeout: Duration) -> Self {
        let mut reader = TopicReader::new(&scope.topics.ticks.name);
        // The broker acknowledged `written` records (Ingest::stop checks):
        // fewer on the topic would be a loss after acknowledgement.
        let what = format!("the {written} records ingest wrote and the broker acknowledged");
        reader.read_until(timeout, &what, |m| m.len() as u64 >= written).await;
        reader.read_to_end(timeout).await;
        decode_feed(&reader.messages)
    }

    /// Checks that each symbol's trade ids run on one by one: `what` says
    /// what a break would mean.
    pub fn assert_consecutive(&self, what: &str) {
        for (symbol, ids) in trade_ids_by_symbol(&self.ticks) {
            assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{symbol}: {what}: {ids:?}");
        }
    }
}

/// Decodes a ticks topic, checking every record is keyed by its symbol.
pub fn decode_feed(messages: &[OwnedMessage]) -> FeedRecords {
    let mut records = FeedRecords::default();
    for m in messages {
        let payload = m.payload().unwrap_or_default();
        let kind = header(m, "shoal-message-type").unwrap_or_default();
        let symbol = match kind.as_str() {
            "tick" => {
                let t = MarketTick::decode(payload).unwrap();
                let s = t.symbol.clone();
                records.ticks.push(t);
                s
            }
            "book_top" => {
                let b = BookTop::decode(payload).unwrap();
                let s = b.symbol.clone();
                records.books.push(b);
                s
            }
            "data_quality" => {
                let q = DataQuality::decode(payload).unwrap();
                let s = q.symbol.clone();
                records.quality.push(q);
                s
            }
            other => panic!("unexpected message type {other:?} on the ticks topic"),
        };
        assert_eq!(m.key(), Some(symbol.as_bytes()), "keyed by symbol");
    }
    records
}

/// Trade ids per symbol of `ticks`, in topic order.
pub fn trade_ids_by_symbol(ticks: &[MarketTick]) -> HashMap<String, Vec<u64>> {
    let mut ids: HashMap<String, Vec<u64>> = HashMap::new();
    for t in ticks {
        ids.entry(t.symbol.clone()).or_default().push(t.trade_id.as_deref().unwrap().parse().unwrap());
    }
    ids
}
