"""The incident scenario (engine/cli/scenario.py) end to end: rules, windows,
sketch quantiles, hysteresis, ``for``, TTL and alerts, through the ZeroMQ
gateway and through the embedded engine.

The expected alerts below are derived by hand from the script (the
scenario's docstring tells the story; the comments here give the
arithmetic) and checked against the independent plain-Python model of
docs/health.md (tests/health_reference.py) by the first test.

Only the order of one series' alerts is defined (workers run in parallel,
and JSON, binary, PULL and acked traffic take different paths), so alerts
are compared series by series; every series keeps to one channel, which
delivers in order.  The TTL runs on the wall clock: the script's event times
start at a window boundary just after "now"; everything up to the silent
host's return is sent at once, so that only the silent host can pass its TTL
(the others' newest readings are 34 intervals newer than its), then the test
waits for its STALE alerts and sends the rest.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import zmq

import engine
from engine.cli.scenario import (
    FOR_STEPS,
    LATE_DELAY,
    METRICS,
    STEPS,
    TTL_STEPS,
    WINDOW_STEPS,
    Scenario,
)
from engine.health.rules import Rules
from engine.health.rules import stat_name as stat_label
from engine.net.client import Client
from tests.health_reference import STATUS_NAMES, HealthRef
from tests.helpers import free_ports

pytestmark = pytest.mark.timeout(60)

SC = Scenario(hosts=12, interval="50ms", seed=7)
IV = SC.interval_ns
RETURN = 40                     # the silent host reads again from this step
LAST_SILENT_READING = 5
STALE_STEP = LAST_SILENT_READING + TTL_STEPS   # last_ts + ttl, in steps
SILENT = SC.roles["silent"]
RULE_STAT = {"cpu": "ewma", "mem": "last", "disk_free": "last", "latency_ms": "p99",
             "errors": "win_sum"}
PROBE = "probe-0000"

# (entity, metric) -> [(old, new, stat, step of the deciding event, value)].
# Windows are 10 steps (window j = steps 10j..10j+9), the EWMA half-life one
# step (ewma = (ewma + x) / 2 per step), `for` 2 steps, the TTL 12 steps.
EXPECTED = {
    # cpu 0.30 x4, 0.90 x4, 1.00 x4, 0.72 x5, then 0.30.  ewma: step 6
    # 0.825 >= warn (pending), step 8 0.93125 holds it for 2 steps: WARN;
    # step 9 0.965625 >= crit (pending; a duplicate at the same time changes
    # nothing), step 11 commits CRIT; step 12 0.8557 < crit: down at once;
    # steps 13..16 0.788 .. 0.728 are under warn but above clear 0.70: WARN
    # holds (hysteresis); step 17 0.514: OK.  A duplicate of step 10 that
    # arrives at step 12 is stale: no effect; so are readings 18 and 19,
    # held back to steps 22 and 23 (the previous window closes at 23).
    ("web-0001", "cpu"): [
        ("OK", "WARN", "ewma", 8, 0.93125),
        ("WARN", "CRIT", "ewma", 11, 0.99140625),
        ("CRIT", "WARN", "ewma", 12, 0.855703125),
        ("WARN", "OK", "ewma", 17, 0.51424072265625),
    ],
    # (web-0001 mem: 0.99 then 0.95, under `for`: pending, cleared, no alert.)
    # disk_free, a falling rule (warn 0.10, crit 0.05, clear 0.15): 0.42 ..
    # 0.13 OK, 0.08 WARN, (0.06 arrives after) 0.04 CRIT, 0.03, 0.02 ...; a
    # reading of 0.18 held back from step 33 arrives at step 38: stale, CRIT
    # stays; 0.12 at step 44 is above warn but under clear: CRIT -> WARN.
    ("web-0002", "disk_free"): [
        ("OK", "WARN", "last", 35, 0.08),
        ("WARN", "CRIT", "last", 37, 0.04),
        ("CRIT", "WARN", "last", 44, 0.12),
    ],
    # latency p99 of window 2 (p99 of n >= 2 values is the second largest):
    # 10, 11, 70 -> 11; 70 -> 70 WARN (its duplicate keeps it); 180 -> 70;
    # 180 -> 180 CRIT.  Readings 26..29 (400 each) are held back: 28 and 29
    # reach window 2 at step 31, within the lateness (window 3 is not
    # touched), 26 and 27 arrive at step 34, beyond it (late).  Step 30
    # opens window 3 with 12: p99 12 < clear (= warn): CRIT -> OK.
    ("web-0003", "latency_ms"): [
        ("OK", "WARN", "p99", 23, 70.0),
        ("WARN", "CRIT", "p99", 25, 180.0),
        ("CRIT", "OK", "p99", 30, 12.0),
    ],
    # errors 6 per step at 22..25: win_sum 6, 12, 18, 24 -> WARN; window 3
    # starts at 0: OK.
    ("web-0003", "errors"): [
        ("OK", "WARN", "win_sum", 25, 24.0),
        ("WARN", "OK", "win_sum", 30, 0.0),
    ],
}
# The silent host: each series goes STALE at last_ts + ttl (the alert's value
# is the TTL in seconds), and back to OK with its rule's stat at the first reading back
# (which opens a new window: p99 and win_sum are that reading; the EWMA is it
# to 1e-10 after 35 half-lives).
for _m in METRICS:
    EXPECTED[(SILENT, _m)] = [
        ("OK", "STALE", "ttl", STALE_STEP, SC.ttl_ns / 1e9),
        ("STALE", "OK", RULE_STAT[_m], RETURN, SC.reading(SILENT, _m, RETURN)),
    ]

# Sketch quantiles are within 1/9 of the true value (docs/health.md).
REL = {"p99": 1 / 9, "ewma": 1e-9}

# Hosts whose events go to the acked endpoint; the others' to the PULL one.
ACKED_HOSTS = SC.hosts[1::2]
ACKED_KEYS = np.array([engine.entity_id(h) for h in ACKED_HOSTS], np.uint64)


# --- the oracle's helpers ----------------------------------------------------------

def expected_stream(start: int) -> dict:
    """EXPECTED with absolute event times."""
    return {series: [(old, new, stat, start + step * IV, value)
                     for old, new, stat, step, value in seq]
            for series, seq in EXPECTED.items()}


def expected_counters(start: int) -> dict:
    """(entity, metric) -> {count, stale, late}, from the deliveries and the
    contract: stale when older than the watermark; late when stale and its
    window is neither the current one nor the previous one still open."""
    W = SC.window_ns
    L = Rules.load(SC.rules_toml()).lateness_ns
    out = {}
    for step in range(STEPS):
        for host, metric, k, _v in SC.deliveries(step):
            ts = start + k * IV
            s = out.setdefault((host, metric), {"count": 0, "stale": 0, "late": 0, "wm": None})
            s["count"] += 1
            if s["wm"] is None or ts >= s["wm"]:
                s["wm"] = ts
                continue
            s["stale"] += 1
            cur = s["wm"] // W * W
            win = ts // W * W
            if not (win == cur or (win == cur - W and cur + L > s["wm"])):
                s["late"] += 1
    return {key: {k: v for k, v in s.items() if k != "wm"} for key, s in out.items()}


def by_series(alerts: list[dict]) -> dict:
    """Alert dicts grouped per series, in arrival order; the probe left out."""
    out: dict = {}
    for a in alerts:
        if a["entity"] == PROBE:
            continue
        out.setdefault((a["entity"], a["metric"]), []).append(
            (a["old"], a["new"], a["stat"], a["ts"], a["value"]))
    return out


def assert_stream(got: dict, want: dict) -> None:
    """Exact per-series sequences; values within the stat's precision."""
    assert set(got) == set(want), (
        f"series that alerted: unexpected {sorted(set(got) - set(want))}, "
        f"missing {sorted(set(want) - set(got))}")
    for series, seq in want.items():
        have = got[series]
        assert [a[:4] for a in have] == [w[:4] for w in seq], (series, have)
        for a, w in zip(have, seq):
            rel = REL.get(w[2], 1e-12)
            assert a[4] == pytest.approx(w[4], rel=rel, abs=1e-12), (series, a, w)


