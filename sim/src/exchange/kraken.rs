//! Kraken WebSocket API v2: a `status` message on connect, `subscribe`
//! acknowledged per symbol, `trade` and `ticker` channels (a `snapshot`,
//! then `update`s) with prices and quantities as JSON numbers, heartbeats.

use std::fmt::Write as _;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::{CH_BOOK, CH_TRADE, Outcome, book_after, find_symbol, now_micros, rfc3339_micros, text};
use crate::walk::Trade;
use crate::wire::UNKNOWN_TYPE;

/// Trades a Kraken trade snapshot carries at most (the exchange sends 50).
pub const KRAKEN_SNAPSHOT_TRADES: usize = 50;

/// A JSON number holding `value`'s exact text (Kraken v2 sends numbers); a
/// decimal's text is always a valid JSON number.
fn number(value: Decimal) -> String {
    value.to_string()
}

/// The `status` message sent on connect.
pub(super) fn status() -> Message {
    text(&json!({
        "channel": "status",
        "data": [{"api_version": "v2", "connection_id": 1, "system": "online", "version": "2.0.0"}],
        "type": "update"
    }))
}

/// The updates of one trade for the subscribed `channels`.
pub(super) fn trade_frames(trade: &Trade, channels: u8, out: &mut Vec<Message>) {
    if channels & CH_TRADE != 0 {
        out.push(kraken_trades("update", std::slice::from_ref(trade), None));
    }
    if channels & CH_BOOK != 0 {
        out.push(kraken_ticker("update", trade));
    }
}

/// The snapshot of a fresh subscription: the last trades, or the ticker.
pub(super) fn snapshot(channel: u8, recent: &[Trade], last: &Trade) -> Option<Message> {
    match channel {
        CH_TRADE => {
            let from = recent.len().saturating_sub(KRAKEN_SNAPSHOT_TRADES);
            Some(kraken_trades("snapshot", &recent[from..], None))
        }
        CH_BOOK => Some(kraken_ticker("snapshot", last)),
        _ => None,
    }
}

/// `{"channel":"heartbeat"}` while anything is subscribed.
pub(super) fn heartbeat(subscribed: &[u8], out: &mut Vec<Message>) {
    if subscribed.iter().any(|c| *c != 0) {
        out.push(Message::text(r#"{"channel":"heartbeat"}"#));
    }
}

/// A trade update whose price is a string, not a number.
pub(super) fn invalid_price(trade: &Trade) -> Message {
    kraken_trades("update", std::slice::from_ref(trade), Some("\"abc\""))
}

/// A message of an unknown channel.
pub(super) fn unknown_type() -> Message {
    text(&json!({"channel": UNKNOWN_TYPE, "type": "update", "data": []}))
}

pub(super) fn kraken_trades(kind: &str, trades: &[Trade], bad_price: Option<&str>) -> Message {
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

pub(super) fn request(request: &str, symbols: &[Arc<str>]) -> Outcome {
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
