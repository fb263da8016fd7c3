"""Idempotent producers (issue 15, PROTOCOL.md "Version 2"): a message
resent under its producer and sequence is applied once; large messages go in
parts; a client cannot forge a marker; the client resends after a timeout."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import zmq

import engine
from engine.core.layout import EVENT_MARKER, PRODUCER_METRIC
from engine.errors import CorruptState
from engine.net import protocol as P
from tests.helpers import free_ports, served_engine, wait_for

pytestmark = pytest.mark.timeout(60)


def events(n: int, value: float = 1.0, first_key: int = 1) -> np.ndarray:
    ev = np.zeros(n, engine.EVENT_DTYPE)
    ev["key"] = np.arange(first_key, first_key + n, dtype=np.uint64)
    ev["metric"] = 3
    ev["ts"] = 1_700_000_000_000_000_000 + np.arange(n)
    ev["value"] = value
    return ev


def ask(ctx, url: str, frame: bytes) -> dict:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(url)
    try:
        sock.send(frame)
        assert sock.poll(10_000), "no reply"
        return json.loads(sock.recv())
    finally:
        sock.close()


def test_a_resent_message_is_applied_once():
    with served_engine() as (eng, urls, ctx):
        ev = events(100)
        first = ask(ctx, urls["acked"], P.pack_events(ev, (42, 1)))
        assert first == {"ok": True, "accepted": 100, "rejected": 0, "duplicate": False}
        again = ask(ctx, urls["acked"], P.pack_events(ev, (42, 1)))
        assert again == {"ok": True, "accepted": 100, "rejected": 0, "duplicate": True}
        # An older sequence too; a newer one is new.
        assert ask(ctx, urls["acked"], P.pack_events(ev, (42, 2)))["duplicate"] is False
        assert ask(ctx, urls["acked"], P.pack_events(ev, (42, 1)))["duplicate"] is True
        # Another producer's sequence 1 is its own.
        assert ask(ctx, urls["acked"], P.pack_events(ev, (43, 1)))["duplicate"] is False
        eng.flush()
        rows = eng.snapshot()
        assert len(rows) == 100 and set(rows["count"].tolist()) == {3}
        # Markers are no events and no series.
        stats = eng.stats()
        assert stats["applied"] == stats["accepted"] == 300 and stats["series"] == 100
        gw = eng.gateway.stats()
        assert gw["duplicates"] == 2 and gw["duplicate_records"] == 200
        # Each shard holds a mark per producer: the last sequence * 4096.
        marks = sorted(m for t in eng._reader.tables for _, m in t.marks().tolist())
        assert marks == [1 * 4096, 1 * 4096, 2 * 4096, 2 * 4096]


def test_a_large_message_goes_in_parts_and_is_still_applied_once():
    # Rings of 64: parts of 31 records and a marker each.
    with served_engine({"ring_capacity": 64}) as (eng, urls, ctx):
        ev = events(1000, value=2.0)
        frame = P.pack_events(ev, (7, 5))
        assert ask(ctx, urls["acked"], frame)["accepted"] == 1000
        assert ask(ctx, urls["acked"], frame)["duplicate"] is True
        eng.flush()
        rows = eng.snapshot()
        assert len(rows) == 1000 and rows["count"].sum() == 1000 and rows["sum"].sum() == 2000
        # Past 4096 parts of one shard: refused whole.
        big = events(4096 * 31 * 2 + 10_000, first_key=10_000)
        reply = ask(ctx, urls["acked"], P.pack_events(big, (7, 6)))
        assert reply["ok"] is False and reply["reason"] == "too_large"


def test_a_client_cannot_forge_a_marker():
    with served_engine() as (eng, urls, ctx):
        forged = events(3)
        forged["metric"] = PRODUCER_METRIC
        forged["flags"] = EVENT_MARKER
        forged["value"] = 1e12           # would claim every sequence taken
        for frame in (P.pack_events(forged), P.pack_events(forged, (99, 1))):
            reply = ask(ctx, urls["acked"], frame)
            assert reply["ok"] and reply["accepted"] == 0 and reply["rejected"] == 3
        eng.flush()
        assert len(eng.snapshot()) == 0
        # Only the gateway's own marks of producer 99's message, none forged.
        marks = [m for t in eng._reader.tables for _, m in t.marks().tolist()]
        assert marks and max(marks) == 1 * 4096


def test_version_2_is_refused_on_the_ingest_endpoint():
    with served_engine() as (eng, urls, ctx):
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(urls["ingest"])
        try:
            push.send(P.pack_events(events(5), (1, 1)))
            wait_for(lambda: eng.gateway.stats()["rejected"]["bad_version"] == 1, 10,
                     "the v2 frame refused")
        finally:
            push.close()
        assert eng.stats()["accepted"] == 0


def test_the_client_resends_the_same_frame_after_a_timeout():
    """A stub gateway that leaves the first copy unanswered: the client
    sends the frame again (same producer, same sequence) on a new socket,
    and returns the answer to it."""
    ctx = zmq.Context()
    port = free_ports(1)[0]
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"tcp://127.0.0.1:{port}")
    seen: list[bytes] = []

    def stub() -> None:
        while len(seen) < 2 and router.poll(10_000):
            envelope, frame = router.recv_multipart()
            seen.append(frame)
            if len(seen) == 2:
                router.send_multipart([envelope, json.dumps(
                    {"ok": True, "accepted": 4, "rejected": 0, "duplicate": True}).encode()])

    thread = threading.Thread(target=stub, daemon=True)
    thread.start()
    try:
        with engine.Client(endpoints={"acked": f"tcp://127.0.0.1:{port}"}, timeout=0.5) as c:
            assert c.send(events(4), ack=True) == 4
            assert (c.retried, c.duplicates) == (1, 1)
        thread.join(10)
        assert len(seen) == 2 and seen[0] == seen[1]
        _, version, _, _ = P.HEADER.unpack_from(seen[0])
        pid, seq = P.PRODUCER.unpack_from(seen[0], P.HEADER.size)
        assert version == 2 and pid == c.producer_id and seq == 1
    finally:
        router.close()
        ctx.destroy(linger=0)


def test_producer_marks_survive_a_snapshot_and_a_restart(tmp_path):
    """The marks go into snapshots with the rows: after a clean close (a
    snapshot, nothing to replay), a resend is still a duplicate."""
    ev = events(50)
    with served_engine({"data_dir": tmp_path}) as (eng, urls, ctx):
        assert ask(ctx, urls["acked"], P.pack_events(ev, (5, 9)))["duplicate"] is False
    with served_engine({"data_dir": tmp_path}) as (eng, urls, ctx):
        rec = eng.recovery
        assert rec.snapshot is not None and rec.events == 0
        assert ask(ctx, urls["acked"], P.pack_events(ev, (5, 9)))["duplicate"] is True
        assert ask(ctx, urls["acked"], P.pack_events(ev, (5, 10)))["duplicate"] is False
        eng.flush()
        assert set(eng.snapshot()["count"].tolist()) == {2}
    # Once more: the journal goes on past everything it held (markers
    # leave no ordinal in a row), and the start after reads it whole.
    for seq in (11, 12):
        with served_engine({"data_dir": tmp_path}) as (eng, urls, ctx):
            assert ask(ctx, urls["acked"], P.pack_events(ev, (5, seq)))["duplicate"] is False
            assert ask(ctx, urls["acked"], P.pack_events(ev, (5, seq - 1)))["duplicate"] is True
    with served_engine({"data_dir": tmp_path}) as (eng, urls, ctx):
        assert set(eng.snapshot()["count"].tolist()) == {4}
    # Without its snapshots the pruned journal is not the whole state: the
    # start refuses rather than come back with a part of it.
    for path in tmp_path.glob("snapshot-*.snap"):
        path.unlink()
    with pytest.raises(CorruptState, match="was pruned below ordinal"):
        engine.Engine(workers=2, data_dir=tmp_path)
