"""Resident memory of the engine over a long stream: it must stay flat.

An engine with 2 workers and 100k series is fed ``--events`` events (default
20M; the target run is 100M) in batches of 65536 from a pre-generated stream
whose event times move forward on every pass.  The RSS of this process and
of every worker (psutil) is sampled at regular event counts.  After a
warm-up (every series inserted, every page of the tables and rings touched)
it should not grow: growth is reported per process, with the slope of a
least-squares line through the samples after warm-up.

RSS counts the pages of shared memory a process has touched, so it rises
while the tables fill during warm-up; "private" is RSS minus shared pages.

Baseline (same run): the pure-Python dict-of-series loop: its events/s, and
the memory its dict takes for the same series against the engine's table.

Target: flat after warm-up (growth below 1 MiB per process, well under the
noise of a Python process).

    python bench/rss.py                     # 20M events
    python bench/rss.py --events 100M       # the target run (a few seconds per 10M)
    python bench/rss.py --quick
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

import numpy as np
import psutil

import engine

try:
    import common as C
except ImportError:  # pragma: no cover
    from bench import common as C

FLAT_MIB = 1.0
MIB = 2**20


def rss_of(procs: list[psutil.Process]) -> list[tuple[int, int]]:
    out = []
    for p in procs:
        try:
            m = p.memory_info()
            out.append((m.rss, m.rss - m.shared))
        except psutil.NoSuchProcess:
            out.append((0, 0))
    return out


def python_state_bytes(series: int) -> int:
    """Bytes of Python objects the baseline's dict holds for ``series``."""
    gc.collect()
    tracemalloc.start()
    state: dict = {}
    C.python_fold(*C.columns(C.all_series_once(series)), state)
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del state
    gc.collect()
    return size


def slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    return float(np.polyfit(np.asarray(xs), np.asarray(ys), 1)[0])


