"""The health layer through a real engine: rules in the workers, alert
rings drained by the engine's alert thread, reload on a running engine,
TTL sweeps on the wall clock, overflow of an alert ring, status queries."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import engine
from engine.errors import ConfigError
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(60)

S = 10**9
RULES = """
[defaults]
ttl = "0"

[[rule]]
metric = "cpu"
stat = "last"
warn = 0.8
crit = 0.95
clear = 0.7

[[rule]]
metric = "disk_free"
stat = "last"
warn = 0.2
crit = 0.1
"""


def events(entity, metric, values, t0=None, step=S):
    t0 = time.time_ns() if t0 is None else t0
    n = len(values)
    return engine.make_events([entity] * n, metric, [t0 + i * step for i in range(n)], values)


def drain(stream, n, timeout=10.0):
    """The next n alerts of a stream (fails when they do not come)."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(out)} of {n} alerts: {[str(a) for a in out]}"
        a = stream.get(left)
        if a is not None:
            out.append(a)
    return out


def transitions(alerts):
    return [(a.entity, a.metric, a.old, a.new) for a in alerts]


@pytest.fixture
def eng():
    with engine.Engine(workers=2, rules=RULES, window="10s", tick="50ms") as e:
        e.register_names(entities=[f"web-{i}" for i in range(8)])
        yield e


def test_alerts_carry_names_values_and_event_times(eng):
    t0 = time.time_ns()
    with eng.alerts() as stream:
        eng.submit(events("web-1", "cpu", [0.5, 0.85, 0.99, 0.75, 0.6], t0))
        eng.flush()
        got = drain(stream, 4)
        assert stream.get(0.3) is None            # nothing more: 0.75 holds WARN
    assert transitions(got) == [
        ("web-1", "cpu", "OK", "WARN"), ("web-1", "cpu", "WARN", "CRIT"),
        ("web-1", "cpu", "CRIT", "WARN"), ("web-1", "cpu", "WARN", "OK"),
    ]
    assert [a.value for a in got] == [0.85, 0.99, 0.75, 0.6]
    assert [a.ts for a in got] == [t0 + S, t0 + 2 * S, t0 + 3 * S, t0 + 4 * S]
    assert {a.stat for a in got} == {"last"}
    assert got[0].key == engine.entity_id("web-1") and got[0].metric_id == engine.metric_id("cpu")
    assert got[0].to_dict()["new"] == "WARN"
    s = eng.stats()
    assert s["alerts"] == 4 and s["alerts_dropped"] == 0