def stale_alerts_seen(alerts: list[dict]) -> bool:
    return {a["metric"] for a in alerts
            if a["entity"] == SILENT and a["new"] == "STALE"} == set(METRICS)


def complete(alerts: list[dict], want: dict) -> bool:
    got = by_series(alerts)
    return all(len(got.get(s, ())) >= len(seq) for s, seq in want.items())


def check_final_state(eng: engine.Engine, start: int, counters: dict) -> None:
    """Statuses and per-series counters once every event is applied."""
    # One entity is not OK: web-0002, WARN since its CRIT -> WARN.
    status = eng.status()
    assert [(e["entity"], e["status"], e["since"]) for e in status] == [
        ("web-0002", "WARN", start + 44 * IV)]
    assert [(s["metric"], s["status"]) for s in status[0]["series"]] == [("disk_free", "WARN")]
    entity = eng.entity(SILENT)
    assert entity["status"] == "OK"
    assert {s["metric"]: (s["status"], s["since"]) for s in entity["series"]} == {
        m: ("OK", start + RETURN * IV) for m in METRICS}
    # Every series of the fleet: exact counts, stale and late counters.
    rows = {(SC.names["entities"][k], SC.names["metrics"][m]): (c, st, lt)
            for k, m, c, st, lt in eng.snapshot()[["key", "metric", "count", "stale", "late"]]
            .tolist() if k in SC.names["entities"]}
    want = {key: (c["count"], c["stale"], c["late"]) for key, c in counters.items()}
    assert rows == want
    stats = eng.stats()
    assert stats["late"] == sum(c["late"] for c in counters.values()) > 0
    assert stats["stale"] == sum(c["stale"] for c in counters.values())
    assert stats["alerts_dropped"] == 0


