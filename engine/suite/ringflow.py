"""ringflow's contenders: the embedded engine, and the engine behind its
ZeroMQ gateway.

* ``ringflow``: ``engine.Engine(workers=W)`` in this process; each producer
  is a thread with its own producer slot (``Engine.producer()``), submitting
  its series' events in batches of 4096; then ``flush()``, and the state is
  read back with ``Engine.snapshot()``.
* ``ringflow_gateway``: the same engine serving its gateway
  (``Engine.serve``) on free 127.0.0.1 ports; each producer is a client
  process (spawn) pushing binary frames of 4096 events (``engine.Client``,
  fire-and-forget PUSH); done when ``stats()["applied"]`` reaches the count.

The engine never lets an event older than a series' ``last_ts`` replace
``last`` (docs/health.md), so ``stale_overwrites`` is 0 by construction;
the oracle verifies it.

Latency (both): a probe thread of this process sends one event every 5 ms
during the run, for a series outside the workload (removed from the
returned state); latency = the probe's ``time.time_ns()`` just before it is
submitted (``ringflow``: a producer slot of its own;
``ringflow_gateway``: ``Client.send`` through the network) -> the moment
the probe series' ``count`` is seen incremented (lock-free ``Engine.get``,
polled every 0.1 ms: a resolution of about 0.1 ms).  Probes queue behind
the workload's events in the rings, so they see the load.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import threading
import time

import numpy as np

import engine

from .base import Contender, RunResult, Workload
from .procs import Meter, chunks, pace_ns, partition

__all__ = ["CONTENDERS", "Ringflow", "RingflowGateway"]

#: Events per submit / per frame.
BATCH = 4096
PROBE_EVERY_S = 0.005
PROBE_POLL_S = 0.0001


def _free_endpoints() -> dict:
    socks = [socket.socket() for _ in range(4)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        ports = [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
    return {name: f"tcp://127.0.0.1:{port}"
            for name, port in zip(("ingest", "acked", "query", "alerts"), ports)}


def _table_capacity(workload: Workload) -> int:
    # An upper bound (keys x metrics) from two hashed uniques: np.unique
    # over the (key, metric) records sorts them, 6.6 s of an 8M-event run.
    ev = workload.events
    series = (len(np.unique(ev["key"])) * len(np.unique(ev["metric"]))) if workload.n else 1
    return 1 << max(12, (series + 16).bit_length())


def _probe_series(workload: Workload) -> tuple[int, int]:
    keys = set(np.unique(workload.events["key"]).tolist())
    key = 2**64 - 2
    while key in keys:
        key -= 1
    return key, 2**32 - 2


class _Probe(threading.Thread):
    """Sends one probe event at a time and waits to see it applied."""

    def __init__(self, eng: engine.Engine, send, key: int, metric: int) -> None:
        super().__init__(name="suite-probe", daemon=True)
        self.eng, self.send, self.key, self.metric = eng, send, key, metric
        self.sent = 0
        self.latencies: list[int] = []
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while True:
                created = time.time_ns()
                ev = engine.make_events([self.key], [self.metric], [created], [1.0])
                self.send(ev)
                self.sent += 1
                deadline = time.monotonic() + 30
                while True:
                    row = self.eng.get(self.key, self.metric)
                    if row is not None and int(row["count"]) >= self.sent:
                        self.latencies.append(time.time_ns() - created)
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError("a probe event was not applied within 30 s")
                    time.sleep(PROBE_POLL_S)
                if self.stop.wait(PROBE_EVERY_S):
                    return
        except BaseException as exc:
            self.error = exc

    def finish(self) -> np.ndarray:
        self.stop.set()
        self.join(60)
        if self.error is not None:
            raise self.error
        return np.asarray(self.latencies, np.int64)


def _state_of(eng: engine.Engine, probe: tuple[int, int]) -> dict:
    rows = eng.snapshot()
    rows = rows[(rows["count"] > 0) & ~((rows["key"] == np.uint64(probe[0]))
                                        & (rows["metric"] == np.uint32(probe[1])))]
    cols = [rows[f].tolist() for f in ("key", "metric", "count", "sum", "min", "max",
                                       "last", "last_ts")]
    return {(k, m): (c, s, lo, hi, la, lt) for k, m, c, s, lo, hi, la, lt in zip(*cols)}


def _refused(eng: engine.Engine) -> str:
    """The evidence behind stale_overwrites=0: events that came older than
    their series' last and were counted instead of applied to it."""
    return (f"{eng.stats()['stale']:,} events older than their series' last were kept "
            "out of last (stats()['stale'])")


def _handled(eng: engine.Engine) -> int:
    """Events applied or refused (an invalid event is never applied: the
    oracle then reports the difference instead of a hang)."""
    st = eng.stats()
    return st["applied"] + st["rejected_invalid"] + st["rejected_table_full"]


def _probes_applied(eng: engine.Engine, probe: tuple[int, int]) -> int:
    """Probe events applied so far.  Read after _handled: a probe applied
    between the two reads makes the difference smaller, never larger, so
    the workload is never taken as done early (counting the probes as
    workload events did exactly that)."""
    row = eng.get(*probe)
    return 0 if row is None else int(row["count"])


