//! Exchange look-alike wire formats of the simulator: Binance spot public
//! streams, the Coinbase Exchange public feed and Kraken WebSocket v2.
//!
//! Each follows the exchange's published message documentation (field names,
//! decimals as strings or as JSON numbers, timestamps, what `side` means);
//! see the [crate docs](crate#exchange-formats) for the exact frames.
//! Request parsing is per connection ([`Session`]): the subscribed set is
//! kept by the caller as one channel bit mask per symbol. Each format's
//! frames and requests live in its own module.

mod binance;
mod coinbase;
mod kraken;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio_tungstenite::tungstenite::Message;

use super::walk::{Side, Trade};
use super::wire::{Format, GARBAGE_BYTES, INVALID_JSON_TEXT, MalformedKind};

pub use coinbase::COINBASE_SEQUENCE_BASE;
pub use kraken::KRAKEN_SNAPSHOT_TRADES;

/// Channel bit: trades (Binance `trade`, Coinbase `matches`, Kraken
/// `trade`, Shoal trades).
pub(crate) const CH_TRADE: u8 = 1;
/// Channel bit: Binance `aggTrade`.
pub(crate) const CH_AGG: u8 = 2;
/// Channel bit: book top (Binance `bookTicker`, Coinbase `ticker`, Kraken
/// `ticker`).
pub(crate) const CH_BOOK: u8 = 4;
/// Channel bit: Coinbase `heartbeat`.
pub(crate) const CH_HEARTBEAT: u8 = 8;

/// What one client request asks the connection to do.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Frames to send first, in order.
    pub replies: Vec<Message>,
    /// `(symbol index, channel bits)` to add to the subscription.
    pub add: Vec<(usize, u8)>,
    /// `(symbol index, channel bits)` to remove.
    pub remove: Vec<(usize, u8)>,
    /// `(symbol index, channel bit)` whose snapshot to send after the
    /// replies (Kraken trade and ticker snapshots, Coinbase `last_match`).
    pub snapshots: Vec<(usize, u8)>,
    /// The request was a subscribe (counted in the simulator's stats).
    pub subscribed: bool,
}

/// Per-connection protocol state of an exchange format.
#[derive(Debug)]
pub(crate) struct Session {
    pub format: Format,
    /// Binance: wrap events as `{"stream":...,"data":...}`.
    pub combined: bool,
}

fn now_micros() -> String {
    rfc3339_micros(Utc::now())
}

fn rfc3339_micros(ts: DateTime<Utc>) -> String {
    ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn millis(ts: DateTime<Utc>) -> i64 {
    ts.timestamp_millis()
}

/// Synthetic book around a trade: one tick either side of the price.
pub(crate) struct Book {
    pub bid: Decimal,
    pub bid_size: Decimal,
    pub ask: Decimal,
    pub ask_size: Decimal,
}

pub(crate) fn book_after(trade: &Trade) -> Book {
    let tick = Decimal::new(1, 2);
    let bid = if trade.price > tick { trade.price - tick } else { trade.price };
    Book { bid, bid_size: trade.size + Decimal::ONE, ask: trade.price + tick, ask_size: trade.size + Decimal::TWO }
}

fn text(value: &serde_json::Value) -> Message {
    Message::text(value.to_string())
}

fn maker_side(taker: Side) -> Side {
    match taker {
        Side::Buy => Side::Sell,
        Side::Sell => Side::Buy,
    }
}

/// Looks a requested symbol up, case-insensitively for Binance (whose
/// stream names are lower case).
pub(crate) fn find_symbol(symbols: &[Arc<str>], name: &str, case_insensitive: bool) -> Option<usize> {
    symbols.iter().position(|s| if case_insensitive { s.eq_ignore_ascii_case(name) } else { **s == *name })
}

impl Session {
    /// Frames sent on connect.
    pub fn greeting(&self) -> Vec<Message> {
        match self.format {
            Format::Kraken => vec![kraken::status()],
            _ => Vec::new(),
        }
    }

    /// Handles one client text message.
    pub fn on_request(&mut self, request: &str, symbols: &[Arc<str>], subscribed: &[u8]) -> Outcome {
        match self.format {
            Format::Binance => binance::request(request, symbols, subscribed),
            Format::Coinbase => coinbase::request(request, symbols, subscribed),
            Format::Kraken => kraken::request(request, symbols),
            Format::Shoal => Outcome::default(),
        }
    }

    /// Appends the frames of one trade for the subscribed `channels`.
    pub fn trade_frames(&self, trade: &Trade, channels: u8, out: &mut Vec<Message>) {
        match self.format {
            Format::Binance => self.binance_frames(trade, channels, out),
            Format::Coinbase => coinbase::trade_frames(trade, channels, out),
            Format::Kraken => kraken::trade_frames(trade, channels, out),
            Format::Shoal => {}
        }
    }

    /// A snapshot frame for a fresh subscription, from the symbol's recent
    /// trades (oldest first).
    pub fn snapshot(&self, channel: u8, recent: &[Trade]) -> Option<Message> {
        let last = recent.last()?;
        match self.format {
            Format::Coinbase => coinbase::snapshot(channel, last),
            Format::Kraken => kraken::snapshot(channel, recent, last),
            _ => None,
        }
    }

    /// The periodic liveness frames: Coinbase `heartbeat` per subscribed
    /// product, Kraken `{"channel":"heartbeat"}`, a WebSocket ping for
    /// Binance (whose servers ping).
    pub fn heartbeats(&self, symbols: &[Arc<str>], subscribed: &[u8], last_ids: &[u64], out: &mut Vec<Message>) {
        match self.format {
            Format::Coinbase => coinbase::heartbeats(symbols, subscribed, last_ids, out),
            Format::Kraken => kraken::heartbeat(subscribed, out),
            Format::Binance => out.push(Message::Ping(b"shoal-sim".to_vec().into())),
            Format::Shoal => {}
        }
    }

    /// The malformed replacement of a trade.
    pub fn malformed(&self, kind: MalformedKind, trade: &Trade) -> Message {
        match kind {
            MalformedKind::InvalidJson => Message::text(INVALID_JSON_TEXT),
            MalformedKind::BinaryGarbage => Message::binary(GARBAGE_BYTES),
            MalformedKind::InvalidPrice => match self.format {
                Format::Binance => self.binance_invalid_price(trade),
                Format::Coinbase => coinbase::invalid_price(trade),
                _ => kraken::invalid_price(trade),
            },
            MalformedKind::UnknownType => match self.format {
                Format::Binance => binance::unknown_type(trade),
                Format::Coinbase => coinbase::unknown_type(trade),
                _ => kraken::unknown_type(),
            },
        }
    }
}
