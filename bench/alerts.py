"""Alerts from the kernels to the engine's alert log (issue 16: >= 1 M/s).

Every event flips its series between OK and CRIT, so each one is a status
change: the run measures how fast the workers' alert rings drain into the
numbered log (no subscriber, no callback), and how many alerts the workers
had to wait for room for.  Reported beside the same events with a rule that
never fires (the ingest baseline of the same run).

    python bench/alerts.py                 # 2 workers, 4 M alerts, 5 rounds
    python bench/alerts.py --events 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import engine  # noqa: E402

FLIP = {"rule": [{"metric": "cpu", "crit": 2.0, "clear": 0.5}]}
QUIET = {"rule": [{"metric": "cpu", "crit": 1e9}]}


def one_round(rules: dict, events: int, series: int, workers: int) -> tuple[float, int, int]:
    """Seconds from the first submit to the last alert in the log; alerts;
    worker waits for room."""
    per = events // series
    keys = np.tile(np.arange(1, series + 1, dtype=np.uint64), per)
    ts0 = time.time_ns()
    ts = ts0 + np.repeat(np.arange(per, dtype=np.int64), series)
    values = np.where(np.repeat(np.arange(per) % 2 == 0, series), 3.0, 0.0)
    batch = engine.make_events(keys, "cpu", ts, values)
    with engine.Engine(workers=workers, rules=rules, table_capacity=2 * series) as eng:
        log = eng._alerts.log
        start_head = log.head
        t0 = time.perf_counter()
        for chunk in np.array_split(batch, max(1, len(batch) // 65536)):
            eng.submit(chunk)
        eng.flush(120)
        expected = events if rules is FLIP else 0
        deadline = time.monotonic() + 120
        while log.head - start_head < expected and time.monotonic() < deadline:
            time.sleep(0.001)
        elapsed = time.perf_counter() - t0
        s = eng.stats()
        return elapsed, s["alerts"], s["alert_waits"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=4_000_000)
    ap.add_argument("--series", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    flip, quiet, waits = [], [], []
    for r in range(args.rounds):
        secs, alerts, w = one_round(FLIP, args.events, args.series, args.workers)
        if alerts != args.events:
            print(f"round {r}: {alerts} alerts of {args.events}", file=sys.stderr)
            return 1
        flip.append(args.events / secs)
        waits.append(w)
        secs, _, _ = one_round(QUIET, args.events, args.series, args.workers)
        quiet.append(args.events / secs)
        print(f"round {r}: every event an alert {flip[-1] / 1e6:.2f} M/s, "
              f"no alerts {quiet[-1] / 1e6:.2f} M events/s, worker waits {w}")
    f, q = statistics.median(flip), statistics.median(quiet)
    print(f"median: {f / 1e6:.2f} M alerts/s into the log ({f / q:.2f}x the same events "
          f"without alerts, {q / 1e6:.2f} M/s); {args.workers} workers, "
          f"{args.events:,} events over {args.series:,} series, {args.rounds} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
