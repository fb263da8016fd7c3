"""How long a shard is out after a worker fault, what ingest does
meanwhile, and whether any accepted event was lost or applied twice
(issue 14, docs/faults.md).

An embedded engine ingests without pause from one producer thread (every
batch recorded in a ledger) while this script kills a worker with SIGKILL
``--kills`` times, alternating shards, each once the shard has served for a
while; then SIGSTOPs one ``--hangs`` times.  For each fault:

* recovery: from the signal to the shard applying again, i.e. its
  replacement moving the rings' consumer cursors past where the dead or
  stopped worker left them (read from shared memory every 0.5 ms);
* throughput during recovery: events applied by the whole engine in the
  second after the signal, against the median of the steady one-second
  windows of the same run.

At the end every series' count and sum are compared with the ledger:
lost and doubled events over all faults.

    python bench/recovery.py                      # 20 kills, 3 hangs
    python bench/recovery.py --kills 5 --hangs 1 --json recovery.json

Targets on a 2-core machine: p99 recovery <= 1 s after SIGKILL,
<= worker_timeout + 1 s after SIGSTOP; 0 lost and 0 doubled.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections import Counter

import numpy as np

import engine
from engine import _control
from engine.core.layout import RING_CONSUMED_OFFSET

try:
    import common as C
except ImportError:  # pragma: no cover
    from bench import common as C

BATCH = 65_536
HOSTS = 4096


def consumed(eng: engine.Engine, w: int) -> int:
    """Sum of the consumer cursors of worker w's rings."""
    buf, lay = eng._control_segment.buf, eng.layout
    return sum(_control.load_u64(buf, off + RING_CONSUMED_OFFSET)[0]
               for off in lay.rings_of_worker(w))


def applied(eng: engine.Engine) -> int:
    return sum(w["applied"] for w in eng.stats()["workers"])


class Ingest(threading.Thread):
    """Submits batches until stopped; keeps the ledger of what was accepted."""

    def __init__(self, eng: engine.Engine) -> None:
        super().__init__(name="ingest")
        self.eng = eng
        self.stop = threading.Event()
        self.count: Counter = Counter()
        self.total: Counter = Counter()
        self.events = 0

    def run(self) -> None:
        rng = np.random.default_rng(14)
        keys = np.array([engine.entity_id(f"host-{i:05d}") for i in range(HOSTS)], np.uint64)
        ev = np.zeros(BATCH, engine.EVENT_DTYPE)
        ev["metric"] = engine.metric_id("cpu")
        ts = engine.DEFAULT_TS_MIN + 10**18
        # One ledger update per distinct batch shape: every batch sends each
        # host the same number of events with the same values.
        ev["key"] = np.resize(keys, BATCH)
        ev["value"] = rng.integers(0, 8, BATCH).astype(np.float64)
        per_count = Counter(ev["key"].tolist())
        per_sum = Counter()
        for k, x in zip(ev["key"].tolist(), ev["value"].tolist()):
            per_sum[k] += x
        batches = 0
        while not self.stop.is_set():
            ev["ts"] = ts + np.arange(BATCH)
            ts += BATCH
            try:
                n = self.eng.submit(ev, timeout=0.5)
            except engine.errors.Backpressure as bp:
                # Part of it was taken: resend the rest next time round is
                # not needed here; count exactly what was accepted.
                part = ev[:bp.handled]
                for k, x in zip(part["key"].tolist(), part["value"].tolist()):
                    self.count[k] += 1
                    self.total[k] += x
                self.events += bp.accepted
                continue
            assert n == BATCH
            batches += 1
            self.events += n
        for k in per_count:
            self.count[k] += per_count[k] * batches
            self.total[k] += per_sum[k] * batches


def one_fault(eng: engine.Engine, w: int, sig: int, timeout: float) -> float:
    """Signal worker w; seconds until its shard applies again."""
    # The supervisor's record of the shard, read without stats(): polling
    # must not take the CPU the ingest and the replacement need.
    rec = eng._supervisor.records[w]
    before = rec.restarts
    pid = eng.pids[w]
    t0 = time.perf_counter()
    os.kill(pid, sig)
    # Where the faulty worker left its cursors: read once it is gone (or,
    # for a stopped one, once it cannot move them any more).
    while rec.restarts == before and rec.state == "ok":
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"worker {w} not seen faulty within {timeout}s")
        time.sleep(0.0005)
    left = consumed(eng, w)
    while consumed(eng, w) == left:
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"shard {w} not applying within {timeout}s")
        time.sleep(0.0005)
    return time.perf_counter() - t0


