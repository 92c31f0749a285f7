//! Coinbase Exchange public WebSocket feed: `matches` (trades; the first
//! message after subscribing is a `last_match`), `ticker` (best bid and
//! ask) and `heartbeat` (per product, every second, with `last_trade_id`).
//!
//! Decimals are strings; timestamps RFC 3339 with microseconds; `sequence`
//! is per product. In `match` messages `side` is the **maker's** side, so
//! the taker (Shoal's `side`) is the opposite. Trade ids are consecutive per
//! product; a heartbeat whose `last_trade_id` is ahead of the last trade
//! received reveals dropped matches (Coinbase's documented way to detect
//! them). A message with a lower `sequence` than one already seen for its
//! product and channel arrived out of order and is dropped.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use shoal_protocol::messages::Side;

use super::protocol::{Exchange, FrameError, FrameParser, Origin, Parsed, level};

/// Source name written into ticks from this feed.
pub const SOURCE: &str = "coinbase";

/// Channels this adapter understands.
pub const CHANNELS: [&str; 3] = ["matches", "ticker", "heartbeat"];

/// The Coinbase format.
pub(crate) const EXCHANGE: Exchange = Exchange {
    source: SOURCE,
    channels: &CHANNELS,
    default_channels: &CHANNELS,
    example_symbol: Some("BTC-USD"),
    subscribe: |to| vec![subscribe_request(to.symbols, to.channels)],
    unsubscribe: |to| {
        vec![serde_json::json!({"type": "unsubscribe", "product_ids": to.symbols, "channels": to.channels}).to_string()]
    },
    parser: || Box::<State>::default(),
};

/// The subscribe message.
pub fn subscribe_request(symbols: &[String], channels: &[String]) -> String {
    serde_json::json!({"type": "subscribe", "product_ids": symbols, "channels": channels}).to_string()
}

