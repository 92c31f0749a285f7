//! The plot the bench writes: a self-contained SVG, drawn by hand (no
//! plotting dependency). Left, each pipeline's throughput: a bar at the
//! median of its rounds, a whisker over the 95% interval of their geometric
//! mean, a dot per round, and its ratio to the raw loop. Right, its
//! latency percentiles at the paced rate and at the loaded rate.

use std::fmt::Write as _;
use std::path::Path;

use super::stats::{Measured, percentile, ratio_interval};

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 460.0;
const TOP: f64 = 80.0;
const BOTTOM: f64 = 380.0;
/// Left and right edges of the two panels' plotting areas.
const PANELS: [(f64, f64); 2] = [(80.0, 440.0), (560.0, 940.0)];
const COLOURS: [&str; 6] = ["#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"];
/// The latency groups: percentile, and which paced phase (0: `--rate`,
/// 1: `--rate-high`).
const PERCENTILES: [(&str, f64, usize); 4] = [("p50", 50.0, 0), ("p99", 99.0, 0), ("p50", 50.0, 1), ("p99", 99.0, 1)];

/// One pipeline as plotted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub(crate) name: String,
    /// Median throughput over rounds, results/s.
    pub(crate) throughput: f64,
    /// Each round's throughput.
    pub(crate) rounds: Vec<f64>,
    /// 95% interval of the rounds' geometric mean (two rounds or more).
    pub(crate) interval: Option<(f64, f64)>,
    /// Latency percentiles in ms, as [`PERCENTILES`]; NaN when none measured.
    pub(crate) latency_ms: [f64; 4],
    /// Throughput over the raw loop's, when it was measured.
    pub(crate) ratio: Option<f64>,
}

impl Series {
    /// `m` as plotted; `raw` the raw loop's throughput, when measured.
    pub(crate) fn of(m: &Measured, raw: Option<f64>) -> Self {
        Self {
            name: m.name.to_string(),
            throughput: m.throughput,
            rounds: m.rounds.clone(),
            interval: ratio_interval(&m.rounds).map(|(_, lo, hi)| (lo, hi)),
            latency_ms: PERCENTILES
                .map(|(_, p, phase)| percentile(if phase == 0 { &m.latencies_ms } else { &m.latencies_high_ms }, p)),
            ratio: raw.map(|raw| m.throughput / raw),
        }
    }
}

/// Writes the plot of `series` to `path`, creating its directory; `rates`
/// label the two paced phases (`500/s`, `10k/s`).
pub(crate) fn write(path: &Path, title: &str, series: &[Series], rates: [&str; 2]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, svg(title, series, rates))
}

/// The plot as an SVG document.
pub(crate) fn svg(title: &str, series: &[Series], rates: [&str; 2]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
    text(&mut out, WIDTH / 2.0, 24.0, "middle", 16, title);
    throughput_panel(&mut out, series);
    latency_panel(&mut out, series, rates);
    legend(&mut out, series);
    out.push_str("</svg>\n");
    out
}

fn throughput_panel(out: &mut String, series: &[Series]) {
    let (left, right) = PANELS[0];
    // Scaled to the measurements, not to the intervals: with few rounds an
    // interval can be ten times as wide, and runs off the top instead.
    let highest = series.iter().flat_map(|s| std::iter::once(s.throughput).chain(s.rounds.iter().copied()));
    let top = axes(out, PANELS[0], "throughput (results/s): median, 95% interval, rounds", highest);
    let slot = (right - left) / series.len().max(1) as f64;
    for (i, s) in series.iter().enumerate() {
        let centre = left + slot * (i as f64 + 0.5);
        let colour = COLOURS[i % COLOURS.len()];
        let _ = write!(out, r#"<g class="series" data-name="{}">"#, escape(&s.name));
        bar(out, centre - slot * 0.3, slot * 0.6, s.throughput, top, colour);
        if let Some(interval) = s.interval {
            whisker(out, centre, interval, top);
        }
        for r in s.rounds.iter().filter(|r| r.is_finite()) {
            let _ = write!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="black" fill-opacity="0.5"/>"#,
                centre + slot * 0.2,
                y(*r, top)
            );
        }
        out.push_str("</g>\n");
        if s.throughput.is_finite() {
            let label = match s.ratio {
                Some(r) if s.name != "raw-librdkafka" => format!("{:.0} ({r:.2}×)", s.throughput),
                _ => format!("{:.0}", s.throughput),
            };
            text(out, centre, y(s.throughput, top) - 6.0, "middle", 11, &label);
        }
        text(out, centre, BOTTOM + 16.0, "middle", 11, &s.name);
    }
}

