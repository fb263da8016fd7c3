"""End-to-end throughput of the embedded engine, by number of workers.

``Engine.submit`` validates and shards each batch into the workers' rings
(in this process); the worker processes drain their rings into their state
tables; ``Engine.flush`` returns once everything submitted is applied.  One
timed repeat = submit every batch of a pre-generated stream, then flush.
100k series (8 metrics per host), keys uniform, 1% late events; all series
are inserted before timing.  The pure-Python dict-of-series loop over the
same stream shape is measured in the same run.

Targets: with 2 workers >= 30 M events/s and >= 30x the pure-Python loop.

    python bench/embedded.py                 # workers 1,2,4; batches 4096, 65536
    python bench/embedded.py --quick
    python bench/embedded.py --workers 2 --batches 4096,16384,65536 --wait spin
"""

from __future__ import annotations

import argparse
import gc
import time

import psutil

import engine

try:
    import common as C
except ImportError:  # pragma: no cover
    from bench import common as C

TARGET_WORKERS = 2
TARGET_RATE = 30e6
TARGET_RATIO = 30.0


def run_workers(workers: int, ev, batches: list[int], series: int, repeats: int,
                wait: str) -> list[dict]:
    out = []
    t0 = time.perf_counter()
    with engine.Engine(workers=workers, table_capacity=series, wait=wait) as eng:
        start_s = time.perf_counter() - t0
        eng.submit(C.all_series_once(series))
        eng.flush()
        C.wait_applied(eng, series)
        me = psutil.Process()
        for batch in batches:
            views = [ev[i:i + batch] for i in range(0, len(ev), batch)]
            submit = eng.submit
            before = eng.stats()
            cpu0 = C.cpu_seconds(eng.pids)
            pcpu0 = sum(me.cpu_times()[:2])
            wall0 = time.perf_counter()

            def run(views=views, submit=submit):
                for v in views:
                    submit(v)
                eng.flush()

            secs = C.time_repeats(run, repeats, warmup=1, setup=lambda: C.advance_time(ev))
            wall = time.perf_counter() - wall0
            worker_cpu = (C.cpu_seconds(eng.pids) - cpu0) / wall
            parent_cpu = (sum(me.cpu_times()[:2]) - pcpu0) / wall
            after, lag = C.wait_applied(eng, before["applied"] + len(ev) * (repeats + 1))
            applied = after["applied"] - before["applied"]
            ok = (applied == len(ev) * (repeats + 1)
                  and after["rejected_invalid"] == before["rejected_invalid"]
                  and after["rejected_table_full"] == 0 and after["series"] == series)
            rates = [len(ev) / s for s in secs]
            out.append({
                "workers": workers, "batch": batch, "series": series, "events": len(ev),
                "repeats": repeats, "wait": wait, "events_per_s": C.median(rates),
                "rates": rates, "start_s": start_s, "counts_ok": ok,
                "worker_cpu_cores": worker_cpu, "parent_cpu_cores": parent_cpu,
                "counter_lag_s": lag,
            })
    gc.collect()
    return out


def main(argv: list[str] | None = None) -> C.Report:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--workers", type=C.parse_int_list, default=[1, 2, 4],
                   help="worker counts (default 1,2,4)")
    p.add_argument("--batches", type=C.parse_int_list, default=[4096, 65536],
                   help="events per submit() (default 4096,65536)")
    p.add_argument("--series", type=C.parse_count, default=100_000,
                   help="distinct series (default 100k)")
    p.add_argument("--events", type=C.parse_count, default=None,
                   help="events per timed repeat (default 6M, quick 1.5M)")
    p.add_argument("--wait", default="block", choices=engine.WAIT_STRATEGIES,
                   help="wait strategy of the engine (default block)")
    C.add_common_args(p)
    args = p.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 5)
    events = args.events or (1_500_000 if args.quick else 6_000_000)
    bevents = args.baseline_events or (30_000 if args.quick else 150_000)
    con = C.console()
    C.print_header(con, "embedded engine end to end: submit -> rings -> workers -> flush", args)
    rep = C.Report("embedded", vars(args))

    ev = C.gen_events(events, args.series, args.seed)
    base = C.measure_python_baseline(args.series, bevents, 3, args.seed)
    rep.baseline = base.as_dict()

    from rich.table import Table

    t = Table(title=f"Engine.submit + flush, {args.series:,} series, wait={args.wait}, "
                    f"median of {repeats}")
    for col in ("workers", "batch", "events", "M ev/s", "vs pure Python", "worker CPU",
                "parent CPU", "start s", "counts"):
        t.add_column(col, justify="right")
    for w in args.workers:
        for r in run_workers(w, ev, args.batches, args.series, repeats, args.wait):
            r["python_events_per_s"] = base.rate
            r["ratio_vs_python"] = r["events_per_s"] / base.rate
            rep.rows.append(C.Result(f"embedded/{w}/{r['batch']}",
                                     {"workers": w, "batch": r["batch"]}, r))
            t.add_row(str(w), f"{r['batch']:,}", f"{r['events']:,}",
                      f"{r['events_per_s'] / 1e6:,.1f}", C.fmt_ratio(r["ratio_vs_python"]),
                      f"{r['worker_cpu_cores']:.2f} cores", f"{r['parent_cpu_cores']:.2f} cores",
                      f"{r['start_s']:.2f}", "ok" if r["counts_ok"] else "[red]BAD[/]")
    t.add_row("baseline", "-", f"{base.events:,}", f"{base.rate / 1e6:,.2f}", "1.0x", "-",
              "-", "-", "-", style="dim")
    con.print(t)
    con.print(f"[dim]baseline: pure-Python dict-of-series fold, same statistics, "
              f"{args.series:,} series, {base.events:,} events, {C.fmt_rate(base.rate)} "
              f"(median of {base.repeats}; conversion to Python objects not timed). "
              f"CPU columns: CPU time over wall time during the timed repeats "
              f"({psutil.cpu_count()} cores on this machine).[/]")
    for r in rep.rows:
        if r.params["workers"] != TARGET_WORKERS:
            continue
        v, ratio = r.values["events_per_s"], r.values["ratio_vs_python"]
        rep.target(f"2 workers, batch {r.params['batch']}", ">= 30 M ev/s",
                   f"{v / 1e6:,.1f} M ev/s", v >= TARGET_RATE and r.values["counts_ok"])
        rep.target(f"2 workers, batch {r.params['batch']}", ">= 30x pure Python",
                   f"{ratio:,.1f}x", ratio >= TARGET_RATIO)
    if psutil.cpu_count() and max(args.workers) + 1 > psutil.cpu_count():
        rep.notes.append(f"{psutil.cpu_count()} cores: with w workers plus the submitting "
                         "process, w >= 2 oversubscribes the machine")
    rep.finish(con, args.json)
    return rep


if __name__ == "__main__":
    main()
