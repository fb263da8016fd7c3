"""Reads through ``engine.attach`` from another process against the
engine's own reads, and ingest with and without an attached reader looping
(issue 17, item 6).  Medians of several short rounds; ratios against the
baseline of the same run.

    python bench/attach_reads.py [--rounds 5] [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import engine

REPO = Path(__file__).resolve().parents[1]
KEYS = np.arange(1, 1001, dtype=np.uint64)
# The same loop shape without touching the engine: ingest beside it
# measures what sharing 2 cores costs, apart from anything the reads do.
SPINNER = """
import sys, time
secs = float(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < secs:
    n += 1
print(0.0, flush=True)
"""
READER = """
import sys, time, numpy as np, engine
keys = np.arange(1, 1001, dtype=np.uint64)
secs = float(sys.argv[2])
with engine.attach(int(sys.argv[1])) as v:
    print("ready", flush=True)
    sys.stdin.readline()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < secs:
        v.get_many(keys, 1); n += 1
    print(n * len(keys) / (time.perf_counter() - t0), flush=True)
"""


def read_rate(fn, secs: float) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < secs:
        fn(KEYS, 1)
        n += 1
    return n * len(KEYS) / (time.perf_counter() - t0)


def ingest_rate(eng, batch, secs: float) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < secs:
        eng.submit(batch)
        n += len(batch)
    eng.flush()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.5)
    a = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = {"engine_get_many": [], "attach_get_many_idle": [], "attach_get_many": [],
           "ingest_alone": [], "ingest_with_spinner": [], "ingest_with_reader": []}

    def side(code):
        p = subprocess.Popen([sys.executable, "-c", code, str(os.getpid()), str(a.seconds)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert p.stdout.readline().strip() == "ready"
        p.stdin.write("go\n")
        p.stdin.flush()
        return p

    def finish(p):
        rate = float(p.stdout.readline())
        p.wait(30)
        return rate

    with engine.Engine(workers=2) as eng:
        batch = engine.make_events(KEYS, 1, None, np.ones(len(KEYS)))
        eng.submit(batch)
        eng.flush()
        for _ in range(a.rounds):
            res["engine_get_many"].append(read_rate(eng.get_many, a.seconds))
            res["ingest_alone"].append(ingest_rate(eng, batch, a.seconds))
            p = side(READER)
            res["ingest_with_reader"].append(ingest_rate(eng, batch, a.seconds))
            res["attach_get_many"].append(finish(p))
            p = side(SPINNER)
            res["ingest_with_spinner"].append(ingest_rate(eng, batch, a.seconds))
            finish(p)
            res["attach_get_many_idle"].append(finish(side(READER)))
    med = {k: statistics.median(v) for k, v in res.items()}
    med["attach_idle_vs_engine_reads"] = med["attach_get_many_idle"] / med["engine_get_many"]
    med["ingest_with_spinner_vs_alone"] = med["ingest_with_spinner"] / med["ingest_alone"]
    med["ingest_with_reader_vs_alone"] = med["ingest_with_reader"] / med["ingest_alone"]
    print(json.dumps({k: round(v, 3) for k, v in med.items()}, indent=1))


if __name__ == "__main__":
    main()
