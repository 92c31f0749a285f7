//! The scaling run (`--scaling 1,2,4,8`): the raw loop once, then each
//! delivery mode's drain with each count of worker processes on the same
//! broker, to show where throughput stops growing with processes and why
//! (cores, broker). Written as a table, JSON and an SVG line chart.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::cli::{Cli, Run};
use super::pipeline::measure_group;

/// One point of the curve.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ScalingRow {
    pub(crate) workers: usize,
    /// `raw-librdkafka`, `at_least_once` or `exactly_once`.
    pub(crate) pipeline: &'static str,
    pub(crate) results_per_s: f64,
    pub(crate) cpu_us_per_command: f64,
    /// Over the raw loop's throughput in the same run.
    pub(crate) ratio: f64,
    /// Peak resident memory of the worker processes together, MiB.
    pub(crate) peak_rss_mib: f64,
}

/// Measures the raw loop and both delivery modes at each count of workers.
pub(crate) async fn measure(cli: &Cli, counts: &[usize]) -> Vec<ScalingRow> {
    // No latency figures here: a short, light paced phase only settles
    // the pipeline before its drain.
    let base = Cli { rate: 100, seconds: 1, rate_high: 0, ..cli.clone() };
    let mut rate = cli.decided_per_sec;
    println!("bench: scaling: warming up the broker (one unreported run) ...");
    let warm = Cli { backlog: cli.backlog.min(60_000), workers: 2, ..base.clone() };
    measure_group(&warm, &[&("warm-up", Some("at_least_once"), None)], 0, &mut rate).await;
    let raw: Run<'_> = ("raw-librdkafka", None, None);
    let raw = measure_group(&Cli { workers: 1, ..base.clone() }, &[&raw], 0, &mut rate).await.remove(0);
    let mut rows = vec![ScalingRow {
        workers: 1,
        pipeline: "raw-librdkafka",
        results_per_s: raw.throughput,
        cpu_us_per_command: raw.median_cpu_us(),
        ratio: 1.0,
        peak_rss_mib: raw.rss_mib.first().copied().unwrap_or(f64::NAN),
    }];
    for &workers in counts {
        for mode in ["at_least_once", "exactly_once"] {
            println!("bench: scaling: {workers} worker process(es), {mode} ...");
            let run: Run<'_> = ("shoal-scaling", Some(mode), None);
            let m = measure_group(&Cli { workers, ..base.clone() }, &[&run], 0, &mut rate).await.remove(0);
            rows.push(ScalingRow {
                workers,
                pipeline: mode,
                results_per_s: m.throughput,
                cpu_us_per_command: m.median_cpu_us(),
                ratio: m.throughput / raw.throughput,
                peak_rss_mib: m.rss_mib.first().copied().unwrap_or(f64::NAN),
            });
        }
    }
    rows
}

