#!/usr/bin/env python3
"""The soak test's sampler (started by scripts/soak.sh; stdlib only).

Every --interval seconds, until SIGTERM or SIGINT, appends one row to
OUT/soak.csv:

- per process named in OUT/pids/ (one file per process, holding its current
  pid; scripts/soak.sh rewrites it on each restart): pid, resident memory
  (VmRSS of /proc/<pid>/status, kB), open file descriptors (entries of
  /proc/<pid>/fd) and threads;
- consumer lag per stage (worker, decisions, results): the sum of
  shoal_consumer_lag over the partitions each live process reports on
  /metrics (its port in OUT/ports/<name>), shoal_results_pending, and the
  entities the orchestrator's derived state holds (shoal_state_entities,
  summed over its stages);
- end-to-end latency of the outcomes the orchestrator recorded since the
  previous row (OUT/outcomes.jsonl, its end_to_end_ms): count, p50, p99, max;
- the events scripts/soak.sh logged since the previous row (OUT/events.csv).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import signal
import sys
import time
import urllib.request
from pathlib import Path

STAGES = ("worker", "decisions", "results")
LAG = re.compile(r'^shoal_consumer_lag\{[^}]*stage="(\w+)"[^}]*\}\s+(\S+)$')
PENDING = re.compile(r"^shoal_results_pending(?:\{[^}]*\})?\s+(\S+)$")
ENTITIES = re.compile(r"^shoal_state_entities(?:\{[^}]*\})?\s+(\S+)$")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def proc_stats(pid: int) -> tuple[int, int, int] | None:
    """(VmRSS kB, open fds, threads) of a live process, or None."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields.get("State", "").strip().startswith("Z"):
        return None
    rss = int(fields.get("VmRSS", "0 kB").split()[0])
    threads = int(fields.get("Threads", "0").strip())
    return rss, fds, threads


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return resp.read().decode()
    except OSError:
        return None


class Sampler:
    def __init__(self, out: Path, names: list[str], start: float) -> None:
        self.out = out
        self.names = names
        self.start = start
        self.outcomes_offset = 0
        self.outcomes_total = 0
        self.events_seen = 0
        header = ["t_s", "unix_s"]
        for name in names:
            header += [f"{name}_pid", f"{name}_rss_kb", f"{name}_fds", f"{name}_threads"]
        header += [f"lag_{s}" for s in STAGES]
        header += ["pending", "state_entities", "outcomes_total", "outcomes", "p50_ms", "p99_ms", "max_ms", "events"]
        self.header = header
        self.csv_path = out / "soak.csv"
        with self.csv_path.open("w", newline="") as fh:
            csv.writer(fh).writerow(header)

    def read_outcomes(self) -> list[float]:
        path = self.out / "outcomes.jsonl"
        if not path.exists():
            return []
        with path.open("rb") as fh:
            fh.seek(self.outcomes_offset)
            data = fh.read()
        # Only complete lines; a partial last line is read next time.
        end = data.rfind(b"\n") + 1
        self.outcomes_offset += end
        values = []
        for line in data[:end].splitlines():
            try:
                values.append(float(json.loads(line)["end_to_end_ms"]))
            except (ValueError, KeyError):
                continue
        self.outcomes_total += len(values)
        return values

    def read_events(self) -> str:
        path = self.out / "events.csv"
        if not path.exists():
            return ""
        rows = path.read_text().splitlines()[1:]
        new = rows[self.events_seen :]
        self.events_seen = len(rows)
        return "; ".join(",".join(r.split(",")[1:3]) for r in new)

    def sample(self) -> None:
        now = time.time()
        row: list[object] = [f"{now - self.start:.1f}", f"{now:.1f}"]
        lag = {s: None for s in STAGES}
        pending = None
        entities = None
        for name in self.names:
            pid_file = self.out / "pids" / name
            pid = int(pid_file.read_text().strip() or 0) if pid_file.exists() else 0
            stats = proc_stats(pid) if pid else None
            row += [pid or "", *(stats if stats else ("", "", ""))]
            port_file = self.out / "ports" / name
            if stats and port_file.exists():
                text = scrape(int(port_file.read_text()))
                for line in (text or "").splitlines():
                    m = LAG.match(line)
                    if m and m.group(1) in lag:
                        lag[m.group(1)] = (lag[m.group(1)] or 0) + float(m.group(2))
                    m = PENDING.match(line)
                    if m:
                        pending = float(m.group(1))
                    m = ENTITIES.match(line)
                    if m:
                        entities = (entities or 0) + float(m.group(1))
        row += ["" if lag[s] is None else f"{lag[s]:.0f}" for s in STAGES]
        row.append("" if pending is None else f"{pending:.0f}")
        row.append("" if entities is None else f"{entities:.0f}")
        values = self.read_outcomes()
        fmt = lambda v: "" if math.isnan(v) else f"{v:.0f}"  # noqa: E731
        row += [self.outcomes_total, len(values), fmt(percentile(values, 50)), fmt(percentile(values, 99)),
                fmt(max(values) if values else math.nan), self.read_events()]
        with self.csv_path.open("a", newline="") as fh:
            csv.writer(fh).writerow(row)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--start", type=float, required=True, help="unix time of the run's start")
    ap.add_argument("--names", required=True, help="comma-separated process names, in column order")
    args = ap.parse_args()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    sampler = Sampler(args.out, args.names.split(","), args.start)
    next_at = time.time() + args.interval
    while not stop:
        time.sleep(max(0.0, min(0.5, next_at - time.time())))
        if time.time() >= next_at:
            sampler.sample()
            next_at += args.interval
    return 0


if __name__ == "__main__":
    sys.exit(main())