def main(argv: list[str] | None = None) -> C.Report:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--events", type=C.parse_count, default=None,
                   help="events in total (default 20M, quick 4M; target run 100M)")
    p.add_argument("--warmup", type=C.parse_count, default=None,
                   help="events before the reference sample (default 2M, quick 1M)")
    p.add_argument("--series", type=C.parse_count, default=100_000,
                   help="distinct series (default 100k)")
    p.add_argument("--batch", type=int, default=65536, help="events per submit()")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--samples", type=int, default=40, help="RSS samples over the run")
    p.add_argument("--pool", type=C.parse_count, default=None,
                   help="distinct events generated and cycled through (default 2M)")
    p.add_argument("--wait", default="block", choices=engine.WAIT_STRATEGIES)
    C.add_common_args(p, repeats=False)
    args = p.parse_args(argv)
    total = args.events or (4_000_000 if args.quick else 20_000_000)
    warmup = args.warmup or (1_000_000 if args.quick else 2_000_000)
    pool = args.pool or (1_000_000 if args.quick else 2_000_000)
    bevents = args.baseline_events or (30_000 if args.quick else 150_000)
    con = C.console()
    C.print_header(con, "RSS over a long stream", args)
    rep = C.Report("rss", vars(args))

    base = C.measure_python_baseline(args.series, bevents, 3, args.seed)
    py_bytes = python_state_bytes(args.series)
    ev = C.gen_events(pool, args.series, args.seed)
    pool = len(ev) - len(ev) % args.batch or len(ev)
    views = [ev[i:i + args.batch] for i in range(0, pool, args.batch)]
    per_sample = max(args.batch, total // args.samples)

    samples = []  # (events, seconds, [(rss, private) per process])
    with engine.Engine(workers=args.workers, table_capacity=args.series,
                       wait=args.wait) as eng:
        procs = [psutil.Process()] + [psutil.Process(pid) for pid in eng.pids]
        names = ["parent"] + [f"worker {i}" for i in range(args.workers)]
        table_bytes = eng.config.table_bytes() * args.workers
        samples.append((0, 0.0, rss_of(procs)))
        done = 0
        next_sample = per_sample
        t0 = time.perf_counter()
        submit_s = 0.0
        while done < total:
            for v in views:
                if done >= total:
                    break
                s0 = time.perf_counter()
                submit_s -= s0
                eng.submit(v)
                submit_s += time.perf_counter()
                done += len(v)
                if done >= next_sample:
                    eng.flush()
                    samples.append((done, time.perf_counter() - t0, rss_of(procs)))
                    next_sample += per_sample
            C.advance_time(ev)
        eng.flush()
        elapsed = time.perf_counter() - t0
        if samples[-1][0] != done:
            samples.append((done, elapsed, rss_of(procs)))
        st, _lag = C.wait_applied(eng, done)
        ok = st["applied"] == done and st["rejected_table_full"] == 0

    rate = done / elapsed
    ref_i = next(i for i, s in enumerate(samples) if s[0] >= warmup)
    post = samples[ref_i:]
    from rich.table import Table

    t = Table(title=f"RSS (MiB) over {done:,} events, {args.series:,} series, "
                    f"{args.workers} workers; reference after {samples[ref_i][0]:,} events")
    for col in ("process", "start", "after warm-up", "end", "max after warm-up",
                "growth after warm-up", "slope MiB / 100M ev", "private: warm-up -> end",
                "flat?"):
        t.add_column(col, justify="right")
    flat_all = True
    for j, name in enumerate(names):
        r0 = samples[0][2][j][0] / MIB
        rw = post[0][2][j][0] / MIB
        re = post[-1][2][j][0] / MIB
        rmax = max(s[2][j][0] for s in post) / MIB
        pw = post[0][2][j][1] / MIB
        pe = post[-1][2][j][1] / MIB
        sl = slope([s[0] for s in post], [s[2][j][0] / MIB for s in post]) * 1e8
        growth = rmax - rw
        flat = growth < FLAT_MIB
        flat_all = flat_all and flat
        rep.rows.append(C.Result(f"rss/{name}", {"process": name}, {
            "start_mib": r0, "warm_mib": rw, "end_mib": re, "max_after_warm_mib": rmax,
            "growth_mib": growth, "end_minus_warm_mib": re - rw, "slope_mib_per_100m": sl,
            "private_warm_mib": pw, "private_end_mib": pe, "flat": flat}))
        t.add_row(name, f"{r0:,.1f}", f"{rw:,.1f}", f"{re:,.1f}", f"{rmax:,.1f}",
                  f"{growth:+,.2f}", f"{sl:+,.3f}", f"{pw:,.1f} -> {pe:,.1f}",
                  "yes" if flat else "[red]NO[/]")
    con.print(t)

    tl = Table(title="timeline (every ~10% of the run)")
    tl.add_column("events", justify="right")
    tl.add_column("s", justify="right")
    for name in names:
        tl.add_column(f"{name} MiB", justify="right")
    step = max(1, len(samples) // 10)
    for s in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        tl.add_row(f"{s[0]:,}", f"{s[1]:.2f}", *(f"{x[0] / MIB:,.1f}" for x in s[2]))
    con.print(tl)

    rep.baseline = {**base.as_dict(), "python_state_bytes": py_bytes,
                    "python_bytes_per_series": py_bytes / args.series}
    rep.rows.append(C.Result("rss/throughput", {}, {
        "events": done, "seconds": elapsed, "events_per_s": rate,
        "submit_seconds": submit_s, "ratio_vs_python": rate / base.rate, "counts_ok": ok,
        "table_bytes": table_bytes, "table_bytes_per_series": table_bytes / args.series,
    }))
    con.print(f"throughput during the run: {C.fmt_rate(rate)} "
              f"({C.fmt_ratio(rate / base.rate)} the pure-Python loop's "
              f"{C.fmt_rate(base.rate)}), counts {'ok' if ok else 'BAD'}")
    con.print(f"state memory: engine tables {table_bytes / MIB:,.1f} MiB preallocated "
              f"({table_bytes / args.series:,.0f} B/series incl. index and headroom); the "
              f"pure-Python dict {py_bytes / MIB:,.1f} MiB ({py_bytes / args.series:,.0f} "
              f"B/series, tracemalloc)")
    growth = max(r.values["growth_mib"] for r in rep.rows if "growth_mib" in r.values)
    rep.target(f"RSS flat over {done / 1e6:,.0f}M events", f"growth < {FLAT_MIB:g} MiB per "
               f"process after warm-up", f"max growth {growth:+.2f} MiB", flat_all and ok)
    if done < 100_000_000:
        rep.notes.append("the target run is --events 100M; this run was shorter")
    rep.finish(con, args.json)
    return rep


if __name__ == "__main__":
    main()
