//! The full pipeline: simulator → ingest → decisions (with the state) →
//! commands → workers → results → outcome recorded, at a pace the machine
//! can hold, every decision traced.
//!
//! A decision's end-to-end latency runs from the trade's arrival at ingest
//! (the tick's `received_at`, stamped by ingest when it read the frame,
//! found on the ticks topic by the `symbol` and `trade_id` of the trace's
//! root `feed receive` span) to the end of the results stage's `record
//! result` span in the same trace.

use std::collections::HashMap;
use std::time::Duration;

use nix::sys::signal::Signal;
use rdkafka::Message as _;
use shoal_protocol::messages::{MarketTick, WireMessage as _};

use super::cli::Cli;
use super::pipeline::peak_rss_mib;
use super::stats::percentile;
use crate::otlp::{ReceivedSpan, Receiver};
use crate::{Proc, Scope, TopicReader, start_sim};

/// Decisions whose trade arrived in the first seconds are not counted:
/// the consumer groups are still forming then.
const WARM_UP: Duration = Duration::from_secs(5);

/// Eight symbols whose keys fall on distinct command partitions (the demo's).
const SYMBOLS: &str = "SIM-AAA,SIM-DDD,SIM-EEE,SIM-HHH,SIM-III,SIM-LLL,SIM-NNN,SIM-OOO";

/// What the full pipeline did.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct E2e {
    /// Seconds the feed ran.
    pub(crate) seconds: f64,
    /// Ticks ingested a second.
    pub(crate) ticks_per_s: f64,
    /// Outcomes recorded a second.
    pub(crate) outcomes_per_s: f64,
    /// Decisions whose latency was measured.
    pub(crate) decisions: usize,
    /// p50, p90, p99 and max of them.
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    /// Peak resident memory of the orchestrator, MiB.
    pub(crate) orchestrator_rss_mib: f64,
    /// Peak resident memory of the workers together, MiB.
    pub(crate) workers_rss_mib: f64,
}

/// Runs the full pipeline for `--e2e-seconds` and measures it.
pub(crate) async fn measure(cli: &Cli) -> E2e {
    let receiver = Receiver::start(true).await.expect("starting the OTLP receiver");
    let scope = Scope::with_topics("bench-e2e").await;
    let rate = format!("{}", cli.e2e_rate);
    let (mut sim, url) = start_sim(&["--rate", &rate, "--seed", "7", "--symbols", SYMBOLS], &scope.dir);
    let traced = |launch: crate::Launch| {
        launch
            .with("RUST_LOG", "warn")
            .with("SHOAL__OBSERVABILITY__SAMPLE_RATIO", "1")
            .with("SHOAL__OBSERVABILITY__MAX_TRACED_PER_SEC", "0")
            .otlp("http/protobuf", receiver.http_endpoint())
    };
    let mut workers: Vec<Proc> = (1..=cli.workers)
        .map(|i| traced(scope.worker(&format!("worker-{i}")).id(format!("e2e-{i}"))).spawn())
        .collect();
    let mut orchestrator = traced(scope.orchestrator("orchestrator")).feed(&url).lively_rules().spawn();
    println!(
        "bench: e2e: simulator at {rate} trades/s per symbol (8 symbols) for {}s after {}s of warm-up ...",
        cli.e2e_seconds,
        WARM_UP.as_secs()
    );
    let counted_from = chrono::Utc::now() + WARM_UP;
    tokio::time::sleep(WARM_UP + Duration::from_secs(cli.e2e_seconds)).await; // the measured run itself
    let orchestrator_rss_mib = peak_rss_mib(orchestrator.pid());
    let workers_rss_mib: f64 = workers.iter().map(|w| peak_rss_mib(w.pid())).sum();
    sim.signal(Signal::SIGTERM);
    tokio::task::block_in_place(|| sim.wait_exit(Duration::from_secs(10)));
    orchestrator.stop_cleanly(Duration::from_secs(30));
    for w in &mut workers {
        w.stop_cleanly(Duration::from_secs(30));
    }

    let mut ticks = TopicReader::new(&scope.topics.ticks.name);
    ticks.read_to_end(Duration::from_secs(30)).await;
    let arrivals: HashMap<(String, String), i64> = ticks
        .messages
        .iter()
        .filter_map(|m| MarketTick::decode(m.payload()?).ok())
        .filter(|t| t.received_at >= counted_from)
        .filter_map(|t| Some(((t.symbol, t.trade_id?), t.received_at.timestamp_nanos_opt()?)))
        .collect();
    let spans = receiver.spans();
    let latencies_ms = latencies(&spans, &arrivals);
    let counted_nanos = u64::try_from(counted_from.timestamp_nanos_opt().unwrap_or(0)).unwrap_or(0);
    let outcomes = spans.iter().filter(|s| s.name == "record result" && s.end_unix_nano >= counted_nanos).count();
    let seconds = cli.e2e_seconds as f64;
    let l = &latencies_ms;
    let figures = E2e {
        seconds,
        ticks_per_s: arrivals.len() as f64 / seconds,
        outcomes_per_s: outcomes as f64 / seconds,
        decisions: l.len(),
        p50_ms: percentile(l, 50.0),
        p90_ms: percentile(l, 90.0),
        p99_ms: percentile(l, 99.0),
        max_ms: l.last().copied().unwrap_or(f64::NAN),
        orchestrator_rss_mib,
        workers_rss_mib,
    };
    println!(
        "bench: e2e: {:.0} ticks/s ingested, {:.1} outcomes/s recorded; trade arrival → outcome recorded over {} decisions: \
         p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; peak RSS orchestrator {:.0} MiB, workers {:.0} MiB",
        figures.ticks_per_s,
        figures.outcomes_per_s,
        figures.decisions,
        figures.p50_ms,
        figures.p90_ms,
        figures.p99_ms,
        figures.max_ms,
        figures.orchestrator_rss_mib,
        figures.workers_rss_mib
    );
    figures
}

