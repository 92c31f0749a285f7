//! Observability with the real binaries and the real broker: one decision
//! is one trace across the orchestrator, two Kafka hops and a worker
//! (exported over OTLP to a real receiver, gRPC and HTTP/protobuf), the
//! metrics after real traffic, and readiness.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use nix::sys::signal::Signal;
use shoal_integration_tests::otlp::{ReceivedSpan, Receiver};
use shoal_integration_tests::*;

const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

fn by_id(spans: &[ReceivedSpan]) -> HashMap<&str, &ReceivedSpan> {
    spans.iter().map(|s| (s.span_id.as_str(), s)).collect()
}

fn parent<'a>(span: &ReceivedSpan, index: &HashMap<&str, &'a ReceivedSpan>) -> &'a ReceivedSpan {
    index.get(span.parent_span_id.as_str()).unwrap_or_else(|| {
        panic!("parent {:?} of {:?} ({}) was not exported", span.parent_span_id, span.name, span.service)
    })
}

/// Metric families every process exposes after traffic, by binary.
const ORCHESTRATOR_METRICS: &[&str] = &[
    "shoal_feed_ticks_total",
    "shoal_feed_reconnects_total",
    "shoal_feed_sequence_gaps_total",
    "shoal_feed_connected",
    "shoal_decisions_ticks_total",
    "shoal_decisions_events_total",
    "shoal_commands_issued_total{kind=",
    "shoal_results_recorded_total{kind=",
    "shoal_command_latency_seconds_bucket{le=",
    "shoal_command_latency_seconds_count{kind=",
    "shoal_results_pending",
    "shoal_dead_letters_total{stage=\"decisions\"}",
    "shoal_consumer_lag{stage=\"decisions\"",
    "shoal_consumer_rebalances_total{stage=\"results\"",
    "shoal_consumer_assigned_partitions{stage=\"results\"",
    "shoal_pipeline_in_flight{stage=\"decisions\"}",
    "shoal_transactions_total{stage=\"decisions\",outcome=\"committed\"}",
    "shoal_transactions_total{stage=\"results\",outcome=\"aborted\"}",
    "shoal_trace_decisions_total{outcome=\"traced\"}",
    "shoal_trace_decisions_total{outcome=\"over_cap\"}",
];
const WORKER_METRICS: &[&str] = &[
    "shoal_worker_results_total{status=\"succeeded\"}",
    "shoal_handler_duration_seconds_bucket{le=",
    "shoal_handler_duration_seconds_count{kind=",
    "shoal_dead_letters_total{stage=\"worker\"}",
    "shoal_consumer_lag{stage=\"worker\"",
    "shoal_consumer_rebalances_total{stage=\"worker\"",
    "shoal_pipeline_in_flight{stage=\"worker\"}",
    "shoal_transactions_total{stage=\"worker\",outcome=\"committed\"}",
    "shoal_kafka_brokers_up{stage=\"worker\"",
];

/// The value of the first sample line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix))?.rsplit(' ').next()?.parse().ok()
}

