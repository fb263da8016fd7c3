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
from engine.core.shm import PREFIX

__all__ = [
    "HALF_LIFE_NS",
    "TS0",
    "Report",
    "Result",
    "add_common_args",
    "advance_time",
    "all_series_once",
    "check_clean",
    "columns",
    "console",
    "fmt_rate",
    "fmt_ratio",
    "gen_events",
    "measure_python_baseline",
    "median",
    "parse_count",
    "parse_count_list",
    "parse_int_list",
    "print_header",
    "python_fold",
    "series_ids",
    "time_repeats",
    "wait_applied",
]

#: EWMA weight used everywhere (the engine's default).
#: Half-life of the EWMA (ns of event time) in the benchmarks.
HALF_LIFE_NS = 5e9
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


def parse_count_list(text: str) -> list[int]:
    """``"1k,100k,1M"`` -> ``[1000, 100000, 1000000]`` (decimal)."""
    return [parse_count(x) for x in text.split(",") if x.strip()]


def add_common_args(p: argparse.ArgumentParser, repeats: bool = True,
                    baseline_events: bool = True) -> None:
    """Options every benchmark script takes (``--repeats`` and
    ``--baseline-events`` only where they mean something)."""
    p.add_argument("--quick", action="store_true",
                   help="a few seconds: fewer events and repeats (for smoke runs)")
    if repeats:
        p.add_argument("--repeats", type=int, default=None,
                       help="timed repeats per configuration; the median is reported")
    if baseline_events:
        p.add_argument("--baseline-events", type=parse_count, default=None,
                       help="events folded by the pure-Python baseline per repeat")
    p.add_argument("--seed", type=int, default=1234, help="random seed of the event stream")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="also write the results as JSON to PATH")


# --- events --------------------------------------------------------------------


def series_ids(series: int) -> tuple[np.ndarray, np.ndarray]:
    """(key, metric) of ``series`` distinct series: hosts x METRICS_PER_HOST.

    Host keys are distinct random 64-bit ids (what ``entity_id`` of a host
    name looks like, without hashing a hundred thousand names); metrics are
    the ids of a fixed set of metric names, as a health-monitoring feed would
    send.  The same ``series`` always gives the same ids.
    """
    names = ["cpu", "mem", "disk", "net_in", "net_out", "latency_ms", "errors", "load"]
    mids = np.array([engine.metric_id(n) for n in names[:METRICS_PER_HOST]], np.uint32)
    hosts = (series + METRICS_PER_HOST - 1) // METRICS_PER_HOST
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
                values: Sequence[float], state: dict, half_life: float = HALF_LIFE_NS,
                ts_min: int = engine.DEFAULT_TS_MIN, ts_max: int = engine.DEFAULT_TS_MAX) -> int:
    """The pure-Python equivalent of the update kernel: a dict of series,
    one list per series, the same statistics and the same stale rule.

    Row layout: [count, sum, min, max, mean, m2, var, ewma, last, last_ts,
    first_ts, stale].  Unpacking the row into locals and writing it back in
    one slice assignment is the fastest plain-Python form we found (about
    10% faster than indexing the list field by field).  Returns the number
    of events applied.
    """
    isfinite = math.isfinite
    get = state.get
    applied = 0
    for k, t, m, x in zip(keys, tss, metrics, values):
        if not (ts_min <= t <= ts_max and isfinite(x)):
            continue
        s = get((k, m))
        if s is None:
            s = state[(k, m)] = [0, 0.0, math.inf, -math.inf, 0.0, 0.0, 0.0, 0.0, 0.0,
                                 -(2**63), 2**63 - 1, 0]
        n, sm, mn, mx, mean, m2, _var, ewma, last, last_ts, first_ts, stale = s
        n += 1
        delta = x - mean
        mean += x / n - mean / n
        m2 += delta * (x - mean)
        if t >= last_ts:
            # Newest event time: it becomes the series' current state.
            if n == 1:
                ewma = x
            elif t > last_ts:
                # Decays in event time, as the kernel's EWMA does.
                a = 2.0 ** ((last_ts - t) / half_life)
                ewma = a * ewma + (1.0 - a) * x
            last = x
            last_ts = t
        else:
            # Older than what the series shows: aggregates only.
            stale += 1
        s[:] = (n, sm + x, x if x < mn else mn, x if x > mx else mx, mean, m2, m2 / n,
                ewma, last, last_ts, t if t < first_ts else first_ts, stale)
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
    # Warm: every series present, like the warmed tables of the engine (a
    # million series take about 0.5 GB of Python objects and 2 s to insert).
    state: dict = {}
    python_fold(*columns(all_series_once(series)), state)
    rates = []
    ts = np.array(cols[1], np.int64)
    span = int(ts.max()) - int(ts.min()) + 1000
    for r in range(repeats):
        # Each repeat in the future of the last one, as in the engine runs.
        tss = (ts + r * span).tolist()
        t0 = time.perf_counter()
        python_fold(cols[0], tss, cols[2], cols[3], state)
        rates.append(len(ev) / (time.perf_counter() - t0))
    del state
    gc.collect()
    return Baseline(len(ev), repeats, series, rates)