/// Per trace with a recorded outcome: ms from its trade's arrival to the
/// end of its last `record result` span; sorted.
fn latencies(spans: &[ReceivedSpan], arrivals: &HashMap<(String, String), i64>) -> Vec<f64> {
    let mut roots: HashMap<&str, &ReceivedSpan> = HashMap::new();
    let mut recorded: HashMap<&str, u64> = HashMap::new();
    for span in spans {
        match span.name.as_str() {
            "feed receive" if span.parent_span_id.is_empty() => {
                roots.insert(&span.trace_id, span);
            }
            "record result" => {
                let end = recorded.entry(&span.trace_id).or_default();
                *end = (*end).max(span.end_unix_nano);
            }
            _ => {}
        }
    }
    let mut out: Vec<f64> = recorded
        .iter()
        .filter_map(|(trace, end)| {
            let root = roots.get(trace)?;
            let key = (root.attr("symbol")?.to_string(), root.attr("trade_id")?.to_string());
            let arrived = *arrivals.get(&key)?;
            let end = i64::try_from(*end).ok()?;
            Some((end - arrived) as f64 / 1e6)
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(name: &str, trace: &str, parent: &str, end: u64, attrs: &[(&str, &str)]) -> ReceivedSpan {
        ReceivedSpan {
            service: "s".into(),
            name: name.into(),
            trace_id: trace.into(),
            span_id: format!("{trace}-{name}"),
            parent_span_id: parent.into(),
            kind: 1,
            attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            links: Vec::new(),
            start_unix_nano: 0,
            end_unix_nano: end,
        }
    }

    #[test]
    fn a_decision_runs_from_its_trade_arrival_to_its_last_recorded_outcome() {
        let spans = [
            span("feed receive", "t1", "", 0, &[("symbol", "SIM-A"), ("trade_id", "7")]),
            span("record result", "t1", "x", 30_000_000, &[]),
            span("record result", "t1", "y", 45_000_000, &[]),
            // No outcome recorded: not a decision.
            span("feed receive", "t2", "", 0, &[("symbol", "SIM-A"), ("trade_id", "8")]),
            // No arrival known: skipped.
            span("feed receive", "t3", "", 0, &[("symbol", "SIM-B"), ("trade_id", "1")]),
            span("record result", "t3", "z", 9, &[]),
        ];
        let arrivals = HashMap::from([
            (("SIM-A".to_string(), "7".to_string()), 5_000_000),
            (("SIM-A".to_string(), "8".to_string()), 6_000_000),
        ]);
        assert_eq!(latencies(&spans, &arrivals), [40.0]);
    }
}
