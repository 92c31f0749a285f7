//! At-least-once delivery repeats commands; the dedupe window keeps their
//! results single. Two real redeliveries: a worker SIGKILLed with results
//! produced but offsets not committed (its partitions' next owner reads
//! those commands again), and a group rewound to the start of the commands
//! topic. In both, every repeat is skipped and counted, and each command
//! has exactly one result.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nix::sys::signal::Signal;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use shoal_integration_tests::*;

const KEYS: usize = 24;
const WAIT: Duration = Duration::from_secs(120);

fn worker(scope: &Scope, id: &str, log_name: &str) -> Proc {
    scope
        .worker(log_name)
        .id(id)
        .mode("at_least_once")
        // Offsets committed rarely, so a kill leaves seconds of results
        // whose commands are delivered again.
        .with("SHOAL__WORKER__COMMIT_INTERVAL_MS", "4000")
        .with("SHOAL__KAFKA__SESSION_TIMEOUT_MS", "6000")
        .spawn()
}

/// A counter of `proc`'s last `worker status` line (0 before the first).
fn status_count(proc: &Proc, counter: &str) -> usize {
    let needle = format!(" {counter}=");
    proc.log_text()
        .lines()
        .filter(|l| l.contains("worker status"))
        .filter_map(|l| l.split(&needle).nth(1)?.split(' ').next()?.parse().ok())
        .next_back()
        .unwrap_or(0)
}

/// Repeats skipped, from the last status line of `proc`.
fn skipped(proc: &Proc) -> usize {
    status_count(proc, "duplicates_skipped")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_before_its_commit_has_its_repeats_skipped() {
    let scope = Scope::with_topics("alokill").await;
    let mut workers = [worker(&scope, "a-1", "a-1"), worker(&scope, "a-2", "a-2")];
    wait_for_members(&scope, 2).await;

    let mut results = TopicReader::new(&scope.topics.results.name);
    let mut killed = false;
    let issued = issue_alert_rounds(&scope, KEYS, 40, Some(Duration::from_millis(50)), |_| {
        tokio::task::block_in_place(|| results.drain());
        // Mid-stream, within a commit interval of the last commit.
        if !killed && results.messages.len() >= KEYS * 15 {
            workers[0].signal(Signal::SIGKILL);
            killed = true;
        }
    })
    .await;
    assert!(killed, "the kill happened mid-stream");
    results.read_until(WAIT, "a result per command", |m| m.len() >= issued.len()).await;
    // Let the survivor take the dead worker's partitions (session timeout)
    // and read their uncommitted commands again, then count.
    wait_for_members(&scope, 1).await;
    let survivor = &workers[1];
    eventually(WAIT, "the survivor's offsets committed to the end", || {
        let lag = group_lag(&scope);
        async move { lag == Some(0) }
    })
    .await;
    results.read_to_end(Duration::from_secs(30)).await;
    assert_one_result_each(&decode_results(&results.messages), &issued);

    // The repeats whose results were in the topic were skipped (a command
    // whose result the killed worker had not delivered yet is handled
    // again: its first result never existed).
    eventually(Duration::from_secs(30), "the survivor's status line", || {
        let n = skipped(survivor);
        async move { n > 0 }
    })
    .await;
    assert!(skipped(survivor) > 0, "the dead worker's uncommitted commands were delivered again and skipped");
    stop_all_cleanly(workers[1..].iter_mut(), Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_rewound_to_the_start_skips_every_command_again() {
    let scope = Scope::with_topics("alorewind").await;
    let mut first = worker(&scope, "r-1", "r-1");
    let issued = issue_alert_rounds(&scope, KEYS, 5, None, |_| {}).await;
    let mut results = TopicReader::new(&scope.topics.results.name);
    results.read_until(WAIT, "a result per command", |m| m.len() >= issued.len()).await;
    assert!(first.terminate(Duration::from_secs(30)).success(), "first worker stopped cleanly");
    assert_eq!(group_lag(&scope), Some(0), "a clean stop commits everything");

    // Rewind the (now empty) group to offset 0 of every partition.
    tokio::task::block_in_place(|| rewind_group(&scope));
    let second = worker(&scope, "r-2", "r-2");
    eventually(WAIT, "every command delivered again and skipped", || {
        let n = skipped(&second);
        async move { n >= KEYS * 5 }
    })
    .await;
    eventually(WAIT, "the rewound offsets committed to the end again", || {
        let lag = group_lag(&scope);
        async move { lag == Some(0) }
    })
    .await;
    assert_eq!(skipped(&second), issued.len(), "each repeat skipped once");
    assert_eq!(status_count(&second, "handled"), 0, "nothing handled twice");
    results.read_to_end(Duration::from_secs(30)).await;
    assert_one_result_each(&decode_results(&results.messages), &issued);
    let mut second = second;
    assert!(second.terminate(Duration::from_secs(30)).success(), "second worker stopped cleanly");
}

fn group_consumer(scope: &Scope) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", scope.workers_group())
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

/// Records of the commands topic the workers' group has not committed
/// past, or `None` while it has no committed offset everywhere.
fn group_lag(scope: &Scope) -> Option<i64> {
    let consumer = group_consumer(scope);
    let topic = &scope.topics.commands.name;
    let mut tpl = TopicPartitionList::new();
    for p in 0..scope.topics.commands.partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
    let mut lag = 0;
    for e in committed.elements() {
        let (_, high) = consumer.fetch_watermarks(topic, e.partition(), Duration::from_secs(10)).ok()?;
        match e.offset() {
            Offset::Offset(o) => lag += high - o,
            _ if high == 0 => {}
            _ => return None,
        }
    }
    Some(lag)
}

fn rewind_group(scope: &Scope) {
    let consumer = group_consumer(scope);
    let mut tpl = TopicPartitionList::new();
    for p in 0..scope.topics.commands.partitions {
        tpl.add_partition_offset(&scope.topics.commands.name, p, Offset::Offset(0)).unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}
