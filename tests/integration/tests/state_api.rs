//! The state query API of a real orchestrator fed by the simulator:
//! checked against its own OpenAPI document by schemathesis (an external
//! property-based tester from PyPI), its authentication and errors with a
//! plain HTTP client, and its WebSocket stream with a real client.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use nix::sys::signal::Signal;
use shoal_integration_tests::*;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

/// Simulator, then one orchestrator (ingest and decisions) serving the API.
async fn serving(test: &str) -> (Scope, Proc, Proc, SocketAddr) {
    let scope = Scope::with_topics(test).await;
    let (sim, url) = start_sim(&["--rate", "30", "--seed", "7", "--symbols", "AP-A,AP-B,AP-C"], &scope.dir);
    let orchestrator = scope.orchestrator("orchestrator").stages("ingest,decisions").feed(&url).lively_rules().spawn();
    let api = api_address(&orchestrator, Duration::from_secs(60)).await;
    wait_for(Duration::from_secs(60), "three symbols in the state", || async move {
        let (_, body) = api_get(api, "/v1/entities?kind=symbol", Some(READ_TOKEN)).await.map_err(|e| e.to_string())?;
        let n = body["entities"].as_array().map_or(0, Vec::len);
        if n >= 3 { Ok(()) } else { Err(format!("{n} symbols: {body}")) }
    })
    .await;
    (scope, sim, orchestrator, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_matches_its_openapi_document() {
    let (_scope, sim, mut orchestrator, api) = serving("state-api-contract").await;
    let script = repo_root().join("scripts/api-check.sh");
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .arg(format!("http://{api}"))
        .arg(ADMIN_TOKEN)
        .output()
        .await
        .expect("running scripts/api-check.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "schemathesis found problems:\n{stdout}\n{stderr}");
    // Its summary names the operations it tested; a run that tested
    // nothing must not pass.
    assert!(stdout.contains("passed"), "schemathesis summary:\n{stdout}");
    eprintln!("{}", stdout.lines().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n"));
    orchestrator.stop_cleanly(Duration::from_secs(20));
    sim.signal(Signal::SIGTERM);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_and_errors() {
    let (_scope, sim, mut orchestrator, api) = serving("state-api-auth").await;
    let get = |path: &'static str, token: Option<&'static str>| api_get(api, path, token);
    // Open: probes and the document.
    assert_eq!(get("/healthz", None).await.unwrap().0, 200);
    assert_eq!(get("/v1/openapi.json", None).await.unwrap().1["openapi"], "3.0.3");
    // No token, a wrong token: 401 with a JSON error body.
    for token in [None, Some("not-a-valid-token-at-all")] {
        let (status, body) = get("/v1/entities?kind=symbol", token).await.unwrap();
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    // A read token on an admin route: 403; the admin token: 200.
    let (status, body) = get("/v1/admin/shards", Some(READ_TOKEN)).await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(get("/v1/admin/shards", Some(ADMIN_TOKEN)).await.unwrap().0, 200);
    // Bad input: named parameters, unknown entities.
    let (status, body) = get("/v1/entities?kind=planet", Some(READ_TOKEN)).await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["parameter"], "kind", "{body}");
    let (status, body) = get("/v1/commands/not-a-uuid", Some(READ_TOKEN)).await.unwrap();
    assert_eq!(status, 400, "{body}");
    let (status, body) = get("/v1/state/symbol/NO-SUCH-SYMBOL", Some(READ_TOKEN)).await.unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("NO-SUCH-SYMBOL"), "{body}");
    // A served entity says how fresh it is and where it came from.
    let (status, body) = get("/v1/state/symbol/AP-A", Some(READ_TOKEN)).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body["provenance"]["offset"].is_i64(), "{body}");
    assert!(body["freshness"]["watermarks"][0]["offset"].is_i64(), "{body}");
    assert!(body["state"]["last_trade"]["provenance"]["topic"].is_string(), "values carry provenance: {body}");
    let log = orchestrator.log_text();
    for token in [READ_TOKEN, ADMIN_TOKEN] {
        assert!(!log.contains(token), "a token appears in the log");
    }
    orchestrator.stop_cleanly(Duration::from_secs(20));
    sim.signal(Signal::SIGTERM);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_sends_each_entitys_changes_in_order() {
    let (_scope, sim, mut orchestrator, api) = serving("state-api-stream").await;
    let mut request = format!("ws://{api}/v1/stream").into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {READ_TOKEN}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("WebSocket upgrade");
    let subscribe = serde_json::json!({"op": "subscribe", "entities": [{"kind": "symbol"}]});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    // Per symbol: the seq and watermark offset of every frame, for 5 s.
    let mut seen: BTreeMap<String, Vec<(u64, i64, u64)>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(Duration::from_secs(2), ws.next()).await else {
            continue;
        };
        let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
        if matches!(frame["type"].as_str(), Some("snapshot" | "update")) {
            let key = frame["key"].as_str().unwrap().to_string();
            let seq = frame["seq"].as_u64().unwrap();
            let offset = frame["watermark"]["offset"].as_i64().unwrap_or(-1);
            let missed = frame["missed"].as_u64().unwrap_or(0);
            seen.entry(key).or_default().push((seq, offset, missed));
        }
    }
    assert!(seen.len() >= 3, "frames for every symbol: {:?}", seen.keys());
    for (key, frames) in &seen {
        assert!(frames.len() > 5, "{key}: a stream of updates ({} frames)", frames.len());
        for pair in frames.windows(2) {
            let ((s0, o0, _), (s1, o1, missed)) = (pair[0], pair[1]);
            assert_eq!(s1, s0 + 1 + missed, "{key}: seq goes up by one per change (gaps are reported as missed)");
            assert!(o1 >= o0, "{key}: watermark offsets never go back");
        }
    }
    ws.close(None).await.ok();
    orchestrator.stop_cleanly(Duration::from_secs(20));
    sim.signal(Signal::SIGTERM);
}
