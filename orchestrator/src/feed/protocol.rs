//! What every feed adapter produces, and the helpers they share: exact
//! decimals from JSON strings or JSON numbers, exchange timestamps.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::value::RawValue;
use shoal_protocol::messages::{BookTop, MarketTick};

/// One thing a feed frame said, normalised.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A trade. `continuity`: the feed's trade ids for this symbol are
    /// consecutive, so a skipped id means lost trades.
    Trade {
        /// The normalised trade.
        tick: MarketTick,
        /// Whether trade ids are consecutive per symbol on this feed.
        continuity: bool,
    },
    /// Best bid and offer.
    Book(BookTop),
    /// Liveness. Coinbase heartbeats also name the product and its last
    /// trade id, which reveals trades that never arrived.
    Heartbeat {
        /// The product, when the heartbeat names one.
        symbol: Option<String>,
        /// The product's last trade id, when given.
        last_trade_id: Option<u64>,
    },
    /// A gap the adapter saw itself (per-connection sequence numbers).
    Gap {
        /// Symbol concerned, or `*` for the whole connection.
        symbol: String,
        /// Number expected next.
        expected: u64,
        /// Number received.
        received: u64,
    },
    /// A message that arrived out of order or repeated (an older sequence
    /// number); dropped.
    Stale(String),
    /// A subscription was confirmed.
    Subscribed(String),
    /// A control message worth a debug line only (status, pong, ...).
    Info(String),
    /// The exchange reported an error.
    ExchangeError(String),
}

/// Why a frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not JSON, or missing or invalid fields (including invalid decimals).
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// Valid JSON of a kind this adapter does not know.
    #[error("unexpected message type {0:?}")]
    UnknownType(String),
    /// A binary frame; every supported format is text.
    #[error("unexpected binary frame of {0} bytes")]
    Binary(usize),
}

impl From<serde_json::Error> for FrameError {
    fn from(error: serde_json::Error) -> Self {
        FrameError::Malformed(error.to_string())
    }
}

/// An exact decimal from its text (`"101.25"`, `"1e-8"`).
pub fn decimal(text: &str) -> Result<Decimal, FrameError> {
    let text = text.trim();
    let parsed = if text.contains(['e', 'E']) { Decimal::from_scientific(text) } else { Decimal::from_str(text) };
    parsed.map_err(|error| FrameError::Malformed(format!("invalid decimal {text:?}: {error}")))
}

/// An exact decimal from a JSON number or a JSON string, read from the raw
/// text so it never passes through `f64`.
pub fn decimal_raw(raw: &RawValue) -> Result<Decimal, FrameError> {
    let text = raw.get();
    if text.starts_with('"') {
        let inner: String = serde_json::from_str(text)?;
        decimal(&inner)
    } else {
        decimal(text)
    }
}

/// A UTC time from Unix milliseconds.
pub fn from_millis(ms: i64) -> Result<DateTime<Utc>, FrameError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| FrameError::Malformed(format!("timestamp {ms} out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact_from_strings_and_numbers() {
        assert_eq!(decimal("0.00700000").unwrap().to_string(), "0.00700000");
        assert_eq!(decimal("1e-8").unwrap().to_string(), "0.00000001");
        let raw: Box<RawValue> = serde_json::from_str("23536.30000000000001").unwrap();
        assert_eq!(decimal_raw(&raw).unwrap().to_string(), "23536.30000000000001", "more digits than an f64 holds");
        let quoted: Box<RawValue> = serde_json::from_str("\"0.1\"").unwrap();
        assert_eq!(decimal_raw(&quoted).unwrap().to_string(), "0.1");
        assert!(decimal("abc").is_err());
        assert_eq!(from_millis(1_672_515_782_136).unwrap().to_rfc3339(), "2022-12-31T19:43:02.136+00:00");
    }
}