/// Prints the table and writes the JSON and the chart next to `--json`
/// (`scaling.json`, `scaling.svg`).
pub(crate) fn report(cli: &Cli, rows: &[ScalingRow]) {
    println!("bench: scaling (commands topic: 12 partitions; {} cores)", cores());
    println!(
        "bench:   {:>7}  {:<15} {:>10} {:>7} {:>12} {:>9}",
        "workers", "pipeline", "results/s", "ratio", "CPU µs/cmd", "RSS MiB"
    );
    for r in rows {
        println!(
            "bench:   {:>7}  {:<15} {:>10.0} {:>7.2} {:>12.1} {:>9.0}",
            r.workers, r.pipeline, r.results_per_s, r.ratio, r.cpu_us_per_command, r.peak_rss_mib
        );
    }
    let dir = cli.json.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let json = dir.join("scaling.json");
    let svg = dir.join("scaling.svg");
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&json, format!("{:#}\n", serde_json::json!({ "scaling": rows }))))
        .and_then(|()| std::fs::write(&svg, chart(rows)));
    match written {
        Ok(()) => println!("bench: scaling written to {} and {}", json.display(), svg.display()),
        Err(error) => eprintln!("bench: could not write the scaling figures to {}: {error}", dir.display()),
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Throughput against worker processes: one line per delivery mode, the raw
/// loop as a dashed level.
fn chart(rows: &[ScalingRow]) -> String {
    let (width, height, left, right, top, bottom) = (640.0, 360.0, 70.0, 150.0, 40.0, 50.0);
    let max_workers = rows.iter().map(|r| r.workers).max().unwrap_or(1).max(2) as f64;
    let max_y = rows.iter().map(|r| r.results_per_s).fold(0.0, f64::max).max(1.0) * 1.1;
    let x = |w: f64| left + (w.log2() / max_workers.log2()) * (width - left - right);
    let y = |v: f64| height - bottom - v / max_y * (height - top - bottom);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">Throughput against worker processes ({} cores)</text>"#,
        (width - right + left) / 2.0,
        cores()
    );
    let (x0, x1, y0, y1) = (left, width - right, height - bottom, top);
    let _ = write!(out, r#"<path d="M{x0},{y1} V{y0} H{x1}" stroke="black" fill="none"/>"#);
    for tick in 0..=4 {
        let v = max_y * f64::from(tick) / 4.0;
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" text-anchor="end">{3:.0}k</text><line x1="{x0}" x2="{x1}" y1="{2}" y2="{2}" stroke="#ddd"/>"##,
            x0 - 6.0,
            y(v) + 4.0,
            y(v),
            v / 1000.0
        );
    }
    let mut counts: Vec<usize> = rows.iter().filter(|r| r.pipeline != "raw-librdkafka").map(|r| r.workers).collect();
    counts.dedup();
    for w in &counts {
        let _ = write!(out, r#"<text x="{}" y="{}" text-anchor="middle">{w}</text>"#, x(*w as f64), y0 + 18.0);
    }
    let _ =
        write!(out, r#"<text x="{}" y="{}" text-anchor="middle">worker processes</text>"#, (x0 + x1) / 2.0, y0 + 38.0);
    let _ = write!(
        out,
        r#"<text x="16" y="{}" transform="rotate(-90 16 {0})" text-anchor="middle">results/s</text>"#,
        (y0 + y1) / 2.0
    );
    let series = [("raw-librdkafka", "#555"), ("at_least_once", "#1f77b4"), ("exactly_once", "#d62728")];
    for (i, (name, colour)) in series.iter().enumerate() {
        let points: Vec<(f64, f64)> =
            rows.iter().filter(|r| r.pipeline == *name).map(|r| (r.workers as f64, r.results_per_s)).collect();
        let path: String = if *name == "raw-librdkafka" {
            points.first().map_or(String::new(), |&(_, v)| format!("M{x0},{} H{x1}", y(v)))
        } else {
            points
                .iter()
                .enumerate()
                .map(|(k, &(w, v))| format!("{}{},{} ", if k == 0 { "M" } else { "L" }, x(w), y(v)))
                .collect()
        };
        let dash = if *name == "raw-librdkafka" { r#" stroke-dasharray="6 4""# } else { "" };
        let _ = write!(out, r#"<path d="{path}" stroke="{colour}" stroke-width="2" fill="none"{dash}/>"#);
        for &(w, v) in points.iter().filter(|_| *name != "raw-librdkafka") {
            let _ = write!(out, r#"<circle cx="{}" cy="{}" r="3" fill="{colour}"/>"#, x(w), y(v));
        }
        let ly = top + 20.0 * i as f64;
        let _ = write!(
            out,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            x1 + 12.0,
            x1 + 32.0,
            x1 + 38.0,
            ly + 4.0,
            match *name {
                "raw-librdkafka" => "raw loop (1 process)",
                "at_least_once" => "at-least-once",
                _ => "exactly-once",
            }
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_draws_a_line_per_mode_and_the_raw_level() {
        let row = |workers, pipeline, results_per_s| ScalingRow {
            workers,
            pipeline,
            results_per_s,
            cpu_us_per_command: 10.0,
            ratio: 0.5,
            peak_rss_mib: 40.0,
        };
        let rows = [
            row(1, "raw-librdkafka", 100_000.0),
            row(1, "at_least_once", 20_000.0),
            row(1, "exactly_once", 25_000.0),
            row(2, "at_least_once", 35_000.0),
            row(2, "exactly_once", 40_000.0),
        ];
        let svg = chart(&rows);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<circle").count(), 4, "one point per measured pipeline");
        assert_eq!(svg.matches("stroke-dasharray").count(), 2, "the raw level and its legend");
        assert!(!svg.contains("NaN"));
    }
}
