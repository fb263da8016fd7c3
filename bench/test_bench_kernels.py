"""pytest-benchmark suites for ringflow's kernels.

Not part of the default test run (``testpaths`` is ``tests/``); run with

    python -m pytest bench/test_bench_kernels.py --benchmark-only
    python -m pytest bench/test_bench_kernels.py --benchmark-only --benchmark-autosave
    python -m pytest bench/test_bench_kernels.py --benchmark-only --benchmark-compare

Every benchmark records ``events_per_s`` (from the median round) in its
``extra_info``, and each group has a pure-Python baseline measured in the
same session, so a saved run can be compared against an older one and
against Python on the same machine.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import engine
from engine import _ring, _router, _table
from engine.core.config import EngineConfig
from engine.core.shm import PREFIX, Segment

sys.path.insert(0, os.path.dirname(__file__))
import common as C  # noqa: E402
import kernel as K  # noqa: E402

BATCH = 4096
TS_MIN, TS_MAX = engine.DEFAULT_TS_MIN, engine.DEFAULT_TS_MAX
# Lifetime statistics only, and everything a worker does (bench/kernel.py).
PLAIN = K.kernel_settings("plain")
SETTINGS = K.kernel_settings("health")
NO_ALERTS = np.empty(BATCH, engine.ALERT_DTYPE)


def _record_rate(benchmark, events: int) -> None:
    """Attach events/s of the median round to the saved results."""
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: nothing was timed
        return
    med = stats.stats.median
    benchmark.extra_info["events_per_call"] = events
    benchmark.extra_info["events_per_s"] = events / med if med else None


@pytest.fixture(autouse=True)
def no_leaks():
    """No segment of this process may outlive a benchmark."""
    mine = f"{PREFIX}-{os.getpid()}-"
    before = {n for n in engine.list_segments() if n.startswith(mine)}
    yield
    after = {n for n in engine.list_segments() if n.startswith(mine)}
    assert after <= before, f"segments left behind: {sorted(after - before)}"


# --- the update kernel ----------------------------------------------------------


@pytest.fixture(scope="module", params=[1_000, 100_000], ids=["1k", "100k"])
def warm_table(request):
    """A table in a /dev/shm segment (as a worker's), every series present."""
    series = request.param
    slots = EngineConfig(table_capacity=series).table_slots
    seg = Segment.create(_table.table_bytes(slots, series), "bench")
    table = None
    try:
        _table.init_table(seg.buf, slots, series)
        table = _table.Table(seg.buf)
        table.apply(C.all_series_once(series), SETTINGS, NO_ALERTS)
        ev = C.gen_events(64 * BATCH, series, seed=1)
        yield series, table, ev
    finally:
        if table is not None:
            table.release_buffer()
        seg.close()
        seg.unlink()


@pytest.mark.benchmark(group="kernel: Table.apply, 64 batches of 4096")
@pytest.mark.parametrize("mode", ["plain", "health"])
def test_table_apply(benchmark, warm_table, mode):
    series, table, ev = warm_table
    views = [ev[i:i + BATCH] for i in range(0, len(ev), BATCH)]
    apply = table.apply
    settings = PLAIN if mode == "plain" else SETTINGS

    def run():
        for v in views:
            apply(v, settings, NO_ALERTS)

    # Each round in the future of the last, so that events are new, not stale.
    benchmark.pedantic(run, setup=lambda: C.advance_time(ev), rounds=15, warmup_rounds=1)
    benchmark.extra_info["series"] = series
    benchmark.extra_info["mode"] = mode
    _record_rate(benchmark, len(ev))


@pytest.mark.benchmark(group="kernel: Table.apply, 64 batches of 4096")
def test_python_fold_baseline(benchmark):
    """The pure-Python dict-of-series loop, 100k series, 8192 events."""
    series = 100_000
    state: dict = {}
    C.python_fold(*C.columns(C.all_series_once(series)), state)
    keys, tss, metrics, values = C.columns(C.gen_events(8192, series, seed=1))
    benchmark.pedantic(C.python_fold, args=(keys, tss, metrics, values, state),
                       rounds=5, warmup_rounds=1)
    _record_rate(benchmark, len(keys))


def test_python_fold_matches_kernel():
    """The baseline does the kernel's work: same statistics on the same events."""
    series = 50
    ev = C.gen_events(5000, series, seed=3, late_fraction=0.2)
    buf = np.zeros(_table.table_bytes(128, series), np.uint8)
    _table.init_table(buf, 128, series)
    table = _table.Table(buf)
    try:
        table.apply(ev, PLAIN, NO_ALERTS)
        rows = np.empty(series, engine.STATE_DTYPE)
        assert table.snapshot_into(rows) == series
    finally:
        table.release_buffer()
    state: dict = {}
    C.python_fold(*C.columns(ev), state)
    assert len(state) == series
    for r in rows:
        s = state[(int(r["key"]), int(r["metric"]))]
        assert s[0] == r["count"] and s[11] == r["stale"]
        assert s[9] == r["last_ts"] and s[10] == r["first_ts"]
        np.testing.assert_allclose(
            [s[1], s[2], s[3], s[4], s[6], s[7], s[8]],
            [r["sum"], r["min"], r["max"], r["mean"], r["m2"] / r["count"], r["ewma"],
             r["last"]],
            rtol=1e-9)


# --- the ring, both ends in one process ------------------------------------------


@pytest.fixture
def ring_pair():
    capacity = 1 << 16
    seg = Segment.create(4096 + capacity * 32, "bench")
    prod = cons = None
    try:
        _ring.init_header(seg.buf, 0, capacity, 4096, 256, 320)
        prod = _ring.Ring(seg.buf, 0, wait="spin")
        cons = _ring.Ring(seg.buf, 0, wait="spin")
        yield prod, cons
    finally:
        for r in (prod, cons):
            if r is not None:
                r.release_buffer()
        seg.close()
        seg.unlink()


@pytest.mark.benchmark(group="ring: publish + consume_checksum in one process")
@pytest.mark.parametrize("batch", [64, 4096, 32768])
def test_ring_publish_consume(benchmark, ring_pair, batch):
    prod, cons = ring_pair
    ev = np.zeros(batch, engine.EVENT_DTYPE)
    ev["key"] = np.arange(1, batch + 1, dtype=np.uint64)
    reps = max(1, 32768 // batch)
    publish, consume = prod.publish, cons.consume_checksum

    def run():
        for _ in range(reps):
            publish(ev)
            n = consume()[0]
            assert n == batch

    benchmark(run)
    _record_rate(benchmark, batch * reps)


@pytest.mark.benchmark(group="ring: publish + consume_checksum in one process")
def test_python_list_handoff_baseline(benchmark):
    """Pure-Python hand-off of 4096 event tuples through a deque (one process)."""
    from collections import deque

    items = list(zip(*C.columns(C.gen_events(BATCH, 1000, seed=2))))
    q: deque = deque()

    def run():
        q.extend(items)
        ksum = 0
        while q:
            ksum += q.popleft()[0]
        return ksum

    benchmark(run)
    _record_rate(benchmark, BATCH)


# --- the router --------------------------------------------------------------------


@pytest.mark.benchmark(group="router: shard_of 65536 keys")
@pytest.mark.parametrize("workers", [2, 8])
def test_shard_of(benchmark, workers):
    keys = np.random.default_rng(5).integers(0, 2**63, 65536, dtype=np.uint64)
    benchmark(_router.shard_of, keys, workers)
    _record_rate(benchmark, len(keys))


@pytest.mark.benchmark(group="router: shard_of 65536 keys")
def test_shard_python_baseline(benchmark):
    """mix64(key) % workers in pure Python over 4096 keys."""
    mask = (1 << 64) - 1
    keys = np.random.default_rng(5).integers(0, 2**63, BATCH, dtype=np.uint64).tolist()

    def shard(keys, workers=2):
        out = []
        for z in keys:
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
            out.append((z ^ (z >> 31)) % workers)
        return out

    benchmark(shard, keys)
    _record_rate(benchmark, len(keys))


# --- the embedded engine: submit + flush -------------------------------------------


@pytest.fixture(scope="module")
def running_engine():
    with engine.Engine(workers=2, table_capacity=4096) as eng:
        yield eng


@pytest.mark.benchmark(group="engine: submit + flush (2 workers)")
@pytest.mark.parametrize("batch", [1, 16, 4096])
def test_engine_submit_flush(benchmark, running_engine, batch):
    eng = running_engine
    ev = C.gen_events(batch, min(batch, 1000), seed=4)

    def run():
        eng.submit(ev)
        eng.flush()

    benchmark.pedantic(run, setup=lambda: C.advance_time(ev), rounds=300, warmup_rounds=20)
    _record_rate(benchmark, batch)
