//! The orchestrator's own endpoints over HTTPS (`api.tls_cert_file`,
//! `observability.tls_cert_file`) with certificates a test CA made here,
//! and `/metrics` behind its bearer token (`observability.metrics_token_env`):
//! a real orchestrator fed by the simulator, asked by an HTTPS client
//! (hyper over rustls, `shoal_tls::HttpClient`) that trusts the test CA; a
//! plain-HTTP client and a client trusting another CA get nothing; a certificate file that cannot
//! be read stops the start naming the setting.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nix::sys::signal::Signal;
use shoal_integration_tests::pki::TestCa;
use shoal_integration_tests::*;

const METRICS_TOKEN: &str = "it-metrics-token-6d1e0b2c";

/// An HTTPS client that trusts the CA in `ca_file` only.
fn client_trusting(ca_file: &str) -> shoal_tls::HttpClient {
    let roots = shoal_tls::ca_roots(ca_file).unwrap();
    shoal_tls::HttpClient::new(shoal_tls::client_config(roots).unwrap(), Duration::from_secs(10))
}

/// `GET url`, with `token` as the bearer token when given: status and body.
async fn get(
    client: &shoal_tls::HttpClient,
    url: &str,
    token: Option<&str>,
) -> Result<(u16, String), shoal_tls::HttpError> {
    let mut request = axum::http::Request::get(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let (status, body) = client.send(request.body(axum::body::Bytes::new()).unwrap(), 1 << 24).await?;
    Ok((status.as_u16(), String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_mcp_and_metrics_serve_https_and_metrics_need_their_token() {
    let scope = Scope::with_topics("api-tls").await;
    let ca = TestCa::new(&scope.dir, "ca");
    let stranger = TestCa::new(&scope.dir, "stranger-ca");
    let (cert, key) = ca.server(&scope.dir, "orchestrator", &["127.0.0.1", "localhost"], false);
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let (sim, url) = start_sim(&["--rate", "20", "--seed", "3", "--symbols", "TLS-A,TLS-B"], &scope.dir);
    let mut orchestrator = scope
        .orchestrator("orchestrator")
        .stages("ingest,decisions")
        .feed(&url)
        .lively_rules()
        .with("SHOAL__API__TLS_CERT_FILE", &cert)
        .with("SHOAL__API__TLS_KEY_FILE", &key)
        .with("SHOAL__OBSERVABILITY__TLS_CERT_FILE", &cert)
        .with("SHOAL__OBSERVABILITY__TLS_KEY_FILE", &key)
        .with("SHOAL__OBSERVABILITY__METRICS_TOKEN_ENV", "IT_METRICS_TOKEN")
        .with("IT_METRICS_TOKEN", METRICS_TOKEN)
        .spawn();
    let api = api_address(&orchestrator, Duration::from_secs(60)).await;
    let http = http_address(&orchestrator, Duration::from_secs(60)).await;
    let client = client_trusting(&ca.path());
    let base = format!("https://127.0.0.1:{}", api.port());

    // The API over HTTPS: the token still decides.
    let entities = format!("{base}/v1/entities?kind=symbol");
    eventually(Duration::from_secs(60), "both symbols served over HTTPS", || {
        let (client, entities) = (client.clone(), entities.clone());
        async move {
            let Ok((200, body)) = get(&client, &entities, Some(READ_TOKEN)).await else { return false };
            let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            body["entities"].as_array().map_or(0, Vec::len) == 2
        }
    })
    .await;
    assert_eq!(get(&client, &entities, None).await.unwrap().0, 401, "no token, no state, TLS or not");
    // MCP at /mcp, over the same HTTPS and tokens: an initialize request.
    let initialize = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "api-tls", "version": "0"}}
    });
    let request = axum::http::Request::post(format!("https://localhost:{}/mcp", api.port()))
        .header("authorization", format!("Bearer {READ_TOKEN}"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(axum::body::Bytes::from(initialize.to_string()))
        .unwrap();
    let (status, body) = client.send(request, 1 << 20).await.unwrap();
    assert_eq!(status, 200, "MCP initialize over HTTPS: {}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("serverInfo"), "an initialize result");

    // Nothing for a plain-HTTP client or one that does not trust the CA.
    let plain = http_get(api, "/healthz").await;
    assert!(!matches!(plain, Ok((200, _))), "plain HTTP gets no answer: {plain:?}");
    let untrusting = get(&client_trusting(&stranger.path()), &format!("{base}/healthz"), None).await;
    let error = untrusting.expect_err("another CA's client refuses the certificate").to_string();
    assert!(error.contains("UnknownIssuer"), "{error}");

    // The observability port over HTTPS: probes open, /metrics behind its token.
    let obs = format!("https://127.0.0.1:{}", http.port());
    assert_eq!(get(&client, &format!("{obs}/healthz"), None).await.unwrap().0, 200);
    let metrics = format!("{obs}/metrics");
    assert_eq!(get(&client, &metrics, None).await.unwrap().0, 401);
    assert_eq!(get(&client, &metrics, Some("it-metrics-token-WRONG000")).await.unwrap().0, 401);
    let (status, text) = get(&client, &metrics, Some(METRICS_TOKEN)).await.unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("shoal_feed_ticks_total"), "the orchestrator's counters: {}", &text[..text.len().min(400)]);

    orchestrator.stop_cleanly(Duration::from_secs(20));
    assert!(!orchestrator.log_text().contains(METRICS_TOKEN), "the metrics token is never logged");
    sim.signal(Signal::SIGTERM);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_certificate_stops_the_start_naming_the_setting() {
    let scope = Scope::with_topics("api-tls-bad").await;
    let ca = TestCa::new(&scope.dir, "ca");
    let (_, key) = ca.server(&scope.dir, "orchestrator", &["127.0.0.1"], false);
    let missing = scope.dir.join("no-such-cert.pem").display().to_string();
    let mut orchestrator = scope
        .orchestrator("orchestrator")
        .stages("ingest,decisions")
        .with("SHOAL__API__TLS_CERT_FILE", &missing)
        .with("SHOAL__API__TLS_KEY_FILE", key.display().to_string())
        .spawn();
    let status = orchestrator.expect_exit(Duration::from_secs(60));
    let log = orchestrator.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("api.tls_cert_file") && log.contains("no-such-cert.pem"), "{log}");
}
