"""The ZeroMQ gateway on real sockets (127.0.0.1, free ports), spoken to with
raw pyzmq: every frame type, every rejection reason, exact ack accounting,
1,000 concurrent clients, fuzzed frames, and backpressure from a stalled
worker.  Frames are built with ``struct`` (and ``engine.net.protocol`` for the
binary lookup), never with ``engine.Client``."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import struct
import threading
import time
from collections import Counter

import numpy as np
import psutil
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine.net import protocol as P
from tests.helpers import free_ports, served_engine, wait_for

pytestmark = pytest.mark.timeout(60)

T0 = engine.DEFAULT_TS_MIN + 10**18
HEADER = struct.Struct("<2sBBI")
REPLY_S = 5.0  # seconds any reply may take before the test says "no reply"


# --- frames ---------------------------------------------------------------


def frame(kind: int, count: int, body: bytes = b"", magic: bytes = b"RF",
          version: int = 1) -> bytes:
    return HEADER.pack(magic, version, kind, count) + body


def binary(events: np.ndarray) -> bytes:
    return frame(1, len(events), np.ascontiguousarray(events, engine.EVENT_DTYPE).tobytes())


def json_frame(lines) -> bytes:
    """Type-2 frame; ``lines`` are dicts (dumped) or ready-made str/bytes lines."""
    out = []
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line)
        out.append(line.encode() if isinstance(line, str) else line)
    body = b"".join(x + b"\n" for x in out)
    return frame(2, len(body), body)


def events(entity, metric, n: int, value: float = 1.0, ts0: int = T0) -> np.ndarray:
    return engine.make_events([entity] * n, metric, ts0 + np.arange(n, dtype=np.int64),
                              np.full(n, value))


def line(entity, metric, value, **extra) -> dict:
    return {"entity": entity, "metric": metric, "value": value, **extra}


def _no_constant(name: str):
    raise ValueError(f"reply is not strict JSON: it holds {name}")


def strict_json(data: bytes):
    """Replies must be JSON that any language parses: no NaN or Infinity."""
    return json.loads(data, parse_constant=_no_constant)


# --- a live gateway --------------------------------------------------------


class Live:
    """A served engine plus a client context and small raw-pyzmq helpers."""

    def __init__(self, eng: engine.Engine, urls: dict, ctx: zmq.Context) -> None:
        self.eng, self.urls, self.ctx = eng, urls, ctx

    def sock(self, kind: int, endpoint: str, **opts) -> zmq.Socket:
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        for name, value in opts.items():
            s.setsockopt(getattr(zmq, name.upper()), value)
        s.connect(self.urls[endpoint])
        return s

    def dead_threads(self) -> str:
        gw = self.eng.gateway
        return f"gateway thread errors: {getattr(gw, '_errors', '?')!r}"

    def recv(self, s: zmq.Socket, timeout: float = REPLY_S) -> bytes:
        if not s.poll(int(timeout * 1000)):
            pytest.fail(f"no reply within {timeout}s; {self.dead_threads()}")
        return s.recv()

    def ask(self, s: zmq.Socket, data: bytes, timeout: float = REPLY_S) -> bytes:
        s.send(data)
        return self.recv(s, timeout)

    def ask_json(self, s: zmq.Socket, data: bytes | dict, timeout: float = REPLY_S) -> dict:
        if isinstance(data, dict):
            data = json.dumps(data).encode()
        return strict_json(self.ask(s, data, timeout))

    def query(self, request: dict) -> dict:
        with contextlib.closing(self.sock(zmq.DEALER, "query")) as q:
            return self.ask_json(q, request)

    def gateway_stats(self) -> dict:
        return self.query({"op": "stats"})["stats"]["gateway"]

    def settle(self, messages: int, records: int, timeout: float = 20.0) -> dict:
        """Wait until the gateway has read ``messages`` frames and handed
        ``records`` records (accepted + invalid) to the rings; then flush."""
        deadline = time.monotonic() + timeout
        while True:
            gs = self.eng.gateway.stats()
            if gs["messages"] == messages and gs["accepted"] + gs["invalid"] == records:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"gateway stats {gs} never reached {messages} messages and "
                            f"{records} records; {self.dead_threads()}")
            time.sleep(0.01)
        self.eng.flush(timeout=20)
        return gs


@contextlib.contextmanager
def live(engine_settings: dict | None = None, **gateway_settings):
    # These tests stall a worker (SIGSTOP) on purpose to fill its rings:
    # the supervisor must not replace it as hung meanwhile
    # (test_supervision.py covers that).
    engine_settings = {"worker_timeout": "120s", **(engine_settings or {})}
    with served_engine(engine_settings, **gateway_settings) as served:
        yield Live(*served)


@contextlib.contextmanager
def stopped(pid: int):
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def fd_limit(need: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        if new < need:
            pytest.skip(f"needs {need} file descriptors, hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --- round trips -------------------------------------------------------------


def test_events_round_trip_binary_and_json_on_pull_and_on_acked_dealer_and_req():
    with live() as gw:
        push = gw.sock(zmq.PUSH, "ingest")
        dealer = gw.sock(zmq.DEALER, "acked")
        req = gw.sock(zmq.REQ, "acked")
        sent = {  # (entity, metric) -> events sent and accepted
            ("pull-bin", "cpu"): 50, ("pull-json", "mem"): 30,
            ("dealer-bin", "cpu"): 40, ("dealer-json", "disk"): 20,
            ("req-bin", "cpu"): 25, ("req-json", "lat"): 15,
        }
        push.send(binary(events("pull-bin", "cpu", 50, 2.0)))
        push.send(json_frame(line("pull-json", "mem", 3.0, ts=T0 + i) for i in range(30)))
        assert gw.ask_json(dealer, binary(events("dealer-bin", "cpu", 40, 4.0))) == {
            "ok": True, "accepted": 40, "rejected": 0}
        before = time.time_ns()
        assert gw.ask_json(dealer, json_frame(line("dealer-json", "disk", 5.0)
                                              for _ in range(20))) == {
            "ok": True, "accepted": 20, "rejected": 0}
        after = time.time_ns()
        assert gw.ask_json(req, binary(events("req-bin", "cpu", 25, 6.0))) == {
            "ok": True, "accepted": 25, "rejected": 0}
        # Ids instead of names work in JSON lines too.
        ids = [line(engine.entity_id("req-json"), engine.metric_id("lat"), 7.0, ts=T0 + i)
               for i in range(15)]
        assert gw.ask_json(req, json_frame(ids)) == {"ok": True, "accepted": 15, "rejected": 0}
        total = sum(sent.values())
        gw.settle(messages=6, records=total)

        for (entity, metric), n in sent.items():
            row = gw.eng.get(entity, metric)
            assert row is not None and row["count"] == n, (entity, metric)
        assert gw.eng.get("pull-bin", "cpu")["last"] == 2.0
        assert gw.eng.get("pull-json", "mem")["last_ts"] == T0 + 29
        assert gw.eng.get("dealer-bin", "cpu")["sum"] == 160.0
        # JSON lines without ts are stamped with the gateway's clock.
        assert before <= gw.eng.get("dealer-json", "disk")["last_ts"] <= after
        assert gw.eng.get("req-json", "lat")["last"] == 7.0
        s = gw.eng.stats()
        assert s["applied"] == total == int(gw.eng.snapshot()["count"].sum())
        g = gw.gateway_stats()
        assert g["messages"] == 6 and g["accepted"] == total and g["invalid"] == 0
        assert sum(g["rejected"].values()) == 0
        # The alerts PUB endpoint is bound (no rules publish yet): a TCP
        # connection to it is accepted.
        host, port = gw.urls["alerts"].rsplit("/", 1)[1].split(":")
        socket.create_connection((host, int(port)), timeout=2).close()


@pytest.mark.parametrize("kind", ["dealer", "req"])
def test_every_query_op_and_the_binary_lookup_round_trip(kind):
    with live() as gw:
        acked = gw.sock(zmq.DEALER, "acked")
        lines = [line("web-01", "cpu", v, ts=T0 + i) for i, v in enumerate([1.0, 5.0, 3.0])]
        lines += [line("web-01", "mem", 10.0, ts=T0), line("db-7", "cpu", 0.5, ts=T0)]
        assert gw.ask_json(acked, json_frame(lines))["accepted"] == 5
        # One series sent by id only: the gateway has no name for it.
        anon = events(engine.entity_id("anon-3"), engine.metric_id("disk"), 4, 9.0)
        assert gw.ask_json(acked, binary(anon))["accepted"] == 4
        gw.settle(messages=2, records=9)

        q = gw.sock(zmq.DEALER if kind == "dealer" else zmq.REQ, "query")

        t = time.time_ns()
        r = gw.ask_json(q, {"op": "ping", "id": 17})
        assert r["ok"] is True and r["op"] == "ping" and r["id"] == 17
        assert abs(r["time_ns"] - t) < 5 * 10**9

        r = gw.ask_json(q, {"op": "get", "entity": "web-01", "metric": "cpu", "id": "a"})
        assert r["ok"] and r["op"] == "get" and r["id"] == "a"
        s = r["series"]
        assert (s["entity"], s["metric"]) == ("web-01", "cpu")
        assert s["entity_id"] == engine.entity_id("web-01")
        assert s["metric_id"] == engine.metric_id("cpu")
        row = gw.eng.get("web-01", "cpu")
        for f in ("count", "sum", "min", "max", "mean", "ewma", "last", "last_ts",
                  "first_ts", "stale"):
            assert s[f] == row[f].item(), f
        assert s["var"] == row["m2"].item() / row["count"].item()
        assert (s["count"], s["min"], s["max"], s["last"]) == (3, 1.0, 5.0, 3.0)
        by_id = gw.ask_json(q, {"op": "get", "entity": engine.entity_id("web-01"),
                                "metric": engine.metric_id("cpu")})
        assert by_id["series"] == s
        assert gw.ask_json(q, {"op": "get", "entity": "nobody", "metric": "cpu"}) == {
            "ok": True, "op": "get", "series": None}

        r = gw.ask_json(q, {"op": "entity", "entity": "web-01"})
        assert r["ok"] and sorted(x["metric"] for x in r["series"]) == ["cpu", "mem"]
        assert gw.ask_json(q, {"op": "entity", "entity": "nobody"})["series"] == []

        # No rules: nothing at WARN or worse; three entities in all.
        r = gw.ask_json(q, {"op": "status"})
        assert r["ok"] and r["total"] == 0 and r["entities"] == []
        r = gw.ask_json(q, {"op": "status", "min_status": "OK"})
        assert r["total"] == 3 and sum(len(e["series"]) for e in r["entities"]) == 4
        r = gw.ask_json(q, {"op": "status", "min_status": "OK", "limit": 2})
        assert r["total"] == 3 and len(r["entities"]) == 2

        r = gw.ask_json(q, {"op": "top", "field": "max", "k": 2})
        assert [(x["entity"], x["metric"], x["max"]) for x in r["series"]] == [
            ("web-01", "mem", 10.0), (None, None, 9.0)]
        r = gw.ask_json(q, {"op": "top", "field": "count", "k": 1, "order": "asc"})
        assert [x["count"] for x in r["series"]] == [1]
        assert len(gw.ask_json(q, {"op": "top"})["series"]) == 4

        r = gw.ask_json(q, {"op": "stats"})
        assert r["ok"] and r["stats"]["applied"] == 9 and r["stats"]["series"] == 4
        assert r["stats"]["gateway"]["accepted"] == 9
        assert r["stats"]["gateway"]["messages"] == 2

        r = gw.ask_json(q, {"op": "names", "entities": ["anon-3"], "metrics": ["disk"]})
        assert r == {"ok": True, "op": "names", "registered": 2}
        # Names already known are not counted again (PROTOCOL.md).
        assert gw.ask_json(q, {"op": "names", "entities": ["anon-3"]})["registered"] == 0
        assert gw.ask_json(q, {"op": "names"})["registered"] == 0
        s = gw.ask_json(q, {"op": "get", "entity": engine.entity_id("anon-3"),
                            "metric": engine.metric_id("disk")})["series"]
        assert (s["entity"], s["metric"], s["count"]) == ("anon-3", "disk", 4)

        keys = np.array([engine.entity_id(x) for x in ("web-01", "web-01", "db-7", "nobody",
                                                       "anon-3")], np.uint64)
        metrics = np.array([engine.metric_id(x) for x in ("cpu", "mem", "cpu", "cpu", "disk")],
                           np.uint32)
        rows = P.parse_rows(gw.ask(q, P.pack_lookup(keys, metrics)))
        np.testing.assert_array_equal(rows, gw.eng.get_many(keys, metrics))
        assert list(rows["count"]) == [3, 1, 1, 0, 4]
        assert list(rows["last"][[0, 1, 2, 4]]) == [3.0, 10.0, 0.5, 9.0]
        assert len(P.parse_rows(gw.ask(q, P.pack_lookup([], [])))) == 0
        # One metric for many keys.
        rows = P.parse_rows(gw.ask(q, P.pack_lookup(keys[[0, 2]], engine.metric_id("cpu"))))
        assert list(rows["count"]) == [3, 1]
        assert gw.gateway_stats()["query_errors"] == 0


@pytest.mark.parametrize("kind", ["dealer", "req"])
def test_query_errors_are_json_error_replies_and_queries_go_on(kind):
    bad = [
        b"not json",
        b"\xff\xfe\x00garbage",
        b"[1, 2]",
        b"",
        json.dumps({"id": 5}).encode(),                      # no op
        json.dumps({"op": "nope", "id": 6}).encode(),
        json.dumps({"op": ["ping"]}).encode(),
        json.dumps({"op": "get", "entity": 1.5, "metric": "cpu"}).encode(),
        json.dumps({"op": "get", "entity": -1, "metric": "cpu"}).encode(),
        json.dumps({"op": "get", "entity": "x"}).encode(),   # no metric
        json.dumps({"op": "get", "entity": "x", "metric": 2**32}).encode(),
        json.dumps({"op": "entity", "entity": True}).encode(),
        json.dumps({"op": "top", "field": "nope"}).encode(),
        json.dumps({"op": "top", "order": "up"}).encode(),
        json.dumps({"op": "top", "k": 0}).encode(),
        json.dumps({"op": "status", "limit": "10"}).encode(),
        json.dumps({"op": "names", "entities": "web-01"}).encode(),
        json.dumps({"op": "names", "metrics": [1]}).encode(),
        P.pack_lookup([1, 2], [1, 1])[:-1],                  # bad length
        frame(1, 0),                                         # events frame: not a query
        frame(3, 0, magic=b"RF", version=2),
        b"RF",
    ]
    with live() as gw:
        q = gw.sock(zmq.DEALER if kind == "dealer" else zmq.REQ, "query")
        for data in bad:
            r = gw.ask_json(q, data)
            assert r["ok"] is False and isinstance(r["error"], str) and r["error"], data
        assert gw.ask_json(q, {"op": "nope", "id": [1, "x"]})["id"] == [1, "x"]
        assert gw.ask_json(q, {"op": "ping"})["ok"] is True
        g = gw.gateway_stats()
        assert g["query_errors"] == len(bad) + 1
        assert g["queries"] == len(bad) + 3


# --- rejections and exact acks --------------------------------------------

MAX_BYTES = 4096
GOOD_KEY = 0xA5A5_0000_0000_0000


def _mixed_invalid() -> np.ndarray:
    """Ten records of which five are rejected individually."""
    ev = events("mixed", "cpu", 10, 1.0)
    ev["value"][1] = np.nan
    ev["value"][3] = np.inf
    ev["value"][4] = -np.inf
    ev["ts"][6] = engine.DEFAULT_TS_MIN - 1
    ev["ts"][8] = engine.DEFAULT_TS_MAX + 1
    return ev


def _rejection_cases() -> list[tuple[str, bytes, int, int]]:
    """(reason or "ok", frame, accepted, rejected records) of every kind."""
    ok_bin = binary(events("x", "cpu", 3))
    body = ok_bin[8:]
    ts_ok = T0 + 5
    return [
        ("ok", binary(_mixed_invalid()), 5, 5),
        ("ok", json_frame([
            line("mixed-json", "cpu", 1.0, ts=ts_ok),
            b'{"entity": "mixed-json", "metric": "cpu", "value": NaN, "ts": %d}' % ts_ok,
            b'{"entity": "mixed-json", "metric": "cpu", "value": 1e400, "ts": %d}' % ts_ok,
            line("mixed-json", "cpu", 2.0, ts=engine.DEFAULT_TS_MAX + 1),
            line("mixed-json", "cpu", 2.0, ts=engine.DEFAULT_TS_MIN - 1),
            line("mixed-json", "cpu", 3.0, ts=ts_ok + 1),
        ]), 2, 4),
        ("ok", frame(1, 0), 0, 0),
        ("ok", frame(2, 0), 0, 0),
        ("ok", frame(2, 3, b"\n \n"), 0, 0),
        ("short_frame", b"", 0, 0),
        ("short_frame", b"RF\x01", 0, 0),
        ("short_frame", ok_bin[:7], 0, 0),
        ("bad_magic", b"XF" + ok_bin[2:], 0, 0),
        ("bad_magic", b"rf" + ok_bin[2:], 0, 0),
        ("bad_version", frame(1, 3, body, version=0), 0, 0),
        ("bad_version", frame(1, 3, body, version=3), 0, 0),
        ("bad_type", frame(0, 3, body), 0, 0),
        ("bad_type", frame(5, 3, body), 0, 0),
        ("bad_type", frame(255, 0), 0, 0),
        ("bad_type", P.pack_lookup([1], [1]), 0, 0),   # a query type on ingest
        ("bad_type", frame(4, 0), 0, 0),
        ("bad_length", frame(1, 4, body), 0, 0),
        ("bad_length", frame(1, 2, body), 0, 0),
        ("bad_length", ok_bin + b"\0", 0, 0),
        ("bad_length", ok_bin[:-1], 0, 0),
        ("bad_length", frame(2, 10, b'{"a": 1}\n'), 0, 0),
        ("bad_length", frame(1, 2**32 - 1, body), 0, 0),
        ("bad_utf8", frame(2, 4, b"\xff\xfe\xfd\n"), 0, 0),
        ("bad_utf8", json_frame([b'{"entity": "\xc3(", "metric": "cpu", "value": 1}']), 0, 0),
        ("bad_json", json_frame(["not json"]), 0, 0),
        ("bad_json", json_frame([line("bj", "cpu", 1.0), "[1, 2]"]), 0, 0),
        ("bad_json", json_frame(['{"entity": "bj", "metric": "cpu", "value": 1']), 0, 0),
        ("bad_json", json_frame(["42"]), 0, 0),
        ("bad_field", json_frame([line("bf", "cpu", 1.0, extra=1)]), 0, 0),
        ("bad_field", json_frame([line("bf", "cpu", 1.0), {"metric": "cpu", "value": 1}]), 0, 0),
        ("bad_field", json_frame([{"entity": "bf", "value": 1}]), 0, 0),
        ("bad_field", json_frame([{"entity": "bf", "metric": "cpu"}]), 0, 0),
        ("bad_field", json_frame([line("bf", "cpu", "1.0")]), 0, 0),
        ("bad_field", json_frame([line("bf", "cpu", True)]), 0, 0),
        ("bad_field", json_frame([line("bf", "cpu", None)]), 0, 0),
        ("bad_field", json_frame([line("bf", "cpu", 1.0, ts=[1.5e18])]), 0, 0),
        ("bad_field", json_frame([line("bf", "cpu", 1.0, ts=None)]), 0, 0),
        ("bad_field", json_frame([line("bf", "cpu", 1.0, ts="now")]), 0, 0),
        ("bad_field", json_frame([line("bf", "cpu", 1.0, ts=2**63)]), 0, 0),
        ("bad_field", json_frame([line(-1, "cpu", 1.0)]), 0, 0),
        ("bad_field", json_frame([line(2**64, "cpu", 1.0)]), 0, 0),
        ("bad_field", json_frame([line(1.5, "cpu", 1.0)]), 0, 0),
        ("bad_field", json_frame([line("bf", 2**32, 1.0)]), 0, 0),
        ("bad_field", json_frame([line("bf", ["cpu"], 1.0)]), 0, 0),
    ]


def _good(i: int) -> tuple[bytes, np.ndarray]:
    """A valid frame (binary or JSON by parity) of 3 events for series i."""
    ev = events(GOOD_KEY + i, 1, 3, float(i))
    if i % 2:
        return binary(ev), ev
    lines = [line(int(e["key"]), int(e["metric"]), float(e["value"]), ts=int(e["ts"]))
             for e in ev]
    return json_frame(lines), ev


@pytest.mark.parametrize("endpoint", ["acked", "ingest"])
def test_every_rejection_is_counted_exactly_and_valid_frames_around_it_are_applied(endpoint):
    cases = _rejection_cases()
    # too_large: a frame over max_message_bytes is dropped by libzmq
    # (ZMQ_MAXMSGSIZE), connection and all, before the gateway sees it.
    not_by_message = {"invalid_record", "backpressure", "unavailable", "ok", "too_large"}
    assert {c[0] for c in cases} >= set(P.REASONS) - not_by_message
    with live(max_message_bytes=MAX_BYTES) as gw:
        sock = gw.sock(zmq.DEALER if endpoint == "acked" else zmq.PUSH, endpoint)
        accepted = invalid = 0
        for i, (reason, data, acc, rej) in enumerate(cases):
            good, _ = _good(i)
            for msg, expect in ((good, ("ok", 3, 0)), (data, (reason, acc, rej))):
                if endpoint == "ingest":
                    sock.send(msg)
                    continue
                r = gw.ask_json(sock, msg)
                if expect[0] == "ok":
                    assert r == {"ok": True, "accepted": expect[1], "rejected": expect[2]}, i
                else:
                    assert r["ok"] is False and r["reason"] == expect[0], (i, r)
                    assert isinstance(r["error"], str) and r["error"]
            accepted += 3 + acc
            invalid += rej
        gw.settle(messages=2 * len(cases), records=accepted + invalid)

        g = gw.gateway_stats()
        expected = Counter(reason for reason, *_ in cases if reason != "ok")
        expected["invalid_record"] = invalid
        assert g["rejected"] == {r: expected.get(r, 0) for r in P.REASONS}
        assert (g["messages"], g["accepted"], g["invalid"]) == (2 * len(cases), accepted,
                                                                invalid)
        s = gw.eng.stats()
        assert s["applied"] == accepted and s["rejected_invalid"] == invalid
        for i in range(len(cases)):
            row = gw.eng.get(GOOD_KEY + i, 1)
            assert row is not None and row["count"] == 3 and row["last"] == float(i), i
        assert gw.eng.get("mixed", "cpu")["count"] == 5
        assert gw.eng.get("mixed-json", "cpu")["count"] == 2
        for name in ("x", "big", "bj", "bf"):
            assert gw.eng.get(name, "cpu") is None, name
        assert int(gw.eng.snapshot()["count"].sum()) == accepted
        assert gw.query({"op": "ping"})["ok"] is True


# --- many clients at once -------------------------------------------------

CLIENTS = 1000
BATCHES = 3
BATCH = 32


def test_a_thousand_concurrent_dealers_ingest_and_query_and_every_event_is_counted():
    """1,000 clients, each with a DEALER on the acked endpoint and one on the
    query endpoint, all in flight at once from four threads: each sends
    BATCHES batches (binary and JSON, one NaN per binary batch) and a query
    per batch, then collects every reply."""
    with fd_limit(16384), live() as gw:
        gw.ctx.set(zmq.MAX_SOCKETS, 2 * CLIENTS + 64)
        results: dict[int, dict] = {}
        errors: list = []

        def client_batch(c: int, b: int) -> bytes:
            ev = events(f"client-{c}", "cpu", BATCH, float(c), ts0=T0 + b * BATCH)
            if b % 2 == 0:
                ev["value"][b] = np.nan
                return binary(ev)
            return json_frame(line(f"client-{c}", "cpu", float(c), ts=int(t)) for t in ev["ts"])

        def run(ids: range) -> None:
            try:
                socks = {}
                poller = zmq.Poller()
                for c in ids:
                    a = gw.sock(zmq.DEALER, "acked")
                    q = gw.sock(zmq.DEALER, "query")
                    socks[a], socks[q] = (c, "ack"), (c, "query")
                    poller.register(a, zmq.POLLIN)
                    poller.register(q, zmq.POLLIN)
                    results[c] = {"acks": [], "queries": []}
                for b in range(BATCHES):
                    for s, (c, role) in socks.items():
                        if role == "ack":
                            s.send(client_batch(c, b))
                        elif b == 1 and c % 100 == 0:
                            s.send(json.dumps({"op": "stats", "id": c}).encode())
                        else:
                            s.send(json.dumps({"op": "get", "entity": f"client-{c}",
                                               "metric": "cpu", "id": c}).encode())
                waiting = 2 * BATCHES * len(ids)
                deadline = time.monotonic() + 40
                while waiting:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{waiting} replies missing")
                    for s, _ in poller.poll(500):
                        while True:
                            try:
                                msg = s.recv(zmq.NOBLOCK)
                            except zmq.Again:
                                break
                            c, role = socks[s]
                            results[c]["acks" if role == "ack" else "queries"].append(
                                strict_json(msg))
                            waiting -= 1
                for s in socks:
                    s.close()
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        started = time.monotonic()
        chunks = [range(i, min(i + CLIENTS // 4, CLIENTS)) for i in range(0, CLIENTS,
                                                                           CLIENTS // 4)]
        threads = [threading.Thread(target=run, args=(ch,)) for ch in chunks]
        for t in threads:
            t.start()
        for t in threads:
            t.join(50)
        elapsed = time.monotonic() - started
        assert not any(t.is_alive() for t in threads)
        assert not errors, f"{errors[0]!r}; {gw.dead_threads()}"

        accepted = rejected = 0
        for c in range(CLIENTS):
            acks, queries = results[c]["acks"], results[c]["queries"]
            assert len(acks) == BATCHES and len(queries) == BATCHES, c
            assert all(a["ok"] for a in acks), (c, acks)
            want = [BATCH - (b % 2 == 0) for b in range(BATCHES)]
            # One connection's acks come back in the order its messages went.
            assert [a["accepted"] for a in acks] == want, (c, acks)
            accepted += sum(a["accepted"] for a in acks)
            rejected += sum(a["rejected"] for a in acks)
            for r in queries:
                assert r["ok"] and r["id"] == c, r
                if r["op"] == "get" and r["series"] is not None:
                    assert r["series"]["entity"] == f"client-{c}"
                    assert 0 < r["series"]["count"] <= sum(want)
        gw.settle(messages=CLIENTS * BATCHES, records=accepted + rejected)
        s = gw.eng.stats()
        snap = gw.eng.snapshot()
        assert accepted == CLIENTS * sum(BATCH - (b % 2 == 0) for b in range(BATCHES))
        assert s["applied"] == accepted == int(snap["count"].sum())
        assert s["rejected_invalid"] == rejected == CLIENTS * ((BATCHES + 1) // 2)
        assert len(snap) == CLIENTS
        counts = gw.eng.get_many([f"client-{c}" for c in range(CLIENTS)], "cpu")["count"]
        assert (counts == accepted // CLIENTS).all()
        g = gw.gateway_stats()
        assert g["accepted"] == accepted and g["rejected"]["invalid_record"] == rejected
        assert g["queries"] >= CLIENTS * BATCHES
        print(f"1000 clients: {elapsed:.2f}s")


# --- fuzz -------------------------------------------------------------------

FUZZ_KEYS = 16     # mutated frames carry keys below this (or short names)
VALID_METRIC = "valid-series-metric-7f3a9c"


def _seed_frames() -> list[bytes]:
    ev = engine.make_events(np.arange(4, dtype=np.uint64) % FUZZ_KEYS, 7,
                            T0 + np.arange(4), [1.0, 2.0, 3.0, 4.0])
    return [
        binary(ev),
        binary(ev[:1]),
        json_frame([line("f0", 3, 1.0, ts=T0), line(2, 5, 2.5), line("f1", "m", 0.5)]),
        json_frame([line(1, 1, 1)]),
        frame(2, 0),
    ]


_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 16)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("magic"), st.binary(min_size=2, max_size=2), st.just(0)),
    st.tuples(st.just("version"), st.integers(0, 255), st.just(0)),
    st.tuples(st.just("type"), st.integers(0, 255), st.just(0)),
    st.tuples(st.just("count"), st.integers(0, 2**32 - 1), st.just(0)),
    st.tuples(st.just("count_delta"), st.integers(-3, 3), st.just(0)),
)


def _mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op, a, c in ops:
        if op == "flip" and b:
            b[a % len(b)] ^= c
        elif op == "insert":
            p = a % (len(b) + 1)
            b[p:p] = c
        elif op == "delete" and b:
            p = a % len(b)
            del b[p:p + c]
        elif op == "truncate":
            del b[a % (len(b) + 1):]
        elif len(b) >= 8:
            magic, version, kind, count = HEADER.unpack_from(b, 0)
            if op == "magic":
                magic = a
            elif op == "version":
                version = a
            elif op == "type":
                kind = a
            elif op == "count":
                count = a
            elif op == "count_delta":
                count = (count + a) % 2**32
            HEADER.pack_into(b, 0, magic, version, kind, count)
    return bytes(b)


_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                         st.text(max_size=6))
_json_value = st.one_of(_json_scalar, st.lists(_json_scalar, max_size=2),
                        st.dictionaries(st.text(max_size=3), _json_scalar, max_size=2))
# JSON lines with the right fields, mostly of the right types, sometimes not.
_json_line = st.fixed_dictionaries(
    {"entity": st.one_of(st.text(min_size=1, max_size=6), st.integers(0, 2**64 - 1),
                         _json_value),
     "metric": st.one_of(st.integers(0, FUZZ_KEYS), st.text(max_size=4), _json_value),
     "value": st.one_of(st.floats(), st.integers(-2**60, 2**60), _json_value)},
    optional={"ts": st.one_of(st.integers(T0 - 10**9, T0 + 10**9), _json_value),
              "extra": _json_value},
)


def _line_bytes(d: dict) -> bytes:
    return json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass")


_good_line = st.fixed_dictionaries(
    {"entity": st.one_of(st.text(min_size=1, max_size=6), st.integers(0, FUZZ_KEYS)),
     "metric": st.one_of(st.integers(0, FUZZ_KEYS), st.text(max_size=4)),
     "value": st.one_of(st.floats(), st.integers())},
    optional={"ts": st.integers(T0 - 10**9, T0 + 10**9)},
)

_fuzz_frame = st.one_of(
    st.lists(_good_line.map(_line_bytes), min_size=1, max_size=4).map(json_frame),
    st.lists(_json_line.map(_line_bytes), min_size=1, max_size=4).map(json_frame),
    st.lists(st.one_of(_json_line.map(_line_bytes), st.binary(max_size=12)), max_size=4)
      .map(json_frame),
    st.tuples(st.sampled_from(_seed_frames()), st.lists(_mutation, min_size=1, max_size=4))
      .map(lambda t: _mutate(*t)),
    st.binary(max_size=64),
    st.tuples(st.sampled_from([1, 2, 3, 4]), st.binary(max_size=80))
      .map(lambda t: frame(t[0], len(t[1]) // (32 if t[0] == 1 else 1), t[1])),
)


@pytest.mark.timeout(120)
def test_fuzzed_frames_never_stop_the_gateway_and_every_valid_event_is_applied():
    """Random and mutated frames on the PULL, acked and query endpoints of
    one live gateway, interleaved with valid frames of series that no
    mutation can reach (a long metric name, hashed keys)."""
    with live() as gw:
        push = gw.sock(zmq.PUSH, "ingest")
        acked = gw.sock(zmq.DEALER, "acked")
        query = gw.sock(zmq.DEALER, "query")
        tally = Counter()
        valid = Counter()   # valid series index -> events sent
        reasons = Counter()

        def send_valid(where: str) -> None:
            i = tally["valid_frames"] % 50
            tally["valid_frames"] += 1
            ev = events(f"valid-{i}", VALID_METRIC, 2, 1.0,
                        ts0=T0 + 10 * tally["valid_frames"])
            data = binary(ev) if i % 2 else json_frame(
                line(f"valid-{i}", VALID_METRIC, 1.0, ts=int(t)) for t in ev["ts"])
            valid[i] += 2
            tally["messages"] += 1
            tally["records"] += 2
            if where == "ingest":
                push.send(data)
            else:
                assert gw.ask_json(acked, data) == {"ok": True, "accepted": 2, "rejected": 0}

        @settings(max_examples=600, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(frames=st.lists(st.tuples(st.sampled_from(["ingest", "acked", "query"]),
                                         _fuzz_frame), min_size=1, max_size=4))
        def fuzz(frames):
            for where, data in frames:
                send_valid("acked" if tally["messages"] % 2 else "ingest")
                if where == "query":
                    reply = gw.ask(query, data)
                    if reply[:2] != P.MAGIC:
                        assert isinstance(strict_json(reply)["ok"], bool)
                    else:
                        P.parse_rows(reply)
                    continue
                tally["messages"] += 1
                if where == "ingest":
                    push.send(data)
                    tally["pull_fuzz"] += 1
                    continue
                r = gw.ask_json(acked, data)
                if r["ok"]:
                    assert r["accepted"] >= 0 and r["rejected"] >= 0
                    tally["acked_accepted"] += r["accepted"]
                    tally["records"] += r["accepted"] + r["rejected"]
                else:
                    assert r["reason"] in P.REASONS
                    assert r["reason"] not in ("backpressure", "unavailable")
                    reasons[r["reason"]] += 1

        fuzz()
        send_valid("ingest")
        assert gw.query({"op": "ping"})["ok"] is True
        # How many records of the fuzzed PULL frames were taken is not known
        # up front: wait until every message was read, then one more acked
        # message, answered only after the PULL frames read before it were
        # submitted (one ingest thread).
        deadline = time.monotonic() + 20
        while gw.eng.gateway.stats()["messages"] < tally["messages"]:
            assert time.monotonic() < deadline, gw.dead_threads()
            time.sleep(0.01)
        send_valid("acked")
        gw.eng.flush(timeout=20)
        g = gw.gateway_stats()
        s = gw.eng.stats()
        assert g["messages"] == tally["messages"]
        assert g["accepted"] == s["applied"] == int(gw.eng.snapshot()["count"].sum())
        assert g["accepted"] + g["invalid"] >= tally["records"]
        whole = sum(v for k, v in g["rejected"].items() if k != "invalid_record")
        assert sum(reasons.values()) <= whole <= sum(reasons.values()) + tally["pull_fuzz"]
        for reason, n in reasons.items():
            assert g["rejected"][reason] >= n
        for i, n in valid.items():
            row = gw.eng.get(f"valid-{i}", VALID_METRIC)
            assert row is not None and row["count"] == n, i
        assert gw.query({"op": "ping"})["ok"] is True
        print(f"fuzz: {dict(tally)}, acked rejections {dict(reasons)}")


# --- backpressure -----------------------------------------------------------


def _spread(n: int, seed: int) -> np.ndarray:
    """n valid events over 64 series of both workers."""
    rng = np.random.default_rng(seed)
    return engine.make_events(rng.integers(0, 64, n, dtype=np.uint64) + 1000, 1,
                              T0 + np.arange(n, dtype=np.int64), rng.random(n))


def test_pull_ingest_pushes_back_through_the_hwms_and_loses_nothing_when_a_worker_stalls():
    batch = _spread(512, seed=1)
    data = binary(batch)
    with live({"ring_capacity": 64}, hwm=8) as gw:
        push = gw.sock(zmq.PUSH, "ingest", sndhwm=8)
        for _ in range(20):   # warm up: connection, buffers, allocator
            push.send(data)
        gw.settle(messages=20, records=20 * len(batch))
        me = psutil.Process()
        base = peak = me.memory_info().rss
        sent = 20
        with stopped(gw.eng.pids[0]):
            deadline = time.monotonic() + 20
            refused = 0
            while refused < 5:
                assert time.monotonic() < deadline, f"never pushed back after {sent} frames"
                try:
                    push.send(data, zmq.NOBLOCK)
                    sent += 1
                    refused = 0
                    if sent % 64 == 0:
                        peak = max(peak, me.memory_info().rss)
                except zmq.Again:
                    refused += 1
                    time.sleep(0.05)
            peak = max(peak, me.memory_info().rss)
            g = gw.gateway_stats()   # queries still answer during the stall
            assert g["messages"] < sent
            assert gw.eng.stats()["workers"][0]["ring_fill"] > 0.5
        assert peak - base < 100 * 2**20, f"RSS grew by {(peak - base) >> 20} MB"
        gw.settle(messages=sent, records=sent * len(batch), timeout=30)
        s = gw.eng.stats()
        assert s["applied"] == sent * len(batch) == int(gw.eng.snapshot()["count"].sum())
        print(f"pushed back after {sent} frames; RSS +{(peak - base) >> 20} MB")


def test_acked_ingest_answers_backpressure_when_the_rings_stay_full():
    ev = _spread(4000, seed=2)
    ev["value"][:10] = np.nan
    with live({"ring_capacity": 64}, ack_timeout=0.3) as gw:
        dealer = gw.sock(zmq.DEALER, "acked")
        with stopped(gw.eng.pids[0]):
            t = time.monotonic()
            r = gw.ask_json(dealer, binary(ev))
            took = time.monotonic() - t
            assert r["ok"] is False and r["reason"] == "backpressure", r
            assert isinstance(r["error"], str)
            assert 0.3 <= took < 3, took
            handled, accepted = r["handled"], r["accepted"]
            assert 10 < handled < len(ev) and accepted == handled - 10
            assert gw.gateway_stats()["rejected"]["backpressure"] == 1
        r = gw.ask_json(dealer, binary(ev[handled:]))
        assert r == {"ok": True, "accepted": len(ev) - handled, "rejected": 0}
        gw.settle(messages=2, records=len(ev))
        s = gw.eng.stats()
        assert s["applied"] == len(ev) - 10 == int(gw.eng.snapshot()["count"].sum())
        assert s["rejected_invalid"] == 10


def _stall_ingest(gw: Live, frames: int = 200) -> int:
    """With worker 0 stopped (by the caller), flood PULL with 256-event
    frames until the gateway's ingest thread is stuck submitting; returns
    the frames sent."""
    push = gw.sock(zmq.PUSH, "ingest", sndhwm=4)
    data = binary(_spread(256, seed=3))
    sent = 0
    for _ in range(frames):
        try:
            push.send(data, zmq.NOBLOCK)
            sent += 1
        except zmq.Again:
            break
    # A frame holds more events for worker 0 (about half of its 256, over
    # 64 series) than worker 0's 64-slot ring: with the ring half full, the
    # thread is inside a submit that cannot finish while worker 0 is
    # stopped.  No need to wait any longer.
    wait_for(lambda: gw.eng.stats()["workers"][0]["ring_fill"] > 0.5, 5,
             "worker 0's ring half full")
    return sent


def test_queries_are_answered_while_ingest_is_stalled():
    with live({"ring_capacity": 64}) as gw:
        acked = gw.sock(zmq.DEALER, "acked")
        assert gw.ask_json(acked, binary(events("web-01", "cpu", 5, 2.5)))["accepted"] == 5
        gw.settle(messages=1, records=5)
        q = gw.sock(zmq.DEALER, "query")
        with stopped(gw.eng.pids[0]):
            _stall_ingest(gw)
            for _ in range(20):
                t = time.monotonic()
                assert gw.ask_json(q, {"op": "ping"}, timeout=1.0)["ok"] is True
                r = gw.ask_json(q, {"op": "get", "entity": "web-01", "metric": "cpu"},
                                timeout=1.0)
                assert r["series"]["count"] == 5 and r["series"]["last"] == 2.5
                rows = P.parse_rows(gw.ask(q, P.pack_lookup([engine.entity_id("web-01")],
                                                            engine.metric_id("cpu")),
                                           timeout=1.0))
                assert rows["count"][0] == 5
                assert gw.ask_json(q, {"op": "stats"}, timeout=1.0)["ok"] is True
                assert time.monotonic() - t < 1.0
        gw.eng.flush(timeout=20)


def test_an_acked_message_is_answered_within_ack_timeout_while_pull_ingest_is_stuck():
    """PULL and acked ingest have a thread and rings each (PROTOCOL.md,
    Backpressure): while a PULL batch waits for room, an acked message is
    still read and answered within ack_timeout (``backpressure`` if its own
    rings fill).  Once the worker moves, nothing is lost or applied twice."""
    ev = _spread(1000, seed=4)
    with live({"ring_capacity": 64}, ack_timeout=0.3) as gw:
        dealer = gw.sock(zmq.DEALER, "acked")
        with stopped(gw.eng.pids[0]):
            pushed = _stall_ingest(gw)
            dealer.send(binary(ev))
            early = dealer.poll(2000)
            assert early, "no acked reply within ack_timeout while PULL ingest was stuck"
        r = strict_json(gw.recv(dealer, timeout=10))
        if r["ok"]:
            taken = r["accepted"]
            assert r == {"ok": True, "accepted": len(ev), "rejected": 0}
        else:
            assert r["reason"] == "backpressure" and r["handled"] == r["accepted"], r
            taken = r["accepted"]
        gw.settle(messages=pushed + 1, records=pushed * 256 + taken, timeout=20)
        assert gw.eng.stats()["applied"] == pushed * 256 + taken


# --- inputs that once stopped a gateway thread ------------------------------


@pytest.mark.parametrize("body, allowed", [
    pytest.param(b'{"entity": "\\ud800", "metric": "cpu", "value": 1}',
                 ("bad_field", "bad_utf8"), id="lone-surrogate-entity"),
    pytest.param(b'{"entity": "web-01", "metric": "\\udfff", "value": 1}',
                 ("bad_field", "bad_utf8"), id="lone-surrogate-metric"),
    pytest.param(b'{"entity": "web-01", "metric": "cpu", "value": 1' + b"0" * 400 + b"}",
                 ("bad_field", "invalid_record"), id="int-value-too-big-for-a-double"),
    pytest.param(b"[" * 5000, ("bad_json",), id="deeply-nested-line"),
    pytest.param(b'{"entity": ' * 2000, ("bad_json",), id="deeply-nested-object"),
])
def test_a_bad_json_line_is_rejected_and_the_ingest_thread_survives(body, allowed):
    """Valid-looking JSON that Python cannot turn into a record must be
    rejected like any bad line (``allowed``: the reasons that would do;
    ``invalid_record`` means an ok reply rejecting the one record)."""
    data = frame(2, len(body) + 1, body + b"\n")
    with live() as gw:
        dealer = gw.sock(zmq.DEALER, "acked")
        push = gw.sock(zmq.PUSH, "ingest")
        push.send(data)
        r = gw.ask_json(dealer, data, timeout=2.0)
        if r["ok"]:
            assert "invalid_record" in allowed, r
            assert r == {"ok": True, "accepted": 0, "rejected": 1}
        else:
            assert r["reason"] in allowed, r
        assert gw.ask_json(dealer, binary(events("after", "cpu", 3)), timeout=2.0) == {
            "ok": True, "accepted": 3, "rejected": 0}
        gw.eng.flush(timeout=5)
        # The PULL frame is counted as a message when C reads it, and as a
        # rejection only once Python decoded it: wait for the latter.
        deadline = time.monotonic() + 5
        while sum(gw.eng.gateway.stats()["rejected"][a] for a in allowed) < 2:
            assert time.monotonic() < deadline, (gw.eng.gateway.stats(), gw.dead_threads())
            time.sleep(0.01)
        rejected = gw.eng.gateway.stats()["rejected"]
        assert sum(rejected[a] for a in allowed) == 2, rejected
        assert gw.eng.get("after", "cpu")["count"] == 3


@pytest.mark.parametrize("request_bytes", [
    pytest.param(b'{"op": "ping", "id": 1e400}', id="id-overflows-to-inf"),
    pytest.param(b'{"op": "ping", "id": NaN}', id="id-NaN"),
    pytest.param(b'{"op": "nope", "id": -Infinity}', id="error-reply-id-inf"),
    pytest.param(b"[" * 5000, id="deeply-nested-query"),
])
def test_a_bad_query_gets_an_error_reply_and_the_query_thread_survives(request_bytes):
    with live() as gw:
        q = gw.sock(zmq.DEALER, "query")
        r = gw.ask_json(q, request_bytes, timeout=2.0)
        assert isinstance(r["ok"], bool), r
        assert gw.ask_json(q, {"op": "ping"}, timeout=2.0)["ok"] is True


def test_line_separators_inside_json_strings_escaped_work_and_raw_too():
    """Escaped U+2028/U+2029/U+0085 in names always work, and raw too: only
    ``\\n`` ends a line (PROTOCOL.md); the message is accepted whole."""
    names = ["a\u2028b", "c\u2029d", "e\u0085f"]
    escaped = json_frame(line(n, "cpu", 1.0) for n in names)
    raw_body = "".join(json.dumps(line(n, "mem", 1.0), ensure_ascii=False) + "\n"
                       for n in names).encode()
    with live() as gw:
        dealer = gw.sock(zmq.DEALER, "acked")
        assert gw.ask_json(dealer, escaped) == {"ok": True, "accepted": 3, "rejected": 0}
        r = gw.ask_json(dealer, frame(2, len(raw_body), raw_body))
        raw_ok = r["ok"]
        assert r == {"ok": True, "accepted": 3, "rejected": 0}, r
        gw.settle(messages=2, records=6 if raw_ok else 3)
        for n in names:
            assert gw.eng.get(n, "cpu")["count"] == 1
            row = gw.eng.get(n, "mem")
            assert (row is not None and row["count"] == 1) if raw_ok else row is None
        r = gw.ask_json(dealer, binary(events("after", "cpu", 2)))
        assert r == {"ok": True, "accepted": 2, "rejected": 0}


def test_a_frame_over_the_limit_drops_that_connection_only():
    """libzmq's MAXMSGSIZE (= max_message_bytes) disconnects the sender of
    a larger frame before allocating it: no reply, nothing counted, and
    every other client carries on."""
    with live(max_message_bytes=1024) as gw:
        huge = gw.sock(zmq.DEALER, "acked")
        other = gw.sock(zmq.DEALER, "acked")
        assert gw.ask_json(other, binary(events("a", "cpu", 2)))["accepted"] == 2
        huge.send(binary(events("huge", "cpu", 32)))       # 1032 bytes > 1024
        assert not huge.poll(500)
        assert gw.ask_json(other, binary(events("b", "cpu", 31)))["accepted"] == 31
        gw.settle(messages=2, records=33)
        assert gw.eng.get("huge", "cpu") is None
        assert gw.gateway_stats()["rejected"]["too_large"] == 0


@pytest.mark.timeout(60)
def test_a_failed_serve_gives_its_producer_slot_back():
    """A bind failure must not leak the producer slot the gateway took."""
    ctx = zmq.Context()
    blocker = ctx.socket(zmq.PULL)
    port = blocker.bind_to_random_port("tcp://127.0.0.1")
    try:
        with engine.Engine(workers=1, producers=3) as eng:
            busy = {"ingest": f"tcp://127.0.0.1:{port}"}
            for _ in range(3):
                with pytest.raises(engine.errors.EngineError, match="cannot bind"):
                    eng.serve(endpoints=busy)
            gw = eng.serve(endpoints={name: f"tcp://127.0.0.1:{p}"
                                      for name, p in zip(("ingest", "acked", "query", "alerts"),
                                                         free_ports(4))})
            assert gw.healthy
    finally:
        blocker.close(linger=0)
        ctx.term()
