//! Stages run inside the test process ([`App`]) against the real broker:
//! no process per component, each application with its own metrics and
//! readiness, counters read directly.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use shoal_integration_tests::*;
use shoal_protocol::messages::WireMessage as _;

const WAIT: Duration = Duration::from_secs(90);

/// A worker's results by status, as its own `/metrics` would serve them.
fn results_in_metrics<S>(app: &App<S>) -> u64 {
    ["succeeded", "failed", "expired", "unsupported"]
        .iter()
        .map(|status| app.metric(&format!("shoal_worker_results_total{{status=\"{status}\"}}")))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simulator_orchestrator_and_two_workers_in_one_process_record_one_result_per_command() {
    let scope = Scope::with_topics("inproc").await;
    let sim = InProcessSim::start(&["IP-A", "IP-B", "IP-C"], 20.0, 7).await;
    let workers: Vec<_> =
        (1..=2).map(|i| App::worker(&scope.worker(&format!("w{i}")).id(format!("inproc-worker-{i}")))).collect();
    let orchestrator = App::orchestrator(&scope.orchestrator("orchestrator").feed(&sim.url).lively_rules());

    let recorded = || orchestrator.stats.results.recorded.load(Ordering::Relaxed);
    eventually(WAIT, "30 outcomes recorded by the in-process orchestrator", || {
        let n = recorded();
        async move { n >= 30 }
    })
    .await;
    assert!(orchestrator.stats.feed.ticks.load(Ordering::Relaxed) > 0, "ticks ingested from the in-process simulator");

    // Stop issuing; every command issued gets exactly one result.
    let metrics = orchestrator.metrics();
    assert!(orchestrator.stop(Duration::from_secs(30)).await, "orchestrator stopped cleanly");
    let mut commands = TopicReader::new(&scope.topics.commands.name);
    commands.read_to_end(Duration::from_secs(30)).await;
    let issued: Vec<_> = decode_commands(&commands.messages).iter().map(|c| c.id).collect();
    assert!(issued.len() >= 30, "{} commands issued", issued.len());
    let mut results = TopicReader::new(&scope.topics.results.name);
    results.read_until(WAIT, "a result for every command", |m| m.len() >= issued.len()).await;
    assert_one_result_each(&decode_results(&results.messages), &issued);

    // Each application has its own registry: the orchestrator's holds its
    // stages' metrics and none of the workers'; each worker's counts its
    // own results only.
    assert!(metrics.contains("shoal_commands_issued_total"), "{metrics}");
    assert!(metrics.contains("stage=\"decisions\""), "{metrics}");
    assert!(!metrics.contains("shoal_worker_results"), "a worker's metric in the orchestrator's registry");
    let mut handled = 0;
    for worker in workers {
        let own = worker.stats.handled.load(Ordering::Relaxed);
        assert_eq!(results_in_metrics(&worker), own, "a worker's metrics count its own results");
        assert!(!worker.metrics().contains("shoal_commands_issued"), "an orchestrator metric in a worker's registry");
        handled += own;
        assert!(worker.stop(Duration::from_secs(30)).await, "worker stopped cleanly");
    }
    // Work redone after a rebalance counts twice; nothing counts less.
    assert!(handled >= issued.len() as u64, "{handled} handled for {} commands", issued.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_is_each_applications_own() {
    let scope = Scope::with_topics("inready").await;
    let first = App::worker(&scope.worker("first").id("ready-1"));
    first.wait_ready(WAIT, "the first worker ready (joined, partitions assigned)").await;

    // A second application in the same process starts not ready, whatever
    // the first says.
    let second = App::worker(&scope.worker("second").id("ready-2"));
    let (ready, failing) = second.ready();
    assert!(!ready, "a worker that has not joined yet is not ready");
    // Either nothing is registered yet ("startup") or the stage announced
    // itself and waits for its partitions: starting, in both cases.
    assert!(failing.iter().any(|f| f.contains("starting") || f.starts_with("worker.")), "{failing:?}");
    assert!(first.ready().0, "the first stays ready: {:?}", first.ready().1);
    second.wait_ready(WAIT, "the second worker ready once it has partitions").await;

    // The first leaves: its own checks fail, the second stays ready.
    let stopped = first.telemetry.clone();
    assert!(first.stop(Duration::from_secs(30)).await, "first worker stopped cleanly");
    let (ready, failing) = stopped.health.readiness();
    assert!(!ready, "a stopped worker is not ready");
    assert!(failing.iter().any(|c| !c.ok && c.check == "worker.partitions"), "{failing:?}");
    second.wait_ready(WAIT, "the second worker ready after the first left").await;
    assert!(second.stop(Duration::from_secs(30)).await, "second worker stopped cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_seen_twice_at_least_once_is_skipped_not_done_again() {
    let scope = Scope::with_topics("indedupe").await;
    let launch = |name: &str| scope.worker(name).id(format!("dedupe-{name}")).mode("at_least_once");
    let first = App::worker(&launch("first"));
    let issued = issue_alert_rounds(&scope, 8, 5, None, |_| {}).await;
    let mut results = TopicReader::new(&scope.topics.results.name);
    results.read_until(WAIT, "a result for every command", |m| m.len() >= issued.len()).await;
    assert!(first.stop(Duration::from_secs(30)).await, "first worker stopped cleanly");

    // The same commands again (same ids: a producer's retry, or an
    // orchestrator replaying), after their offsets were committed: a new
    // worker must skip every one, its dedupe window loaded from the results
    // topic.
    let producer = producer();
    let mut commands = TopicReader::new(&scope.topics.commands.name);
    commands.read_to_end(Duration::from_secs(30)).await;
    let originals = decode_commands(&commands.messages);
    assert_eq!(originals.len(), issued.len());
    for command in &originals {
        produce(&producer, &scope.topics.commands.name, &command.key, &command.encode()).await;
    }
    let second = App::worker(&launch("second"));
    let skipped = || second.stats.duplicates_skipped.load(Ordering::Relaxed);
    let repeats = issued.len() as u64;
    eventually(WAIT, "every repeated command skipped", || {
        let n = skipped();
        async move { n >= repeats }
    })
    .await;
    assert_eq!(skipped(), issued.len() as u64, "each repeat skipped once");
    assert_eq!(second.stats.handled.load(Ordering::Relaxed), 0, "nothing done twice");
    assert_eq!(second.metric("shoal_worker_duplicates_skipped_total"), issued.len() as u64);
    assert!(second.stop(Duration::from_secs(30)).await, "second worker stopped cleanly");

    // Still exactly one result per command on the topic.
    let mut results = TopicReader::new(&scope.topics.results.name);
    results.read_to_end(Duration::from_secs(30)).await;
    assert_one_result_each(&decode_results(&results.messages), &issued);
}
