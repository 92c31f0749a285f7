//! Feed ingest: keeps a WebSocket connection to the market data feed,
//! normalises trades into [`MarketTick`]s and writes them to the ticks topic
//! keyed by symbol. Everything downstream reads Kafka, so it is replayable.
//!
//! On a dropped connection it reconnects with capped exponential backoff and
//! jitter and subscribes again; malformed frames are counted, logged (sampled)
//! and skipped; on shutdown it closes the socket with a close handshake.

pub mod shoal_sim;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use futures::{SinkExt, StreamExt};
use rand::Rng;
use shoal_common::kafka::outputs::{MessageMeta, Outputs};
use shoal_common::kafka::producer::TrackedProducer;
use shoal_common::messages::MarketTick;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::settings::FeedSettings;
use shoal_sim::{Frame, FrameError};

/// Feed counters; read by status lines and tests.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Frames received (any kind).
    pub frames: AtomicU64,
    /// Ticks written to Kafka.
    pub ticks: AtomicU64,
    /// Frames that could not be parsed, or of an unexpected kind.
    pub malformed: AtomicU64,
    /// Heartbeats received.
    pub heartbeats: AtomicU64,
    /// Feed sequence numbers that skipped ahead.
    pub sequence_gaps: AtomicU64,
    /// Connection attempts after the first.
    pub reconnects: AtomicU64,
    /// Whether the feed is connected and subscribed now.
    pub connected: AtomicBool,
    /// Ticks that could not be enqueued for Kafka.
    pub produce_errors: AtomicU64,
}

impl FeedStats {
    /// Registers the counters as metrics, read at each scrape.
    pub fn register_metrics(self: &Arc<Self>) {
        let m = shoal_common::observability::metrics();
        type Read = fn(&FeedStats) -> u64;
        let counters: [(&'static str, &'static str, Read); 7] = [
            ("shoal_feed_frames", "WebSocket frames received from the feed", |s| s.frames.load(Ordering::Relaxed)),
            ("shoal_feed_ticks", "Ticks ingested (written to the ticks topic)", |s| s.ticks.load(Ordering::Relaxed)),
            ("shoal_feed_malformed", "Feed frames that could not be parsed", |s| s.malformed.load(Ordering::Relaxed)),
            ("shoal_feed_heartbeats", "Feed heartbeats received", |s| s.heartbeats.load(Ordering::Relaxed)),
            ("shoal_feed_sequence_gaps", "Feed sequence numbers that skipped ahead", |s| {
                s.sequence_gaps.load(Ordering::Relaxed)
            }),
            ("shoal_feed_reconnects", "Feed connection attempts after the first", |s| {
                s.reconnects.load(Ordering::Relaxed)
            }),
            ("shoal_feed_produce_errors", "Ticks that could not be enqueued for Kafka", |s| {
                s.produce_errors.load(Ordering::Relaxed)
            }),
        ];
        for (name, help, read) in counters {
            let stats = self.clone();
            m.counter(name, help, vec![], move || read(&stats));
        }
        let stats = self.clone();
        m.gauge("shoal_feed_connected", "1 when the feed is connected and subscribed", vec![], move || {
            i64::from(stats.connected.load(Ordering::Relaxed))
        });
    }
}

/// Where ticks go.
#[derive(Debug, Clone)]
pub struct TickSink {
    /// Producer for the ticks topic.
    pub producer: TrackedProducer,
    /// Ticks topic name.
    pub topic: String,
    /// Identity for the `shoal-producer` header.
    pub producer_id: String,
}

/// Log the 1st..10th occurrence, then every power of two: enough to see a
/// problem without flooding the log when a feed sends garbage at a high rate.
fn sampled(count: u64) -> bool {
    count <= 10 || count.is_power_of_two()
}

enum Disconnect {
    Shutdown,
    Lost(String),
}