/// Waits until each process's `/metrics` names every expected family, and
/// checks the counters show the traffic.
async fn assert_metrics_cover_the_traffic(processes: [(&str, std::net::SocketAddr, &[&str]); 3]) {
    // Lag comes from librdkafka statistics, every 2 s; wait for it rather
    // than assume.
    let mut texts = HashMap::new();
    for (name, address, expected) in processes {
        wait_for(Duration::from_secs(30), &format!("{name}'s /metrics to name every family"), || async move {
            let (status, body) = http_get(address, "/metrics").await.map_err(|e| e.to_string())?;
            let missing: Vec<&&str> = expected.iter().filter(|m| !body.contains(**m)).collect();
            if status == 200 && missing.is_empty() {
                Ok(())
            } else {
                Err(format!("{status}, missing {missing:?} in\n{body}"))
            }
        })
        .await;
        let (status, body) = http_get(address, "/metrics").await.unwrap();
        assert_eq!(status, 200);
        assert!(body.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
        texts.insert(name, body);
    }
    let orchestrator_metrics = &texts["orchestrator"];
    assert!(sample(orchestrator_metrics, "shoal_feed_ticks_total").unwrap() > 0.0);
    assert!(sample(orchestrator_metrics, "shoal_commands_issued_total{kind=").unwrap() > 0.0);
    // Every decision is traced at this rate: the cap (100 a second) is far.
    assert!(sample(orchestrator_metrics, "shoal_trace_decisions_total{outcome=\"traced\"}").unwrap() > 0.0);
    assert_eq!(sample(orchestrator_metrics, "shoal_trace_decisions_total{outcome=\"over_cap\"}"), Some(0.0));
    let recorded = sample(orchestrator_metrics, "shoal_command_latency_seconds_count{kind=").unwrap();
    assert!(recorded > 0.0, "end-to-end latency observed");
    for worker in ["worker-1", "worker-2"] {
        assert!(sample(&texts[worker], "shoal_worker_results_total{status=\"succeeded\"}").unwrap() > 0.0, "{worker}");
    }
}

/// Checks the trace of one recorded decision, end to end: seven spans in
/// one trace with the right parents, kinds and messaging attributes across
/// both Kafka hops. Returns the id of the worker that processed it.
fn assert_one_trace(
    outcome: &serde_json::Value,
    spans: &[ReceivedSpan],
    index: &HashMap<&str, &ReceivedSpan>,
    scope: &Scope,
) -> String {
    let command = outcome["command_id"].as_str().unwrap();
    let named = |name: &str| -> Vec<&ReceivedSpan> {
        spans.iter().filter(|s| s.name == name && s.attr("command.id") == Some(command)).collect()
    };
    let (publish, record) = (named("publish command"), named("record result"));
    assert_eq!(publish.len(), 1, "one publish span for {command}");
    assert_eq!(record.len(), 1, "one record span for {command}");
    let (publish, record) = (publish[0], record[0]);
    // A command may be processed more than once (a rebalance hands its
    // partition over before the transaction commits); exactly one result
    // is committed and recorded: follow the recorded one back.
    let result = parent(record, index);
    assert_eq!(result.name, "publish result", "recording continues the result's publish span");
    let process = parent(result, index);
    assert_eq!(process.name, "process command");
    assert_eq!(process.attr("command.id"), Some(command));
    // Orchestrator: feed receive → evaluate rules → publish command.
    let evaluate = parent(publish, index);
    assert_eq!(evaluate.name, "evaluate rules");
    let feed = parent(evaluate, index);
    assert_eq!(feed.name, "feed receive");
    assert!(feed.parent_span_id.is_empty(), "the feed receive span starts the trace");
    // Kafka hop 1: commands topic → worker.
    assert_eq!(process.parent_span_id, publish.span_id, "worker continues the command's publish span");
    // Kafka hop 2: results topic → orchestrator.
    assert_eq!(result.parent_span_id, process.span_id);
    assert_eq!(record.parent_span_id, result.span_id, "recording continues the result's publish span");
    let handler = spans.iter().find(|s| s.name == "run handler" && s.parent_span_id == process.span_id);
    assert!(handler.is_some(), "the handler runs in a child span of process command");

    let trace = &feed.trace_id;
    for span in [evaluate, publish, process, result, record] {
        assert_eq!(&span.trace_id, trace, "{} is in the decision's trace", span.name);
    }
    for span in [feed, evaluate, publish, record] {
        assert_eq!(span.service, "shoal-orchestrator", "{}", span.name);
    }
    for span in [process, result] {
        assert_eq!(span.service, "shoal-worker", "{}", span.name);
    }
    // Messaging semantic conventions.
    assert_eq!(publish.kind, PRODUCER);
    assert_eq!(result.kind, PRODUCER);
    assert_eq!(process.kind, CONSUMER);
    assert_eq!(record.kind, CONSUMER);
    assert_eq!(process.attr("messaging.system"), Some("kafka"));
    assert_eq!(process.attr("messaging.destination.name"), Some(scope.topics.commands.name.as_str()));
    assert_eq!(process.attr("messaging.consumer.group.name"), Some(scope.workers_group().as_str()));
    assert_eq!(process.attr("messaging.operation.type"), Some("process"));
    assert!(process.attr("messaging.destination.partition.id").is_some());
    assert!(process.attr("messaging.kafka.offset").is_some());
    assert_eq!(process.attr("messaging.kafka.message.key"), outcome["key"].as_str());
    assert_eq!(publish.attr("messaging.destination.name"), Some(scope.topics.commands.name.as_str()));
    // The record that completed the match: usually the result, or the
    // command when its result was read first (the parent is the
    // result's publish span either way).
    let completed_by = record.attr("messaging.destination.name");
    assert!(
        [Some(scope.topics.results.name.as_str()), Some(scope.topics.commands.name.as_str())].contains(&completed_by),
        "{completed_by:?}"
    );
    process.attr("shoal.worker.id").unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_decision_is_one_trace_across_both_kafka_hops_and_metrics_cover_the_traffic() {
    let receiver = Receiver::start(true).await.unwrap();
    let scope = Scope::with_topics("obs-trace").await;
    // The demo's eight symbols: their keys fall on eight different partitions
    // of the 12-partition commands topic, so each of two workers (six
    // partitions each) gets some of them.
    let symbols = "SIM-AAA,SIM-DDD,SIM-EEE,SIM-HHH,SIM-III,SIM-LLL,SIM-NNN,SIM-OOO";
    let (mut sim, url) = start_sim(&["--rate", "10", "--seed", "5", "--symbols", symbols], &scope.dir);

    // Both transports: worker-1 exports over gRPC, worker-2 and the
    // orchestrator over HTTP/protobuf, each chosen by the standard variables.
    let mut workers = scope.start_workers(2, |i, worker| {
        let worker = worker.id(format!("obs-worker-{i}"));
        if i == 1 {
            worker.otlp("grpc", receiver.grpc_endpoint())
        } else {
            worker.otlp("http/protobuf", receiver.http_endpoint())
        }
    });
    let record = scope.dir.join("outcomes.jsonl");
    let mut orchestrator = scope
        .orchestrator("orchestrator")
        .otlp("http/protobuf", receiver.http_endpoint())
        .feed(&url)
        .record_to(&record)
        .lively_rules()
        .spawn();
    let orchestrator_http = http_address(&orchestrator, Duration::from_secs(30)).await;
    let worker_http = http_address(&workers[0], Duration::from_secs(30)).await;
    let worker2_http = http_address(&workers[1], Duration::from_secs(30)).await;

    wait_for_lines(&record, 20, Duration::from_secs(90), "20 outcomes recorded").await;
    // The second worker joins the group a rebalance later (seconds on a busy
    // machine): wait until each worker has recorded outcomes of its own.
    eventually(Duration::from_secs(90), "outcomes recorded from both workers", || {
        // Tolerant of a line still being written.
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        let workers: std::collections::HashSet<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|o| o["worker_id"].as_str().map(str::to_string))
            .collect();
        async move { workers.len() >= 2 }
    })
    .await;

    // (b) Metrics after real traffic, from both binaries.
    assert_metrics_cover_the_traffic([
        ("orchestrator", orchestrator_http, ORCHESTRATOR_METRICS),
        ("worker-1", worker_http, WORKER_METRICS),
        ("worker-2", worker2_http, WORKER_METRICS),
    ])
    .await;

    // Stop everything: the exporters flush on shutdown.
    orchestrator.stop_cleanly(Duration::from_secs(20));
    stop_all_cleanly(&mut workers, Duration::from_secs(20));
    sim.signal(Signal::SIGTERM);
    tokio::task::block_in_place(|| sim.wait_exit(Duration::from_secs(10)));

    // (a) One recorded decision, end to end, as one trace.
    let outcomes = read_json_lines(&record);
    let spans = receiver.spans();
    let index = by_id(&spans);
    let named = |name: &str, command: &str| -> Vec<&ReceivedSpan> {
        spans.iter().filter(|s| s.name == name && s.attr("command.id") == Some(command)).collect()
    };
    let mut checked = 0;
    let mut workers_seen = std::collections::HashSet::new();
    for outcome in &outcomes {
        let worker = assert_one_trace(outcome, &spans, &index, &scope);
        workers_seen.insert(worker);
        checked += 1;
    }
    assert!(checked >= 20, "checked {checked} decisions");
    assert_eq!(workers_seen.len(), 2, "both workers (gRPC and HTTP export) took part: {workers_seen:?}");

    // Batches: a transaction's commit span links to records it committed.
    let results_published: std::collections::HashSet<&str> =
        spans.iter().filter(|s| s.name == "publish result").map(|s| s.span_id.as_str()).collect();
    let linked = spans
        .iter()
        .filter(|s| s.name == "commit transaction" && s.service == "shoal-worker")
        .flat_map(|s| s.links.iter())
        .filter(|(_, span)| results_published.contains(span.as_str()))
        .count();
    assert!(linked > 0, "worker commit spans link to the results they commit");

    // Logs carry the trace id of the span they were written in.
    let outcome = &outcomes[0];
    let command = outcome["command_id"].as_str().unwrap();
    let trace = &named("process command", command)[0].trace_id;
    let worker_logs: String = workers.iter().map(Proc::log_text).collect();
    let line = worker_logs
        .lines()
        .find(|l| l.contains("command handled") && l.contains(command))
        .expect("the worker logged the command");
    assert!(line.contains(&format!("trace_id={trace}")), "log line carries the trace id: {line}");
    let recorded = orchestrator
        .log_text()
        .lines()
        .find(|l| l.contains("result recorded") && l.contains(command))
        .map(str::to_string)
        .expect("the orchestrator logged the result");
    assert!(recorded.contains(&format!("trace_id={trace}")), "result line carries the trace id: {recorded}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_ready_only_after_the_group_assignment() {
    let scope = Scope::logged("obs-ready");
    let mut worker = scope
        .worker("worker")
        .id("ready-worker")
        // The commands topic does not exist yet, so the group cannot assign
        // anything until the test creates it; metadata is refreshed every
        // second so the subscription notices the new topic soon.
        .with("SHOAL__TOPICS__CREATE", "false")
        .with("SHOAL__KAFKA__OPTIONS__TOPIC_METADATA_REFRESH_INTERVAL_MS", "1000")
        .spawn();
    let address = http_address(&worker, Duration::from_secs(30)).await;

    let (status, body) = http_get(address, "/healthz").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // Connected to Kafka, producer ready: only the assignment is missing.
    let body =
        wait_for_readyz(address, Duration::from_secs(60), "readyz to fail on the partitions check alone", |s, b| {
            s == 503 && failing_checks(b) == ["worker.partitions"]
        })
        .await;
    assert_eq!(group_members_with_assignment(&scope.workers_group()), 0, "no assignment yet: {body}");

    scope.create_topics().await;
    wait_for_readyz(address, Duration::from_secs(60), "readyz to turn 200 after the assignment", is_ready).await;
    let group = scope.workers_group();
    wait_for(Duration::from_secs(10), "the broker to report the member's assignment", || {
        let n = group_members_with_assignment(&group);
        async move { if n == 1 { Ok(()) } else { Err(format!("{n} members with an assignment")) } }
    })
    .await;

    worker.stop_cleanly(Duration::from_secs(20));
    // The HTTP server stopped with the process.
    assert!(http_get(address, "/healthz").await.is_err(), "nothing listens after exit");
}

/// `/readyz` answers 200 and says ready.
fn is_ready(status: u16, body: &serde_json::Value) -> bool {
    status == 200 && body["ready"] == true
}

/// `/healthz` answers 200 (alive), whatever `/readyz` says.
async fn assert_alive(address: std::net::SocketAddr, what: &str) {
    let (status, _) = http_get(address, "/healthz").await.unwrap();
    assert_eq!(status, 200, "{what}");
}

/// "Not ready when Kafka is stopped", without stopping the broker other
/// tests share: a worker whose cluster is unreachable (nothing listens on
/// port 1) is alive but not ready, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_kafka_is_alive_but_not_ready() {
    let scope = Scope::logged("obs-nokafka");
    // Exactly-once would stop when its producer cannot initialise; the
    // at-least-once worker keeps trying, as a pod waiting for Kafka does.
    let mut worker = scope.worker("worker").without_kafka().mode("at_least_once").spawn();
    let address = http_address(&worker, Duration::from_secs(30)).await;
    // Once librdkafka's statistics arrive, the Kafka check names the cause.
    let body = wait_for_readyz(address, Duration::from_secs(30), "readyz to report no broker connection", |s, b| {
        let named = b["failing"].as_array().is_some_and(|checks| {
            checks.iter().any(|c| {
                c["check"] == "worker.kafka" && c["detail"].as_str().is_some_and(|d| d.contains("no broker connection"))
            })
        });
        s == 503 && named
    })
    .await;
    assert_eq!(body["ready"], false);
    assert_alive(address, "alive all the same").await;
    assert!(worker.running());
    worker.terminate(Duration::from_secs(10));
}

/// "Not ready when Kafka is stopped", with a broker really stopped: the
/// worker runs against a broker of this test's own (the shared one stays
/// up for the other tests), turns ready, is told the truth when the broker
/// stops (not ready, naming the Kafka check, but alive), and is ready again
/// when the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_not_ready_when_the_broker_stops() {
    let scope = Scope::logged("obs-brokerstop");
    // A port no other test or the shared broker (9092/9093, the chaos
    // cluster's 19092-19097) uses.
    let broker = tokio::task::block_in_place(|| OwnBroker::start(29092, &scope.dir.join("kafka")));
    shoal_kafka::ensure_topics(&broker.kafka_settings(), &scope.topics).await.unwrap();
    let mut worker = scope
        .worker("worker")
        .with("SHOAL__KAFKA__BOOTSTRAP_SERVERS", broker.bootstrap())
        .id("brokerstop-worker")
        .spawn();
    let address = http_address(&worker, Duration::from_secs(30)).await;
    let body =
        wait_for_readyz(address, Duration::from_secs(90), "readyz to turn 200 on the own broker", is_ready).await;
    // Ready means the stage's own checks pass, not only the ones that exist
    // while it starts (this caught /readyz answering 200 before the worker
    // had even created its producer).
    let passing: Vec<&str> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == true)
        .filter_map(|c| c["check"].as_str())
        .collect();
    for check in ["worker.kafka", "worker.partitions", "worker.producer"] {
        assert!(passing.contains(&check), "{check} passes when ready: {body}");
    }

    tokio::task::block_in_place(|| broker.stop());
    let body = wait_for_readyz(address, Duration::from_secs(60), "readyz to fail on the Kafka check", |s, b| {
        s == 503 && failing_checks(b).iter().any(|c| c == "worker.kafka")
    })
    .await;
    assert_eq!(body["ready"], false);
    assert_alive(address, "alive while Kafka is away").await;
    assert!(worker.running(), "the worker waits for Kafka instead of exiting");

    // And ready again once the broker is back: the worker rejoins its
    // group (broker_restart.rs also keeps it down past the session timeout
    // and checks that commands flow again).
    tokio::task::block_in_place(|| broker.start_again());
    wait_for_readyz(address, Duration::from_secs(90), "ready again after the broker restarted", is_ready).await;
    worker.terminate(Duration::from_secs(30));
    tokio::task::block_in_place(|| drop(broker));
}

