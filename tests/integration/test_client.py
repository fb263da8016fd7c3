"""engine.net.client.Client and AsyncClient: round trips through a live gateway."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time

import numpy as np
import pytest
import zmq

import engine
from engine.errors import (
    ConfigError,
    EngineError,
    GatewayTimeout,
    InvalidEvents,
    QueryError,
    Rejected,
)
from engine.net import protocol
from engine.net.aio import AsyncClient
from engine.net.client import Client
from tests.helpers import free_ports as free_ports_list
from tests.helpers import wait_for

TS = 1_732_300_000_000_000_000
NAMES = ("ingest", "acked", "query", "alerts")


def free_ports() -> dict:
    """Four free TCP ports on 127.0.0.1, by endpoint name."""
    return dict(zip(NAMES, free_ports_list(len(NAMES))))


def urls(ports: dict) -> dict:
    return {name: f"tcp://127.0.0.1:{port}" for name, port in ports.items()}


@contextlib.contextmanager
def live(workers: int = 2, engine_settings: dict | None = None, **settings):
    """A running engine with its gateway on free ports: (engine, ports)."""
    ports = free_ports()
    with engine.Engine(workers=workers, **(engine_settings or {})) as eng:
        eng.serve(endpoints=urls(ports), **settings)
        yield eng, ports


def events(n: int, entities: int = 10, metric="cpu") -> np.ndarray:
    keys = np.arange(n) % entities + 1
    return engine.make_events(keys, metric, TS + np.arange(n), np.arange(n, dtype=np.float64))


@pytest.mark.timeout(30)
def test_send_fire_and_forget_splits_frames():
    with live() as (eng, ports), Client(ports=ports, max_frame_records=128) as c:
        assert c.send(events(1000)) is None
        wait_for(lambda: c.stats()["applied"] == 1000)
        stats = eng.gateway.stats()
        assert stats["messages"] == 8 and stats["accepted"] == 1000
        row = c.get(3, "cpu")
        assert row["count"] == 100 and row["entity_id"] == 3 and row["metric"] == "cpu"
        assert c.send(events(0)) is None


@pytest.mark.timeout(30)
def test_send_acked_counts_accepted_and_invalid():
    ev = events(500)
    ev["value"][[3, 7]] = np.nan
    ev["ts"][11] = 0  # 1970: outside the sane range
    with live() as (eng, ports), Client(ports=ports, max_frame_records=100) as c:
        assert c.send(ev, ack=True) == 497
        stats = eng.gateway.stats()
        assert stats["messages"] == 5 and stats["invalid"] == 3
        assert stats["rejected"]["invalid_record"] == 3
        assert c.send(events(0), ack=True) == 0
        # Non-contiguous views are copied, other dtypes refused before any I/O.
        assert c.send(events(20)[::2], ack=True) == 10
        with pytest.raises(InvalidEvents):
            c.send(np.zeros(4), ack=True)


@pytest.mark.timeout(30)
def test_rejected_carries_reason_accepted_and_handled():
    with live(max_message_bytes=1024) as (eng, ports):
        with Client(ports=ports, timeout=0.3) as c:
            # 100 events = 3208 bytes: over the limit, dropped by libzmq
            # (MAXMSGSIZE) before it is read: no reply, and the error says why.
            with pytest.raises(GatewayTimeout, match="max_message_bytes"):
                c.send(events(100), ack=True)
        with Client(ports=ports, max_frame_records=2) as c:
            good = {"entity": "web-01", "metric": "cpu", "value": 1.0}
            records = [good, good, good, {"entity": "web-01", "metric": "cpu", "value": "x"}]
            with pytest.raises(Rejected) as info:
                c.send_json(records, ack=True)
            assert info.value.reason == "bad_field"
            assert info.value.accepted == 2 and info.value.handled == 2
            with pytest.raises(Rejected) as info:
                c.send_json([{**good, "colour": "red"}], ack=True)
            assert info.value.reason == "bad_field" and "colour" in str(info.value)
            assert isinstance(info.value, EngineError)
        assert eng.gateway.stats()["rejected"]["bad_field"] == 2
        assert eng.gateway.stats()["rejected"]["too_large"] == 0


@pytest.mark.timeout(30)
def test_send_json_teaches_names():
    records = [{"entity": "web-01", "metric": "cpu", "value": v, "ts": TS + i}
               for i, v in enumerate((0.5, 0.7, 0.9))]
    records.append({"entity": "web-01", "metric": "mem", "value": 0.25, "ts": TS})
    with live() as (eng, ports), Client(ports=ports) as c:
        assert c.send_json(records, ack=True) == 4
        assert c.send_json([{"entity": "db-01", "metric": "cpu", "value": 1.0}]) is None
        key, metric = engine.entity_id("web-01"), engine.metric_id("cpu")
        row = wait_for(lambda: (c.get(key, metric) or {}).get("count") == 3 and c.get(key, metric))
        assert (row["entity"], row["metric"]) == ("web-01", "cpu")
        assert (row["last"], row["min"], row["max"]) == (0.9, 0.5, 0.9)
        wait_for(lambda: c.get(engine.entity_id("db-01"), metric))
        assert c.get(engine.entity_id("db-01"), metric)["entity"] == "db-01"
        series = wait_for(lambda: len(c.entity(key)) == 2 and c.entity(key))
        assert sorted(s["metric"] for s in series) == ["cpu", "mem"]


@pytest.mark.timeout(30)
def test_queries():
    with live() as (eng, ports), Client(ports=ports) as c:
        c.send(events(100, entities=4), ack=True)
        eng.flush()
        assert c.get("nobody", "cpu") is None
        assert c.entity("nobody") == []
        # No rules: nothing at WARN or worse; every entity is OK.
        # The answer names how many series it covers, and that no journal
        # recovered them.
        # Every series counted by status, whatever the limit.
        assert c.status() == {"total": 0, "entities": [], "series": 4, "recovered": None,
                              "counts": {"OK": 4, "WARN": 0, "STALE": 0, "CRIT": 0}}
        status = c.status("OK", limit=2)
        assert status["total"] == 4 and len(status["entities"]) == 2
        assert set(status) == {"total", "entities", "series", "recovered", "counts"}
        assert all(e["status"] == "OK" and len(e["series"]) == 1 for e in status["entities"])
        top = c.top("last", k=2)
        assert [s["last"] for s in top] == [99.0, 98.0]
        bottom = c.top(field="count", k=1, order="asc")
        assert bottom[0]["count"] == 25
        stats = c.stats()
        assert stats["applied"] == 100 and stats["gateway"]["accepted"] == 100
        assert 0 < c.ping() < 5
        assert c.register_names(entities=["web-07", "web-08"], metrics="disk") == 3
        row = c.get(engine.entity_id("web-07"), "cpu")
        assert row is None
        c.send(engine.make_events(["web-07"], "disk", [TS], [1.0]), ack=True)
        eng.flush()
        row = c.get(engine.entity_id("web-07"), engine.metric_id("disk"))
        assert (row["entity"], row["metric"]) == ("web-07", "disk")
        # NumPy scalars (ids read from rows) work as arguments.
        rows = c.lookup([engine.entity_id("web-07")], "disk")
        assert c.get(rows["key"][0], rows["metric"][0])["entity"] == "web-07"
        assert c.send_json([{"entity": rows["key"][0], "metric": "disk",
                             "value": np.float32(2.0), "ts": np.int64(TS + 1)}], ack=True) == 1
        reply = c.query({"op": "ping", "id": "mine"})
        assert reply["ok"] and reply["op"] == "ping" and "time_ns" in reply and "id" not in reply
        with pytest.raises(QueryError, match="unknown op") as info:
            c.query({"op": "frob"})
        assert info.value.reply["ok"] is False
        with pytest.raises(QueryError, match="order"):
            c.top(order="sideways")
        with pytest.raises(QueryError, match="limit"):
            c.status(limit=-1)
        # limit 0: the total and the counts alone.
        assert c.status("OK", limit=0)["entities"] == []
        with pytest.raises(QueryError, match="min_status"):
            c.status("BAD")
        assert c.ping() > 0  # the socket still works after errors


@pytest.mark.timeout(30)
def test_lookup():
    with live() as (eng, ports), Client(ports=ports, max_frame_records=3) as c:
        c.send(events(100, entities=10), ack=True)
        c.send_json([{"entity": "web-01", "metric": "cpu", "value": 2.5, "ts": TS}], ack=True)
        eng.flush()
        rows = c.lookup([1, 2, "web-01", 99, 5, 6, 7], "cpu")  # 3 frames of at most 3
        assert rows.dtype == engine.STATE_DTYPE and len(rows) == 7
        assert rows["key"].tolist() == [1, 2, engine.entity_id("web-01"), 99, 5, 6, 7]
        assert rows["count"].tolist() == [10, 10, 1, 0, 10, 10, 10]
        assert rows["last"][2] == 2.5
        assert (rows["version"] % 2 == 0).all()
        np.testing.assert_array_equal(rows, eng.get_many(rows["key"], rows["metric"]))
        pairs = c.lookup(np.array([1, 1], np.uint64), [engine.metric_id("cpu"), 12345])
        assert pairs["count"].tolist() == [10, 0]
        assert len(c.lookup([], "cpu")) == 0
        with pytest.raises(ValueError):
            c.lookup([1, 2, 3], ["cpu", "mem"])


RULES = """
[defaults]
ttl = "0"

