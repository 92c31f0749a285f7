//! Kraken WebSocket API v2: `trade` and `ticker` channels, the per-symbol
//! subscribe acknowledgements, `heartbeat` and `status` messages.
//!
//! v2 sends prices and quantities as JSON **numbers**; their exact text is
//! kept (`RawValue`) and parsed as a decimal, never through `f64`.
//! Timestamps are RFC 3339. `side` is the taker's side. `trade_id` is
//! consecutive per book. A subscription starts with a `snapshot` (the last
//! trades), which repeats trades already seen after a reconnect; ingest
//! deduplication drops them.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use shoal_protocol::messages::Side;

use super::protocol::{Exchange, FrameError, Origin, Parsed, Stateless, level_raw};

/// Source name written into ticks from this feed.
pub const SOURCE: &str = "kraken";

/// Channels this adapter understands.
pub const CHANNELS: [&str; 2] = ["trade", "ticker"];

/// The Kraken format.
pub(crate) const EXCHANGE: Exchange = Exchange {
    source: SOURCE,
    channels: &CHANNELS,
    default_channels: &CHANNELS,
    example_symbol: Some("BTC/USD"),
    subscribe: |to| subscribe_requests(to.symbols, to.channels),
    unsubscribe: |to| {
        let channels = to.channels.iter().enumerate();
        channels
            .map(|(i, channel)| {
                let params = serde_json::json!({"channel": channel, "symbol": to.symbols});
                serde_json::json!({"method": "unsubscribe", "params": params, "req_id": 100 + i}).to_string()
            })
            .collect()
    },
    parser: || Box::new(Stateless(parse)),
};

/// One subscribe request per channel.
pub fn subscribe_requests(symbols: &[String], channels: &[String]) -> Vec<String> {
    channels
        .iter()
        .enumerate()
        .map(|(i, channel)| {
            serde_json::json!({
                "method": "subscribe",
                "params": {"channel": channel, "symbol": symbols, "snapshot": true},
                "req_id": i + 1
            })
            .to_string()
        })
        .collect()
}

#[derive(Deserialize)]
struct Probe {
    channel: Option<String>,
    method: Option<String>,
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: Vec<T>,
}

#[derive(Deserialize)]
struct Trade {
    symbol: String,
    side: Side,
    price: Box<RawValue>,
    qty: Box<RawValue>,
    trade_id: u64,
    timestamp: DateTime<Utc>,
}