/// Runs ingest until `shutdown` is cancelled.
pub async fn run(feed: FeedSettings, sink: TickSink, shutdown: CancellationToken, stats: Arc<FeedStats>) {
    let mut attempt: u32 = 0;
    loop {
        if attempt > 0 {
            stats.reconnects.fetch_add(1, Ordering::Relaxed);
            let delay = backoff(&feed, attempt);
            tracing::info!(url = %feed.url, attempt, delay_ms = delay.as_millis() as u64, "reconnecting to feed");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
        attempt = attempt.saturating_add(1);
        match connect_and_stream(&feed, &sink, &shutdown, &stats, &mut attempt).await {
            Disconnect::Shutdown => return,
            Disconnect::Lost(reason) => {
                stats.connected.store(false, Ordering::Relaxed);
                tracing::warn!(url = %feed.url, %reason, "feed connection lost");
            }
        }
    }
}

/// Exponential backoff with full jitter, capped.
fn backoff(feed: &FeedSettings, attempt: u32) -> Duration {
    let exp = feed.reconnect_initial_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
    let cap = exp.min(feed.reconnect_max_ms);
    Duration::from_millis(rand::rng().random_range(cap / 2..=cap))
}

async fn connect_and_stream(
    feed: &FeedSettings,
    sink: &TickSink,
    shutdown: &CancellationToken,
    stats: &FeedStats,
    attempt: &mut u32,
) -> Disconnect {
    let config = WebSocketConfig::default()
        .max_message_size(Some(feed.max_message_bytes))
        .max_frame_size(Some(feed.max_message_bytes));
    let connecting = tokio_tungstenite::connect_async_with_config(feed.url.as_str(), Some(config), false);
    let mut ws = tokio::select! {
        () = shutdown.cancelled() => return Disconnect::Shutdown,
        connected = tokio::time::timeout(Duration::from_secs(10), connecting) => match connected {
            Ok(Ok((ws, _response))) => ws,
            Ok(Err(error)) => return Disconnect::Lost(format!("connect failed: {error}")),
            Err(_) => return Disconnect::Lost("connect timed out".into()),
        },
    };
    if let Err(error) = ws.send(Message::text(shoal_sim::subscribe_request(&feed.symbols))).await {
        return Disconnect::Lost(format!("subscribe failed: {error}"));
    }
    tracing::info!(url = %feed.url, symbols = ?feed.symbols, "feed connected; subscribe sent");
    let mut last_seq: Option<u64> = None;
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => {
                close_gracefully(&mut ws).await;
                return Disconnect::Shutdown;
            }
            next = ws.next() => next,
        };
        let message = match next {
            None => return Disconnect::Lost("stream ended".into()),
            Some(Err(error)) => return Disconnect::Lost(error.to_string()),
            Some(Ok(message)) => message,
        };
        stats.frames.fetch_add(1, Ordering::Relaxed);
        let parsed = match message {
            Message::Text(text) => shoal_sim::parse(text.as_str(), Utc::now()),
            Message::Binary(bytes) => Err(FrameError::Binary(bytes.len())),
            Message::Close(frame) => return Disconnect::Lost(format!("server closed: {frame:?}")),
            // tungstenite answers pings itself; pongs and raw frames need nothing.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        match parsed {
            Ok(Frame::Trade(tick)) => {
                check_sequence(&mut last_seq, tick.sequence, stats);
                publish(sink, &tick, stats).await;
            }
            Ok(Frame::Heartbeat { seq }) => {
                stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                check_sequence(&mut last_seq, Some(seq), stats);
            }
            Ok(Frame::Subscribed { symbols }) => {
                stats.connected.store(true, Ordering::Relaxed);
                *attempt = 0;
                tracing::info!(?symbols, "feed subscription confirmed");
            }
            Ok(Frame::Hello { symbols }) => tracing::debug!(?symbols, "feed hello"),
            Ok(Frame::Control(text)) => tracing::warn!(%text, "feed control message"),
            Err(error) => {
                let count = stats.malformed.fetch_add(1, Ordering::Relaxed) + 1;
                if sampled(count) {
                    tracing::warn!(%error, malformed_total = count, url = %feed.url, "skipping malformed feed frame (sampled log)");
                }
                // A malformed frame still consumed a sequence number.
                last_seq = last_seq.map(|s| s + 1);
            }
        }
    }
}

fn check_sequence(last: &mut Option<u64>, seq: Option<u64>, stats: &FeedStats) {
    let Some(seq) = seq else { return };
    if let Some(prev) = *last
        && seq > prev + 1
    {
        let gaps = stats.sequence_gaps.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(expected = prev + 1, got = seq, gaps_total = gaps, "feed sequence gap");
    }
    *last = Some(seq);
}

async fn publish(sink: &TickSink, tick: &MarketTick, stats: &FeedStats) {
    // The root of a decision's trace: a trade received from the feed and
    // written to the ticks topic.
    let span = tracing::info_span!(
        parent: None,
        "feed receive",
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = %sink.topic,
        messaging.kafka.message.key = %tick.symbol,
        shoal.feed.source = %tick.source,
        shoal.feed.sequence = tick.sequence,
        symbol = %tick.symbol,
        trade_id = tick.trade_id.as_deref().unwrap_or_default(),
    );
    let meta = MessageMeta { message_type: "tick", producer_id: &sink.producer_id, command_id: None };
    let mut out = Outputs::new();
    out.message(&sink.topic, &tick.symbol, &meta, tick, &span);
    let sent = match out.take().pop() {
        Some(output) => sink.producer.send(output, None).await,
        None => Ok(()),
    };
    match sent {
        Ok(()) => {
            stats.ticks.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => {
            let count = stats.produce_errors.fetch_add(1, Ordering::Relaxed) + 1;
            if sampled(count) {
                tracing::error!(%error, symbol = %tick.symbol, "cannot enqueue tick for Kafka");
            }
        }
    }
}

/// Sends a close frame and waits (bounded) for the server's answer, so the
/// server sees a clean close rather than a dropped connection.
async fn close_gracefully<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = CloseFrame { code: CloseCode::Normal, reason: "orchestrator shutting down".into() };
    if let Err(error) = ws.close(Some(frame)).await {
        tracing::debug!(%error, "close frame not sent");
        return;
    }
    let drained =
        tokio::time::timeout(Duration::from_secs(2), async { while let Some(Ok(_)) = ws.next().await {} }).await;
    match drained {
        Ok(()) => tracing::info!("feed closed with a close handshake"),
        Err(_) => tracing::warn!("feed did not answer the close frame in time"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let feed = FeedSettings { reconnect_initial_ms: 100, reconnect_max_ms: 1_000, ..FeedSettings::default() };
        for attempt in 1..40 {
            let d = backoff(&feed, attempt).as_millis() as u64;
            assert!(d <= 1_000, "attempt {attempt}: {d}");
        }
        assert!(backoff(&feed, 1).as_millis() <= 100);
    }

    #[test]
    fn gaps_are_counted() {
        let stats = FeedStats::default();
        let mut last = None;
        for seq in [1, 2, 3, 5, 6, 9] {
            check_sequence(&mut last, Some(seq), &stats);
        }
        assert_eq!(stats.sequence_gaps.load(Ordering::Relaxed), 2);
    }
}
