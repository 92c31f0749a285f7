//! `open_ticket` against a real HTTP ticket system (an axum server in the
//! test) through the worker's handler interface and journal: a ticket per
//! command however often the command runs, and a ticket opened before a
//! crash found by `reconcile` instead of opened again.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use shoal_example_skills::OpenTicket;
use shoal_protocol::messages::{Command, SCHEMA_VERSION};
use shoal_worker::handlers::{Handler, HandlerContext, HandlerError, Registry, Skill};
use shoal_worker::journal::{self, Journal, JournalRecord, StepState};

/// Tickets by external id, and how many POSTs arrived.
#[derive(Default)]
struct Tickets {
    by_external_id: HashMap<String, serde_json::Value>,
    posts: u32,
}

type Shared = Arc<Mutex<Tickets>>;

async fn open(State(t): State<Shared>, Json(body): Json<serde_json::Value>) -> Json<serde_json::Value> {
    let mut t = t.lock().unwrap();
    t.posts += 1;
    let id = format!("T-{}", t.by_external_id.len() + 1);
    let ticket = serde_json::json!({ "id": id, "summary": body["summary"] });
    t.by_external_id.insert(body["external_id"].as_str().unwrap().to_string(), ticket.clone());
    Json(ticket)
}

async fn find(State(t): State<Shared>, uri: Uri) -> (StatusCode, String) {
    let id = uri.query().unwrap_or_default().strip_prefix("external_id=").unwrap_or_default().replace("%2F", "/");
    let t = t.lock().unwrap();
    match t.by_external_id.get(&id) {
        Some(ticket) => (StatusCode::OK, ticket.to_string()),
        None => (StatusCode::NOT_FOUND, String::new()),
    }
}

/// Serves the ticket system on a free port; its base URL and its state.
async fn ticket_system() -> (String, Shared) {
    let shared = Shared::default();
    let app = axum::Router::new().route("/tickets", axum::routing::post(open).get(find)).with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, shared)
}

fn command(reading: f64) -> Command {
    Command {
        schema_version: SCHEMA_VERSION,
        id: uuid::Uuid::now_v7(),
        kind: OpenTicket::KIND.into(),
        key: "device-7".into(),
        seq: 1,
        issued_at: chrono::Utc::now(),
        deadline: None,
        payload: serde_json::json!({ "device": "device-7", "site": "plant-2", "reading": reading, "threshold": 80.0 }),
    }
}

async fn run(
    handler: &dyn Handler,
    c: &Command,
    journal: &Journal,
    attempt: u32,
) -> Result<serde_json::Value, HandlerError> {
    let ctx = HandlerContext::new(attempt, c, 0, handler, journal);
    handler.handle_with(c, &ctx).await
}

#[tokio::test]
async fn one_ticket_per_command_however_often_it_runs() {
    let (base, tickets) = ticket_system().await;
    let mut registry = Registry::with_builtin();
    registry.register_skill(OpenTicket::new(&base, Duration::from_secs(5)).unwrap());
    assert!(registry.kinds().contains(&"open_ticket"), "{:?}", registry.kinds());
    let handler = registry.get("open_ticket").unwrap();
    let journal = Journal::in_memory("w-1");

    let calm = run(handler.as_ref(), &command(42.0), &journal, 1).await.unwrap();
    assert_eq!(calm["opened"], false, "{calm}");
    assert_eq!(tickets.lock().unwrap().posts, 0);

    let hot = command(93.5);
    let first = run(handler.as_ref(), &hot, &journal, 1).await.unwrap();
    for attempt in 2..=3 {
        let again = run(handler.as_ref(), &hot, &journal, attempt).await.unwrap();
        assert_eq!(again, first, "a re-run answers the recorded ticket");
    }
    assert_eq!(first["opened"], true);
    assert_eq!(first["ticket"]["id"], "T-1");
    let t = tickets.lock().unwrap();
    assert_eq!(t.posts, 1, "three runs, one ticket");
    assert!(t.by_external_id.contains_key(&format!("{}/ticket", hot.id)), "the journal's key is the external id");
}

#[tokio::test]
async fn a_ticket_opened_before_a_crash_is_found_not_opened_again() {
    let (base, tickets) = ticket_system().await;
    let skill = shoal_worker::handlers::SkillHandler(OpenTicket::new(&base, Duration::from_secs(5)).unwrap());
    let hot = command(99.0);
    let key = journal::idempotency_key(hot.id, "ticket");
    // The worker POSTed and died before recording: the journal says
    // `started`, the ticket system has the ticket.
    tickets.lock().unwrap().by_external_id.insert(key.clone(), serde_json::json!({ "id": "T-9" }));
    let summary = "device-7 at plant-2 reads 99 > threshold 80";
    let args = serde_json::json!({ "device": "device-7", "site": "plant-2", "summary": summary });
    let journal = Journal::in_memory("w-2");
    let started = JournalRecord {
        command_id: hot.id,
        step: "ticket".into(),
        args_digest: journal::digest(&args),
        idempotency_key: key,
        state: StepState::Started,
        outcome: None,
        worker_id: "w-1".into(),
        at: chrono::Utc::now(),
    };
    journal.write(0, started).await.unwrap();
    let out = run(&skill, &hot, &journal, 1).await.unwrap();
    assert_eq!(out["ticket"]["id"], "T-9", "reconciled: {out}");
    assert_eq!(tickets.lock().unwrap().posts, 0, "nothing opened again");
    let bad = Command { payload: serde_json::json!({ "device": "d" }), ..command(1.0) };
    let error = run(&skill, &bad, &journal, 1).await.unwrap_err();
    assert!(error.to_string().contains("open_ticket"), "the error names the kind: {error}");
}
