//! Coinbase Exchange public feed: `subscribe`/`unsubscribe` answered with
//! `subscriptions`, and the `matches` (starting with a `last_match`),
//! `ticker` and `heartbeat` channels.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::{
    CH_BOOK, CH_HEARTBEAT, CH_TRADE, Outcome, book_after, find_symbol, maker_side, now_micros, rfc3339_micros, text,
};
use crate::walk::Trade;
use crate::wire::UNKNOWN_TYPE;

/// Coinbase sequence numbers are per product and shared by every client;
/// the simulator derives them from the trade id so they agree across
/// connections (and a skipped trade is a skipped sequence number).
pub const COINBASE_SEQUENCE_BASE: u64 = 1_000_000;

/// The messages of one trade for the subscribed `channels`.
pub(super) fn trade_frames(trade: &Trade, channels: u8, out: &mut Vec<Message>) {
    if channels & CH_TRADE != 0 {
        out.push(text(&coinbase_match(trade, "match", None)));
    }
    if channels & CH_BOOK != 0 {
        out.push(text(&coinbase_ticker(trade)));
    }
}

/// A fresh `matches` subscription starts with the last trade again.
pub(super) fn snapshot(channel: u8, last: &Trade) -> Option<Message> {
    (channel == CH_TRADE).then(|| text(&coinbase_match(last, "last_match", None)))
}

/// A `heartbeat` per product subscribed to the `heartbeat` channel.
pub(super) fn heartbeats(symbols: &[Arc<str>], subscribed: &[u8], last_ids: &[u64], out: &mut Vec<Message>) {
    for (index, channels) in subscribed.iter().enumerate() {
        if channels & CH_HEARTBEAT != 0 {
            let last = last_ids.get(index).copied().unwrap_or(0);
            out.push(text(&json!({
                "type": "heartbeat",
                "sequence": COINBASE_SEQUENCE_BASE + last,
                "last_trade_id": last,
                "product_id": &*symbols[index],
                "time": now_micros(),
            })));
        }
    }
}

/// A `match` whose price is not a number.
pub(super) fn invalid_price(trade: &Trade) -> Message {
    text(&coinbase_match(trade, "match", Some("abc")))
}

/// A message of an unknown type.
pub(super) fn unknown_type(trade: &Trade) -> Message {
    text(&json!({"type": UNKNOWN_TYPE, "product_id": &*trade.symbol}))
}

pub(super) fn coinbase_match(trade: &Trade, kind: &str, bad_price: Option<&str>) -> serde_json::Value {
    json!({
        "type": kind,
        "trade_id": trade.trade_id,
        "sequence": COINBASE_SEQUENCE_BASE + trade.trade_id,
        "maker_order_id": format!("00000000-0000-4000-8000-{:012x}", trade.trade_id * 2),
        "taker_order_id": format!("00000000-0000-4000-8000-{:012x}", trade.trade_id * 2 + 1),
        "time": rfc3339_micros(trade.ts),
        "product_id": &*trade.symbol,
        "size": trade.size.to_string(),
        "price": bad_price.map_or_else(|| trade.price.to_string(), str::to_owned),
        // Coinbase's side is the maker's side: a taker buy matches a resting sell.
        "side": maker_side(trade.side).as_str()
    })
}

fn coinbase_ticker(trade: &Trade) -> serde_json::Value {
    let book = book_after(trade);
    json!({
        "type": "ticker",
        "sequence": COINBASE_SEQUENCE_BASE + trade.trade_id,
        "product_id": &*trade.symbol,
        "price": trade.price.to_string(),
        "open_24h": trade.price.to_string(),
        "volume_24h": "1000.00000000",
        "low_24h": trade.price.to_string(),
        "high_24h": trade.price.to_string(),
        "volume_30d": "30000.00000000",
        "best_bid": book.bid.to_string(),
        "best_bid_size": book.bid_size.to_string(),
        "best_ask": book.ask.to_string(),
        "best_ask_size": book.ask_size.to_string(),
        "side": trade.side.as_str(),
        "time": rfc3339_micros(trade.ts),
        "trade_id": trade.trade_id,
        "last_size": trade.size.to_string()
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CoinbaseChannel {
    Name(String),
    Full {
        name: String,
        #[serde(default)]
        product_ids: Vec<String>,
    },
}

#[derive(Deserialize)]
struct CoinbaseRequest {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    product_ids: Vec<String>,
    #[serde(default)]
    channels: Vec<CoinbaseChannel>,
}

pub(super) fn request(request: &str, symbols: &[Arc<str>], subscribed: &[u8]) -> Outcome {
    let mut out = Outcome::default();
    let error = |message: String| text(&json!({"type": "error", "message": "Failed to subscribe", "reason": message}));
    let parsed: CoinbaseRequest = match serde_json::from_str(request) {
        Ok(r) => r,
        Err(e) => {
            out.replies.push(error(format!("malformed request: {e}")));
            return out;
        }
    };
    let subscribe = match parsed.kind.as_str() {
        "subscribe" => true,
        "unsubscribe" => false,
        other => {
            out.replies.push(error(format!("unknown message type {other:?}")));
            return out;
        }
    };
    let mut changes = Vec::new();
    for channel in &parsed.channels {
        let (name, own) = match channel {
            CoinbaseChannel::Name(name) => (name.as_str(), &[][..]),
            CoinbaseChannel::Full { name, product_ids } => (name.as_str(), product_ids.as_slice()),
        };
        let bit = match name {
            "matches" => CH_TRADE,
            "ticker" => CH_BOOK,
            "heartbeat" => CH_HEARTBEAT,
            other => {
                out.replies.push(error(format!("{other} is not a supported channel (matches, ticker, heartbeat)")));
                return out;
            }
        };
        for product in parsed.product_ids.iter().chain(own) {
            match find_symbol(symbols, product, false) {
                Some(index) => changes.push((index, bit)),
                None => {
                    out.replies.push(error(format!("{product} is not a valid product")));
                    return out;
                }
            }
        }
    }
    let mut after = subscribed.to_vec();
    for (index, bit) in &changes {
        if subscribe {
            if after[*index] & bit == 0 && *bit == CH_TRADE {
                out.snapshots.push((*index, CH_TRADE));
            }
            after[*index] |= bit;
        } else {
            after[*index] &= !bit;
        }
    }
    let listing: Vec<serde_json::Value> = [(CH_HEARTBEAT, "heartbeat"), (CH_BOOK, "ticker"), (CH_TRADE, "matches")]
        .iter()
        .filter_map(|(bit, name)| {
            let products: Vec<&str> =
                after.iter().enumerate().filter(|(_, c)| **c & bit != 0).map(|(i, _)| &*symbols[i]).collect();
            (!products.is_empty()).then(|| json!({"name": name, "product_ids": products}))
        })
        .collect();
    out.replies.push(text(&json!({"type": "subscriptions", "channels": listing})));
    if subscribe {
        out.subscribed = true;
        out.add = changes;
    } else {
        out.remove = changes;
    }
    out
}
