//! Workers against a real broker: the group shares the work, and a worker
//! stopped with SIGTERM mid-stream hands over cleanly.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use shoal_integration_tests::*;
use shoal_protocol::messages::{ResultStatus, WireMessage};
use uuid::Uuid;

const KEYS: usize = 30;

fn start_workers(scope: &Scope, n: usize, extra_env: &[(&str, &str)]) -> Vec<Proc> {
    (1..=n)
        .map(|i| {
            let mut env = scope.env();
            env.push(("SHOAL__WORKER__ID".into(), format!("worker-{i}")));
            env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            Proc::spawn(&format!("worker-{i}"), &bin("shoal-worker"), &[], &env, &scope.dir)
        })
        .collect()
}

async fn wait_for_members(scope: &Scope, n: usize) {
    let group = scope.workers_group();
    eventually(Duration::from_secs(60), &format!("{n} workers with partitions in {group}"), || {
        let group = group.clone();
        async move { tokio::task::spawn_blocking(move || group_members_with_assignment(&group)).await.unwrap() == n }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_the_work_exactly_once() {
    three_workers_share_the_work_and_every_command_gets_exactly_one_result("exactly_once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_the_work_at_least_once() {
    three_workers_share_the_work_and_every_command_gets_exactly_one_result("at_least_once").await;
}

async fn three_workers_share_the_work_and_every_command_gets_exactly_one_result(mode: &str) {
    init_logs();
    let scope = Scope::new("share");
    scope.create_topics().await;
    let mut workers = start_workers(&scope, 3, &[("SHOAL__DELIVERY__MODE", mode)]);
    wait_for_members(&scope, 3).await;

    let producer = producer();
    let mut issued = HashSet::new();
    for seq in 1..=10u64 {
        for k in 0..KEYS {
            let command = alert_command(&format!("key-{k}"), seq);
            issued.insert(command.id);
            produce(&producer, &scope.topics.commands.name, &command.key, &command.encode()).await;
        }
    }

    let mut results = TopicReader::new(&scope.topics.results.name);
    results.read_until(Duration::from_secs(90), "a result per command", |m| m.len() >= issued.len()).await;
    let decoded = decode_results(&results.messages);
    let per_command = counts(decoded.iter().map(|r| r.command_id));
    let missing: Vec<&Uuid> = issued.iter().filter(|id| !per_command.contains_key(id)).collect();
    let duplicated: Vec<_> = per_command.iter().filter(|(_, n)| **n > 1).collect();
    assert!(missing.is_empty(), "{} commands without a result", missing.len());
    assert!(duplicated.is_empty(), "duplicated results: {duplicated:?}");
    assert_eq!(per_command.len(), issued.len(), "results for commands never issued");
    assert!(decoded.iter().all(|r| r.status == ResultStatus::Succeeded), "every alert command succeeds");

    let per_worker = counts(decoded.iter().map(|r| r.worker_id.clone()));
    for i in 1..=3 {
        let id = format!("worker-{i}");
        assert!(per_worker.get(&id).copied().unwrap_or(0) > 0, "{id} processed nothing: {per_worker:?}");
    }
    // Per key, results come back in seq order (one partition, one worker at a time).
    let mut last_seq: HashMap<&str, u64> = HashMap::new();
    for r in &decoded {
        let prev = last_seq.insert(&r.key, r.seq).unwrap_or(0);
        assert!(r.seq > prev, "key {} went from seq {prev} to {}", r.key, r.seq);
    }

    for w in &workers {
        w.signal(Signal::SIGTERM);
    }
    for w in &mut workers {
        let status = w.wait_exit(Duration::from_secs(20)).unwrap_or_else(|| panic!("{} did not exit", w.name));
        assert!(status.success(), "{} exited with {status}; log:\n{}", w.name, w.log_text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_exactly_once() {
    sigterm_mid_stream_hands_partitions_over_without_losing_a_command("exactly_once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_at_least_once() {
    sigterm_mid_stream_hands_partitions_over_without_losing_a_command("at_least_once").await;
}

async fn sigterm_mid_stream_hands_partitions_over_without_losing_a_command(mode: &str) {
    init_logs();
    let scope = Scope::new("sigterm");
    scope.create_topics().await;
    let shutdown_bound = Duration::from_millis(5_000);
    let mut workers =
        start_workers(&scope, 3, &[("SHOAL__SHUTDOWN__TIMEOUT_MS", "5000"), ("SHOAL__DELIVERY__MODE", mode)]);
    wait_for_members(&scope, 3).await;

    let producer = producer();
    let topic = scope.topics.commands.name.clone();
    let mut issued = Vec::new();
    let mut results = TopicReader::new(&scope.topics.results.name);
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    let mut seq = 0u64;
    let mut stopped_at: Option<usize> = None;
    // Produce 40 rounds of one command per key; stop worker-1 once a third
    // of the stream has results, while commands keep coming.
    for round in 0..40 {
        pace.tick().await;
        seq += 1;
        for k in 0..KEYS {
            let command = alert_command(&format!("key-{k}"), seq);
            produce(&producer, &topic, &command.key, &command.encode()).await;
            issued.push(command.id);
        }
        if stopped_at.is_none() {
            tokio::task::block_in_place(|| results.drain());
            if results.messages.len() >= KEYS * 12 {
                workers[0].signal(Signal::SIGTERM);
                stopped_at = Some(round);
                let began = Instant::now();
                let status =
                    tokio::task::block_in_place(|| workers[0].wait_exit(shutdown_bound + Duration::from_secs(3)))
                        .unwrap_or_else(|| panic!("worker-1 still running {:?} after SIGTERM", began.elapsed()));
                assert!(status.success(), "worker-1 exited with {status}; log:\n{}", workers[0].log_text());
            }
        }
    }
    let stopped_at = stopped_at.expect("worker-1 was never stopped: results did not arrive while producing");
    assert!(stopped_at < 39, "worker-1 must stop mid-stream (stopped at round {stopped_at})");

    results.read_until(Duration::from_secs(90), "a result per command", |m| m.len() >= issued.len()).await;
    let decoded = decode_results(&results.messages);
    let per_command = counts(decoded.iter().map(|r| r.command_id));
    let missing = issued.iter().filter(|id| !per_command.contains_key(id)).count();
    assert_eq!(missing, 0, "{missing} commands without a result");
    let duplicated: Vec<_> = per_command.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "a graceful stop must not duplicate results: {duplicated:?}");

    // The keys worker-1 owned were taken over by the others.
    let worker1_keys: HashSet<&str> =
        decoded.iter().filter(|r| r.worker_id == "worker-1").map(|r| r.key.as_str()).collect();
    assert!(!worker1_keys.is_empty(), "worker-1 processed nothing before it stopped");
    let final_seq = seq;
    for key in &worker1_keys {
        let last =
            decoded.iter().find(|r| r.key == *key && r.seq == final_seq).expect("last command of key has a result");
        assert_ne!(last.worker_id, "worker-1", "key {key} still on the stopped worker");
    }
    assert!(workers[0].log_text().contains("partitions revoked"), "worker-1 handed its partitions back");

    for w in &workers[1..] {
        w.signal(Signal::SIGTERM);
    }
    for w in &mut workers[1..] {
        let status = w.wait_exit(Duration::from_secs(20)).unwrap_or_else(|| panic!("{} did not exit", w.name));
        assert!(status.success(), "{} exited with {status}", w.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_cluster_is_unreachable_still_stops_within_its_bound() {
    let scope = Scope::new("nobroker");
    let mut env = scope.env();
    env.extend([
        // Nothing listens on port 1: every connection attempt is refused.
        ("SHOAL__KAFKA__BOOTSTRAP_SERVERS".to_string(), "127.0.0.1:1".to_string()),
        ("SHOAL__TOPICS__CREATE".to_string(), "false".to_string()),
        ("SHOAL__SHUTDOWN__TIMEOUT_MS".to_string(), "2000".to_string()),
    ]);
    let mut worker = Proc::spawn("worker", &bin("shoal-worker"), &[], &env, &scope.dir);
    eventually(Duration::from_secs(30), "the worker to start polling", || {
        let started = worker.log_text().contains("worker started");
        async move { started }
    })
    .await;
    worker.signal(Signal::SIGTERM);
    let began = Instant::now();
    let status = tokio::task::block_in_place(|| worker.wait_exit(Duration::from_secs(10)))
        .unwrap_or_else(|| panic!("worker still running {:?} after SIGTERM", began.elapsed()));
    // Within the 2 s bound plus the watchdog's 1 s of slack.
    assert!(began.elapsed() < Duration::from_millis(3_500), "took {:?}", began.elapsed());
    assert!(status.code().is_some(), "exited by itself, not by a signal: {status}");
}
