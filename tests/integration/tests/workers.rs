//! Workers against a real broker: the group shares the work, and a worker
//! stopped with SIGTERM mid-stream hands over cleanly.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use shoal_integration_tests::*;
use shoal_protocol::messages::ResultStatus;

const KEYS: usize = 30;

test_in_both_modes!(
    three_workers_share_the_work_and_every_command_gets_exactly_one_result => three_workers_share_the_work_exactly_once,
    three_workers_share_the_work_at_least_once
);

async fn three_workers_share_the_work_and_every_command_gets_exactly_one_result(mode: &str) {
    let scope = Scope::with_topics("share").await;
    let mut workers = scope.start_workers(3, |i, worker| worker.id(format!("worker-{i}")).mode(mode));
    wait_for_members(&scope, 3).await;

    let issued = issue_alert_rounds(&scope, KEYS, 10, None, |_| ()).await;

    let mut results = TopicReader::new(&scope.topics.results.name);
    results.read_until(Duration::from_secs(90), "a result per command", |m| m.len() >= issued.len()).await;
    let decoded = decode_results(&results.messages);
    assert_one_result_each(&decoded, &issued);
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

    stop_all_cleanly(&mut workers, Duration::from_secs(20));
}

test_in_both_modes!(
    sigterm_mid_stream_hands_partitions_over_without_losing_a_command => sigterm_mid_stream_exactly_once,
    sigterm_mid_stream_at_least_once
);

async fn sigterm_mid_stream_hands_partitions_over_without_losing_a_command(mode: &str) {
    let scope = Scope::with_topics("sigterm").await;
    let shutdown_bound = Duration::from_millis(5_000);
    let mut workers = scope.start_workers(3, |i, worker| {
        worker.id(format!("worker-{i}")).with("SHOAL__SHUTDOWN__TIMEOUT_MS", "5000").mode(mode)
    });
    wait_for_members(&scope, 3).await;

    let mut results = TopicReader::new(&scope.topics.results.name);
    let mut stopped_at: Option<u64> = None;
    // Produce 40 rounds of one command per key; stop worker-1 once a third
    // of the stream has results, while commands keep coming.
    let rounds = 40;
    let issued = issue_alert_rounds(&scope, KEYS, rounds, Some(Duration::from_millis(50)), |round| {
        if stopped_at.is_none() {
            tokio::task::block_in_place(|| results.drain());
            if results.messages.len() >= KEYS * 12 {
                stopped_at = Some(round);
                let status = workers[0].terminate(shutdown_bound + Duration::from_secs(3));
                assert!(status.success(), "worker-1 exited with {status}; log:\n{}", workers[0].log_text());
            }
        }
    })
    .await;
    let stopped_at = stopped_at.expect("worker-1 was never stopped: results did not arrive while producing");
    assert!(stopped_at < rounds, "worker-1 must stop mid-stream (stopped at round {stopped_at} of {rounds})");

    results.read_until(Duration::from_secs(90), "a result per command", |m| m.len() >= issued.len()).await;
    let decoded = decode_results(&results.messages);
    // A graceful stop must not duplicate results either.
    assert_one_result_each(&decoded, &issued);

    // The keys worker-1 owned were taken over by the others.
    let worker1_keys: HashSet<&str> =
        decoded.iter().filter(|r| r.worker_id == "worker-1").map(|r| r.key.as_str()).collect();
    assert!(!worker1_keys.is_empty(), "worker-1 processed nothing before it stopped");
    let final_seq = rounds;
    for key in &worker1_keys {
        let last =
            decoded.iter().find(|r| r.key == *key && r.seq == final_seq).expect("last command of key has a result");
        assert_ne!(last.worker_id, "worker-1", "key {key} still on the stopped worker");
    }
    assert!(workers[0].log_text().contains("partitions revoked"), "worker-1 handed its partitions back");

    stop_all_cleanly(&mut workers[1..], Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_cluster_is_unreachable_still_stops_within_its_bound() {
    let scope = Scope::new("nobroker");
    // Every connection attempt is refused; the shutdown bound is 2 s.
    let mut worker = scope.worker("worker").without_kafka().spawn();
    eventually(Duration::from_secs(30), "the worker to start polling", || {
        let started = worker.log_text().contains("worker started");
        async move { started }
    })
    .await;
    let began = Instant::now();
    let status = worker.terminate(Duration::from_secs(10));
    // Within the 2 s bound plus the watchdog's 1 s of slack.
    assert!(began.elapsed() < Duration::from_millis(3_500), "took {:?}", began.elapsed());
    assert!(status.code().is_some(), "exited by itself, not by a signal: {status}");
}

/// Members of `group` as the broker lists them, whatever its state.
fn group_members(group: &str) -> Option<usize> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap()).create().unwrap();
    let list = consumer.fetch_group_list(Some(group), Duration::from_secs(5)).ok()?;
    list.groups().iter().find(|g| g.name() == group).map(|g| g.members().len())
}

/// On shutdown a worker unsubscribes before it closes its consumer, so the
/// group sees the member leave at once: with a 45 s session timeout, the
/// broker lists one member within seconds of the stop (without a
/// LeaveGroup the stopped member would stay listed for 45 s), and the other
/// worker then holds every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_leaves_its_group_at_once() {
    let scope = Scope::with_topics("leave").await;
    let launch = |name: &str| scope.worker(name).with("SHOAL__KAFKA__SESSION_TIMEOUT_MS", "45000").spawn();
    let (mut first, mut second) = (launch("leave-1"), launch("leave-2"));
    wait_for_members(&scope, 2).await;
    let group = scope.workers_group();
    assert_eq!(group_members(&group), Some(2));
    assert!(first.terminate(Duration::from_secs(30)).success(), "stopped cleanly");
    let stopped = Instant::now();
    eventually(Duration::from_secs(5), "the broker to list one member", || {
        let group = group.clone();
        async move { tokio::task::spawn_blocking(move || group_members(&group)).await.unwrap() == Some(1) }
    })
    .await;
    assert!(stopped.elapsed() < Duration::from_secs(5), "left in {:?}", stopped.elapsed());
    assert!(first.log_text().contains("consumer unsubscribed: leaving the group"), "it unsubscribed first");
    // The survivor notices at its next heartbeat (a quarter of the session
    // timeout) and takes every partition.
    wait_for_members(&scope, 1).await;
    assert!(second.terminate(Duration::from_secs(30)).success());
}