def test_status_lists_non_ok_entities_worst_first(eng):
    t0 = time.time_ns()
    eng.submit(events("web-1", "cpu", [0.9], t0))               # WARN
    eng.submit(events("web-2", "cpu", [0.97], t0 + 1))          # CRIT
    eng.submit(events("web-2", "disk_free", [0.15], t0 + 2))    # WARN (falling rule)
    eng.submit(events("web-3", "cpu", [0.1], t0))               # OK
    eng.submit(events("web-4", "disk_free", [0.05], t0 + 3))    # CRIT, later
    eng.flush()
    deadline = time.monotonic() + 5
    while len(eng.status()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    st = eng.status()
    assert [(e["entity"], e["status"]) for e in st] == [
        ("web-2", "CRIT"), ("web-4", "CRIT"), ("web-1", "WARN")]
    assert st[0]["since"] == t0 + 1
    assert [s["metric"] for s in st[0]["series"]] == ["cpu", "disk_free"]
    assert [s["status"] for s in st[0]["series"]] == ["CRIT", "WARN"]
    assert [e["entity"] for e in eng.status("CRIT")] == ["web-2", "web-4"]
    ent = eng.entity("web-3")
    assert ent["status"] == "OK" and ent["series"][0]["last"] == 0.1
    with pytest.raises(ValueError, match="min_status"):
        eng.status("BAD")


def test_stale_events_never_change_status_or_last(eng):
    t0 = time.time_ns()
    with eng.alerts() as stream:
        eng.submit(events("web-5", "cpu", [0.97], t0 + 10 * S))
        eng.flush()
        assert transitions(drain(stream, 1)) == [("web-5", "cpu", "OK", "CRIT")]
        # Older readings, whatever they say, arrive after the newest one.
        eng.submit(events("web-5", "cpu", [0.1, 0.2, 0.3], t0))
        eng.flush()
        assert stream.get(0.3) is None
    row = eng.series("web-5", "cpu")
    assert row["status"] == "CRIT" and row["last"] == 0.97 and row["stale"] == 3
    assert row["count"] == 4


def test_reload_keeps_state_and_reevaluates_at_once(eng):
    t0 = time.time_ns()
    with eng.alerts() as stream:
        eng.submit(events("web-6", "cpu", [0.5, 0.9], t0))
        eng.flush()
        assert transitions(drain(stream, 1)) == [("web-6", "cpu", "OK", "WARN")]
        before = eng.series("web-6", "cpu")
        rules = eng.reload_rules({"rule": [{"metric": "cpu", "warn": 0.95, "crit": 0.99}]})
        assert [r.metric for r in rules.rules] == ["cpu"] and eng.rules is rules
        # A raised threshold clears at once, at the series' newest event time.
        got = drain(stream, 1)
        assert transitions(got) == [("web-6", "cpu", "WARN", "OK")]
        assert got[0].ts == t0 + S
        after = eng.series("web-6", "cpu")
        for f in ("count", "sum", "last", "last_ts", "ewma", "window"):
            assert after[f] == before[f], f
        # Removing every rule returns a non-OK series to OK; none is left.
        eng.submit(events("web-6", "cpu", [0.999], t0 + 2 * S))
        eng.flush()
        assert transitions(drain(stream, 1)) == [("web-6", "cpu", "OK", "CRIT")]
        eng.reload_rules({})
        assert transitions(drain(stream, 1)) == [("web-6", "cpu", "CRIT", "OK")]
    assert eng.stats()["workers"][0]["rules_generation"] == 6   # start, 2 reloads


def test_a_bad_reload_keeps_the_rules_in_force(eng):
    old = eng.rules
    with pytest.raises(ConfigError, match="warn"):
        eng.reload_rules({"rule": [{"metric": "cpu", "stat": "last"}]})
    with pytest.raises(ConfigError, match="lateness"):
        eng.reload_rules({"defaults": {"lateness": "1m"}, "rule": []})   # window is 10 s
    assert eng.rules is old
    t0 = time.time_ns()
    with eng.alerts() as stream:
        eng.submit(events("web-7", "cpu", [0.99], t0))
        eng.flush()
        assert transitions(drain(stream, 1)) == [("web-7", "cpu", "OK", "CRIT")]


def test_ttl_marks_silent_series_stale_and_an_event_brings_them_back():
    rules = {"defaults": {"ttl": "300ms"}, "rule": [{"metric": "cpu", "warn": 0.8}]}
    with engine.Engine(workers=1, rules=rules, tick="20ms") as eng:
        eng.register_names(entities=["db-1"], metrics=["mem"])
        with eng.alerts() as stream:
            t0 = time.time_ns()
            eng.submit(events("db-1", "cpu", [0.5], t0))
            eng.submit(events("db-1", "mem", [0.5], t0))            # no rule: default TTL
            eng.flush()
            got = drain(stream, 2, timeout=5)
            assert sorted(transitions(got)) == [("db-1", "cpu", "OK", "STALE"),
                                                ("db-1", "mem", "OK", "STALE")]
            assert {a.stat for a in got} == {"ttl"}
            assert {a.ts for a in got} == {t0 + 300_000_000}       # last_ts + ttl
            assert eng.status()[0]["status"] == "STALE"
            eng.submit(events("db-1", "cpu", [0.9]))
            eng.flush()
            assert transitions(drain(stream, 1)) == [("db-1", "cpu", "STALE", "WARN")]


def test_a_full_alert_ring_holds_the_worker_and_no_alert_is_lost():
    """A worker whose alert ring is full waits for room (counted in
    alert_waits) instead of dropping: every one of 201 flips arrives, in
    order, numbered without a gap."""
    rules = {"rule": [{"metric": "cpu", "crit": 2.0, "clear": 0.5}]}
    with engine.Engine(workers=1, rules=rules, alert_capacity=16) as eng:
        hub_in = threading.Event()
        release = threading.Event()
        got = []

        def stuck(alert):
            # Holds the alert thread, so the worker's ring fills up.
            got.append(alert)
            hub_in.set()
            release.wait(10)

        eng.on_alert(stuck)
        t0 = time.time_ns()
        eng.submit(events("x", "cpu", [3.0], t0))
        eng.flush()
        assert hub_in.wait(5)
        # 200 flips in one go: 16 fit in the ring, then the worker waits.
        eng.submit(events("x", "cpu", [0.0, 3.0] * 100, t0 + 1, step=1))
        wait_for(lambda: eng.stats()["alert_waits"] > 0, 5, "the worker waiting for room")
        assert eng.series("x", "cpu")["count"] < 201
        release.set()
        eng.flush(10)
        wait_for(lambda: len(got) == 201, 10, "every alert")
        s = eng.stats()
        assert s["alerts"] == 201 and s["alerts_dropped"] == 0
        assert [a.new for a in got] == ["CRIT"] + ["OK", "CRIT"] * 100
        assert [a.seq for a in got] == list(range(got[0].seq, got[0].seq + 201))
        assert eng.series("x", "cpu")["status"] == "CRIT"      # the last flip was to 3.0


def test_a_failing_callback_is_counted_and_others_still_run(eng):
    seen = []

    @eng.on_alert
    def broken(alert):
        raise RuntimeError("boom")

    eng.on_alert(seen.append)
    eng.submit(events("web-0", "cpu", [0.99]))
    eng.flush()
    wait_for(lambda: seen, 5, "the alert at the good callback")
    assert transitions(seen) == [("web-0", "cpu", "OK", "CRIT")]
    assert eng.stats()["alert_callback_errors"] == 1
    eng.remove_alert_callback(broken)


def test_alert_streams_end_when_the_engine_closes():
    eng = engine.Engine(workers=1, rules=RULES)
    stream = eng.alerts()
    out = []
    t = threading.Thread(target=lambda: out.extend(stream), daemon=True)
    t.start()
    eng.submit(events("web-1", "cpu", [0.99]))
    eng.close()           # drains: the alert of the accepted event is delivered
    t.join(5)
    assert not t.is_alive()
    assert transitions(out) == [(None, "cpu", "OK", "CRIT")]


def test_windows_and_quantiles_are_queryable(eng):
    t0 = (time.time_ns() // (10 * S)) * 10 * S          # the start of a 10 s window
    values = np.linspace(1.0, 100.0, 200)
    eng.submit(events("web-0", "latency_ms", list(values), t0, step=S // 100))
    eng.flush()
    row = eng.series("web-0", "latency_ms")
    w = row["window"]
    assert (w["count"], w["min"], w["max"], w["start"]) == (200, 1.0, 100.0, t0)
    assert w["mean"] == pytest.approx(values.mean())
    for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        true = np.sort(values)[int(q * 199)]
        assert abs(row["quantiles"][label] - true) <= true / 9, label
    assert row["var"] == pytest.approx(values.var())


def test_sketches_merge_across_series(eng):
    """Fleet-wide quantiles from merged sketches: the same buckets as one
    sketch over all the values, so within the sketch's error of the truth."""
    t0 = (time.time_ns() // (10 * S)) * 10 * S
    rng = np.random.default_rng(7)
    everything = []
    for i in range(6):
        values = rng.uniform(5.0, 80.0, 300)
        everything.append(values)
        eng.submit(events(f"web-{i}", "latency_ms", list(values), t0, step=S // 100))
    eng.flush()
    fleet = eng.quantiles("latency_ms")
    assert fleet["series"] == 6 and fleet["count"] == 1800
    allv = np.sort(np.concatenate(everything))
    for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        true = allv[int(q * (len(allv) - 1))]
        assert abs(fleet[label] - true) <= true / 9, (label, fleet[label], true)
    two = eng.quantiles("latency_ms", keys=["web-0", "web-1"])
    assert two["series"] == 2 and two["count"] == 600
    assert eng.quantiles("nothing")["p99"] is None