# --- the reference model agrees with the expectations ----------------------------

def test_expectations_match_the_reference_model():
    """The hand-derived stream is what docs/health.md's model gives (no engine)."""
    rules = Rules.load(SC.rules_toml())
    ref = HealthRef(window_ns=SC.window_ns, lateness_ns=rules.lateness_ns, half_life_ns=IV,
                    ttl_ns=rules.ttl_ns, rules=rules.compile())
    start = SC.align(1_700_000_000_123_456_789)
    raw = []
    for _step, _due, ev in SC.batches(start, end=SC.time_of(RETURN, start)):
        raw += ref.apply(ev)
    raw += ref.sweep(SC.time_of(RETURN - 1, start) + 1)  # only the silent host is past its TTL
    for _step, _due, ev in SC.batches(start, begin=SC.time_of(RETURN, start)):
        raw += ref.apply(ev)
    names = SC.names
    alerts = [{"entity": names["entities"][k], "metric": names["metrics"][m],
               "old": STATUS_NAMES[o], "new": STATUS_NAMES[n], "stat": stat_label(s),
               "ts": ts, "value": v} for k, ts, m, o, n, s, _r, v in raw]
    assert_stream(by_series(alerts), expected_stream(start))
    counters = expected_counters(start)
    assert ref.counters["stale"] == sum(c["stale"] for c in counters.values())
    assert ref.counters["late"] == sum(c["late"] for c in counters.values())


def test_scenario_is_deterministic_and_formats_agree():
    a = Scenario(hosts=12, interval="50ms", seed=7)
    start = a.align(1_700_000_000_000_000_001)
    assert start % a.window_ns == 0 and start >= 1_700_000_000_000_000_001
    batches = list(a.batches(start))
    assert [s for s, _, _ in batches] == list(range(STEPS))
    assert all(due == start + s * IV for s, due, _ in batches)
    again = list(SC.batches(start))
    assert all(np.array_equal(x[2], y[2]) for x, y in zip(batches, again))
    other = list(Scenario(hosts=12, interval="50ms", seed=8).batches(start))
    assert not all(np.array_equal(x[2], y[2]) for x, y in zip(batches, other))
    # The three formats carry the same deliveries.
    step = 31
    ev = a.delivery(step, start)
    records = a.delivery(step, start, fmt="records")
    lines = a.delivery(step, start, fmt="json")
    assert records == a.to_records(ev) == [json.loads(x) for x in lines.splitlines()]
    # A window of event time selects the batches due in it.
    sel = list(a.batches(start, start + 3 * IV + 1, start + 6 * IV))
    assert [s for s, _, _ in sel] == [4, 5]
    # The noise is there: late deliveries, duplicates, held-back readings.
    counters = expected_counters(start)
    assert sum(c["late"] for c in counters.values()) >= 5
    assert sum(c["stale"] for c in counters.values()) >= 30
    assert LATE_DELAY > WINDOW_STEPS and FOR_STEPS == 2
    # The rules and settings parse and fit together.
    cfg = engine.EngineConfig(rules=a.rules_toml(), **a.engine_settings())
    assert cfg.window_ns == a.window_ns and cfg.half_life_ns == IV
    assert cfg.health_rules.ttl_ns == a.ttl_ns
    assert cfg.effective_lateness_ns == 3 * IV


