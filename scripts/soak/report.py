#!/usr/bin/env python3
"""The soak test's report and plot (run by scripts/soak.sh; stdlib only).

Reads OUT/soak.csv (scripts/soak/sample.py), OUT/events.csv and
OUT/outcomes.jsonl, prints:

- per process incarnation (a pid: a restart starts a new one), its resident
  memory after the warm-up: the median of its first minute after the warm-up
  (the warm-up counts from the run's start, or from a restart's), the median
  of its last minute, the growth between them in percent, the least-squares
  slope in MiB/hour, and its open file descriptors at the same two points;
- consumer lag per stage: the largest after the warm-up, and the smallest
  and largest of the final window (no faults are injected then);
- end-to-end latency of the recorded outcomes (end_to_end_ms) per window;
- one summary line, "soak: minutes=... verdict=flat|growing|lagging|failed";

writes OUT/soak.svg (memory, descriptors, lag, latency over time, faults
marked), and exits 1 when a Shoal process grew by more than
--max-rss-growth percent after its warm-up, when the lag of a stage did not
come down to --lag-limit in the final window, or when a process exited on
its own (OUT/events.csv: unexpected_exit).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

STAGES = ("worker", "decisions", "results")
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
# Processes whose memory decides the verdict (the simulator is test tooling).
SHOAL = re.compile(r"^(orchestrator|worker-\d+)$")


def num(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.nan


def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def fmt(value: float, digits: int = 0) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


@dataclass
class Incarnation:
    name: str
    pid: int
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # (t_s, rss_kb, fds)

    @property
    def start(self) -> float:
        return self.samples[0][0]

    @property
    def end(self) -> float:
        return self.samples[-1][0]


@dataclass
class Growth:
    inc: Incarnation
    measured_from: float
    base_kb: float = math.nan
    end_kb: float = math.nan
    growth_pct: float = math.nan
    slope_mib_h: float = math.nan
    fds_base: float = math.nan
    fds_end: float = math.nan
    note: str = ""


def load(out: Path) -> tuple[list[dict], list[str], list[dict]]:
    with (out / "soak.csv").open() as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        header = reader.fieldnames or []
    names = [h[: -len("_pid")] for h in header if h.endswith("_pid")]
    events: list[dict] = []
    if (out / "events.csv").exists():
        with (out / "events.csv").open() as fh:
            events = list(csv.DictReader(fh))
    return rows, names, events


def incarnations(rows: list[dict], names: list[str]) -> list[Incarnation]:
    out: dict[tuple[str, int], Incarnation] = {}
    for r in rows:
        t = num(r["t_s"])
        for name in names:
            pid, rss = r[f"{name}_pid"], num(r[f"{name}_rss_kb"])
            if not pid or math.isnan(rss):
                continue
            key = (name, int(pid))
            out.setdefault(key, Incarnation(name, int(pid))).samples.append((t, rss, num(r[f"{name}_fds"])))
    return list(out.values())


def growth(inc: Incarnation, first_t: float, warmup: float, edge: float, min_span: float) -> Growth:
    # A process that was running at the first sample warms up with the run; a
    # restarted one from its own start.
    measured_from = warmup if inc.start <= first_t else inc.start + warmup
    g = Growth(inc, measured_from)
    kept = [s for s in inc.samples if s[0] >= measured_from]
    if not kept or kept[-1][0] - kept[0][0] < min_span:
        lived = (inc.end - inc.start) / 60
        g.note = f"not measured: lived {lived:.1f} min, {max(0.0, (kept[-1][0] - kept[0][0]) / 60) if kept else 0:.1f} of them after its warm-up"
        return g
    first = [s for s in kept if s[0] <= kept[0][0] + edge]
    last = [s for s in kept if s[0] >= kept[-1][0] - edge]
    g.base_kb = statistics.median(s[1] for s in first)
    g.end_kb = statistics.median(s[1] for s in last)
    g.growth_pct = (g.end_kb - g.base_kb) / g.base_kb * 100
    g.fds_base = statistics.median(s[2] for s in first)
    g.fds_end = statistics.median(s[2] for s in last)
    ts, rs = [s[0] for s in kept], [s[1] for s in kept]
    mt, mr = statistics.fmean(ts), statistics.fmean(rs)
    var = sum((t - mt) ** 2 for t in ts)
    if var > 0:
        g.slope_mib_h = sum((t - mt) * (r - mr) for t, r in zip(ts, rs)) / var * 3600 / 1024
    return g


def parse_time(text: str) -> float:
    # chrono writes up to nine decimals; fromisoformat takes six.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def outcomes(out: Path, start_unix: float) -> list[tuple[float, float, str]]:
    """(t_s, end_to_end_ms, status) of every recorded outcome."""
    path = out / "outcomes.jsonl"
    result = []
    if not path.exists():
        return result
    for line in path.read_text().splitlines():
        try:
            o = json.loads(line)
            result.append((parse_time(o["recorded_at"]) - start_unix, float(o["end_to_end_ms"]), o.get("status", "")))
        except (ValueError, KeyError):
            continue
    return result


# ---------------------------------------------------------------------------
# Plot: a self-contained SVG drawn by hand, as tools/src/bench/plot.rs draws
# the benchmark's.
# ---------------------------------------------------------------------------

WIDTH, LEFT, RIGHT = 960.0, 80.0, 800.0
PANEL_H, GAP, TOP0 = 150.0, 60.0, 70.0


def esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def nice_ceiling(v: float) -> float:
    if not v or v <= 0 or math.isnan(v):
        return 1.0
    scale = 10 ** math.floor(math.log10(v))
    return next((m * scale for m in (1, 2, 2.5, 5, 10) if m * scale >= v), 10 * scale)


def text(out: list[str], x: float, y: float, anchor: str, size: int, content: str) -> None:
    out.append(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}">{esc(content)}</text>')


def plot(path: Path, title: str, duration: float, warmup: float, events: list[dict],
         panels: list[tuple[str, list[tuple[str, list[list[tuple[float, float]]]]]]]) -> None:
    height = TOP0 + len(panels) * (PANEL_H + GAP) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {WIDTH:.0f} {height:.0f}" font-family="sans-serif" font-size="12">',
           f'<rect width="{WIDTH:.0f}" height="{height:.0f}" fill="white"/>']
    text(out, WIDTH / 2, 24, "middle", 16, title)
    text(out, WIDTH / 2, 42, "middle", 11, "grey: warm-up; red lines: worker SIGKILLed and restarted; blue lines: orchestrator SIGTERMed and restarted")
    x_end = max(duration, 1.0)

    def x(t: float) -> float:
        return LEFT + (RIGHT - LEFT) * min(max(t, 0.0), x_end) / x_end

    for i, (ptitle, series) in enumerate(panels):
        top = TOP0 + i * (PANEL_H + GAP) + 20
        bottom = top + PANEL_H
        values = [v for _, segs in series for seg in segs for _, v in seg if not math.isnan(v)]
        vmax = nice_ceiling(1.1 * max(values, default=0))

        def y(v: float) -> float:
            return bottom - (bottom - top) * min(max(v / vmax, 0.0), 1.0)

        text(out, LEFT, top - 8, "start", 13, ptitle)
        out.append(f'<rect x="{LEFT:.1f}" y="{top:.1f}" width="{x(warmup) - LEFT:.1f}" height="{PANEL_H:.1f}" fill="#eeeeee"/>')
        for k in range(6):
            v = vmax * k / 5
            out.append(f'<path d="M{LEFT - 4} {y(v):.1f}H{RIGHT}" stroke="#dddddd"/>')
            text(out, LEFT - 8, y(v) + 4, "end", 10, f"{v:g}")
        for e in events:
            colour = "#d62728" if e["event"] == "kill_worker" else "#1f77b4" if e["event"] == "restart_orchestrator" else None
            if colour:
                xe = x(num(e["t_s"]))
                out.append(f'<path d="M{xe:.1f} {top:.1f}V{bottom:.1f}" stroke="{colour}" stroke-opacity="0.5" stroke-dasharray="3,3"/>')
        out.append(f'<path d="M{LEFT} {top}V{bottom}H{RIGHT}" stroke="black" fill="none"/>')
        for m in range(0, int(x_end // 60) + 1, max(1, int(x_end // 60) // 10 or 1)):
            text(out, x(m * 60), bottom + 14, "middle", 10, f"{m}")
        text(out, RIGHT, bottom + 28, "end", 10, "minutes")
        for j, (label, segs) in enumerate(series):
            colour = COLOURS[j % len(COLOURS)]
            out.append(f'<g class="series" data-name="{esc(label)}">')
            for seg in segs:
                pts = [(t, v) for t, v in seg if not math.isnan(v)]
                if len(pts) == 1:
                    out.append(f'<circle cx="{x(pts[0][0]):.1f}" cy="{y(pts[0][1]):.1f}" r="1.5" fill="{colour}"/>')
                elif pts:
                    d = "M" + "L".join(f"{x(t):.1f} {y(v):.1f}" for t, v in pts)
                    out.append(f'<path d="{d}" stroke="{colour}" stroke-width="1.3" fill="none"/>')
            out.append("</g>")
            ly = top + 12 + 15 * j
            out.append(f'<rect x="{RIGHT + 14}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>')
            text(out, RIGHT + 28, ly, "start", 11, label)
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--warmup-min", type=float, default=5.0)
    ap.add_argument("--window-min", type=float, default=5.0, help="latency and lag windows (minutes)")
    ap.add_argument("--max-rss-growth", type=float, default=10.0, help="percent")
    ap.add_argument("--lag-limit", type=float, default=1000.0)
    ap.add_argument("--final-secs", type=float, default=120.0, help="the final window, without faults")
    ap.add_argument("--min-span-min", type=float, default=2.0, help="least time after its warm-up for a growth figure")
    ap.add_argument("--interrupted", action="store_true", help="the run was cut short: the verdict is 'failed'")
    args = ap.parse_args()

    rows, names, events = load(args.out)
    if len(rows) < 2:
        print("soak: too few samples to report")
        return 1
    start_unix = num(rows[0]["unix_s"]) - num(rows[0]["t_s"])
    duration = num(rows[-1]["t_s"])
    warmup = args.warmup_min * 60
    failures: list[str] = []

    # Memory and descriptors.
    print(f"\nresident memory (VmRSS) and open fds per process, after a {args.warmup_min:g}-minute warm-up "
          f"(median of the first and of the last minute measured):")
    print(f"  {'process':<13} {'pid':>7} {'measured (min)':>15} {'RSS MiB':>16} {'growth':>8} {'slope MiB/h':>12} {'fds':>9}")
    growths = []
    for inc in sorted(incarnations(rows, names), key=lambda i: (names.index(i.name), i.start)):
        g = growth(inc, num(rows[0]["t_s"]), warmup, 60.0, args.min_span_min * 60)
        growths.append(g)
        if g.note:
            print(f"  {inc.name:<13} {inc.pid:>7} {'':>15} {g.note}")
            continue
        span = f"{g.measured_from / 60:.1f}-{inc.end / 60:.1f}"
        print(f"  {inc.name:<13} {inc.pid:>7} {span:>15} {g.base_kb / 1024:>7.1f} -> {g.end_kb / 1024:>5.1f} "
              f"{g.growth_pct:>+7.1f}% {g.slope_mib_h:>+12.2f} {g.fds_base:>4.0f}->{g.fds_end:<4.0f}")
    measured = [g for g in growths if not g.note and SHOAL.match(g.inc.name)]
    worst = max(measured, key=lambda g: g.growth_pct, default=None)
    fd_growth = max((g.fds_end - g.fds_base for g in measured), default=math.nan)
    unmeasured = [n for n in names if SHOAL.match(n) and not any(g.inc.name == n for g in measured)]
    if not measured:
        failures.append("no Shoal process lived long enough after its warm-up to measure its memory")
    elif worst.growth_pct > args.max_rss_growth:
        failures.append(f"{worst.inc.name} (pid {worst.inc.pid}) grew {worst.growth_pct:.1f}% after its warm-up (limit {args.max_rss_growth:g}%)")

    # Lag.
    print(f"\nconsumer lag (sum over the partitions the live members report), per {args.window_min:g}-minute window:")
    win = args.window_min * 60
    n_windows = max(1, math.ceil(duration / win))
    print(f"  {'window (min)':<14}" + "".join(f"{s + ' max':>15}" for s in STAGES) + f"{'pending max':>13}")
    for w in range(n_windows):
        lo, hi = w * win, (w + 1) * win
        sel = [r for r in rows if lo <= num(r["t_s"]) < hi]
        cells = [max((num(r[f"lag_{s}"]) for r in sel if r[f"lag_{s}"]), default=math.nan) for s in STAGES]
        pend = max((num(r["pending"]) for r in sel if r["pending"]), default=math.nan)
        print(f"  {f'{lo / 60:.0f}-{min(hi, duration) / 60:.0f}':<14}" + "".join(f"{fmt(c):>15}" for c in cells) + f"{fmt(pend):>13}")
    after = [r for r in rows if num(r["t_s"]) >= warmup]
    lag_max = max((num(r[f"lag_{s}"]) for r in after for s in STAGES if r[f"lag_{s}"]), default=math.nan)
    lag_max_stage = max(STAGES, key=lambda s: max((num(r[f"lag_{s}"]) for r in after if r[f"lag_{s}"]), default=-1))
    final = [r for r in rows if num(r["t_s"]) >= duration - args.final_secs]
    final_min = {}
    for s in STAGES:
        vals = [num(r[f"lag_{s}"]) for r in final if r[f"lag_{s}"]]
        final_min[s] = min(vals) if vals else math.nan
        if not vals:
            failures.append(f"no {s} lag reported in the final {args.final_secs:g} s")
        elif min(vals) > args.lag_limit:
            failures.append(f"{s} lag stayed above {args.lag_limit:g} through the final {args.final_secs:g} s (lowest {min(vals):.0f}): unbounded")
    print(f"  final {args.final_secs:g} s, lowest: " + ", ".join(f"{s} {fmt(v)}" for s, v in final_min.items()))
    ents = [(num(r["t_s"]), num(r["state_entities"])) for r in rows if r.get("state_entities")]
    if ents:
        print("orchestrator's derived state (shoal_state_entities, all stages): "
              + ", ".join(f"{v:.0f} at {t / 60:.0f} min" for t, v in ents[:: max(1, len(ents) // 6)]) + f", {ents[-1][1]:.0f} at the end")

    # Latency.
    outs = outcomes(args.out, start_unix)
    print(f"\nend-to-end latency of the recorded outcomes (issued -> recorded, ms), per {args.window_min:g}-minute window:")
    print(f"  {'window (min)':<14}{'outcomes':>10}{'p50':>8}{'p99':>8}{'max':>8}{'not succeeded':>15}")
    for w in range(n_windows):
        lo, hi = w * win, (w + 1) * win
        sel = [o for o in outs if lo <= o[0] < hi]
        ms = [o[1] for o in sel]
        bad = sum(1 for o in sel if o[2] != "succeeded")
        print(f"  {f'{lo / 60:.0f}-{min(hi, duration) / 60:.0f}':<14}{len(sel):>10}{fmt(percentile(ms, 50)):>8}"
              f"{fmt(percentile(ms, 99)):>8}{fmt(max(ms) if ms else math.nan):>8}{bad:>15}")
    steady = [o[1] for o in outs if o[0] >= warmup]
    p50, p99 = percentile(steady, 50), percentile(steady, 99)
    if not steady:
        failures.append("no outcome recorded after the warm-up")

    # Faults and exits.
    kinds = [e["event"] for e in events]
    unexpected = [e for e in events if e["event"] == "unexpected_exit"]
    for e in unexpected:
        failures.append(f"{e['process']} exited on its own at {num(e['t_s']) / 60:.1f} min ({e['detail']})")
    print(f"\nfaults: {kinds.count('kill_worker')} worker SIGKILLs, {kinds.count('restart_orchestrator')} orchestrator restarts, "
          f"{len(unexpected)} unexpected exits; {len(outs)} outcomes recorded, "
          f"{sum(1 for o in outs if o[2] != 'succeeded')} not succeeded")
    for e in events:
        if e["event"] == "restart_orchestrator":
            print(f"  {num(e['t_s']) / 60:5.1f} min  orchestrator: {e['detail']}")

    if args.interrupted:
        failures.append("interrupted before the planned duration")
    if any("grew" in f for f in failures):
        verdict = "growing"
    elif any("unbounded" in f for f in failures):
        verdict = "lagging"
    elif failures:
        verdict = "failed"
    else:
        verdict = "flat"

    # Plot.
    mem_series, fd_series = [], []
    for name in names:
        incs = [i for i in incarnations(rows, names) if i.name == name]
        mem_series.append((name, [[(t, r / 1024) for t, r, _ in i.samples] for i in incs]))
        fd_series.append((name, [[(t, f) for t, _, f in i.samples] for i in incs]))
    lag_series = [(s, [[(num(r["t_s"]), num(r[f"lag_{s}"]) if r[f"lag_{s}"] else math.nan) for r in rows]]) for s in STAGES]
    minute_lat = []
    for m in range(math.ceil(duration / 60)):
        ms = [o[1] for o in outs if m * 60 <= o[0] < (m + 1) * 60]
        minute_lat.append((m * 60 + 30, percentile(ms, 50), percentile(ms, 99)))
    lat_series = [("p50", [[(t, a) for t, a, _ in minute_lat]]), ("p99", [[(t, b) for t, _, b in minute_lat]])]
    svg = args.out / "soak.svg"
    plot(svg, f"Shoal soak: {duration / 60:.0f} minutes, {len(names) - 2} workers, verdict {verdict}", duration, warmup, events, [
        ("resident memory (MiB), per process; a restart starts a new line", mem_series),
        ("open file descriptors, per process", fd_series),
        ("consumer lag (messages), per stage", lag_series),
        ("end-to-end latency (ms), per minute", lat_series),
    ])

    print()
    if unmeasured:
        print(f"soak: NOTE not judged, no incarnation lived {args.min_span_min:g} min past its warm-up: {', '.join(unmeasured)}")
    for f in failures:
        print(f"soak: FAIL {f}")
    print(f"plot: {svg}   data: {args.out / 'soak.csv'}")
    who = f" ({worst.inc.name})" if worst else ""
    print(f"soak: minutes={duration / 60:.0f} rss_growth_max={fmt(worst.growth_pct if worst else math.nan, 1)}%{who} "
          f"lag_max={fmt(lag_max)} ({lag_max_stage}) fd_growth={fmt(fd_growth)} p50_ms={fmt(p50)} p99_ms={fmt(p99)} "
          f"outcomes={len(outs)} verdict={verdict}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
