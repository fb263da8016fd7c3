"""``ringflow status`` and ``ringflow query`` against a gateway that is up
but slow: the CLI says the query timed out and how long it waited, not
that no server runs; and ``--limit`` goes to the server."""

from __future__ import annotations

import contextlib
import json
import threading

import pytest
import zmq

from tests.helpers import free_ports, wait_for
from tests.integration.test_cli import ports_arg, run_main


@contextlib.contextmanager
def slow_gateway():
    """A query ROUTER on 127.0.0.1 that answers pings and never anything
    else: yields (ports argument, the requests it took)."""
    ports = free_ports(4)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(f"tcp://127.0.0.1:{ports[2]}")
    taken: list[dict] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if not sock.poll(20):
                continue
            *envelope, frame = sock.recv_multipart()
            request = json.loads(frame)
            taken.append(request)
            if request.get("op") == "ping":
                reply = {"ok": True, "op": "ping", "time_ns": 1}
                if "id" in request:
                    reply["id"] = request["id"]
                sock.send_multipart([*envelope, json.dumps(reply).encode()])

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield ports_arg(ports), taken
    finally:
        stop.set()
        t.join(5)
        sock.close()
        ctx.term()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("argv, query", [(("status", "--limit", "3"), "status"),
                                         (("query", "web-01"), "entity")])
def test_a_slow_query_is_reported_as_slow_not_as_no_server(capsys, argv, query):
    with slow_gateway() as (ports, taken):
        rc, _, err = run_main(capsys, *argv, "--ports", ports, "--timeout", "0.5")
        assert rc == 2, err
        assert f"the {query} query timed out after waiting 0.5 s" in err, err
        assert "is running" in err and "answered a ping" in err, err
        assert "is `ringflow serve` running there?" not in err
        asked = wait_for(lambda: [r for r in taken if r.get("op") != "ping"])
        if query == "status":
            # The limit is the server's to apply.
            assert asked[0]["limit"] == 3


@pytest.mark.timeout(30)
def test_no_server_still_says_so(capsys):
    rc, _, err = run_main(capsys, "status", "--ports", ports_arg(free_ports(4)),
                          "--timeout", "0.3")
    assert rc == 2 and "no answer from the gateway" in err and "within 0.3 s" in err