fn latency_panel(out: &mut String, series: &[Series], rates: [&str; 2]) {
    let (left, right) = PANELS[1];
    let highest = series.iter().flat_map(|s| s.latency_ms);
    let top = axes(out, PANELS[1], "latency (ms), issue to result visible, against rate", highest);
    let group = (right - left) / PERCENTILES.len() as f64;
    let width = group * 0.8 / series.len().max(1) as f64;
    for (g, (percentile, _, phase)) in PERCENTILES.iter().enumerate() {
        let label = format!("{percentile}@{}", rates[*phase]);
        let start = left + group * (g as f64 + 0.1);
        for (i, s) in series.iter().enumerate() {
            let x = start + width * i as f64;
            let _ = write!(out, r#"<g class="latency" data-name="{}" data-percentile="{label}">"#, escape(&s.name));
            bar(out, x, width * 0.9, s.latency_ms[g], top, COLOURS[i % COLOURS.len()]);
            out.push_str("</g>\n");
            if s.latency_ms[g].is_finite() {
                text(
                    out,
                    x + width * 0.45,
                    y(s.latency_ms[g], top) - 4.0,
                    "middle",
                    9,
                    &format!("{:.0}", s.latency_ms[g]),
                );
            }
        }
        text(out, left + group * (g as f64 + 0.5), BOTTOM + 16.0, "middle", 11, &label);
    }
}

/// A vertical line from `lo` to `hi` with a cap at each end; one that runs
/// off the top of the axis has no cap there.
fn whisker(out: &mut String, x: f64, (lo, hi): (f64, f64), top: f64) {
    let (y_lo, y_hi, a, b) = (y(lo, top), y(hi, top), x - 8.0, x + 8.0);
    let cap = if hi <= top { format!("M{a} {y_hi:.1}H{b}") } else { String::new() };
    let _ = write!(out, r#"<path d="M{x} {y_lo:.1}V{y_hi:.1}M{a} {y_lo:.1}H{b}{cap}" stroke="black" fill="none"/>"#);
}

/// Each series' colour and name, in rows below the panels.
fn legend(out: &mut String, series: &[Series]) {
    let (mut x, mut row) = (PANELS[0].0, HEIGHT - 40.0);
    for (i, s) in series.iter().enumerate() {
        let width = 14.0 + 7.0 * s.name.len() as f64 + 16.0;
        if x + width > WIDTH && x > PANELS[0].0 {
            (x, row) = (PANELS[0].0, row + 16.0);
        }
        let colour = COLOURS[i % COLOURS.len()];
        let _ = writeln!(out, r#"<rect x="{x}" y="{row}" width="10" height="10" fill="{colour}"/>"#);
        text(out, x + 14.0, row + 9.0, "start", 11, &s.name);
        x += width;
    }
}

/// Draws a panel's axes and title, scaled to `values`; returns the value
/// at the top of the axis.
fn axes(out: &mut String, (left, right): (f64, f64), title: &str, values: impl Iterator<Item = f64>) -> f64 {
    // A tenth above the highest value, for its label.
    let top = nice_ceiling(1.1 * values.filter(|v| v.is_finite()).fold(0.0, f64::max));
    text(out, (left + right) / 2.0, TOP - 24.0, "middle", 13, title);
    let _ = writeln!(out, r#"<path d="M{left} {TOP}V{BOTTOM}H{right}" stroke="black" fill="none"/>"#);
    for k in 0..=5 {
        let value = top * f64::from(k) / 5.0;
        let y = y(value, top);
        let _ = writeln!(out, r##"<path d="M{} {y:.1}H{right}" stroke="#dddddd"/>"##, left - 4.0);
        text(out, left - 8.0, y + 4.0, "end", 10, &format_value(value));
    }
    top
}

fn bar(out: &mut String, x: f64, width: f64, value: f64, top: f64, colour: &str) {
    if value.is_finite() {
        let (y, height) = (y(value, top), BOTTOM - y(value, top));
        let _ = write!(out, r#"<rect x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{height:.1}" fill="{colour}"/>"#);
    }
}

fn text(out: &mut String, x: f64, y: f64, anchor: &str, size: u32, content: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" font-size="{size}">{}</text>"#,
        escape(content)
    );
}

/// The vertical position of `value` on an axis from 0 to `top`.
fn y(value: f64, top: f64) -> f64 {
    BOTTOM - (value / top).clamp(0.0, 1.0) * (BOTTOM - TOP)
}

/// The smallest 1, 2, 2.5 or 5 × 10ⁿ at or above `value` (1 for nothing).
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let scale = 10f64.powi(value.log10().floor() as i32);
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * scale).find(|v| *v >= value).unwrap_or(10.0 * scale)
}

fn format_value(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if value >= 10.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: [&str; 2] = ["500/s", "10k/s"];

    fn series(name: &str, throughput: f64, rounds: &[f64], latency_ms: [f64; 4]) -> Series {
        let interval = ratio_interval(rounds).map(|(_, lo, hi)| (lo, hi));
        Series { name: name.into(), throughput, rounds: rounds.to_vec(), interval, latency_ms, ratio: None }
    }

    /// Checks that every element opened is closed, in order, and returns the
    /// elements' names in document order.
    fn elements(svg: &str) -> Vec<String> {
        let (mut open, mut names) = (Vec::new(), Vec::new());
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("tag closed") + start;
            let tag = &rest[start + 1..end];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop().as_deref(), Some(name), "closing tag matches");
            } else {
                let name: String = tag.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
                assert_eq!(tag.matches('"').count() % 2, 0, "attributes quoted: {tag}");
                names.push(name.clone());
                if !tag.ends_with('/') {
                    open.push(name);
                }
            }
            assert!(!rest[..start].contains(['<', '>']), "text escaped");
            rest = &rest[end + 1..];
        }
        assert!(open.is_empty(), "unclosed: {open:?}");
        names
    }

    #[test]
    fn the_plot_is_well_formed_svg_with_every_series() {
        let all = [
            series("raw-librdkafka", 106_661.0, &[101_000.0, 106_661.0, 110_000.0], [1.5, 3.0, 8.0, 20.0]),
            series("shoal-at-least-once", 20_410.0, &[19_000.0, 20_410.0, 22_000.0], [170.0, 200.0, 238.0, 300.0]),
            series("shoal-exactly-once", 28_989.0, &[28_000.0, 28_989.0, 30_000.0], [169.8, 210.0, 237.7, 400.0]),
        ];
        let svg = svg("shoal-bench <test> & more", &all, RATES);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{svg}");
        assert!(svg.ends_with("</svg>\n"));
        let names = elements(&svg);
        assert_eq!(names[0], "svg");
        assert!(svg.contains("shoal-bench &lt;test&gt; &amp; more"), "title escaped");
        for s in &all {
            let throughput_bar = format!(r#"<g class="series" data-name="{}"><rect"#, s.name);
            assert!(svg.contains(&throughput_bar), "{} has a throughput bar", s.name);
            assert!(svg.contains(&format!(">{:.0}</text>", s.throughput)), "{}'s throughput labelled", s.name);
            for p in ["p50@500/s", "p99@500/s", "p50@10k/s", "p99@10k/s"] {
                let latency_bar = format!(r#"<g class="latency" data-name="{}" data-percentile="{p}"><rect"#, s.name);
                assert!(svg.contains(&latency_bar), "{} has a {p} bar", s.name);
            }
        }
        // A whisker per series (three rounds each), a dot per round.
        assert_eq!(svg.matches(r#"stroke="black" fill="none"/>"#).count(), 3 + 2, "whiskers and the two axes");
        assert_eq!(names.iter().filter(|n| *n == "circle").count(), 9);
    }

    #[test]
    fn one_round_has_no_interval_and_missing_latencies_draw_no_bar() {
        let one = series("shoal-exactly-once", 500.0, &[500.0], [f64::NAN; 4]);
        assert_eq!(one.interval, None);
        let svg = svg("one round", &[one], RATES);
        elements(&svg);
        assert_eq!(svg.matches(r#"<g class="latency""#).count(), 4);
        assert_eq!(
            svg.matches(r#"<g class="latency" data-name="shoal-exactly-once" data-percentile="p50@500/s"></g>"#)
                .count(),
            1
        );
        assert!(!svg.contains("NaN"), "{svg}");
    }

    #[test]
    fn a_wide_interval_runs_off_the_top_instead_of_squashing_the_bars() {
        // Two rounds: the t interval is ±12.7 standard errors wide.
        let all = [
            series("raw-librdkafka", 46_421.0, &[50_466.0, 42_377.0], [12.0, 17.0, 62.0, 110.0]),
            series("shoal-exactly-once", 4_637.0, &[4_637.0, 4_473.0], [178.0, 222.0, 283.0, 325.0]),
        ];
        assert!(all[0].interval.unwrap().1 > 100_000.0, "{:?}", all[0].interval);
        let svg = svg("two rounds", &all, RATES);
        elements(&svg);
        assert!(svg.contains(">100k</text>") && !svg.contains(">200k</text>"), "the axis ends at 100k: {svg}");
        let whisker = svg.lines().find(|l| l.contains(r#"data-name="raw-librdkafka""#)).unwrap();
        let path = &whisker[whisker.find("<path").unwrap()..];
        assert_eq!(path.matches('H').count(), 1, "one cap only, at the bottom: {path}");
    }

    #[test]
    fn axes_end_at_a_round_number() {
        assert_eq!(nice_ceiling(106_661.0), 200_000.0);
        assert_eq!(nice_ceiling(237.7), 250.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(5.0), 5.0);
    }

    #[test]
    fn the_plot_is_written_where_asked() {
        let dir = std::env::temp_dir().join(format!("shoal-bench-plot-{}", uuid::Uuid::new_v4()));
        let path = dir.join("nested/bench.svg");
        write(&path, "t", &[series("raw-librdkafka", 1.0, &[1.0, 1.0], [1.0; 4])], RATES).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("raw-librdkafka"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