/// Per-connection state: the last sequence number per (product, channel).
#[derive(Debug, Default)]
pub struct State {
    sequences: HashMap<(String, u8), u64>,
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Match {
    trade_id: u64,
    sequence: u64,
    time: DateTime<Utc>,
    product_id: String,
    size: String,
    price: String,
    side: Side,
}

#[derive(Deserialize)]
struct Ticker {
    sequence: u64,
    product_id: String,
    best_bid: String,
    best_bid_size: String,
    best_ask: String,
    best_ask_size: String,
    time: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Heartbeat {
    last_trade_id: u64,
    product_id: String,
}

#[derive(Deserialize)]
struct ErrorMessage {
    message: String,
    reason: Option<String>,
}

impl State {
    /// Whether `sequence` is newer than the last one of (product, channel);
    /// records it if so.
    fn fresh(&mut self, product: &str, channel: u8, sequence: u64) -> bool {
        let last = self.sequences.entry((product.to_owned(), channel)).or_insert(0);
        if sequence <= *last && *last != 0 {
            return false;
        }
        *last = sequence;
        true
    }
}

impl FrameParser for State {
    fn parse(&mut self, text: &str, received_at: DateTime<Utc>, out: &mut Vec<Parsed>) -> Result<(), FrameError> {
        let origin = Origin { source: SOURCE, received_at };
        let probe: Probe = serde_json::from_str(text)?;
        match probe.kind.as_str() {
            "match" | "last_match" => {
                let m: Match = serde_json::from_str(text)?;
                if !self.fresh(&m.product_id, 0, m.sequence) {
                    out.push(Parsed::Stale(format!("{} match sequence {} out of order", m.product_id, m.sequence)));
                    return Ok(());
                }
                // Coinbase names the maker's side; the taker took the other.
                let taker = match m.side {
                    Side::Buy => Side::Sell,
                    Side::Sell => Side::Buy,
                };
                let mut tick =
                    origin.trade("matches", m.product_id, m.trade_id, level(&m.price, &m.size)?, taker, m.time);
                tick.sequence = Some(m.sequence);
                out.push(Parsed::Trade { tick, continuity: true });
            }
            "ticker" => {
                let t: Ticker = serde_json::from_str(text)?;
                let (bid, ask) = (level(&t.best_bid, &t.best_bid_size)?, level(&t.best_ask, &t.best_ask_size)?);
                let top = origin.book(t.product_id, bid, ask, Some(t.sequence), t.time);
                if self.fresh(&top.symbol, 1, t.sequence) {
                    out.push(Parsed::Book(top));
                } else {
                    out.push(Parsed::Stale(format!("{} ticker sequence {} out of order", top.symbol, t.sequence)));
                }
            }
            "heartbeat" => {
                let h: Heartbeat = serde_json::from_str(text)?;
                out.push(Parsed::Heartbeat { symbol: Some(h.product_id), last_trade_id: Some(h.last_trade_id) });
            }
            "subscriptions" => out.push(Parsed::Subscribed(text.to_owned())),
            "error" => {
                let e: ErrorMessage = serde_json::from_str(text)?;
                out.push(Parsed::ExchangeError(format!("{}: {}", e.message, e.reason.unwrap_or_default())));
            }
            other => return Err(FrameError::UnknownType(other.to_owned())),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(state: &mut State, text: &str) -> Parsed {
        let mut out = Vec::new();
        state.parse(text, DateTime::UNIX_EPOCH, &mut out).expect("parses");
        assert_eq!(out.len(), 1);
        out.remove(0)
    }

    #[test]
    fn match_from_the_documented_payload_takes_the_takers_side() {
        let mut state = State::default();
        // The `match` example of Coinbase's Exchange WebSocket channels page.
        let parsed = one(
            &mut state,
            r#"{"type":"match","trade_id":10,"sequence":50,"maker_order_id":"ac928c66-ca53-498f-9c13-a110027a60e8","taker_order_id":"132fb6ae-456b-4654-b4e0-d681ac05cea1","time":"2014-11-07T08:19:27.028459Z","product_id":"BTC-USD","size":"5.23512","price":"400.23","side":"sell"}"#,
        );
        let Parsed::Trade { tick, continuity } = parsed else { panic!("{parsed:?}") };
        assert!(continuity);
        assert_eq!(tick.price.to_string(), "400.23");
        assert_eq!(tick.size.to_string(), "5.23512");
        assert_eq!(tick.side, Some(Side::Buy), "maker sold, so the taker bought");
        assert_eq!(tick.sequence, Some(50));
        assert_eq!(tick.trade_id.as_deref(), Some("10"));
        assert_eq!(tick.exchange_ts.to_rfc3339(), "2014-11-07T08:19:27.028459+00:00");
        // The same sequence again is a repeat and is dropped.
        let again = one(
            &mut state,
            r#"{"type":"last_match","trade_id":10,"sequence":50,"time":"2014-11-07T08:19:27.028459Z","product_id":"BTC-USD","size":"5.23512","price":"400.23","side":"sell"}"#,
        );
        assert!(matches!(again, Parsed::Stale(_)));
    }

    #[test]
    fn ticker_heartbeat_and_control() {
        let mut state = State::default();
        // The `ticker` example of the same page.
        let parsed = one(
            &mut state,
            r#"{"type":"ticker","sequence":37475248783,"product_id":"ETH-USD","price":"1285.22","open_24h":"1310.79","volume_24h":"245532.79269678","low_24h":"1280.52","high_24h":"1313.8","volume_30d":"9788783.60117027","best_bid":"1285.04","best_bid_size":"0.46688654","best_ask":"1285.27","best_ask_size":"1.56637040","side":"buy","time":"2022-10-19T23:28:22.061769Z","trade_id":370843401,"last_size":"11.4396987"}"#,
        );
        let Parsed::Book(top) = parsed else { panic!("{parsed:?}") };
        assert_eq!(
            (top.bid_price.to_string(), top.bid_size.to_string(), top.ask_price.to_string(), top.ask_size.to_string()),
            ("1285.04".into(), "0.46688654".into(), "1285.27".into(), "1.56637040".into())
        );
        assert_eq!(top.sequence, Some(37_475_248_783));
        let hb = one(
            &mut state,
            r#"{"type":"heartbeat","sequence":90,"last_trade_id":20,"product_id":"BTC-USD","time":"2014-11-07T08:19:28.464459Z"}"#,
        );
        assert_eq!(hb, Parsed::Heartbeat { symbol: Some("BTC-USD".into()), last_trade_id: Some(20) });
        assert!(matches!(
            one(&mut state, r#"{"type":"subscriptions","channels":[{"name":"matches","product_ids":["BTC-USD"]}]}"#),
            Parsed::Subscribed(_)
        ));
        let mut out = Vec::new();
        assert!(matches!(
            state.parse(r#"{"type":"sim_fault"}"#, Utc::now(), &mut out),
            Err(FrameError::UnknownType(_))
        ));
        assert!(state.parse(r#"{"type":"match","trade_id":1"#, Utc::now(), &mut out).is_err());
    }
}
