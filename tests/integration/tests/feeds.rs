//! Exchange adapters against the simulator speaking each exchange's format:
//! what ingest writes to the ticks topic is compared, field by field, with
//! the raw frames a plain WebSocket client (the witness) received from the
//! same simulator at the same time.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use shoal_integration_tests::*;
use shoal_protocol::messages::{MarketTick, Side};

const WAIT: Duration = Duration::from_secs(60);

fn millis(tick: &MarketTick) -> i64 {
    tick.exchange_ts.timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binance_trades_agg_trades_and_book_tickers_are_normalised_exactly() {
    let scope = Scope::with_topics("feed-binance").await;
    let (_sim, url) =
        start_sim(&["--format", "binance", "--symbols", "BTCUSDT,ETHUSDT", "--rate", "20", "--seed", "5"], &scope.dir);
    let streams = "streams=btcusdt@trade/ethusdt@trade/btcusdt@bookTicker";
    let witness = Witness::start_receiving(&format!("{url}/stream?{streams}"), &[], 0, WAIT).await;

    // Combined-stream URL: the streams are in the URL, no SUBSCRIBE.
    let feed = feed_settings("binance", format!("{url}/stream?{streams}"), &[]);
    let ingest = Ingest::start_until(&scope, feed, WAIT, "40 trades and 10 book tops", |i| {
        i.count(|s| &s.ticks) >= 40 && i.count(|s| &s.book_tops) >= 10
    })
    .await;
    let (_, records) = ingest.stop_and_read(&scope, WAIT).await;
    let frames = witness.stop();

    let events: Vec<Value> = frames.iter().map(|f| serde_json::from_str::<Value>(f).unwrap()["data"].clone()).collect();
    for tick in &records.ticks {
        let id: u64 = tick.trade_id.as_deref().unwrap().parse().unwrap();
        let raw = events
            .iter()
            .find(|e| e["e"] == "trade" && e["s"] == tick.symbol.as_str() && e["t"] == id)
            .unwrap_or_else(|| panic!("no frame for trade {id} of {}", tick.symbol));
        assert_eq!(tick.source, "binance");
        assert_eq!(tick.channel.as_deref(), Some("trade"));
        assert_eq!(tick.price.to_string(), raw["p"].as_str().unwrap(), "price text kept exactly");
        assert_eq!(tick.size.to_string(), raw["q"].as_str().unwrap());
        assert_eq!(millis(tick), raw["T"].as_i64().unwrap(), "trade time");
        let expected = if raw["m"] == true { Side::Sell } else { Side::Buy };
        assert_eq!(tick.side, Some(expected), "m = buyer is maker, so the taker sold");
    }
    for top in &records.books {
        let raw = events.iter().find(|e| e["u"] == top.sequence.unwrap()).expect("book ticker frame");
        assert_eq!(top.symbol, "BTCUSDT");
        assert_eq!(top.bid_price.to_string(), raw["b"].as_str().unwrap());
        assert_eq!(top.bid_size.to_string(), raw["B"].as_str().unwrap());
        assert_eq!(top.ask_price.to_string(), raw["a"].as_str().unwrap());
        assert_eq!(top.ask_size.to_string(), raw["A"].as_str().unwrap());
    }
    let ids = trade_ids_by_symbol(&records.ticks);
    assert_eq!(ids.len(), 2, "both symbols: {:?}", ids.keys());
    records.assert_consecutive("consecutive, no gap, no repeat");
    assert!(records.quality.is_empty(), "no data-quality events on a clean run: {:?}", records.quality);

    // `/ws` with the SUBSCRIBE method, aggregate trades.
    let scope2 = Scope::with_topics("feed-binance-agg").await;
    let mut settings = feed_settings("binance", format!("{url}/ws"), &["ETHUSDT"]);
    settings.channels = vec!["aggTrade".into()];
    let ingest = Ingest::start_until(&scope2, settings, WAIT, "subscription confirmed and 10 aggregate trades", |i| {
        i.count(|s| &s.subscriptions) >= 1 && i.count(|s| &s.ticks) >= 10
    })
    .await;
    let (_, records) = ingest.stop_and_read(&scope2, WAIT).await;
    assert!(records.ticks.iter().all(|t| t.channel.as_deref() == Some("aggTrade") && t.symbol == "ETHUSDT"));
    assert!(records.ticks.iter().all(|t| t.price.scale() == 8), "Binance quotes 8 decimals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coinbase_matches_tickers_and_heartbeats_are_normalised_exactly() {
    let scope = Scope::with_topics("feed-coinbase").await;
    let (_sim, url) = start_sim(&["--format", "coinbase", "--symbols", "BTC-USD,ETH-USD", "--rate", "20"], &scope.dir);
    let subscribe =
        r#"{"type":"subscribe","product_ids":["BTC-USD","ETH-USD"],"channels":["matches","ticker"]}"#.to_string();
    let witness = Witness::start_receiving(&url, &[subscribe], 2, WAIT).await;

    let feed = feed_settings("coinbase", url.clone(), &["BTC-USD", "ETH-USD"]);
    let ingest = Ingest::start_until(&scope, feed, WAIT, "40 matches, 20 tickers and 2 heartbeats", |i| {
        i.count(|s| &s.ticks) >= 40 && i.count(|s| &s.book_tops) >= 20 && i.count(|s| &s.heartbeats) >= 2
    })
    .await;
    assert!(ingest.count(|s| &s.subscriptions) >= 1, "subscriptions message seen");
    let (_, records) = ingest.stop_and_read(&scope, WAIT).await;
    let frames: Vec<Value> = witness.stop().iter().map(|f| serde_json::from_str(f).unwrap()).collect();

    for tick in &records.ticks {
        let id: u64 = tick.trade_id.as_deref().unwrap().parse().unwrap();
        let raw = frames
            .iter()
            .find(|f| {
                (f["type"] == "match" || f["type"] == "last_match")
                    && f["product_id"] == tick.symbol.as_str()
                    && f["trade_id"] == id
            })
            .unwrap_or_else(|| panic!("no frame for match {id}"));
        assert_eq!(tick.source, "coinbase");
        assert_eq!(tick.price.to_string(), raw["price"].as_str().unwrap());
        assert_eq!(tick.size.to_string(), raw["size"].as_str().unwrap());
        assert_eq!(tick.sequence, raw["sequence"].as_u64());
        let time: chrono::DateTime<chrono::Utc> = raw["time"].as_str().unwrap().parse().unwrap();
        assert_eq!(tick.exchange_ts, time, "microseconds kept");
        // Coinbase's side is the maker's; the tick carries the taker's.
        let taker = if raw["side"] == "sell" { Side::Buy } else { Side::Sell };
        assert_eq!(tick.side, Some(taker));
    }
    for top in &records.books {
        let raw = frames
            .iter()
            .find(|f| {
                f["type"] == "ticker"
                    && f["sequence"] == top.sequence.unwrap()
                    && f["product_id"] == top.symbol.as_str()
            })
            .expect("ticker frame");
        assert_eq!(top.bid_price.to_string(), raw["best_bid"].as_str().unwrap());
        assert_eq!(top.bid_size.to_string(), raw["best_bid_size"].as_str().unwrap());
        assert_eq!(top.ask_price.to_string(), raw["best_ask"].as_str().unwrap());
        assert_eq!(top.ask_size.to_string(), raw["best_ask_size"].as_str().unwrap());
    }
    records.assert_consecutive("the last_match is not written twice");
    assert!(records.quality.is_empty(), "heartbeats agree with the matches: {:?}", records.quality);
}

#[derive(Deserialize)]
struct KrakenTrade {
    symbol: String,
    side: Side,
    price: Box<RawValue>,
    qty: Box<RawValue>,
    trade_id: u64,
    timestamp: chrono::DateTime<chrono::Utc>,
}

#[derive(Deserialize)]
struct KrakenEnvelope {
    channel: String,
    data: Vec<Box<RawValue>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kraken_trades_and_tickers_keep_json_numbers_exact() {
    let scope = Scope::with_topics("feed-kraken").await;
    let (_sim, url) = start_sim(&["--format", "kraken", "--symbols", "BTC/USD", "--rate", "20"], &scope.dir);
    let subscribe =
        r#"{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD"],"snapshot":false}}"#.to_string();
    let witness = Witness::start_receiving(&format!("{url}/v2"), &[subscribe], 3, WAIT).await;

    let feed = feed_settings("kraken", format!("{url}/v2"), &["BTC/USD"]);
    let ingest = Ingest::start_until(&scope, feed, WAIT, "two acks, 40 trades, 10 tickers and a heartbeat", |i| {
        i.count(|s| &s.subscriptions) >= 2
            && i.count(|s| &s.ticks) >= 40
            && i.count(|s| &s.book_tops) >= 10
            && i.count(|s| &s.heartbeats) >= 1
    })
    .await;
    let (_, records) = ingest.stop_and_read(&scope, WAIT).await;
    let frames = witness.stop();

    let mut witnessed = Vec::new();
    for frame in &frames {
        if let Ok(envelope) = serde_json::from_str::<KrakenEnvelope>(frame)
            && envelope.channel == "trade"
        {
            for item in envelope.data {
                witnessed.push(serde_json::from_str::<KrakenTrade>(item.get()).unwrap());
            }
        }
    }
    let mut compared = 0;
    for tick in &records.ticks {
        let id: u64 = tick.trade_id.as_deref().unwrap().parse().unwrap();
        // The snapshot ingest asked for may hold trades from before the
        // witness connected.
        let Some(raw) = witnessed.iter().find(|t| t.trade_id == id) else { continue };
        compared += 1;
        assert_eq!(tick.symbol, raw.symbol);
        assert_eq!(tick.price.to_string(), raw.price.get(), "JSON number text kept exactly");
        assert_eq!(tick.size.to_string(), raw.qty.get());
        assert_eq!(tick.side, Some(raw.side), "Kraken's side is the taker's");
        assert_eq!(tick.exchange_ts, raw.timestamp);
        assert_eq!(tick.source, "kraken");
    }
    assert!(compared >= 30, "compared {compared} trades with the witness");
    assert!(records.books.iter().all(|b| b.ask_price > b.bid_price && b.symbol == "BTC/USD"));
    records.assert_consecutive("snapshot and updates join without repeat");
}
