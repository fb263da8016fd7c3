"""Worker faults against real worker processes (issue 14, docs/faults.md):
SIGKILL and SIGSTOP of workers this test started, by pid, while events
flow; a ledger of every accepted event says what each series must hold
afterwards, exactly.

Every series' values are small integers, so a row's sum is exact whatever
the order, and a lost or doubled event shows in both count and sum."""

from __future__ import annotations

import gc
import json
import os
import random
import signal
import threading
import time
from collections import Counter

import numpy as np
import pytest
import zmq

import engine
from engine import _control
from engine.errors import WorkerDied
from engine.health.alerts import EngineAlert
from engine.net import protocol as P
from tests.helpers import served_engine, wait_for
from tests.reference import shard_ref

pytestmark = pytest.mark.timeout(180)

HOSTS = [f"host-{i:03d}" for i in range(64)]
KEYS = np.array([engine.entity_id(h) for h in HOSTS], np.uint64)
CPU = engine.metric_id("cpu")
SHARD = shard_ref(KEYS, 2)
# A worker that served at all had a good start, so that a test's kills are
# faults, never a crash loop; back-offs short.
FAST = {"stable_after": "0s", "restart_backoff": "20ms"}


class Ledger:
    """What was accepted, per host: count and sum."""

    def __init__(self) -> None:
        self.count = Counter()
        self.total = Counter()
        self._lock = threading.Lock()

    def add(self, ev: np.ndarray) -> None:
        keys, inv = np.unique(ev["key"], return_inverse=True)
        counts = np.bincount(inv)
        sums = np.bincount(inv, weights=ev["value"])
        with self._lock:
            for k, c, s in zip(keys.tolist(), counts.tolist(), sums.tolist()):
                self.count[k] += c
                self.total[k] += s

    def check(self, eng: engine.Engine) -> None:
        snap = eng.snapshot()
        got_count = dict(zip(snap["key"].tolist(), snap["count"].tolist()))
        got_sum = dict(zip(snap["key"].tolist(), snap["sum"].tolist()))
        assert sum(self.count.values()) == sum(got_count.values()), "events lost or doubled"
        for k, c in self.count.items():
            assert got_count.get(k) == c, (k, got_count.get(k), c)
            assert got_sum.get(k) == self.total[k], (k, got_sum.get(k), self.total[k])


def batch(rng: random.Random, n: int, ts: int) -> np.ndarray:
    ev = np.zeros(n, engine.EVENT_DTYPE)
    ev["key"] = KEYS[np.array([rng.randrange(len(KEYS)) for _ in range(n)])] if n < 64 \
        else np.resize(KEYS, n)
    ev["ts"] = ts + np.arange(n)
    ev["metric"] = CPU
    ev["value"] = np.arange(n) % 7
    return ev


def kill_worker(eng: engine.Engine, w: int, sig: int = signal.SIGKILL) -> int:
    """Signal the worker now serving shard w (a process this test's engine
    started) by pid; returns the pid."""
    pid = eng.pids[w]
    os.kill(pid, sig)
    return pid


def heartbeat(eng: engine.Engine, w: int) -> int:
    return _control.load_u64(eng._control_segment.buf,
                             eng.layout.worker_control(w, "heartbeat"))[0]


def serving_again(eng: engine.Engine, w: int, restarts: int) -> bool:
    row = eng.stats()["workers"][w]
    return row["state"] == "ok" and row["restarts"] >= restarts


def killer(eng: engine.Engine, kills: int, rng: random.Random, done: threading.Event,
           log: list) -> None:
    """Kill a random worker ``kills`` times, each once its shard serves
    again, at a random point of the ingest: after it applied a random
    number of further events."""
    for _ in range(kills):
        w = rng.randrange(eng.config.workers)
        row = eng.stats()["workers"][w]
        before, target = row["restarts"], row["applied"] + rng.randrange(1, 100_000)
        wait_for(lambda w=w, t=target: eng.stats()["workers"][w]["applied"] >= t, 60,
                 f"worker {w} applying")
        log.append(kill_worker(eng, w))
        wait_for(lambda w=w, b=before: serving_again(eng, w, b + 1), 20,
                 f"worker {w} replaced")
    done.set()


