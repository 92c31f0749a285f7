//! The bench's command line and the runs it measures.

use std::path::PathBuf;

use clap::Parser;

/// Benchmark of the worker pipeline against raw librdkafka.
#[derive(Debug, Clone, Parser)]
#[command(name = "shoal-bench", version)]
pub(crate) struct Cli {
    /// Commands in the throughput backlog (large, so start-up is a small
    /// part of the timed drain).
    #[arg(long, default_value_t = 120_000)]
    pub(crate) backlog: usize,
    /// Commands per second in the latency phase.
    #[arg(long, default_value_t = 500)]
    pub(crate) rate: usize,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 10)]
    pub(crate) seconds: u64,
    /// Commands per second of the second, loaded latency phase (0: skip it).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) rate_high: usize,
    /// Seconds of the loaded latency phase.
    #[arg(long, default_value_t = 5)]
    pub(crate) seconds_high: u64,
    /// Workers (Shoal runs).
    #[arg(long, default_value_t = 3)]
    pub(crate) workers: usize,
    /// Broker.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    pub(crate) bootstrap: String,
    /// Rounds of all runs; each run's median throughput is reported, and
    /// its latencies over all rounds.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: usize,
    /// Measure only these runs (comma-separated names, e.g.
    /// `shoal-at-least-once,shoal-at-least-once-otlp`), for profiling; the
    /// summary lines need all runs.
    #[arg(long, value_delimiter = ',')]
    pub(crate) only: Vec<String>,
    /// Sample ratio of the `-otlp10` runs, uncapped (0.1 unless set: the
    /// names keep the 10). At 0, export is on but nothing is traced, which isolates
    /// the cost of the machinery from that of the spans.
    #[arg(long, default_value_t = 0.1)]
    pub(crate) sampled_ratio: f64,
    /// Decisions a second a saturated orchestrator is assumed to make until
    /// an export-off run of the same delivery mode has measured it (the
    /// first drains of the first round, or all of them with `--only`
    /// leaving out the export-off runs); capped sampling draws at this pace.
    #[arg(long, default_value_t = 60_000.0)]
    pub(crate) decided_per_sec: f64,
    /// Where to write the plot of the results (SVG): throughput of the raw
    /// loop and of Shoal in both delivery modes, with each one's 95%
    /// interval over rounds, and their latency percentiles.
    #[arg(long, default_value = "target/bench/bench.svg")]
    pub(crate) plot: PathBuf,
    /// Where to write every figure measured, machine-readable (JSON).
    #[arg(long, default_value = "target/bench/bench.json")]
    pub(crate) json: PathBuf,
    /// Skip the full-pipeline phase (simulator → ingest → decisions →
    /// workers → results recorded, end-to-end latency from traces).
    #[arg(long)]
    pub(crate) no_e2e: bool,
    /// Trades a second per symbol the simulator sends in the full-pipeline
    /// phase (8 symbols).
    #[arg(long, default_value_t = 50.0)]
    pub(crate) e2e_rate: f64,
    /// Seconds of the full-pipeline phase.
    #[arg(long, default_value_t = 20)]
    pub(crate) e2e_seconds: u64,
    /// Skip the keys-and-skew phase (10, 1,000 and 100,000 keys, uniform and
    /// Zipf, handler work of 0, 1 and 50 ms).
    #[arg(long)]
    pub(crate) no_keys: bool,
    /// Commands per configuration of the keys-and-skew phase.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) keys_backlog: usize,
    /// Skip the state phases (updates/s, changelog restore of 100k entities,
    /// memory per entity, query latency under ingest, ingest with a stalled
    /// WebSocket subscriber), run after the pipelines.
    #[arg(long)]
    pub(crate) no_state: bool,
    /// Run only the state phases (no pipelines, no raw loop: the state's
    /// updates/s are then not set against it).
    #[arg(long, conflicts_with = "no_state")]
    pub(crate) state_only: bool,
    /// Run only the scaling run: the raw loop once, then the drain of each
    /// delivery mode with each of these counts of worker processes
    /// (comma-separated, e.g. 1,2,4,8); prints a table and writes
    /// scaling.json and scaling.svg beside --json.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["state_only", "only"])]
    pub(crate) scaling: Vec<usize>,
    /// Internal: run the raw baseline loop from `<input>,<output>` (the
    /// bench starts itself with this to measure the baseline).
    #[arg(long, hide = true, value_name = "INPUT,OUTPUT")]
    pub(crate) raw_loop: Option<String>,
    /// Internal: the raw loop with the latency settings.
    #[arg(long, hide = true, requires = "raw_loop")]
    pub(crate) raw_latency: bool,
}

/// OTLP export of a run's workers, and how the decisions they process were
/// sampled.
#[derive(Debug, Clone)]
pub(crate) struct Export {
    pub(crate) endpoint: String,
    pub(crate) ratio: f64,
    /// `observability.max_traced_per_sec` (0: no cap).
    pub(crate) max_traced_per_sec: u32,
}

/// A run: name, delivery mode (`None` for the raw loop), OTLP export.
pub(crate) type Run<'a> = (&'static str, Option<&'static str>, Option<&'a Export>);

/// Every run, in the order they are reported, with the exports `default`
/// (default sampling), `sampled` (`--sampled-ratio`) and `every` (every
/// decision traced).
pub(crate) fn runs<'a>(default: &'a Export, sampled: &'a Export, every: &'a Export) -> [Run<'a>; 12] {
    [
        ("raw-librdkafka", None, None),
        ("shoal-at-least-once", Some("at_least_once"), None),
        ("shoal-exactly-once", Some("exactly_once"), None),
        ("shoal-at-least-once-otlp", Some("at_least_once"), Some(default)),
        ("shoal-exactly-once-otlp", Some("exactly_once"), Some(default)),
        ("shoal-at-least-once-otlp10", Some("at_least_once"), Some(sampled)),
        ("shoal-exactly-once-otlp10", Some("exactly_once"), Some(sampled)),
        ("shoal-at-least-once-otlp-all", Some("at_least_once"), Some(every)),
        ("shoal-exactly-once-otlp-all", Some("exactly_once"), Some(every)),
        // Controls: export off again, so that their ratio to the export-off
        // run shows how far two identical pipelines differ in this run.
        ("shoal-at-least-once-control", Some("at_least_once"), None),
        ("shoal-exactly-once-control", Some("exactly_once"), None),
        // The raw loop again, with the latency settings (linger 0, fetch
        // wait 1 ms): its latency against the defaults' in the same run.
        (super::raw::LATENCY_RUN, None, None),
    ]
}
