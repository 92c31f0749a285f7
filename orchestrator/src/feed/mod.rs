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

pub mod binance;
pub mod coinbase;
pub mod dedupe;
pub mod kraken;
pub mod protocol;
pub mod queue;
pub mod shoal_sim;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use futures::{SinkExt, StreamExt};
use rand::Rng;
use shoal_kafka::outputs::{MessageMeta, Outputs};
use shoal_kafka::producer::TrackedProducer;
use shoal_kafka::trace::Trace;
use shoal_protocol::messages::{BookTop, DataQuality, DataQualityKind, MarketTick, SCHEMA_VERSION, WireMessage};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::settings::FeedSettings;
use dedupe::{Dedupe, Verdict};
use protocol::{FrameError, Parsed};
use queue::{Item, Pushed, Queue};

/// How long the publisher may take to drain the queue at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Bound on connecting (TCP, TLS and the WebSocket handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Feed counters; read by status lines and tests.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Frames received (any kind).
    pub frames: AtomicU64,
    /// Trades written to Kafka.
    pub ticks: AtomicU64,
    /// Book tops written to Kafka.
    pub book_tops: AtomicU64,
    /// Data-quality events written to Kafka.
    pub data_quality: AtomicU64,
    /// Frames that could not be parsed, or of an unexpected kind.
    pub malformed: AtomicU64,
    /// Heartbeats received.
    pub heartbeats: AtomicU64,
    /// Sequence or trade-id gaps seen.
    pub sequence_gaps: AtomicU64,
    /// Trades dropped as repeats of trades already accepted.
    pub duplicates: AtomicU64,
    /// Messages dropped because their sequence number was not newer.
    pub out_of_order: AtomicU64,
    /// Items replaced by a newer one of the same symbol while Kafka was
    /// behind.
    pub coalesced: AtomicU64,
    /// Most items ever waiting between the socket and Kafka.
    pub queue_high_water: AtomicU64,
    /// Connection attempts after the first.
    pub reconnects: AtomicU64,
    /// Connections replaced because nothing arrived for `stale_after_ms`.
    pub stale_reconnects: AtomicU64,
    /// Subscription confirmations received.
    pub subscriptions: AtomicU64,
    /// Errors the exchange reported.
    pub exchange_errors: AtomicU64,
    /// Whether the feed is connected and subscribed now.
    pub connected: AtomicBool,
    /// Records that could not be enqueued for Kafka.
    pub produce_errors: AtomicU64,
}

impl FeedStats {
    /// Registers the counters as metrics, read at each scrape.
    pub fn register_metrics(self: &Arc<Self>) {
        let m = shoal_telemetry::metrics::metrics();
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

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL or a configured header is invalid (the value is never shown).
    #[error("invalid request: {0}")]
    Request(String),
    /// TCP, TLS or the WebSocket handshake failed.
    #[error("connect failed: {0}")]
    WebSocket(#[from] tungstenite::Error),
    /// No answer in time.
    #[error("connect timed out")]
    Timeout,
}

/// A connected feed socket.
pub type FeedSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens the feed's WebSocket: `ws://` plain, `wss://` through rustls with
/// the platform's root certificates, with the configured extra handshake
/// headers (marked sensitive, never logged).
pub async fn connect(feed: &FeedSettings) -> Result<FeedSocket, ConnectError> {
    install_crypto_provider();
    let mut request = feed.url.as_str().into_client_request().map_err(|e| ConnectError::Request(e.to_string()))?;
    for (key, value) in &feed.headers {
        let header = FeedSettings::header_name(key);
        let name = HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| ConnectError::Request(format!("invalid header name {header}")))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| ConnectError::Request(format!("invalid value for header {header}")))?;
        value.set_sensitive(true);
        request.headers_mut().insert(name, value);
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(feed.max_message_bytes))
        .max_frame_size(Some(feed.max_message_bytes));
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(error)) => Err(ConnectError::WebSocket(error)),
        Err(_) => Err(ConnectError::Timeout),
    }
}

/// rustls needs a process-wide crypto provider; tokio-tungstenite builds it
/// without one, so without this every `wss://` connect would panic.
fn install_crypto_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // An error only means another provider is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
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
    let mut ingest = Ingest { source: source_of(&feed.format), feed, stats, dedupe, queue: Arc::clone(&queue) };
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

