"""Shared helpers of the ringflow benchmarks: event generation, the pure-Python
baseline, timing, tables and JSON output.

Every benchmark script measures the pure-Python baseline in the same run as
the engine (the machine is shared and noisy, so only ratios within one run
mean much) and reports medians over repeats.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import engine

__all__ = [
    "ALPHA",
    "TS0",
    "Result",
    "Report",
    "add_common_args",
    "check_clean",
    "fmt_rate",
    "fmt_ratio",
    "gen_events",
    "median",
    "measure_python_baseline",
    "parse_int_list",
    "python_fold",
    "time_repeats",
]

#: EWMA weight used everywhere (the engine's default).
ALPHA = 0.1
#: A fixed event-time origin inside the engine's sane range (2024-11-22).
TS0 = 1_732_300_000 * 10**9
#: Metrics per host when series are generated: a series is (host, metric).
METRICS_PER_HOST = 8


# --- arguments ---------------------------------------------------------------


def parse_int_list(text: str) -> list[int]:
    """``"64,512,4k,1M"`` -> ``[64, 512, 4096, 1048576]``."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        mult = 1
        if part[-1] in "km":
            mult = 1024 if part[-1] == "k" else 1024 * 1024
            part = part[:-1]
        out.append(int(float(part) * mult))
    return out


