"""Ring throughput between two processes, by batch size.

A producer process publishes batches of 32-byte events into one SPSC ring in
shared memory; this process consumes them with ``Ring.consume_checksum``
(everything available as one batch, folded into a checksum that is verified
at the end).  Reported: median events/s per batch size, next to an
in-process memcpy of the same batches (the ceiling of any ring) and the
pure-Python dict loop (the baseline), both measured in this run.

Target: >= 150 M events/s at batch 4096.

    python bench/ring.py                 # batches 64, 512, 4096, 32768
    python bench/ring.py --quick
    python bench/ring.py --wait block,spin --capacity 64k
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np

import engine
from engine import _ring
from engine.core.shm import Segment

try:  # run as a script (bench/ on sys.path) or imported as bench.ring
    import common as C
except ImportError:  # pragma: no cover
    from bench import common as C

HEADER = 0
PRODUCER_BELL = 256
CONSUMER_BELL = 320
DATA = 4096
TARGET_BATCH = 4096
TARGET_RATE = 150e6
MASK64 = (1 << 64) - 1
# Distinct batches the producer cycles through (its source stays in cache).
SOURCE_BATCHES = 4


def source_events(batch: int) -> np.ndarray:
    """SOURCE_BATCHES consecutive batches with keys 1, 2, 3, ..."""
    n = batch * SOURCE_BATCHES
    ev = np.zeros(n, engine.EVENT_DTYPE)
    ev["key"] = np.arange(1, n + 1, dtype=np.uint64)
    ev["ts"] = C.TS0
    ev["value"] = np.arange(n, dtype=np.float64) * 0.5
    return ev


def expected_checksum(batch: int, batches: int) -> tuple[int, int]:
    ev = source_events(batch)
    per = [int(ev["key"][i * batch:(i + 1) * batch].sum()) for i in range(SOURCE_BATCHES)]
    total = sum(per[i % SOURCE_BATCHES] for i in range(batches))
    return batch * batches, total & MASK64


def producer_main(seg_name: str, wait: str, conn) -> None:
    """Producer process: attach, then publish what each command asks for."""
    seg = Segment.attach(seg_name)
    ring = _ring.Ring(seg.buf, HEADER, wait=wait)
    try:
        conn.send("ready")
        while True:
            cmd = conn.recv()
            if cmd is None:
                break
            batch, batches = cmd
            src = source_events(batch)
            views = [src[i * batch:(i + 1) * batch] for i in range(SOURCE_BATCHES)]
            conn.send("armed")
            conn.recv()  # go
            publish = ring.publish
            t0 = time.perf_counter()
            for i in range(batches):
                publish(views[i % SOURCE_BATCHES])
            conn.send(time.perf_counter() - t0)
    finally:
        ring.release_buffer()
        seg.close()


def run_ring(batch: int, events: int, repeats: int, capacity: int, wait: str,
             max_calls: int) -> dict:
    """Median events/s of one batch size (a fresh ring and producer)."""
    batches = max(1, min(events // batch, max_calls))
    nbytes = DATA + capacity * engine.EVENT_DTYPE.itemsize
    seg = Segment.create(nbytes, "bench")
    ring = None
    proc = None
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    try:
        _ring.init_header(seg.buf, HEADER, capacity, DATA, PRODUCER_BELL, CONSUMER_BELL)
        ring = _ring.Ring(seg.buf, HEADER, wait=wait)
        proc = ctx.Process(target=producer_main, args=(seg.name, wait, child), daemon=True)
        proc.start()
        if not parent.poll(60) or parent.recv() != "ready":
            raise RuntimeError("producer did not start")
        want_n, want_ksum = expected_checksum(batch, batches)
        rates, prod_rates, consumer_batches = [], [], []
        ok = True
        for rep in range(repeats + 1):  # the first round warms up
            parent.send((batch, batches))
            parent.recv()  # armed
            consume = ring.consume_checksum
            got = ksum = calls = 0
            t0 = time.perf_counter()
            parent.send("go")
            while got < want_n:
                n, _first, ks, _vs, _ordered = consume()
                got += n
                ksum += ks
                calls += 1
            dt = time.perf_counter() - t0
            prod_dt = parent.recv()
            ok = ok and got == want_n and (ksum & MASK64) == want_ksum
            if rep:
                rates.append(got / dt)
                prod_rates.append(got / prod_dt)
                consumer_batches.append(got / calls)
        parent.send(None)
        proc.join(30)
        return {
            "batch": batch, "events": want_n, "repeats": repeats, "wait": wait,
            "capacity": capacity, "events_per_s": C.median(rates), "rates": rates,
            "producer_events_per_s": C.median(prod_rates),
            "mean_consumed_batch": C.median(consumer_batches),
            "bytes_per_s": C.median(rates) * engine.EVENT_DTYPE.itemsize,
            "checksum_ok": ok,
        }
    finally:
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(5)
        parent.close()
        child.close()
        if ring is not None:
            ring.release_buffer()
        seg.close()
        seg.unlink()


def memcpy_rate(batch: int, events: int, repeats: int) -> float:
    """In-process copy of the same batches into a ring-sized buffer: the
    ceiling of any ring (one process, one copy, no cursors)."""
    # Copied as raw u64 words: NumPy's structured-dtype copy is slower than
    # memcpy and would flatter the ring.
    words = batch * engine.EVENT_DTYPE.itemsize // 8
    src = source_events(batch).view(np.uint64)
    slots = max(16, (1 << 16) // batch)
    dst = np.empty(slots * words, np.uint64)
    views = [src[i * words:(i + 1) * words] for i in range(SOURCE_BATCHES)]
    outs = [dst[i * words:(i + 1) * words] for i in range(slots)]
    batches = max(1, min(events // batch, 200_000))
    copyto = np.copyto

    def run():
        for i in range(batches):
            copyto(outs[i % slots], views[i % SOURCE_BATCHES])

    secs = C.time_repeats(run, repeats)
    return batches * batch / C.median(secs)


def main(argv: list[str] | None = None) -> C.Report:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--batches", type=C.parse_int_list, default=[64, 512, 4096, 32768],
                   help="batch sizes in events (default 64,512,4096,32768)")
    p.add_argument("--events", type=C.parse_count, default=None,
                   help="events per timed repeat (default 40M, quick 5M)")
    p.add_argument("--capacity", type=lambda s: C.parse_int_list(s)[0], default=1 << 16,
                   help="ring capacity in records, a power of two (default 64k; doubled "
                        "while below twice the batch)")
    p.add_argument("--wait", default="block",
                   help="comma-separated wait strategies of both ends (default block)")
    p.add_argument("--max-calls", type=int, default=300_000,
                   help="cap on publish calls per repeat (bounds the small-batch runs)")
    C.add_common_args(p)
    args = p.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 5)
    events = args.events or (5_000_000 if args.quick else 40_000_000)
    if args.quick:
        args.max_calls = min(args.max_calls, 40_000)
    capacity = args.capacity
    waits = [w.strip() for w in args.wait.split(",") if w.strip()]
    con = C.console()
    C.print_header(con, "ring throughput, one producer process -> one consumer process", args)

    rep = C.Report("ring", vars(args))
    base = C.measure_python_baseline(100_000, args.baseline_events or
                                     (50_000 if args.quick else 200_000),
                                     max(3, repeats // 2), args.seed)
    rep.baseline = base.as_dict()

    from rich.table import Table

    t = Table(title=f"SPSC ring between two processes (capacity {capacity} records, "
                    f"median of {repeats})")
    for col in ("wait", "batch", "events", "consumer M ev/s", "GB/s", "producer M ev/s",
                "memcpy M ev/s", "% of memcpy", "vs pure Python", "checksum"):
        t.add_column(col, justify="right")
    for wait in waits:
        for batch in args.batches:
            cap = capacity
            while cap < 2 * batch:
                cap *= 2
            r = run_ring(batch, events, repeats, cap, wait, args.max_calls)
            r["memcpy_events_per_s"] = memcpy_rate(batch, min(events, 20_000_000), repeats)
            r["ratio_vs_python"] = r["events_per_s"] / base.rate
            rep.rows.append(C.Result(f"ring/{wait}/{batch}", {"batch": batch, "wait": wait,
                                                             "capacity": cap}, r))
            t.add_row(wait, f"{batch:,}", f"{r['events']:,}",
                      f"{r['events_per_s'] / 1e6:,.1f}",
                      f"{r['bytes_per_s'] / 1e9:,.2f}",
                      f"{r['producer_events_per_s'] / 1e6:,.1f}",
                      f"{r['memcpy_events_per_s'] / 1e6:,.1f}",
                      f"{100 * r['events_per_s'] / r['memcpy_events_per_s']:,.0f}%",
                      C.fmt_ratio(r["ratio_vs_python"]),
                      "ok" if r["checksum_ok"] else "[red]BAD[/]")
    t.add_row("baseline", "-", f"{base.events:,}", f"{base.rate / 1e6:,.2f}", "-", "-", "-",
              "-", "1.0x", "-", style="dim")
    con.print(t)
    con.print(f"[dim]baseline: pure-Python dict-of-series fold (count, sum, min, max, "
              f"Welford, ewma, last/stale), 100k series, {base.events:,} events, "
              f"{C.fmt_rate(base.rate)} (median of {base.repeats}); it does the per-series "
              f"work a ring does not, so the ratio is what moving events costs "
              f"against what Python needs just to fold them.[/]")

    for wait in waits:
        row = next((r for r in rep.rows if r.params["batch"] == TARGET_BATCH
                    and r.params["wait"] == wait), None)
        if row is not None:
            v = row.values["events_per_s"]
            rep.target(f"ring @4096 ({wait})", ">= 150 M ev/s", f"{v / 1e6:,.1f} M ev/s",
                       v >= TARGET_RATE and row.values["checksum_ok"])
    rep.finish(con, args.json)
    return rep


if __name__ == "__main__":
    main()
