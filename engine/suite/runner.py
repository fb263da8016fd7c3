"""Runs the comparative suite (issue #5): every contender on the same
workload, then with more and more producers, then ringflow's scaling with
workers; writes ``results.json``, ``report.md`` and plots.

Each run happens in a forked child process with a time limit: a contender
that crashes, hangs or raises is recorded as an error and the suite goes
on.  The child applies the workload, asks the oracle whether the final
state is right and summarises the latencies (HdrHistogram), so only a small
summary comes back to the parent.

The contender registries (``CONTENDERS`` of :mod:`engine.suite.threads`,
``aio``, ``procs`` and ``ringflow``) are imported lazily: a module that is
missing or fails to import is skipped with a note.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import gc
import importlib
import inspect
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from .base import STATE_FIELDS, Contender, RunResult, Workload

__all__ = ["run_suite", "discover_contenders", "host_facts", "SECTIONS", "REGISTRIES"]

#: The sections of the suite, in the order they run.
SECTIONS = ("contenders", "producers", "scaling")
#: Modules of ``engine.suite`` that hold a ``CONTENDERS`` registry.
REGISTRIES = ("threads", "aio", "procs", "ringflow")
#: The p99 a design must keep to "sustain" a number of producers.
SLO_P99_MS = 10.0
#: Contenders whose worker count the scaling section varies.
SCALING_CONTENDERS = ("ringflow", "ringflow_gateway")
_MAX_MISMATCHES_KEPT = 10
#: Contenders section, full mode: events of the workload.  ringflow applies
#: 200k events in ~10 ms, where fixed costs dominate (2M: ~75 ms at ~27M
#: events/s on 2 cores); 8M keeps it running for ~0.3 s.
FULL_EVENTS = 8_000_000
#: Slow contenders (below FAST_EVENTS_PER_S on the pilot, or in
#: KNOWN_SLOW) run on this prefix of the same workload, compared with the
#: oracle of that prefix (throughput is per run, so a prefix is fair).
SLOW_EVENTS = 400_000
#: Events of the pilot run that sorts the contenders into fast and slow.
PILOT_EVENTS = 50_000
#: Pilot throughput (events/s) from which a contender gets the whole workload.
#: The pure-Python designs measure 0.4-1.3M events/s on the pilot, ringflow's
#: 4M and more: 2M splits them with a wide margin either side (at 1M, designs
#: near 1M went either way from one run to the next).
FAST_EVENTS_PER_S = 2e6
#: Contenders known to be slow: no pilot, the prefix straight away.
KNOWN_SLOW = ("global_lock_per_event", "thread_per_request", "actor_per_event", "actor_per_key")
_MAX_LATENCY_SAMPLES = 200_000


# --- discovery ----------------------------------------------------------------

def discover_contenders(notes: list[str] | None = None) -> dict[str, Contender]:
    """All contenders of the registries that import, by name; a registry
    that is missing or broken is skipped with a line in ``notes``."""
    found: dict[str, Contender] = {}
    for mod in REGISTRIES:
        try:
            module = importlib.import_module(f"{__package__}.{mod}")
            registry = module.CONTENDERS
        except Exception as exc:  # noqa: BLE001 - any failure skips the registry
            if notes is not None:
                notes.append(f"engine.suite.{mod} not available ({type(exc).__name__}: "
                             f"{exc}): its contenders are skipped")
            continue
        for name, contender in registry.items():
            if isinstance(contender, type):  # a registry of classes: default settings
                try:
                    contender = contender()
                except Exception as exc:  # noqa: BLE001
                    if notes is not None:
                        notes.append(f"{name}: cannot be created ({type(exc).__name__}: "
                                     f"{exc}): skipped")
                    continue
            found[name] = contender
    return found


def _workload_generator(notes: list[str]):
    try:
        from .workload import generate
        return generate, "engine.suite.workload"
    except Exception as exc:  # noqa: BLE001
        notes.append(f"engine.suite.workload not available ({type(exc).__name__}: {exc}): "
                     "the runner's fallback generator is used")
        return _fallback_generate, "engine.suite.runner (fallback)"


class _MemoCheck:
    """The oracle check, with each workload's answer computed once, in the
    parent, before the runs fork (8M events: 2 s per run otherwise)."""

    def __init__(self, check, final_state=None) -> None:
        self._check, self._final_state = check, final_state
        self._memo: dict = {}

    def prepare(self, workload: Workload) -> None:
        if self._final_state is not None and id(workload.events) not in self._memo:
            self._memo[id(workload.events)] = (workload.events,
                                               self._final_state(workload))

    def __call__(self, state: dict, workload: Workload) -> list:
        hit = self._memo.get(id(workload.events))
        if hit is not None and hit[0] is workload.events:
            return self._check(state, hit[1])
        return self._check(state, workload)


def _oracle_check(notes: list[str]):
    try:
        from .oracle import check, final_state
        return _MemoCheck(check, final_state), "engine.suite.oracle"
    except Exception as exc:  # noqa: BLE001
        notes.append(f"engine.suite.oracle not available ({type(exc).__name__}: {exc}): "
                     "the runner's fallback oracle is used")
        return _MemoCheck(_fallback_check), "engine.suite.runner (fallback)"


def _generate(gen, events: int, hosts: int, seed: int, rate: float | None) -> Workload:
    kwargs = {"events": events, "hosts": hosts, "seed": seed}
    try:
        params = inspect.signature(gen).parameters
    except (TypeError, ValueError):
        params = {}
    if rate is not None or "rate" in params:
        kwargs["rate"] = rate
    return gen(**kwargs)


# --- fallbacks (used only while workload.py / oracle.py are missing) -----------

def _fallback_generate(events: int = 20_000, hosts: int = 1000, seed: int = 0,
                       rate: float | None = None) -> Workload:
    from .. import EVENT_DTYPE

    rng = np.random.default_rng(seed)
    ev = np.zeros(events, dtype=EVENT_DTYPE)
    ev["key"] = rng.integers(1, hosts + 1, events)
    ev["metric"] = rng.integers(0, 5, events)
    ts = 1_000_000_000 + np.arange(events, dtype=np.int64) * 1000
    late = rng.random(events) < 0.05
    ts[late] -= rng.integers(1, 50_000_000, int(late.sum()))
    ev["ts"] = ts
    ev["value"] = rng.normal(50.0, 10.0, events)
    created = (np.zeros(events, np.int64) if rate is None
               else (np.arange(events, dtype=np.int64) * 1e9 / rate).astype(np.int64))
    return Workload(ev, created, seed, {"generator": "fallback", "hosts": hosts,
                                        "late_fraction": 0.05, "rate": rate})


def _fallback_final_state(workload: Workload) -> dict:
    state: dict = {}
    for e in workload.events.tolist():
        key, ts, metric, _flags, value = e
        s = state.get((key, metric))
        if s is None:
            state[(key, metric)] = [1, value, value, value, value, ts]
            continue
        s[0] += 1
        s[1] += value
        s[2] = min(s[2], value)
        s[3] = max(s[3], value)
        if ts >= s[5]:
            s[4], s[5] = value, ts
    return {k: tuple(v) for k, v in state.items()}


def _fallback_check(state: dict, workload: Workload) -> list[str]:
    want = _fallback_final_state(workload)
    out = []
    for k in sorted(set(want) | set(state), key=str):
        got, exp = state.get(k), want.get(k)
        if got is None or exp is None:
            out.append(f"{k}: expected {exp}, got {got}")
            continue
        for f, g, x in zip(STATE_FIELDS, got, exp):
            if f == "sum" and math.isclose(g, x, rel_tol=1e-9, abs_tol=1e-6):
                continue
            if g != x:
                out.append(f"{k}.{f}: expected {x}, got {g}")
    return out


# --- host facts ----------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str, attr: str = "__version__") -> str | None:
    try:
        return str(getattr(importlib.import_module(module), attr))
    except Exception:  # noqa: BLE001
        return None


def host_facts() -> dict:
    """Cores, CPU model, OS, Python and library versions, git commit."""
    facts = {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "pyzmq": _version("zmq", "__version__"),
        "libzmq": None,
        "hdrhistogram": None,
        "git_commit": None,
        "git_dirty": None,
    }
    try:
        import zmq
        facts["libzmq"] = zmq.zmq_version()
    except Exception:  # noqa: BLE001
        pass
    try:
        from importlib.metadata import version
        facts["hdrhistogram"] = version("hdrhistogram")
    except Exception:  # noqa: BLE001
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
        facts["cores_usable"] = affinity
    except (AttributeError, OSError):
        pass
    repo = Path(__file__).resolve().parents[2]
    try:
        facts["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
            timeout=5, check=True).stdout.strip() or None
        facts["git_dirty"] = bool(subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
            capture_output=True, text=True, timeout=5, check=True).stdout.strip())
    except Exception:  # noqa: BLE001 - no git, not a repo: leave None
        pass
    return facts


# --- one isolated run ----------------------------------------------------------

def _latency_stats(lat: np.ndarray) -> dict:
    out = {"latency_samples": int(lat.size), "p50_ms": None, "p99_ms": None,
           "p999_ms": None, "mean_ms": None, "std_ms": None, "max_ms": None}
    if lat.size == 0:
        return out
    from hdrh.histogram import HdrHistogram

    lat = np.asarray(lat, dtype=np.int64)
    if lat.size > _MAX_LATENCY_SAMPLES:
        lat = lat[:: math.ceil(lat.size / _MAX_LATENCY_SAMPLES)]
    hist = HdrHistogram(1, 3_600_000_000_000, 3)  # 1 ns .. 1 h, 3 digits
    for v in np.clip(lat, 1, 3_600_000_000_000).tolist():
        hist.record_value(v)
    out.update(latency_samples=int(lat.size),
               p50_ms=hist.get_value_at_percentile(50) / 1e6,
               p99_ms=hist.get_value_at_percentile(99) / 1e6,
               p999_ms=hist.get_value_at_percentile(99.9) / 1e6,
               mean_ms=hist.get_mean_value() / 1e6,
               std_ms=hist.get_stddev() / 1e6,
               max_ms=hist.get_max_value() / 1e6)
    return out


def _rusage_cpu() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _summarize(res: RunResult, workload: Workload, check, cpu_fallback: float,
               rss_fallback: int) -> dict:
    mismatches = list(check(res.state, workload))
    applied = int(sum(s[0] for s in res.state.values()))
    cpu = float(res.cpu_seconds) if res.cpu_seconds else cpu_fallback
    rss = int(res.peak_rss_bytes) if res.peak_rss_bytes else rss_fallback
    notes = res.notes or ""
    if not res.cpu_seconds or not res.peak_rss_bytes:
        notes = (notes + "; " if notes else "") + "CPU/RSS measured by the runner"
    out = {
        "seconds": float(res.seconds),
        "events": workload.n,
        "applied": applied,
        "events_per_s": float(res.events_per_s),
        "stale_overwrites": int(res.stale_overwrites),
        "peak_rss_bytes": rss,
        "cpu_seconds": cpu,
        "cpu_utilisation": cpu / res.seconds if res.seconds > 0 else None,
        "producers_used": int(res.producers),
        "notes": notes,
        "series": len(res.state),
        "mismatches": len(mismatches),
        "mismatch_examples": [str(m) for m in mismatches[:_MAX_MISMATCHES_KEPT]],
        "correct": not mismatches,
    }
    out.update(_latency_stats(res.latencies_ns))
    return out


def _own_rss() -> int:
    try:
        import psutil
        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001
        return 0


def _child(conn, contender: Contender, workload: Workload, producers: int, check) -> None:
    # The parent's objects (workloads' oracle answers, earlier results) are
    # the child's too: without this, the design's own garbage collections
    # walk them all: p99 13 ms instead of 0.74 ms at 50k events/s.
    gc.freeze()
    try:
        # What the forked child holds before the run (the inherited workload,
        # the oracle's answer) is not the design's memory: subtracted below.
        rss0 = _own_rss()
        cpu0 = _rusage_cpu()
        res = contender.run(workload, producers)
        cpu = _rusage_cpu() - cpu0
        try:
            import psutil
            me = psutil.Process()
            # this process's peak (ru_maxrss starts at the fork's RSS), plus
            # the children still alive
            rss = max(me.memory_info().rss,
                      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) + sum(
                p.memory_info().rss for p in me.children(recursive=True))
        except Exception:  # noqa: BLE001
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out = _summarize(res, workload, check, cpu, rss)
        out["rss_before_bytes"] = rss0
        out["rss_growth_bytes"] = max(out["peak_rss_bytes"] - rss0, 0)
        conn.send(("ok", out))
    except BaseException as exc:  # noqa: BLE001 - everything goes back as an error
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        conn.close()


def _kill_tree(pid: int) -> None:
    try:
        import psutil
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except Exception:  # noqa: BLE001
        procs = []
    pids = [pid] + [p.pid for p in procs]
    for p in procs:
        with contextlib.suppress(Exception):
            p.kill()
    with contextlib.suppress(Exception):
        import psutil
        psutil.wait_procs(procs, timeout=5)
    # Segments their creator could not unlink (killed): named by the creator's pid.
    with contextlib.suppress(OSError):
        for name in os.listdir("/dev/shm"):
            if any(name.startswith(f"ringflow-{p}-") for p in pids):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join("/dev/shm", name))


def _run_isolated(contender: Contender, workload: Workload, producers: int, check,
                  timeout: float, tick=None) -> dict:
    """One run in a forked child; returns its summary or ``{"error": ...}``."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, contender, workload, producers, check),
                       daemon=False, name=f"suite-{contender.name}")
    t0 = time.monotonic()
    proc.start()
    send.close()
    msg = None
    error = None
    try:
        while True:
            if recv.poll(0.1):
                try:
                    msg = recv.recv()
                except EOFError:
                    error = "crashed"
                break
            if not proc.is_alive() and not recv.poll(0):
                error = "crashed"
                break
            if time.monotonic() - t0 > timeout:
                error = f"timeout after {timeout:g} s"
                break
            if tick is not None:
                tick()
    finally:
        recv.close()
        if error is not None and error.startswith("timeout"):
            _kill_tree(proc.pid)
        proc.join(10)
        if proc.is_alive():
            _kill_tree(proc.pid)
            proc.join(5)
    wall = time.monotonic() - t0
    if error == "crashed":
        code = proc.exitcode
        error = f"crashed (exit code {code})" if code is not None else "crashed"
    if msg is not None and msg[0] == "ok":
        out = msg[1]
        out["wall_s"] = wall
        return out
    if msg is not None:
        return {"error": msg[1], "traceback": msg[2], "wall_s": wall}
    return {"error": error, "wall_s": wall}


