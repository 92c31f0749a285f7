//! What every feed adapter provides ([`Exchange`], [`FrameParser`]) and
//! produces ([`Parsed`]), and the helpers they share: normalised trades and
//! book tops, exact decimals from JSON strings or JSON numbers, exchange
//! timestamps.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::value::RawValue;
use shoal_protocol::messages::{BookTop, MarketTick, SCHEMA_VERSION, Side};

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

/// What ingest knows about one feed format.
#[derive(Debug)]
pub struct Exchange {
    /// Source name written into ticks.
    pub source: &'static str,
    /// Channels the adapter understands (what `feed.channels` accepts).
    pub channels: &'static [&'static str],
    /// Channels subscribed when `feed.channels` is empty.
    pub default_channels: &'static [&'static str],
    /// A symbol as the feed names it, for error messages; `None` for a feed
    /// that takes `*` (every symbol it offers).
    pub example_symbol: Option<&'static str>,
    /// The messages to send once connected.
    pub subscribe: fn(&Subscription<'_>) -> Vec<String>,
    /// The messages that undo them, sent on shutdown before the close
    /// handshake.
    pub unsubscribe: fn(&Subscription<'_>) -> Vec<String>,
    /// A parser with fresh per-connection state.
    pub parser: fn() -> Box<dyn FrameParser>,
}

/// What a connection subscribes to.
#[derive(Debug, Clone, Copy)]
pub struct Subscription<'a> {
    /// The feed's URL (a Binance URL may name its streams itself).
    pub url: &'a str,
    /// Symbols as the feed names them.
    pub symbols: &'a [String],
    /// Channels: the configured ones or the format's defaults.
    pub channels: &'a [String],
}

/// Turns one connection's text frames into [`Parsed`] items.
pub trait FrameParser: Send + std::fmt::Debug {
    /// Parses one text frame into `out`.
    fn parse(&mut self, text: &str, received_at: DateTime<Utc>, out: &mut Vec<Parsed>) -> Result<(), FrameError>;

    /// A malformed frame was skipped.
    fn on_malformed(&mut self) {}
}

/// A parse function: one text frame, received at a time, into items.
pub type ParseFn = fn(&str, DateTime<Utc>, &mut Vec<Parsed>) -> Result<(), FrameError>;

/// A parser without per-connection state: a plain function.
pub(crate) struct Stateless(pub ParseFn);

impl std::fmt::Debug for Stateless {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stateless")
    }
}

impl FrameParser for Stateless {
    fn parse(&mut self, text: &str, received_at: DateTime<Utc>, out: &mut Vec<Parsed>) -> Result<(), FrameError> {
        (self.0)(text, received_at, out)
    }
}

/// Price and size: of a trade, or of one side of the book.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    /// Price.
    pub price: Decimal,
    /// Size (quantity).
    pub size: Decimal,
}

/// Where a frame's items come from: the feed, and when the frame arrived.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// Source name written into the items.
    pub source: &'static str,
    /// When Shoal received the frame.
    pub received_at: DateTime<Utc>,
}

impl Origin {
    /// A trade of `symbol` on `channel` with the exchange's trade id; the
    /// feed's sequence number is unset.
    pub fn trade(
        &self,
        channel: &str,
        symbol: String,
        trade_id: u64,
        level: Level,
        side: Side,
        exchange_ts: DateTime<Utc>,
    ) -> MarketTick {
        MarketTick {
            schema_version: SCHEMA_VERSION,
            source: self.source.into(),
            symbol,
            price: level.price,
            size: level.size,
            side: Some(side),
            trade_id: Some(trade_id.to_string()),
            sequence: None,
            exchange_ts,
            received_at: self.received_at,
            channel: Some(channel.into()),
        }
    }

    /// The best bid and ask of `symbol`.
    pub fn book(
        &self,
        symbol: String,
        bid: Level,
        ask: Level,
        sequence: Option<u64>,
        exchange_ts: Option<DateTime<Utc>>,
    ) -> BookTop {
        BookTop {
            schema_version: SCHEMA_VERSION,
            source: self.source.into(),
            symbol,
            bid_price: bid.price,
            bid_size: bid.size,
            ask_price: ask.price,
            ask_size: ask.size,
            sequence,
            exchange_ts,
            received_at: self.received_at,
        }
    }
}

/// An exact decimal from its text (`"101.25"`, `"1e-8"`). A zero is
/// always positive: `-0.0`, or a negative number too small for 28 decimal
/// places, reads as `0.0` (a negative zero would not keep its sign across
/// the wire format).
pub fn decimal(text: &str) -> Result<Decimal, FrameError> {
    let text = text.trim();
    let parsed = if text.contains(['e', 'E']) { Decimal::from_scientific(text) } else { Decimal::from_str(text) };
    let mut value = parsed.map_err(|error| FrameError::Malformed(format!("invalid decimal {text:?}: {error}")))?;
    if value.is_zero() {
        value.set_sign_positive(true);
    }
    Ok(value)
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

/// A [`Level`] from decimal texts, price first.
pub fn level(price: &str, size: &str) -> Result<Level, FrameError> {
    Ok(Level { price: decimal(price)?, size: decimal(size)? })
}

/// A [`Level`] from JSON numbers or strings, price first.
pub fn level_raw(price: &RawValue, size: &RawValue) -> Result<Level, FrameError> {
    Ok(Level { price: decimal_raw(price)?, size: decimal_raw(size)? })
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
        // A zero is positive (a negative one would not keep its sign across
        // the wire; see shoal-protocol's a_negative_zero_crosses_the_wire_as_zero).
        assert_eq!(decimal("-0.0").unwrap().to_string(), "0.0");
        assert_eq!(decimal("-0e-3").unwrap().to_string(), "0.000");
        assert_eq!(from_millis(1_672_515_782_136).unwrap().to_rfc3339(), "2022-12-31T19:43:02.136+00:00");
    }

    proptest::proptest! {
        /// Any decimal a feed can carry (96-bit mantissa, scale 0 to 28)
        /// reads back exactly, value and scale, from its text, from a JSON
        /// number and from a JSON string; its scientific text gives the same
        /// value.
        #[test]
        fn decimals_round_trip_through_every_form(mantissa in -(1i128 << 95)..(1i128 << 95), scale in 0u32..=28) {
            let d = Decimal::from_i128_with_scale(mantissa, scale);
            let text = d.to_string();
            let back = decimal(&text).expect("its own text");
            proptest::prop_assert_eq!(back, d);
            proptest::prop_assert_eq!(back.scale(), d.scale(), "{}", text);
            let number: Box<RawValue> = serde_json::from_str(&text).expect("a JSON number");
            proptest::prop_assert_eq!(decimal_raw(&number).expect("as a JSON number").to_string(), text.clone());
            let string: Box<RawValue> = serde_json::from_str(&format!("\"{text}\"")).expect("a JSON string");
            proptest::prop_assert_eq!(decimal_raw(&string).expect("as a JSON string").to_string(), text.clone());
            let scientific = format!("{d:e}");
            proptest::prop_assert_eq!(decimal(&scientific).expect("its scientific text"), d, "{}", scientific);
        }
    }
}
