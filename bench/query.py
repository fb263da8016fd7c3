"""Query throughput and latency over ZeroMQ, idle and under full ingest.

An engine with 2 workers and 100k series serves its gateway on free TCP
ports of 127.0.0.1.  Clients are DEALER sockets connected to the query
ROUTER, spread over a few client processes (multiprocessing, spawn), so
that the client side is not one Python thread; every client keeps exactly
one request outstanding (send, wait for the reply, send the next).  Three
kinds of query, each for a uniformly random existing series:

* ``get``: the JSON op ``{"op": "get", "entity": <id>, "metric": <id>}``;
* ``lookup1`` / ``lookup64``: binary lookups (``protocol.pack_lookup``) of 1
  and 64 series, answered with STATE_DTYPE rows.

For each number of clients, every kind runs idle, then every kind again
while a sender process blasts 4096-event frames at the PULL endpoint with
``engine._wire.send_copies`` as fast as the engine takes them.  Latency is
from just before a client's send to just after its receive, recorded in an
HdrHistogram (3 significant digits); it includes any time a reply waits for
its client process.  After a warm-up, the run is cut into ``--windows``
windows: throughput (replies per second) and percentiles are per window, and
the medians over windows are reported.

Baseline, same run: ``Engine.get`` called in this process (calls/s, one
series per call), and ``Gateway.answer`` called in this process (the
gateway's per-query work without ZeroMQ).

Targets: >= 100 k queries/s from many clients (100 and 1,000) with p99 <=
2 ms; query p99 under full ingest within 2x of idle.

    python bench/query.py                    # 1, 100, 1000 clients; get, lookup1, lookup64
    python bench/query.py --quick
    python bench/query.py --clients 10,100 --kinds get --client-procs 3 --windows 5

``--fleet`` measures the fleet-wide queries instead (issue 16, "queries that
scale"): in process, ``status`` with limit 10 over 100,000 non-OK series,
the counts per status (``limit`` 0) and ``status`` over 1 M series, and
``top``, each against the code these ops had before (a dict per row, then
the cut) or a NumPy snapshot, in the same run; then over ZeroMQ, a ping's
latency while ten clients run ``status`` queries (limit 100, what
``ringflow status`` asks) against an engine with 100,000 CRIT series, for
the gateway answering them on its query thread (``query_processes`` 0, as
before), on one or two query processes attached to the tables (the design
kept), and for the query-threads design: 1, 2 or 4 threads of the gateway's
process answering status back to back.  Targets: status limit 10 over 100 k non-OK <= 20
ms; counts over 1 M series <= 20 ms; ping p99 <= 2 ms under the status load.

    python bench/query.py --fleet
    python bench/query.py --fleet --quick
"""

from __future__ import annotations

import argparse
import array
import json
import multiprocessing as mp
import resource
import select
import threading
import time

import numpy as np
import psutil
import zmq
from hdrh.histogram import HdrHistogram

import engine
from engine.net import protocol as P

try:
    import common as C
    import gateway as G
except ImportError:  # pragma: no cover
    from bench import common as C
    from bench import gateway as G

KINDS = ("get", "lookup1", "lookup64")
KEYS_PER_KIND = {"get": 1, "lookup1": 1, "lookup64": 64}
TARGET_QPS = 100e3
TARGET_P99_US = 2000.0
TARGET_INGEST_RATIO = 2.0
MANY_CLIENTS = (100, 1000)
PCTS = (50.0, 99.0, 99.9)
#: Distinct requests each client process cycles through.
DISTINCT_REQUESTS = 1024
REPLY_TIMEOUT_MS = 10_000


