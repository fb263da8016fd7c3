"""Update-kernel throughput on one core, by number of series, with the
health layer on (windows, sketch, rules) and off (plain statistics).

``Table.apply`` folds batches of 4096 events (slices of a pre-generated
array, keys uniform over the series, 1% late events) into a state table
whose series were all inserted before timing: the steady state of a worker.
Each series count is measured with two input streams:

* in cache: a 256k-event (8 MB) array replayed, its event times moved
  forward between passes.  This is how a worker sees its input: a ring of
  64k records (2 MB) that the producer has just written, hot in cache.
* from memory: one 8M-event (256 MB) array streamed once per repeat.  It
  does not fit in cache, and streaming it evicts the state table from the
  shared last-level cache too, so the table's misses go to DRAM.

The table lives in a /dev/shm segment, as a worker's does (on this machine
tmpfs gets no transparent huge pages, so a large table costs TLB misses;
``--memory numpy`` shows the difference huge pages make).

The pure-Python dict-of-series loop doing the same statistics over the same
stream shape is measured in this run at every series count, on a smaller
sample.

Each series count runs both modes on fresh tables, interleaved pass by pass
(so that a shared machine's drift hits both alike): ``plain`` (lifetime
statistics only: the kernel of issue #2) and ``health`` (everything a worker
does: 1 s windows with 0.5 s lateness, the three views, the quantile sketch,
and a rule on every series: ewma for half the metrics, p99 for a quarter,
win_max for the rest, thresholds that fire now and then).

Targets at 100k series, input in cache (the worker's situation; the
from-memory figures are reported beside them): plain >= 70 M events/s, and
health >= 50% of plain measured in the same run.

    python bench/kernel.py                 # 1k, 100k, 1M series
    python bench/kernel.py --quick
    python bench/kernel.py --series 1k,10k,100k --batch 65536
    python bench/kernel.py --series 100k --pool 64k --events 32M
    python bench/kernel.py --series 100k --memory numpy     # table on huge pages, if THP allows
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np

import engine
from engine import _table
from engine.core.config import EngineConfig
from engine.core.shm import Segment

try:
    import common as C
except ImportError:  # pragma: no cover
    from bench import common as C

TARGET_SERIES = 100_000
TARGET_RATE = 70e6
TARGET_HEALTH_RATIO = 0.5
MODES = ("plain", "health")

#: The health mode's rules, over bench/common.py's metrics m0..m7 (values
#: are normal(50, 15)).
HEALTH_RULES = {
    "defaults": {"ttl": "0", "lateness": "500ms"},
    "rule": [
        *({"metric": f"m{i}", "stat": "ewma", "warn": 60, "crit": 75, "clear": 55}
          for i in range(4)),
        *({"metric": f"m{i}", "stat": "p99", "warn": 85, "crit": 100, "clear": 80,
           "for": "50ms"} for i in (4, 5)),
        *({"metric": f"m{i}", "stat": "win_max", "warn": 90, "crit": 100, "clear": 85}
          for i in (6, 7)),
    ],
}


def kernel_settings(mode: str) -> _table.Settings:
    from engine.health.rules import Rules

    rules = Rules.load(HEALTH_RULES)
    return _table.Settings(
        ts_min=engine.DEFAULT_TS_MIN, ts_max=engine.DEFAULT_TS_MAX, window_ns=10**9,
        lateness_ns=rules.lateness_ns, half_life_ns=5e9, ttl_ns=0,
        rules=rules.compile() if mode == "health" else None, health=mode == "health")


def make_table(series: int, memory: str = "shm"):
    """A table for ``series`` series, in a /dev/shm segment like a worker's
    (``memory="shm"``) or in anonymous memory from NumPy, which Linux may
    back with transparent huge pages (``"numpy"``).  Returns (segment or
    array, table, bytes)."""
    limit = series
    slots = EngineConfig(table_capacity=limit).table_slots  # sized as an engine sizes it
    nbytes = _table.table_bytes(slots, limit)
    if memory == "shm":
        owner = Segment.create(nbytes, "bench")
        buf = owner.buf
    else:
        owner = buf = np.zeros(nbytes, np.uint8)
    _table.init_table(buf, slots, limit)
    return owner, _table.Table(buf), nbytes


def free_table(owner, table: _table.Table) -> None:
    table.release_buffer()
    if isinstance(owner, Segment):
        owner.close()
        owner.unlink()


def run_streams(runs: dict, ev: np.ndarray, batch: int, repeats: int) -> dict:
    """Median events/s of ``table.apply`` over all of ``ev`` per pass, for
    every mode of ``runs`` (``{mode: (table, settings)}``), interleaved: one
    pass of each mode in turn, the event times moved forward (untimed)
    before each round.  A shared machine's drift then hits every mode alike
    and the ratios stay honest."""
    views = [ev[i:i + batch] for i in range(0, len(ev), batch)]
    alerts = np.empty(batch, engine.ALERT_DTYPE)
    secs = {mode: [] for mode in runs}
    totals = {mode: [0, 0, 0, 0, 0] for mode in runs}
    for i in range(1 + repeats):                    # the first round is a warm-up
        C.advance_time(ev)
        for mode, (table, settings) in runs.items():
            apply, tot = table.apply, totals[mode]
            t0 = time.perf_counter()
            for v in views:
                a, inv, full, stale, _late, written, _dropped = apply(v, settings, alerts)
                tot[0] += a
                tot[1] += inv
                tot[2] += full
                tot[3] += stale
                tot[4] += written
            if i:
                secs[mode].append(time.perf_counter() - t0)
    out = {}
    for mode, t in secs.items():
        rates = [len(ev) / x for x in t]
        tot = totals[mode]
        out[mode] = {"events": len(ev), "repeats": repeats, "events_per_s": C.median(rates),
                     "rates": rates, "ns_per_event": 1e9 / C.median(rates),
                     "stale_fraction": tot[3] / max(1, tot[0]), "alerts": tot[4],
                     "counts_ok": tot[1] == 0 and tot[2] == 0
                     and tot[0] == len(ev) * (repeats + 1)}
    return out


def run_kernel(series: int, events: int, pool: int, batch: int, repeats: int,
               seed: int, memory: str = "shm", modes=MODES) -> dict:
    """Every mode on a fresh table of its own, the same streams, interleaved."""
    owners, runs, nbytes = [], {}, 0
    try:
        for mode in modes:
            owner, table, nbytes = make_table(series, memory)
            owners.append((owner, table))
            settings = kernel_settings(mode)
            table.apply(C.all_series_once(series), settings,
                        np.empty(series, engine.ALERT_DTYPE))
            assert table.used == series
            runs[mode] = (table, settings)
        # Replays of a small pool: many short passes make one median.
        cached = run_streams(runs, C.gen_events(pool, series, seed + 1), batch,
                             max(15, 3 * repeats))
        gc.collect()
        stream = C.gen_events(events, series, seed)
        # After the replays' event times, or nearly every event would be stale.
        stream["ts"] += 60 * 10**9
        streamed = run_streams(runs, stream, batch, repeats)
        return {mode: {"series": series, "batch": batch, "table_mib": nbytes / 2**20,
                       "memory": memory, "mode": mode,
                       "in_cache": cached[mode], "from_memory": streamed[mode],
                       "events_per_s": cached[mode]["events_per_s"],
                       "counts_ok": cached[mode]["counts_ok"] and streamed[mode]["counts_ok"]}
                for mode in modes}
    finally:
        for owner, table in owners:
            free_table(owner, table)


def main(argv: list[str] | None = None) -> C.Report:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--series", type=C.parse_count_list, default=[1_000, 100_000, 1_000_000],
                   help="series counts (default 1k,100k,1M)")
    p.add_argument("--events", type=C.parse_count, default=None,
                   help="events of the from-memory stream, one pass per repeat "
                        "(default 8M = 256 MB, quick 2M)")
    p.add_argument("--pool", type=C.parse_count, default=256 * 1024,
                   help="events of the in-cache stream, replayed (default 256k = 8 MB)")
    p.add_argument("--batch", type=int, default=4096, help="events per apply() call")
    p.add_argument("--modes", type=lambda t: [m.strip() for m in t.split(",")],
                   default=list(MODES), help="plain, health or both (default plain,health)")
    p.add_argument("--memory", choices=("shm", "numpy"), default="shm",
                   help="where the table lives: a /dev/shm segment as in a worker (default), "
                        "or NumPy memory, which may get transparent huge pages")
    C.add_common_args(p)
    args = p.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 5)
    events = args.events or (2_000_000 if args.quick else 8_000_000)
    bevents = args.baseline_events or (30_000 if args.quick else 150_000)
    con = C.console()
    C.print_header(con, "update kernel (Table.apply) on one core", args)
    rep = C.Report("kernel", vars(args))

    from rich.table import Table

    t = Table(title=f"Table.apply ({args.memory} table), batches of {args.batch}; input in cache: "
                    f"{args.pool:,} events replayed, median of {max(15, 3 * repeats)} passes; "
                    f"from memory: {events:,} events, median of {repeats}")
    for col in ("series", "mode", "table MiB", "in cache M ev/s", "ns/event",
                "from memory M ev/s", "ns/event", "health / plain (cache, memory)",
                "pure Python k ev/s", "in cache vs Python", "stale %", "alerts", "counts"):
        t.add_column(col, justify="right")
    baselines = {}
    for series in args.series:
        base = C.measure_python_baseline(series, bevents, 3, args.seed)
        baselines[series] = base.as_dict()
        plain = None
        gc.collect()
        time.sleep(0.05)
        results = run_kernel(series, events, args.pool, args.batch, repeats, args.seed,
                             args.memory, args.modes)
        gc.collect()
        for mode in args.modes:
            r = results[mode]
            r["python_events_per_s"] = base.rate
            for where in ("in_cache", "from_memory"):
                r[where]["ratio_vs_python"] = r[where]["events_per_s"] / base.rate
            r["ratio_vs_python"] = r["in_cache"]["ratio_vs_python"]
            vs_plain = ""
            if mode == "plain":
                plain = r
            elif plain is not None:
                for where in ("in_cache", "from_memory"):
                    r[where]["ratio_vs_plain"] = (r[where]["events_per_s"]
                                                  / plain[where]["events_per_s"])
                r["ratio_vs_plain"] = r["in_cache"]["ratio_vs_plain"]
                vs_plain = (f"{100 * r['in_cache']['ratio_vs_plain']:.0f}%, "
                            f"{100 * r['from_memory']['ratio_vs_plain']:.0f}%")
            rep.rows.append(C.Result(f"kernel/{mode}/{series}", {"series": series,
                                                                  "mode": mode}, r))
            c, m = r["in_cache"], r["from_memory"]
            t.add_row(f"{series:,}", mode, f"{r['table_mib']:,.1f}",
                      f"{c['events_per_s'] / 1e6:,.1f}", f"{c['ns_per_event']:.1f}",
                      f"{m['events_per_s'] / 1e6:,.1f}", f"{m['ns_per_event']:.1f}", vs_plain,
                      f"{base.rate / 1e3:,.0f}", C.fmt_ratio(c["ratio_vs_python"]),
                      f"{100 * m['stale_fraction']:.2f}", f"{c['alerts'] + m['alerts']:,}",
                      "ok" if r["counts_ok"] else "[red]BAD[/]")
    rep.baseline = {"per_series": baselines}
    con.print(t)
    con.print(f"[dim]baseline: pure-Python dict-of-series fold of the same statistics over "
              f"{bevents:,} events of the same stream (conversion to Python objects not "
              f"timed), median of 3, measured just before each kernel row.[/]")
    for mode in args.modes:
        row = next((r for r in rep.rows if r.params["series"] == TARGET_SERIES
                    and r.params["mode"] == mode), None)
        if row is None:
            continue
        for where, label in (("in_cache", "input in cache"),
                             ("from_memory", "input from memory")):
            v = row.values[where]
            judged = where == "in_cache"
            if mode == "plain":
                rep.target(f"plain kernel @100k series, {label}",
                           ">= 70 M ev/s" if judged else "(reported)",
                           f"{v['events_per_s'] / 1e6:,.1f} M ev/s",
                           (v["events_per_s"] >= TARGET_RATE and row.values["counts_ok"])
                           if judged else None)
            elif "ratio_vs_plain" in v:
                rep.target(f"health kernel vs plain @100k series, {label}",
                           ">= 50%" if judged else "(reported)",
                           f"{100 * v['ratio_vs_plain']:.0f}% "
                           f"({v['events_per_s'] / 1e6:,.1f} M ev/s)",
                           (v["ratio_vs_plain"] >= TARGET_HEALTH_RATIO
                            and row.values["counts_ok"]) if judged else None)
    rep.finish(con, args.json)
    return rep


if __name__ == "__main__":
    main()
