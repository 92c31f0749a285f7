//! Exchange look-alike wire formats of the simulator: Binance spot public
//! streams, the Coinbase Exchange public feed and Kraken WebSocket v2.
//!
//! Each follows the exchange's published message documentation (field names,
//! decimals as strings or as JSON numbers, timestamps, what `side` means);
//! see the module docs of [`crate::simulator`] for the exact frames.
//! Request parsing is per connection ([`Session`]): the subscribed set is
//! kept by the caller as one channel bit mask per symbol.

use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::walk::{Side, Trade};
use super::wire::{Format, GARBAGE_BYTES, INVALID_JSON_TEXT, MalformedKind, UNKNOWN_TYPE};

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

/// Coinbase sequence numbers are per product and shared by every client;
/// the simulator derives them from the trade id so they agree across
/// connections (and a skipped trade is a skipped sequence number).
pub const COINBASE_SEQUENCE_BASE: u64 = 1_000_000;

/// Trades a Kraken trade snapshot carries at most (the exchange sends 50).
pub const KRAKEN_SNAPSHOT_TRADES: usize = 50;

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

/// A decimal with exactly `dp` places (Binance quotes 8).
fn dp(value: Decimal, places: u32) -> String {
    let mut v = value;
    v.rescale(places);
    v.to_string()
}

