//! The `paper_order` skill across processes (docs/skills.md#paper_order): a
//! real `shoal-worker` SIGKILLed after an order was filled and journalled
//! and before its result committed, then restarted, does not fill it again;
//! the account's book carries over to the next order.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nix::sys::signal::Signal;
use shoal_integration_tests::*;
use shoal_protocol::messages::{Command, ResultStatus, SCHEMA_VERSION, WireMessage};
use shoal_worker::journal::{JournalRecord, StepState};
use uuid::Uuid;

fn order(seq: u64, quantity: &str) -> Command {
    Command {
        schema_version: SCHEMA_VERSION,
        id: Uuid::now_v7(),
        kind: "paper_order".into(),
        key: "acct-7".into(),
        seq,
        issued_at: chrono::Utc::now(),
        deadline: None,
        payload: serde_json::json!({ "symbol": "SIM-A", "side": "buy", "quantity": quantity, "mid_price": "100" }),
    }
}

fn paper_worker(scope: &Scope, name: &str, hold_transactions: bool) -> Proc {
    let worker = scope.worker(name).id("paper-worker").with("SHOAL__WORKER__PAPER__ENABLED", "true");
    if hold_transactions {
        // The result waits 60 s in its open transaction: the kill lands
        // between the journalled fill and the commit.
        worker.with("SHOAL__DELIVERY__TRANSACTION_MAX_MS", "60000").spawn()
    } else {
        worker.spawn()
    }
}

fn order_records(messages: &[rdkafka::message::OwnedMessage], id: Uuid) -> Vec<JournalRecord> {
    messages
        .iter()
        .filter_map(|m| serde_json::from_slice::<JournalRecord>(rdkafka::Message::payload(m)?).ok())
        .filter(|r| r.command_id == id && r.step == "order")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_filled_before_a_kill_is_not_filled_again() {
    let scope = Scope::with_topics("paper-kill").await;
    let mut worker = paper_worker(&scope, "worker", true);
    let first = order(1, "10");
    produce_to(&producer(), &scope.topics.commands.name, 0, &first.key, &first.encode()).await;

    let mut journal = TopicReader::new(&scope.topics.journal.name);
    journal
        .read_until(Duration::from_secs(60), "the order's fill in the journal", |m| {
            order_records(m, first.id).iter().any(|r| r.state == StepState::Done)
        })
        .await;
    worker.signal(Signal::SIGKILL);
    worker.wait_exit(Duration::from_secs(10)).expect("the worker dies at once");
    let mut results = TopicReader::new(&scope.topics.results.name);
    results.read_to_end(Duration::from_secs(10)).await;
    assert!(results.messages.is_empty(), "killed before its result committed");
    let recorded = order_records(&journal.messages, first.id).into_iter().find(|r| r.state == StepState::Done).unwrap();
    let recorded_fill = recorded.outcome.unwrap()["fill"].clone();
    assert!(recorded_fill.is_object(), "the journal holds the fill");

    let mut restarted = paper_worker(&scope, "worker-restarted", false);
    let second = order(2, "5");
    produce_to(&producer(), &scope.topics.commands.name, 0, &second.key, &second.encode()).await;
    results.read_until(Duration::from_secs(90), "both results", |m| m.len() >= 2).await;
    let decoded = decode_results(&results.messages);
    assert_eq!(decoded.len(), 2, "one result per order: {decoded:?}");
    let (r1, r2) = (&decoded[0], &decoded[1]);
    assert_eq!((r1.command_id, r1.status), (first.id, ResultStatus::Succeeded), "{r1:?}");
    assert_eq!(r1.output["decision"]["status"], "filled");
    assert_eq!(r1.output["decision"]["fill"], recorded_fill, "the recorded fill, not a new one");
    assert_eq!(r1.output["ledger"]["fills"], 1, "{r1:?}");
    assert_eq!(r2.command_id, second.id);
    assert_eq!(r2.output["ledger"]["positions"]["SIM-A"]["quantity"], "15", "the book carried over: {r2:?}");
    assert_eq!(r2.output["ledger"]["fills"], 2, "two orders, two fills: {r2:?}");

    journal.read_to_end(Duration::from_secs(10)).await;
    let done = order_records(&journal.messages, first.id).iter().filter(|r| r.state == StepState::Done).count();
    assert_eq!(done, 1, "the killed order was decided once");
    assert!(restarted.log_text().contains("effect step replayed from the journal"), "the fill was reused");
    restarted.stop_cleanly(Duration::from_secs(20));
}