[[rule]]
metric = "disk"
warn = 0.8
crit = 0.9

[[rule]]
metric = "cpu"
stat = "ewma"
warn = 0.7
"""


def fleet(now: int) -> list[dict]:
    """web-17 disk CRIT, web-09 cpu WARN, web-01 all OK."""
    values = {("web-17", "disk"): 0.97, ("web-17", "cpu"): 0.2, ("web-09", "cpu"): 0.75,
              ("web-09", "disk"): 0.5, ("web-01", "disk"): 0.1}
    return [{"entity": e, "metric": m, "value": v, "ts": now} for (e, m), v in values.items()]


@pytest.mark.timeout(30)
def test_status_entity_rules_and_reload(tmp_path):
    with live(engine_settings={"rules": RULES}) as (eng, ports), Client(ports=ports) as c:
        assert c.send_json(fleet(TS), ack=True) == 5
        eng.flush()
        status = c.status()
        assert status["total"] == 2
        assert [(e["entity"], e["status"], e["since"]) for e in status["entities"]] == [
            ("web-17", "CRIT", TS), ("web-09", "WARN", TS)]
        # Only the series at min_status or worse.
        assert [s["metric"] for s in status["entities"][0]["series"]] == ["disk"]
        assert c.status(limit=1)["entities"][0]["entity"] == "web-17"
        assert c.status("CRIT")["total"] == 1
        every = c.status("OK")
        assert every["total"] == 3 and every["entities"][-1]["entity"] == "web-01"

        summary = c.entity("web-17", summary=True)
        assert set(summary) == {"entity", "entity_id", "status", "since", "series"}
        assert (summary["status"], summary["since"]) == ("CRIT", TS)
        assert [(s["metric"], s["status"]) for s in summary["series"]] == [
            ("disk", "CRIT"), ("cpu", "OK")]
        assert c.entity("web-17") == summary["series"]
        disk = summary["series"][0]
        assert disk["quantiles"]["p50"] == pytest.approx(0.97, rel=1 / 9)
        assert disk["window"]["count"] == 1 and set(disk["views"]) == {
            "view1", "view5", "view15"}

        rules = c.rules()
        assert [r["metric"] for r in rules["rules"]["rule"]] == ["disk", "cpu"]
        assert rules["describe"].splitlines()[1].startswith("rule 1: disk last")

        # No rules file behind this gateway.
        with pytest.raises(QueryError, match="no rules file; send rules inline"):
            c.reload()
        # Raise disk's crit: web-17 drops to WARN at once, state kept.
        reply = c.reload(RULES.replace("crit = 0.9", "crit = 0.99"))
        assert reply["count"] == 2 and "CRIT >= 0.99" in reply["rules"]
        assert c.entity("web-17", summary=True)["status"] == "WARN"
        assert c.get("web-17", "disk")["count"] == 1
        # A dict, and a local file read by the client.
        reply = c.reload({"rule": [{"metric": "disk", "crit": 0.6}]})
        assert reply["count"] == 1
        assert [e["entity"] for e in c.status("CRIT")["entities"]] == ["web-17"]
        path = tmp_path / "rules.toml"
        path.write_text(RULES)
        assert c.reload(path)["count"] == 2
        assert c.entity("web-17", summary=True)["status"] == "CRIT"

        before = c.rules()
        for bad, message in [
            ('[[rule]]\nmetric = "disk"\nwarn = "high"\n', "warn must be a number"),
            ("[[rule]\n", "not valid TOML"),
            # A path is never opened by the gateway: it is (bad) TOML text.
            (str(path), "not valid TOML"),
            ({"rule": [{"metric": "disk"}]}, "needs warn or crit"),
        ]:
            with pytest.raises(QueryError, match=message):
                c.reload(bad)
        with pytest.raises(QueryError, match="rules must be TOML text or an object"):
            c.query({"op": "reload", "rules": [1, 2]})
        with pytest.raises(TypeError):
            c.reload(42)
        assert c.rules() == before
        assert c.ping() > 0

        # The hook `ringflow serve` sets: {"op": "reload"} re-reads a file.
        calls = []

        def hook(rules=None):
            calls.append(rules)
            return eng.reload_rules(path if rules is None else rules)

        eng.gateway.reload_hook = hook
        path.write_text('[[rule]]\nmetric = "cpu"\nwarn = 0.1\n')
        assert c.reload()["count"] == 1
        assert c.reload({"rule": []})["count"] == 0
        assert calls == [None, {"rule": []}]
        eng.gateway.reload_hook = None
        assert eng.gateway.stats()["healthy"]


@pytest.mark.timeout(30)
def test_alerts_follow_filter_and_close():
    """No wait for the subscription to be live: an alert that goes out
    before it is comes from the alert log, in order, once."""
    settings = {"rules": RULES}
    with live(engine_settings=settings) as (eng, ports), Client(ports=ports) as c:
        with pytest.raises(ValueError, match="unknown status"):
            c.alerts(["CRIT", "PANIC"])
        everything = c.alerts(timeout=5)
        crit = c.alerts(["crit"], timeout=0.5)
        assert crit.topics == [b"CRIT", b"MISSED", b"ENGINE"] and everything.topics == [b""]
        assert c.send_json(fleet(TS), ack=True) == 5
        got = [next(everything), next(everything)]
        by_entity = {a["entity"]: a for a in got}
        web17 = by_entity["web-17"]
        assert len(web17["log"]) == 16 and by_entity["web-09"]["log"] == web17["log"]
        assert {k: v for k, v in web17.items() if k not in ("seq", "topic_seq", "log")} == {
            "topic": "CRIT", "entity": "web-17", "metric": "disk",
            "entity_id": engine.entity_id("web-17"), "metric_id": engine.metric_id("disk"),
            "old": "OK", "new": "CRIT", "stat": "last", "value": 0.97, "ts": TS,
            "worker": web17["worker"]}
        assert sorted(a["seq"] for a in got) == [1, 2] and web17["topic_seq"] == 1
        assert by_entity["web-09"]["topic"] == "WARN" and by_entity["web-09"]["stat"] == "ewma"
        assert [a["entity"] for a in crit] == ["web-17"]   # ends after 0.5 s of silence
        assert crit.received + crit.filled == 1 and crit.missed == 0 and not crit.closed
        crit.close()
        crit.close()
        assert crit.closed and list(crit) == []
        # A subscription left open does not keep the client from closing.
    assert everything.closed


@pytest.mark.timeout(60)
def test_a_burst_through_a_tiny_alert_ring_reaches_every_filter():
    """2000 series go CRIT in one batch through a 16-alert ring: the worker
    waits for room instead of dropping, and a CRIT subscriber and an
    everything subscriber each get all 2000, numbered without a gap."""
    settings = {"rules": RULES, "alert_capacity": 16}
    with live(workers=1, engine_settings=settings) as (eng, ports), Client(ports=ports) as c:
        with c.alerts(["CRIT"], timeout=5) as crit, c.alerts(timeout=5) as everything:
            c.send(engine.make_events(np.arange(2000) + 1, "disk", np.full(2000, TS),
                                      np.full(2000, 0.95)), ack=True)
            got = [next(crit) for _ in range(2000)]
            seen = [next(everything) for _ in range(2000)]
        assert [a["topic_seq"] for a in got] == list(range(1, 2001))
        assert [a["seq"] for a in seen] == list(range(1, 2001))
        assert sorted(a["entity_id"] for a in got) == list(range(1, 2001))
        assert crit.missed == everything.missed == 0
        s = eng.stats()
        assert s["alerts_dropped"] == 0 and s["alert_waits"] > 0
        assert c.status("CRIT", limit=1)["total"] == 2000


@pytest.mark.timeout(60)
def test_a_subscriber_that_comes_back_gets_what_it_missed():
    """A subscriber closes, alerts go on, it comes back with ``since`` set
    to the last number it had: it gets exactly the alerts in between, then
    the live ones; with a log too short to hold them it is told how many
    it missed."""
    settings = {"rules": RULES, "alert_log": 64}
    with live(workers=2, engine_settings=settings) as (eng, ports), Client(ports=ports) as c:
        def crit_then_ok(first: int, n: int, ts: int) -> None:
            keys = np.arange(first, first + n) + 1
            c.send(engine.make_events(keys, "disk", np.full(n, ts), np.full(n, 0.95)), ack=True)
            c.send(engine.make_events(keys, "disk", np.full(n, ts + 1), np.full(n, 0.1)),
                   ack=True)

        with c.alerts(timeout=5) as feed:
            crit_then_ok(0, 10, TS)
            had = [next(feed) for _ in range(20)]
        last = had[-1]["seq"]
        assert [a["seq"] for a in had] == list(range(1, 21))
        crit_then_ok(10, 10, TS + 10)            # 20 alerts while away
        with c.alerts(timeout=5, since=last) as back:
            crit_then_ok(20, 5, TS + 20)         # and 10 live ones
            got = [next(back) for _ in range(30)]
        assert [a["seq"] for a in got] == list(range(21, 51))
        assert back.missed == 0
        crit_then_ok(30, 50, TS + 30)            # 100 more: the log keeps 64
        # An ack says the events are applied; their alerts reach the log
        # right after.
        wait_for(lambda: eng.stats()["alert_log"]["head"] == 150, 10, "150 alerts logged")
        with c.alerts(timeout=2, since=50) as late:
            first = next(late)
            rest = list(late)
        assert first["topic"] == "MISSED" and first["missed"] == 36
        assert (first["from"], first["to"]) == (51, 86)
        assert [a["seq"] for a in rest] == list(range(87, 151))
        assert late.missed == 36


@pytest.mark.timeout(30)
def test_async_alerts():
    async def main(eng, ports):
        async with AsyncClient(ports=ports) as c:
            # From the log's start: alerts that go out before the SUB
            # socket is live are filled from the alert log, no sleep needed.
            feed = c.alerts("CRIT,WARN", timeout=5, since=0)
            await c.send_json(fleet(TS), ack=True)
            got = sorted([await feed.__anext__(), await feed.__anext__()],
                         key=lambda a: a["entity"])
            assert [(a["topic"], a["entity"]) for a in got] == [
                ("WARN", "web-09"), ("CRIT", "web-17")]
            # The feed had them from the log, maybe before the gateway
            # published them: a subscription made before that would get them.
            wait_for(lambda: eng.gateway.stats()["alerts_published"] >= 2)
            async with c.alerts(timeout=0.3) as quiet:
                assert [a async for a in quiet] == []
            assert quiet.closed
        assert feed.closed

    with live(engine_settings={"rules": RULES}) as (eng, ports):
        asyncio.run(main(eng, ports))


def _fake_query_server(url: str, delay_first: float, stop: threading.Event,
                       late_sent: threading.Event | None = None) -> None:
    """A ROUTER that answers like the gateway but holds its first reply back
    (``late_sent`` is set once it went out)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(url)
    held, n = None, 0
    try:
        while not stop.is_set():
            if held is not None and time.monotonic() >= held[0]:
                sock.send_multipart(held[1])
                held = None
                if late_sent is not None:
                    late_sent.set()
            if not sock.poll(10):
                continue
            identity, frame = sock.recv_multipart()
            n += 1
            if frame[:2] == protocol.MAGIC:
                kind, count = protocol.parse_header(frame)
                rows = np.zeros(count, engine.STATE_DTYPE)
                rows["count"] = n
                reply = protocol.pack_rows(rows)
            else:
                request = json.loads(frame)
                reply = json.dumps({"ok": True, "op": request["op"], "time_ns": n,
                                    "id": request["id"]}).encode()
            if n == 1:
                held = (time.monotonic() + delay_first, [identity, reply])
            else:
                sock.send_multipart([identity, reply])
    finally:
        sock.close()
        ctx.term()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_late_reply_is_never_taken_for_the_next(kind):
    url = f"tcp://127.0.0.1:{free_ports()['query']}"
    stop, late_sent = threading.Event(), threading.Event()
    server = threading.Thread(target=_fake_query_server, args=(url, 0.4, stop, late_sent),
                              daemon=True)
    server.start()
    try:
        if kind == "sync":
            with Client(endpoints={"query": url}, timeout=0.2) as c:
                with pytest.raises(GatewayTimeout):
                    c.query({"op": "ping"})
                # The late reply goes out before the server reads the next
                # request (one connection, in order).
                assert late_sent.wait(10), "the held reply never went out"
                # A binary lookup has no id to check: only the new socket saves it.
                assert c.lookup([1], [2])["count"].tolist() == [2]
                assert c.query({"op": "ping"})["time_ns"] == 3
        else:
            async def main():
                async with AsyncClient(endpoints={"query": url}, timeout=0.2) as c:
                    with pytest.raises(GatewayTimeout):
                        await c.query({"op": "ping"})
                    assert await asyncio.to_thread(late_sent.wait, 10)
                    assert (await c.lookup([1], [2]))["count"].tolist() == [2]
                    assert (await c.query({"op": "ping"}))["time_ns"] == 3

            asyncio.run(main())
    finally:
        stop.set()
        server.join(5)


