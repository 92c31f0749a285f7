//! The connection loop: connect, subscribe, read frames until the
//! connection is lost or stale, reconnect with backoff; parsed items are
//! deduplicated and queued for the publisher.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use futures::{SinkExt, StreamExt};
use rand::Rng;
use shoal_protocol::messages::{DataQuality, DataQualityKind, SCHEMA_VERSION};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::FeedSettings;
use super::connect::{ConnectError, FeedSocket, close_gracefully, connect};
use super::dedupe::{self, Dedupe, Verdict};
use super::protocol::{FrameError, Parsed, Subscription};
use super::queue::{Item, Pushed, Queue};
use super::{FeedStats, sampled};

enum Disconnect {
    Shutdown,
    /// No connection was made.
    Refused(ConnectError),
    /// The connection was made, then lost.
    Lost(String),
}

/// Exponential backoff with full jitter, capped.
fn backoff(feed: &FeedSettings, attempt: u32) -> Duration {
    let exp = feed.reconnect_initial_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
    let cap = exp.min(feed.reconnect_max_ms);
    Duration::from_millis(rand::rng().random_range(cap / 2..=cap))
}

pub(super) struct Ingest {
    pub(super) feed: FeedSettings,
    pub(super) source: &'static str,
    pub(super) stats: Arc<FeedStats>,
    pub(super) dedupe: Dedupe,
    pub(super) queue: Arc<Queue>,
}

impl Ingest {
    pub(super) async fn run(&mut self, shutdown: &CancellationToken) {
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
                Disconnect::Refused(error) => {
                    self.stats.connected.store(false, Ordering::Relaxed);
                    // An untrusted certificate will not fix itself: louder
                    // than a network error, but retried the same way.
                    if error.is_untrusted() {
                        tracing::error!(url = %self.feed.url, %error, "cannot connect to feed; retrying with backoff");
                    } else {
                        tracing::warn!(url = %self.feed.url, %error, "cannot connect to feed; retrying with backoff");
                    }
                }
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
                Err(error) => return Disconnect::Refused(error),
            },
        };
        let mut parser = self.feed.format.parser();
        let channels = self.feed.effective_channels();
        let subscription = Subscription { url: &self.feed.url, symbols: &self.feed.symbols, channels: &channels };
        for request in self.feed.format.subscribe_messages(&subscription) {
            if let Err(error) = ws.send(Message::text(request)).await {
                return Disconnect::Lost(format!("subscribe failed: {error}"));
            }
        }
        tracing::info!(url = %self.feed.url, format = %self.feed.format, symbols = ?self.feed.symbols, "feed connected; subscribe sent");
        let unsubscribe = self.feed.format.unsubscribe_messages(&subscription);

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
                    unsubscribe_all(&mut ws, &unsubscribe).await;
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
                Message::Text(text) => parser.parse(text.as_str(), Utc::now(), &mut parsed),
                Message::Binary(bytes) => Err(FrameError::Binary(bytes.len())),
                Message::Close(frame) => return Disconnect::Lost(format!("server closed: {frame:?}")),
                // tungstenite answers pings itself; a pong only proves liveness.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            if let Err(error) = result {
                parsed.clear();
                parser.on_malformed();
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

/// How long shutdown waits to send the unsubscribe requests.
const UNSUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends the exchange's unsubscribe requests (what the subscription asked
/// for, undone) so that it stops streaming before the close handshake;
/// bounded, and a failure only logged: the close follows either way.
async fn unsubscribe_all(ws: &mut FeedSocket, requests: &[String]) {
    let send = async {
        for request in requests {
            ws.send(Message::text(request.clone())).await?;
        }
        Ok::<(), tokio_tungstenite::tungstenite::Error>(())
    };
    match tokio::time::timeout(UNSUBSCRIBE_TIMEOUT, send).await {
        Ok(Ok(())) if !requests.is_empty() => tracing::info!(requests = requests.len(), "feed unsubscribed"),
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "could not send the unsubscribe request; closing anyway"),
        Err(_) => tracing::warn!("unsubscribe not sent within {UNSUBSCRIBE_TIMEOUT:?}; closing anyway"),
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
}
