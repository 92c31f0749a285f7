//! The HTTP API against a real server on 127.0.0.1:0, with real clients.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shoal_api::auth::Tokens;
use shoal_api::{ApiContext, ApiSettings, Directory, EntityDoc, Hub, Member, NoPeers, ShardId, ShardView, Watermark};
use shoal_state::{EntityKind, Provenance};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const READ: &str = "read-token-for-tests-0001";
const ADMIN: &str = "admin-token-for-tests-0001";
const CMD: &str = "0190a5b2-3c4d-7e8f-9a0b-1c2d3e4f5a6b";

#[derive(Debug)]
struct Peers(Vec<Member>);

impl Directory for Peers {
    fn peers(&self) -> Vec<Member> {
        self.0.clone()
    }
}

struct Server {
    base: String,
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(hub: Arc<Hub>, directory: Arc<dyn Directory>, instance: &str, settings: ApiSettings) -> Server {
    let tokens = Tokens::parse(&format!("# test tokens\nread:{READ}\nadmin:{ADMIN}\n"), "test").unwrap();
    let ctx = ApiContext {
        hub,
        settings: Arc::new(settings),
        tokens: Arc::new(tokens),
        directory,
        instance: instance.into(),
        subscriptions: Arc::new(AtomicUsize::new(0)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(shoal_api::http::serve(ctx, listener, shutdown.clone()));
    Server { base: format!("http://{addr}"), addr, shutdown, task }
}

fn ts(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_735_689_600 + secs, 0).unwrap()
}

fn doc(kind: EntityKind, key: &str, shard: &ShardId, secs: i64, state: Value) -> (EntityKind, String, Arc<EntityDoc>) {
    let provenance = Provenance::new(shard.topic.clone(), shard.partition, secs);
    let d = EntityDoc { kind, key: key.into(), shard: shard.clone(), updated_at: ts(secs), provenance, state };
    (kind, key.into(), Arc::new(d))
}

fn publish(hub: &Hub, topic: &str, partition: i32, docs: Vec<(EntityKind, String, Arc<EntityDoc>)>) {
    let id = ShardId { topic: topic.into(), partition };
    let newest = docs.iter().map(|(_, _, d)| d.updated_at).max();
    let offset = docs.iter().map(|(_, _, d)| d.provenance.offset).max().unwrap_or(-1);
    let watermark = Watermark { topic: topic.into(), partition, offset, event_time: newest };
    let entities = docs.into_iter().map(|(k, key, d)| ((k, key), d)).collect();
    hub.publish(Arc::new(ShardView { id, watermark, entities }), Vec::new());
}

fn stamp(topic: &str, partition: i32, secs: i64) -> Value {
    json!({"at": ts(secs), "provenance": {"topic": topic, "partition": partition, "offset": secs}})
}

fn command_issued() -> Value {
    json!({
        "id": CMD, "kind": "raise_alert", "key": "SIM-A", "seq": 1, "status": "issued",
        "issued": {"schema_version": 1, "id": CMD, "kind": "raise_alert", "key": "SIM-A", "seq": 1,
                   "issued_at": ts(10), "deadline": null, "payload": {},
                   "at": ts(10), "provenance": {"topic": "commands", "partition": 0, "offset": 10}},
        "result": null, "dead_letter": null,
        "timings": {"queue_ms": null, "handling_ms": null, "end_to_end_ms": null},
        "duplicates": 0, "updated": stamp("commands", 0, 10),
    })
}

fn command_result() -> Value {
    json!({
        "id": CMD, "kind": "raise_alert", "key": "SIM-A", "seq": 1, "status": "succeeded",
        "issued": null,
        "result": {"schema_version": 1, "command_id": CMD, "kind": "raise_alert", "key": "SIM-A", "seq": 1,
                   "worker_id": "w-1", "status": "succeeded", "output": {"severity": "critical"},
                   "started_at": ts(11), "finished_at": ts(12),
                   "at": ts(12), "provenance": {"topic": "results", "partition": 1, "offset": 12}},
        "dead_letter": null,
        "timings": {"queue_ms": null, "handling_ms": 1000, "end_to_end_ms": null},
        "duplicates": 0, "updated": stamp("results", 1, 12),
    })
}

fn alerts() -> Value {
    json!([{"command_id": CMD, "entity": "SIM-A", "subject": "SIM-A", "severity": "critical",
            "message": "crossed", "at": ts(12), "provenance": {"topic": "results", "partition": 1, "offset": 12}}])
}

/// As the results' shard knows them: without the end-to-end latency.
fn outcomes() -> Value {
    json!({"updated": stamp("results", 1, 12), "recent": [{
        "command_id": CMD, "kind": "raise_alert", "seq": 1, "status": "succeeded",
        "at": ts(12), "provenance": {"topic": "results", "partition": 1, "offset": 12}, "end_to_end_ms": null,
    }]})
}

/// Ticks on ticks/0, the command on commands/0, its result and alert on
/// results/1.
fn full_hub() -> Arc<Hub> {
    let hub = Arc::new(Hub::new());
    let ticks = ShardId { topic: "ticks".into(), partition: 0 };
    let symbol = |key: &str, secs| doc(EntityKind::Symbol, key, &ticks, secs, json!({"trades": secs}));
    publish(&hub, "ticks", 0, vec![symbol("SIM-A", 5), symbol("SIM-B", 7), symbol("SIM-C", 3)]);
    publish(&hub, "commands", 0, vec![doc(EntityKind::Command, CMD, &shard("commands", 0), 10, command_issued())]);
    publish(&hub, "results", 1, results_docs());
    hub
}

fn shard(topic: &str, partition: i32) -> ShardId {
    ShardId { topic: topic.into(), partition }
}

fn results_docs() -> Vec<(EntityKind, String, Arc<EntityDoc>)> {
    let results = shard("results", 1);
    vec![
        doc(EntityKind::Command, CMD, &results, 12, command_result()),
        doc(EntityKind::Alerts, "SIM-A", &results, 12, alerts()),
        doc(EntityKind::Outcomes, "SIM-A", &results, 12, outcomes()),
    ]
}

async fn get(url: &str, token: Option<&str>) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, headers, body)
}

