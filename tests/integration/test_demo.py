"""``python -m engine demo`` tells the truth: its alerts are exactly the
scripted incidents' up to the step it reached, whatever the seed and the
fleet; its background load brings stale and late readings and never a
status change."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from engine.cli import demo
from engine.cli.scenario import (
    METRICS,
    SCRIPTED_ALERTS,
    STEPS,
    TTL_STEPS,
    Background,
    Scenario,
)
from tests.integration.test_health_e2e import EXPECTED

pytestmark = pytest.mark.timeout(60)


def test_scripted_alerts_are_the_hand_derived_ones():
    """SCRIPTED_ALERTS is the stream test_health_e2e derives by hand (and
    checks against the reference model)."""
    sc = Scenario(hosts=12, interval="50ms", seed=7)
    got = sorted(sc.scripted_alerts())
    want = sorted((host, metric, old, new, step)
                  for (host, metric), seq in EXPECTED.items()
                  for old, new, _stat, step, _value in seq)
    assert got == want
    assert len(SCRIPTED_ALERTS) == len(want) == 12 + 2 * len(METRICS)
    assert sorted(sc.scripted_alerts(0, 18)) == [a for a in got if a[4] < 18]
    assert sorted(sc.scripted_alerts(18)) == [a for a in got if a[4] >= 18]


@pytest.mark.parametrize("hosts, seed, batch", [(40, 1, 4096), (3000, 7, 16384)])
def test_the_demo_alerts_are_exactly_the_script(hosts, seed, batch, capsys):
    result = demo.run(workers=2, seconds=2.0, hosts=hosts, batch=batch, seed=seed)
    out = capsys.readouterr().out
    sc = Scenario(hosts=hosts, interval=demo.MIN_INTERVAL, seed=seed)
    steps, start = result["steps"], result["start"]
    # 2 s at 100 ms a step, from a start up to a window (10 steps) earlier:
    # the silent host's STALE (step 17, its last reading's plus the TTL) is
    # in every run.
    (stale_step,) = {a[4] for a in SCRIPTED_ALERTS if a[3] == "STALE"}
    assert stale_step == 5 + TTL_STEPS < steps <= STEPS
    bound = sc.time_of(steps, start)
    alerts = [(a["entity"], a["metric"], a["old"], a["new"], a["ts"]) for a in result["alerts"]]
    before = Counter(a[:4] for a in alerts if a[4] < bound)
    assert before == Counter(a[:4] for a in sc.scripted_alerts(0, steps)), (steps, alerts)
    # After the last step played only a later change of the script may
    # come (the silent host's STALE passes its TTL on the wall clock).
    later = {a[:4] for a in sc.scripted_alerts(steps)}
    assert all(a[:4] in later for a in alerts if a[4] >= bound), alerts
    # Each alert at the event time of its step.
    step_of = {a[:4]: a[4] for a in sc.scripted_alerts()}
    assert all(a[4] == sc.time_of(step_of[a[:4]], start) for a in alerts), alerts
    assert (result["unexpected"], result["missing"]) == ([], [])
    assert f"exactly the script's up to step {steps - 1}" in out
    # The background brought out-of-order readings, some of them late.
    stats = result["stats"]
    assert stats["stale"] > stats["late"] > 0
    assert stats["alerts_dropped"] == 0


def test_background_readings_from_the_past_follow_their_series():
    """Every reading moved into the past comes after an in-order reading of
    its series in the same batch, and every series of a batch gets one
    (so none is created, or kept alive, by a reading older than the TTL)."""
    sc = Scenario(hosts=300, interval="100ms")
    bg = Background(sc, batch=2048, pool=4, late=0.05, seed=3)
    copies = int(2048 * 0.05)
    prev_end = None
    for _ in range(9):
        ev = bg.next().copy()
        clock = bg.clock
        fresh, old = ev[:-copies], ev[-copies:]
        assert (fresh["ts"] >= clock).all() and (fresh["ts"] < clock + bg.span).all()
        if prev_end is not None:
            assert clock >= prev_end
        prev_end = clock + bg.span
        assert (old["ts"] < clock + bg.span).all()
        first = {}
        for i, (k, m, t) in enumerate(zip(ev["key"].tolist(), ev["metric"].tolist(),
                                          ev["ts"].tolist())):
            if (k, m) not in first:
                first[(k, m)] = (i, t)
        for k, m, t in zip(old["key"].tolist(), old["metric"].tolist(), old["ts"].tolist()):
            i, t0 = first[(k, m)]
            assert i < len(fresh) and t < t0
        # The readings from the past reach back beyond the lateness.
        assert (clock - old["ts"]).max() > sc.window_ns
        assert np.isin(old["key"], fresh["key"]).all()