def rate_windows(samples: list[tuple[float, int]], width: float = 1.0) -> list[tuple[float, float]]:
    """(start, events/s) of consecutive windows of the applied-count samples."""
    out = []
    i = 0
    while i < len(samples):
        j = i
        while j < len(samples) and samples[j][0] - samples[i][0] < width:
            j += 1
        if j >= len(samples):
            break
        t0, a0 = samples[i]
        t1, a1 = samples[j]
        out.append((t0, (a1 - a0) / (t1 - t0)))
        i = j
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs (default 20)")
    p.add_argument("--hangs", type=int, default=3, help="SIGSTOPs (default 3)")
    p.add_argument("--worker-timeout", type=float, default=1.0,
                   help="seconds before a stopped worker is declared hung (default 1)")
    p.add_argument("--settle", type=float, default=1.5,
                   help="seconds a shard serves between two faults (default 1.5: past "
                        "stable_after, so no fault counts as a crash loop)")
    p.add_argument("--json", help="also write the figures as JSON here")
    args = p.parse_args(argv)
    con = C.console()
    C.print_header(con, "worker fault recovery", args)
    report = C.Report("recovery", vars(args))

    kill_s: list[float] = []
    hang_s: list[float] = []
    fault_at: list[float] = []
    samples: list[tuple[float, int]] = []
    with engine.Engine(workers=args.workers, worker_timeout=args.worker_timeout) as eng:
        ingest = Ingest(eng)
        ingest.start()
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                samples.append((time.perf_counter(), applied(eng)))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, name="sampler")
        sampler.start()
        try:
            time.sleep(args.settle)
            faults = ([("kill", signal.SIGKILL)] * args.kills
                      + [("hang", signal.SIGSTOP)] * args.hangs)
            for i, (kind, sig) in enumerate(faults):
                w = i % args.workers
                fault_at.append(time.perf_counter())
                took = one_fault(eng, w, sig, 10 + args.worker_timeout)
                (kill_s if kind == "kill" else hang_s).append(took)
                con.print(f"  {kind} {i + 1:2d}/{len(faults)} of worker {w}: applying again "
                          f"after {took * 1e3:7.1f} ms")
                deadline = time.monotonic() + 30
                while eng.state != "ok" and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(args.settle)
        finally:
            ingest.stop.set()
            ingest.join(60)
            sampling.set()
            sampler.join(5)
        eng.flush(60)
        snap = eng.snapshot()
        stats = eng.stats()

    got = dict(zip(snap["key"].tolist(), snap["count"].tolist()))
    got_sum = dict(zip(snap["key"].tolist(), snap["sum"].tolist()))
    lost = sum(max(0, c - got.get(k, 0)) for k, c in ingest.count.items())
    doubled = sum(max(0, got.get(k, 0) - c) for k, c in ingest.count.items())
    sums_off = sum(1 for k, s in ingest.total.items() if got_sum.get(k) != s)

    windows = rate_windows(samples)
    recovering = [r for t, r in windows if any(0 <= t - f < 1.0 or 0 <= f - t < 1.0
                                               for f in fault_at)]
    steady = [r for t, r in windows if all(abs(t - f) >= 1.0 for f in fault_at)]
    steady_rate = C.median(steady) if steady else float("nan")
    during = C.median(recovering) if recovering else float("nan")

    def pct(xs: list[float], q: float) -> float:
        return float(np.percentile(xs, q)) if xs else float("nan")

    rows = [("SIGKILL", kill_s, 1.0), ("SIGSTOP", hang_s, args.worker_timeout + 1.0)]
    from rich.table import Table
    t = Table(title="time from the signal to the shard applying again")
    for col in ("fault", "n", "p50 ms", "p99 ms", "max ms"):
        t.add_column(col, justify="right")
    for name, xs, goal in rows:
        if not xs:
            continue
        t.add_row(name, str(len(xs)), f"{pct(xs, 50) * 1e3:.1f}", f"{pct(xs, 99) * 1e3:.1f}",
                  f"{max(xs) * 1e3:.1f}")
        report.rows.append(C.Result(name, {"n": len(xs)},
                                    {"p50_s": pct(xs, 50), "p99_s": pct(xs, 99),
                                     "max_s": max(xs)}))
        report.target(f"p99 recovery after {name}", f"<= {goal:g} s", f"{pct(xs, 99):.3f} s",
                      pct(xs, 99) <= goal)
    con.print(t)
    ratio = during / steady_rate if steady_rate else float("nan")
    con.print(f"throughput: steady {C.fmt_rate(steady_rate)} events (median of "
              f"{len(steady)} one-second windows), in the second after a fault "
              f"{C.fmt_rate(during)} events (median of {len(recovering)}): "
              f"{ratio:.2f} of steady")
    con.print(f"ledger: {ingest.events:,} events accepted; lost {lost}, doubled {doubled}, "
              f"series with a wrong sum {sums_off}; restarts "
              f"{[w['restarts'] for w in stats['workers']]}, spans replayed "
              f"{sum(w['replayed_spans'] for w in stats['workers'])}, rows repaired "
              f"{sum(w['rows_repaired'] for w in stats['workers'])}")
    report.rows.append(C.Result("throughput", {}, {
        "steady_events_per_s": steady_rate, "recovering_events_per_s": during,
        "ratio": ratio}))
    report.rows.append(C.Result("ledger", {}, {
        "accepted": ingest.events, "lost": lost, "doubled": doubled, "wrong_sums": sums_off,
        "replayed_spans": sum(w["replayed_spans"] for w in stats["workers"]),
        "rows_repaired": sum(w["rows_repaired"] for w in stats["workers"])}))
    report.target("lost and doubled over all faults", "0 and 0", f"{lost} and {doubled}",
                  lost == 0 and doubled == 0 and sums_off == 0)
    report.finish(con, args.json)
    return 0 if lost == 0 and doubled == 0 and sums_off == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