# --- progress ------------------------------------------------------------------

class _Progress:
    """One rich bar over all runs (no refresh thread: runs are forked)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.enabled = enabled
        self._p = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._p = Progress(TextColumn("[bold]bench[/]"), BarColumn(),
                               MofNCompleteColumn(), TimeElapsedColumn(),
                               TextColumn("{task.description}"),
                               console=Console(stderr=True), auto_refresh=False,
                               transient=False, redirect_stdout=False,
                               redirect_stderr=False)
            self._task = self._p.add_task("", total=max(total, 1))

    def __enter__(self):
        if self._p is not None:
            self._p.start()
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.refresh()
            self._p.stop()

    def describe(self, text: str) -> None:
        if self._p is not None:
            self._p.update(self._task, description=text)
            self._p.refresh()

    def tick(self) -> None:
        if self._p is not None:
            self._p.refresh()

    def advance(self, n: int = 1) -> None:
        if self._p is not None and n:
            self._p.advance(self._task, n)
            self._p.refresh()


def _json_default(obj):
    """numpy scalars as numbers, arrays as lists, anything else as text."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    try:
        return float(obj)
    except (TypeError, ValueError):
        return str(obj)


# --- sections ------------------------------------------------------------------

def _usable_cores() -> int:
    """The cores this process may run on (a cpuset or taskset may allow
    fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _default_workers(cores: int) -> list[int]:
    out, w = [], 1
    while w < cores:
        out.append(w)
        w *= 2
    out.append(cores)
    return sorted(set(out))


def _with_workers(contender: Contender, workers: int) -> Contender | None:
    """A copy of ``contender`` running ``workers`` workers, or None if it has
    no such setting (an attribute ``workers`` or a ``workers=`` argument)."""
    if hasattr(contender, "workers"):
        c = copy.copy(contender)
        c.workers = workers
        return c
    try:
        return type(contender)(workers=workers)
    except Exception:  # noqa: BLE001
        return None


def _prefix(workload: Workload, n: int) -> Workload:
    """The first ``n`` events of ``workload`` (itself when it has no more)."""
    if n >= workload.n:
        return workload
    params = dict(workload.params or {})
    params["prefix_of"] = workload.n
    return Workload(events=workload.events[:n], created_ns=workload.created_ns[:n],
                    seed=workload.seed, params=params)


def _repeated(contender: Contender, workload: Workload, producers: int, check,
              timeout: float, bar, repeats: int) -> dict:
    """``repeats`` runs; the one of median rate (the first failed or wrong
    run if any), with every run's rate and stale-overwrite count."""
    reps = []
    for _ in range(max(1, repeats)):
        reps.append(_run_isolated(contender, workload, producers, check, timeout, bar.tick))
        bar.advance()
        if "error" in reps[-1]:
            break
    bar.advance(max(1, repeats) - len(reps))
    bad = [x for x in reps if "error" in x or not x["correct"]]
    # the lower median: with an even count, the slower of the middle two
    pick = bad[0] if bad else sorted(reps, key=lambda x: x["events_per_s"])[(len(reps) - 1) // 2]
    out = dict(pick)
    out["repeats"] = len(reps)
    ok = [x for x in reps if "error" not in x]
    if ok:
        out["repeat_events_per_s"] = [x["events_per_s"] for x in ok]
        out["repeat_stale_overwrites"] = [x["stale_overwrites"] for x in ok]
        out["repeat_correct"] = [x["correct"] for x in ok]
    return out


def _status(r: dict) -> str:
    if "error" in r:
        return "error"
    return "ok" if r["correct"] else "WRONG"


def _headline(contenders: dict, baseline: str) -> dict:
    """ringflow's ratios against the baseline and the global-lock designs,
    each at its best producer count, in this run (issue #5's targets)."""
    by_name: dict = {}
    for r in contenders["runs"] + contenders.get("contended", []):
        by_name.setdefault(r["name"], []).append(r)

    def best(name):
        rates = [r["events_per_s"] for r in by_name.get(name, [])
                 if "error" not in r and r.get("correct")]
        return max(rates) if rates else None

    out = {"ringflow_events_per_s": best("ringflow"), "stale_overwrites": {}}
    for name, rows in by_name.items():
        out["stale_overwrites"][name] = max(
            (max(r.get("repeat_stale_overwrites") or [r.get("stale_overwrites", 0)])
             for r in rows if "error" not in r), default=None)
    rf = out["ringflow_events_per_s"]
    for name in (baseline, "global_lock", "global_lock_per_event"):
        b = best(name)
        out[f"{name}_events_per_s"] = b
        out[f"x_{name}"] = rf / b if rf and b else None
    return out


def _producer_levels(quick: bool, cap: int) -> list[int]:
    if quick:
        return [1, 4]
    levels, p = [], 1
    while p <= cap:
        levels.append(p)
        p *= 2
    return levels


def run_suite(out_dir: str | os.PathLike | None = None, quick: bool = False,
              only: list[str] | str | None = None,
              contenders: dict[str, Contender] | None = None,
              workers: list[int] | None = None, events: int | None = None, seed: int = 0,
              progress: bool = True, *, hosts: int | None = None,
              baseline: str = "single", producer_events: int | None = None,
              producer_rate: float | None = None, producer_cap: int | None = None,
              timeout: float | None = None,
              scaling_contenders: tuple[str, ...] = SCALING_CONTENDERS,
              scaling_events: int | None = None, scaling_repeats: int | None = None,
              slow_events: int | None = None, pilot_events: int | None = None,
              fast_events_per_s: float = FAST_EVENTS_PER_S,
              known_slow: tuple[str, ...] = KNOWN_SLOW, repeats: int | None = None,
              contended: int | None = None) -> dict:
    """Run the suite and write ``results.json``, ``report.md`` and plots into
    ``out_dir`` (default ``bench-results/<UTC timestamp>/``); returns the
    results (the same dict as results.json).

    ``only`` picks sections among :data:`SECTIONS`; ``contenders`` replaces
    the registries (name -> Contender); ``workers`` is the scaling section's
    worker counts (default 1, 2, 4, ... up to the host's cores).  A run that
    raises, crashes or passes ``timeout`` seconds is recorded in
    ``results["errors"]`` and the suite goes on.

    Contenders section: the workload has ``events`` events (default 20k with
    ``quick``, else :data:`FULL_EVENTS`).  When ``slow_events`` (default
    :data:`SLOW_EVENTS`, or ``events`` with ``quick``) is smaller, each
    contender first runs a pilot on the first ``pilot_events`` events; those
    below ``fast_events_per_s`` there, and those of ``known_slow`` (no
    pilot), run on the first ``slow_events`` events only, checked against
    the oracle of that prefix; every run records its ``events``.  Each
    contender runs ``repeats`` times (default 3, 1 with ``quick``) with 1
    producer and as many with ``contended`` producers (default 4, 2 with
    ``quick``; the baseline is one thread and runs with 1 only); a row is
    the run of median rate.  ``results["headline"]`` holds ringflow's ratios
    against the baseline and the global-lock designs at their best.
    """
    started = time.time()
    notes: list[str] = []
    errors: list[str] = []
    if isinstance(only, str):
        only = [s.strip() for s in only.split(",") if s.strip()]
    sections = [s for s in SECTIONS if not only or s in only]
    unknown = [s for s in (only or []) if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown sections {unknown}; choose among {', '.join(SECTIONS)}")
    if contenders is None:
        contenders = discover_contenders(notes)
    if not contenders:
        notes.append("no contender available")
    cores = _usable_cores()
    events = events or (20_000 if quick else FULL_EVENTS)
    slow_events = min(events, slow_events or (events if quick else SLOW_EVENTS))
    pilot_events = min(slow_events, pilot_events or PILOT_EVENTS)
    hosts = hosts or max(10, min(10_000, events // 20))
    producer_events = producer_events or min(events, 5_000 if quick else 50_000)
    producer_rate = producer_rate or (10_000.0 if quick else 50_000.0)
    producer_cap = producer_cap or (4 if quick else 32)
    # ringflow applies 20k events in a few ms: too short to time, so the
    # scaling section gets a bigger workload and the median of repeats.
    scaling_events = scaling_events or max(events, 200_000 if quick else 1_000_000)
    scaling_repeats = scaling_repeats or (1 if quick else 3)
    repeats = repeats or (1 if quick else 3)
    contended = contended or (2 if quick else 4)
    timeout = timeout or (60.0 + events * 1e-4)
    workers = sorted(set(workers)) if workers else (
        [1, min(2, cores)] if quick else _default_workers(cores))
    workers = sorted(set(workers))
    if out_dir is None:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        out_dir = Path("bench-results") / stamp
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    gen, gen_source = _workload_generator(notes)
    check, oracle_source = _oracle_check(notes)

    results: dict = {
        "schema": 1,
        "started_utc": _dt.datetime.fromtimestamp(started, _dt.timezone.utc).isoformat(),
        "settings": {
            "quick": quick, "sections": sections, "events": events, "hosts": hosts,
            "seed": seed, "baseline": baseline, "timeout_s": timeout,
            "slow_events": slow_events, "pilot_events": pilot_events,
            "fast_events_per_s": fast_events_per_s, "known_slow": list(known_slow),
            "producer_events": producer_events, "producer_rate": producer_rate,
            "producer_cap": producer_cap, "scaling_events": scaling_events,
            "scaling_repeats": scaling_repeats, "repeats": repeats,
            "contended_producers": contended, "producer_levels": _producer_levels(quick,
                                                                              producer_cap),
            "slo_p99_ms": SLO_P99_MS, "workers": workers, "full_events": FULL_EVENTS,
            "contenders": sorted(contenders),
            "workload_source": gen_source, "oracle_source": oracle_source,
            "argv": sys.argv,
        },
        "host": host_facts(),
        "notes": notes,
        "errors": errors,
    }
    descriptions = {n: {"description": getattr(c, "description", ""),
                        "tuning": getattr(c, "tuning", "")} for n, c in contenders.items()}
    results["contender_info"] = descriptions

    scaled = [n for n in scaling_contenders if n in contenders]
    levels = _producer_levels(quick, producer_cap)
    piloted = slow_events < events
    per_contender = (1 if piloted else 0) + repeats * (2 if contended > 1 else 1)
    total = ((len(contenders) * per_contender if "contenders" in sections else 0)
             + (len(contenders) * len(levels) if "producers" in sections else 0)
             + (len(scaled) * len(workers) * scaling_repeats if "scaling" in sections
                else 0))

    with _Progress(total, progress) as bar:
        workload = None
        if "contenders" in sections:
            bar.describe("generating the workload")
            workload = _generate(gen, events, hosts, seed, None)
            results["workload"] = {"events": workload.n, "seed": workload.seed,
                                   "params": workload.params}

        if "contenders" in sections:
            runs, contended_runs = [], []
            short = _prefix(workload, slow_events)
            pilot_wl = _prefix(workload, pilot_events)
            bar.describe("the oracle's answers")
            for wl in (workload, short, pilot_wl):
                check.prepare(wl)
            for name, c in contenders.items():
                pilot = None
                slow = piloted and name in known_slow
                if piloted and not slow:
                    bar.describe(f"contenders: {name} (pilot)")
                    pilot = _run_isolated(c, pilot_wl, 1, check, timeout, bar.tick)
                    slow = ("error" in pilot
                            or not pilot.get("events_per_s", 0) >= fast_events_per_s)
                bar.advance(1 if piloted else 0)
                wl = short if slow else workload
                one_thread = getattr(c, "single_threaded", False)
                levels_here = [1] + ([contended] if contended > 1 and not one_thread else [])
                for p in levels_here:
                    bar.describe(f"contenders: {name} x{p}")
                    r = _repeated(c, wl, p, check, timeout, bar, repeats)
                    r = {"name": name, "producers": p, **r}
                    r["events"] = wl.n
                    r["prefix"] = wl.n < workload.n
                    if pilot is not None:
                        r["pilot_events_per_s"] = pilot.get("events_per_s")
                    if r["prefix"] and "error" not in r:
                        why = ("known slow" if pilot is None else
                               f"pilot {pilot.get('events_per_s', 0):,.0f} events/s")
                        r["notes"] = ((r.get("notes") or "") + ("; " if r.get("notes") else "")
                                      + f"ran on the first {wl.n:,} of {workload.n:,} events "
                                      f"({why}), checked against that prefix's oracle")
                    (runs if p == 1 else contended_runs).append(r)
                    if "error" in r:
                        errors.append(f"contenders/{name} x{p}: {r['error']}")
                        break  # a design that failed alone is not run contended
                done = sum(1 for r in contended_runs if r["name"] == name)
                bar.advance(repeats * (1 - done) if contended > 1 else 0)
            base = next((r for r in runs if r["name"] == baseline and "error" not in r), None)
            base_rate = base["events_per_s"] if base else None
            if base is None:
                notes.append(f"baseline {baseline!r} did not run: no ratios")
            elif not base.get("correct"):
                notes.append(f"baseline {baseline!r} is WRONG: ratios are against a wrong "
                             "design")
            for r in runs + contended_runs:
                r["status"] = _status(r)
                r["x_baseline"] = (r["events_per_s"] / base_rate
                                   if base_rate and "error" not in r else None)
            results["contenders"] = {"baseline": baseline, "baseline_events_per_s": base_rate,
                                     "events": workload.n, "slow_events": short.n,
                                     "pilot_events": pilot_wl.n if piloted else None,
                                     "repeats": repeats, "contended_producers": contended,
                                     "runs": runs, "contended": contended_runs}
            results["headline"] = _headline(results["contenders"], baseline)

        if "producers" in sections:
            bar.describe("generating the paced workload")
            paced = _generate(gen, producer_events, hosts, seed + 1, producer_rate)
            per: dict = {}
            for name, c in contenders.items():
                rows, best, best_rate = [], None, None
                done = 0
                for p in levels:
                    bar.describe(f"producers: {name} x{p}")
                    r = _run_isolated(c, paced, p, check, timeout, bar.tick)
                    r = {"producers": p, **r}
                    bar.advance()
                    done += 1
                    rows.append(r)
                    r["status"] = _status(r)
                    if "error" in r:
                        errors.append(f"producers/{name} x{p}: {r['error']}")
                        break
                    p99 = r.get("p99_ms")
                    if p99 is None:
                        continue
                    if p99 > SLO_P99_MS:
                        break
                    best, best_rate = p, r["events_per_s"]
                bar.advance(len(levels) - done)
                per[name] = {"runs": rows, "max_producers": best,
                             "max_producers_events_per_s": best_rate,
                             "wrong": any(x.get("status") == "WRONG" for x in rows)}
            results["producers"] = {"slo_p99_ms": SLO_P99_MS, "levels": levels,
                                    "events": paced.n, "rate": producer_rate,
                                    "params": paced.params, "results": per}

        if "scaling" in sections:
            per = {}
            big = workload if workload is not None and workload.n == scaling_events else None
            if scaled and big is None:
                bar.describe("generating the scaling workload")
                big = _generate(gen, scaling_events, max(hosts, min(10_000,
                                                                    scaling_events // 20)),
                                seed, None)
            if not scaled:
                notes.append("scaling: none of " + ", ".join(scaling_contenders)
                             + " is available")
            if big is not None:
                bar.describe("the oracle's answer (scaling)")
                check.prepare(big)
            for name in scaled:
                rows = []
                for w in workers:
                    bar.describe(f"scaling: {name} {w} worker(s)")
                    c = _with_workers(contenders[name], w)
                    if c is None:
                        r = {"workers": w, "error": "the contender has no workers setting"}
                        bar.advance(scaling_repeats)
                    else:
                        r = {"workers": w, **_repeated(c, big, 1, check, timeout, bar,
                                                       scaling_repeats)}
                    r["status"] = _status(r)
                    if "error" in r:
                        errors.append(f"scaling/{name} {w} workers: {r['error']}")
                    rows.append(r)
                one = next((r for r in rows if r["workers"] == 1 and "error" not in r), None)
                for r in rows:
                    ok = one and "error" not in r and one["events_per_s"]
                    # Per core: workers beyond the host's cores share them.
                    r["cores_used"] = min(r["workers"], cores)
                    r["efficiency"] = (r["events_per_s"] / (r["cores_used"]
                                                            * one["events_per_s"])
                                       if ok else None)
                    r["efficiency_per_worker"] = (r["events_per_s"] / (r["workers"]
                                                                       * one["events_per_s"])
                                                  if ok else None)
                per[name] = rows
            if scaled and 1 not in workers:
                notes.append("scaling: 1 worker not in the list, no efficiency per core")
            results["scaling"] = {"workers": workers, "producers": 1, "cores_usable": cores,
                                  "events": scaling_events, "repeats": scaling_repeats,
                                  "params": big.params if big is not None else None,
                                  "results": per}

        bar.describe("writing the report")
        finished = time.time()
        results["finished_utc"] = _dt.datetime.fromtimestamp(
            finished, _dt.timezone.utc).isoformat()
        results["duration_s"] = finished - started
        results["out_dir"] = str(out_dir)
        files = []
        try:
            from .report import write_report
            files = write_report(results, out_dir)
        except Exception as exc:  # noqa: BLE001 - the JSON must still be written
            errors.append(f"report: {type(exc).__name__}: {exc}")
        results["files"] = [str(f) for f in files] + [str(out_dir / "results.json")]
        (out_dir / "results.json").write_text(
            json.dumps(results, indent=2, default=_json_default) + "\n", encoding="utf-8")
        bar.describe("done")
    return results