def raise_nofile(need: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to at least ``need`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def new_hist() -> HdrHistogram:
    return HdrHistogram(1, 60 * 10**9, 3)


def hist_of(lat_ns: np.ndarray) -> HdrHistogram:
    """An HdrHistogram of many latencies, recorded value by distinct value:
    values are first rounded down to the histogram's own resolution (11
    bits of mantissa, what 3 significant digits means to HdrHistogram), so
    the result is what recording them one by one would give, at a fraction
    of the Python cost."""
    h = new_hist()
    if len(lat_ns):
        v = np.maximum(lat_ns, 1).astype(np.int64)
        bits = np.floor(np.log2(v)).astype(np.int64)
        shift = np.maximum(bits - 10, 0)
        q = (v >> shift) << shift
        values, counts = np.unique(q, return_counts=True)
        for x, n in zip(values.tolist(), counts.tolist()):
            h.record_value(x, n)
    return h


def fmt_ms(us: float) -> str:
    ms = us / 1000
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 10 else f"{ms:,.1f}" if ms < 100 \
        else f"{ms:,.0f}"


def summarize(h: HdrHistogram) -> dict:
    out = {f"p{p:g}_us": h.get_value_at_percentile(p) / 1000 for p in PCTS}
    out.update(max_us=h.get_max_value() / 1000, mean_us=h.get_mean_value() / 1000,
               count=h.get_total_count())
    return out


# --- client processes ------------------------------------------------------------------


def _client_main(conn, url: str) -> None:
    """A client process: opens DEALER sockets and runs timed query loops on
    command."""
    ctx = zmq.Context()
    socks: list = []
    try:
        conn.send(("ready",))
        while True:
            cmd = conn.recv()
            op = cmd[0]
            if op == "stop":
                return
            if op == "open":
                n = cmd[1]
                raise_nofile(4 * n + 256)
                ctx.MAX_SOCKETS = max(ctx.MAX_SOCKETS, n + 64)
                for s in socks:
                    s.close(linger=0)
                socks = []
                for _ in range(n):
                    s = ctx.socket(zmq.DEALER)
                    s.setsockopt(zmq.LINGER, 0)
                    s.setsockopt(zmq.RCVTIMEO, REPLY_TIMEOUT_MS)
                    s.connect(url)
                    socks.append(s)
                conn.send(("opened", _ping_all(socks)))
            elif op == "run":
                conn.send(_run(socks, *cmd[1:]))
    finally:
        for s in socks:
            s.close(linger=0)
        ctx.term()


def _ping_all(socks: list) -> float:
    """One ping round trip on every socket: returns once all are connected
    (a first request otherwise waits for its connection's handshake, which
    for a thousand new connections can take longer than the warm-up)."""
    t0 = time.perf_counter()
    if not socks:
        return 0.0
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
        s.send(b'{"op": "ping"}')
    waiting = len(socks)
    while waiting:
        ready = poller.poll(REPLY_TIMEOUT_MS)
        if not ready:
            raise RuntimeError(f"{waiting} of {len(socks)} clients got no answer to a ping")
        for s, _ev in ready:
            s.recv()
            poller.unregister(s)
            waiting -= 1
    return time.perf_counter() - t0


def _reply_ok(kind: str, keys: int, msg: bytes) -> bool:
    if kind == "get":
        return msg.startswith(b'{"ok": true') and b'"series": null' not in msg
    return (msg[:4] == b"RF\x01\x04" and len(msg) == P.HEADER.size + keys * 128
            and int.from_bytes(msg[4:8], "little") == keys)


def _run(socks: list, reqs: list[bytes], kind: str, t_meas: int, windows: int,
         window_ns: int) -> dict:
    """Every socket keeps one request outstanding until the last window ends.
    Latencies are bucketed by the window their reply arrived in."""
    now = time.perf_counter_ns
    n, nreq = len(socks), len(reqs)
    keys = KEYS_PER_KIND[kind]
    t_end = t_meas + windows * window_ns
    lats = [array.array("q") for _ in range(windows)]
    sent_at = [0] * n
    errors = timeouts = 0
    j = 0
    for i, s in enumerate(socks):
        sent_at[i] = now()
        s.send(reqs[j % nreq])
        j += 1
    outstanding = n
    if n == 1:
        s = socks[0]
        while outstanding:
            try:
                msg = s.recv()
            except zmq.Again:
                timeouts += 1
                break
            t = now()
            k = (t - t_meas) // window_ns
            if 0 <= k < windows:
                lats[k].append(t - sent_at[0])
                if not _reply_ok(kind, keys, msg):
                    errors += 1
            if t < t_end:
                sent_at[0] = now()
                s.send(reqs[j % nreq])
                j += 1
            else:
                outstanding = 0
    else:
        # epoll on the sockets' ZMQ_FDs: a zmq.Poller over n sockets costs
        # O(n) per call (about 190 us for 500), which made the client side
        # the bottleneck with hundreds of sockets per process.  The FD only
        # says "look at ZMQ_EVENTS"; every socket is checked again after each
        # of its operations, as libzmq requires.
        ep = select.epoll()
        by_fd = {}
        for i, s in enumerate(socks):
            fd = s.getsockopt(zmq.FD)
            by_fd[fd] = i
            ep.register(fd, select.EPOLLIN)
        done = [False] * n
        POLLIN, EVENTS, NOBLOCK = zmq.POLLIN, zmq.EVENTS, zmq.NOBLOCK
        pending = list(range(n))
        try:
            while outstanding:
                if not pending:
                    fired = ep.poll(REPLY_TIMEOUT_MS / 1000)
                    if not fired:
                        timeouts += outstanding
                        break
                    pending = [by_fd[fd] for fd, _ev in fired]
                for i in pending:
                    if done[i]:
                        continue
                    s = socks[i]
                    while s.getsockopt(EVENTS) & POLLIN:
                        msg = s.recv(NOBLOCK)
                        t = now()
                        k = (t - t_meas) // window_ns
                        if 0 <= k < windows:
                            lats[k].append(t - sent_at[i])
                            if not _reply_ok(kind, keys, msg):
                                errors += 1
                        if t < t_end:
                            sent_at[i] = now()
                            s.send(reqs[j % nreq])
                            j += 1
                        else:
                            done[i] = True
                            outstanding -= 1
                            ep.unregister(s.getsockopt(zmq.FD))
                            break
                pending = []
        finally:
            ep.close()
    if timeouts:
        # Replies still on their way would be read by the next run: start over.
        for s in socks:
            while s.poll(0):
                s.recv()
    hists = [hist_of(np.frombuffer(a, np.int64)).encode() for a in lats]
    return {"counts": [len(a) for a in lats], "hists": hists, "errors": errors,
            "timeouts": timeouts, "sent": j}


class Clients:
    """``procs`` client processes with their command pipes."""

    def __init__(self, procs: int, url: str) -> None:
        ctx = mp.get_context("spawn")
        self.procs, self.conns = [], []
        try:
            for i in range(procs):
                conn, child = ctx.Pipe()
                p = ctx.Process(target=_client_main, args=(child, url), daemon=True,
                                name=f"ringflow-bench-client-{i}")
                p.start()
                child.close()
                self.procs.append(p)
                self.conns.append(conn)
            for conn in self.conns:
                if not conn.poll(60):
                    raise RuntimeError("a client process did not start")
                conn.recv()
        except BaseException:
            self.close()
            raise

    def open(self, clients: int) -> tuple[int, float]:
        """Spread ``clients`` sockets over the processes (closing the ones
        they had) and wait until every one has had a ping answered.
        Returns the number of processes used and the seconds that took."""
        used = min(clients, len(self.conns))
        for i, conn in enumerate(self.conns):
            share = clients // used + (i < clients % used) if i < used else 0
            conn.send(("open", share))
        took = 0.0
        for conn in self.conns:
            if not conn.poll(2 * REPLY_TIMEOUT_MS / 1000 + 30):
                raise RuntimeError("a client process did not open its sockets")
            took = max(took, conn.recv()[1])
        return used, took

    def run(self, reqs: list[bytes], kind: str, warmup: float, windows: int,
            window: float) -> tuple[int, list[dict]]:
        """One timed run; returns (start of the first window, replies)."""
        t_meas = time.perf_counter_ns() + int(warmup * 1e9)
        active = []
        for conn in self.conns:
            conn.send(("run", reqs, kind, t_meas, windows, int(window * 1e9)))
            active.append(conn)
        out = []
        for conn in active:
            if not conn.poll(warmup + windows * window + 2 * REPLY_TIMEOUT_MS / 1000 + 30):
                raise RuntimeError("a client process did not answer")
            out.append(conn.recv())
        return t_meas, out

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def close(self) -> None:
        for p, conn in zip(self.procs, self.conns):
            G.stop_process(p, conn)
        for p in self.procs[len(self.conns):]:
            G.stop_process(p)


# --- requests ------------------------------------------------------------------------


def make_requests(kind: str, series: int, seed: int) -> list[bytes]:
    keys, metrics = C.series_ids(series)
    rng = np.random.default_rng(seed)
    per = KEYS_PER_KIND[kind]
    count = DISTINCT_REQUESTS if per == 1 else DISTINCT_REQUESTS // 4
    pick = rng.integers(0, series, (count, per))
    if kind == "get":
        return [json.dumps({"op": "get", "entity": int(keys[i]), "metric": int(metrics[i])})
                .encode() for i in pick[:, 0]]
    return [P.pack_lookup(keys[row], metrics[row]) for row in pick]


# --- in-process baselines --------------------------------------------------------------


def inprocess_rates(eng, reqs: dict[str, list[bytes]], series: int, seed: int,
                    repeats: int, calls: int, answers: int) -> dict:
    """Engine.get calls/s and Gateway.answer queries/s, in this process."""
    keys, metrics = C.series_ids(series)
    pick = np.random.default_rng(seed + 7).integers(0, series, calls)
    pairs = list(zip(keys[pick].tolist(), metrics[pick].tolist()))
    get = eng.get

    def run_get():
        for k, m in pairs:
            get(k, m)

    out = {}
    secs = C.time_repeats(run_get, repeats)
    out["engine_get_per_s"] = C.median([calls / s for s in secs])
    answer = eng.gateway.answer
    for kind, rs in reqs.items():
        frames = [rs[i % len(rs)] for i in range(answers)]

        def run_answer(frames=frames):
            for f in frames:
                answer(f)

        secs = C.time_repeats(run_answer, repeats)
        out[f"answer_{kind}_per_s"] = C.median([len(frames) / s for s in secs])
    return out


# --- one configuration -----------------------------------------------------------------


def measure(eng, clients: Clients, reqs: list[bytes], kind: str, warmup: float,
            windows: int, window: float) -> dict:
    me = psutil.Process()
    cpu_c0, cpu_w0 = C.cpu_seconds(clients.pids), C.cpu_seconds(eng.pids)
    cpu_g0 = sum(me.cpu_times()[:2])
    wall0 = time.perf_counter()
    applied0 = eng.stats()["applied"]
    t_meas, outs = clients.run(reqs, kind, warmup, windows, window)
    applied1 = eng.stats()["applied"]
    elapsed = (time.perf_counter_ns() - t_meas) / 1e9
    wall = time.perf_counter() - wall0
    cpu = {"gateway_cpu_cores": (sum(me.cpu_times()[:2]) - cpu_g0) / wall,
           "client_cpu_cores": (C.cpu_seconds(clients.pids) - cpu_c0) / wall,
           "worker_cpu_cores": (C.cpu_seconds(eng.pids) - cpu_w0) / wall}
    per_window = []
    merged = new_hist()
    for w in range(windows):
        h = new_hist()
        for o in outs:
            h.add(HdrHistogram.decode(o["hists"][w]))
        merged.add(h)
        per_window.append({"qps": sum(o["counts"][w] for o in outs) / window, **summarize(h)})
    res = {"qps": C.median([w["qps"] for w in per_window]), **cpu}
    for p in PCTS:
        res[f"p{p:g}_us"] = C.median([w[f"p{p:g}_us"] for w in per_window])
    res["max_us"] = max(w["max_us"] for w in per_window)
    res["merged"] = summarize(merged)
    res["windows"] = per_window
    res["errors"] = sum(o["errors"] for o in outs)
    res["timeouts"] = sum(o["timeouts"] for o in outs)
    # The ingest rate over the whole run (warm-up and windows).
    res["ingest_events_per_s"] = (applied1 - applied0) / (warmup + elapsed)
    return res


def quiesce(eng, still: float = 0.05, limit: float = 10.0) -> None:
    """Wait until the engine has applied everything still queued."""
    t0 = time.perf_counter()
    last, since = eng.stats()["applied"], time.perf_counter()
    while time.perf_counter() - t0 < limit:
        time.sleep(0.01)
        a = eng.stats()["applied"]
        if a != last:
            last, since = a, time.perf_counter()
        elif time.perf_counter() - since >= still:
            return


# --- main -----------------------------------------------------------------------------


# --- fleet-wide queries: --fleet ------------------------------------------

FLEET_STATUS_MS = 20.0
FLEET_COUNTS_MS = 20.0
FLEET_PING_P99_MS = 2.0
STATUS_CLIENTS = 10
PING_EVERY_S = 0.001


def fleet_reader(series: int, metrics: int, non_ok: float, seed: int, workers: int = 2):
    """A Reader over ``workers`` in-memory state tables (no engine) holding
    ``series`` rows: hosts of ``metrics`` series each, a share ``non_ok`` of
    them WARN, STALE or CRIT since one of 16 sweep instants (so thousands of
    entities tie on since, as in an outage), every host named."""
    from engine import _table
    from engine.core.records import STATE_DTYPE
    from engine.query.reader import Reader

    rng = np.random.default_rng(seed)
    hosts = -(-series // metrics)
    names = [f"host-{i:07d}" for i in range(hosts)]
    ids = np.array([engine.entity_id(n) for n in names], np.uint64)
    rows = np.zeros(series, STATE_DTYPE)
    rows["key"] = np.repeat(ids, metrics)[:series]
    rows["metric"] = np.tile(np.arange(metrics, dtype=np.uint32), hosts)[:series]
    bad = rng.random(series) < non_ok
    rows["status"] = np.where(bad, rng.integers(1, 4, series), 0)
    rows["status_since"] = np.where(bad, 1_700_000_000 * 10**9 + rng.integers(0, 16, series)
                                    * 10**9, 0)
    rows["count"] = 100
    rows["last"] = rows["mean"] = rows["ewma"] = rng.random(series)
    rows["last_ts"] = 1_700_000_000 * 10**9
    rows["win_count"] = 10
    rows["win_min"], rows["win_max"], rows["win_sum"] = 0.01, 2.0, 5.0
    rows["sk_base"] = 4088
    rows["sketch"][:, 3] = 6
    rows["sketch"][:, 9] = 4
    shard = _table.mix64(np.ascontiguousarray(rows["key"])) % np.uint64(workers)
    bufs = []
    for w in range(workers):
        part = np.ascontiguousarray(rows[shard == w])
        limit = 1 << max(8, int(len(part) * 1.25).bit_length())
        buf = bytearray(_table.table_bytes(2 * limit, limit))
        _table.init_table(buf, 2 * limit, limit)
        if _table.Table(buf).load_rows(part) != 0:
            raise RuntimeError("load_rows failed")
        bufs.append(buf)
    return Reader(bufs, {"entities": dict(zip(ids.tolist(), names)), "metrics": {}},
                  window_ns=10**9)


def status_before(reader, min_status: str, limit: int) -> list[dict]:
    """The status op as it was before issue 16 (a dict per selected row,
    grouped, sorted, then cut): the baseline."""
    from engine.core.records import STATE_DTYPE
    from engine.query.readable import STATUS_CODES, entity_dict

    level = STATUS_CODES[min_status]
    at = STATE_DTYPE.names.index("key")
    by_key: dict[int, list] = {}
    for t in reader.tables:
        out = np.empty(t.used + 256, STATE_DTYPE)
        n = t.select_status_into(level, out)
        for values in out[:n].tolist():
            by_key.setdefault(values[at], []).append(reader.series_dict(values))
    entities = [entity_dict(k, rows, reader.names) for k, rows in by_key.items()]
    entities.sort(key=lambda e: (-STATUS_CODES[e["status"]], e["since"] or 0,
                                 e["entity"] or ""))
    return entities[:limit]


def top_before(reader, field: str, k: int) -> list[dict]:
    """The top op before issue 16: a snapshot of every row, argsort, dicts."""
    snap = reader.snapshot()
    values = snap[field].astype(np.float64)
    values = np.where(np.isnan(values), -np.inf, values)
    idx = np.argsort(-values, kind="stable")[:k]
    return reader.series_dicts(snap[idx])


def counts_numpy(reader) -> dict:
    """Counts per status the plain NumPy way: a snapshot, then bincount."""
    return np.bincount(reader.snapshot()["status"], minlength=4)


def _time_ms(fn, rounds: int) -> tuple[float, list[float]]:
    fn()  # warm-up (and the arrays the scans reuse)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return C.median(times), times


def _pinger_main(conn, url: str, seconds: float) -> None:
    """Ping the gateway one at a time, a millisecond apart, for ``seconds``;
    send back the latencies (ns)."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(url)
    lat = array.array("q")
    conn.send("ready")
    conn.recv()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        # Paced, one a millisecond: a ping is a health check, and a pinger
        # going flat out would take a core of the two from the queries.
        time.sleep(PING_EVERY_S)
        t0 = time.perf_counter_ns()
        s.send(b'{"op": "ping"}')
        if not s.poll(REPLY_TIMEOUT_MS):
            lat.append(-1)
            break
        s.recv()
        lat.append(time.perf_counter_ns() - t0)
    conn.send(lat.tobytes())
    s.close()
    ctx.term()


def _status_main(conn, url: str, clients: int, request: bytes) -> None:
    """Keep ``clients`` status requests outstanding at the gateway until
    told to stop; send back how many were answered."""
    done = 0
    ctx = zmq.Context()
    socks = []
    for _ in range(clients):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(url)
        socks.append(s)
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    conn.send("ready")
    conn.recv()
    for s in socks:
        s.send(request)
    while not conn.poll():
        for s, _ in poller.poll(100):
            s.recv()
            done += 1
            s.send(request)
    conn.recv()
    conn.send(done)
    for s in socks:
        s.close()
    ctx.term()


def _status_threads(eng, n: int, request: bytes, stop: threading.Event, done: list) -> list:
    """The query-threads design, as the gateway would run it: ``n`` threads
    of the gateway's process answering status requests back to back."""
    from engine.query import ops

    def loop(i: int) -> None:
        while not stop.is_set():
            ops.answer(request, eng._reader)
            done[i] += 1

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads


def ping_under_status(eng, mode: str, n: int, seconds: float, request: bytes) -> dict:
    """Ping latency (one pinger process) while status queries run:

    * ``idle``: none (the baseline);
    * ``inline``: ``STATUS_CLIENTS`` clients (two processes) through a
      gateway answering them on its query thread (as before issue 16);
    * ``process``: the same clients through a gateway with ``n`` query
      processes (the design kept);
    * ``threads``: ``n`` threads of the gateway's process answering status
      back to back (the query-threads design: their scans release the GIL,
      their dicts and JSON do not).
    """
    endpoints = G.free_endpoints()
    gw = eng.serve(endpoints=endpoints,
                   query_processes=0 if mode == "inline" else max(n, 1))
    ctx = mp.get_context("spawn")
    procs, pipes, threads = [], [], []
    stop, done = threading.Event(), [0] * max(n, 1)
    try:
        if mode in ("inline", "process"):
            for i in range(2):
                a, b = ctx.Pipe()
                k = STATUS_CLIENTS // 2 + (i < STATUS_CLIENTS % 2)
                pr = ctx.Process(target=_status_main,
                                 args=(b, endpoints["query"], k, request))
                pr.start()
                procs.append(pr)
                pipes.append(a)
        a, b = ctx.Pipe()
        pinger = ctx.Process(target=_pinger_main, args=(b, endpoints["query"], seconds))
        pinger.start()
        procs.append(pinger)
        # The query processes are up once they answer.
        probe = zmq.Context.instance().socket(zmq.DEALER)
        probe.setsockopt(zmq.LINGER, 0)
        probe.connect(endpoints["query"])
        probe.send(json.dumps({"op": "status", "limit": 1}).encode())
        if not probe.poll(30_000):
            raise RuntimeError("no status reply within 30 s")
        probe.recv()
        probe.close()
        for conn in (*pipes, a):
            if conn.recv() != "ready":
                raise RuntimeError("a bench process did not start")
        for conn in pipes:
            conn.send("go")
        if mode == "threads":
            threads = _status_threads(eng, n, request, stop, done)
        t0 = time.perf_counter()
        a.send("go")
        raw = a.recv()
        took = time.perf_counter() - t0
        lat = np.frombuffer(raw, np.int64)
        stop.set()
        answered = sum(done) if mode == "threads" else 0
        for conn in pipes:
            conn.send("stop")
            answered += conn.recv()
        for t in threads:
            t.join(30)
        for pr in procs:
            pr.join(30)
    finally:
        stop.set()
        for pr in procs:
            if pr.is_alive():
                pr.kill()
                pr.join()
        gw.close()
        # Bench only: one engine, one gateway per configuration in turn.
        eng._gateway = None
    ok = lat[lat >= 0]
    return {"mode": mode, "n": n, "pings": len(ok),
            "timeouts": int((lat < 0).sum()),
            "p50_ms": float(np.percentile(ok, 50)) / 1e6 if len(ok) else float("nan"),
            "p99_ms": float(np.percentile(ok, 99)) / 1e6 if len(ok) else float("nan"),
            "max_ms": float(ok.max()) / 1e6 if len(ok) else float("nan"),
            "status_per_s": answered / took}


def fleet_main(args) -> C.Report:
    from rich.table import Table

    con = C.console()
    C.print_header(con, "fleet-wide queries: status, counts, top; ping under status load",
                   args)
    rep = C.Report("query-fleet", vars(args))
    rounds = 3 if args.quick else 7
    before_rounds = 1 if args.quick else 2
    t = Table(title=f"in process (Reader over 2 in-memory tables); medians of {rounds} rounds, "
                    f"baselines of {before_rounds}")
    for col in ("fleet", "query", "ms", "baseline", "baseline ms", "speed-up"):
        t.add_column(col, justify="right", no_wrap=True)

    def row(fleet, query, ms, base, base_ms):
        rep.rows.append(C.Result(f"fleet/{fleet}/{query}", {"fleet": fleet, "query": query},
                                 {"ms": ms, "baseline": base, "baseline_ms": base_ms,
                                  "speedup": base_ms / ms}))
        t.add_row(fleet, query, f"{ms:,.2f}", base, f"{base_ms:,.1f}", f"{base_ms / ms:,.0f}x")
        return ms

    small = 10_000 if args.quick else 100_000
    r = fleet_reader(small, 4, 1.0, args.seed)
    label = f"{small // 1000}k non-OK"
    status_ms = row(label, "status limit 10",
                    _time_ms(lambda: r.status_page("WARN", 10), rounds)[0],
                    "dict per row", _time_ms(lambda: status_before(r, "WARN", 10),
                                             before_rounds)[0])
    assert [e["entity_id"] for e in r.status_page("WARN", 10)["entities"]] == \
        [e["entity_id"] for e in status_before(r, "WARN", 10)], "status disagrees with before"
    row(label, "status limit 100", _time_ms(lambda: r.status_page("WARN", 100), rounds)[0],
        "dict per row", _time_ms(lambda: status_before(r, "WARN", 100), before_rounds)[0])
    row(label, "top last k 10", _time_ms(lambda: r.top("last", 10), rounds)[0],
        "snapshot+argsort", _time_ms(lambda: top_before(r, "last", 10), before_rounds)[0])
    r.close()
    big = 100_000 if args.quick else 1_000_000
    r2 = fleet_reader(big, 8, 0.01, args.seed + 1)
    label = f"{big // 1000:,}k, 1% non-OK"
    counts_ms = row(label, "counts (limit 0)",
                    _time_ms(lambda: r2.status_page("WARN", 0), rounds)[0],
                    "snapshot+bincount", _time_ms(lambda: counts_numpy(r2), before_rounds)[0])
    row(label, "status limit 10", _time_ms(lambda: r2.status_page("WARN", 10), rounds)[0],
        "dict per row", _time_ms(lambda: status_before(r2, "WARN", 10), before_rounds)[0])
    r2.close()
    con.print(t)
    rep.target(f"status limit 10 over {small:,} non-OK series", f"<= {FLEET_STATUS_MS:g} ms",
               f"{status_ms:.2f} ms", status_ms <= FLEET_STATUS_MS)
    rep.target(f"counts per status over {big:,} series", f"<= {FLEET_COUNTS_MS:g} ms",
               f"{counts_ms:.2f} ms", counts_ms <= FLEET_COUNTS_MS)

    # Over ZeroMQ: an engine whose series are all CRIT (rule: last > 0.5).
    seconds = 1.5 if args.quick else 4.0
    series = small
    hosts = series // 4
    keys = np.repeat(np.array([engine.entity_id(f"host-{i:07d}") for i in range(hosts)],
                              np.uint64), 4)
    metrics = np.tile(np.arange(4, dtype=np.uint32), hosts)
    ts = 1_700_000_000 * 10**9 + np.arange(series, dtype=np.int64)
    rules = {"rule": [{"metric": "*", "stat": "last", "crit": 0.5}]}
    request = json.dumps({"op": "status", "limit": 100}).encode()
    modes = [("idle", 0), ("inline", 0), ("threads", 1), ("threads", 2), ("threads", 4),
             ("process", 1), ("process", 2)]
    pt = Table(title=f"ping latency while {STATUS_CLIENTS} clients run status (limit 100) over "
                     f"{series:,} CRIT series; {seconds:g} s each; one pinger process")
    for col in ("status answered by", "pings", "p50 ms", "p99 ms", "max ms", "status/s",
                "p99 vs idle"):
        pt.add_column(col, justify="right", no_wrap=True)
    results = []
    with engine.Engine(workers=2, table_capacity=2 * series, rules=rules) as eng:
        eng.register_names(entities=[f"host-{i:07d}" for i in range(hosts)])
        eng.submit(engine.make_events(keys, metrics, ts, np.ones(series)))
        eng.flush()
        C.wait_applied(eng, series)
        for mode, n in modes:
            results.append(ping_under_status(eng, mode, n, seconds, request))
    idle = results[0]["p99_ms"]

    def what(res):
        return {"idle": "(no status load)", "inline": "the query thread (before)",
                "threads": f"{res['n']} query thread(s), busy",
                "process": f"{res['n']} query process(es)"}[res["mode"]]

    for res in results:
        rep.rows.append(C.Result(f"fleet/ping/{res['mode']}/{res['n']}",
                                 {"mode": res["mode"], "n": res["n"]}, res))
        pt.add_row(what(res), f"{res['pings']:,}", f"{res['p50_ms']:.3f}",
                   f"{res['p99_ms']:.3f}", f"{res['max_ms']:.2f}",
                   "-" if res["mode"] == "idle" else f"{res['status_per_s']:,.0f}",
                   f"{res['p99_ms'] / idle:.1f}x",
                   style="red" if res["timeouts"] else None)
    con.print(pt)
    default = next(res for res in results if res["mode"] == "process" and res["n"] == 1)
    rep.target("ping p99 while 10 clients run status (1 query process, the default)",
               f"<= {FLEET_PING_P99_MS:g} ms", f"{default['p99_ms']:.3f} ms",
               default["p99_ms"] <= FLEET_PING_P99_MS and not default["timeouts"])
    rep.finish(con, args.json)
    G.check_children(con)
    return rep


def main(argv: list[str] | None = None) -> C.Report:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--clients", type=C.parse_count_list, default=[1, 100, 1000],
                   help="concurrent clients, comma-separated (default 1,100,1000)")
    p.add_argument("--kinds", default=None,
                   help=f"queries, comma-separated, of {','.join(KINDS)} "
                        "(default all; quick get,lookup64)")
    p.add_argument("--client-procs", type=int, default=2,
                   help="client processes the clients are spread over (default 2)")
    p.add_argument("--series", type=C.parse_count, default=100_000,
                   help="distinct series (default 100k)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--windows", type=int, default=None,
                   help="measurement windows per configuration; medians over them "
                        "(default 3, quick 2)")
    p.add_argument("--window", type=float, default=None,
                   help="seconds per window (default 0.5, quick 0.15)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds of untimed queries before the windows (default 0.3, quick 0.1)")
    p.add_argument("--no-ingest", action="store_true", help="skip the runs under ingest")
    p.add_argument("--wait", default="block", choices=engine.WAIT_STRATEGIES,
                   help="wait strategy of the engine (default block)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats of the in-process baselines; the median is reported "
                        "(default 3)")
    p.add_argument("--fleet", action="store_true",
                   help="measure the fleet-wide queries (status, counts, top) and a ping "
                        "under status load instead")
    C.add_common_args(p, repeats=False, baseline_events=False)
    args = p.parse_args(argv)
    if args.fleet:
        return fleet_main(args)
    kinds = [k.strip() for k in (args.kinds or ("get,lookup64" if args.quick else
                                                ",".join(KINDS))).split(",") if k.strip()]
    bad = sorted(set(kinds) - set(KINDS))
    if bad:
        p.error(f"unknown kinds {bad}; choose from {', '.join(KINDS)}")
    windows = args.windows or (2 if args.quick else 3)
    window = args.window or (0.15 if args.quick else 0.5)
    warmup = args.warmup or (0.1 if args.quick else 0.3)
    repeats = args.repeats or 3
    loads = ["idle"] if args.no_ingest else ["idle", "ingest"]
    nofile = raise_nofile(2 * max(args.clients) + 1024)
    con = C.console()
    C.print_header(con, "queries over ZeroMQ: DEALER clients -> gateway ROUTER", args)
    rep = C.Report("query", vars(args))
    rep.notes.append(f"RLIMIT_NOFILE soft/hard {nofile[0]}/{nofile[1]}")

    reqs = {k: make_requests(k, args.series, args.seed + i) for i, k in enumerate(kinds)}
    rows: list[dict] = []
    endpoints = G.free_endpoints()
    sender = clients = None
    connect_s: dict[int, float] = {}
    t0 = time.perf_counter()
    with engine.Engine(workers=args.workers, table_capacity=args.series, wait=args.wait) as eng:
        warm = C.gen_events(1_000_000, args.series, args.seed)
        eng.submit(C.all_series_once(args.series))
        eng.submit(warm)
        eng.flush()
        C.wait_applied(eng, args.series + len(warm))
        eng.serve(endpoints=endpoints)
        try:
            inproc = inprocess_rates(eng, reqs, args.series, args.seed, repeats,
                                     20_000 if args.quick else 100_000,
                                     2_000 if args.quick else 10_000)
            rep.baseline = {"kind": "in-process Engine.get and Gateway.answer", **inproc}
            if "ingest" in loads:
                sender = G.Sender(endpoints)
                stream = G.replay_events(G.DISTINCT_EVENTS, args.series, args.seed,
                                         int(warm["ts"].max()) + 10**9)
                sender.load(stream, 4096)
            clients = Clients(max(1, args.client_procs), endpoints["query"])
            setup_s = time.perf_counter() - t0
            for n in args.clients:
                procs, took = clients.open(n)
                connect_s[n] = took
                # All kinds idle, then all under ingest: one blast per client count.
                for load in loads:
                    if load == "ingest":
                        sender.blast()
                        time.sleep(0.2)  # until the rings are full and stay so
                    try:
                        for kind in kinds:
                            r = measure(eng, clients, reqs[kind], kind, warmup, windows,
                                        window)
                            r.update(clients=n, procs=procs, kind=kind, load=load,
                                     keys=KEYS_PER_KIND[kind])
                            rows.append(r)
                    finally:
                        if load == "ingest":
                            sender.pause()
                            quiesce(eng)
                clients.open(0)
        finally:
            if clients is not None:
                clients.close()
            if sender is not None:
                sender.close()
        gw = eng.gateway.stats()
        st = eng.stats()
    order = {k: i for i, k in enumerate(kinds)}
    rows.sort(key=lambda r: (r["clients"], order[r["kind"]], loads.index(r["load"])))
    rep.notes.append(f"set-up (engine, 1M warm-up events, in-process baselines, client and "
                     f"sender processes) {setup_s:.1f} s, total {time.perf_counter() - t0:.1f} s")
    rep.notes.append("clients connected and answered a first ping in: " + ", ".join(
        f"{n:,}: {s * 1e3:,.0f} ms" for n, s in connect_s.items()) + " (untimed)")
    rep.notes.append(f"gateway counters at the end: queries {gw['queries']:,}, query errors "
                     f"{gw['query_errors']:,}; engine applied {st['applied']:,}, "
                     f"table full {st['rejected_table_full']:,}")

    from rich.table import Table

    get_rate = inproc["engine_get_per_s"]
    t = Table(title=f"queries over ZeroMQ, {args.workers} workers, {args.series:,} series; "
                    f"medians of {windows} windows of {window:g} s")
    for col in ("clients", "query", "load", "k q/s", "k series/s", "p50 ms", "p99 ms",
                "p99.9 ms", "max ms", "vs get()", "ingest M ev/s", "gw CPU", "cl CPU",
                "err"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        r["series_per_s"] = r["qps"] * r["keys"]
        r["ratio_vs_engine_get"] = r["series_per_s"] / get_rate
        rep.rows.append(C.Result(f"query/{r['kind']}/{r['clients']}/{r['load']}",
                                 {"clients": r["clients"], "kind": r["kind"],
                                  "load": r["load"], "procs": r["procs"]}, r))
        errs = r["errors"] + r["timeouts"]
        t.add_row(f"{r['clients']:,}", r["kind"], r["load"],
                  f"{r['qps'] / 1e3:,.1f}", f"{r['series_per_s'] / 1e3:,.1f}",
                  *(fmt_ms(r[f"p{q:g}_us"]) for q in PCTS), fmt_ms(r["max_us"]),
                  f"{r['ratio_vs_engine_get']:.3f}x",
                  f"{r['ingest_events_per_s'] / 1e6:,.1f}" if r["load"] == "ingest" else "-",
                  f"{r['gateway_cpu_cores']:.2f}", f"{r['client_cpu_cores']:.2f}",
                  str(errs), style="red" if errs else None)
    t.add_row("-", "Engine.get", "in-proc", f"{get_rate / 1e3:,.1f}",
              f"{get_rate / 1e3:,.1f}", "-", "-", "-", "-", "1.000x", "-", "-", "-", "-",
              style="dim")
    for kind in kinds:
        a = inproc[f"answer_{kind}_per_s"]
        t.add_row("-", f"answer {kind}", "in-proc", f"{a / 1e3:,.1f}",
                  f"{a * KEYS_PER_KIND[kind] / 1e3:,.1f}", "-", "-", "-", "-",
                  f"{a * KEYS_PER_KIND[kind] / get_rate:.3f}x", "-", "-", "-", "-", style="dim")
    con.print(t)
    con.print(f"[dim]k q/s: replies per second, all clients together (each keeps one "
              f"request outstanding), spread over {args.client_procs} client process(es); "
              f"latency: client send -> reply received, HdrHistogram; the percentiles and "
              f"k q/s are medians over windows, max the largest. ingest: a sender process "
              f"blasting 4096-event frames at the PULL socket with send_copies, rate = "
              f"applied events over the run. gw / cl CPU: CPU time / wall time of this "
              f"process (the gateway's threads) / of the client processes "
              f"({psutil.cpu_count()} cores). err: bad replies and timeouts. In-process rows: "
              f"Engine.get(key, metric) and Gateway.answer(frame) called in a loop in this "
              f"process (no ZeroMQ).[/]")

    def find(n, kind, load):
        return next((r for r in rows if r["clients"] == n and r["kind"] == kind
                     and r["load"] == load), None)

    for kind in kinds:
        parts, ok = [], True
        for n in MANY_CLIENTS:
            r = find(n, kind, "idle")
            if r is None:
                continue
            parts.append(f"{n:,} clients: {r['qps'] / 1e3:,.1f} k q/s, "
                         f"p99 {fmt_ms(r['p99_us'])} ms")
            ok = ok and r["qps"] >= TARGET_QPS and r["p99_us"] <= TARGET_P99_US and not (
                r["errors"] or r["timeouts"])
        if parts:
            rep.target(f"{kind}, many clients, idle", ">= 100 k q/s with p99 <= 2 ms",
                       "; ".join(parts), ok)
    if "ingest" in loads:
        for kind in kinds:
            parts, ok = [], True
            for n in args.clients:
                idle, busy = find(n, kind, "idle"), find(n, kind, "ingest")
                if idle is None or busy is None:
                    continue
                ratio = busy["p99_us"] / idle["p99_us"]
                parts.append(f"{n:,}: {ratio:.1f}x")
                ok = ok and ratio <= TARGET_INGEST_RATIO
            if parts:
                rep.target(f"{kind}, p99 under ingest / idle", "<= 2x", ", ".join(parts), ok)
    rep.finish(con, args.json)
    G.check_children(con)
    return rep


if __name__ == "__main__":
    main()