fn source_of(format: &str) -> &'static str {
    match format {
        "binance" => binance::SOURCE,
        "coinbase" => coinbase::SOURCE,
        "kraken" => kraken::SOURCE,
        _ => shoal_sim::SOURCE,
    }
}

/// Exponential backoff with full jitter, capped.
fn backoff(feed: &FeedSettings, attempt: u32) -> Duration {
    let exp = feed.reconnect_initial_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
    let cap = exp.min(feed.reconnect_max_ms);
    Duration::from_millis(rand::rng().random_range(cap / 2..=cap))
}

/// The per-connection protocol state of the configured format.
#[derive(Debug)]
enum Adapter {
    Shoal { last_seq: Option<u64> },
    Binance,
    Coinbase(coinbase::State),
    Kraken,
}

impl Adapter {
    fn new(format: &str) -> Self {
        match format {
            "binance" => Adapter::Binance,
            "coinbase" => Adapter::Coinbase(coinbase::State::default()),
            "kraken" => Adapter::Kraken,
            _ => Adapter::Shoal { last_seq: None },
        }
    }

    fn subscribe_messages(&self, feed: &FeedSettings) -> Vec<String> {
        let channels = feed.effective_channels();
        match self {
            Adapter::Shoal { .. } => vec![shoal_sim::subscribe_request(&feed.symbols)],
            Adapter::Binance => match url::Url::parse(&feed.url) {
                Ok(url) if binance::url_names_streams(&url) => Vec::new(),
                _ => vec![binance::subscribe_request(&feed.symbols, &channels)],
            },
            Adapter::Coinbase(_) => vec![coinbase::subscribe_request(&feed.symbols, &channels)],
            Adapter::Kraken => kraken::subscribe_requests(&feed.symbols, &channels),
        }
    }

    fn parse(&mut self, text: &str, out: &mut Vec<Parsed>) -> Result<(), FrameError> {
        let now = Utc::now();
        match self {
            Adapter::Binance => binance::parse(text, now, out),
            Adapter::Coinbase(state) => state.parse(text, now, out),
            Adapter::Kraken => kraken::parse(text, now, out),
            Adapter::Shoal { last_seq } => {
                let frame = shoal_sim::parse(text, now).map_err(|error| match error {
                    shoal_sim::FrameError::UnknownType(t) => FrameError::UnknownType(t),
                    shoal_sim::FrameError::Binary(n) => FrameError::Binary(n),
                    shoal_sim::FrameError::Malformed(e) => FrameError::Malformed(e.to_string()),
                })?;
                let seq = match &frame {
                    shoal_sim::Frame::Trade(tick) => tick.sequence,
                    shoal_sim::Frame::Heartbeat { seq } => Some(*seq),
                    _ => None,
                };
                if let Some(seq) = seq {
                    if let Some(prev) = *last_seq
                        && seq > prev + 1
                    {
                        out.push(Parsed::Gap { symbol: "*".into(), expected: prev + 1, received: seq });
                    }
                    *last_seq = Some(seq);
                }
                out.push(match frame {
                    shoal_sim::Frame::Trade(tick) => Parsed::Trade { tick, continuity: false },
                    shoal_sim::Frame::Heartbeat { .. } => Parsed::Heartbeat { symbol: None, last_trade_id: None },
                    shoal_sim::Frame::Subscribed { symbols } => Parsed::Subscribed(format!("{symbols:?}")),
                    shoal_sim::Frame::Hello { symbols } => Parsed::Info(format!("hello, symbols {symbols:?}")),
                    shoal_sim::Frame::Control(text) => Parsed::ExchangeError(text),
                });
                Ok(())
            }
        }
    }

    /// A malformed frame still consumed a sequence number (Shoal format).
    fn on_malformed(&mut self) {
        if let Adapter::Shoal { last_seq } = self {
            *last_seq = last_seq.map(|s| s + 1);
        }
    }
}

struct Ingest {
    feed: FeedSettings,
    source: &'static str,
    stats: Arc<FeedStats>,
    dedupe: Dedupe,
    queue: Arc<Queue>,
}

