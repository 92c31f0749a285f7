//! The equity curve as a self-contained SVG (no fonts or scripts fetched).

use std::fmt::Write as _;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive as _;

use super::EquityPoint;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// Most points drawn; longer curves are sampled evenly (the last point
/// always kept).
const MAX_POINTS: usize = 2_000;

/// Draws `curve` with `title`, the starting cash as a dashed line.
pub fn equity_svg(curve: &[EquityPoint], cash: Decimal, title: &str) -> String {
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="22" font-size="15">{}</text>
"#,
        escape(title)
    );
    let values: Vec<f64> = curve.iter().filter_map(|p| p.equity.to_f64()).collect();
    let cash_f = cash.to_f64().unwrap_or(0.0);
    if values.len() < 2 {
        svg.push_str(r#"<text x="80" y="180">not enough points to draw</text></svg>"#);
        return svg;
    }
    let lo = values.iter().copied().fold(cash_f, f64::min);
    let hi = values.iter().copied().fold(cash_f, f64::max);
    let span = if hi - lo < 1e-9 { 1.0 } else { hi - lo };
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |i: usize| LEFT + plot_w * i as f64 / (values.len() - 1) as f64;
    let y = |v: f64| TOP + plot_h * (1.0 - (v - lo) / span);
    let step = values.len().div_ceil(MAX_POINTS).max(1);
    let mut points = String::new();
    for i in (0..values.len()).step_by(step).chain(std::iter::once(values.len() - 1)) {
        let _ = write!(points, "{:.1},{:.1} ", x(i), y(values[i]));
    }
    let (first, last) = (curve[0].at.format("%Y-%m-%d %H:%M:%S"), curve[curve.len() - 1].at.format("%H:%M:%S"));
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}" stroke="#999"/>
<line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}" stroke="#999"/>
<line x1="{LEFT}" y1="{cy:.1}" x2="{r}" y2="{cy:.1}" stroke="#bbb" stroke-dasharray="4 4"/>
<text x="{lx}" y="{ty:.1}" text-anchor="end">{hi:.2}</text>
<text x="{lx}" y="{b}" text-anchor="end">{lo:.2}</text>
<text x="{lx}" y="{cy:.1}" text-anchor="end" fill="#777">{cash_f:.2}</text>
<text x="{LEFT}" y="{tx}">{first}</text>
<text x="{r}" y="{tx}" text-anchor="end">{last} (event time)</text>
<polyline fill="none" stroke="#1f6feb" stroke-width="1.5" points="{points}"/>
</svg>
"##,
        b = TOP + plot_h,
        r = WIDTH - RIGHT,
        cy = y(cash_f),
        lx = LEFT - 6.0,
        ty = TOP + 4.0,
        tx = HEIGHT - BOTTOM + 20.0,
    );
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_is_drawn_within_the_frame() {
        let t0 = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
        let curve: Vec<EquityPoint> = (0..5000)
            .map(|i| EquityPoint { at: t0 + chrono::TimeDelta::seconds(i), equity: Decimal::from(10_000 + (i % 97)) })
            .collect();
        let svg = equity_svg(&curve, Decimal::from(10_000), "equity <test>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("equity &lt;test&gt;"));
        let points = svg.split("points=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or_default();
        let n = points.split_whitespace().count();
        assert!((2..=MAX_POINTS + 1).contains(&n), "{n} points");
        for p in points.split_whitespace() {
            let (x, y) = p.split_once(',').unwrap_or_default();
            let (x, y): (f64, f64) = (x.parse().unwrap_or(-1.0), y.parse().unwrap_or(-1.0));
            assert!((LEFT..=WIDTH - RIGHT).contains(&x) && (TOP..=HEIGHT - BOTTOM).contains(&y), "{p}");
        }
        assert!(equity_svg(&curve[..1], Decimal::ONE, "t").contains("not enough points"));
    }
}
