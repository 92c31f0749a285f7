//! Feed ingest: keeps a WebSocket connection to a market data feed (the
//! bundled simulator, Binance spot, Coinbase Exchange or Kraken v2),
//! normalises trades into [`MarketTick`]s and best bid/offer into
//! [`BookTop`]s, and writes them to the ticks topic keyed by symbol.
//! Everything downstream reads Kafka, so it is replayable.
//!
//! Resilience:
//! - reconnect with capped exponential backoff and jitter, then subscribe
//!   again;
//! - WebSocket pings every `ping_interval_ms`; nothing received (data,
//!   heartbeat or pong) for `stale_after_ms` replaces the connection and
//!   writes a `stale_feed` data-quality event;
//! - sequence and trade-id gaps are counted, logged and written as
//!   `sequence_gap` data-quality events ([`DataQuality`]) in order with the
//!   symbol's ticks;
//! - repeats (by the exchange's trade id) are dropped, across reconnects and
//!   restarts ([`dedupe`]);
//! - malformed or unexpected frames are counted, logged (sampled) and
//!   skipped; frames and messages above `max_message_bytes` are refused;
//! - a bounded, coalescing [`queue`] sits between the socket and Kafka, so a
//!   slow Kafka never grows memory nor stalls the socket;
//! - on shutdown the socket is closed with a close handshake.
//!
//! [`MarketTick`]: shoal_protocol::messages::MarketTick
//! [`BookTop`]: shoal_protocol::messages::BookTop
//! [`DataQuality`]: shoal_protocol::messages::DataQuality

pub mod binance;
pub mod coinbase;
mod connect;
pub mod dedupe;
pub mod format;
mod ingest;
pub mod kraken;
pub mod protocol;
mod publish;
pub mod queue;
mod settings;
pub mod shoal_sim;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use shoal_kafka::producer::TrackedProducer;
use tokio_util::sync::CancellationToken;

pub use connect::{ConnectError, FeedSocket, connect};
pub use format::FeedFormat;
pub use settings::FeedSettings;
pub use stats::{DeliveryAccount, FeedStats};

use dedupe::Dedupe;
use ingest::Ingest;
use publish::publish_loop;
use queue::Queue;

/// How long the publisher may take to drain the queue at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Where ticks go.
#[derive(Debug, Clone)]
pub struct TickSink {
    /// Producer for the ticks topic.
    pub producer: TrackedProducer,
    /// Ticks topic name.
    pub topic: String,
    /// Identity for the `shoal-producer` header.
    pub producer_id: String,
    /// Which decisions (each starts at a tick) are traced.
    pub sampler: Arc<shoal_kafka::trace::Sampler>,
}

/// Log the 1st..10th occurrence, then every power of two: enough to see a
/// problem without flooding the log when a feed sends garbage at a high rate.
fn sampled(count: u64) -> bool {
    count <= 10 || count.is_power_of_two()
}

/// Runs ingest until `shutdown` is cancelled, with empty dedupe state.
pub async fn run(feed: FeedSettings, sink: TickSink, shutdown: CancellationToken, stats: Arc<FeedStats>) {
    run_with(feed, sink, shutdown, stats, Dedupe::new()).await;
}

/// Runs ingest until `shutdown` is cancelled, starting from `dedupe` (for
/// example recovered from the ticks topic by [`dedupe::recover`]).
pub async fn run_with(
    feed: FeedSettings,
    sink: TickSink,
    shutdown: CancellationToken,
    stats: Arc<FeedStats>,
    dedupe: Dedupe,
) {
    let queue = Arc::new(Queue::new(feed.queue_capacity));
    let publisher = tokio::spawn(publish_loop(Arc::clone(&queue), sink, Arc::clone(&stats), feed.max_publish_per_sec));
    let mut ingest = Ingest { source: feed.format.source_name(), feed, stats, dedupe, queue: Arc::clone(&queue) };
    ingest.run(&shutdown).await;
    queue.close();
    let mut publisher = publisher;
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut publisher).await {
        Ok(_) => {}
        Err(_) => {
            publisher.abort();
            tracing::warn!(left = queue.len(), "feed queue not drained to Kafka before shutdown; the rest is dropped");
        }
    }
}
