//! Frames and requests of each exchange format.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::coinbase::COINBASE_SEQUENCE_BASE;
use super::{CH_AGG, CH_BOOK, CH_TRADE, Session, binance, coinbase, kraken};
use crate::walk::{Side, Trade};
use crate::wire::Format;

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
    let outcome = binance::request(r#"{"method":"SUBSCRIBE","params":["bnbbtc@aggTrade"],"id":1}"#, &symbols, &[0]);
    assert_eq!(outcome.add, vec![(0, CH_AGG)]);
    assert_eq!(body(&outcome.replies[0]), json!({"result": null, "id": 1}));
}

#[test]
fn coinbase_match_side_is_the_makers() {
    let m = coinbase::coinbase_match(&trade(10, Side::Buy), "match", None);
    assert_eq!(m["side"], "sell");
    assert_eq!(m["price"], "191.41");
    assert_eq!(m["sequence"], COINBASE_SEQUENCE_BASE + 10);
    let symbols: Vec<Arc<str>> = vec!["BTC-USD".into()];
    let outcome = coinbase::request(
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
    let frame = kraken::kraken_trades("update", &[trade(7, Side::Buy)], None);
    let raw = match &frame {
        Message::Text(t) => t.as_str().to_owned(),
        _ => String::new(),
    };
    assert!(raw.contains(r#""price":191.41,"qty":0.007"#), "{raw}");
    let symbols: Vec<Arc<str>> = vec!["BTC/USD".into(), "ETH/USD".into()];
    let outcome = kraken::request(
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
