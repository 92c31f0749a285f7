//! What the bench prints once every round is measured.

use super::cli::Cli;
use super::stats::{Measured, median, paired_ratio, percentile, ratio_interval, round_ratios};

fn find<'a>(all: &'a [Measured], name: &str) -> Option<&'a Measured> {
    all.iter().find(|m| m.name == name)
}

/// Per delivery mode, each export-on run and the control against the
/// export-off run: the median of per-round ratios, their geometric mean
/// with its interval, and each round's.
fn ratio_lines(all: &[Measured]) {
    for mode in ["at-least-once", "exactly-once"] {
        let Some(off) = find(all, &format!("shoal-{mode}")) else { continue };
        for suffix in ["otlp", "otlp10", "otlp-all", "control"] {
            let Some(on) = find(all, &format!("shoal-{mode}-{suffix}")) else { continue };
            let ratios = round_ratios(on, off);
            let interval = ratio_interval(&ratios).map_or(String::new(), |(geo, lo, hi)| {
                format!("geometric mean {geo:.2}, 95% interval {lo:.2}-{hi:.2}; ")
            });
            let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
            println!(
                "bench: {mode} {suffix} / off throughput (median of per-round ratios) = {:.2} \
                 ({interval}per round: {})",
                median(ratios.clone()),
                each.join(" ")
            );
        }
    }
}

/// The raw loop's p99 at the high rate with librdkafka's defaults and with
/// the latency settings, when both were measured.
fn raw_latency_line(all: &[Measured], cli: &Cli) {
    let (Some(defaults), Some(latency)) = (find(all, "raw-librdkafka"), find(all, super::raw::LATENCY_RUN)) else {
        return;
    };
    let p99 = |m: &Measured| percentile(&m.latencies_high_ms, 99.0);
    println!(
        "bench: raw loop p99 at {}: {:.1} ms with librdkafka's defaults (linger 5 ms, fetch wait 500 ms), \
         {:.1} ms with the latency settings (linger 0, fetch wait 1 ms): ratio {:.2}",
        rate_label(cli.rate_high),
        p99(defaults),
        p99(latency),
        p99(latency) / p99(defaults),
    );
}

/// The report of a run that measured only some of the pipelines (`--only`).
pub(crate) fn partial(all: &[Measured], cli: &Cli, spans: u64) {
    for m in all {
        let l = &m.latencies_ms;
        println!(
            "bench: {} results/s={:.0} cpu_us_per_command={:.1} p50_ms={:.1} p99_ms={:.1}",
            m.name,
            m.throughput,
            m.median_cpu_us(),
            percentile(l, 50.0),
            percentile(l, 99.0)
        );
    }
    ratio_lines(all);
    raw_latency_line(all, cli);
    println!("bench: {spans} spans received by the OTLP receiver");
}

/// The table of every pipeline, against the raw loop's throughput `raw`.
fn table(all: &[Measured], raw: f64, cli: &Cli) {
    println!(
        "{:<28} {:>10} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8}  rounds (results/s)",
        "pipeline",
        "results/s",
        "vs raw",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "CPU µs",
        format!("p50@{}", rate_label(cli.rate_high)),
        format!("p99@{}", rate_label(cli.rate_high)),
        "RSS MiB"
    );
    for m in all {
        let l = &m.latencies_ms;
        let cpu =
            if m.cpu_us.iter().all(|c| *c == 0.0) { "-".to_string() } else { format!("{:.1}", m.median_cpu_us()) };
        let rounds: Vec<String> = m.rounds.iter().map(|t| format!("{t:.0}")).collect();
        let h = &m.latencies_high_ms;
        println!(
            "{:<28} {:>10.0} {:>7.2} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8} {:>9.1} {:>9.1} {:>8.0}  {}",
            m.name,
            m.throughput,
            m.throughput / raw,
            percentile(l, 50.0),
            percentile(l, 90.0),
            percentile(l, 99.0),
            l.last().copied().unwrap_or(f64::NAN),
            cpu,
            percentile(h, 50.0),
            percentile(h, 99.0),
            median(m.rss_mib.clone()),
            rounds.join(" ")
        );
    }
}

/// `10000` → `10k/s`, `500` → `500/s`.
pub(crate) fn rate_label(rate: usize) -> String {
    if rate >= 1000 && rate.is_multiple_of(1000) { format!("{}k/s", rate / 1000) } else { format!("{rate}/s") }
}

/// The figures of the bench's last line.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Summary {
    pub(crate) eos_cmds_per_s: f64,
    pub(crate) alo_cmds_per_s: f64,
    pub(crate) raw_msgs_per_s: f64,
    pub(crate) eos_ratio: f64,
    pub(crate) alo_ratio: f64,
    pub(crate) cpu_ratio_eos: f64,
    pub(crate) cpu_ratio_alo: f64,
    pub(crate) p99_ms_raw_10k: f64,
    pub(crate) p99_ms_alo_10k: f64,
    pub(crate) p99_ms_eos_10k: f64,
    pub(crate) e2e_p99_ms: f64,
    /// The raw loop's p99 at the high rate with the latency settings over
    /// its p99 with librdkafka's defaults (in the JSON, not the line).
    pub(crate) raw_p99_10k_latency_over_defaults: f64,
}

