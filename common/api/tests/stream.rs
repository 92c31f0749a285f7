//! `GET /v1/stream` against a real server on 127.0.0.1:0, with real
//! WebSocket clients.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Extension;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use shoal_api::auth::Tokens;
use shoal_api::hub::Entities;
use shoal_api::stream::Shutdown;
use shoal_api::{ApiContext, ApiSettings, Change, EntityDoc, Hub, NoPeers, ShardId, ShardView, Watermark};
use shoal_state::{EntityKind, Provenance};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any awaited condition may take.
const DEADLINE: Duration = Duration::from_secs(30);

struct Server {
    addr: SocketAddr,
    hub: Arc<Hub>,
    open: Arc<AtomicUsize>,
    /// Stops the server and, when given to the router, its streams.
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(settings: ApiSettings) -> Server {
    start_with(settings, true).await
}

async fn start_with(settings: ApiSettings, close_streams_on_shutdown: bool) -> Server {
    let hub = Arc::new(Hub::new());
    let open = Arc::new(AtomicUsize::new(0));
    let ctx = ApiContext {
        hub: hub.clone(),
        settings: Arc::new(settings),
        tokens: Arc::new(Tokens::open()),
        directory: Arc::new(NoPeers),
        instance: "test".into(),
        subscriptions: open.clone(),
    };
    // Accepted sockets inherit a small send buffer (no autotuning): a client
    // that does not read stalls the server's writes after a few frames.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(16 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(128).unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let mut app = shoal_api::stream::routes().with_state(ctx);
    if close_streams_on_shutdown {
        app = app.layer(Extension(Shutdown(shutdown.clone())));
    }
    let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let task = tokio::spawn(async move { serve.await });
    Server { addr, hub, open, shutdown, task }
}

impl Server {
    async fn connect(&self) -> Client {
        tokio_tungstenite::connect_async(format!("ws://{}/v1/stream", self.addr)).await.unwrap().0
    }

    /// A client whose socket buffers little, so that not reading stalls
    /// the server's writes soon (the kernel would otherwise grow the
    /// buffer to tens of MB on loopback).
    async fn connect_small(&self) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(32 * 1024).unwrap();
        let stream = MaybeTlsStream::Plain(socket.connect(self.addr).await.unwrap());
        tokio_tungstenite::client_async(format!("ws://{}/v1/stream", self.addr), stream).await.unwrap().0
    }

    async fn wait_open(&self, n: usize) {
        wait_open(&self.open, n).await;
    }
}

