"""A slow query never delays another: the gateway forwards ``status``,
``top`` and ``entity`` to its query process (engine.query.process), so a
ping is answered while a long ``status`` runs; the process shows names
learnt after it started, and is replaced when it dies."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time

import numpy as np
import pytest
import zmq

import engine
from tests.helpers import free_ports, wait_for

T0 = 1_700_000_000 * 10**9
REPLY_MS = 30_000
# Series (each its own entity), all CRIT: a status of all of them takes
# seconds to build and send, a ping microseconds.
SERIES = 40_000
RULES = {"rule": [{"metric": "*", "stat": "last", "crit": 0.5}]}


@contextlib.contextmanager
def crit_fleet(series: int = SERIES, **gateway_settings):
    with engine.Engine(workers=2, table_capacity=2 * series, rules=RULES) as eng:
        keys = np.arange(1, series + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        eng.submit(engine.make_events(keys, np.zeros(series, np.uint32),
                                      T0 + np.arange(series, dtype=np.int64),
                                      np.ones(series)))
        eng.flush()
        wait_for(lambda: eng.stats()["applied"] == series, what="the fleet applied")
        urls = dict(zip(("ingest", "acked", "query", "alerts"),
                        (f"tcp://127.0.0.1:{p}" for p in free_ports(4))))
        gw = eng.serve(endpoints=urls, **gateway_settings)
        ctx = zmq.Context()
        socks = []

        def sock() -> zmq.Socket:
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(urls["query"])
            socks.append(s)
            return s

        try:
            yield eng, gw, sock
        finally:
            for s in socks:
                s.close()
            ctx.term()


def ask(s: zmq.Socket, request: dict, timeout_ms: int = REPLY_MS) -> dict:
    s.send(json.dumps(request).encode())
    assert s.poll(timeout_ms), f"no reply to {request} within {timeout_ms} ms"
    return json.loads(s.recv())


def ping_during_status(gw, sock) -> tuple[float, dict]:
    """Send a status of every entity, then (once the gateway has taken it)
    a ping on another socket; return the ping's round trip as a share of
    the status's, and the status."""
    slow, fast = sock(), sock()
    # Both connected and answered once before the race.
    ask(slow, {"op": "ping"})
    ask(fast, {"op": "ping"})
    taken = gw.counters["queries"]
    t0 = time.perf_counter()
    slow.send(json.dumps({"op": "status", "limit": 100_000}).encode())
    wait_for(lambda: gw.counters["queries"] > taken, what="the status taken", every=0.0005)
    pong = ask(fast, {"op": "ping"})
    ping_s = time.perf_counter() - t0
    assert slow.poll(REPLY_MS), "the long status was never answered"
    status_s = time.perf_counter() - t0
    status = json.loads(slow.recv())
    assert pong["ok"]
    return ping_s / status_s, status


@pytest.mark.timeout(120)
def test_a_ping_is_answered_while_a_long_status_runs():
    with crit_fleet() as (eng, gw, sock):
        share, status = ping_during_status(gw, sock)
        assert share < 0.25, f"the ping took {share:.0%} of the status's time"
        assert status["ok"] and status["total"] == SERIES
        assert len(status["entities"]) == SERIES
        assert status["counts"]["CRIT"] == SERIES


@pytest.mark.timeout(120)
def test_on_the_query_thread_the_ping_waits_for_the_status():
    """The same race with query_processes=0 (the query thread answers
    everything, as before): the ping waits for the status to be built,
    which shows that the test above can fail."""
    with crit_fleet(query_processes=0) as (eng, gw, sock):
        share, status = ping_during_status(gw, sock)
        assert share >= 0.25, f"the ping took only {share:.0%} of the status's time"
        assert status["total"] == SERIES


@pytest.mark.timeout(120)
def test_names_learnt_later_show_and_a_dead_query_process_is_replaced():
    with crit_fleet(series=50) as (eng, gw, sock):
        s = sock()
        first = ask(s, {"op": "status", "limit": 1})["entities"][0]
        assert first["entity"] is None
        key = first["entity_id"]
        eng.names["entities"].setdefault(key, "db-07")
        again = ask(s, {"op": "status", "limit": 1})["entities"][0]
        assert again["entity_id"] == key and again["entity"] == "db-07"
        # A name asked for is learnt by the engine, not only by the process.
        assert ask(s, {"op": "entity", "entity": "web-99"})["series"] == []
        assert engine.entity_id("web-99") in eng.names["entities"]

        qp = gw._qprocs[0]
        old = qp.proc.pid
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: qp.proc.pid != old, what="a new query process")
        # Answered by the new one, which got every name again.
        reply = wait_for(lambda: (r := ask(s, {"op": "status", "limit": 1}))["ok"] and r)
        assert reply["entities"][0]["entity"] == "db-07"
        assert qp.restarts == 1
    # Closing the gateway stopped it.
    assert qp.proc.poll() is not None
