//! `POST /v1/command-requests` on a real server with a real client: off by
//! default, admin only, checked, rate-limited, and what reaches the sink
//! names who asked without the token.

#![allow(clippy::unwrap_used)]

use std::num::NonZeroU32;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use futures::FutureExt as _;
use futures::future::BoxFuture;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shoal_api::auth::Tokens;
use shoal_api::http::requests::{RequestSink, Requests};
use shoal_api::{ApiContext, ApiSettings, Hub, NoPeers};
use shoal_protocol::messages::Event;
use tokio_util::sync::CancellationToken;

const READ: &str = "read-token-for-tests-0001";
const ADMIN: &str = "admin-token-for-tests-0001";

/// Keeps what it is given (the orchestrator's sink writes to Kafka; the
/// integration test `mcp` covers that path).
#[derive(Default, Clone)]
struct Kept(Arc<Mutex<Vec<Event>>>);

impl RequestSink for Kept {
    fn submit(&self, event: Event) -> BoxFuture<'static, Result<(), String>> {
        self.0.lock().unwrap().push(event);
        async { Ok(()) }.boxed()
    }
}

async fn start(requests: Option<Requests>) -> (String, CancellationToken) {
    let tokens = Tokens::parse(&format!("read:{READ}\nadmin:{ADMIN}\n"), "test").unwrap();
    let ctx = ApiContext {
        hub: Arc::new(Hub::new()),
        settings: Arc::new(ApiSettings::default()),
        tokens: Arc::new(tokens),
        directory: Arc::new(NoPeers),
        instance: "test".into(),
        subscriptions: Arc::new(AtomicUsize::new(0)),
    };
    let mut app = shoal_api::http::router(ctx.clone());
    if let Some(requests) = requests {
        app = app.layer(axum::Extension(Arc::new(requests)));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1/command-requests", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move { shoal_api::http::serve_app(&ctx, app, listener, token).await });
    (base, shutdown)
}

async fn post(url: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let answer = reqwest::Client::new().post(url).bearer_auth(token).json(&body).send().await.unwrap();
    (answer.status(), answer.json().await.unwrap())
}

fn alert() -> Value {
    json!({"kind": "raise_alert", "key": "SIM-A", "reason": "test",
           "payload": {"symbol": "SIM-A", "level": "100", "previous_price": "99", "price": "101"}})
}

#[tokio::test]
async fn requests_are_off_unless_installed() {
    let (url, shutdown) = start(None).await;
    let (status, body) = post(&url, ADMIN, alert()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["error"]["message"].as_str().unwrap().contains("api.issue_commands"), "{body}");
    shutdown.cancel();
}

#[tokio::test]
async fn admin_only_checked_rate_limited_and_recorded_without_the_token() {
    let kept = Kept::default();
    let (url, shutdown) = start(Some(Requests::new(Arc::new(kept.clone()), NonZeroU32::new(2).unwrap()))).await;
    let (status, body) = post(&url, READ, alert()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let mut bad = alert();
    bad["payload"]["colour"] = json!("red");
    let (status, body) = post(&url, ADMIN, bad).await;
    assert_eq!((status, body["error"]["parameter"].as_str()), (StatusCode::BAD_REQUEST, Some("payload")), "{body}");
    let (status, body) = post(&url, ADMIN, json!({"kind": "raise_alert"})).await;
    assert_eq!((status, body["error"]["parameter"].as_str()), (StatusCode::BAD_REQUEST, Some("body")), "{body}");

    for _ in 0..2 {
        let (status, body) = post(&url, ADMIN, alert()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["requested_by"]["via"], "api");
    }
    let (status, body) = post(&url, ADMIN, alert()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("api.issue_rate_per_minute"), "{body}");

    let events = kept.0.lock().unwrap().clone();
    assert_eq!(events.len(), 2, "refused requests reach nothing");
    let event = &events[0];
    assert_eq!((event.event_type.as_str(), event.key.as_str()), ("command_requested", "SIM-A"));
    assert_eq!(event.attributes["kind"], "raise_alert");
    assert_eq!(event.attributes["reason"], "test");
    let who = &event.attributes["requested_by"];
    assert_eq!(who["role"], "admin");
    assert_eq!(who["token_id"].as_str().unwrap().len(), 12);
    assert!(!event.attributes.to_string().contains(ADMIN), "the token is not recorded");
    shutdown.cancel();
}