impl Ingest {
    async fn run(&mut self, shutdown: &CancellationToken) {
        // `attempt` drives the backoff and restarts at 1 after a connection
        // that got as far as a confirmed subscription; every connection after
        // the first waits at least the initial delay.
        let mut attempt: u32 = 0;
        let mut connections: u64 = 0;
        loop {
            if connections > 0 {
                self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                let delay = backoff(&self.feed, attempt.max(1));
                tracing::info!(url = %self.feed.url, attempt, delay_ms = delay.as_millis() as u64, "reconnecting to feed");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
            attempt = attempt.saturating_add(1);
            connections += 1;
            match self.connect_and_stream(shutdown, &mut attempt).await {
                Disconnect::Shutdown => return,
                Disconnect::Lost(reason) => {
                    self.stats.connected.store(false, Ordering::Relaxed);
                    tracing::warn!(url = %self.feed.url, %reason, "feed connection lost");
                }
            }
        }
    }

    async fn connect_and_stream(&mut self, shutdown: &CancellationToken, attempt: &mut u32) -> Disconnect {
        let mut ws = tokio::select! {
            () = shutdown.cancelled() => return Disconnect::Shutdown,
            connected = connect(&self.feed) => match connected {
                Ok(ws) => ws,
                Err(error) => return Disconnect::Lost(error.to_string()),
            },
        };
        let mut adapter = Adapter::new(&self.feed.format);
        for request in adapter.subscribe_messages(&self.feed) {
            if let Err(error) = ws.send(Message::text(request)).await {
                return Disconnect::Lost(format!("subscribe failed: {error}"));
            }
        }
        tracing::info!(url = %self.feed.url, format = %self.feed.format, symbols = ?self.feed.symbols, "feed connected; subscribe sent");

        let stale_after = Duration::from_millis(self.feed.stale_after_ms);
        let ping_every = Duration::from_millis(self.feed.ping_interval_ms);
        let mut check = tokio::time::interval((stale_after / 4).clamp(Duration::from_millis(10), ping_every));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_received = Instant::now();
        let mut last_ping = Instant::now();
        let mut parsed = Vec::new();
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => {
                    close_gracefully(&mut ws).await;
                    return Disconnect::Shutdown;
                }
                _ = check.tick() => {
                    let quiet = last_received.elapsed();
                    if quiet >= stale_after {
                        self.stats.stale_reconnects.fetch_add(1, Ordering::Relaxed);
                        self.quality(DataQualityKind::StaleFeed, "*", None, format!("nothing received for {} ms", quiet.as_millis()));
                        return Disconnect::Lost(format!("stale: nothing received for {} ms", quiet.as_millis()));
                    }
                    if last_ping.elapsed() >= ping_every {
                        last_ping = Instant::now();
                        // Bounded: a stalled peer may not read at all.
                        let _ = tokio::time::timeout(ping_every, ws.send(Message::Ping(Vec::new().into()))).await;
                    }
                    continue;
                }
                next = ws.next() => next,
            };
            let message = match next {
                None => return Disconnect::Lost("stream ended".into()),
                Some(Err(error)) => return Disconnect::Lost(error.to_string()),
                Some(Ok(message)) => message,
            };
            last_received = Instant::now();
            self.stats.frames.fetch_add(1, Ordering::Relaxed);
            let result = match message {
                Message::Text(text) => adapter.parse(text.as_str(), &mut parsed),
                Message::Binary(bytes) => Err(FrameError::Binary(bytes.len())),
                Message::Close(frame) => return Disconnect::Lost(format!("server closed: {frame:?}")),
                // tungstenite answers pings itself; a pong only proves liveness.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            if let Err(error) = result {
                parsed.clear();
                adapter.on_malformed();
                let count = self.stats.malformed.fetch_add(1, Ordering::Relaxed) + 1;
                if sampled(count) {
                    tracing::warn!(%error, malformed_total = count, url = %self.feed.url, "skipping malformed feed frame (sampled log)");
                }
                continue;
            }
            for item in parsed.drain(..) {
                if let Some(confirmed) = self.handle(item) {
                    *attempt = 0;
                    tracing::info!(%confirmed, "feed subscription confirmed");
                }
            }
        }
    }

    /// Applies one parsed item; returns the confirmation text of a
    /// subscription.
    fn handle(&mut self, item: Parsed) -> Option<String> {
        match item {
            Parsed::Trade { tick, continuity } => {
                if let Some(id) = tick.trade_id.as_deref().and_then(|t| t.parse::<u64>().ok()) {
                    let space = dedupe::id_space(&tick);
                    match self.dedupe.trade(&tick.source, &tick.symbol, space, id, continuity) {
                        Verdict::Duplicate => {
                            let n = self.stats.duplicates.fetch_add(1, Ordering::Relaxed) + 1;
                            if sampled(n) {
                                tracing::info!(symbol = %tick.symbol, trade_id = id, duplicates_total = n, "dropping a repeated trade (sampled log)");
                            }
                            return None;
                        }
                        Verdict::New { gap: Some((expected, received)) } => {
                            self.gap(&tick.symbol.clone(), expected, received, "trade id skipped ahead");
                        }
                        Verdict::New { gap: None } => {}
                    }
                }
                // Binance URL streams confirm nothing: data is the proof.
                self.stats.connected.store(true, Ordering::Relaxed);
                self.enqueue(Item::Tick(tick));
            }
            Parsed::Book(top) => {
                self.stats.connected.store(true, Ordering::Relaxed);
                self.enqueue(Item::Book(top));
            }
            Parsed::Heartbeat { symbol, last_trade_id } => {
                self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                if let (Some(symbol), Some(last)) = (symbol, last_trade_id)
                    && let Some((expected, received)) = self.dedupe.announced(self.source, &symbol, "trade", last)
                {
                    self.gap(&symbol, expected, received, "heartbeat's last_trade_id is ahead of the trades received");
                }
            }
            Parsed::Gap { symbol, expected, received } => {
                self.gap(&symbol, expected, received, "sequence number skipped ahead");
            }
            Parsed::Stale(what) => {
                let n = self.stats.out_of_order.fetch_add(1, Ordering::Relaxed) + 1;
                if sampled(n) {
                    tracing::info!(%what, out_of_order_total = n, "dropping an out-of-order message (sampled log)");
                }
            }
            Parsed::Subscribed(text) => {
                self.stats.connected.store(true, Ordering::Relaxed);
                self.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
                return Some(text);
            }
            Parsed::Info(text) => tracing::debug!(%text, "feed message"),
            Parsed::ExchangeError(text) => {
                let n = self.stats.exchange_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if sampled(n) {
                    tracing::warn!(%text, errors_total = n, "the feed reported an error (sampled log)");
                }
            }
        }
        None
    }

    fn gap(&mut self, symbol: &str, expected: u64, received: u64, detail: &str) {
        let gaps = self.stats.sequence_gaps.fetch_add(1, Ordering::Relaxed) + 1;
        if sampled(gaps) {
            tracing::warn!(
                source = self.source,
                symbol,
                expected,
                received,
                gaps_total = gaps,
                detail,
                "feed sequence gap (sampled log)"
            );
        }
        self.quality(DataQualityKind::SequenceGap, symbol, Some((expected, received)), detail.to_owned());
    }

    fn quality(&mut self, kind: DataQualityKind, symbol: &str, range: Option<(u64, u64)>, detail: String) {
        self.enqueue(Item::Quality(DataQuality {
            schema_version: SCHEMA_VERSION,
            source: self.source.into(),
            symbol: symbol.into(),
            kind,
            expected: range.map(|(e, _)| e),
            received: range.map(|(_, r)| r),
            missing: range.map(|(e, r)| r.saturating_sub(e)),
            detail,
            detected_at: Utc::now(),
        }));
    }

    fn enqueue(&mut self, item: Item) {
        if self.queue.push(item) == Pushed::Coalesced {
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.queue_high_water.fetch_max(self.queue.high_water() as u64, Ordering::Relaxed);
    }
}