def test_sigkill_during_embedded_ingest_loses_and_doubles_nothing():
    """Ten kills of random workers while one thread submits batches of every
    size (one of them large) and flushes: every series exact afterwards."""
    rng = random.Random(14)
    ledger = Ledger()
    with engine.Engine(workers=2, ring_capacity=8192, **FAST) as eng:
        done = threading.Event()
        killed: list = []
        t = threading.Thread(target=killer, args=(eng, 10, rng, done, killed))
        t.start()
        ts = engine.DEFAULT_TS_MIN + 10**18
        rounds = 0
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            n = rng.choice([1, 17, 4096, 30_000, 250_000])
            ev = batch(rng, n, ts)
            ts += n
            accepted = eng.submit(ev)
            assert accepted == n
            ledger.add(ev)
            if rounds % 3 == 0:
                eng.flush(60)
            rounds += 1
        t.join(60)
        assert done.is_set(), "the killer did not finish"
        eng.flush(60)
        ledger.check(eng)
        stats = eng.stats()
        assert sum(w["restarts"] for w in stats["workers"]) == 10
        assert stats["state"] == "ok"
        assert stats["applied"] == sum(ledger.count.values())
        for pid in killed:
            assert pid not in eng.pids


def test_a_kill_in_the_middle_of_a_large_batch():
    """A worker killed while it applies a 2M-event batch, inside a span of a
    whole ring: its successor replays that span and finishes the batch,
    none twice."""
    rng = random.Random(7)
    ledger = Ledger()
    with engine.Engine(workers=2, worker_timeout="60s", **FAST) as eng:
        ev = batch(rng, 2_000_000, engine.DEFAULT_TS_MIN + 10**18)
        # Stopped while the batch fills its ring, worker 0 then takes a
        # span of a whole ring (milliseconds of work): the kill lands in it.
        pid = kill_worker(eng, 0, signal.SIGSTOP)
        t = threading.Thread(target=eng.submit, args=(ev,))
        t.start()
        try:
            wait_for(lambda: eng.stats()["workers"][0]["ring_fill"] > 0.8, 30, "the ring full")
            at_kill = eng.stats()["workers"][0]["applied"]
            beat = heartbeat(eng, 0)
            os.kill(pid, signal.SIGCONT)
            # Its loop turns (the heartbeat moves) right before it takes the span.
            wait_for(lambda: heartbeat(eng, 0) != beat, 10, "worker 0 running",
                     every=0.0001)
            kill_worker(eng, 0)
        finally:
            os.kill(eng.pids[0], signal.SIGCONT)
            t.join(60)
        ledger.add(ev)
        eng.flush(60)
        ledger.check(eng)
        share = int((SHARD[np.resize(np.arange(len(KEYS)), len(ev))] == 0).sum())
        assert at_kill < share, "the kill came after worker 0 finished"
        assert eng.stats()["workers"][0]["applied"] == share
        assert eng.stats()["workers"][0]["restarts"] == 1
        # The kill landed inside a span: its successor replayed it.
        assert eng.stats()["workers"][0]["replayed_spans"] == 1


def test_a_hung_worker_is_replaced_and_its_series_are_never_ok_meanwhile():
    """SIGSTOP past worker_timeout: declared hung, killed, replaced; while
    its shard is out, its series read STALE (shard_down) in every read and
    the ENGINE alerts say why; afterwards the ledger is exact."""
    ledger = Ledger()
    rng = random.Random(3)
    with engine.Engine(workers=2, worker_timeout="600ms", tick="100ms", **FAST) as eng:
        seen: list = []
        eng.on_alert(lambda a: seen.append(a) if isinstance(a, EngineAlert) else None)
        ev = batch(rng, 6400, engine.DEFAULT_TS_MIN + 10**18)
        eng.submit(ev)
        ledger.add(ev)
        eng.flush(30)
        assert eng.status("WARN") == []
        mine = KEYS[SHARD == 0].tolist()
        theirs = KEYS[SHARD == 1].tolist()
        # The replacement waits before it serves, so the outage can be read.
        eng._set_crash_hook(0, "hold")
        stopped = kill_worker(eng, 0, signal.SIGSTOP)
        ev = batch(rng, 6400, engine.DEFAULT_TS_MIN + 10**18 + 10**6)
        eng.submit(ev)           # waits in the rings
        ledger.add(ev)
        wait_for(lambda: eng.stats()["workers"][0]["state"] == "recovering", 10,
                 "the hung worker replaced")
        # Every read of shard 0's series: at least STALE, marked shard_down.
        row = eng.get(mine[0], CPU)
        assert row["status"] == engine.STATUS_NAMES.index("STALE")
        assert eng.series(mine[0], CPU)["shard_down"] is True
        listed = {e["entity_id"] for e in eng.status("STALE")}
        assert set(mine) <= listed and not set(theirs) & listed
        assert eng.series(theirs[0], CPU)["status"] == "OK"
        assert eng.stats()["state"] == "recovering"
        states = [(a.worker, a.old, a.new) for a in
                  wait_for(lambda: len(seen) >= 3 and list(seen), 5, "ENGINE alerts")]
        assert states[:3] == [(0, "ok", "hung"), (0, "hung", "down"), (0, "down", "recovering")]
        assert "made no progress" in seen[0].cause
        eng._set_crash_hook(0, None)
        wait_for(lambda: eng.stats()["state"] == "ok", 10, "shard 0 back")
        eng.flush(30)
        ledger.check(eng)
        assert eng.series(mine[0], CPU)["status"] == "OK"
        assert eng.series(mine[0], CPU)["shard_down"] is False
        wait_for(lambda: len(seen) >= 4, 5, "the recovery alert")
        assert (seen[3].old, seen[3].new) == ("recovering", "ok")
        with pytest.raises(ProcessLookupError):
            os.kill(stopped, 0)


