//! Flow control against a real broker: a flood of a slow, low-priority kind
//! does not delay another kind's commands beyond the share it is
//! configured to leave them, and the flood itself keeps to its limits
//! (docs/flow-control.md).
//!
//! One worker, four handler slots. The flood (`probe`, priority 0, each
//! command 40 ms) may run 3 at a time and start 60 a second; alerts
//! (`raise_alert`, priority 10) are issued while it drains. The pipeline
//! starts every command it reads (`worker.max_concurrency` =
//! `worker.max_in_flight`), so the priorities see all of them.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use shoal_integration_tests::*;
use shoal_protocol::messages::{Command, CommandResult, ResultStatus, SCHEMA_VERSION, WireMessage};
use uuid::Uuid;

const FLOOD: usize = 450;
const FLOOD_KEYS: usize = 150;
const FLOOD_SLEEP_MS: u64 = 40;
const FLOOD_MAX_CONCURRENCY: usize = 3;
const FLOOD_RATE_PER_S: f64 = 60.0;
const FLOOD_BURST: usize = 3;
const SLOTS: usize = 4;
const ALERTS: usize = 20;
const ALERT_EVERY: Duration = Duration::from_millis(150);
/// An alert never waits for more than one flood command (the flood holds
/// at most 3 of the 4 slots, and a freed slot goes to the higher priority
/// first); the rest is Kafka's hop and the alert's own handling on a busy
/// two-core machine. Ten flood commands' time.
const ALERT_P95_BOUND: Duration = Duration::from_millis(10 * FLOOD_SLEEP_MS);

fn command(kind: &str, key: String, payload: serde_json::Value) -> Command {
    Command {
        schema_version: SCHEMA_VERSION,
        id: Uuid::now_v7(),
        kind: kind.into(),
        key,
        seq: 1,
        issued_at: Utc::now(),
        deadline: None,
        payload,
    }
}

fn alert(i: usize) -> Command {
    let payload =
        serde_json::json!({"symbol": format!("FC-{i}"), "level": "100", "previous_price": "99.5", "price": "100.2"});
    command("raise_alert", format!("alert-{i}"), payload)
}

/// What a run showed.
#[derive(Debug)]
struct Figures {
    /// Issue to result of each alert, sorted.
    alert_latency: Vec<Duration>,
    /// Flood commands finished when the last alert finished.
    flood_done_at_last_alert: usize,
    /// Most flood handlers seen running at once.
    flood_peak_concurrency: usize,
    /// Most flood starts beyond the token bucket's allowance (burst plus
    /// rate times the time since the first start).
    flood_starts_over_rate: f64,
    /// First to last flood start.
    flood_span: Duration,
}

impl Figures {
    fn alert_p95(&self) -> Duration {
        let i = (self.alert_latency.len() * 95).div_ceil(100).saturating_sub(1);
        self.alert_latency[i]
    }
}

fn since(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or(Duration::ZERO)
}

/// Most intervals `[start, end)` open at once.
fn peak_overlap(results: &[&CommandResult]) -> usize {
    let mut edges: Vec<(DateTime<Utc>, i32)> =
        results.iter().flat_map(|r| [(r.started_at, 1), (r.finished_at, -1)]).collect();
    edges.sort(); // at equal times an end (-1) comes before a start
    let (mut open, mut peak) = (0i32, 0i32);
    for (_, delta) in edges {
        open += delta;
        peak = peak.max(open);
    }
    usize::try_from(peak).unwrap()
}

