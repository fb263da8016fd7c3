"""Long stress runs, outside the default test run: ``python -m pytest -m slow``."""

from __future__ import annotations

import numpy as np
import psutil
import pytest

import engine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.mark.parametrize("workers", [2, 4])
def test_hundred_million_events_lose_nothing_and_memory_stays_flat(workers):
    """10^8 events through tiny-ish rings: every one is applied, and neither
    the engine process nor the workers grow after the first batches."""
    n_batches, batch = 1526, 65536  # ~10^8 events
    rng = np.random.default_rng(workers)
    pool = []
    for _ in range(8):
        ev = np.zeros(batch, engine.EVENT_DTYPE)
        ev["key"] = rng.integers(0, 25_000, batch, dtype=np.uint64)
        ev["metric"] = rng.integers(0, 4, batch, dtype=np.uint32)
        ev["ts"] = engine.DEFAULT_TS_MIN + 10**18 + np.arange(batch)
        ev["value"] = rng.random(batch)
        pool.append(ev)
    with engine.Engine(workers=workers, table_capacity=100_000, ring_capacity=1 << 14) as eng:
        procs = [psutil.Process()] + [psutil.Process(p) for p in eng.pids]
        rss = []
        for i in range(n_batches):
            assert eng.submit(pool[i % len(pool)]) == batch
            if i in (50, n_batches - 1):
                eng.flush()
                rss.append([p.memory_info().rss for p in procs])
        eng.flush()
        s = eng.stats()
        assert s["applied"] == n_batches * batch
        assert int(eng.snapshot()["count"].sum()) == n_batches * batch
    growth = [after - before for before, after in zip(*rss)]
    assert max(growth) < 16 * 2**20, f"RSS grew by {growth} bytes"