# --- timing ---------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def time_repeats(fn: Callable[[], None], repeats: int, warmup: int = 1,
                 setup: Callable[[], None] | None = None) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones;
    ``setup`` runs untimed before every call."""
    out = []
    for i in range(warmup + repeats):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            out.append(time.perf_counter() - t0)
    return out


def advance_time(ev: np.ndarray) -> None:
    """Move every event time past the stream's span, so that replaying the
    same array is new data again, not a stream of stale events (which take
    a cheaper path in the kernel: they never touch last/ewma)."""
    span = int(ev["ts"].max()) - int(ev["ts"].min()) + 1000
    ev["ts"] += span


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

    def __post_init__(self) -> None:
        self.context_start = context()

    def target(self, name: str, goal: str, measured: str, met: bool | None) -> None:
        self.targets.append({"target": name, "goal": goal, "measured": measured, "met": met})

    def as_dict(self) -> dict:
        return {
            "bench": self.bench,
            "args": self.args,
            "context_start": self.context_start,
            "context_end": context(),
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

    def finish(self, console, json_path: str | None) -> None:
        """End of every script: the targets, the JSON file, and a check that
        the run left no shared-memory segment behind."""
        self.print_targets(console)
        self.write_json(json_path)
        check_clean(console)


def cpu_seconds(pids) -> float:
    """User + system CPU seconds of these processes so far (gone ones count 0)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def free_ports(n: int = 4) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cpu_pressure() -> float | None:
    """Share of the last 10 s in which some runnable task waited for a CPU
    (Linux PSI), in percent: how contended the machine was."""
    try:
        with open("/proc/pressure/cpu") as f:
            line = f.readline()
        return float(line.split("avg10=")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None


def wait_applied(eng, expected: int, timeout: float = 2.0) -> tuple[dict, float]:
    """``eng.stats()`` once its ``applied`` counter reaches ``expected``.

    A worker publishes its counters just after it releases its ring, so the
    counters can trail ``flush()`` by a moment (the state itself is applied
    before the release).  Returns the stats and how long they trailed.
    """
    t0 = time.perf_counter()
    while True:
        st = eng.stats()
        waited = time.perf_counter() - t0
        if st["applied"] >= expected or waited > timeout:
            return st, waited
        time.sleep(0.0005)


def context() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0, 0, 0)
    return {
        "cpu_pressure_avg10": cpu_pressure(),
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

    # Wide enough for the tables when the output is piped to a file.
    con = Console(highlight=False)
    if not con.is_terminal:
        con = Console(highlight=False, width=160)
    return con


def print_header(con, title: str, args: argparse.Namespace) -> None:
    ctx = context()
    con.rule(f"[bold]{title}")
    con.print(f"[dim]python {ctx['python']}, numpy {ctx['numpy']}, {ctx['cpus']} cpus, "
              f"load {ctx['loadavg']}, cpu pressure {ctx['cpu_pressure_avg10']}%; "
              f"args: {vars(args)}[/]")


def check_clean(con=None) -> list[str]:
    """Segments this process created that are still in /dev/shm (should be
    none after a run; other processes' segments are not ours to judge)."""
    mine = f"{PREFIX}-{os.getpid()}-"
    left = [n for n in engine.list_segments() if n.startswith(mine)]
    if left and con is not None:
        con.print(f"[red]warning: shared-memory segments left behind: {left}[/]")
    return left
