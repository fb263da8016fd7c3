"""A live gateway (real workers, real sockets on 127.0.0.1) answers queries
of a row left mid-write with an ``unavailable`` error reply within 10 ms,
from Python (JSON ops) and from the C lookup server alike, and answers
normally again once the row is consistent (issue 14, item 5)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

import engine
from engine import STATE_DTYPE, _table, entity_id, metric_id
from engine.core import layout
from engine.errors import unavailable_message
from engine.net import protocol as P
from tests.helpers import free_ports, wait_for

pytestmark = pytest.mark.timeout(60)

T0 = engine.DEFAULT_TS_MIN + 10**18
LIMIT_S = 0.010
REPLY_S = 5.0


def version_word(buf, key: int, metric: int) -> np.ndarray:
    """The seqlock word of (key, metric)'s row in one worker's table
    segment, as a writable 0-d view (rows lie after the header and the
    index, in the order the series appeared)."""
    t = _table.Table(buf)
    try:
        slots, used = t.slots, t.used
    finally:
        t.release_buffer()
    rows_off = _table.HEADER_BYTES + slots * _table.INDEX_ENTRY_BYTES
    rows = np.ndarray(used, STATE_DTYPE, buffer=buf, offset=rows_off)
    (at,) = np.flatnonzero((rows["key"] == key) & (rows["metric"] == metric))
    return np.ndarray((), "<u8", buffer=buf, offset=rows_off + int(at) * STATE_DTYPE.itemsize
                      + _table.row_offsets()["version"])


def ask(sock: zmq.Socket, data: bytes) -> tuple[float, bytes]:
    """(seconds, reply) of one request."""
    t = time.perf_counter()
    sock.send(data)
    if not sock.poll(int(REPLY_S * 1000)):
        pytest.fail(f"no reply within {REPLY_S}s")
    reply = sock.recv()
    return time.perf_counter() - t, reply


def fastest(sock: zmq.Socket, data: bytes) -> tuple[float, bytes]:
    """The fastest of three round trips: a loaded 2-core machine may
    deschedule a test past the bound, but a server that spins never replies."""
    runs = [ask(sock, data) for _ in range(3)]
    assert len({r for _, r in runs}) == 1, runs
    return min(t for t, _ in runs), runs[0][1]


def test_json_get_and_binary_lookup_of_a_row_held_mid_write_answer_unavailable_quickly():
    """Hold one row's version odd in a served engine's table segment: a JSON
    get and a binary lookup (answered in C) get their ``unavailable`` error
    replies within 10 ms, the series beside it reads, a fleet-wide op skips
    and counts the row; with the version even again both answer rows."""
    with engine.Engine(workers=2) as eng:
        urls = dict(zip(("ingest", "acked", "query", "alerts"),
                        (f"tcp://127.0.0.1:{p}" for p in free_ports(4))))
        eng.serve(endpoints=urls)
        eng.submit(engine.make_events(["web-01", "web-02"], "cpu", [T0, T0 + 1], [0.5, 0.7]))
        eng.flush(timeout=20)
        key, other, mid = entity_id("web-01"), entity_id("web-02"), metric_id("cpu")
        w = int(_table.mix64(np.array([key], np.uint64))[0]) % 2
        ctx = zmq.Context()
        try:
            q = ctx.socket(zmq.DEALER)
            q.setsockopt(zmq.LINGER, 0)
            q.connect(urls["query"])
            get = json.dumps({"op": "get", "entity": "web-01", "metric": "cpu", "id": 1}).encode()
            lookup = P.pack_lookup(np.array([other, key], np.uint64), mid)
            assert json.loads(ask(q, get)[1])["series"]["last"] == 0.5
            errors = eng.gateway.stats()["query_errors"]

            word = version_word(eng._table_segments[w].buf, key, mid)
            even = int(word)
            word[...] = even + 1  # a writer's first half, never followed by its second
            try:
                took, reply = fastest(q, get)
                assert json.loads(reply) == {
                    "ok": False, "reason": "unavailable", "id": 1,
                    "error": unavailable_message(key, mid, w, entity="web-01",
                                                 metric_name="cpu")}
                assert took < LIMIT_S, f"JSON get answered in {took * 1e3:.2f} ms"

                # Answered in C: the same words, by id (C knows no names).
                took, reply = fastest(q, lookup)
                assert reply[:2] != P.MAGIC
                assert json.loads(reply) == {"ok": False, "reason": "unavailable",
                                             "error": unavailable_message(key, mid, w)}
                assert took < LIMIT_S, f"binary lookup answered in {took * 1e3:.2f} ms"

                # The series beside it still answers, in C and in Python.
                rows = P.parse_rows(ask(q, P.pack_lookup(np.array([other], np.uint64), mid))[1])
                assert rows["last"].tolist() == [0.7]
                assert eng.get("web-02", "cpu")["last"] == 0.7
                assert eng.gateway.stats()["query_errors"] == errors + 6

                # A fleet-wide op leaves the row out and counts it, in time.
                status = json.dumps({"op": "status", "min_status": "OK"}).encode()
                took, reply = ask(q, status)
                series = [(e["entity_id"], x["metric_id"])
                          for e in json.loads(reply)["entities"] for x in e["series"]]
                assert series == [(other, mid)]
                assert took < 1.0
                assert eng.stats()["rows_unavailable"] == 1
            finally:
                word[...] = even + 2  # the second half: consistent again
                del word

            reply = json.loads(ask(q, get)[1])
            assert reply["ok"] and reply["series"]["last"] == 0.5
            rows = P.parse_rows(ask(q, lookup)[1])
            assert rows["last"].tolist() == [0.7, 0.5]
        finally:
            ctx.destroy(linger=0)


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def test_a_row_held_by_a_writer_that_can_still_run_is_waited_for_longer_but_not_forever():
    """A worker descheduled inside a write on a busy machine is not dead: a
    read waits for it past the 1 ms bound while the table's writer (here a
    busy process we start, named in the header's ``writer`` word) is
    runnable, gives up at the runnable cap all the same, and gives up within
    10 ms once that writer is stopped."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with engine.Engine(workers=1) as eng:
            eng.submit(engine.make_events(["web-01"], "cpu", [T0], [0.5]))
            eng.flush(timeout=20)
            buf = eng._table_segments[0].buf
            writer = np.ndarray((), "<u8", buffer=buf,
                                offset=layout.field_offset("TableHeader", "writer"))
            worker_pid = int(writer)
            assert worker_pid == eng.stats()["workers"][0]["pid"]
            word = version_word(buf, entity_id("web-01"), metric_id("cpu"))
            even = int(word)
            writer[...] = busy.pid
            word[...] = even + 1
            try:
                t = time.perf_counter()
                with pytest.raises(engine.errors.SeriesUnavailable):
                    eng.get("web-01", "cpu")
                took = time.perf_counter() - t
                cap = layout.READ_RUNNABLE_GIVE_UP_NS / 1e9
                assert 0.9 * cap <= took < 10 * cap, f"gave up after {took * 1e3:.1f} ms"

                os.kill(busy.pid, signal.SIGSTOP)
                wait_for(lambda: proc_state(busy.pid) == "T", 5, "the busy process stopping")
                runs = []
                for _ in range(3):
                    t = time.perf_counter()
                    with pytest.raises(engine.errors.SeriesUnavailable):
                        eng.get("web-01", "cpu")
                    runs.append(time.perf_counter() - t)
                assert min(runs) < LIMIT_S, runs
            finally:
                word[...] = even + 2
                writer[...] = worker_pid
                del word, writer
            assert eng.get("web-01", "cpu")["last"] == 0.5
    finally:
        busy.kill()
        busy.wait(timeout=10)