/// Runs the flood and the alerts through one worker configured by `flow`.
async fn flood_and_alerts(test: &str, flow: &[(&str, &str)]) -> Figures {
    let scope = Scope::with_topics(test).await;
    let launch = scope
        .worker("worker")
        .id(format!("{test}-worker"))
        .with("SHOAL__WORKER__PROBE_HANDLER", "true")
        .with("SHOAL__WORKER__MAX_CONCURRENCY", "512")
        .with("SHOAL__WORKER__MAX_IN_FLIGHT", "512")
        .with("SHOAL__WORKER__FLOW__SLOTS", SLOTS.to_string())
        .with_all(flow.iter().copied());
    let worker = App::worker(&launch);
    // Joined and assigned first, so that no latency below is the group's.
    eventually(Duration::from_secs(60), "the worker ready", || {
        let ready = worker.ready().0;
        async move { ready }
    })
    .await;
    let topic = scope.topics.commands.name.clone();
    let producer = producer();

    // The flood, issued at once: each key's commands in seq order.
    let flood: Vec<Command> = (0..FLOOD)
        .map(|i| {
            let payload = serde_json::json!({"sleep_ms": FLOOD_SLEEP_MS});
            let seq = u64::try_from(i / FLOOD_KEYS).unwrap() + 1;
            Command { seq, ..command("probe", format!("flood-{}", i % FLOOD_KEYS), payload) }
        })
        .collect();
    let encoded: Vec<_> = flood.iter().map(|c| (c.key.as_str(), c.encode())).collect();
    futures::future::join_all(encoded.iter().map(|(key, bytes)| produce(&producer, &topic, key, bytes))).await;
    // Alerts issued one by one while the flood drains.
    let mut alerts = Vec::new();
    for i in 0..ALERTS {
        let a = alert(i);
        produce(&producer, &topic, &a.key, &a.encode()).await;
        alerts.push(a);
        tokio::time::sleep(ALERT_EVERY).await; // the pace of issuing, not a wait for a condition
    }

    let mut results = TopicReader::new(&scope.topics.results.name);
    results.read_until(Duration::from_secs(120), "a result for every command", |m| m.len() >= FLOOD + ALERTS).await;
    let decoded = decode_results(&results.messages);
    let by_id: HashMap<Uuid, &CommandResult> = decoded.iter().map(|r| (r.command_id, r)).collect();
    let result_of = |c: &Command| *by_id.get(&c.id).expect("a result per command");
    let flood_results: Vec<&CommandResult> = flood.iter().map(result_of).collect();
    let alert_results: Vec<&CommandResult> = alerts.iter().map(result_of).collect();
    for r in flood_results.iter().chain(&alert_results) {
        assert_eq!(r.status, ResultStatus::Succeeded, "{r:?}");
    }
    assert!(worker.stop(Duration::from_secs(30)).await, "worker stopped cleanly");

    let mut alert_latency: Vec<Duration> =
        alerts.iter().zip(&alert_results).map(|(c, r)| since(c.issued_at, r.finished_at)).collect();
    alert_latency.sort();
    let last_alert = alert_results.iter().map(|r| r.finished_at).max().unwrap();
    let flood_done_at_last_alert = flood_results.iter().filter(|r| r.finished_at <= last_alert).count();
    let mut starts: Vec<DateTime<Utc>> = flood_results.iter().map(|r| r.started_at).collect();
    starts.sort();
    let first = starts[0];
    let flood_starts_over_rate = starts
        .iter()
        .enumerate()
        .map(|(i, s)| (i + 1) as f64 - (FLOOD_BURST as f64 + FLOOD_RATE_PER_S * since(first, *s).as_secs_f64()))
        .fold(f64::MIN, f64::max);
    Figures {
        alert_latency,
        flood_done_at_last_alert,
        flood_peak_concurrency: peak_overlap(&flood_results),
        flood_starts_over_rate,
        flood_span: since(first, starts[starts.len() - 1]),
    }
}

fn limited_flood() -> Vec<(&'static str, String)> {
    vec![
        ("SHOAL__WORKER__FLOW__KINDS__PROBE__PRIORITY", "0".to_string()),
        ("SHOAL__WORKER__FLOW__KINDS__PROBE__MAX_CONCURRENCY", FLOOD_MAX_CONCURRENCY.to_string()),
        ("SHOAL__WORKER__FLOW__KINDS__PROBE__RATE_PER_S", FLOOD_RATE_PER_S.to_string()),
        ("SHOAL__WORKER__FLOW__KINDS__PROBE__BURST", FLOOD_BURST.to_string()),
        ("SHOAL__WORKER__FLOW__KINDS__RAISE_ALERT__PRIORITY", "10".to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_one_kind_does_not_delay_another_beyond_its_share() {
    let settings = limited_flood();
    let flow: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let f = flood_and_alerts("flow", &flow).await;
    eprintln!("flow control figures: {f:?}; alert p95 {:?}", f.alert_p95());

    assert!(f.alert_p95() <= ALERT_P95_BOUND, "alert p95 {:?} over {ALERT_P95_BOUND:?}: {f:?}", f.alert_p95());
    assert!(
        f.flood_done_at_last_alert <= FLOOD * 6 / 10,
        "every alert was answered while the flood was far from done: {} of {FLOOD} flood commands finished",
        f.flood_done_at_last_alert
    );
    assert!(
        f.flood_peak_concurrency <= FLOOD_MAX_CONCURRENCY,
        "flood ran {} at once, limit {FLOOD_MAX_CONCURRENCY}",
        f.flood_peak_concurrency
    );
    // One start of slack: start times are taken a moment after admission.
    assert!(f.flood_starts_over_rate <= 1.0, "flood started faster than its rate: {f:?}");
    let expected = Duration::from_secs_f64((FLOOD - FLOOD_BURST) as f64 / FLOOD_RATE_PER_S);
    assert!(f.flood_span >= expected.mul_f64(0.95), "flood span {:?}, rate allows {expected:?}", f.flood_span);
}

/// The same run without priorities or limits (four slots, first come first
/// served): the alerts wait behind the flood. Shows the test above can
/// fail; run with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a control experiment: run with --ignored to see the figures without flow control"]
async fn control_without_flow_control_the_flood_delays_the_alerts() {
    let f = flood_and_alerts("flow-control", &[]).await;
    eprintln!("control figures (no priorities or limits): {f:?}; alert p95 {:?}", f.alert_p95());
    assert!(f.alert_p95() > ALERT_P95_BOUND, "{f:?}");
}
