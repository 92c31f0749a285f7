//! The `[feed]` section: which feed ingest connects to and how.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_config::{SettingsError, at_least, in_range, initial_delay};

use super::FeedFormat;

/// The `[feed]` section: one WebSocket market data feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedSettings {
    /// WebSocket URL (`ws://` or `wss://`).
    pub url: String,
    /// Wire format of the feed: `shoal-sim`, `binance`, `coinbase` or `kraken`.
    pub format: FeedFormat,
    /// Symbols to subscribe to as the feed names them; `*` (all the feed
    /// offers) only for `shoal-sim`.
    pub symbols: Vec<String>,
    /// Channels to subscribe to; empty for the format's default (Binance
    /// `trade`, `bookTicker`; Coinbase `matches`, `ticker`, `heartbeat`;
    /// Kraken `trade`, `ticker`).
    pub channels: Vec<String>,
    /// Extra HTTP headers for the WebSocket handshake (an API key, a bearer
    /// token). Never logged; redacted in `--print-config`. In the
    /// environment write `_` for `-` in the name.
    pub headers: BTreeMap<String, String>,
    /// First reconnect delay, milliseconds; doubles up to the maximum.
    pub reconnect_initial_ms: u64,
    /// Largest reconnect delay, milliseconds.
    pub reconnect_max_ms: u64,
    /// Largest accepted WebSocket message (and frame), bytes.
    pub max_message_bytes: usize,
    /// Interval between WebSocket pings sent to the feed, milliseconds.
    pub ping_interval_ms: u64,
    /// Nothing received (data, heartbeat or pong) for this long means the
    /// feed is stale: the connection is replaced, milliseconds.
    pub stale_after_ms: u64,
    /// Items (trades, book tops, data-quality events) queued between the
    /// socket and Kafka before per-symbol coalescing starts.
    pub queue_capacity: usize,
    /// Most records published to Kafka per second; `0` for no limit. A
    /// throttle for shared clusters and for rehearsing backpressure.
    pub max_publish_per_sec: u64,
    /// At start-up, read this many records from the end of every ticks
    /// partition to recover the last trade ids (deduplication across
    /// restarts); `0` to skip.
    pub recover_tail_records: u64,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            url: "ws://127.0.0.1:9001".into(),
            format: FeedFormat::ShoalSim,
            symbols: vec!["*".into()],
            channels: Vec::new(),
            headers: BTreeMap::new(),
            reconnect_initial_ms: 250,
            reconnect_max_ms: 10_000,
            max_message_bytes: 1 << 20,
            ping_interval_ms: 5_000,
            stale_after_ms: 15_000,
            queue_capacity: 10_000,
            max_publish_per_sec: 0,
            recover_tail_records: 10_000,
        }
    }
}

impl FeedSettings {
    /// The channels to subscribe to: the configured ones, or the format's
    /// defaults.
    pub fn effective_channels(&self) -> Vec<String> {
        if !self.channels.is_empty() {
            return self.channels.clone();
        }
        self.format.default_channels().iter().map(|c| (*c).to_owned()).collect()
    }

    /// Header name as sent: `_` stands for `-` (environment variables
    /// cannot hold `-`).
    pub fn header_name(key: &str) -> String {
        key.replace('_', "-").to_ascii_lowercase()
    }

    /// Checks the section (only when the ingest stage runs). `format` is
    /// checked as it is read.
    pub fn validate(&self) -> Result<(), SettingsError> {
        match url::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "ws" | "wss") => {}
            _ => {
                return Err(SettingsError::invalid(
                    "feed.url",
                    format!("{:?} is not a WebSocket URL", self.url),
                    "ws://host:port/path or wss://host/path",
                ));
            }
        }
        self.validate_subscription()?;
        for name in self.headers.keys() {
            let header = FeedSettings::header_name(name);
            if tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                // Only the name is shown: the value may be a credential.
                return Err(SettingsError::invalid(
                    format!("feed.headers.{name}"),
                    "not a valid HTTP header name",
                    "a header name such as authorization or x-api-key",
                ));
            }
        }
        if self.ping_interval_ms == 0 || self.stale_after_ms <= self.ping_interval_ms {
            return Err(SettingsError::invalid(
                "feed.stale_after_ms",
                format!("{} (ping interval {})", self.stale_after_ms, self.ping_interval_ms),
                "milliseconds above feed.ping_interval_ms, which must be > 0",
            ));
        }
        at_least("feed.queue_capacity", self.queue_capacity, 1, "an integer")?;
        initial_delay(
            "feed.reconnect_initial_ms",
            self.reconnect_initial_ms,
            "feed.reconnect_max_ms",
            self.reconnect_max_ms,
        )?;
        in_range("feed.max_message_bytes", self.max_message_bytes, 1024..=64 << 20, "bytes")
    }

    /// Symbols and channels, as the format names them.
    fn validate_subscription(&self) -> Result<(), SettingsError> {
        if self.symbols.is_empty() || self.symbols.iter().any(|s| s.trim().is_empty()) {
            return Err(SettingsError::invalid(
                "feed.symbols",
                "empty symbol list or empty symbol",
                "symbols, or [\"*\"]",
            ));
        }
        if !self.format.accepts_every_symbol() && self.symbols.iter().any(|s| s == "*") {
            return Err(SettingsError::invalid(
                "feed.symbols",
                format!("\"*\" with feed.format {}", self.format),
                format!("the exchange's symbols, e.g. {}", FeedFormat::symbol_examples()),
            ));
        }
        let allowed = self.format.channels();
        match self.channels.iter().find(|channel| !allowed.contains(&channel.as_str())) {
            None => Ok(()),
            Some(channel) => Err(SettingsError::invalid(
                "feed.channels",
                format!("{channel:?} with feed.format {}", self.format),
                if allowed.is_empty() { "no channels for this format".to_owned() } else { allowed.join(", ") },
            )),
        }
    }
}
