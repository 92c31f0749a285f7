//! `shoal-bench`: measures the real worker pipeline against a raw
//! librdkafka consume→produce loop on the same broker, in the same run.
//!
//! For each of: raw baseline, Shoal at-least-once, Shoal exactly-once:
//! - throughput: with the consumers running and their group settled, N
//!   commands are issued as fast as a producer takes them, timed from the
//!   first issued to the last result visible to a `read_committed` reader;
//! - latency: commands are issued at a fixed rate and each result's
//!   end-to-end latency (issue → visible to the reader) is recorded;
//!   percentiles p50/p90/p99/max.
//!
//! Ratios are reported against the raw baseline. Both Shoal modes are also
//! measured with OTLP trace export on (to a real OTLP receiver in this
//! process, OTLP/HTTP): with the default sampling (every decision, at most
//! `DEFAULT_MAX_TRACED_PER_SEC` traced a second), with 10% traced, and with
//! every decision traced, and the export-on / export-off throughput ratios
//! are reported. A control per mode (export off again) measures how far two
//! identical pipelines differ in the same run: the noise the ratios carry.
//! The results are also drawn in an SVG plot (`--plot`).
//!
//! Parts: `cli` (options and runs), `load` (issuing commands, reading
//! results), `raw` (the baseline loop), `pipeline` (the pipelines under
//! test and a group's measurement), `stats`, `report` (what is printed),
//! `plot`, `state` (the derived state's figures: updates/s against the
//! raw loop, changelog restore of 100k entities, memory per entity, query
//! latency under ingest) and `stall` (ingest with and without a stalled
//! WebSocket subscriber); `--no-state` skips the last two. `e2e` runs the
//! full pipeline from the simulator to the recorded outcome, and `keys`
//! the keys-and-skew matrix; `scaling` (`--scaling`, alone) the curve over
//! counts of worker processes. Everything measured is also written as JSON
//! (`--json`), and the last line is the one-line summary.

mod cli;
mod e2e;
mod keys;
mod load;
mod pipeline;
mod plot;
mod raw;
mod report;
mod scaling;
mod stall;
mod state;
mod stats;

use clap::Parser;

use self::cli::{Cli, Export, Run};
use self::pipeline::measure_group;
use self::stats::{Measured, median_round};
use crate::otlp::Receiver;

/// The pipelines the plot shows: the raw loop and Shoal in both delivery
/// modes with export off.
const PLOTTED: [&str; 3] = ["raw-librdkafka", "shoal-at-least-once", "shoal-exactly-once"];

/// `shoal-bench`'s `main`: parses the command line and runs the bench, or
/// the raw baseline loop the bench starts as a child process.
pub async fn main() {
    let cli = Cli::parse();
    if let Some(topics) = &cli.raw_loop {
        let (input, output) = topics.split_once(',').expect("--raw-loop <input>,<output>");
        return raw::raw_loop(&cli.bootstrap, input, output, cli.raw_latency);
    }
    if !cli.scaling.is_empty() {
        let rows = scaling::measure(&cli, &cli.scaling).await;
        return scaling::report(&cli, &rows);
    }
    println!(
        "bench: backlog={} latency phase {}/s for {}s, {} workers, broker {}",
        cli.backlog, cli.rate, cli.seconds, cli.workers, cli.bootstrap
    );
    let receiver = Receiver::start(false).await.expect("starting the OTLP receiver");
    let endpoint = receiver.http_endpoint();
    let export = |ratio: f64, max_traced_per_sec: u32| Export { endpoint: endpoint.clone(), ratio, max_traced_per_sec };
    let (every, default, sampled) =
        (export(1.0, 0), export(1.0, shoal_kafka::trace::DEFAULT_MAX_TRACED_PER_SEC), export(cli.sampled_ratio, 0));
    let runs = cli::runs(&default, &sampled, &every);
    let all = if cli.state_only { Vec::new() } else { measure_all(&cli, &runs).await };
    let e2e = if cli.no_e2e || cli.state_only { None } else { Some(e2e::measure(&cli).await) };
    let keys = if cli.no_keys || cli.state_only { keys::KeysFigures::default() } else { keys::measure(&cli).await };
    let state = if cli.no_state { None } else { Some(measure_state(&cli).await) };
    let stalled = if cli.no_state { None } else { Some(measure_stall().await) };
    if cli.state_only {
        // No pipelines: nothing to report but the state.
    } else if all.len() < runs.len() {
        report::partial(&all, &cli, receiver.count());
    } else {
        report::full(&all, &cli, receiver.count());
    }
    if let Some(state) = &state {
        let raw = all.iter().find(|m| m.name == "raw-librdkafka").map(|m| m.throughput);
        state::report(state, raw);
    }
    if let Some(stalled) = &stalled {
        stall::report(stalled);
    }
    if !cli.state_only {
        write_plot(&cli, &all);
    }
    let summary =
        (all.len() == runs.len()).then(|| report::Summary::of(&all, e2e.as_ref().map_or(f64::NAN, |e| e.p99_ms)));
    write_json(&cli, &all, e2e.as_ref(), &keys, summary.as_ref());
    if let Some(summary) = summary {
        println!("{}", summary.line());
    }
}

