//! The side-effect journal across processes (docs/journal.md): a real HTTP
//! endpoint in this process counts the `notify_webhook` deliveries of a
//! real `shoal-worker` process.
//!
//! - A worker SIGKILLed after one effect was made and recorded, and during
//!   the next (started, not recorded), before its result committed, then
//!   restarted: the endpoint sees exactly one POST per step; the restarted
//!   worker reuses the first outcome and reconciles the second.
//! - A step whose journalled arguments differ from the ones asked on replay
//!   fails the command as non-determinism (result `failed`, dead letter
//!   `non_deterministic`, counted), without calling the endpoint.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::{get, post};
use nix::sys::signal::Signal;
use shoal_integration_tests::*;
use shoal_kafka::dlq;
use shoal_protocol::messages::{Command, ResultStatus, SCHEMA_VERSION, WireMessage};
use shoal_worker::journal::{self, JournalRecord, StepState};
use uuid::Uuid;

/// The webhook endpoint: POSTs counted per idempotency key; a POST whose
/// key ends with `hold` does not answer while `holding`.
#[derive(Debug, Default)]
struct Endpoint {
    posts: Mutex<HashMap<String, u32>>,
    hold: Mutex<Option<String>>,
    release: tokio::sync::Notify,
}

impl Endpoint {
    fn count(&self, key: &str) -> u32 {
        self.posts.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    fn total(&self) -> u32 {
        self.posts.lock().unwrap().values().sum()
    }
}

async fn deliver(State(e): State<Arc<Endpoint>>, headers: HeaderMap, _body: String) -> (StatusCode, String) {
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string) else {
        return (StatusCode::BAD_REQUEST, "no Idempotency-Key".into());
    };
    *e.posts.lock().unwrap().entry(key.clone()).or_default() += 1;
    let held = e.hold.lock().unwrap().as_ref().is_some_and(|suffix| key.ends_with(suffix.as_str()));
    if held {
        // Answers only when released: the worker is killed meanwhile.
        e.release.notified().await;
    }
    (StatusCode::OK, serde_json::json!({"delivered": key}).to_string())
}

async fn lookup(State(e): State<Arc<Endpoint>>, uri: Uri) -> (StatusCode, String) {
    let key = uri.query().unwrap_or_default().strip_prefix("idempotency_key=").unwrap_or_default().replace("%2F", "/");
    if e.count(&key) > 0 {
        (StatusCode::OK, serde_json::json!({"delivered": key}).to_string())
    } else {
        (StatusCode::NOT_FOUND, String::new())
    }
}

