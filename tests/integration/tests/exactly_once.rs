//! Exactly-once delivery under faults: a worker killed mid-transaction and
//! restarted, and a zombie sharing a transactional id, leave every command
//! with exactly one committed result.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nix::sys::signal::Signal;
use shoal_integration_tests::*;
use uuid::Uuid;

const KEYS: usize = 24;

fn worker(scope: &Scope, id: &str, log_name: &str) -> Proc {
    scope
        .worker(log_name)
        .id(id)
        .mode("exactly_once")
        // Short timeouts so a dead member's partitions and open transaction
        // are recovered quickly.
        .with("SHOAL__KAFKA__SESSION_TIMEOUT_MS", "6000")
        .with("SHOAL__KAFKA__MESSAGE_TIMEOUT_MS", "10000")
        .with("SHOAL__DELIVERY__TRANSACTION_CALL_TIMEOUT_MS", "5000")
        .spawn()
}

/// Produces `rounds` rounds of one command per key, paced, calling
/// `between(round, results_so_far)` after each round.
async fn stream_commands(
    scope: &Scope,
    rounds: u64,
    results: &mut TopicReader,
    mut between: impl FnMut(u64, usize),
) -> Vec<Uuid> {
    issue_alert_rounds(scope, KEYS, rounds, Some(Duration::from_millis(50)), |round| {
        tokio::task::block_in_place(|| results.drain());
        between(round, results.messages.len());
    })
    .await
}

async fn assert_exactly_one_result_each(results: &mut TopicReader, issued: &[Uuid]) {
    results.read_until(Duration::from_secs(120), "a result per command", |m| m.len() >= issued.len()).await;
    // Anything committed late would show up here as a duplicate.
    results.read_to_end(Duration::from_secs(30)).await;
    assert_one_result_each(&decode_results(&results.messages), issued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_and_restarted_loses_and_repeats_nothing() {
    let scope = Scope::with_topics("eoskill").await;
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

    stop_all_cleanly(workers[1..].iter_mut().chain(restarted.iter_mut()), Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_sharing_a_transactional_id_is_fenced_and_stops() {
    let scope = Scope::with_topics("eosfence").await;
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

    // Panics (with its log) if the fenced instance keeps running.
    let status = first.expect_exit(Duration::from_secs(60));
    assert!(!status.success(), "a fenced instance must not report a clean stop");
    assert!(first.log_text().contains("fenced"), "the fenced instance says why; log:\n{}", first.log_text());
    assert!(second.running(), "the newer instance keeps running; log:\n{}", second.log_text());
    assert_exactly_one_result_each(&mut results, &issued).await;

    second.stop_cleanly(Duration::from_secs(30));
}
