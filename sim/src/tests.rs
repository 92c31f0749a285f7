//! End-to-end tests: a real server on 127.0.0.1:0 and real WebSocket clients.

use std::collections::HashSet;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::*;

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Upper bound for any single expected event.
const WAIT: Duration = Duration::from_secs(5);

struct Sim {
    url: String,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), SimError>>,
}

fn config(symbols: &[&str], rate: f64) -> SimConfig {
    SimConfig {
        symbols: symbols.iter().map(|s| (*s).to_owned()).collect(),
        rate_per_symbol: rate,
        ..SimConfig::default()
    }
}

async fn start(config: SimConfig) -> Sim {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(listener, config, shutdown.clone()));
    Sim { url: format!("ws://{addr}"), shutdown, task }
}

impl Sim {
    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("serve returns after cancellation")
            .expect("serve task does not panic");
        assert!(result.is_ok(), "serve failed: {result:?}");
    }
}

async fn connect(url: &str) -> Client {
    let (client, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("connect");
    client
}

async fn next(client: &mut Client) -> Message {
    tokio::time::timeout(WAIT, client.next())
        .await
        .expect("a frame arrives in time")
        .expect("stream still open")
        .expect("frame read without error")
}

fn json(message: &Message) -> Value {
    match message {
        Message::Text(text) => serde_json::from_str(text.as_str()).expect("valid JSON"),
        other => panic!("expected a JSON text frame, got {other:?}"),
    }
}

async fn next_json(client: &mut Client) -> Value {
    json(&next(client).await)
}

async fn send(client: &mut Client, text: &str) {
    client.send(Message::text(text)).await.expect("send");
}

fn is_data(value: &Value) -> bool {
    matches!(value["type"].as_str(), Some("trade" | "heartbeat"))
}

fn seq(value: &Value) -> u64 {
    value["seq"].as_u64().expect("data frame has a numeric seq")
}

/// Reads data frames, numbered on from `expected_seq`, up to the first
/// frame of type `kind`, which it returns.
async fn data_until(client: &mut Client, kind: &str, expected_seq: &mut u64) -> Value {
    loop {
        let frame = next_json(client).await;
        if frame["type"] == kind {
            return frame;
        }
        assert!(is_data(&frame), "unexpected frame {frame}");
        assert_eq!(seq(&frame), *expected_seq);
        *expected_seq += 1;
    }
}

/// Checks the documented shape of a trade frame.
fn check_trade(value: &Value) {
    let object = value.as_object().expect("object");
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    let mut expected = vec!["type", "symbol", "seq", "trade_id", "price", "size", "side", "ts"];
    expected.sort_unstable();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort_unstable();
    assert_eq!(keys_sorted, expected, "trade fields: {value}");

    let price: Decimal = value["price"].as_str().expect("price string").parse().expect("price decimal");
    assert!(price > Decimal::ZERO);
    assert_eq!(price.scale(), 2, "price {price}");
    let size: Decimal = value["size"].as_str().expect("size string").parse().expect("size decimal");
    assert!(size > Decimal::ZERO);
    assert_eq!(size.scale(), 3, "size {size}");
    assert!(matches!(value["side"].as_str(), Some("buy" | "sell")), "side: {value}");
    check_ts(value);
}

fn check_ts(value: &Value) {
    let ts = value["ts"].as_str().expect("ts string");
    // 2026-11-25T02:04:05.123456Z
    assert_eq!(ts.len(), 27, "ts {ts}");
    assert!(ts.ends_with('Z'), "ts {ts}");
    chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339 ts");
}

#[tokio::test]
async fn round_trip_subscribe_stream_unsubscribe_close() {
    let sim = start(config(&["SIM-A", "SIM-B"], 200.0)).await;
    let mut client = connect(&sim.url).await;

    let hello = next(&mut client).await;
    assert_eq!(hello, Message::text(r#"{"type":"hello","feed":"shoal-sim","version":1,"symbols":["SIM-A","SIM-B"]}"#));

    // Pings are answered; nothing is streamed before subscribing.
    client.send(Message::Ping(b"are you there".to_vec().into())).await.expect("ping");
    assert_eq!(next(&mut client).await, Message::Pong(b"are you there".to_vec().into()));

    // Invalid requests get an error and the connection stays open.
    send(&mut client, "not json").await;
    let error = next_json(&mut client).await;
    assert_eq!(error["type"], "error");
    assert!(error["message"].as_str().expect("message").starts_with("invalid request"));
    send(&mut client, r#"{"type":"dance","symbols":[]}"#).await;
    assert_eq!(next_json(&mut client).await["type"], "error");
    client.send(Message::binary(vec![1, 2, 3])).await.expect("send binary");
    assert_eq!(next_json(&mut client).await["type"], "error");

    // Unknown symbols are reported; the known one is still subscribed.
    send(&mut client, r#"{"type":"subscribe","symbols":["SIM-A","NOPE"]}"#).await;
    assert_eq!(next(&mut client).await, Message::text(r#"{"type":"error","message":"unknown symbol: NOPE"}"#));
    assert_eq!(next(&mut client).await, Message::text(r#"{"type":"subscribed","symbols":["SIM-A"]}"#));

    let mut expected_seq = 1;
    let mut last_trade_id = None;
    let mut trades = 0;
    while trades < 50 {
        let frame = next_json(&mut client).await;
        assert!(is_data(&frame), "unexpected frame {frame}");
        assert_eq!(seq(&frame), expected_seq, "seq must increase by exactly 1");
        expected_seq += 1;
        if frame["type"] == "trade" {
            check_trade(&frame);
            assert_eq!(frame["symbol"], "SIM-A");
            let trade_id = frame["trade_id"].as_u64().expect("trade_id");
            if let Some(last) = last_trade_id {
                assert_eq!(trade_id, last + 1, "trade_id gap");
            }
            last_trade_id = Some(trade_id);
            trades += 1;
        } else {
            check_ts(&frame);
        }
    }

    // Unsubscribing stops the stream: after `unsubscribed`, a ping's pong
    // is the next frame.
    send(&mut client, r#"{"type":"unsubscribe","symbols":["SIM-A"]}"#).await;
    let unsubscribed = data_until(&mut client, "unsubscribed", &mut expected_seq).await;
    assert_eq!(unsubscribed["symbols"], serde_json::json!(["SIM-A"]));
    client.send(Message::Ping(b"quiet?".to_vec().into())).await.expect("ping");
    assert_eq!(next(&mut client).await, Message::Pong(b"quiet?".to_vec().into()));

    // Wildcard subscription: both symbols, and seq continues.
    send(&mut client, r#"{"type":"subscribe","symbols":["*"]}"#).await;
    assert_eq!(next(&mut client).await, Message::text(r#"{"type":"subscribed","symbols":["SIM-A","SIM-B"]}"#));
    let mut seen = HashSet::new();
    while seen.len() < 2 {
        let frame = next_json(&mut client).await;
        assert_eq!(seq(&frame), expected_seq);
        expected_seq += 1;
        if frame["type"] == "trade" {
            check_trade(&frame);
            seen.insert(frame["symbol"].as_str().expect("symbol").to_owned());
        }
    }

    // A later subscribe replaces the set.
    send(&mut client, r#"{"type":"subscribe","symbols":["SIM-B"]}"#).await;
    let subscribed = data_until(&mut client, "subscribed", &mut expected_seq).await;
    assert_eq!(subscribed["symbols"], serde_json::json!(["SIM-B"]));
    for _ in 0..20 {
        let frame = next_json(&mut client).await;
        assert_eq!(seq(&frame), expected_seq);
        expected_seq += 1;
        if frame["type"] == "trade" {
            assert_eq!(frame["symbol"], "SIM-B");
        }
    }

    // Client-initiated close gets a Close reply, then the stream ends.
    client.close(None).await.expect("send close");
    let closed = tokio::time::timeout(WAIT, async {
        let mut got_close = false;
        while let Some(frame) = client.next().await {
            match frame {
                Ok(Message::Close(_)) => got_close = true,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        got_close
    })
    .await
    .expect("close handshake completes in time");
    assert!(closed, "server replied to Close");

    sim.stop().await;
}

#[tokio::test]
async fn malformed_every_cycles_through_every_kind() {
    let every = 3;
    let mut cfg = config(&["SIM-A", "SIM-B"], 500.0);
    cfg.faults.malformed_every = Some(every);
    let sim = start(cfg).await;
    let mut client = connect(&sim.url).await;
    assert_eq!(next_json(&mut client).await["type"], "hello");
    send(&mut client, r#"{"type":"subscribe","symbols":["*"]}"#).await;
    assert_eq!(next_json(&mut client).await["type"], "subscribed");

    let mut kinds_seen = Vec::new();
    // Four malformed frames (every kind once), then a full second cycle.
    for k in 1..=(every * 8) {
        let frame = next(&mut client).await;
        if k.is_multiple_of(every) {
            let kind = MalformedKind::for_occurrence(k / every);
            match kind {
                MalformedKind::InvalidJson => {
                    assert_eq!(frame, Message::text(INVALID_JSON_TEXT));
                }
                MalformedKind::InvalidPrice => {
                    let value = json(&frame);
                    assert_eq!(value["type"], "trade");
                    assert_eq!(value["price"], "abc");
                    assert_eq!(seq(&value), k);
                }
                MalformedKind::UnknownType => {
                    let value = json(&frame);
                    assert_eq!(value["type"], UNKNOWN_TYPE);
                    assert_eq!(seq(&value), k);
                }
                MalformedKind::BinaryGarbage => {
                    assert_eq!(frame, Message::binary(GARBAGE_BYTES));
                }
            }
            kinds_seen.push(kind);
        } else {
            let value = json(&frame);
            assert!(is_data(&value), "unexpected frame {value}");
            assert_eq!(seq(&value), k, "malformed frames consume a seq");
            if value["type"] == "trade" {
                check_trade(&value);
            }
        }
    }
    assert_eq!(kinds_seen[..4], MalformedKind::ALL);
    assert_eq!(kinds_seen[4..], MalformedKind::ALL);

    sim.stop().await;
}

#[tokio::test]
async fn heartbeats_flow_to_subscribed_clients_with_seq() {
    // So slow that the first data frames are heartbeats.
    let sim = start(config(&["SIM-A"], 0.001)).await;
    let mut client = connect(&sim.url).await;
    assert_eq!(next_json(&mut client).await["type"], "hello");
    send(&mut client, r#"{"type":"subscribe","symbols":["SIM-A"]}"#).await;
    assert_eq!(next_json(&mut client).await["type"], "subscribed");
    for expected in 1..=2 {
        let frame = next_json(&mut client).await;
        assert_eq!(frame["type"], "heartbeat", "{frame}");
        assert_eq!(seq(&frame), expected);
        check_ts(&frame);
        let keys: Vec<&str> = frame.as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 3, "heartbeat fields: {frame}");
    }
    sim.stop().await;
}

/// Reads until the server's Close frame, then on (which sends tungstenite's
/// automatic Close reply) until the stream ends; returns the server's close
/// code and reason.
async fn wait_for_close(client: &mut Client) -> (CloseCode, String) {
    tokio::time::timeout(WAIT, async {
        loop {
            match client.next().await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    while let Some(Ok(_)) = client.next().await {}
                    return (frame.code, frame.reason.as_str().to_owned());
                }
                Some(Ok(Message::Close(None))) => panic!("Close frame without a code"),
                Some(Ok(_)) => {}
                Some(Err(error)) => panic!("read error before Close: {error}"),
                None => panic!("stream ended without a Close frame"),
            }
        }
    })
    .await
    .expect("Close frame arrives in time")
}

#[tokio::test]
async fn shutdown_sends_going_away_close() {
    let sim = start(config(&["SIM-A"], 100.0)).await;
    let mut subscribed = connect(&sim.url).await;
    let mut idle = connect(&sim.url).await;
    assert_eq!(next_json(&mut subscribed).await["type"], "hello");
    assert_eq!(next_json(&mut idle).await["type"], "hello");
    send(&mut subscribed, r#"{"type":"subscribe","symbols":["SIM-A"]}"#).await;
    assert_eq!(next_json(&mut subscribed).await["type"], "subscribed");
    assert!(is_data(&next_json(&mut subscribed).await));

    sim.shutdown.cancel();
    for client in [&mut subscribed, &mut idle] {
        let (code, reason) = wait_for_close(client).await;
        assert_eq!(code, CloseCode::Away);
        assert_eq!(u16::from(code), 1001);
        assert_eq!(reason, SHUTDOWN_CLOSE_REASON);
    }
    // The clients reply to Close (tungstenite does so on the read that
    // returned it), so serve finishes well within the grace period.
    let result = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), sim.task)
        .await
        .expect("serve returns promptly")
        .expect("serve does not panic");
    assert!(result.is_ok(), "{result:?}");

    // The listener is gone.
    assert!(tokio_tungstenite::connect_async(&sim.url).await.is_err());
}

#[tokio::test]
async fn shutdown_is_bounded_when_a_client_never_answers() {
    let sim = start(config(&["SIM-A"], 100.0)).await;
    // Connected but never reads, so never completes the close handshake.
    let _silent = connect(&sim.url).await;
    // Make sure the connection task is past the handshake.
    let mut probe = connect(&sim.url).await;
    assert_eq!(next_json(&mut probe).await["type"], "hello");

    sim.shutdown.cancel();
    let result = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(2), sim.task)
        .await
        .expect("serve returns within the shutdown bound")
        .expect("serve does not panic");
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn oversized_client_message_closes_with_1009() {
    let sim = start(config(&["SIM-A"], 10.0)).await;
    let mut client = connect(&sim.url).await;
    assert_eq!(next_json(&mut client).await["type"], "hello");
    let huge = format!(r#"{{"type":"subscribe","symbols":["{}"]}}"#, "X".repeat(MAX_CLIENT_MESSAGE_BYTES + 1));
    // The server may close before the whole frame is written.
    let _ = client.send(Message::text(huge)).await;
    let (code, _) = wait_for_close(&mut client).await;
    assert_eq!(code, CloseCode::Size);
    sim.stop().await;
}

#[tokio::test]
async fn serve_rejects_invalid_config() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let result = serve(listener, config(&[], 5.0), CancellationToken::new()).await;
    assert!(matches!(result, Err(SimError::Config(ConfigError::NoSymbols))), "{result:?}");
}

#[test]
fn validate_names_the_problem() {
    assert_eq!(SimConfig::default().validate(), Ok(()));
    let cases: Vec<(SimConfig, ConfigError)> = vec![
        (config(&[], 5.0), ConfigError::NoSymbols),
        (config(&["A", "A"], 5.0), ConfigError::DuplicateSymbol("A".into())),
        (config(&["*"], 5.0), ConfigError::InvalidSymbol("*".into())),
        (config(&["A B"], 5.0), ConfigError::InvalidSymbol("A B".into())),
        (config(&[""], 5.0), ConfigError::InvalidSymbol(String::new())),
        (config(&["A"], 0.0), ConfigError::Rate(0.0)),
        (config(&["A"], -1.0), ConfigError::Rate(-1.0)),
        (config(&["A"], f64::INFINITY), ConfigError::Rate(f64::INFINITY)),
        (SimConfig { jump_probability: 1.5, ..SimConfig::default() }, ConfigError::JumpProbability(1.5)),
        (SimConfig { start_price: Decimal::ZERO, ..SimConfig::default() }, ConfigError::StartPrice(Decimal::ZERO)),
        (
            SimConfig { start_price: Decimal::new(1_001, 3), ..SimConfig::default() },
            ConfigError::StartPrice(Decimal::new(1_001, 3)),
        ),
        (SimConfig { first_trade_id: 0, ..SimConfig::default() }, ConfigError::FirstTradeId),
        (
            SimConfig { faults: Faults { malformed_every: Some(0) }, ..SimConfig::default() },
            ConfigError::MalformedEvery,
        ),
    ];
    for (config, expected) in cases {
        assert_eq!(config.validate(), Err(expected));
    }
    // NaN never equals itself, so check it separately.
    assert!(matches!(config(&["A"], f64::NAN).validate(), Err(ConfigError::Rate(_))));
    assert!(matches!(
        SimConfig { jump_probability: f64::NAN, ..SimConfig::default() }.validate(),
        Err(ConfigError::JumpProbability(_))
    ));
}