@pytest.mark.timeout(30)
def test_timeouts_against_an_endpoint_nobody_serves():
    ports = free_ports()
    with Client(ports=ports, timeout=0.2, hwm=2, linger=0.2) as c:
        for call in (c.ping, lambda: c.get("a", "b"), lambda: c.lookup([1], [1]),
                     lambda: c.send(events(3), ack=True),
                     lambda: c.send_json([{"entity": "a", "metric": "b", "value": 1}], ack=True)):
            start = time.monotonic()
            with pytest.raises(GatewayTimeout) as info:
                call()
            assert isinstance(info.value, TimeoutError)
            assert 0.15 < time.monotonic() - start < 2
        # Fire-and-forget queues up to the high-water mark, then times out.
        with pytest.raises(GatewayTimeout, match="high-water mark"):
            for _ in range(100):
                c.send(events(1))
    # close() gave the queued messages `linger` and returned (checked by the timeout).


@pytest.mark.timeout(30)
def test_async_client_round_trips():
    async def main(eng, ports):
        async with AsyncClient(ports=ports, max_frame_records=64) as c:
            assert await c.send(events(200, entities=4)) is None
            assert await c.send(events(200, entities=4), ack=True) == 200
            records = [{"entity": "web-01", "metric": "cpu", "value": 0.5, "ts": TS},
                       {"entity": "web-01", "metric": "mem", "value": 0.7, "ts": TS}]
            assert await c.send_json(records, ack=True) == 2
            await c.send_json(records)
            with pytest.raises(Rejected) as info:
                await c.send_json([{"entity": "web-01", "metric": "cpu"}], ack=True)
            assert info.value.reason == "bad_field"
            await asyncio.to_thread(eng.flush)
            await asyncio.to_thread(
                wait_for, lambda: eng.stats()["applied"] == 404)
            key = engine.entity_id("web-01")
            row = await c.get(key, engine.metric_id("cpu"))
            assert (row["entity"], row["metric"], row["count"]) == ("web-01", "cpu", 2)
            assert len(await c.entity("web-01")) == 2
            summary = await c.entity("web-01", summary=True)
            assert (summary["entity"], summary["status"], len(summary["series"])) == (
                "web-01", "OK", 2)
            status = await c.status("OK", limit=3)
            assert status["total"] == 5 and len(status["entities"]) == 3
            assert (await c.status())["total"] == 0
            rules = await c.rules()
            assert rules["rules"] == {"defaults": {"ttl": "0s"}, "rule": []}
            reply = await c.reload('[[rule]]\nmetric = "cpu"\ncrit = 50\n')
            assert reply["count"] == 1 and "cpu last" in reply["rules"]
            # Entities 1..4 have cpu values up to 99: CRIT at once, on reload.
            status = await c.status("CRIT")
            assert status["total"] == 4 and {e["entity_id"] for e in status["entities"]} == {
                1, 2, 3, 4}
            assert (await c.top("count", k=1))[0]["count"] == 100
            assert (await c.stats())["gateway"]["accepted"] == 404
            assert await c.ping() > 0
            assert await c.register_names(["x"], ["y"]) == 2
            assert (await c.query({"op": "get", "entity": 1, "metric": "cpu"}))["ok"]
            with pytest.raises(QueryError):
                await c.query({"op": "get", "entity": -1, "metric": "cpu"})
            rows = await c.lookup([1, 2, "web-01"], "cpu")
            assert rows["count"].tolist() == [100, 100, 2]
            # Concurrent requests share one DEALER, one in flight at a time.
            got = await asyncio.gather(*[c.get(i % 4 + 1, "cpu") for i in range(20)],
                                       *[c.lookup([i % 4 + 1], "cpu") for i in range(20)])
            assert [g["entity_id"] for g in got[:20]] == [i % 4 + 1 for i in range(20)]
            assert [int(g["key"][0]) for g in got[20:]] == [i % 4 + 1 for i in range(20)]
            # A cancelled request does not disturb the next one.
            task = asyncio.ensure_future(c.ping())
            await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert (await c.get(1, "cpu"))["entity_id"] == 1
        assert c.closed
        with pytest.raises(EngineError, match="closed"):
            await c.ping()

    with live() as (eng, ports):
        asyncio.run(main(eng, ports))


