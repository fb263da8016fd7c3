"""Idle CPU of an engine with 2 workers, for each wait strategy, and how fast
an idle engine wakes up.

For each strategy an engine is started, fed one batch (so its workers have
gone through work and back to idle), left alone for a moment, then the CPU
time of its worker processes (``Engine.pids``, psutil) is sampled over the
measurement window.  Afterwards the engine is woken a few times from idle:
submit one event and time until ``flush()`` returns.  For reference, a
plain Python process blocked in ``multiprocessing.Queue.get()`` (the idle
state of a pure-Python worker pool) is measured the same way.

Target: < 2% of one core for the whole engine idling with the default
(block) strategy; sleep should idle cheaply too.  spin (and to a lesser
degree yield) is expected to burn a core per worker while idle: that is
what it is for.

    python bench/idle.py                     # 3 s per strategy
    python bench/idle.py --quick
    python bench/idle.py --wait block,sleep --seconds 10
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import engine

try:
    import common as C
except ImportError:  # pragma: no cover
    from bench import common as C

TARGET_PCT = 2.0
CHEAP = ("block", "sleep")


def run_ns(pid: int) -> int | None:
    """CPU time of every thread of ``pid`` in ns, from /proc/PID/task/*/schedstat
    (exact, unlike the 10 ms ticks behind psutil's cpu_times)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def sample_idle(pids: list[int], seconds: float) -> dict:
    """Percent of one core used by ``pids`` over ``seconds``: in total, per
    process, and the median of 0.5 s slices (robust to a stray wake-up)."""
    ns0 = [run_ns(p) for p in pids]
    per0 = [C.cpu_seconds([p]) for p in pids]
    t0 = time.perf_counter()
    slices = []
    last_cpu, last_t = sum(per0), t0
    while True:
        now = time.perf_counter()
        if now - t0 >= seconds:
            break
        time.sleep(min(0.5, seconds - (now - t0)))
        c, t = C.cpu_seconds(pids), time.perf_counter()
        slices.append(100.0 * (c - last_cpu) / (t - last_t))
        last_cpu, last_t = c, t
    wall = time.perf_counter() - t0
    per1 = [C.cpu_seconds([p]) for p in pids]
    ns1 = [run_ns(p) for p in pids]
    per = [100.0 * (b - a) / wall for a, b in zip(per0, per1)]
    exact = None
    if None not in ns0 and None not in ns1:
        exact = sum(100.0 * (b - a) / 1e9 / wall for a, b in zip(ns0, ns1))
    return {"pct_one_core": sum(per), "per_process_pct": per, "seconds": wall,
            "schedstat_pct_one_core": exact,
            "slice_median_pct": C.median(slices), "slice_max_pct": max(slices, default=0.0)}


def wake_latency(eng: engine.Engine, n: int, gap: float) -> list[float]:
    """Seconds from submit() of one event to flush() returning, after ``gap``
    seconds of idleness each time."""
    out = []
    ev = C.gen_events(n, 64, seed=7, late_fraction=0.0)
    for i in range(n):
        time.sleep(gap)
        one = ev[i:i + 1]
        t0 = time.perf_counter()
        eng.submit(one)
        eng.flush()
        out.append(time.perf_counter() - t0)
    return out


def fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _queue_worker(q) -> None:
    while True:
        item = q.get()
        if item is None:
            return


def python_reference(seconds: float) -> dict:
    """A pure-Python worker process blocked on a multiprocessing.Queue."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_queue_worker, args=(q,), daemon=True)
    p.start()
    try:
        q.put(1)
        time.sleep(0.5)
        return sample_idle([p.pid], seconds)
    finally:
        q.put(None)
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join(5)
        q.close()


def main(argv: list[str] | None = None) -> C.Report:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--wait", default=",".join(reversed(engine.WAIT_STRATEGIES)),
                   help="comma-separated wait strategies (default block,sleep,yield,spin)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--seconds", type=float, default=None,
                   help="measurement window per strategy (default 3, quick 1)")
    p.add_argument("--settle", type=float, default=0.5,
                   help="seconds left idle before measuring (default 0.5)")
    p.add_argument("--wakeups", type=int, default=None,
                   help="wake-ups timed after the window (default 20, quick 5)")
    C.add_common_args(p, repeats=False, baseline_events=False)
    args = p.parse_args(argv)
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    wakeups = args.wakeups if args.wakeups is not None else (5 if args.quick else 20)
    waits = [w.strip() for w in args.wait.split(",") if w.strip()]
    con = C.console()
    C.print_header(con, f"idle CPU of an engine with {args.workers} workers", args)
    rep = C.Report("idle", vars(args))

    from rich.table import Table

    t = Table(title=f"idle engine, {args.workers} workers, {seconds:g} s window")
    for col in ("wait", "CPU % of one core (all workers, psutil)", "same, schedstat",
                "per worker %", "0.5 s slices: median / max %", "wake-up p50 us",
                "wake-up max us"):
        t.add_column(col, justify="right")
    for wait in waits:
        with engine.Engine(workers=args.workers, wait=wait, table_capacity=4096) as eng:
            eng.submit(C.gen_events(10_000, 1000, args.seed))
            eng.flush()
            time.sleep(args.settle)
            r = sample_idle(eng.pids, seconds)
            wl = wake_latency(eng, wakeups, 0.05) if wakeups else []
        r["wait"] = wait
        r["wake_p50_us"] = 1e6 * C.median(wl) if wl else None
        r["wake_max_us"] = 1e6 * max(wl) if wl else None
        r["wake_us"] = [1e6 * x for x in wl]
        rep.rows.append(C.Result(f"idle/{wait}", {"wait": wait, "workers": args.workers}, r))
        style = None if wait in CHEAP else "yellow"
        t.add_row(wait, f"{r['pct_one_core']:.2f}", fmt_pct(r["schedstat_pct_one_core"]),
                  " / ".join(f"{x:.2f}" for x in r["per_process_pct"]),
                  f"{r['slice_median_pct']:.2f} / {r['slice_max_pct']:.2f}",
                  "-" if not wl else f"{r['wake_p50_us']:,.0f}",
                  "-" if not wl else f"{r['wake_max_us']:,.0f}", style=style)
    ref = python_reference(seconds)
    rep.baseline = {"kind": "python process blocked in multiprocessing.Queue.get()", **ref}
    t.add_row("baseline", f"{ref['pct_one_core']:.2f}", fmt_pct(ref["schedstat_pct_one_core"]),
              "-",
              f"{ref['slice_median_pct']:.2f} / {ref['slice_max_pct']:.2f}", "-", "-",
              style="dim")
    con.print(t)
    con.print("[dim]baseline: one pure-Python process blocked in multiprocessing.Queue.get(), "
              "sampled the same way. Wake-up: submit one event after 50 ms idle, until "
              "flush() returns (includes the flush's own wait).[/]")
    for r in rep.rows:
        w = r.values["wait"]
        v = r.values["schedstat_pct_one_core"]
        if v is None:
            v = r.values["pct_one_core"]
        if w in CHEAP:
            rep.target(f"idle CPU ({w})", "< 2% of one core", f"{v:.3f}%", v < TARGET_PCT)
        else:
            rep.target(f"idle CPU ({w})", "burns CPU by design", f"{v:.1f}%", None)
    if "spin" in waits:
        rep.notes.append("spin busy-waits: each idle worker keeps a core at 100% "
                         "(on this 2-core machine that starves everything else)")
    rep.finish(con, args.json)
    return rep


if __name__ == "__main__":
    main()