class Ringflow(Contender):
    name = "ringflow"
    description = ("ringflow embedded: Engine(workers=W) in this process, a producer slot "
                   "per producer thread, lock-free rings to the worker processes")
    tuning = (f"batches of {BATCH} events per submit, one producer slot per thread (no lock), "
              "table capacity sized to the workload's series, wait='block' (the default)")

    def __init__(self, workers: int = 2) -> None:
        self.workers = workers

    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        parts = partition(workload, producers)
        probe_series = _probe_series(workload)
        # Slot 0 (Engine.submit, flush) for this thread, one per producer
        # thread, one for the probe thread.
        eng = engine.Engine(workers=self.workers, producers=producers + 2,
                            table_capacity=_table_capacity(workload))
        meter = probe = None
        try:
            me = os.getpid()
            pids = [me, *eng.pids]
            slots = [eng.producer() for _ in parts]
            errors: list[BaseException] = []
            meter = Meter(lambda: pids).start()
            start = time.time_ns()

            def produce(slot, events: np.ndarray, created: np.ndarray) -> None:
                try:
                    for i, j in chunks(created, BATCH):
                        pace_ns(start, created[j - 1])
                        slot.submit(events[i:j])
                except BaseException as exc:
                    errors.append(exc)

            probe = _Probe(eng, eng.producer().submit, *probe_series)
            threads = [threading.Thread(target=produce, args=(slot, *part),
                                        name=f"suite-rf-prod-{i}")
                       for i, (slot, part) in enumerate(zip(slots, parts))]
            probe.start()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            eng.flush(120)
            seconds = (time.time_ns() - start) / 1e9
            latencies = probe.finish()
            probe = None
            if errors:
                raise errors[0]
            peak, cpu = meter.stop()
            state = _state_of(eng, probe_series)
            return RunResult(
                name=self.name, seconds=seconds, state=state, latencies_ns=latencies,
                stale_overwrites=0, peak_rss_bytes=int(peak), cpu_seconds=cpu,
                producers=producers,
                notes=f"{self.workers} workers; latency: probe event every 5 ms, submit -> "
                      "seen applied (Engine.get), see engine.suite.ringflow; "
                      + _refused(eng),
            )
        finally:
            if probe is not None:
                probe.stop.set()
                probe.join(10)
            if meter is not None:
                meter.stop()
            eng.close()


def _sender_main(conn, endpoints: dict, events: np.ndarray, created: np.ndarray) -> None:
    """A client process: connect, wait for "go", push every frame, report."""
    from engine.net.client import Client

    client = Client(endpoints=endpoints, timeout=60, max_frame_records=BATCH, linger=30)
    try:
        conn.send(("ready", os.getpid()))
        start = conn.recv()
        cpu0 = time.process_time()
        for i, j in chunks(created, BATCH):
            pace_ns(start, created[j - 1])
            client.send(events[i:j])
    finally:
        client.close()
    conn.send(("done", time.process_time() - cpu0))


class RingflowGateway(Contender):
    name = "ringflow_gateway"
    description = ("ringflow behind its ZeroMQ gateway: client processes push binary frames "
                   "to Engine.serve on 127.0.0.1")
    tuning = (f"binary frames of {BATCH} events, fire-and-forget PUSH, one client process per "
              "producer (spawn, connected before the clock), table sized to the workload")

    def __init__(self, workers: int = 2) -> None:
        self.workers = workers

    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        parts = partition(workload, producers)
        probe_series = _probe_series(workload)
        ctx = mp.get_context("spawn")
        endpoints = _free_endpoints()
        eng = engine.Engine(workers=self.workers, producers=3,
                            table_capacity=_table_capacity(workload))
        senders, conns = [], []
        meter = probe = client = None
        try:
            eng.serve(endpoints)
            for i, (ev, cr) in enumerate(parts):
                mine, theirs = ctx.Pipe()
                p = ctx.Process(target=_sender_main, args=(theirs, endpoints, ev, cr),
                                name=f"suite-gw-sender-{i}", daemon=True)
                p.start()
                theirs.close()
                senders.append(p)
                conns.append(mine)
            for c in conns:
                if not c.poll(60):
                    raise TimeoutError("a sender process did not start within 60 s")
                assert c.recv()[0] == "ready"
            client = engine.Client(endpoints=endpoints, timeout=30)
            me = os.getpid()
            pids = [me, *eng.pids, *(p.pid for p in senders)]
            meter = Meter(lambda: pids).start()
            start = time.time_ns()
            for c in conns:
                c.send(start)
            probe = _Probe(eng, client.send, *probe_series)
            probe.start()
            n = workload.n
            deadline = time.monotonic() + 120
            while _handled(eng) - _probes_applied(eng, probe_series) < n:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {_handled(eng)} of {n} events applied")
                for p in senders:
                    if p.exitcode not in (None, 0):
                        raise RuntimeError(f"sender {p.name} died (exit {p.exitcode})")
                time.sleep(0.001)
            seconds = (time.time_ns() - start) / 1e9
            latencies = probe.finish()
            probe = None
            sender_cpu = 0.0
            for c in conns:
                if not c.poll(60):
                    raise TimeoutError("a sender did not report")
                sender_cpu += c.recv()[1]
            peak, _ = meter.stop()
            cpu = meter.cpu_of([me, *eng.pids]) + sender_cpu
            state = _state_of(eng, probe_series)
            return RunResult(
                name=self.name, seconds=seconds, state=state, latencies_ns=latencies,
                stale_overwrites=0, peak_rss_bytes=int(peak), cpu_seconds=cpu,
                producers=producers,
                notes=f"{self.workers} workers, {producers} client process(es); latency: probe "
                      "event every 5 ms through a Client in this process, send -> seen "
                      "applied (Engine.get); seconds: go -> stats()['applied'] reached n; "
                      + _refused(eng),
            )
        finally:
            if probe is not None:
                probe.stop.set()
                probe.join(10)
            if meter is not None:
                meter.stop()
            if client is not None:
                client.close()
            for p in senders:
                p.join(10)
                if p.is_alive():
                    p.kill()
                    p.join(5)
            for c in conns:
                c.close()
            eng.close()


CONTENDERS = {c.name: c() for c in (Ringflow, RingflowGateway)}