async fn serve(endpoint: Arc<Endpoint>) -> SocketAddr {
    let app = axum::Router::new().route("/hook", post(deliver)).route("/lookup", get(lookup)).with_state(endpoint);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

fn notify(key: &str, notifications: serde_json::Value) -> Command {
    Command {
        schema_version: SCHEMA_VERSION,
        id: Uuid::now_v7(),
        kind: "notify_webhook".into(),
        key: key.into(),
        seq: 1,
        issued_at: chrono::Utc::now(),
        deadline: None,
        payload: serde_json::json!({ "notifications": notifications }),
    }
}

fn webhook_worker(scope: &Scope, name: &str, address: SocketAddr) -> Proc {
    scope
        .worker(name)
        .id("journal-worker")
        .with("SHOAL__WORKER__WEBHOOK__URL", format!("http://{address}/hook"))
        .with("SHOAL__WORKER__WEBHOOK__LOOKUP_URL", format!("http://{address}/lookup"))
        .with("SHOAL__WORKER__WEBHOOK__TIMEOUT_MS", "30000")
        .with("SHOAL__WORKER__HANDLER_TIMEOUT_MS", "60000")
        .spawn()
}

fn journal_records(messages: &[rdkafka::message::OwnedMessage], id: Uuid) -> Vec<JournalRecord> {
    messages
        .iter()
        .filter_map(|m| serde_json::from_slice::<JournalRecord>(rdkafka::Message::payload(m)?).ok())
        .filter(|r| r.command_id == id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_after_an_effect_and_before_the_commit_makes_each_effect_once() {
    let scope = Scope::with_topics("journal-kill").await;
    let endpoint = Arc::new(Endpoint::default());
    *endpoint.hold.lock().unwrap() = Some("/post/1".into());
    let address = serve(endpoint.clone()).await;
    let mut worker = webhook_worker(&scope, "worker", address);

    let command = notify("hooks", serde_json::json!([{"alert": "first"}, {"alert": "second"}]));
    let (first, second) =
        (journal::idempotency_key(command.id, "post/0"), journal::idempotency_key(command.id, "post/1"));
    produce_to(&producer(), &scope.topics.commands.name, 0, &command.key, &command.encode()).await;

    // The first delivery made and recorded, the second made and not yet
    // answered (so not recorded), the result not committed.
    eventually(Duration::from_secs(60), "the second delivery to reach the endpoint", || {
        let seen = endpoint.count(&second) == 1;
        async move { seen }
    })
    .await;
    let mut journal_topic = TopicReader::new(&scope.topics.journal.name);
    journal_topic
        .read_until(Duration::from_secs(30), "post/0 done and post/1 started in the journal", |m| {
            let records = journal_records(m, command.id);
            let has = |step: &str, state| records.iter().any(|r| r.step == step && r.state == state);
            has("post/0", StepState::Done) && has("post/1", StepState::Started)
        })
        .await;
    worker.signal(Signal::SIGKILL);
    worker.wait_exit(Duration::from_secs(10)).expect("the worker dies at once");
    let mut results = TopicReader::new(&scope.topics.results.name);
    results.read_to_end(Duration::from_secs(10)).await;
    assert!(results.messages.is_empty(), "killed before its result committed: {:?}", decode_results(&results.messages));
    assert_eq!((endpoint.count(&first), endpoint.count(&second)), (1, 1));

    // Restarted: the command is read again and runs again.
    *endpoint.hold.lock().unwrap() = None;
    endpoint.release.notify_waiters();
    let mut restarted = webhook_worker(&scope, "worker-restarted", address);
    results.read_until(Duration::from_secs(90), "the command's result", |m| !m.is_empty()).await;
    let decoded = decode_results(&results.messages);
    assert_eq!(decoded.len(), 1, "{decoded:?}");
    let result = &decoded[0];
    assert_eq!((result.command_id, result.status), (command.id, ResultStatus::Succeeded), "{result:?}");
    let deliveries = result.output["deliveries"].as_array().expect("deliveries");
    assert_eq!(deliveries.len(), 2, "{result:?}");
    assert_eq!(deliveries[0]["body"]["delivered"], first.as_str());
    assert_eq!(deliveries[1]["body"]["delivered"], second.as_str(), "reconciled by lookup");

    // Exactly one call per step at the endpoint: the count equals the
    // number of distinct steps.
    assert_eq!((endpoint.count(&first), endpoint.count(&second)), (1, 1));
    assert_eq!(endpoint.total(), 2);
    let log = restarted.log_text();
    assert!(log.contains("effect step replayed from the journal"), "post/0 reused");
    assert!(log.contains("found done by reconcile"), "post/1 looked up");
    restarted.stop_cleanly(Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_argument_on_replay_is_reported_as_non_determinism() {
    let scope = Scope::with_topics("journal-nondet").await;
    let endpoint = Arc::new(Endpoint::default());
    let address = serve(endpoint.clone()).await;

    // The journal says an earlier run of this command delivered another
    // body in step post/0 (as after a handler change between a crash and
    // the replay).
    let command = notify("hooks", serde_json::json!([{"alert": "now"}]));
    let earlier = serde_json::json!({"url": format!("http://{address}/hook"), "body": {"alert": "then"}});
    let record = JournalRecord {
        command_id: command.id,
        step: "post/0".into(),
        args_digest: journal::digest(&earlier),
        idempotency_key: journal::idempotency_key(command.id, "post/0"),
        state: StepState::Done,
        outcome: Some(serde_json::json!({"status": 200})),
        worker_id: "earlier-worker".into(),
        at: chrono::Utc::now(),
    };
    let producer = producer();
    let key = journal::record_key(command.id, "post/0");
    produce_to(&producer, &scope.topics.journal.name, 0, &key, &serde_json::to_vec(&record).unwrap()).await;
    produce_to(&producer, &scope.topics.commands.name, 0, &command.key, &command.encode()).await;

    let mut worker = webhook_worker(&scope, "worker", address);
    let mut results = TopicReader::new(&scope.topics.results.name);
    results.read_until(Duration::from_secs(60), "the command's result", |m| !m.is_empty()).await;
    let result = decode_results(&results.messages).remove(0);
    assert_eq!(result.status, ResultStatus::Failed, "{result:?}");
    let error = result.output["error"].as_str().unwrap_or_default();
    assert!(error.contains("non-determinism") && error.contains("post/0"), "{error}");
    assert_eq!(result.output["attempts"], 1, "not retried");

    let mut dead = TopicReader::new(&scope.topics.dlq.name);
    dead.read_until(Duration::from_secs(30), "a dead letter", |m| !m.is_empty()).await;
    assert_eq!(header(&dead.messages[0], dlq::REASON).as_deref(), Some("non_deterministic"));
    assert_eq!(endpoint.total(), 0, "neither the recorded outcome reused nor the effect made");

    let metrics = http_address(&worker, Duration::from_secs(10)).await;
    let (_, text) = http_get(metrics, "/metrics").await.unwrap();
    assert!(text.lines().any(|l| l.starts_with("shoal_journal_nondeterminism_total 1")), "{text}");
    assert!(worker.log_text().contains("NON-DETERMINISM"), "logged loudly");
    worker.stop_cleanly(Duration::from_secs(20));
}