/// A JSON number holding `value`'s exact text (Kraken v2 sends numbers); a
/// decimal's text is always a valid JSON number.
fn number(value: Decimal) -> String {
    value.to_string()
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
            Format::Kraken => vec![text(&json!({
                "channel": "status",
                "data": [{"api_version": "v2", "connection_id": 1, "system": "online", "version": "2.0.0"}],
                "type": "update"
            }))],
            _ => Vec::new(),
        }
    }

    /// Binance: parses the streams named in the URL (`/ws/<stream>` or
    /// `/stream?streams=a/b`). Returns the subscriptions, or an error text.
    pub fn binance_url_streams(
        &mut self,
        path: &str,
        query: Option<&str>,
        symbols: &[Arc<str>],
    ) -> Result<Vec<(usize, u8)>, String> {
        let names: Vec<&str> = if let Some(rest) = path.strip_prefix("/stream") {
            self.combined = true;
            if !rest.is_empty() && rest != "/" {
                return Err(format!("unknown path {path}"));
            }
            query
                .unwrap_or_default()
                .split('&')
                .filter_map(|kv| kv.strip_prefix("streams="))
                .flat_map(|v| v.split('/'))
                .filter(|s| !s.is_empty())
                .collect()
        } else if let Some(rest) = path.strip_prefix("/ws") {
            self.combined = false;
            rest.split('/').filter(|s| !s.is_empty()).collect()
        } else {
            return Err(format!("unknown path {path}; use /ws/<stream> or /stream?streams=<a>/<b>"));
        };
        names.iter().map(|name| binance_stream(name, symbols)).collect()
    }

    /// Handles one client text message.
    pub fn on_request(&mut self, request: &str, symbols: &[Arc<str>], subscribed: &[u8]) -> Outcome {
        match self.format {
            Format::Binance => binance_request(request, symbols, subscribed),
            Format::Coinbase => coinbase_request(request, symbols, subscribed),
            Format::Kraken => kraken_request(request, symbols),
            Format::Shoal => Outcome::default(),
        }
    }

    /// Appends the frames of one trade for the subscribed `channels`.
    pub fn trade_frames(&self, trade: &Trade, channels: u8, out: &mut Vec<Message>) {
        match self.format {
            Format::Binance => {
                if channels & CH_TRADE != 0 {
                    out.push(self.binance_wrap(trade, "trade", &binance_trade(trade, None)));
                }
                if channels & CH_AGG != 0 {
                    out.push(self.binance_wrap(trade, "aggTrade", &binance_agg_trade(trade, None)));
                }
                if channels & CH_BOOK != 0 {
                    out.push(self.binance_wrap(trade, "bookTicker", &binance_book_ticker(trade)));
                }
            }
            Format::Coinbase => {
                if channels & CH_TRADE != 0 {
                    out.push(text(&coinbase_match(trade, "match", None)));
                }
                if channels & CH_BOOK != 0 {
                    out.push(text(&coinbase_ticker(trade)));
                }
            }
            Format::Kraken => {
                if channels & CH_TRADE != 0 {
                    out.push(kraken_trades("update", std::slice::from_ref(trade), None));
                }
                if channels & CH_BOOK != 0 {
                    out.push(kraken_ticker("update", trade));
                }
            }
            Format::Shoal => {}
        }
    }

    /// A snapshot frame for a fresh subscription, from the symbol's recent
    /// trades (oldest first).
    pub fn snapshot(&self, channel: u8, recent: &[Trade]) -> Option<Message> {
        let last = recent.last()?;
        match (self.format, channel) {
            (Format::Coinbase, CH_TRADE) => Some(text(&coinbase_match(last, "last_match", None))),
            (Format::Kraken, CH_TRADE) => {
                let from = recent.len().saturating_sub(KRAKEN_SNAPSHOT_TRADES);
                Some(kraken_trades("snapshot", &recent[from..], None))
            }
            (Format::Kraken, CH_BOOK) => Some(kraken_ticker("snapshot", last)),
            _ => None,
        }
    }

    /// The periodic liveness frames: Coinbase `heartbeat` per subscribed
    /// product, Kraken `{"channel":"heartbeat"}`, a WebSocket ping for
    /// Binance (whose servers ping).
    pub fn heartbeats(&self, symbols: &[Arc<str>], subscribed: &[u8], last_ids: &[u64], out: &mut Vec<Message>) {
        match self.format {
            Format::Coinbase => {
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
            Format::Kraken => {
                if subscribed.iter().any(|c| *c != 0) {
                    out.push(Message::text(r#"{"channel":"heartbeat"}"#));
                }
            }
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
                Format::Binance => self.binance_wrap(trade, "trade", &binance_trade(trade, Some("abc"))),
                Format::Coinbase => text(&coinbase_match(trade, "match", Some("abc"))),
                _ => kraken_trades("update", std::slice::from_ref(trade), Some("\"abc\"")),
            },
            MalformedKind::UnknownType => match self.format {
                Format::Binance => text(&json!({"e": UNKNOWN_TYPE, "E": millis(trade.ts), "s": &*trade.symbol})),
                Format::Coinbase => text(&json!({"type": UNKNOWN_TYPE, "product_id": &*trade.symbol})),
                _ => text(&json!({"channel": UNKNOWN_TYPE, "type": "update", "data": []})),
            },
        }
    }

    fn binance_wrap(&self, trade: &Trade, stream: &str, data: &serde_json::Value) -> Message {
        if self.combined {
            let name = format!("{}@{stream}", trade.symbol.to_ascii_lowercase());
            text(&json!({"stream": name, "data": data}))
        } else {
            text(data)
        }
    }
}

// ---------------------------------------------------------------- Binance

fn binance_stream(name: &str, symbols: &[Arc<str>]) -> Result<(usize, u8), String> {
    let (symbol, kind) = name.split_once('@').ok_or_else(|| format!("invalid stream name {name:?}"))?;
    let channel = match kind {
        "trade" => CH_TRADE,
        "aggTrade" => CH_AGG,
        "bookTicker" => CH_BOOK,
        other => return Err(format!("unsupported stream type {other:?} (trade, aggTrade, bookTicker)")),
    };
    // Binance stream names are lower case.
    if symbol.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("invalid stream name {name:?}: symbols are lower case"));
    }
    let index = find_symbol(symbols, symbol, true).ok_or_else(|| format!("unknown symbol in stream {name:?}"))?;
    Ok((index, channel))
}

fn binance_trade(trade: &Trade, bad_price: Option<&str>) -> serde_json::Value {
    json!({
        "e": "trade",
        "E": millis(trade.ts) + 1,
        "s": &*trade.symbol,
        "t": trade.trade_id,
        "p": bad_price.map_or_else(|| dp(trade.price, 8), str::to_owned),
        "q": dp(trade.size, 8),
        "b": trade.trade_id * 2 + u64::from(trade.side == Side::Sell),
        "a": trade.trade_id * 2 + u64::from(trade.side == Side::Buy),
        "T": millis(trade.ts),
        // "Is the buyer the market maker?": the taker sold.
        "m": trade.side == Side::Sell,
        "M": true
    })
}

