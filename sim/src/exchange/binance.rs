//! Binance spot public market streams: raw `/ws/<stream>` and combined
//! `/stream?streams=a/b` URLs, `SUBSCRIBE`/`UNSUBSCRIBE`/`LIST_SUBSCRIPTIONS`
//! requests, and `trade`, `aggTrade` and `bookTicker` events.

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::{CH_AGG, CH_BOOK, CH_TRADE, Outcome, Session, book_after, find_symbol, millis, text};
use crate::walk::{Side, Trade};
use crate::wire::UNKNOWN_TYPE;

/// A decimal with exactly `places` places (Binance quotes 8).
fn dp(value: Decimal, places: u32) -> String {
    let mut v = value;
    v.rescale(places);
    v.to_string()
}

impl Session {
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
        names.iter().map(|name| stream(name, symbols)).collect()
    }

    /// The events of one trade for the subscribed `channels`.
    pub(super) fn binance_frames(&self, trade: &Trade, channels: u8, out: &mut Vec<Message>) {
        if channels & CH_TRADE != 0 {
            out.push(self.binance_wrap(trade, "trade", &trade_event(trade, "trade", None)));
        }
        if channels & CH_AGG != 0 {
            out.push(self.binance_wrap(trade, "aggTrade", &trade_event(trade, "aggTrade", None)));
        }
        if channels & CH_BOOK != 0 {
            out.push(self.binance_wrap(trade, "bookTicker", &book_ticker(trade)));
        }
    }

    /// A trade event whose price is not a number.
    pub(super) fn binance_invalid_price(&self, trade: &Trade) -> Message {
        self.binance_wrap(trade, "trade", &trade_event(trade, "trade", Some("abc")))
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

/// An event of an unknown type.
pub(super) fn unknown_type(trade: &Trade) -> Message {
    text(&json!({"e": UNKNOWN_TYPE, "E": millis(trade.ts), "s": &*trade.symbol}))
}

fn stream(name: &str, symbols: &[Arc<str>]) -> Result<(usize, u8), String> {
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

/// A `trade` or an `aggTrade` event: the trade id is `t` in the first and
/// the aggregate trade id `a` in the second (the simulator's trade id either
/// way).
fn trade_event(trade: &Trade, event: &str, bad_price: Option<&str>) -> serde_json::Value {
    let mut body = json!({
        "e": event,
        "E": millis(trade.ts) + 1,
        "s": &*trade.symbol,
        "p": bad_price.map_or_else(|| dp(trade.price, 8), str::to_owned),
        "q": dp(trade.size, 8),
        "T": millis(trade.ts),
        // "Is the buyer the market maker?": the taker sold.
        "m": trade.side == Side::Sell,
        "M": true
    });
    let id = trade.trade_id;
    let ids = if event == "trade" {
        [
            ("t", id),
            ("b", id * 2 + u64::from(trade.side == Side::Sell)),
            ("a", id * 2 + u64::from(trade.side == Side::Buy)),
        ]
    } else {
        [("a", id), ("f", id), ("l", id)]
    };
    for (key, value) in ids {
        body[key] = value.into();
    }
    body
}

fn book_ticker(trade: &Trade) -> serde_json::Value {
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

pub(super) fn request(request: &str, symbols: &[Arc<str>], subscribed: &[u8]) -> Outcome {
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
        .map(|p| p.and_then(|name| stream(name, symbols)))
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