/// Waits until `n` streams are open.
async fn wait_open(open: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + DEADLINE;
    while open.load(Ordering::SeqCst) != n {
        assert!(Instant::now() < deadline, "{} subscriptions open, expected {n}", open.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One shard of symbols, published like its owner would.
struct Shard {
    id: ShardId,
    entities: Entities,
    offset: i64,
    pad: String,
}

impl Shard {
    fn new(pad: usize) -> Self {
        Self {
            id: ShardId { topic: "ticks".into(), partition: 0 },
            entities: Entities::new(),
            offset: -1,
            pad: "x".repeat(pad),
        }
    }

    /// Sets `key` to `n` (or removes it), each a change, in one batch.
    fn publish(&mut self, hub: &Hub, changes: &[(&str, Option<i64>)]) {
        let mut out = Vec::new();
        for (key, n) in changes {
            self.offset += 1;
            let entity = (EntityKind::Symbol, (*key).to_string());
            let doc = n.map(|n| {
                Arc::new(EntityDoc {
                    kind: EntityKind::Symbol,
                    key: (*key).into(),
                    shard: self.id.clone(),
                    updated_at: chrono::DateTime::from_timestamp(1_735_689_600 + n, 0).unwrap(),
                    provenance: Provenance::new(self.id.topic.clone(), self.id.partition, self.offset),
                    state: json!({"n": n, "pad": self.pad}),
                })
            });
            match &doc {
                Some(doc) => self.entities.insert(entity, doc.clone()),
                None => self.entities.remove(&entity),
            };
            out.push(Change { kind: EntityKind::Symbol, key: (*key).into(), doc });
        }
        let watermark = Watermark { topic: self.id.topic.clone(), partition: 0, offset: self.offset, event_time: None };
        hub.publish(Arc::new(ShardView { id: self.id.clone(), watermark, entities: self.entities.clone() }), out);
    }
}

async fn send(ws: &mut Client, message: Value) {
    ws.send(Message::text(message.to_string())).await.unwrap();
}

/// The next JSON frame (control frames skipped).
async fn next(ws: &mut Client) -> Value {
    loop {
        let message = tokio::time::timeout(DEADLINE, ws.next()).await.expect("no frame in time");
        match message.expect("the stream ended").unwrap() {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected message {other:?}"),
        }
    }
}

async fn subscribe(ws: &mut Client, entities: Value) {
    send(ws, json!({"op": "subscribe", "entities": entities})).await;
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("SIM-{i:02}")).collect()
}

#[tokio::test]
async fn subscribe_gets_snapshots() {
    let server = start(ApiSettings::default()).await;
    Shard::new(0).publish(&server.hub, &[("SIM-A", Some(7)), ("SIM-B", Some(1))]);
    let mut ws = server.connect().await;
    subscribe(&mut ws, json!([{"kind": "symbol", "key": "SIM-A"}, {"kind": "symbol", "key": "NOPE"}])).await;
    let mut frames = [next(&mut ws).await, next(&mut ws).await];
    frames.sort_by_key(|f| f["key"].as_str().unwrap().to_string());
    assert_eq!(
        frames[0],
        json!({"type": "snapshot", "kind": "symbol", "key": "NOPE", "shard": null, "seq": 0, "doc": null, "watermark": null})
    );
    let a = &frames[1];
    assert_eq!((a["type"].as_str(), a["key"].as_str(), a["seq"].as_u64()), (Some("snapshot"), Some("SIM-A"), Some(0)));
    assert_eq!(a["doc"]["state"]["n"], 7);
    assert_eq!(a["shard"], json!({"topic": "ticks", "partition": 0}));
    assert_eq!(a["watermark"]["offset"], 1);
    server.wait_open(1).await;
}

#[tokio::test]
async fn changes_arrive_in_order_with_consecutive_seq() {
    let server = start(ApiSettings::default()).await;
    let mut shard = Shard::new(0);
    shard.publish(&server.hub, &[("SIM-A", Some(0))]);
    let mut ws = server.connect().await;
    subscribe(&mut ws, json!([{"kind": "symbol", "key": "SIM-A"}])).await;
    assert_eq!(next(&mut ws).await["type"], "snapshot");
    // Read promptly: every change is its own update.
    for n in 1..=100 {
        shard.publish(&server.hub, &[("SIM-A", Some(n))]);
        let f = next(&mut ws).await;
        assert_eq!((f["type"].as_str(), f["seq"].as_i64(), f["missed"].as_u64()), (Some("update"), Some(n), Some(0)));
        assert_eq!(f["doc"]["state"]["n"], n);
    }
    // A burst: updates may coalesce, but stay in order and add up.
    for n in 101..=200 {
        shard.publish(&server.hub, &[("SIM-A", Some(n))]);
    }
    let (mut seq, mut delivered) = (100, 0);
    while seq < 200 {
        let f = next(&mut ws).await;
        let (s, missed) = (f["seq"].as_i64().unwrap(), f["missed"].as_i64().unwrap());
        assert_eq!(s, seq + missed + 1, "{f}");
        assert_eq!(f["doc"]["state"]["n"], s);
        (seq, delivered) = (s, delivered + missed + 1);
    }
    assert_eq!(delivered, 100);
}

/// Waits until at least `bytes` sent by the server wait unread in the
/// client's socket.
async fn wait_buffered(ws: &Client, bytes: usize) {
    let MaybeTlsStream::Plain(tcp) = ws.get_ref() else { panic!("not a plain TCP stream") };
    let mut buf = vec![0; bytes];
    let deadline = Instant::now() + DEADLINE;
    while tcp.peek(&mut buf).await.unwrap() < bytes {
        assert!(Instant::now() < deadline, "the server wrote less than {bytes} bytes in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Publishes `rounds` batches, each changing every entity once; returns how
/// long publishing took.
fn publish_rounds(hub: &Hub, shard: &mut Shard, keys: &[String], rounds: std::ops::RangeInclusive<i64>) -> Duration {
    let started = Instant::now();
    for n in rounds {
        let changes: Vec<(&str, Option<i64>)> = keys.iter().map(|k| (k.as_str(), Some(n))).collect();
        shard.publish(hub, &changes);
    }
    started.elapsed()
}

/// Reads until every key's last frame has `seq == changes`; checks order and
/// returns (updates received, sum of missed, overflow frames).
async fn read_until_caught_up(ws: &mut Client, keys: &[String], changes: i64, latest: i64) -> (i64, i64, usize) {
    let mut last: BTreeMap<String, i64> = keys.iter().map(|k| (k.clone(), 0)).collect();
    let (mut updates, mut missed, mut overflows) = (0, 0, 0);
    while last.values().any(|&s| s < changes) {
        let f = next(ws).await;
        if f["type"] == "overflow" {
            assert!(f["dropped"].as_u64().unwrap() > 0, "{f}");
            overflows += 1;
            continue;
        }
        assert_eq!(f["type"], "update", "{f}");
        let key = f["key"].as_str().unwrap().to_string();
        let (seq, m) = (f["seq"].as_i64().unwrap(), f["missed"].as_i64().unwrap());
        let previous = last.insert(key, seq).unwrap();
        assert_eq!(seq, previous + m + 1, "seq gaps are what was missed: {f}");
        if seq == changes {
            assert_eq!(f["doc"]["state"]["n"], latest, "the last update is the latest document");
        }
        (updates, missed) = (updates + 1, missed + m);
    }
    (updates, missed, overflows)
}

async fn stalled_client_run(settings: ApiSettings) -> (Duration, Duration, (i64, i64, usize)) {
    let server = start(settings).await;
    let keys = names(50);
    let mut shard = Shard::new(8 * 1024);
    // Without a subscriber.
    let alone = publish_rounds(&server.hub, &mut shard, &keys, 1..=100);
    let mut ws = server.connect_small().await;
    subscribe(&mut ws, json!([{"kind": "symbol"}])).await;
    for _ in &keys {
        assert_eq!(next(&mut ws).await["type"], "snapshot");
    }
    // The client reads nothing while 5,000 changes (~40 MB of frames) are
    // published.
    let stalled = publish_rounds(&server.hub, &mut shard, &keys, 101..=200);
    // Stay stalled until the server's writes are held up by this client.
    wait_buffered(&ws, 16 * 1024).await;
    let outcome = read_until_caught_up(&mut ws, &keys, 100, 200).await;
    (alone, stalled, outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_does_not_slow_publishing_and_gets_the_latest_documents() {
    let (alone, stalled, (updates, missed, overflows)) = stalled_client_run(ApiSettings::default()).await;
    assert!(stalled <= alone * 5 + Duration::from_millis(250), "publishing took {stalled:?} stalled, {alone:?} alone");
    assert_eq!(updates + missed, 5_000, "every change is an update or counted as missed");
    assert!(missed > 0, "a stalled client's updates are coalesced");
    assert_eq!(overflows, 0, "50 entities fit in the buffer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_overflows_then_resyncs_from_the_view() {
    let settings = ApiSettings { stream_buffer: 8, ..ApiSettings::default() };
    let (alone, stalled, (updates, missed, overflows)) = stalled_client_run(settings).await;
    assert!(stalled <= alone * 5 + Duration::from_millis(250), "publishing took {stalled:?} stalled, {alone:?} alone");
    assert_eq!(updates + missed, 5_000);
    assert!(overflows >= 1, "50 entities changing at once overflow a buffer of 8");
}

#[tokio::test]
async fn too_many_subscriptions_are_refused_with_429() {
    let settings = ApiSettings { max_subscriptions: 2, ..ApiSettings::default() };
    let server = start(settings).await;
    let first = server.connect().await;
    let _second = server.connect().await;
    let error = tokio_tungstenite::connect_async(format!("ws://{}/v1/stream", server.addr)).await.unwrap_err();
    let tungstenite::Error::Http(response) = error else { panic!("expected an HTTP answer, got {error}") };
    assert_eq!(response.status(), 429);
    let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "too_many_subscriptions");
    assert!(body["error"]["message"].as_str().unwrap().contains("(limit 2)"), "{body}");
    // Closing one frees its place.
    drop(first);
    server.wait_open(1).await;
    let _third = server.connect().await;
    server.wait_open(2).await;
}

#[tokio::test]
async fn bad_messages_get_error_frames_and_the_socket_stays_open() {
    let server = start(ApiSettings::default()).await;
    let mut ws = server.connect().await;
    let cases = [
        ("{not json", "malformed_json", "not JSON"),
        (r#"{"op":"dance"}"#, "unknown_op", "\"dance\""),
        (r#"{"op":"subscribe","entities":[{"kind":"planet","key":"x"}]}"#, "unknown_kind", "\"planet\""),
        (r#"{"op":"subscribe","entities":{"kind":"symbol"}}"#, "bad_message", "`entities` must be an array"),
    ];
    for (text, code, names) in cases {
        ws.send(Message::text(text)).await.unwrap();
        let f = next(&mut ws).await;
        assert_eq!((f["type"].as_str(), f["code"].as_str()), (Some("error"), Some(code)), "{text}: {f}");
        assert!(f["message"].as_str().unwrap().contains(names), "{text}: {f}");
    }
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(next(&mut ws).await["code"], "binary_message");
    send(&mut ws, json!({"op": "ping"})).await;
    assert_eq!(next(&mut ws).await, json!({"type": "pong"}));
    // A plain GET is answered in JSON too.
    let plain = reqwest::get(format!("http://{}/v1/stream", server.addr)).await.unwrap();
    assert!(plain.status().is_client_error());
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body["error"]["code"], "websocket_upgrade_required");
}

#[tokio::test]
async fn removals_are_sent() {
    let server = start(ApiSettings::default()).await;
    let mut shard = Shard::new(0);
    shard.publish(&server.hub, &[("SIM-A", Some(1)), ("SIM-B", Some(1))]);
    let mut ws = server.connect().await;
    subscribe(&mut ws, json!([{"kind": "symbol"}])).await;
    assert_eq!(next(&mut ws).await["type"], "snapshot");
    assert_eq!(next(&mut ws).await["type"], "snapshot");
    shard.publish(&server.hub, &[("SIM-A", None)]);
    let f = next(&mut ws).await;
    assert_eq!((f["type"].as_str(), f["key"].as_str(), f["seq"].as_u64()), (Some("removed"), Some("SIM-A"), Some(1)));
    assert_eq!(f["doc"], Value::Null);
    // The shard moves to another instance: its entities are removed.
    server.hub.remove(&shard.id);
    let f = next(&mut ws).await;
    assert_eq!((f["type"].as_str(), f["key"].as_str()), (Some("removed"), Some("SIM-B")));
}

async fn expect_going_away(ws: &mut Client) {
    loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await.expect("no close in time") {
            Some(Ok(Message::Close(Some(frame)))) => return assert_eq!(frame.code, CloseCode::Away),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn shutting_down_closes_streams() {
    let server = start(ApiSettings::default()).await;
    let mut ws = server.connect().await;
    server.wait_open(1).await;
    server.shutdown.cancel();
    expect_going_away(&mut ws).await;
    server.wait_open(0).await;
    tokio::time::timeout(DEADLINE, server.task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn dropping_the_hub_closes_streams() {
    let server = start_with(ApiSettings::default(), false).await;
    let mut ws = server.connect().await;
    send(&mut ws, json!({"op": "ping"})).await;
    assert_eq!(next(&mut ws).await["type"], "pong");
    // The server stops (it does not wait for upgraded connections) and the
    // last reference to the hub goes.
    let Server { hub, open, shutdown, task, .. } = server;
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap().unwrap();
    drop(hub);
    expect_going_away(&mut ws).await;
    wait_open(&open, 0).await;
}