fn binance_agg_trade(trade: &Trade, bad_price: Option<&str>) -> serde_json::Value {
    json!({
        "e": "aggTrade",
        "E": millis(trade.ts) + 1,
        "s": &*trade.symbol,
        "a": trade.trade_id,
        "p": bad_price.map_or_else(|| dp(trade.price, 8), str::to_owned),
        "q": dp(trade.size, 8),
        "f": trade.trade_id,
        "l": trade.trade_id,
        "T": millis(trade.ts),
        "m": trade.side == Side::Sell,
        "M": true
    })
}

fn binance_book_ticker(trade: &Trade) -> serde_json::Value {
    let book = book_after(trade);
    json!({
        "u": trade.trade_id * 3,
        "s": &*trade.symbol,
        "b": dp(book.bid, 8),
        "B": dp(book.bid_size, 8),
        "a": dp(book.ask, 8),
        "A": dp(book.ask_size, 8)
    })
}

#[derive(Deserialize)]
struct BinanceRequest {
    method: String,
    #[serde(default)]
    params: Vec<serde_json::Value>,
    id: Option<serde_json::Value>,
}

fn binance_request(request: &str, symbols: &[Arc<str>], subscribed: &[u8]) -> Outcome {
    let mut out = Outcome::default();
    let parsed: BinanceRequest = match serde_json::from_str(request) {
        Ok(r) => r,
        Err(error) => {
            out.replies.push(text(&json!({"code": 3, "msg": format!("Invalid JSON: {error}")})));
            return out;
        }
    };
    let id = parsed.id.unwrap_or(serde_json::Value::Null);
    let streams: Result<Vec<(usize, u8)>, String> = parsed
        .params
        .iter()
        .map(|p| p.as_str().ok_or_else(|| "stream names must be strings".to_owned()))
        .map(|p| p.and_then(|name| binance_stream(name, symbols)))
        .collect();
    match parsed.method.as_str() {
        "SUBSCRIBE" | "UNSUBSCRIBE" => match streams {
            Ok(streams) => {
                if parsed.method == "SUBSCRIBE" {
                    out.subscribed = true;
                    out.add = streams;
                } else {
                    out.remove = streams;
                }
                out.replies.push(text(&json!({"result": null, "id": id})));
            }
            Err(msg) => out.replies.push(text(&json!({"code": 2, "msg": format!("Invalid request: {msg}"), "id": id}))),
        },
        "LIST_SUBSCRIPTIONS" => {
            let mut names = Vec::new();
            for (index, channels) in subscribed.iter().enumerate() {
                let lower = symbols[index].to_ascii_lowercase();
                for (bit, kind) in [(CH_AGG, "aggTrade"), (CH_TRADE, "trade"), (CH_BOOK, "bookTicker")] {
                    if channels & bit != 0 {
                        names.push(format!("{lower}@{kind}"));
                    }
                }
            }
            out.replies.push(text(&json!({"result": names, "id": id})));
        }
        other => out.replies.push(text(&json!({
            "code": 2,
            "msg": format!("Invalid request: unknown variant {other}, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`"),
            "id": id
        }))),
    }
    out
}

// --------------------------------------------------------------- Coinbase

