"""A fleet going silent at once (issue 16): 100,000 series turn STALE in
one TTL sweep, and every consumer kind gets every one of those alerts,
numbered without a gap: an :meth:`engine.Engine.alerts` iterator, an
``on_alert`` callback and a SUB subscriber through the gateway.  The
workers' alert rings are far smaller than the burst; they wait for room
instead of dropping (before issue 16 two thirds of such a burst were lost).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import engine
from engine.net.client import Client
from tests.helpers import served_engine, wait_for

pytestmark = pytest.mark.timeout(180)

SERIES = 100_000
RULES = {"defaults": {"ttl": "1s"}, "rule": [{"metric": "cpu", "warn": 0.8}]}


def test_a_hundred_thousand_series_going_stale_reach_every_consumer():
    settings = {"rules": RULES, "tick": "100ms", "alert_capacity": 4096}
    with served_engine(settings) as (eng, urls, _ctx):
        got_callback: list = []
        done_callback = threading.Event()

        def on_alert(alert) -> None:
            got_callback.append((alert.seq, alert.key, alert.new))
            if len(got_callback) == SERIES:
                done_callback.set()

        eng.on_alert(on_alert)
        stream = eng.alerts(timeout=30)
        with Client(endpoints=urls, timeout=10) as client, \
                client.alerts(["STALE"], timeout=30) as sub:
            # Readings already two TTLs old: the next sweep finds every one
            # of them silent.
            keys = np.arange(1, SERIES + 1, dtype=np.uint64)
            ts = np.full(SERIES, time.time_ns() - 2_000_000_000, np.int64)
            eng.submit(engine.make_events(keys, "cpu", ts, np.full(SERIES, 0.5)))
            eng.flush()

            from_stream = [next(stream) for _ in range(SERIES)]
            from_sub = [next(sub) for _ in range(SERIES)]
        stream.close()
        assert done_callback.wait(30), f"callback got {len(got_callback)}"

        assert {a.new for a in from_stream} == {"STALE"}
        assert sorted(a.key for a in from_stream) == keys.tolist()
        seqs = [a.seq for a in from_stream]
        assert seqs == list(range(seqs[0], seqs[0] + SERIES))
        assert stream.missed == 0

        assert sorted(k for _, k, _ in got_callback) == keys.tolist()
        assert [s for s, _, _ in got_callback] == seqs

        assert [m["seq"] for m in from_sub] == seqs
        assert [m["topic_seq"] for m in from_sub] == list(range(1, SERIES + 1))
        assert sub.missed == 0

        s = eng.stats()
        assert s["alerts"] == SERIES and s["alerts_dropped"] == 0
        assert s["alert_waits"] > 0          # the burst was larger than the rings
        wait_for(lambda: eng.stats()["series"] == SERIES, 5, "every series kept")