impl Summary {
    /// The summary of every pipeline measured (`all`, complete), and the
    /// full pipeline's end-to-end p99 (NaN when not measured).
    pub(crate) fn of(all: &[Measured], e2e_p99_ms: f64) -> Self {
        let run = |n: &str| find(all, n).expect("every run measured");
        let (raw, alo, eos) = (run("raw-librdkafka"), run("shoal-at-least-once"), run("shoal-exactly-once"));
        let p99_high = |m: &Measured| percentile(&m.latencies_high_ms, 99.0);
        Self {
            eos_cmds_per_s: eos.throughput,
            alo_cmds_per_s: alo.throughput,
            raw_msgs_per_s: raw.throughput,
            eos_ratio: eos.throughput / raw.throughput,
            alo_ratio: alo.throughput / raw.throughput,
            cpu_ratio_eos: eos.median_cpu_us() / raw.median_cpu_us(),
            cpu_ratio_alo: alo.median_cpu_us() / raw.median_cpu_us(),
            p99_ms_raw_10k: p99_high(raw),
            p99_ms_alo_10k: p99_high(alo),
            p99_ms_eos_10k: p99_high(eos),
            e2e_p99_ms,
            raw_p99_10k_latency_over_defaults: p99_high(run(super::raw::LATENCY_RUN)) / p99_high(raw),
        }
    }

    /// The bench's last line.
    pub(crate) fn line(&self) -> String {
        format!(
            "bench: eos_cmds_per_s={:.0} alo_cmds_per_s={:.0} raw_msgs_per_s={:.0} eos_ratio={:.2} alo_ratio={:.2} \
             cpu_ratio_eos={:.2} cpu_ratio_alo={:.2} p99_ms_raw_10k={:.1} p99_ms_alo_10k={:.1} p99_ms_eos_10k={:.1} \
             e2e_p99_ms={:.1}",
            self.eos_cmds_per_s,
            self.alo_cmds_per_s,
            self.raw_msgs_per_s,
            self.eos_ratio,
            self.alo_ratio,
            self.cpu_ratio_eos,
            self.cpu_ratio_alo,
            self.p99_ms_raw_10k,
            self.p99_ms_alo_10k,
            self.p99_ms_eos_10k,
            self.e2e_p99_ms
        )
    }
}

/// The report of a run that measured every pipeline.
pub(crate) fn full(all: &[Measured], cli: &Cli, spans: u64) {
    let run = |n: &str| find(all, n).expect("every run measured");
    let paired = |suffix: &str| {
        let ratio = |mode: &str| paired_ratio(run(&format!("shoal-{mode}-{suffix}")), run(&format!("shoal-{mode}")));
        (ratio("at-least-once"), ratio("exactly-once"))
    };
    let raw = run("raw-librdkafka").throughput;
    table(all, raw, cli);
    let (alo, eos) = (run("shoal-at-least-once").throughput, run("shoal-exactly-once").throughput);
    println!("bench: exactly-once / at-least-once throughput = {:.2}", eos / alo);
    let (a, e) = paired("otlp");
    println!(
        "bench: OTLP export on / off throughput (median of per-round ratios), default sampling \
         (every decision, at most {} traced a second): at-least-once = {a:.2}, exactly-once = {e:.2}",
        shoal_kafka::trace::DEFAULT_MAX_TRACED_PER_SEC,
    );
    let (a, e) = paired("otlp10");
    println!(
        "bench: OTLP export on / off throughput (median of per-round ratios), {:.0}% of decisions traced: \
         at-least-once = {a:.2}, exactly-once = {e:.2}",
        cli.sampled_ratio * 100.0,
    );
    let (a, e) = paired("otlp-all");
    println!(
        "bench: OTLP export on / off throughput (median of per-round ratios), every decision traced (no cap): \
         at-least-once = {a:.2}, exactly-once = {e:.2}",
    );
    let (a, e) = paired("control");
    println!(
        "bench: export off / off again (controls: two identical pipelines, median of per-round ratios): \
         at-least-once = {a:.2}, exactly-once = {e:.2}",
    );
    ratio_lines(all);
    raw_latency_line(all, cli);
    println!("bench: {spans} spans received by the OTLP receiver");
    for m in [run("raw-librdkafka"), run("shoal-at-least-once"), run("shoal-exactly-once")] {
        let (l, h) = (&m.latencies_ms, &m.latencies_high_ms);
        println!(
            "bench: {} latency p50/p99 ms: {:.1}/{:.1} at {}, {:.1}/{:.1} at {}; peak RSS {:.0} MiB",
            m.name,
            percentile(l, 50.0),
            percentile(l, 99.0),
            rate_label(cli.rate),
            percentile(h, 50.0),
            percentile(h, 99.0),
            rate_label(cli.rate_high),
            median(m.rss_mib.clone())
        );
    }
}