fn coinbase_match(trade: &Trade, kind: &str, bad_price: Option<&str>) -> serde_json::Value {
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

fn coinbase_request(request: &str, symbols: &[Arc<str>], subscribed: &[u8]) -> Outcome {
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

// ----------------------------------------------------------------- Kraken

fn kraken_trades(kind: &str, trades: &[Trade], bad_price: Option<&str>) -> Message {
    let mut body = format!(r#"{{"channel":"trade","type":"{kind}","data":["#);
    for (i, trade) in trades.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let price = bad_price.map_or_else(|| number(trade.price), str::to_owned);
        let _ = write!(
            body,
            r#"{{"symbol":{},"side":"{}","price":{price},"qty":{},"ord_type":"{}","trade_id":{},"timestamp":"{}"}}"#,
            serde_json::Value::String(trade.symbol.to_string()),
            trade.side.as_str(),
            number(trade.size),
            if trade.trade_id % 3 == 0 { "limit" } else { "market" },
            trade.trade_id,
            rfc3339_micros(trade.ts),
        );
    }
    body.push_str("]}");
    Message::text(body)
}

fn kraken_ticker(kind: &str, trade: &Trade) -> Message {
    let book = book_after(trade);
    Message::text(format!(
        r#"{{"channel":"ticker","type":"{kind}","data":[{{"symbol":{},"bid":{},"bid_qty":{},"ask":{},"ask_qty":{},"last":{},"volume":{},"vwap":{},"low":{},"high":{},"change":0.0,"change_pct":0.00}}]}}"#,
        serde_json::Value::String(trade.symbol.to_string()),
        number(book.bid),
        number(book.bid_size),
        number(book.ask),
        number(book.ask_size),
        number(trade.price),
        number(trade.size),
        number(trade.price),
        number(trade.price),
        number(trade.price),
    ))
}

#[derive(Deserialize)]
struct KrakenParams {
    channel: String,
    #[serde(default)]
    symbol: Vec<String>,
    snapshot: Option<bool>,
}

#[derive(Deserialize)]
struct KrakenRequest {
    method: String,
    params: Option<KrakenParams>,
    req_id: Option<u64>,
}

fn kraken_request(request: &str, symbols: &[Arc<str>]) -> Outcome {
    let mut out = Outcome::default();
    let time_in = now_micros();
    let parsed: KrakenRequest = match serde_json::from_str(request) {
        Ok(r) => r,
        Err(e) => {
            out.replies.push(text(&json!({
                "error": format!("Malformed request: {e}"), "success": false, "time_in": time_in, "time_out": now_micros()
            })));
            return out;
        }
    };
    let mut reply = |body: serde_json::Value| {
        let mut body = body;
        if let Some(id) = parsed.req_id {
            body["req_id"] = id.into();
        }
        out.replies.push(text(&body));
    };
    match (parsed.method.as_str(), &parsed.params) {
        ("ping", _) => reply(json!({"method": "pong", "time_in": time_in, "time_out": now_micros()})),
        (method @ ("subscribe" | "unsubscribe"), Some(params)) => {
            let bit = match params.channel.as_str() {
                "trade" => CH_TRADE,
                "ticker" => CH_BOOK,
                other => {
                    reply(json!({
                        "error": format!("Channel {other} not supported"), "method": method, "success": false,
                        "time_in": time_in, "time_out": now_micros()
                    }));
                    return out;
                }
            };
            let snapshot = params.snapshot.unwrap_or(true);
            for name in &params.symbol {
                let Some(index) = find_symbol(symbols, name, false) else {
                    reply(json!({
                        "error": format!("Currency pair not supported {name}"), "method": method, "success": false,
                        "symbol": name, "time_in": time_in, "time_out": now_micros()
                    }));
                    continue;
                };
                let mut result = json!({"channel": params.channel, "symbol": name});
                if method == "subscribe" {
                    result["snapshot"] = snapshot.into();
                    out.add.push((index, bit));
                    out.subscribed = true;
                    if snapshot {
                        out.snapshots.push((index, bit));
                    }
                } else {
                    out.remove.push((index, bit));
                }
                reply(json!({
                    "method": method, "result": result, "success": true, "time_in": time_in, "time_out": now_micros()
                }));
            }
        }
        (method, _) => reply(json!({
            "error": format!("Method {method} not supported or params missing"), "method": method, "success": false,
            "time_in": time_in, "time_out": now_micros()
        })),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade(id: u64, side: Side) -> Trade {
        Trade {
            symbol_index: 0,
            symbol: "BNBBTC".into(),
            trade_id: id,
            price: Decimal::new(19_141, 2),
            size: Decimal::new(7, 3),
            side,
            ts: DateTime::parse_from_rfc3339("2023-01-01T00:00:00.123456Z").expect("ts").with_timezone(&Utc),
        }
    }

    fn body(message: &Message) -> serde_json::Value {
        match message {
            Message::Text(t) => serde_json::from_str(t.as_str()).expect("json"),
            other => panic!("not text: {other:?}"),
        }
    }

    #[test]
    fn binance_frames_follow_the_documented_fields() {
        let symbols: Vec<Arc<str>> = vec!["BNBBTC".into()];
        let mut session = Session { format: Format::Binance, combined: false };
        let streams = session.binance_url_streams("/stream", Some("streams=bnbbtc@trade/bnbbtc@bookTicker"), &symbols);
        assert_eq!(streams, Ok(vec![(0, CH_TRADE), (0, CH_BOOK)]));
        assert!(session.combined);
        let mut out = Vec::new();
        session.trade_frames(&trade(12345, Side::Sell), CH_TRADE | CH_AGG | CH_BOOK, &mut out);
        let t = body(&out[0]);
        assert_eq!(t["stream"], "bnbbtc@trade");
        assert_eq!(t["data"]["e"], "trade");
        assert_eq!(t["data"]["p"], "191.41000000");
        assert_eq!(t["data"]["q"], "0.00700000");
        assert_eq!(t["data"]["t"], 12345);
        assert_eq!(t["data"]["T"], 1_672_531_200_123_i64);
        assert_eq!(t["data"]["m"], true, "taker sold, so the buyer was the maker");
        assert_eq!(body(&out[1])["data"]["a"], 12345);
        assert_eq!(body(&out[2])["data"]["b"], "191.40000000");
        assert!(session.binance_url_streams("/ws/BNBBTC@trade", None, &symbols).is_err(), "lower case only");
        let outcome = binance_request(r#"{"method":"SUBSCRIBE","params":["bnbbtc@aggTrade"],"id":1}"#, &symbols, &[0]);
        assert_eq!(outcome.add, vec![(0, CH_AGG)]);
        assert_eq!(body(&outcome.replies[0]), json!({"result": null, "id": 1}));
    }

    #[test]
    fn coinbase_match_side_is_the_makers() {
        let m = coinbase_match(&trade(10, Side::Buy), "match", None);
        assert_eq!(m["side"], "sell");
        assert_eq!(m["price"], "191.41");
        assert_eq!(m["sequence"], COINBASE_SEQUENCE_BASE + 10);
        let symbols: Vec<Arc<str>> = vec!["BTC-USD".into()];
        let outcome = coinbase_request(
            r#"{"type":"subscribe","product_ids":["BTC-USD"],"channels":["matches",{"name":"heartbeat","product_ids":["BTC-USD"]}]}"#,
            &symbols,
            &[0],
        );
        assert_eq!(outcome.snapshots, vec![(0, CH_TRADE)]);
        let listing = body(&outcome.replies[0]);
        assert_eq!(listing["type"], "subscriptions");
        assert_eq!(listing["channels"][0]["name"], "heartbeat");
    }

    #[test]
    fn kraken_sends_numbers_and_acks_per_symbol() {
        let frame = kraken_trades("update", &[trade(7, Side::Buy)], None);
        let raw = match &frame {
            Message::Text(t) => t.as_str().to_owned(),
            _ => String::new(),
        };
        assert!(raw.contains(r#""price":191.41,"qty":0.007"#), "{raw}");
        let symbols: Vec<Arc<str>> = vec!["BTC/USD".into(), "ETH/USD".into()];
        let outcome = kraken_request(
            r#"{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD","ETH/USD"]},"req_id":4}"#,
            &symbols,
        );
        assert_eq!(outcome.replies.len(), 2);
        let ack = body(&outcome.replies[0]);
        assert_eq!(ack["success"], true);
        assert_eq!(ack["req_id"], 4);
        assert_eq!(ack["result"]["symbol"], "BTC/USD");
        assert_eq!(outcome.snapshots.len(), 2, "snapshot defaults to true");
    }
}