def test_a_crash_loop_ends_degraded_with_readable_survivors():
    """A worker made to die at every start: after max_restarts failed starts
    the shard is degraded, with the cause; the other shard reads as usual;
    submit refuses with WorkerDied naming the cause; nothing is left
    running."""
    with engine.Engine(workers=2, max_restarts=3, **FAST) as eng:
        ev = batch(random.Random(1), 640, engine.DEFAULT_TS_MIN + 10**18)
        eng.submit(ev)
        eng.flush(30)
        eng._set_crash_hook(1, "exit")
        kill_worker(eng, 1)
        wait_for(lambda: eng.state == "degraded", 20, "degraded")
        w1 = eng.stats()["workers"][1]
        assert w1["state"] == "degraded" and "3 failed starts in a row" in w1["cause"]
        assert "exited with code 70" in w1["cause"]
        survivor = int(KEYS[SHARD == 0][0])
        lost = int(KEYS[SHARD == 1][0])
        assert eng.series(survivor, CPU)["status"] == "OK"
        assert eng.series(lost, CPU)["status"] == "STALE"
        assert eng.series(lost, CPU)["count"] == 10     # its last known state stays readable
        with pytest.raises(WorkerDied, match="degraded.*failed starts"):
            eng.submit(ev)
        with pytest.raises(WorkerDied):
            eng.flush(1)


def test_reads_never_wait_long_while_workers_are_killed():
    """A reader of the series of a worker being killed again and again
    gets its answer (a row, or SeriesUnavailable) within 10 ms.

    What the engine bounds is the read's own work (a row stuck mid-write is
    given up on after a millisecond): every read's CPU time stays under
    10 ms, and so does the 99th percentile of wall time.  A single read's
    wall time also includes waiting for this thread's turn at the GIL and
    at one of two cores shared with the ingest thread, three workers and a
    starting interpreter, which no read can bound."""
    rng = random.Random(5)
    with engine.Engine(workers=2, **FAST) as eng:
        stop = threading.Event()

        def ingest() -> None:
            ts = engine.DEFAULT_TS_MIN + 10**18
            while not stop.is_set():
                eng.submit(batch(rng, 50_000, ts))
                ts += 50_000

        t = threading.Thread(target=ingest)
        t.start()
        waits: list[float] = []
        cpu: list[float] = []
        # A cyclic collection runs in whichever thread allocates when the
        # threshold trips, and a full one over this process's objects takes
        # several milliseconds: that is the interpreter's work, not the read's
        # (a CI run once charged 11 ms of it to one read).
        gc.collect()
        gc.disable()
        try:
            for k in range(3):
                before = eng.stats()["workers"][0]["restarts"]
                kill_worker(eng, 0)
                end = time.monotonic() + 0.3
                while time.monotonic() < end:
                    t0, c0 = time.perf_counter(), time.thread_time()
                    try:
                        eng.get(KEYS[k], CPU)
                    except engine.errors.SeriesUnavailable:
                        pass
                    waits.append(time.perf_counter() - t0)
                    cpu.append(time.thread_time() - c0)
                wait_for(lambda b=before: serving_again(eng, 0, b + 1), 20, "replaced")
        finally:
            gc.enable()
            stop.set()
            t.join(30)
        waits.sort()
        assert max(cpu) < 0.010, f"a read worked for {max(cpu) * 1e3:.1f} ms"
        p99 = waits[int(len(waits) * 0.99)]
        assert p99 < 0.010, f"p99 read {p99 * 1e3:.1f} ms (slowest {waits[-1] * 1e3:.1f} ms)"