async fn single() -> Server {
    start(full_hub(), Arc::new(NoPeers), "solo", ApiSettings::default()).await
}

#[tokio::test]
async fn lists_entities_with_freshness() {
    let s = single().await;
    let (status, _, body) = get(&format!("{}/v1/entities?kind=symbol", s.base), Some(READ)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let keys: Vec<_> = body["entities"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["SIM-A", "SIM-B", "SIM-C"]);
    assert_eq!(body["entities"][0]["shard"], json!({"topic": "ticks", "partition": 0}));
    assert_eq!((body["kind"].as_str(), body["truncated"].as_bool()), (Some("symbol"), Some(false)));
    assert_eq!(body["served_by"], "solo");
    assert_eq!(body["freshness"]["watermarks"].as_array().unwrap().len(), 3);
    assert_eq!(body["freshness"]["event_time"], json!(ts(7)), "the oldest shard's event time");
    let (_, _, body) = get(&format!("{}/v1/entities?kind=symbol&limit=2", s.base), Some(READ)).await;
    assert_eq!((body["entities"].as_array().unwrap().len(), body["truncated"].as_bool()), (2, Some(true)));
    let (_, _, body) = get(&format!("{}/v1/entities?kind=command", s.base), Some(READ)).await;
    assert_eq!(body["entities"].as_array().unwrap().len(), 1, "one command, two parts: {body}");
}

#[tokio::test]
async fn answers_one_entity_or_404() {
    let s = single().await;
    let (status, _, body) = get(&format!("{}/v1/state/symbol/SIM-B", s.base), Some(ADMIN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], json!({"trades": 7}));
    assert_eq!(body["provenance"], json!({"topic": "ticks", "partition": 0, "offset": 7}));
    assert_eq!(body["updated_at"], json!(ts(7)));
    assert_eq!(body["freshness"]["watermarks"][0]["topic"], "ticks");
    let (status, _, body) = get(&format!("{}/v1/state/symbol/NOPE", s.base), Some(READ)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"].as_str().unwrap().contains("symbol") && body.to_string().contains("NOPE"));
    let (status, _, body) = get(&format!("{}/v1/commands/{}", s.base, CMD.to_uppercase()), Some(READ)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["key"], CMD);
    let parts: Vec<_> = body["parts"].as_array().unwrap().iter().map(|p| p["shard"]["topic"].clone()).collect();
    assert_eq!(parts, ["commands", "results"], "every part's provenance, oldest first");
    assert_eq!(body["freshness"]["watermarks"].as_array().unwrap().len(), 2);
    assert_eq!(body["state"]["status"], "succeeded");
    assert_eq!(body["state"]["issued"]["id"], CMD, "the parts are merged: {body}");
    assert_eq!(body["state"]["timings"]["end_to_end_ms"], 2_000, "{body}");
    let (status, _, body) = get(&format!("{}/v1/state/outcomes/SIM-A", s.base), Some(READ)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"]["recent"][0]["end_to_end_ms"], 2_000, "completed from the command: {body}");
    assert_eq!(body["freshness"]["watermarks"].as_array().unwrap().len(), 2, "results and commands");
}

#[tokio::test]
async fn bad_parameters_are_400_naming_them() {
    let s = single().await;
    let cases = [
        ("/v1/entities?kind=planet", "kind"),
        ("/v1/entities", "kind"),
        ("/v1/entities?kind=symbol&limit=0", "limit"),
        ("/v1/entities?kind=symbol&limit=1001", "limit"),
        ("/v1/entities?kind=symbol&colour=red", "colour"),
        ("/v1/entities?kind=symbol&kind=device", "kind"),
        ("/v1/state/planet/x", "kind"),
        ("/v1/state/symbol/SIM-A?fresh=1", "fresh"),
        ("/v1/commands/not-a-uuid", "id"),
        ("/v1/commands?status=done", "status"),
        ("/v1/alerts?since=yesterday", "since"),
        ("/v1/summary?max_tokens=10", "max_tokens"),
        ("/v1/summary?max_tokens=many", "max_tokens"),
        ("/v1/summary?max_tokens=32001", "max_tokens"),
        ("/v1/summary?format=yaml", "format"),
        ("/v1/summary?keys=,", "keys"),
        ("/v1/summary?kind=planet", "kind"),
    ];
    for (path, parameter) in cases {
        let (status, _, body) = get(&format!("{}{path}", s.base), Some(READ)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["code"], "bad_parameter", "{path}");
        assert_eq!(body["error"]["parameter"], parameter, "{path}: {body}");
    }
    let (_, _, body) = get(&format!("{}/v1/commands?status=done", s.base), Some(READ)).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("issued, succeeded, failed"), "{body}");
}

#[tokio::test]
async fn tokens_and_roles() {
    let s = single().await;
    let url = format!("{}/v1/entities?kind=symbol", s.base);
    let (status, headers, body) = get(&url, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, headers, _) = get(&url, Some("wrong-token-but-long-enough")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    let shards = format!("{}/v1/admin/shards", s.base);
    let (status, _, body) = get(&shards, Some(READ)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    let (status, _, body) = get(&shards, Some(ADMIN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["shards"].as_array().unwrap().len(), 3);
    assert_eq!(
        body["shards"][1]["entities"],
        json!({"symbol": 0, "account": 0, "device": 0, "command": 1, "outcomes": 1, "alerts": 1}),
        "results/1"
    );
    assert_eq!(body["shards"][2]["entities"]["symbol"], 3, "ticks/0");
    let (status, _, body) = get(&format!("{}/v1/admin/members", s.base), Some(ADMIN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["members"][0]["instance"], "solo");
    assert_eq!(body["members"][0]["shards"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn open_routes_need_no_token_and_unknown_routes_are_json() {
    let s = single().await;
    let (status, _, body) = get(&format!("{}/healthz", s.base), None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, _, body) = get(&format!("{}/readyz", s.base), None).await;
    assert_eq!((status, body["status"].as_str(), body["shards"].as_u64()), (StatusCode::OK, Some("ok"), Some(3)));
    let (status, _, body) = get(&format!("{}/v1/nothing", s.base), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let response = reqwest::Client::new().post(format!("{}/healthz", s.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let s = single().await;
    let (status, _, doc) = get(&format!("{}/v1/openapi.json", s.base), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths: Vec<_> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    for path in [
        "/healthz",
        "/readyz",
        "/v1/openapi.json",
        "/v1/entities",
        "/v1/state/{kind}/{key}",
        "/v1/commands",
        "/v1/commands/{id}",
        "/v1/alerts",
        "/v1/summary",
        "/v1/admin/shards",
        "/v1/admin/members",
        "/v1/stream",
    ] {
        assert!(paths.iter().any(|p| p == path), "{path} missing from {paths:?}");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert!(doc["paths"]["/v1/stream"]["get"]["responses"]["101"].is_object());
}

#[tokio::test]
async fn lists_commands_and_alerts() {
    let s = single().await;
    let (status, _, body) = get(&format!("{}/v1/commands?status=succeeded&key=SIM-A", s.base), Some(READ)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["commands"][0]["id"], CMD);
    let (_, _, body) = get(&format!("{}/v1/commands?status=failed", s.base), Some(READ)).await;
    assert_eq!(body["commands"], json!([]));
    let (status, _, body) = get(&format!("{}/v1/alerts?severity=critical", s.base), Some(READ)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["alerts"], alerts());
    let since = ts(13).to_rfc3339().replace('+', "%2B");
    let (_, _, body) = get(&format!("{}/v1/alerts?since={since}", s.base), Some(READ)).await;
    assert_eq!(body["alerts"], json!([]), "{body}");
}

#[tokio::test]
async fn forwards_to_the_peer_holding_the_key() {
    let a = single().await;
    let peer = Member { instance: "a".into(), api_url: a.base.clone(), shards: vec![shard("ticks", 0)] };
    let b = start(Arc::new(Hub::new()), Arc::new(Peers(vec![peer])), "b", ApiSettings::default()).await;
    let (status, _, body) = get(&format!("{}/v1/state/symbol/SIM-A", b.base), Some(READ)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["served_by"].as_str(), body["state"]["trades"].as_i64()), (Some("solo"), Some(5)));
    let (status, _, body) = get(&format!("{}/v1/state/symbol/NOPE", b.base), Some(READ)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("1 other instance"), "{body}");
    let (status, _, _) = get(&format!("{}/v1/state/symbol/SIM-A", b.base), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "auth first");
    let forwarded = reqwest::Client::new()
        .get(format!("{}/v1/state/symbol/SIM-A", b.base))
        .bearer_auth(READ)
        .header("x-shoal-forwarded", "elsewhere")
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.status(), StatusCode::NOT_FOUND, "a forwarded query is not forwarded again");
}

#[tokio::test]
async fn merges_command_parts_held_by_two_instances() {
    let hub_a = Arc::new(Hub::new());
    publish(&hub_a, "commands", 0, vec![doc(EntityKind::Command, CMD, &shard("commands", 0), 10, command_issued())]);
    let a = start(hub_a, Arc::new(NoPeers), "a", ApiSettings::default()).await;
    let hub_b = Arc::new(Hub::new());
    publish(&hub_b, "results", 1, results_docs());
    let peer = Member { instance: "a".into(), api_url: a.base.clone(), shards: vec![shard("commands", 0)] };
    let b = start(hub_b, Arc::new(Peers(vec![peer])), "b", ApiSettings::default()).await;
    let (status, _, body) = get(&format!("{}/v1/commands/{CMD}", b.base), Some(READ)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let parts: Vec<_> = body["parts"].as_array().unwrap().iter().map(|p| p["served_by"].clone()).collect();
    assert_eq!(parts, ["a", "b"]);
    assert_eq!(body["served_by"], "b");
    assert_eq!(body["freshness"]["watermarks"].as_array().unwrap().len(), 2);
    assert_eq!(
        (body["state"]["status"].as_str(), body["state"]["timings"]["queue_ms"].as_i64()),
        (Some("succeeded"), Some(1_000))
    );
}

#[tokio::test]
async fn cors_when_configured_and_graceful_shutdown() {
    let settings = ApiSettings { cors_allowed_origins: vec!["https://ui.example".into()], ..ApiSettings::default() };
    let s = start(full_hub(), Arc::new(NoPeers), "solo", settings).await;
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{}/v1/entities?kind=symbol", s.base))
        .header("origin", "https://ui.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://ui.example");
    let other = reqwest::Client::new().get(format!("{}/healthz", s.base)).header("origin", "https://evil.example");
    assert!(other.send().await.unwrap().headers().get("access-control-allow-origin").is_none());
    s.shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(3), s.task).await.unwrap().unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(s.addr).await.is_err(), "no longer listening");
}

#[tokio::test]
async fn summarizes_within_the_budget_with_freshness_and_provenance() {
    let s = single().await;
    let (status, _, body) = get(&format!("{}/v1/summary?max_tokens=400", s.base), Some(READ)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = body["summary"].as_str().unwrap();
    assert!(body["tokens"].as_u64().unwrap() <= 400, "{body}");
    assert_eq!(body["encoding"], "o200k_base");
    // Three symbols, the command (issued and answered: one merged item), the
    // alerts and the outcomes of SIM-A.
    assert_eq!(body["included"], 6, "{text}");
    assert!(text.contains(&format!("- command {CMD} status=succeeded")), "{text}");
    assert!(text.contains("src=results/1@"), "{text}");
    assert_eq!(body["freshness"]["watermarks"].as_array().unwrap().len(), 3, "{body}");
    // A small budget leaves items out and says so.
    let (_, _, small) = get(&format!("{}/v1/summary?max_tokens=60&format=json", s.base), Some(READ)).await;
    assert!(small["tokens"].as_u64().unwrap() <= 60, "{small}");
    let digest: Value = serde_json::from_str(small["summary"].as_str().unwrap()).unwrap();
    let left_out: u64 = small["omitted"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(small["included"].as_u64().unwrap() + left_out, 6, "{small}");
    assert_eq!(digest["included"], small["included"]);
    // A scope of keys; a token is needed.
    let (_, _, scoped) = get(&format!("{}/v1/summary?keys=SIM-B", s.base), Some(READ)).await;
    assert_eq!(scoped["included"], 1, "{scoped}");
    // SIM-A names a symbol and its outcomes and alerts; with a kind, only the symbol.
    let (_, _, any_kind) = get(&format!("{}/v1/summary?keys=SIM-A&max_tokens=4000", s.base), Some(READ)).await;
    let (_, _, one_kind) =
        get(&format!("{}/v1/summary?kind=symbol&keys=SIM-A&max_tokens=4000", s.base), Some(READ)).await;
    assert!(any_kind["included"].as_u64().unwrap() > 1, "{any_kind}");
    assert_eq!(one_kind["included"], 1, "{one_kind}");
    let (status, _, _) = get(&format!("{}/v1/summary", s.base), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