/// Publishes queued items to Kafka, at most `max_per_sec` per second if set.
async fn publish_loop(queue: Arc<Queue>, sink: TickSink, stats: Arc<FeedStats>, max_per_sec: u64) {
    let pace = (max_per_sec > 0).then(|| Duration::from_secs_f64(1.0 / max_per_sec as f64));
    let mut next = Instant::now();
    while let Some(item) = queue.pop().await {
        if let Some(pace) = pace {
            next += pace;
            let now = Instant::now();
            if next > now {
                tokio::time::sleep_until(next).await;
            } else if now.duration_since(next) > Duration::from_secs(1) {
                next = now;
            }
        }
        publish(&sink, &item, &stats).await;
    }
}

async fn publish(sink: &TickSink, item: &Item, stats: &FeedStats) {
    // The root of a decision's trace: an item received from the feed and
    // written to the ticks topic.
    let (source, sequence, trade_id) = match item {
        Item::Tick(t) => (t.source.as_str(), t.sequence, t.trade_id.as_deref().unwrap_or_default()),
        Item::Book(b) => (b.source.as_str(), None, ""),
        Item::Quality(q) => (q.source.as_str(), None, ""),
    };
    let trace = Trace::root();
    let span = trace.span(|| {
        tracing::info_span!(
        parent: None,
        "feed receive",
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = %sink.topic,
        messaging.kafka.message.key = %item.symbol(),
        shoal.feed.source = %source,
        shoal.feed.sequence = sequence,
        symbol = %item.symbol(),
        trade_id,
        )
    });
    let mut out = trace.outputs();
    let (counter, message_type) = match item {
        Item::Tick(_) => (&stats.ticks, "tick"),
        Item::Book(_) => (&stats.book_tops, "book_top"),
        Item::Quality(_) => (&stats.data_quality, "data_quality"),
    };
    let meta = MessageMeta { message_type, producer_id: &sink.producer_id, command_id: None };
    fn add<M: WireMessage>(
        out: &mut Outputs,
        sink: &TickSink,
        meta: &MessageMeta<'_>,
        m: &M,
        key: &str,
        span: &tracing::Span,
    ) {
        out.message(&sink.topic, key, meta, m, span);
    }
    match item {
        Item::Tick(t) => add::<MarketTick>(&mut out, sink, &meta, t, &t.symbol, &span),
        Item::Book(b) => add::<BookTop>(&mut out, sink, &meta, b, &b.symbol, &span),
        Item::Quality(q) => add::<DataQuality>(&mut out, sink, &meta, q, &q.symbol, &span),
    }
    let sent = match out.take().pop() {
        Some(output) => sink.producer.send(output, None).await,
        None => Ok(()),
    };
    match sent {
        Ok(()) => {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => {
            let count = stats.produce_errors.fetch_add(1, Ordering::Relaxed) + 1;
            if sampled(count) {
                tracing::error!(%error, symbol = %item.symbol(), "cannot enqueue a feed record for Kafka");
            }
        }
    }
}

/// Sends a close frame and waits (bounded) for the server's answer, so the
/// server sees a clean close rather than a dropped connection.
async fn close_gracefully<S>(ws: &mut WebSocketStream<S>)
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
    fn shoal_sequence_gaps_are_reported_and_malformed_frames_consume_a_number() {
        let mut adapter = Adapter::new("shoal-sim");
        let mut out = Vec::new();
        for seq in [1, 2, 3] {
            adapter
                .parse(&format!(r#"{{"type":"heartbeat","seq":{seq},"ts":"2026-11-25T02:04:05Z"}}"#), &mut out)
                .unwrap();
        }
        adapter.on_malformed();
        adapter.parse(r#"{"type":"heartbeat","seq":5,"ts":"2026-11-25T02:04:05Z"}"#, &mut out).unwrap();
        assert!(!out.iter().any(|p| matches!(p, Parsed::Gap { .. })), "4 was the malformed frame");
        adapter.parse(r#"{"type":"heartbeat","seq":9,"ts":"2026-11-25T02:04:05Z"}"#, &mut out).unwrap();
        assert!(out.iter().any(|p| matches!(p, Parsed::Gap { expected: 6, received: 9, .. })), "{out:?}");
    }

    #[test]
    fn subscribe_messages_follow_the_format() {
        let feed = |format: &str, url: &str| FeedSettings {
            format: format.into(),
            url: url.into(),
            symbols: vec!["BTCUSDT".into()],
            ..FeedSettings::default()
        };
        assert!(Adapter::new("binance").subscribe_messages(&feed("binance", "ws://x/ws/btcusdt@trade")).is_empty());
        assert_eq!(Adapter::new("binance").subscribe_messages(&feed("binance", "ws://x/ws")).len(), 1);
        assert_eq!(Adapter::new("kraken").subscribe_messages(&feed("kraken", "ws://x/v2")).len(), 2, "one per channel");
        let cb = Adapter::new("coinbase").subscribe_messages(&feed("coinbase", "ws://x"));
        assert!(cb[0].contains(r#""channels":["matches","ticker","heartbeat"]"#), "{cb:?}");
    }
}
