"""Small helpers shared by the integration tests."""

from __future__ import annotations

import contextlib
import socket
import time


def free_ports(n: int = 4) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now (all held open
    together while they are picked, so none is handed out twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()



def wait_for(predicate, timeout: float = 10.0, what: str = "condition", every: float = 0.01):
    """Poll ``predicate()`` until it returns something true and return that;
    fail the test at the deadline.  The one place tests wait on a condition
    (a bounded poll, never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not met in {timeout}s"
        time.sleep(every)


@contextlib.contextmanager
def served_engine(engine_settings: dict | None = None, **gateway_settings):
    """An engine with 2 workers serving its gateway on four free 127.0.0.1
    ports, and a ZeroMQ context for clients: yields ``(eng, urls, ctx)``;
    everything is closed on the way out."""
    import zmq

    import engine

    with engine.Engine(**{"workers": 2, **(engine_settings or {})}) as eng:
        urls = dict(zip(("ingest", "acked", "query", "alerts"),
                        (f"tcp://127.0.0.1:{p}" for p in free_ports(4))))
        eng.serve(endpoints=urls, **gateway_settings)
        ctx = zmq.Context()
        try:
            yield eng, urls, ctx
        finally:
            ctx.destroy(linger=0)