def test_sigkill_twenty_times_under_acked_ingest_through_the_gateway():
    """Twenty kills of random workers while a client sends acked messages:
    every message is answered, ``ok`` only for what is then applied, and
    every series' count equals the ledger of acked events exactly."""
    rng = random.Random(20)
    ledger = Ledger()
    with served_engine(dict(ring_capacity=16384, **FAST), ack_timeout=2.0) as (eng, urls, ctx):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(urls["acked"])
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"ENGINE")
        sub.connect(urls["alerts"])
        done = threading.Event()
        t = threading.Thread(target=killer, args=(eng, 20, rng, done, []))
        t.start()
        ts = engine.DEFAULT_TS_MIN + 10**18
        replies = Counter()
        deadline = time.monotonic() + 150
        try:
            while not done.is_set() and time.monotonic() < deadline:
                ev = batch(rng, rng.choice([64, 2000, 20_000]), ts)
                ts += len(ev)
                while len(ev):
                    sock.send(P.pack_events(ev))
                    assert sock.poll(10_000), "an acked message went unanswered"
                    reply = json.loads(sock.recv())
                    replies[reply.get("reason", "ok")] += 1
                    if reply["ok"]:
                        ledger.add(ev)
                        break
                    assert reply["reason"] == "backpressure", reply
                    # The first `handled` records were taken: resend the rest.
                    ledger.add(ev[:reply["handled"]])
                    ev = ev[reply["handled"]:]
        finally:
            t.join(60)
        assert done.is_set()
        eng.flush(60)
        ledger.check(eng)
        assert sum(w["restarts"] for w in eng.stats()["workers"]) == 20
        wait_for(lambda: eng.gateway.healthy, 10, "gateway healthy again")
        assert replies["ok"] > 20
        # Each kill's steps on the PUB endpoint (a few of the first may be
        # missed while the subscription reaches the gateway).
        engine_msgs = []
        while sub.poll(200):
            topic, body = sub.recv_multipart()
            assert topic == b"ENGINE"
            engine_msgs.append(json.loads(body))
        back = [m for m in engine_msgs if (m["old"], m["new"]) == ("recovering", "ok")]
        assert len(back) >= 18, engine_msgs
        assert all("serves its shard again" in m["cause"] for m in back)


RULES = {"rule": [{"metric": "cpu", "stat": "last", "warn": 4.5, "crit": 5.5, "clear": 3.5,
                   "for": "100ns"}]}


def run_with_rules(kills: int, seed: int) -> tuple[np.ndarray, list]:
    """The same stream into a fresh engine with rules, killing a worker
    ``kills`` times while it runs: (final rows, every series alert)."""
    rng = random.Random(seed)
    alerts: list = []
    with engine.Engine(workers=2, rules=RULES, ring_capacity=8192, **FAST) as eng:
        eng.on_alert(lambda a: None if isinstance(a, EngineAlert) else alerts.append(
            (a.key, a.ts, a.old, a.new)))
        ts = engine.DEFAULT_TS_MIN + 10**18
        kill_at = set(rng.sample(range(40), kills))
        for i in range(40):
            ev = batch(random.Random(i), 20_000, ts)
            # A quarter of each batch opens new series: kills land in
            # index_insert too.
            ev["key"][::4] = 10**6 + i * 5000 + np.arange(len(ev[::4]))
            ev["value"] = (np.arange(len(ev)) * 7 + i) % 7      # 0..6, crossing the rule
            ts += len(ev)
            eng.submit(ev)
            if i in kill_at:
                w = i % 2
                before = eng.stats()["workers"][w]["restarts"]
                kill_worker(eng, w)
                wait_for(lambda w=w, b=before: serving_again(eng, w, b + 1), 20, "replaced")
        eng.flush(60)
        wait_for(lambda: eng.stats()["alerts_delivered"] >= eng.stats()["alerts"], 10,
                 "alerts delivered")
        rows = eng.snapshot()
    rows = np.sort(rows, order=["key", "metric"])
    rows["version"] = 0
    return rows, sorted(alerts)


def test_kills_under_rules_leave_the_same_rows_and_alerts_as_no_kill():
    """With rules (a hold time, hysteresis) and new series arriving: every
    row, status and pending hold, and every alert exactly once, as in a run
    without faults."""
    want_rows, want_alerts = run_with_rules(0, 9)
    got_rows, got_alerts = run_with_rules(8, 9)
    assert len(got_rows) > 40 * 5000
    assert len(want_alerts) > 100
    assert (got_rows == want_rows).all()
    assert got_alerts == want_alerts
