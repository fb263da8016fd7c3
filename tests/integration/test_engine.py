"""The embedded engine end to end: real worker processes, real shared
memory, checked against the NumPy oracle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import psutil
import pytest

import engine
from engine.errors import Backpressure, EngineClosed, InvalidEvents, WorkerDied
from tests.helpers import wait_for
from tests.reference import aggregate_ref, valid_mask

pytestmark = pytest.mark.timeout(180)

T0 = engine.DEFAULT_TS_MIN + 10**18


def stream(n: int, series_keys: int, seed: int, bad: float = 0.001) -> np.ndarray:
    """Out-of-order server-health-like stream with some invalid records."""
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, engine.EVENT_DTYPE)
    ev["key"] = rng.integers(0, series_keys, n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    ev["metric"] = rng.integers(0, 4, n, dtype=np.uint32)
    # Mostly increasing time with jitter, so that a good share arrives late.
    ev["ts"] = T0 + np.arange(n, dtype=np.int64) * 1000 + rng.integers(-50_000, 50_000, n)
    ev["value"] = rng.normal(50.0, 20.0, n)
    nbad = int(n * bad)
    idx = rng.choice(n, nbad, replace=False)
    ev["value"][idx[: nbad // 3]] = np.nan
    ev["value"][idx[nbad // 3: 2 * nbad // 3]] = np.inf
    ev["ts"][idx[2 * nbad // 3:]] = engine.DEFAULT_TS_MAX + 1
    return ev


def stale_ref(ev: np.ndarray) -> int:
    """Events older than the newest event time of their series when they
    arrived (one producer: arrival order is submission order)."""
    ev = ev[valid_mask(ev, engine.DEFAULT_TS_MIN, engine.DEFAULT_TS_MAX)]
    order = np.lexsort((np.arange(len(ev)), ev["metric"], ev["key"]))
    s = ev[order]
    new = np.ones(len(s), bool)
    new[1:] = (s["key"][1:] != s["key"][:-1]) | (s["metric"][1:] != s["metric"][:-1])
    group = np.cumsum(new) - 1
    rank = np.unique(s["ts"], return_inverse=True)[1].astype(np.int64)
    adj = rank + group * (len(s) + 1)
    running = np.maximum.accumulate(adj)
    prev = np.empty_like(running)
    prev[0] = -1
    prev[1:] = running[:-1]
    return int(np.sum((adj < prev) & ~new))


def sort_rows(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort((rows["metric"], rows["key"]))]


@pytest.mark.parametrize("workers", [2, 4])
def test_snapshot_equals_the_numpy_oracle(workers):
    ev = stream(3_000_000, 20_000, seed=workers)
    ref = aggregate_ref(ev, engine.DEFAULT_TS_MIN, engine.DEFAULT_TS_MAX)
    nvalid = int(valid_mask(ev, engine.DEFAULT_TS_MIN, engine.DEFAULT_TS_MAX).sum())
    with engine.Engine(workers=workers, table_capacity=50_000, ring_capacity=1 << 14) as eng:
        accepted = 0
        for i in range(0, len(ev), 50_000):
            accepted += eng.submit(ev[i:i + 50_000])
        eng.flush()
        snap = sort_rows(eng.snapshot())
        stats = eng.stats()
    assert accepted == nvalid
    assert len(snap) == len(ref)
    for f in ("key", "metric", "count", "min", "max", "last", "last_ts", "first_ts"):
        np.testing.assert_array_equal(snap[f], ref[f], err_msg=f)
    np.testing.assert_allclose(snap["sum"], ref["sum"], rtol=1e-9)
    np.testing.assert_allclose(snap["mean"], ref["mean"], rtol=1e-9)
    assert (snap["version"] % 2 == 0).all()
    assert stats["applied"] == nvalid
    assert stats["rejected_invalid"] == len(ev) - nvalid
    assert stats["series"] == len(ref)
    assert stats["stale"] == stale_ref(ev) == int(snap["stale"].sum())
    assert stats["stale"] > 0
    assert all(w["applied"] > 0 for w in stats["workers"])


def test_get_and_get_many_read_the_same_rows_as_snapshot():
    ev = stream(200_000, 500, seed=3, bad=0)
    with engine.Engine(workers=3) as eng:
        eng.submit(ev)
        eng.flush()
        snap = sort_rows(eng.snapshot())
        many = eng.get_many(snap["key"], snap["metric"])
        np.testing.assert_array_equal(many, snap)
        for row in snap[:50]:
            one = eng.get(int(row["key"]), int(row["metric"]))
            assert one is not None and one.tobytes() == row.tobytes()
        assert eng.get(12345, 1) is None
        missing = eng.get_many([12345, int(snap["key"][0])], [1, int(snap["metric"][0])])
        assert missing["count"][0] == 0 and missing["key"][0] == 12345
        assert missing["count"][1] == snap["count"][0]


def test_names_work_wherever_ids_do():
    with engine.Engine(workers=2) as eng:
        eng.submit(engine.make_events(["web-01", "web-01", "db-7"], ["cpu", "mem", "cpu"],
                                      None, [0.5, 0.25, 0.75]))
        eng.flush()
        assert eng.get("web-01", "cpu")["last"] == 0.5
        assert eng.get(engine.entity_id("db-7"), engine.metric_id("cpu"))["last"] == 0.75
        rows = eng.get_many(["web-01", "db-7"], "cpu")
        assert list(rows["last"]) == [0.5, 0.75]


def test_stale_events_never_overwrite_newer_state():
    with engine.Engine(workers=2) as eng:
        key = engine.entity_id("web-17")
        eng.submit(engine.make_events([key], 1, [T0 + 100], [9.0]))
        eng.submit(engine.make_events([key] * 3, 1, [T0 + 50, T0 + 99, T0 + 1], [1.0, 2.0, 3.0]))
        eng.flush()
        row = eng.get(key, 1)
        assert row["last"] == 9.0 and row["last_ts"] == T0 + 100
        assert row["count"] == 4 and row["stale"] == 3
        assert row["min"] == 1.0 and row["first_ts"] == T0 + 1
        eng.submit(engine.make_events([key], 1, [T0 + 100], [4.0]))
        eng.flush()
        assert eng.get(key, 1)["last"] == 4.0, "an equal event time is newer by arrival"


def test_invalid_records_are_counted_not_applied():
    with engine.Engine(workers=2) as eng:
        ev = engine.make_events([1, 2, 3, 4], 1, [T0, T0, 5, T0], [np.nan, 1.0, 1.0, -np.inf])
        assert eng.submit(ev) == 1
        eng.flush()
        s = eng.stats()
        assert s["rejected_invalid"] == 3 and s["applied"] == 1
        assert eng.get(2, 1)["count"] == 1 and eng.get(3, 1) is None


def test_wrong_input_types_get_clear_errors_and_the_engine_keeps_running():
    with engine.Engine(workers=1) as eng:
        with pytest.raises(InvalidEvents, match="EVENT_DTYPE"):
            eng.submit(np.zeros(4, np.float64))
        with pytest.raises(InvalidEvents, match="numpy array"):
            eng.submit([1, 2, 3])
        with pytest.raises(InvalidEvents, match="contiguous"):
            eng.submit(engine.make_events([1, 2, 3, 4], 1, None, [1.0, 2.0, 3.0, 4.0])[::2])
        assert eng.submit(engine.make_events([1], 1, None, [1.0])) == 1
        eng.flush()
        assert eng.get(1, 1)["count"] == 1


def test_a_full_table_refuses_new_series_with_a_counter():
    with engine.Engine(workers=2, table_capacity=8) as eng:
        ev = engine.make_events(np.arange(100, dtype=np.uint64), 1, None, np.ones(100))
        assert eng.submit(ev) == 100
        eng.flush()
        s = eng.stats()
        assert s["series"] == 16 and all(w["series"] == 8 for w in s["workers"])
        assert s["rejected_table_full"] == 100 - 16
        # Known series keep updating.
        kept = eng.snapshot()
        eng.submit(engine.make_events(kept["key"], kept["metric"], None, np.ones(len(kept))))
        eng.flush()
        assert (eng.get_many(kept["key"], kept["metric"])["count"] == 2).all()


def test_submit_blocks_through_a_tiny_ring_and_loses_nothing():
    ev = stream(500_000, 1000, seed=5, bad=0)
    with engine.Engine(workers=2, ring_capacity=64) as eng:
        assert eng.submit(ev) == len(ev)
        eng.flush()
        assert eng.stats()["applied"] == len(ev)
        assert int(eng.snapshot()["count"].sum()) == len(ev)


def test_backpressure_with_a_stalled_worker_loses_nothing():
    ev = stream(100_000, 1000, seed=6, bad=0)
    with engine.Engine(workers=2, ring_capacity=256) as eng:
        victim = eng.pids[0]
        os.kill(victim, signal.SIGSTOP)
        try:
            with pytest.raises(Backpressure) as info:
                eng.submit(ev, timeout=0.2)
            assert 0 < info.value.accepted < len(ev)
            assert info.value.handled == info.value.accepted
            assert eng.stats()["workers"][0]["ring_fill"] > 0.5
            with pytest.raises(engine.errors.FlushTimeout):
                eng.flush(timeout=0.1)
        finally:
            os.kill(victim, signal.SIGCONT)
        assert eng.submit(ev[info.value.handled:]) == len(ev) - info.value.handled
        eng.flush()
        assert eng.stats()["applied"] == len(ev)
        assert int(eng.snapshot()["count"].sum()) == len(ev)


def test_a_killed_worker_is_replaced_and_a_degraded_shard_is_named_on_the_next_call():
    """A worker killed once is replaced and calls go on; a shard whose
    workers keep dying is named by submit and flush, reads go on, and close
    still cleans up (the autouse guard checks processes and segments)."""
    eng = engine.Engine(workers=2, max_restarts=2, restart_backoff=0.01, stable_after=0)
    try:
        eng.submit(engine.make_events([1], 1, None, [1.0]))
        eng.flush()
        victim = eng.pids[1]
        os.kill(victim, signal.SIGKILL)
        eng.submit(engine.make_events([1], 1, None, [2.0]))
        eng.flush(30)
        assert eng.get(1, 1)["count"] == 2
        assert victim not in eng.pids
        eng._set_crash_hook(1, "exit")
        os.kill(eng.pids[1], signal.SIGKILL)
        wait_for(lambda: eng.state == "degraded", 20, "shard 1 degraded")
        with pytest.raises(WorkerDied) as info:
            eng.submit(engine.make_events([1], 1, None, [1.0]))
        assert info.value.worker == 1 and info.value.exitcode == 70
        assert "shard 1 is degraded" in str(info.value) and "exited with code 70" in str(info.value)
        with pytest.raises(WorkerDied):
            eng.flush(1)
        assert eng.get(1, 1)["count"] == 2
    finally:
        eng.close()
    assert eng.closed


def test_an_exception_inside_with_still_closes_everything():
    with pytest.raises(RuntimeError, match="boom"):
        with engine.Engine(workers=2) as eng:
            pids = eng.pids
            raise RuntimeError("boom")
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                   for p in pids)


def test_close_is_idempotent_and_later_calls_say_closed():
    eng = engine.Engine(workers=1)
    eng.submit(engine.make_events([1], 1, None, [1.0]))
    eng.close()
    eng.close()
    with pytest.raises(EngineClosed):
        eng.submit(engine.make_events([1], 1, None, [1.0]))
    with pytest.raises(EngineClosed):
        eng.get(1, 1)


def test_close_drains_what_was_accepted():
    """close() applies everything accepted; a second engine over the same
    data proves it by reading the counters before the tables go away."""
    ev = stream(300_000, 100, seed=8, bad=0)
    eng = engine.Engine(workers=2, ring_capacity=1 << 12)
    eng.submit(ev)
    applied_at_close = []
    orig_flush = eng.flush

    def flush_and_count(timeout=None):
        orig_flush(timeout)
        applied_at_close.append(eng.stats()["applied"])

    eng.flush = flush_and_count
    eng.close()
    assert applied_at_close == [len(ev)]


def test_readers_never_see_a_torn_row_while_ingest_runs():
    """Every event of series k carries the value 1.0, so a consistent row has
    sum == count == mean * count; a torn read would break it."""
    keys = np.arange(64, dtype=np.uint64)
    batch = engine.make_events(np.tile(keys, 512), 1, None, np.ones(64 * 512))
    stop = threading.Event()
    bad: list = []
    reads = [0]

    def reader(eng):
        while not stop.is_set():
            rows = eng.get_many(keys, 1)
            seen = rows[rows["count"] > 0]
            reads[0] += len(seen)
            broken = seen[(seen["sum"] != seen["count"]) | (seen["mean"] != 1.0)
                          | (seen["version"] % 2 == 1)]
            if len(broken):
                bad.append(broken)

    with engine.Engine(workers=2) as eng:
        t = threading.Thread(target=reader, args=(eng,))
        t.start()
        try:
            for _ in range(100):
                eng.submit(batch)
            eng.flush()
        finally:
            stop.set()
            t.join()
        assert int(eng.get_many(keys, 1)["count"].sum()) == 100 * len(batch)
    assert reads[0] > 0
    assert not bad


def test_producers_per_thread_submit_concurrently_without_a_lock():
    ev = stream(400_000, 2000, seed=9, bad=0)
    with engine.Engine(workers=2, producers=3) as eng:
        extra = [eng.producer(), eng.producer()]
        with pytest.raises(engine.errors.EngineError, match="producer slots"):
            eng.producer()
        halves = [ev[: len(ev) // 2], ev[len(ev) // 2:]]
        threads = [threading.Thread(target=p.submit, args=(h,)) for p, h in zip(extra, halves)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        eng.flush()
        s = eng.stats()
        assert s["applied"] == len(ev)
        assert [p["accepted"] for p in s["producers"]] == [0, len(halves[0]), len(halves[1])]


def test_a_killed_embedding_process_leaves_no_workers_and_no_segments():
    """If the process that owns the engine is SIGKILLed, its workers notice
    and exit, and the resource tracker unlinks the segments."""
    code = textwrap.dedent("""
        import sys, engine
        eng = engine.Engine(workers=2)
        print(" ".join(map(str, eng.pids)), flush=True)
        sys.stdin.read()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        pids = [int(p) for p in child.stdout.readline().split()]
        assert len(pids) == 2
        # Only the child's own segments: other ringflow users of the machine
        # may create and remove theirs meanwhile.
        ours = {n for n in engine.list_segments() if n.startswith(f"ringflow-{child.pid}-")}
        assert len(ours) == 4          # control, rules, one table per worker
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p)
                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        left = ours & set(engine.list_segments())
        if not alive and not left:
            break
        time.sleep(0.05)
    assert not alive, f"workers outlived their engine: {alive}"
    assert not left, f"segments outlived their engine: {left}"
