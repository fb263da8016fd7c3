"""JSON lines through a live gateway (issue 16): the same events as JSON
lines and as binary frames give the same engine state; float ts; bad
lines counted; ``Client.send_json_body`` and ``ringflow send`` sending a
file's bytes with its bad lines reported and its good lines kept."""

from __future__ import annotations

import asyncio
import itertools
import json

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine.errors import Rejected
from engine.net.aio import AsyncClient
from engine.net.client import Client
from tests.helpers import served_engine, wait_for
from tests.integration.test_cli import ports_arg, ringflow, serve  # noqa: F401 - fixture

pytestmark = pytest.mark.timeout(120)

T0 = 1_732_300_000_000_000_000
#: The fields a series' state holds of its events (not its row's bookkeeping).
STATE_FIELDS = ("count", "sum", "min", "max", "last", "last_ts", "ewma", "mean", "m2",
                "win_start", "win_sum", "win_min", "win_max", "win_count", "sk_base", "sketch",
                "first_ts", "prev_sum", "prev_min", "prev_max", "prev_count", "stale", "late",
                "view", "status", "metric")


@pytest.fixture
def gw():
    with served_engine({"worker_timeout": "120s"}) as (eng, urls, ctx):
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(urls["ingest"])
        yield eng, urls, push


def _frame(body: bytes) -> bytes:
    return engine.net.protocol.pack_json_body(body)


def _settle(eng, messages: int, records: int) -> None:
    wait_for(lambda: eng.gateway.stats()["messages"] >= messages
             and eng.gateway.stats()["accepted"] + eng.gateway.stats()["invalid"] >= records,
             20, "the gateway to take the frames")
    eng.flush(timeout=20)


_example = itertools.count()

readings = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["cpu", "mem", "p\u00f6w"]),
                              st.integers(0, 10**6), st.floats(-1e6, 1e6),
                              st.booleans()), min_size=1, max_size=60)


def test_the_same_events_as_json_lines_and_as_binary_give_the_same_state(gw):
    """Each example's events go to series of their own twice: as one binary
    frame under ``b-N-*`` and as one JSON-lines frame under ``j-N-*``, ts as
    an integer or (where it is exact) as a float, on the PULL socket."""
    eng, _, push = gw

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(readings)
    def check(rows):
        n = next(_example)
        ts = [T0 + off * 256 for _, _, off, _, _ in rows]      # exact as doubles
        ev = engine.make_events([f"b-{n}-{h}" for h, *_ in rows], [m for _, m, *_ in rows],
                                np.array(ts, np.int64), np.array([v for *_, v, _ in rows]))
        lines = [{"entity": f"j-{n}-{h}", "metric": m, "ts": float(t) if as_float else t,
                  "value": v} for (h, m, _, v, as_float), t in zip(rows, ts)]
        before = eng.gateway.stats()
        push.send(engine.net.protocol.pack_events(ev))
        push.send(_frame("".join(json.dumps(x) + "\n" for x in lines).encode()))
        _settle(eng, before["messages"] + 2,
                before["accepted"] + before["invalid"] + 2 * len(rows))
        for h, m in {(h, m) for h, m, *_ in rows}:
            b, j = eng.get(f"b-{n}-{h}", m), eng.get(f"j-{n}-{h}", m)
            assert b is not None and j is not None
            for f in STATE_FIELDS:
                assert np.array_equal(b[f], j[f], equal_nan=True), (f, b[f], j[f])
        names = eng.names["entities"]
        assert all(names[engine.entity_id(f"j-{n}-{h}")] == f"j-{n}-{h}" for h, *_ in rows)

    check()


def test_bad_lines_are_counted_and_the_frames_around_them_applied(gw):
    eng, _, push = gw
    good = b'{"entity":"ok-1","metric":"cpu","value":1,"ts":1.7323e18}\n'
    bad_field = good + b'{"entity":"ok-1","metric":"cpu"}\n'
    bad_json = good + b'{"entity":"ok-1",\n'
    invalid = (b'{"entity":"ok-2","metric":"cpu","value":NaN}\n'
               b'{"entity":"ok-2","metric":"cpu","value":1,"ts":1e30}\n'
               b'{"entity":"ok-2","metric":"cpu","value":2,"ts":1732300000000000000}\n')
    before = eng.gateway.stats()
    for body in (good, bad_field, bad_json, invalid, good):
        push.send(_frame(body))
    _settle(eng, before["messages"] + 5, before["accepted"] + before["invalid"] + 5)
    after = eng.gateway.stats()
    gained = {k: after["rejected"][k] - before["rejected"][k] for k in after["rejected"]}
    assert {k: v for k, v in gained.items() if v} == {"bad_field": 1, "bad_json": 1,
                                                        "invalid_record": 2}
    assert eng.get("ok-1", "cpu")["count"] == 2
    row = eng.get("ok-2", "cpu")
    assert row["count"] == 1 and row["last"] == 2.0
    assert eng.get("ok-1", "cpu")["last_ts"] == 1_732_300_000_000_000_000


def test_client_send_json_body_acked_and_rejected(gw):
    eng, urls, _ = gw
    ports = {k: int(u.rsplit(":", 1)[1]) for k, u in urls.items()}
    with Client(ports=ports) as c:
        body = b"".join(b'{"entity":"sb","metric":"cpu","value":%d,"ts":%d.0}\n' % (i, T0 + i)
                        for i in range(10))
        assert c.send_json_body(body, 10, ack=True) == 10
        with pytest.raises(Rejected) as info:
            c.send_json_body(body + b'{"entity":"sb"}\n', 11, ack=True)
        assert info.value.reason == "bad_field" and "line 11" in str(info.value)
        assert c.send_json_body(body, 10) is None
    wait_for(lambda: (eng.flush(timeout=5) or eng.get("sb", "cpu")["count"] == 20), 20,
             "the fire-and-forget body to be applied")

    async def aio():
        async with AsyncClient(ports=ports) as c:
            return await c.send_json_body(body, 10, ack=True)

    assert asyncio.run(aio()) == 10
    eng.flush(timeout=5)
    assert eng.get("sb", "cpu")["count"] == 30


def test_ringflow_send_keeps_the_good_lines_of_a_message_with_bad_ones(serve, tmp_path):  # noqa: F811
    srv = serve()
    lines = []
    for i in range(3000):
        lines.append(json.dumps({"entity": f"f-{i % 7}", "metric": "cpu", "value": i,
                                 "ts": float(T0 + i * 1024)}))
    bad = {17: '{"entity": "f-0", "metric": "cpu"}', 1500: '{"entity": "f-0",',
           2999: '{"entity": "f-0", "metric": "cpu", "value": 1, "ts": 1e300}',
           40: '{"entity": "", "metric": "cpu", "value": 1}'}
    for i, text in bad.items():
        lines[i] = text
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    r = ringflow("send", str(path), "--ports", ports_arg(srv.ports), "--ack")
    assert r.returncode == 1, r.stdout + r.stderr
    reported = sorted(int(x.split(":")[1]) for x in r.stderr.split() if str(path) in x)
    assert reported == sorted(i + 1 for i in bad), r.stderr
    assert "missing field 'value'" in r.stderr and "empty name" in r.stderr
    assert "i64 range" in r.stderr and "not JSON" in r.stderr
    good = 3000 - len(bad)
    assert f"sent {good:,} events" in r.stdout and f"gateway accepted {good:,}" in r.stdout
    assert f"3,000 lines read, {len(bad)} malformed (skipped)" in r.stdout