def parse_count(text: str) -> int:
    """``"20M"`` -> 20_000_000, ``"100k"`` -> 100_000 (decimal, for event counts)."""
    text = text.strip().lower().replace("_", "")
    mult = {"k": 10**3, "m": 10**6, "g": 10**9}.get(text[-1:], 1)
    if mult != 1:
        text = text[:-1]
    return int(float(text) * mult)


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Options every benchmark script takes."""
    p.add_argument("--quick", action="store_true",
                   help="a few seconds: fewer events and repeats (for smoke runs)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per configuration; the median is reported")
    p.add_argument("--baseline-events", type=parse_count, default=None,
                   help="events folded by the pure-Python baseline per repeat")
    p.add_argument("--seed", type=int, default=1234, help="random seed of the event stream")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="also write the results as JSON to PATH")


# --- events --------------------------------------------------------------------


def series_ids(series: int) -> tuple[np.ndarray, np.ndarray]:
    """(key, metric) of ``series`` distinct series: hosts x METRICS_PER_HOST.

    Keys are entity ids of names ``host-00000``...; metrics are the ids of a
    fixed set of metric names, as a health-monitoring feed would send.
    """
    names = ["cpu", "mem", "disk", "net_in", "net_out", "latency_ms", "errors", "load"]
    mids = np.array([engine.metric_id(n) for n in names[:METRICS_PER_HOST]], np.uint32)
    hosts = (series + METRICS_PER_HOST - 1) // METRICS_PER_HOST
    # Hashing 125k host names costs ~0.1 s; ids of a stable hash are what
    # producers send, so sequential ids would make an unrealistically easy
    # stream for nothing.
    rng = np.random.default_rng(0xC0FFEE)
    hkeys = np.unique(rng.integers(1, 2**63, hosts + hosts // 8 + 16, dtype=np.uint64))
    rng.shuffle(hkeys)
    hkeys = hkeys[:hosts]
    idx = np.arange(series)
    return hkeys[idx // METRICS_PER_HOST], mids[idx % METRICS_PER_HOST]


def gen_events(n: int, series: int, seed: int = 1234, late_fraction: float = 0.01,
               sequential: bool = False) -> np.ndarray:
    """``n`` events over ``series`` series, chosen uniformly at random.

    Event times advance 1 us per event; a ``late_fraction`` of them is moved
    back by up to 10 ms, so that the stale rule (an older event never
    replaces ``last``) is exercised.  ``sequential=True`` visits the series
    round-robin instead (each series once per ``series`` events).
    """
    rng = np.random.default_rng(seed)
    keys, metrics = series_ids(series)
    if sequential:
        pick = np.arange(n) % series
    else:
        pick = rng.integers(0, series, n)
    ev = np.empty(n, engine.EVENT_DTYPE)
    ev["key"] = keys[pick]
    ev["metric"] = metrics[pick]
    ev["flags"] = 0
    ts = TS0 + np.arange(n, dtype=np.int64) * 1000
    if late_fraction > 0:
        late = rng.random(n) < late_fraction
        ts[late] -= rng.integers(1, 10_000_000, int(late.sum()))
    ev["ts"] = ts
    ev["value"] = rng.normal(50.0, 15.0, n)
    return ev


def all_series_once(series: int) -> np.ndarray:
    """One event per series, oldest time: warms a table without disturbing
    the state the timed stream produces."""
    ev = gen_events(series, series, sequential=True, late_fraction=0.0)
    ev["ts"] = TS0 - 10**9
    return ev


# --- the pure-Python baseline ---------------------------------------------------


def python_fold(keys: Sequence[int], tss: Sequence[int], metrics: Sequence[int],
                values: Sequence[float], state: dict, alpha: float = ALPHA,
                ts_min: int = engine.DEFAULT_TS_MIN, ts_max: int = engine.DEFAULT_TS_MAX) -> int:
    """The pure-Python equivalent of the update kernel: a dict of series,
    one list per series, the same statistics and the same stale rule.

    Row layout: [count, sum, min, max, mean, m2, var, ewma, last, last_ts,
    first_ts, stale].  Returns the number of events applied.
    """
    isfinite = math.isfinite
    applied = 0
    for k, t, m, x in zip(keys, tss, metrics, values):
        if not (ts_min <= t <= ts_max and isfinite(x)):
            continue
        s = state.get((k, m))
        if s is None:
            s = state[(k, m)] = [0, 0.0, math.inf, -math.inf, 0.0, 0.0, 0.0, 0.0, 0.0,
                                 -(2**63), 2**63 - 1, 0]
        n = s[0] + 1
        s[0] = n
        s[1] += x
        if x < s[2]:
            s[2] = x
        if x > s[3]:
            s[3] = x
        delta = x - s[4]
        s[4] += delta / n
        s[5] += delta * (x - s[4])
        s[6] = s[5] / n
        if t >= s[9]:
            s[7] = x if n == 1 else s[7] + alpha * (x - s[7])
            s[8] = x
            s[9] = t
        else:
            s[11] += 1
        if t < s[10]:
            s[10] = t
        applied += 1
    return applied


def columns(ev: np.ndarray) -> tuple[list, list, list, list]:
    """Python lists of the event fields (the form a pure-Python loop takes)."""
    return ev["key"].tolist(), ev["ts"].tolist(), ev["metric"].tolist(), ev["value"].tolist()


@dataclass
class Baseline:
    events: int
    repeats: int
    series: int
    rates: list[float]

    @property
    def rate(self) -> float:
        return median(self.rates)

    def as_dict(self) -> dict:
        return {"events": self.events, "repeats": self.repeats, "series": self.series,
                "events_per_s": self.rate, "rates": self.rates}


def measure_python_baseline(series: int, events: int, repeats: int, seed: int = 1234,
                            sample: np.ndarray | None = None) -> Baseline:
    """Median events/s of :func:`python_fold` over ``events`` events of the
    same stream shape, with every series already present (steady state, as
    in the engine's measurements).  Converting the NumPy records to Python
    objects is not timed, which favours the baseline."""
    ev = sample if sample is not None else gen_events(events, series, seed)
    cols = columns(ev)
    # Warm: every series present, like the warmed tables of the engine
    # (above a million series that costs too much memory; the dict then
    # fills as it goes, which is what a Python service would do anyway).
    state: dict = {}
    if series <= 250_000:
        python_fold(*columns(all_series_once(series)), state)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        python_fold(*cols, state)
        rates.append(len(ev) / (time.perf_counter() - t0))
    del state
    gc.collect()
    return Baseline(len(ev), repeats, series, rates)


# --- timing ---------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def time_repeats(fn: Callable[[], None], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


# --- formatting and output ------------------------------------------------------


def fmt_rate(x: float) -> str:
    """Events/s in M (or k) with three significant figures."""
    if x != x:
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:,.1f} M/s"
    return f"{x / 1e3:,.0f} k/s"


def fmt_ratio(x: float) -> str:
    return "-" if x != x else f"{x:,.1f}x"


def fmt_us(ns: float) -> str:
    return f"{ns / 1000:,.1f}"


@dataclass
class Result:
    """One row of a benchmark's results."""

    name: str
    params: dict
    values: dict
    target: str | None = None
    met: bool | None = None


@dataclass
class Report:
    """A benchmark's results: rows, a baseline, targets, and the run's context."""

    bench: str
    args: dict
    rows: list[Result] = field(default_factory=list)
    baseline: dict | None = None
    notes: list[str] = field(default_factory=list)
    targets: list[dict] = field(default_factory=list)

    def target(self, name: str, goal: str, measured: str, met: bool | None) -> None:
        self.targets.append({"target": name, "goal": goal, "measured": measured, "met": met})

    def as_dict(self) -> dict:
        return {
            "bench": self.bench,
            "args": self.args,
            "context": context(),
            "baseline": self.baseline,
            "rows": [r.__dict__ for r in self.rows],
            "targets": self.targets,
            "notes": self.notes,
        }

    def write_json(self, path: str | None) -> None:
        if not path:
            return
        Path(path).write_text(json.dumps(self.as_dict(), indent=2, default=float) + "\n")

    def print_targets(self, console) -> None:
        if not self.targets:
            return
        from rich.table import Table

        t = Table(title=f"{self.bench}: targets")
        for col in ("target", "goal", "measured", "met"):
            t.add_column(col)
        for tg in self.targets:
            met = {True: "[green]MET[/]", False: "[red]MISSED[/]", None: "n/a"}[tg["met"]]
            t.add_row(tg["target"], tg["goal"], tg["measured"], met)
        console.print(t)
        for n in self.notes:
            console.print(f"[dim]note: {n}[/]")


def context() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0, 0, 0)
    return {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "ringflow": engine.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "loadavg": [round(x, 2) for x in load],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def console():
    from rich.console import Console

    return Console(highlight=False)


def print_header(con, title: str, args: argparse.Namespace) -> None:
    ctx = context()
    con.rule(f"[bold]{title}")
    con.print(f"[dim]python {ctx['python']}, numpy {ctx['numpy']}, {ctx['cpus']} cpus, "
              f"load {ctx['loadavg']}; args: {vars(args)}[/]")


def check_clean(con=None) -> list[str]:
    """Segments of ours still in /dev/shm (should be none after a run)."""
    left = engine.list_segments()
    if left and con is not None:
        con.print(f"[red]warning: shared-memory segments left behind: {left}[/]")
    return left
