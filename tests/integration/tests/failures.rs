//! Handler failures against a real broker: a transient failure succeeds
//! after retries, permanent and exhausted failures are answered `failed` and
//! dead-lettered with their reason, an expired command is not executed.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use shoal_integration_tests::*;
use shoal_kafka::dlq;
use shoal_protocol::messages::{Command, ResultStatus, SCHEMA_VERSION, WireMessage};
use uuid::Uuid;

fn probe(key: &str, seq: u64, payload: serde_json::Value) -> Command {
    Command {
        schema_version: SCHEMA_VERSION,
        id: Uuid::now_v7(),
        kind: "probe".into(),
        key: key.into(),
        seq,
        issued_at: chrono::Utc::now(),
        deadline: None,
        payload,
    }
}

/// A worker with the probe handler in delivery `mode`, retrying up to
/// `max_attempts` times with delays from `initial_ms` up to `max_ms`.
fn probe_worker(scope: &Scope, id: &str, mode: &str, (max_attempts, initial_ms, max_ms): (&str, &str, &str)) -> Proc {
    scope
        .worker("worker")
        .id(id)
        .with("SHOAL__WORKER__PROBE_HANDLER", "true")
        .with("SHOAL__WORKER__MAX_ATTEMPTS", max_attempts)
        .with("SHOAL__WORKER__RETRY_INITIAL_MS", initial_ms)
        .with("SHOAL__WORKER__RETRY_MAX_MS", max_ms)
        .mode(mode)
        .spawn()
}

async fn failures_are_retried_answered_and_dead_lettered(mode: &str) {
    let scope = Scope::with_topics("failures").await;
    let mut worker = probe_worker(&scope, "probe-worker", mode, ("4", "50", "200"));

    let transient = probe("flaky", 1, serde_json::json!({"fail_attempts": 2}));
    let permanent = probe("broken", 1, serde_json::json!({"permanent": true}));
    let exhausted = probe("hopeless", 1, serde_json::json!({"fail_attempts": 10}));
    let mut expired = probe("late", 1, serde_json::json!({"permanent": true}));
    expired.deadline = Some(chrono::Utc::now() - chrono::Duration::seconds(1));
    let producer = producer();
    for c in [&transient, &permanent, &exhausted, &expired] {
        produce(&producer, &scope.topics.commands.name, &c.key, &c.encode()).await;
    }

    let mut results = TopicReader::new(&scope.topics.results.name);
    results.read_until(Duration::from_secs(60), "four results", |m| m.len() >= 4).await;
    let decoded = decode_results(&results.messages);
    let result_of = |c: &Command| decoded.iter().find(|r| r.command_id == c.id).expect("a result per command");

    let r = result_of(&transient);
    assert_eq!(r.status, ResultStatus::Succeeded, "{r:?}");
    assert_eq!(r.output["attempt"], 3, "succeeded on the third attempt");
    let r = result_of(&permanent);
    assert_eq!(r.status, ResultStatus::Failed);
    assert_eq!(r.output["attempts"], 1, "a permanent failure is not retried");
    let r = result_of(&exhausted);
    assert_eq!(r.status, ResultStatus::Failed);
    assert_eq!(r.output["attempts"], 4, "retried up to worker.max_attempts");
    let r = result_of(&expired);
    assert_eq!(r.status, ResultStatus::Expired, "an expired command is not executed (it would fail)");

    let mut dead = TopicReader::new(&scope.topics.dlq.name);
    dead.read_until(Duration::from_secs(30), "two dead letters", |m| m.len() >= 2).await;
    dead.read_to_end(Duration::from_secs(10)).await;
    let mut letters: Vec<(String, String, String)> = dead
        .messages
        .iter()
        .map(|m| {
            let key = String::from_utf8_lossy(rdkafka::Message::key(m).unwrap()).into_owned();
            (key, header(m, dlq::REASON).unwrap(), header(m, dlq::ATTEMPTS).unwrap())
        })
        .collect();
    letters.sort();
    assert_eq!(
        letters,
        [
            ("broken".to_string(), "handler_failed".to_string(), "1".to_string()),
            ("hopeless".into(), "retries_exhausted".into(), "4".into()),
        ]
    );

    worker.stop_cleanly(Duration::from_secs(20));
}

test_in_both_modes!(failures_are_retried_answered_and_dead_lettered => failures_exactly_once, failures_at_least_once);

/// A key whose handler keeps failing transiently is retried while the other
/// keys' commands, in the same partition and after it, are handled and their
/// results committed; the key's own later command waits for it (per-key order).
async fn retries_do_not_hold_up_other_keys(mode: &str) {
    let scope = Scope::with_topics("retry-keys").await;
    let release = scope.dir.join("outage-over");
    let mut worker = probe_worker(&scope, "retry-worker", mode, ("100", "50", "100"));

    // All in partition 0, so that they also share a partition's offsets.
    let stuck = probe("stuck", 1, serde_json::json!({"fail_until_exists": release}));
    let stuck_next = probe("stuck", 2, serde_json::json!({}));
    let others: Vec<Command> = (0..20).map(|i| probe(&format!("other-{i}"), 1, serde_json::json!({}))).collect();
    let producer = producer();
    let topic = &scope.topics.commands.name;
    for c in [&stuck, &stuck_next].into_iter().chain(&others) {
        produce_to(&producer, topic, 0, &c.key, &c.encode()).await;
    }

    let mut results = TopicReader::new(&scope.topics.results.name);
    let other_ids: std::collections::HashSet<Uuid> = others.iter().map(|c| c.id).collect();
    results
        .read_until(Duration::from_secs(60), "the other keys' results", |m| {
            decode_results(m).iter().filter(|r| other_ids.contains(&r.command_id)).count() == others.len()
        })
        .await;
    let seen: Vec<Uuid> = decode_results(&results.messages).iter().map(|r| r.command_id).collect();
    assert!(!seen.contains(&stuck.id), "the stuck command cannot have succeeded yet");
    assert!(!seen.contains(&stuck_next.id), "the stuck key's next command waits for it");

    std::fs::write(&release, b"").unwrap();
    results.read_until(Duration::from_secs(60), "the stuck key's results", |m| m.len() >= others.len() + 2).await;
    results.read_to_end(Duration::from_secs(10)).await;
    let decoded = decode_results(&results.messages);
    assert_eq!(decoded.len(), others.len() + 2, "one result per command");
    let position = |id: Uuid| decoded.iter().position(|r| r.command_id == id).expect("a result");
    let first = &decoded[position(stuck.id)];
    assert_eq!(first.status, ResultStatus::Succeeded, "{first:?}");
    assert!(first.output["attempt"].as_u64().unwrap() > 1, "it was retried: {first:?}");
    assert!(position(stuck.id) < position(stuck_next.id), "per-key order kept");

    worker.stop_cleanly(Duration::from_secs(20));
}

test_in_both_modes!(
    retries_do_not_hold_up_other_keys => retries_do_not_hold_up_other_keys_exactly_once,
    retries_do_not_hold_up_other_keys_at_least_once
);