#[derive(Deserialize)]
struct Ticker {
    symbol: String,
    bid: Box<RawValue>,
    bid_qty: Box<RawValue>,
    ask: Box<RawValue>,
    ask_qty: Box<RawValue>,
    timestamp: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Ack {
    success: Option<bool>,
    result: Option<serde_json::Value>,
    error: Option<String>,
}

/// Parses one text frame.
pub fn parse(text: &str, received_at: DateTime<Utc>, out: &mut Vec<Parsed>) -> Result<(), FrameError> {
    let origin = Origin { source: SOURCE, received_at };
    let probe: Probe = serde_json::from_str(text)?;
    match (probe.channel.as_deref(), probe.method.as_deref()) {
        (Some("trade"), _) => {
            let envelope: Envelope<Trade> = serde_json::from_str(text)?;
            for t in envelope.data {
                let tick =
                    origin.trade("trade", t.symbol, t.trade_id, level_raw(&t.price, &t.qty)?, t.side, t.timestamp);
                out.push(Parsed::Trade { tick, continuity: true });
            }
        }
        (Some("ticker"), _) => {
            let envelope: Envelope<Ticker> = serde_json::from_str(text)?;
            for t in envelope.data {
                let (bid, ask) = (level_raw(&t.bid, &t.bid_qty)?, level_raw(&t.ask, &t.ask_qty)?);
                out.push(Parsed::Book(origin.book(t.symbol, bid, ask, None, t.timestamp)));
            }
        }
        (Some("heartbeat"), _) => out.push(Parsed::Heartbeat { symbol: None, last_trade_id: None }),
        (Some("status"), _) => out.push(Parsed::Info(text.to_owned())),
        (Some(other), _) => return Err(FrameError::UnknownType(other.to_owned())),
        (None, Some("subscribe")) => {
            let ack: Ack = serde_json::from_str(text)?;
            if ack.success == Some(true) {
                out.push(Parsed::Subscribed(ack.result.map(|r| r.to_string()).unwrap_or_default()));
            } else {
                out.push(Parsed::ExchangeError(ack.error.unwrap_or_else(|| text.to_owned())));
            }
        }
        (None, Some("pong" | "unsubscribe")) => out.push(Parsed::Info(text.to_owned())),
        (None, Some(other)) => return Err(FrameError::UnknownType(format!("method {other}"))),
        (None, None) => return Err(FrameError::UnknownType("message without channel or method".into())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Vec<Parsed> {
        let mut out = Vec::new();
        parse(text, DateTime::UNIX_EPOCH, &mut out).expect("parses");
        out
    }

    #[test]
    fn trade_numbers_stay_exact() {
        // Shaped like the `trade` update of Kraken's v2 documentation.
        let out = all(
            r#"{"channel":"trade","type":"update","data":[{"symbol":"MATIC/USD","side":"buy","price":0.5147,"qty":6423.46326,"ord_type":"limit","trade_id":4665846,"timestamp":"2023-09-25T07:48:36.925533Z"},{"symbol":"MATIC/USD","side":"sell","price":0.5147,"qty":1136.19677815,"ord_type":"market","trade_id":4665847,"timestamp":"2023-09-25T07:49:37.708706Z"}]}"#,
        );
        assert_eq!(out.len(), 2);
        let Parsed::Trade { tick, continuity } = &out[1] else { panic!("{out:?}") };
        assert!(continuity);
        assert_eq!(tick.price.to_string(), "0.5147");
        assert_eq!(tick.size.to_string(), "1136.19677815");
        assert_eq!(tick.side, Some(Side::Sell));
        assert_eq!(tick.trade_id.as_deref(), Some("4665847"));
        assert_eq!(tick.exchange_ts.to_rfc3339(), "2023-09-25T07:49:37.708706+00:00");
    }

    #[test]
    fn ticker_acks_heartbeat_and_garbage() {
        let out = all(
            r#"{"channel":"ticker","type":"snapshot","data":[{"symbol":"ALGO/USD","bid":0.10025,"bid_qty":740.0,"ask":0.10036,"ask_qty":1361.44813783,"last":0.10035,"volume":997038.98383185,"vwap":0.10148,"low":0.09979,"high":0.10285,"change":-0.00017,"change_pct":-0.17}]}"#,
        );
        let Parsed::Book(top) = &out[0] else { panic!("{out:?}") };
        assert_eq!(
            (top.bid_price.to_string(), top.bid_size.to_string(), top.ask_size.to_string()),
            ("0.10025".into(), "740.0".into(), "1361.44813783".into())
        );
        let ack = all(
            r#"{"method":"subscribe","result":{"channel":"ticker","snapshot":true,"symbol":"ALGO/USD"},"success":true,"time_in":"2023-09-25T09:04:31.742599Z","time_out":"2023-09-25T09:04:31.742648Z"}"#,
        );
        assert!(matches!(ack[0], Parsed::Subscribed(_)));
        let refused = all(
            r#"{"error":"Currency pair not supported FOO/BAR","method":"subscribe","success":false,"symbol":"FOO/BAR","time_in":"2023-09-25T09:04:31.742599Z","time_out":"2023-09-25T09:04:31.742648Z"}"#,
        );
        assert!(matches!(refused[0], Parsed::ExchangeError(_)));
        assert_eq!(all(r#"{"channel":"heartbeat"}"#), vec![Parsed::Heartbeat { symbol: None, last_trade_id: None }]);
        let mut out = Vec::new();
        assert!(matches!(
            parse(r#"{"channel":"sim_fault","data":[]}"#, Utc::now(), &mut out),
            Err(FrameError::UnknownType(_))
        ));
        assert!(
            parse(r#"{"channel":"trade","type":"update","data":[{"symbol":"X","side":"buy","price":"abc","qty":1,"trade_id":1,"timestamp":"2023-09-25T07:48:36.925533Z"}]}"#, Utc::now(), &mut out).is_err()
        );
    }
}
