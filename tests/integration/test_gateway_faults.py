"""The gateway's own threads are watched (issue 14, item 7): a thread that
stops on an error turns ``healthy`` false at once with its cause, runs
again after a back-off on a fresh socket, and once its restarts are
exhausted stays down, and ``ringflow serve`` exits 1 with the cause.

Faults are injected by replacing, for one test, a method the thread's loop
calls (tests/faulty_serve.py does the same in a ``ringflow serve``
subprocess)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

import engine
from engine.errors import GatewayDown
from engine.net.gateway import Gateway
from tests.helpers import free_ports, served_engine
from tests.helpers import wait_for as poll_until

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[2]
HEADER = struct.Struct("<2sBBI")
REPLY_S = 5.0


def binary(entity: str, n: int, value: float = 1.0) -> bytes:
    ev = engine.make_events([entity] * n, "cpu", None, np.full(n, value))
    return HEADER.pack(b"RF", 1, 1, n) + ev.tobytes()


def wait_for(what: str, check, timeout: float = 10.0, every: float = 0.01):
    """:func:`tests.helpers.wait_for`, the condition named first."""
    return poll_until(check, timeout, what, every)


def fail_once(monkeypatch, method: str, when=lambda *a: True) -> list[int]:
    """Make the first call of ``Gateway.<method>`` for which ``when(*args)``
    holds raise; returns a one-item counter of injected faults."""
    real = getattr(Gateway, method)
    fired = [0]

    def faulty(self, *args, **kwargs):
        if not fired[0] and when(*args):
            fired[0] += 1
            raise RuntimeError("injected fault")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Gateway, method, faulty)
    return fired


def fail_always(monkeypatch, method: str) -> None:
    def faulty(self, *args, **kwargs):
        raise RuntimeError("injected fault")

    monkeypatch.setattr(Gateway, method, faulty)


class Live:
    def __init__(self, eng: engine.Engine, urls: dict, ctx: zmq.Context) -> None:
        self.eng, self.urls, self.ctx = eng, urls, ctx
        self.gw = eng.gateway

    def sock(self, kind: int, endpoint: str) -> zmq.Socket:
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(self.urls[endpoint])
        return s

    def ask(self, endpoint: str, data: bytes, timeout: float = REPLY_S) -> dict | None:
        """One request on a fresh DEALER; the decoded reply, or None."""
        with contextlib.closing(self.sock(zmq.DEALER, endpoint)) as s:
            s.send(data)
            if not s.poll(int(timeout * 1000)):
                return None
            return json.loads(s.recv())

    def stats_op(self) -> dict:
        reply = self.ask("query", json.dumps({"op": "stats"}).encode())
        assert reply is not None and reply["ok"], reply
        return reply["stats"]["gateway"]

    def count(self, entity: str) -> int:
        row = self.eng.get(entity, "cpu")
        return 0 if row is None else int(row["count"])


@contextlib.contextmanager
def live(**gateway_settings):
    with served_engine({"ring_capacity": 4096, "table_capacity": 4096},
                       **gateway_settings) as served:
        yield Live(*served)


def test_a_failed_pull_thread_reports_its_cause_comes_back_and_loses_nothing_it_read(
        monkeypatch):
    # The fault hits after the frame was read into the staging batch and
    # before it was submitted: the restarted loop submits it first.
    fail_once(monkeypatch, "_submit_drained", lambda drain: drain.fill > 0)
    # The back-off is long enough for the checks below to see the thread
    # down on a loaded machine, before it comes back.
    with live(restart_backoff=3.0) as gw:
        push = gw.sock(zmq.PUSH, "ingest")
        push.send(binary("pull-a", 10))
        st = wait_for("healthy false", lambda: (s := gw.gw.stats())["healthy"] is False and s)
        assert st["threads"]["pull"]["state"] == "restarting"
        assert st["threads"]["pull"]["last_error"]["type"] == "RuntimeError"
        assert st["threads"]["pull"]["last_error"]["message"] == "injected fault"
        assert abs(st["threads"]["pull"]["last_error"]["at"] - time.time()) < 30
        assert "gateway thread pull failed" in st["cause"]
        assert "RuntimeError: injected fault" in st["cause"] and "restart 1 of 5" in st["cause"]
        assert st["errors"] == ["RuntimeError('injected fault')"]
        # The same over the wire, from the query thread, which still runs.
        op = gw.stats_op()
        assert op["healthy"] is False and "gateway thread pull failed" in op["cause"]
        assert op["threads"]["acked"] == {"state": "running", "restarts": 0, "last_error": None}

        st = wait_for("pull restarted", lambda: (s := gw.gw.stats())["healthy"] and s)
        assert st["threads"]["pull"]["state"] == "running"
        assert st["threads"]["pull"]["restarts"] == st["restarts"] == 1
        assert st["cause"] is None and st["errors"] == []
        assert st["threads"]["pull"]["last_error"]["message"] == "injected fault"
        push.send(binary("pull-a", 5))
        wait_for("every event read applied",
                 lambda: gw.eng.flush(10) is None and gw.count("pull-a") == 15)
        assert gw.stats_op()["restarts"] == 1
        push.close()


def test_a_failed_acked_thread_answers_the_message_in_hand_and_comes_back(monkeypatch):
    fail_once(monkeypatch, "_ack")
    with live(restart_backoff=3.0) as gw:
        reply = gw.ask("acked", binary("acked-a", 4))
        assert reply is not None, "the message in hand when the thread failed got no reply"
        assert reply["ok"] is False and reply["reason"] == "unavailable"
        assert "injected fault" in reply["error"]
        # The reply goes out just before the thread records its failure.
        st = wait_for("the failure recorded",
                      lambda: (s := gw.gw.stats())["threads"]["acked"]["state"] == "restarting"
                      and s)
        assert not gw.gw.healthy
        assert "gateway thread acked failed" in st["cause"]
        wait_for("acked restarted", lambda: gw.gw.healthy)
        reply = wait_for("an acked reply", lambda: gw.ask("acked", binary("acked-a", 4), 2.0))
        assert reply == {"ok": True, "accepted": 4, "rejected": 0}
        gw.eng.flush(10)
        assert gw.count("acked-a") == 4
        st = gw.stats_op()
        assert st["threads"]["acked"]["restarts"] == 1 and st["rejected"]["unavailable"] == 1


def test_a_failed_query_thread_comes_back_and_answers_again(monkeypatch):
    fail_once(monkeypatch, "_reply")
    with live(restart_backoff=3.0) as gw:
        with contextlib.closing(gw.sock(zmq.DEALER, "query")) as s:
            s.send(b'{"op": "ping"}')
            wait_for("healthy false", lambda: not gw.gw.healthy)
            st = gw.gw.stats()
            assert st["threads"]["query"]["state"] == "restarting", st
            assert "gateway thread query failed" in st["cause"]
            # The request in hand went with the old socket: no reply, ever.
            assert not s.poll(300)
        wait_for("query restarted", lambda: gw.gw.healthy)
        st = wait_for("a stats reply", lambda: gw.ask("query", b'{"op": "stats"}', 2.0))
        assert st["ok"] and st["stats"]["gateway"]["threads"]["query"]["restarts"] == 1
        assert st["stats"]["gateway"]["healthy"] is True


def test_a_thread_past_its_restarts_stays_down_and_says_why(monkeypatch):
    fail_always(monkeypatch, "_ack")
    with live(max_restarts=2, restart_backoff=0.05) as gw:
        stop = threading.Event()

        def keep_sending() -> None:
            with contextlib.closing(gw.sock(zmq.DEALER, "acked")) as s:
                for _ in range(2000):
                    if stop.wait(0.02):
                        return
                    s.send(binary("down-a", 1), zmq.NOBLOCK)

        sender = threading.Thread(target=keep_sending, daemon=True)
        sender.start()
        try:
            down = wait_for("the acked thread down", lambda: gw.gw.down)
        finally:
            stop.set()
            sender.join(10)
        assert isinstance(down, GatewayDown) and down.thread == "acked"
        assert down.restarts == 2 and "injected fault" in str(down)
        assert "2 restarts within 60 s" in str(down)
        st = gw.stats_op()
        assert st["healthy"] is False and st["restarts"] == 2
        assert st["threads"]["acked"]["state"] == "down"
        assert "not restarted (2 restarts within 60 s)" in st["cause"]
        # The others keep serving: fire-and-forget ingest is still applied.
        push = gw.sock(zmq.PUSH, "ingest")
        push.send(binary("down-b", 3))
        wait_for("pull still applies", lambda: gw.eng.flush(10) is None and gw.count("down-b") == 3)
        push.close()
        assert gw.gw.stats()["threads"]["acked"]["state"] == "down"


def test_a_degraded_shard_is_answered_unavailable_and_the_acked_thread_goes_on():
    """A shard given up on: acked messages are answered ``unavailable`` (with
    what was taken) and the acked thread keeps running; healthy says false
    and the cause names the shard; a worker killed once is replaced and
    acked ingest answers ok again."""
    with live(restart_backoff=0.05, ack_timeout=1.0) as gw:
        n = 12_000
        ev = engine.make_events([f"dead-{i}" for i in range(n)], "cpu", None, np.ones(n))
        frame = HEADER.pack(b"RF", 1, 1, n) + ev.tobytes()
        os.kill(gw.eng.pids[0], signal.SIGKILL)
        reply = gw.ask("acked", frame)
        assert reply is not None and reply["ok"], reply
        gw.eng._set_crash_hook(0, "exit")
        os.kill(gw.eng.pids[0], signal.SIGKILL)
        wait_for("the shard degraded", lambda: gw.eng.state == "degraded")
        reply = gw.ask("acked", frame)
        assert reply is not None and reply["reason"] == "unavailable", reply
        assert reply["handled"] == 0 and "degraded" in reply["error"]
        st = gw.gw.stats()
        assert not st["healthy"] and st["engine_state"] == "degraded"
        assert "shard 0 degraded" in st["cause"]
        assert st["threads"]["acked"]["state"] == "running" and gw.gw.down is None


# --- ringflow serve ----------------------------------------------------------


def _env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


class FaultyServer:
    """tests/faulty_serve.py in a subprocess on free ports, stdout and
    stderr each collected by a thread."""

    def __init__(self, method: str, times: int) -> None:
        self.ports = free_ports(4)
        self.urls = dict(zip(("ingest", "acked", "query", "alerts"),
                             (f"tcp://127.0.0.1:{p}" for p in self.ports)))
        argv = [sys.executable, "-m", "tests.faulty_serve", method, str(times),
                "--workers", "2", "--ring-capacity", "4096", "--table-capacity", "4096",
                "--quiet", "--data-dir", "none", "--ports", ",".join(map(str, self.ports))]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=_env(), cwd=REPO)
        self.out: list[str] = []
        self.err: list[str] = []
        self.ready = threading.Event()
        self._readers = [threading.Thread(target=self._read, args=(f, lines), daemon=True)
                         for f, lines in ((self.proc.stdout, self.out),
                                          (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()

    def _read(self, stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)
            if line.startswith("ringflow serving on "):
                self.ready.set()
        self.ready.set()

    @property
    def output(self) -> str:
        return f"stdout:\n{''.join(self.out)}\nstderr:\n{''.join(self.err)}"

    def wait_ready(self) -> None:
        assert self.ready.wait(30), self.output
        assert self.proc.poll() is None, self.output

    def worker_pids(self) -> list[int]:
        text = "".join(self.out)
        head = text.split("workers (pids ", 1)[1].split(")", 1)[0]
        return [int(p) for p in head.split(",")]

    def finish(self, sig: int | None = None, timeout: float = 30) -> int:
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        for t in self._readers:
            t.join(10)
        return rc


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(") ", 1)[1].startswith("Z")


def _assert_clean(srv: FaultyServer, workers: list[int]) -> None:
    wait_for("workers and segments gone", lambda: all(_gone(p) for p in workers) and not [
        n for n in engine.list_segments() if n.startswith(f"ringflow-{srv.proc.pid}-")])


@pytest.fixture
def faulty_server():
    started: list[FaultyServer] = []

    def start(method: str, times: int) -> FaultyServer:
        srv = FaultyServer(method, times)
        started.append(srv)
        srv.wait_ready()
        return srv

    yield start
    for srv in started:
        if srv.proc.poll() is None:
            srv.finish(signal.SIGTERM)


def _acked(ctx: zmq.Context, url: str, data: bytes, timeout: float) -> dict | None:
    with contextlib.closing(ctx.socket(zmq.DEALER)) as s:
        s.setsockopt(zmq.LINGER, 0)
        s.connect(url)
        s.send(data)
        return json.loads(s.recv()) if s.poll(int(timeout * 1000)) else None


def test_serve_restarts_a_failed_gateway_thread_and_keeps_serving(faulty_server):
    srv = faulty_server("_ack", 1)
    workers = srv.worker_pids()
    ctx = zmq.Context()
    try:
        first = _acked(ctx, srv.urls["acked"], binary("serve-a", 3), REPLY_S)
        assert first is not None and first["reason"] == "unavailable", srv.output
        wait_for("the restart reported",
                 lambda: any("gateway thread acked failed" in line and "restart 1 of 5" in line
                             for line in srv.err))   # a log event, on stderr
        again = wait_for("an acked reply after the restart",
                         lambda: _acked(ctx, srv.urls["acked"], binary("serve-a", 3), 2.0))
        assert again == {"ok": True, "accepted": 3, "rejected": 0}, srv.output
        stats = _acked(ctx, srv.urls["query"], b'{"op": "stats"}', REPLY_S)
        gw = stats["stats"]["gateway"]
        assert gw["healthy"] is True and gw["restarts"] == 1, gw
        assert gw["threads"]["acked"]["last_error"]["message"] == "injected fault 1"
    finally:
        ctx.destroy(linger=0)
    assert srv.proc.poll() is None, srv.output
    assert srv.finish(signal.SIGTERM) == 0, srv.output
    assert "ringflow stopped cleanly" in "".join(srv.out)
    _assert_clean(srv, workers)


def test_serve_exits_1_with_the_cause_once_a_thread_is_down_for_good(faulty_server):
    srv = faulty_server("_ack", 10**6)
    workers = srv.worker_pids()
    ctx = zmq.Context()
    try:
        # Every acked message kills the thread again; five restarts take
        # about 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s of back-off.
        deadline = time.monotonic() + 30
        while srv.proc.poll() is None and time.monotonic() < deadline:
            _acked(ctx, srv.urls["acked"], binary("serve-b", 1), 0.2)
    finally:
        ctx.destroy(linger=0)
    rc = srv.finish(timeout=30)
    err = "".join(srv.err)
    assert rc == 1, srv.output
    assert "ringflow serve: error: gateway thread acked died: RuntimeError: injected fault" in err
    assert "not restarted (5 restarts within 60 s); stopping" in err, srv.output
    assert "Traceback" not in srv.output
    # Each restart is one warning event (serve's logs are on stderr).
    restarts = [line for line in srv.err if "restart " in line and " of 5 in " in line]
    assert len(restarts) == 5 and all("level=warning" in x for x in restarts), srv.output
    _assert_clean(srv, workers)
