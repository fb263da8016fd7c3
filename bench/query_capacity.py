"""Query capacity of the gateway, measured with clients written in C.

``bench/query.py`` drives the gateway from Python clients, whose own
per-request cost caps what it can show on two cores.  Here every client
process runs ``engine._wire.request_loop``: one DEALER with ``--window``
requests in flight, sent and received from C, each round trip timed.  The
figure is the server's: requests/s over the wall time of all clients, and
the latency percentiles of every request (hdrhistogram), idle and while a
sender process blasts 4096-event frames into the ingest socket.

    python bench/query_capacity.py                 # lookup1, lookup64, get; 4 clients x window 16
    python bench/query_capacity.py --clients 8 --window 32 --requests 200k
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import common as C  # bench/ is on sys.path when run as a script
import numpy as np
from hdrh.histogram import HdrHistogram

import engine
from engine.net import protocol as P

KINDS = ("lookup1", "lookup64", "get")

CLIENT = r"""
import sys, json, time, numpy as np, zmq
from engine import _wire
url, path, count, window = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
request = open(path, "rb").read()
ctx = zmq.Context(); s = ctx.socket(zmq.DEALER); s.setsockopt(zmq.LINGER, 0); s.connect(url)
lat = np.zeros(count, np.int64)
_wire.request_loop(s.underlying, request, min(100, count), 1, lat)     # connect, warm up
print("ready", flush=True); sys.stdin.readline()
t0 = time.perf_counter(); got = _wire.request_loop(s.underlying, request, count, window, lat)
t1 = time.perf_counter()
np.save(path + ".lat.npy", lat[:got])
print(json.dumps({"got": got, "t0": t0, "t1": t1}), flush=True)
s.close(); ctx.term()
"""

SENDER = r"""
import sys, numpy as np, zmq, engine
from engine import _wire
from engine.net import protocol as P
url, series = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(7)
ev = engine.make_events(rng.integers(0, series // 4, 4096).astype(np.uint64),
                        rng.integers(0, 4, 4096).astype(np.uint32), None, rng.random(4096))
frame = P.pack_events(ev)
ctx = zmq.Context(); s = ctx.socket(zmq.PUSH); s.setsockopt(zmq.LINGER, 0); s.connect(url)
print("ready", flush=True)
while _wire.send_copies(s.underlying, frame, 64) == 64:
    pass
"""


def request_for(kind: str, rng: np.random.Generator, series: int) -> bytes:
    keys = rng.integers(0, series // 4, 64).astype(np.uint64)
    metrics = rng.integers(0, 4, 64).astype(np.uint32)
    if kind == "lookup1":
        return P.pack_lookup(keys[:1], metrics[:1])
    if kind == "lookup64":
        return P.pack_lookup(keys, metrics)
    return json.dumps({"op": "get", "entity": int(keys[0]), "metric": int(metrics[0])}).encode()


def run_clients(url: str, request: bytes, clients: int, count: int, window: int,
                tmp: str) -> tuple[float, HdrHistogram]:
    procs, paths = [], []
    for i in range(clients):
        path = os.path.join(tmp, f"req{i}.bin")
        with open(path, "wb") as f:
            f.write(request)
        paths.append(path)
        procs.append(subprocess.Popen([sys.executable, "-c", CLIENT, url, path, str(count),
                                       str(window)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True))
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [json.loads(p.stdout.readline()) for p in procs]
    finally:
        for p in procs:
            p.wait(60)
    hist = HdrHistogram(1, 60_000_000_000, 3)
    for path in paths:
        for v in np.load(path + ".lat.npy"):
            hist.record_value(max(1, int(v)))
    got = sum(r["got"] for r in results)
    wall = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    return got / wall, hist


def main(argv: list[str] | None = None) -> C.Report:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    p.add_argument("--window", type=int, default=16,
                   help="requests in flight per client (default 16)")
    p.add_argument("--requests", type=C.parse_count, default=100_000,
                   help="requests per client and run (default 100k)")
    p.add_argument("--series", type=C.parse_count, default=100_000,
                   help="series in the engine (default 100k)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"subset of {','.join(KINDS)}")
    C.add_common_args(p, repeats=False, baseline_events=False)
    args = p.parse_args(argv)
    if args.quick:
        args.requests = min(args.requests, 20_000)
    kinds = [k for k in args.kinds.split(",") if k]
    con = C.console()
    C.print_header(con, "query capacity: C clients -> ZeroMQ -> gateway", args)
    rep = C.Report("query_capacity", vars(args))
    tmp = os.path.join("/tmp", f"ringflow-qcap-{os.getpid()}")
    os.makedirs(tmp, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    results = {}
    with engine.Engine(workers=2, table_capacity=args.series) as eng:
        ports = {n: f"tcp://127.0.0.1:{q}" for n, q in zip(P.DEFAULT_PORTS, C.free_ports())}
        eng.serve(endpoints=ports)
        keys, metrics = C.series_ids(args.series)
        ev = C.all_series_once(args.series)
        eng.submit(ev)
        eng.flush()
        for load in ("idle", "ingest"):
            sender = None
            if load == "ingest":
                sender = subprocess.Popen([sys.executable, "-c", SENDER, ports["ingest"],
                                           str(args.series)], stdout=subprocess.PIPE, text=True)
                sender.stdout.readline()
                time.sleep(0.5)
            try:
                for kind in kinds:
                    a0 = eng.stats()["applied"]
                    t0 = time.perf_counter()
                    rate, hist = run_clients(ports["query"], request_for(kind, rng, args.series),
                                             args.clients, args.requests, args.window, tmp)
                    ingest = (eng.stats()["applied"] - a0) / (time.perf_counter() - t0)
                    results[(kind, load)] = (rate, hist, ingest)
            finally:
                if sender is not None:
                    sender.kill()
                    sender.wait()
    from rich.table import Table

    t = Table(title=f"{args.clients} C clients x {args.window} in flight, "
                    f"{args.requests:,} requests each (latency in us)")
    for col in ("query", "load", "k req/s", "p50", "p99", "p99.9", "max", "ingest M ev/s"):
        t.add_column(col, justify="right")
    for (kind, load), (rate, hist, ingest) in results.items():
        pct = [hist.get_value_at_percentile(q) / 1000 for q in (50, 99, 99.9)]
        t.add_row(kind, load, f"{rate / 1e3:,.1f}", *(f"{v:,.0f}" for v in pct),
                  f"{hist.get_max_value() / 1000:,.0f}", f"{ingest / 1e6:.1f}" if load ==
                  "ingest" else "-")
        rep.rows.append(C.Result(kind, {"load": load}, {
            "requests_per_s": rate, "p50_us": pct[0], "p99_us": pct[1], "p999_us": pct[2],
            "ingest_events_per_s": ingest}))
    con.print(t)
    for kind in kinds:
        if (kind, "idle") not in results:
            continue
        rate, hist, _ = results[(kind, "idle")]
        p99 = hist.get_value_at_percentile(99) / 1e6
        rep.target(f"{kind}, idle", ">= 100 k req/s with p99 <= 2 ms",
                   f"{rate / 1e3:,.1f} k req/s, p99 {p99:.2f} ms", rate >= 1e5 and p99 <= 2)
        if (kind, "ingest") in results:
            busy = results[(kind, "ingest")][1].get_value_at_percentile(99) / 1e6
            rep.target(f"{kind}, p99 under ingest / idle", "<= 2x",
                       f"{busy:.2f} / {p99:.2f} ms = {busy / p99:.1f}x", busy <= 2 * p99)
    rep.print_targets(con)
    rep.write_json(args.json)
    for f in os.listdir(tmp):
        os.unlink(os.path.join(tmp, f))
    os.rmdir(tmp)
    C.check_clean(con)
    return rep


if __name__ == "__main__":
    main()