# --- through the gateway ------------------------------------------------------------

class Subscriber:
    """A raw SUB socket on the gateway's alert endpoint, collecting alerts."""

    def __init__(self, url: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(url)
        self.alerts: list[dict] = []
        self.other: list[tuple] = []

    def poll(self, timeout: float) -> int:
        """Receive what arrives within ``timeout`` seconds (returns at the
        first message, after reading every message then waiting)."""
        n = 0
        if self.sock.poll(int(timeout * 1000)):
            while True:
                try:
                    topic, body = self.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                msg = json.loads(body)
                if topic == b"DROPPED":
                    self.other.append((topic, msg))
                    continue
                assert topic.decode() == msg["new"], (topic, msg)
                self.alerts.append(msg)
                n += 1
        return n

    def wait(self, done, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.alerts):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; alerts so far: {by_series(self.alerts)}")
            self.poll(min(left, 0.1))

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def _probe_until_subscribed(client: Client, sub: Subscriber) -> None:
    """Flip a probe series OK <-> CRIT (event times an hour ahead: it never
    goes STALE) until the SUB socket sees an alert, and leave it OK."""
    ts = time.time_ns() + 3600 * 10**9
    value = 0.5
    for i in range(100):
        value = 0.01 if value == 0.5 else 0.5
        client.send_json([{"entity": PROBE, "metric": "disk_free", "ts": ts + i, "value": value}],
                         ack=True)
        if sub.poll(0.1):
            break
    else:
        raise AssertionError("the alert subscription never saw a probe alert")
    if value != 0.5:
        client.send_json([{"entity": PROBE, "metric": "disk_free", "ts": ts + 1000,
                           "value": 0.5}], ack=True)
        sub.wait(lambda alerts: alerts[-1]["entity"] == PROBE and alerts[-1]["new"] == "OK", 5)


def _send_steps(client: Client, start: int, first: int, stop: int) -> int:
    """Steps [first, stop): each host's events on its own channel (PULL or
    acked), binary frames on odd steps and JSON lines on even ones."""
    sent = 0
    for step, _due, ev in SC.batches(start, SC.time_of(first, start), SC.time_of(stop, start)):
        acked = np.isin(ev["key"], ACKED_KEYS)
        for part, ack in ((ev[~acked], False), (ev[acked], True)):
            if not len(part):
                continue
            if step % 2:
                n = client.send(part, ack=ack)
            else:
                n = client.send_json(SC.to_records(part), ack=ack)
            assert n == (len(part) if ack else None)
            sent += len(part)
    return sent


@pytest.mark.timeout(45)
def test_incident_scenario_through_the_gateway():
    names = ("ingest", "acked", "query", "alerts")
    endpoints = {n: f"tcp://127.0.0.1:{p}" for n, p in zip(names, free_ports(4))}
    with engine.Engine(workers=2, rules=SC.rules_toml(), **SC.engine_settings()) as eng:
        gateway = eng.serve(endpoints)
        sub = Subscriber(endpoints["alerts"])
        try:
            with Client(endpoints=endpoints, timeout=10) as client:
                assert client.register_names(entities=[*SC.hosts, PROBE]) == len(SC.hosts) + 1
                _probe_until_subscribed(client, sub)
                accepted_before = gateway.stats()["accepted"]

                start = SC.align(time.time_ns())
                sent = _send_steps(client, start, 0, RETURN)
                # The silent host passes its TTL on the wall clock.
                sub.wait(stale_alerts_seen, 10)
                assert time.time_ns() < start + (RETURN - 1 + TTL_STEPS) * IV, (
                    "too slow: the calm hosts may pass their TTL too")
                sent += _send_steps(client, start, RETURN, STEPS)

                deadline = time.monotonic() + 10
                while gateway.stats()["accepted"] - accepted_before < sent:
                    assert time.monotonic() < deadline, (gateway.stats(), sent)
                    time.sleep(0.01)
                eng.flush(10)
                want = expected_stream(start)
                sub.wait(lambda alerts: complete(alerts, want), 10)
                sub.poll(0.3)  # anything extra would come now
                assert_stream(by_series(sub.alerts), want)
                assert sub.other == []

                # The final statuses through JSON queries, and the engine's view.
                assert client.get("web-0002", "disk_free")["status"] == "WARN"
                for metric in METRICS:
                    row = client.get(SILENT, metric)
                    assert (row["entity"], row["status"]) == (SILENT, "OK")
                for host, metric in (("web-0001", "cpu"), ("web-0003", "latency_ms"),
                                     ("web-0003", "errors"), ("web-0001", "mem")):
                    assert client.get(host, metric)["status"] == "OK"
                check_final_state(eng, start, expected_counters(start))
                # All of it before the calm hosts' newest readings passed the TTL.
                assert time.time_ns() < start + (STEPS - 1 + TTL_STEPS) * IV, "too slow"
                stats = gateway.stats()
                assert stats["alerts_published"] == len(sub.alerts)
                assert stats["rejected"] == {r: 0 for r in stats["rejected"]}
        finally:
            sub.close()


# --- embedded ---------------------------------------------------------------------

@pytest.mark.timeout(45)
def test_incident_scenario_embedded():
    with engine.Engine(workers=3, rules=SC.rules_toml(), **SC.engine_settings()) as eng:
        eng.register_names(entities=SC.hosts)
        with eng.alerts() as stream:
            got: list[dict] = []

            def wait(done, timeout):
                deadline = time.monotonic() + timeout
                while not done(got):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise AssertionError(f"timed out; alerts so far: {by_series(got)}")
                    a = stream.get(min(left, 0.1))
                    if a is not None:
                        got.append(a.to_dict())

            start = SC.align(time.time_ns())
            for _step, _due, ev in SC.batches(start, end=SC.time_of(RETURN, start)):
                assert eng.submit(ev) == len(ev)
            wait(stale_alerts_seen, 10)
            assert time.time_ns() < start + (RETURN - 1 + TTL_STEPS) * IV, "too slow"
            for _step, _due, ev in SC.batches(start, begin=SC.time_of(RETURN, start)):
                assert eng.submit(ev) == len(ev)
            eng.flush(10)
            want = expected_stream(start)
            wait(lambda alerts: complete(alerts, want), 10)
            while (a := stream.get(0.3)) is not None:  # anything extra would come now
                got.append(a.to_dict())
        assert_stream(by_series(got), want)
        assert all(a["worker"] in range(3) for a in got)
        check_final_state(eng, start, expected_counters(start))
        assert eng.stats()["alerts"] == len(got)
        # All of it before the calm hosts' newest readings passed the TTL.
        assert time.time_ns() < start + (STEPS - 1 + TTL_STEPS) * IV, "too slow"


def test_ttl_alone():
    """The TTL path in isolation: a series whose newest reading is older
    than the TTL goes STALE at last_ts + ttl, exactly, whenever the tick
    notices it."""
    with engine.Engine(workers=1, rules=SC.rules_toml(), **SC.engine_settings()) as eng:
        eng.register_names(entities=["old-host"])
        with eng.alerts(timeout=5) as stream:
            ts = time.time_ns() - 10 * SC.ttl_ns
            eng.submit(engine.make_events(["old-host"], "cpu", [ts], [0.4]))
            a = next(stream)
        assert (a.entity, a.metric, a.old, a.new, a.stat, a.ts) == (
            "old-host", "cpu", "OK", "STALE", "ttl", ts + SC.ttl_ns)
        assert a.value == SC.ttl_ns / 1e9
        assert a.silent_since == ts
        assert f"ttl {SC.ttl_ns / 1e9:g} s" in str(a) and "silent " in str(a)