@pytest.mark.timeout(30)
def test_async_timeouts():
    async def main(ports):
        async with AsyncClient(ports=ports, timeout=0.2, hwm=2, linger=0.2) as c:
            for coro in (c.ping(), c.lookup([1], [1]), c.send(events(2), ack=True)):
                with pytest.raises(GatewayTimeout):
                    await coro
            with pytest.raises(GatewayTimeout, match="high-water mark"):
                for _ in range(100):
                    await c.send(events(1))

    asyncio.run(main(free_ports()))


@pytest.mark.timeout(30)
def test_use_after_fork_raises():
    with live() as (eng, ports):
        c = Client(ports=ports)
        a = AsyncClient(ports=ports)
        assert c.ping() > 0  # sockets exist when the fork happens
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: report, never return into pytest
            code = 1
            try:
                errors = []
                for call in (c.ping, lambda: c.send(events(1)),
                             lambda: asyncio.run(a.ping())):
                    try:
                        call()
                        errors.append("no error")
                    except EngineError as exc:
                        errors.append("fork" if "forked" in str(exc) else repr(exc))
                c.close()  # must not touch the parent's sockets
                asyncio.run(a.close())
                os.write(write, json.dumps(errors).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        with os.fdopen(read) as f:
            report = f.read()
        assert os.waitstatus_to_exitcode(status) == 0, report
        assert json.loads(report) == ["fork", "fork", "fork"]
        # The parent's clients are untouched.
        assert c.ping() > 0
        assert asyncio.run(a.ping()) > 0
        c.close()
        asyncio.run(a.close())


@pytest.mark.timeout(30)
def test_configuration_and_life_cycle():
    ports = free_ports()
    c = Client("127.0.0.1", ports={"query": ports["query"]},
               endpoints={"acked": "ipc:///tmp/nowhere"})
    assert c.endpoints["query"] == f"tcp://127.0.0.1:{ports['query']}"
    assert c.endpoints["acked"] == "ipc:///tmp/nowhere"
    assert c.endpoints["ingest"] == f"tcp://127.0.0.1:{protocol.DEFAULT_PORTS['ingest']}"
    assert c._sockets == {}  # nothing opened until used
    c.close()
    c.close()
    assert c.closed
    with pytest.raises(EngineError, match="closed"):
        c.get("a", "b")
    with pytest.raises(ConfigError):
        Client(ports={"bogus": 1})
    with pytest.raises(ConfigError):
        Client(endpoints={"bogus": "tcp://127.0.0.1:1"})
    with pytest.raises(ConfigError):
        Client(timeout=0)