/// Writes every figure to `--json`; a failure is reported, not fatal.
fn write_json(
    cli: &Cli,
    all: &[Measured],
    e2e: Option<&e2e::E2e>,
    keys: &keys::KeysFigures,
    summary: Option<&report::Summary>,
) {
    use self::stats::percentile;
    let pipelines: Vec<serde_json::Value> = all
        .iter()
        .map(|m| {
            let (l, h) = (&m.latencies_ms, &m.latencies_high_ms);
            serde_json::json!({
                "name": m.name,
                "results_per_s": m.throughput,
                "rounds": m.rounds,
                "cpu_us_per_command": m.median_cpu_us(),
                "peak_rss_mib": stats::median(m.rss_mib.clone()),
                "latency_ms": {
                    "rate": cli.rate,
                    "p50": percentile(l, 50.0), "p90": percentile(l, 90.0), "p99": percentile(l, 99.0),
                    "max": l.last().copied(),
                },
                "latency_high_ms": {
                    "rate": cli.rate_high,
                    "p50": percentile(h, 50.0), "p90": percentile(h, 90.0), "p99": percentile(h, 99.0),
                    "max": h.last().copied(),
                },
            })
        })
        .collect();
    let document = serde_json::json!({
        "settings": {
            "backlog": cli.backlog, "rounds": cli.rounds, "workers": cli.workers,
            "rate": cli.rate, "seconds": cli.seconds, "rate_high": cli.rate_high, "seconds_high": cli.seconds_high,
        },
        "pipelines": pipelines,
        "e2e": e2e,
        "keys": keys.rows,
        "keys_skew": keys.skew,
        "summary": summary,
    });
    let written = cli
        .json
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&cli.json, format!("{document:#}\n")));
    match written {
        Ok(()) => println!("bench: figures written to {}", cli.json.display()),
        Err(error) => eprintln!("bench: could not write the figures to {}: {error}", cli.json.display()),
    }
}

/// Every selected run, round by round, combined over rounds, in the runs'
/// order whatever order they were measured in.
async fn measure_all(cli: &Cli, runs: &[Run<'_>]) -> Vec<Measured> {
    let selected = |name: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == name);
    // Runs compared with each other are measured together (see
    // `measure_group`): the raw loop with its two settings, then each
    // delivery mode with export off first.
    let groups: Vec<Vec<&Run<'_>>> = [vec![0, 11], vec![1, 3, 5, 7, 9], vec![2, 4, 6, 8, 10]]
        .iter()
        .map(|group| group.iter().map(|&i| &runs[i]).filter(|(name, ..)| selected(name)).collect::<Vec<_>>())
        .filter(|group| !group.is_empty())
        .collect();
    let order: Vec<&'static str> = groups.iter().flatten().map(|(name, ..)| *name).collect();
    let mut rounds: Vec<Vec<Measured>> = order.iter().map(|_| Vec::new()).collect();
    // A freshly started broker is slower while its JIT warms up: the first
    // measured rounds ran up to 2.5× slower than later ones.
    println!("bench: warming up the broker (one unreported run) ...");
    let warm_up = Cli { backlog: cli.backlog.min(60_000), seconds: 1, rate_high: 0, ..cli.clone() };
    let mut warm_rate = cli.decided_per_sec;
    measure_group(&warm_up, &[&("warm-up", Some("at_least_once"), None)], 0, &mut warm_rate).await;
    // Per delivery mode: the last export-off throughput measured.
    let mut decided_per_sec: Vec<f64> = groups.iter().map(|_| cli.decided_per_sec).collect();
    for round in 1..=cli.rounds {
        for (g, group) in groups.iter().enumerate() {
            let names: Vec<&str> = group.iter().map(|(name, ..)| *name).collect();
            println!("bench: round {round}/{}: measuring {} ...", cli.rounds, names.join(", "));
            for m in measure_group(cli, group, round - 1, &mut decided_per_sec[g]).await {
                let i = order.iter().position(|n| *n == m.name).unwrap();
                rounds[i].push(m);
            }
        }
    }
    rounds.sort_by_key(|r| runs.iter().position(|(name, ..)| *name == r[0].name));
    rounds.into_iter().map(median_round).collect()
}

/// The state phase, after the pipelines (so that it does not load the
/// broker while they are measured); a failure (the restored state differs,
/// a query failed) fails the bench.
async fn measure_state(cli: &Cli) -> state::StateFigures {
    match state::measure(&cli.bootstrap).await {
        Ok(figures) => figures,
        Err(error) => {
            eprintln!("bench: state phase failed: {error:#}");
            std::process::exit(1);
        }
    }
}

/// The stalled-subscriber phase; a subscriber that was not told what it
/// missed fails the bench.
async fn measure_stall() -> stall::StallFigures {
    println!("bench: state: ingest with and without a stalled WebSocket subscriber ...");
    match stall::measure().await {
        Ok(figures) => figures,
        Err(error) => {
            eprintln!("bench: stalled-subscriber phase failed: {error:#}");
            std::process::exit(1);
        }
    }
}

/// Writes the plot of the raw loop and both delivery modes (or of whatever
/// was measured when `--only` left them all out) to `--plot`; a failure is
/// reported, not fatal.
fn write_plot(cli: &Cli, all: &[Measured]) {
    let mut plotted: Vec<&Measured> = all.iter().filter(|m| PLOTTED.contains(&m.name)).collect();
    if plotted.is_empty() {
        plotted = all.iter().collect();
    }
    let raw = all.iter().find(|m| m.name == "raw-librdkafka").map(|m| m.throughput);
    let series: Vec<plot::Series> = plotted.into_iter().map(|m| plot::Series::of(m, raw)).collect();
    let title = format!(
        "shoal-bench: {} round(s), backlog {}, {} worker(s), latency at {}/s and {}/s",
        cli.rounds, cli.backlog, cli.workers, cli.rate, cli.rate_high
    );
    let rates = [report::rate_label(cli.rate), report::rate_label(cli.rate_high)];
    match plot::write(&cli.plot, &title, &series, [rates[0].as_str(), rates[1].as_str()]) {
        Ok(()) => println!("bench: plot written to {}", cli.plot.display()),
        Err(error) => eprintln!("bench: could not write the plot to {}: {error}", cli.plot.display()),
    }
}
