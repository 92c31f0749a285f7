//! Exactly-once delivery under faults: a worker killed mid-transaction and
//! restarted, and a zombie sharing a transactional id, leave every command
//! with exactly one committed result.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nix::sys::signal::Signal;
use shoal_integration_tests::*;
use shoal_protocol::messages::WireMessage;
use uuid::Uuid;

const KEYS: usize = 24;

fn worker(scope: &Scope, id: &str, log_name: &str) -> Proc {
    let mut env = scope.env();
    env.extend([
        ("SHOAL__WORKER__ID".to_string(), id.to_string()),
        ("SHOAL__DELIVERY__MODE".to_string(), "exactly_once".to_string()),
        // Short timeouts so a dead member's partitions and open transaction
        // are recovered quickly.
        ("SHOAL__KAFKA__SESSION_TIMEOUT_MS".to_string(), "6000".to_string()),
        ("SHOAL__KAFKA__MESSAGE_TIMEOUT_MS".to_string(), "10000".to_string()),
        ("SHOAL__DELIVERY__TRANSACTION_CALL_TIMEOUT_MS".to_string(), "5000".to_string()),
    ]);
    Proc::spawn(log_name, &bin("shoal-worker"), &[], &env, &scope.dir)
}

async fn wait_for_members(scope: &Scope, n: usize) {
    let group = scope.workers_group();
    eventually(Duration::from_secs(60), &format!("{n} members with partitions"), || {
        let group = group.clone();
        async move { tokio::task::spawn_blocking(move || group_members_with_assignment(&group)).await.unwrap() == n }
    })
    .await;
}

/// Produces `rounds` rounds of one command per key, paced, calling
/// `between(round, results_so_far)` after each round.
async fn stream_commands(
    scope: &Scope,
    rounds: u64,
    results: &mut TopicReader,
    mut between: impl FnMut(u64, usize),
) -> Vec<Uuid> {
    let producer = producer();
    let mut issued = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    for round in 1..=rounds {
        pace.tick().await;
        for k in 0..KEYS {
            let command = alert_command(&format!("key-{k}"), round);
            produce(&producer, &scope.topics.commands.name, &command.key, &command.encode()).await;
            issued.push(command.id);
        }
        tokio::task::block_in_place(|| results.drain());
        between(round, results.messages.len());
    }
    issued
}

async fn assert_exactly_one_result_each(results: &mut TopicReader, issued: &[Uuid]) {
    results.read_until(Duration::from_secs(120), "a result per command", |m| m.len() >= issued.len()).await;
    // Anything committed late would show up here as a duplicate.
    results.read_to_end(Duration::from_secs(30)).await;
    let decoded = decode_results(&results.messages);
    let per_command = counts(decoded.iter().map(|r| r.command_id));
    let missing = issued.iter().filter(|id| !per_command.contains_key(id)).count();
    let duplicated = per_command.values().filter(|n| **n > 1).count();
    assert_eq!((missing, duplicated), (0, 0), "lost and duplicated results out of {}", issued.len());
    assert_eq!(per_command.len(), issued.len(), "results for commands never issued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_and_restarted_loses_and_repeats_nothing() {
    init_logs();
    let scope = Scope::new("eoskill");
    scope.create_topics().await;
    let mut workers = [worker(&scope, "w-1", "w-1"), worker(&scope, "w-2", "w-2"), worker(&scope, "w-3", "w-3")];
    wait_for_members(&scope, 3).await;

    let mut results = TopicReader::new(&scope.topics.results.name);
    let mut killed = false;
    let mut restarted: Option<Proc> = None;
    let issued = stream_commands(&scope, 60, &mut results, |round, have| {
        if !killed && have >= KEYS * 10 {
            // SIGKILL: no drain, an open transaction is left behind.
            workers[0].signal(Signal::SIGKILL);
            killed = true;
        } else if killed && restarted.is_none() && round >= 45 {
            // The same id means the same transactional id: the restart
            // fences the dead instance and aborts its open transaction.
            restarted = Some(worker(&scope, "w-1", "w-1-restarted"));
        }
    })
    .await;
    assert!(killed, "the kill happened mid-stream");
    assert!(restarted.is_some(), "the worker was restarted");
    assert_exactly_one_result_each(&mut results, &issued).await;

    for w in workers[1..].iter().chain(restarted.iter()) {
        w.signal(Signal::SIGTERM);
    }
    for w in workers[1..].iter_mut().chain(restarted.iter_mut()) {
        let status = tokio::task::block_in_place(|| w.wait_exit(Duration::from_secs(30))).expect("exits");
        assert!(status.success(), "{} exited with {status}; log:\n{}", w.name, w.log_text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_sharing_a_transactional_id_is_fenced_and_stops() {
    init_logs();
    let scope = Scope::new("eosfence");
    scope.create_topics().await;
    let mut first = worker(&scope, "twin", "twin-first");
    wait_for_members(&scope, 1).await;

    let mut results = TopicReader::new(&scope.topics.results.name);
    let mut second: Option<Proc> = None;
    let issued = stream_commands(&scope, 40, &mut results, |round, _| {
        if round == 10 {
            second = Some(worker(&scope, "twin", "twin-second"));
        }
    })
    .await;
    let mut second = second.expect("second instance started");

    let status = tokio::task::block_in_place(|| first.wait_exit(Duration::from_secs(60)))
        .unwrap_or_else(|| panic!("the fenced instance kept running; log:\n{}", first.log_text()));
    assert!(!status.success(), "a fenced instance must not report a clean stop");
    assert!(first.log_text().contains("fenced"), "the fenced instance says why; log:\n{}", first.log_text());
    assert!(second.running(), "the newer instance keeps running; log:\n{}", second.log_text());
    assert_exactly_one_result_each(&mut results, &issued).await;

    second.signal(Signal::SIGTERM);
    let status = tokio::task::block_in_place(|| second.wait_exit(Duration::from_secs(30))).expect("exits");
    assert!(status.success(), "exit {status}");
}
