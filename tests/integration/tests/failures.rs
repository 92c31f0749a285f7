//! Handler failures against a real broker: a transient failure succeeds
//! after retries, permanent and exhausted failures are answered `failed` and
//! dead-lettered with their reason, an expired command is not executed.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nix::sys::signal::Signal;
use shoal_common::kafka::dlq;
use shoal_common::messages::{Command, ResultStatus, SCHEMA_VERSION, WireMessage};
use shoal_integration_tests::*;
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

async fn failures_are_retried_answered_and_dead_lettered(mode: &str) {
    init_logs();
    let scope = Scope::new("failures");
    scope.create_topics().await;
    let mut env = scope.env();
    env.extend(
        [
            ("SHOAL__WORKER__ID", "probe-worker"),
            ("SHOAL__WORKER__PROBE_HANDLER", "true"),
            ("SHOAL__WORKER__MAX_ATTEMPTS", "4"),
            ("SHOAL__WORKER__RETRY_INITIAL_MS", "50"),
            ("SHOAL__WORKER__RETRY_MAX_MS", "200"),
            ("SHOAL__DELIVERY__MODE", mode),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let mut worker = Proc::spawn("worker", &bin("shoal-worker"), &[], &env, &scope.dir);

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

    worker.signal(Signal::SIGTERM);
    let status = tokio::task::block_in_place(|| worker.wait_exit(Duration::from_secs(20))).expect("exits");
    assert!(status.success(), "exit {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_exactly_once() {
    failures_are_retried_answered_and_dead_lettered("exactly_once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_at_least_once() {
    failures_are_retried_answered_and_dead_lettered("at_least_once").await;
}