/// Sampling is decided once per decision: with `sample_ratio` 0.5 at the
/// orchestrator (where decisions start) each decision is traced from the
/// feed to the recorded result or not at all. The worker exports nothing
/// and makes no spans, yet passes the trace context on unchanged, so the
/// recorded result still continues its command's publish span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_traced_whole_or_not_at_all_and_a_non_exporting_worker_passes_the_trace_on() {
    let receiver = Receiver::start(true).await.unwrap();
    let scope = Scope::with_topics("obs-sampling").await;
    let (mut sim, url) = start_sim(&["--rate", "10", "--seed", "7"], &scope.dir);
    let mut worker = scope.worker("worker").id("sampling-worker").spawn();
    let record = scope.dir.join("outcomes.jsonl");
    let mut orchestrator = scope
        .orchestrator("orchestrator")
        .otlp("grpc", receiver.grpc_endpoint())
        .with("SHOAL__OBSERVABILITY__SAMPLE_RATIO", "0.5")
        .feed(&url)
        .record_to(&record)
        .lively_rules()
        .spawn();
    wait_for_lines(&record, 30, Duration::from_secs(90), "30 outcomes recorded").await;
    orchestrator.stop_cleanly(Duration::from_secs(20));
    worker.terminate(Duration::from_secs(20));
    sim.signal(Signal::SIGTERM);
    tokio::task::block_in_place(|| sim.wait_exit(Duration::from_secs(10)));

    let outcomes = read_json_lines(&record);
    let spans = receiver.spans();
    assert!(spans.iter().all(|s| s.service == "shoal-orchestrator"), "the worker exports nothing");
    let index = by_id(&spans);
    let (mut traced, mut untraced) = (0, 0);
    for outcome in &outcomes {
        let command = outcome["command_id"].as_str().unwrap();
        let of_command: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.attr("command.id") == Some(command)).collect();
        if of_command.is_empty() {
            untraced += 1;
            continue;
        }
        traced += 1;
        let names: std::collections::BTreeSet<&str> = of_command.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["publish command", "record result"].into(), "a traced decision is traced whole");
        let publish = of_command.iter().find(|s| s.name == "publish command").unwrap();
        let recorded = of_command.iter().find(|s| s.name == "record result").unwrap();
        // The worker made no span: the result carried the command's context.
        assert_eq!(recorded.parent_span_id, publish.span_id, "the worker passed the trace context on");
        assert_eq!(recorded.trace_id, publish.trace_id);
        let feed = parent(parent(publish, &index), &index);
        assert_eq!(feed.name, "feed receive", "traced from the feed");
    }
    assert!(traced > 0 && untraced > 0, "half sampled: {traced} traced, {untraced} not, of {}", outcomes.len());
}
