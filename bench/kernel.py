"""Update-kernel throughput on one core, by number of series.

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

Target: >= 70 M events/s at 100k series (judged with the input in cache,
the worker's situation; the from-memory figure is reported beside it).

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
from engine.config import EngineConfig
from engine.shm import Segment

try:
    import common as C
except ImportError:  # pragma: no cover
    from bench import common as C

TARGET_SERIES = 100_000
TARGET_RATE = 70e6


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


def run_stream(table: _table.Table, ev: np.ndarray, batch: int, repeats: int) -> dict:
    """Median events/s of ``table.apply`` over all of ``ev`` per repeat, its
    event times moved forward (untimed) before every pass."""
    ts_min, ts_max = engine.DEFAULT_TS_MIN, engine.DEFAULT_TS_MAX
    views = [ev[i:i + batch] for i in range(0, len(ev), batch)]
    apply = table.apply
    totals = [0, 0, 0, 0]

    def run():
        for v in views:
            a, inv, full, stale = apply(v, ts_min, ts_max, C.ALPHA)
            totals[0] += a
            totals[1] += inv
            totals[2] += full
            totals[3] += stale

    secs = C.time_repeats(run, repeats, warmup=1, setup=lambda: C.advance_time(ev))
    rates = [len(ev) / s for s in secs]
    ok = totals[1] == 0 and totals[2] == 0 and totals[0] == len(ev) * (repeats + 1)
    return {"events": len(ev), "repeats": repeats, "events_per_s": C.median(rates),
            "rates": rates, "ns_per_event": 1e9 / C.median(rates),
            "stale_fraction": totals[3] / max(1, totals[0]), "counts_ok": ok}


def run_kernel(series: int, events: int, pool: int, batch: int, repeats: int,
               seed: int, memory: str = "shm") -> dict:
    owner, table, nbytes = make_table(series, memory)
    try:
        table.apply(C.all_series_once(series), engine.DEFAULT_TS_MIN, engine.DEFAULT_TS_MAX,
                    C.ALPHA)
        assert table.used == series
        # Replays of a small pool: many short passes make one median.
        cached = run_stream(table, C.gen_events(pool, series, seed + 1), batch,
                            max(15, 3 * repeats))
        gc.collect()
        streamed = run_stream(table, C.gen_events(events, series, seed), batch, repeats)
        return {"series": series, "batch": batch, "table_mib": nbytes / 2**20,
                "memory": memory,
                "in_cache": cached, "from_memory": streamed,
                "events_per_s": cached["events_per_s"],
                "counts_ok": cached["counts_ok"] and streamed["counts_ok"]}
    finally:
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
    for col in ("series", "table MiB", "in cache M ev/s", "ns/event", "from memory M ev/s",
                "ns/event", "pure Python k ev/s", "in cache vs Python",
                "from memory vs Python", "stale %", "counts"):
        t.add_column(col, justify="right")
    baselines = {}
    for series in args.series:
        base = C.measure_python_baseline(series, bevents, 3, args.seed)
        baselines[series] = base.as_dict()
        gc.collect()
        time.sleep(0.05)
        r = run_kernel(series, events, args.pool, args.batch, repeats, args.seed, args.memory)
        gc.collect()
        r["python_events_per_s"] = base.rate
        for mode in ("in_cache", "from_memory"):
            r[mode]["ratio_vs_python"] = r[mode]["events_per_s"] / base.rate
        r["ratio_vs_python"] = r["in_cache"]["ratio_vs_python"]
        rep.rows.append(C.Result(f"kernel/{series}", {"series": series}, r))
        c, m = r["in_cache"], r["from_memory"]
        t.add_row(f"{series:,}", f"{r['table_mib']:,.1f}",
                  f"{c['events_per_s'] / 1e6:,.1f}", f"{c['ns_per_event']:.1f}",
                  f"{m['events_per_s'] / 1e6:,.1f}", f"{m['ns_per_event']:.1f}",
                  f"{base.rate / 1e3:,.0f}", C.fmt_ratio(c["ratio_vs_python"]),
                  C.fmt_ratio(m["ratio_vs_python"]), f"{100 * m['stale_fraction']:.2f}",
                  "ok" if r["counts_ok"] else "[red]BAD[/]")
    rep.baseline = {"per_series": baselines}
    con.print(t)
    con.print(f"[dim]baseline: pure-Python dict-of-series fold of the same statistics over "
              f"{bevents:,} events of the same stream (conversion to Python objects not "
              f"timed), median of 3, measured just before each kernel row.[/]")
    row = next((r for r in rep.rows if r.params["series"] == TARGET_SERIES), None)
    if row is not None:
        for mode, label in (("in_cache", "input in cache"), ("from_memory", "input from memory")):
            v = row.values[mode]["events_per_s"]
            judged = mode == "in_cache"
            rep.target(f"kernel @100k series, {label}",
                       ">= 70 M ev/s" if judged else "(reported)",
                       f"{v / 1e6:,.1f} M ev/s",
                       (v >= TARGET_RATE and row.values["counts_ok"]) if judged else None)
    rep.print_targets(con)
    rep.write_json(args.json)
    C.check_clean(con)
    return rep


if __name__ == "__main__":
    main()
