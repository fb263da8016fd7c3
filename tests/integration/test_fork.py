"""Fork safety of the embedded engine: a child forked from the engine's
process may not drive it, and nothing the child does (its calls,
``close()``, garbage collection, its exit) reaches the parent's workers,
segments or producer slots."""

from __future__ import annotations

import inspect
import json
import os
import select
import signal
import subprocess
import sys
import textwrap

import numpy as np
import psutil
import pytest

import engine
from engine.errors import ForkedProcess
from engine.net.client import Client
from tests.helpers import free_ports

pytestmark = pytest.mark.timeout(120)

T0 = engine.DEFAULT_TS_MIN + 10**18
HOSTS = [f"web-{i:02d}" for i in range(20)]
RULES = """
[[rule]]
metric = "cpu"
warn = 0.8
crit = 0.9
"""


def batch(n_rounds: int, start: int = 0) -> np.ndarray:
    """``n_rounds`` readings of cpu = 0.5 for every host, in event-time order."""
    return engine.make_events(HOSTS * n_rounds, "cpu",
                              [T0 + (start + i // len(HOSTS)) * 10**9
                               for i in range(n_rounds * len(HOSTS))],
                              [0.5] * (n_rounds * len(HOSTS)))


def our_segments(pid: int) -> set[str]:
    return {n for n in engine.list_segments() if n.startswith(f"ringflow-{pid}-")}


def wait_child(pid: int, timeout: float) -> int:
    """Reap the forked child ``pid`` within ``timeout`` seconds and return its
    exit code; past the deadline kill it (by its pid) and fail."""
    # The child's pidfd becomes readable when it exits: a wait with a
    # deadline, no polling.
    fd = os.pidfd_open(pid)
    try:
        exited = select.select([fd], [], [], timeout)[0]
    finally:
        os.close(fd)
    if not exited:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail(f"forked child {pid} did not exit within {timeout}s")
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def public_methods(cls) -> set[str]:
    return {name for name, value in vars(cls).items()
            if not name.startswith("_") and inspect.isfunction(value)}


def child_calls(eng: engine.Engine, extra: engine.Producer, stream) -> dict:
    """Every public call a child could make, by name."""
    ev = batch(1)
    ports = free_ports()
    endpoints = {name: f"tcp://127.0.0.1:{port}"
                 for name, port in zip(("ingest", "acked", "query", "alerts"), ports)}
    return {
        "submit": lambda: eng.submit(ev),
        "flush": lambda: eng.flush(timeout=1.0),
        "producer": lambda: eng.producer(),
        "get": lambda: eng.get(HOSTS[0], "cpu"),
        "get_many": lambda: eng.get_many(HOSTS, "cpu"),
        "entity_rows": lambda: eng.entity_rows(HOSTS[0]),
        "snapshot": lambda: eng.snapshot(),
        "snapshot_now": lambda: eng.snapshot_now(),
        "series": lambda: eng.series(HOSTS[0], "cpu"),
        "entity": lambda: eng.entity(HOSTS[0]),
        "quantiles": lambda: eng.quantiles("cpu"),
        "status": lambda: eng.status("OK"),
        "stats": lambda: eng.stats(),
        "reload_rules": lambda: eng.reload_rules(RULES, timeout=1.0),
        "register_names": lambda: eng.register_names(["web-99"], ["mem"]),
        "alerts": lambda: eng.alerts(timeout=0.1),
        "alerts_since": lambda: eng.alerts_since(0),
        "on_alert": lambda: eng.on_alert(print),
        "remove_alert_callback": lambda: eng.remove_alert_callback(print),
        "serve": lambda: eng.serve(endpoints),
        "Producer.submit": lambda: extra.submit(ev, timeout=0.1),
        "Producer.release": lambda: extra.release(),
        "AlertStream.get": lambda: stream.get(0.1),
        "AlertStream.next": lambda: next(stream),
        "Segment.unlink": lambda: eng._control_segment.unlink(),
    }


def test_every_public_method_is_tried_in_the_child():
    # A public method added later must join the child's list (and its guard).
    tried = {name for name in child_calls(None, None, None) if "." not in name}
    assert public_methods(engine.Engine) - {"close"} == tried
    assert public_methods(engine.Producer) == {"submit", "release"}


@pytest.mark.parametrize("close_in_child", [False, True], ids=["exit", "close-then-exit"])
def test_child_calls_raise_and_parent_survives(close_in_child):
    me = os.getpid()
    eng = engine.Engine(workers=2, rules=RULES)
    try:
        extra = eng.producer()
        stream = eng.alerts(timeout=5.0)
        assert eng.submit(batch(3)) == 3 * len(HOSTS)
        eng.flush(timeout=30)
        segments = our_segments(me)
        assert len(segments) == 2 + 2  # control, rules, one table per worker
        pids = eng.pids
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # never return into pytest: report, then os._exit
            code = 1
            try:
                os.close(read)
                report = {}
                if close_in_child:
                    eng.close()  # must neither raise nor touch the parent's engine
                    report["close"] = eng.closed
                for name, call in child_calls(eng, extra, stream).items():
                    try:
                        call()
                        report[name] = "returned"
                    except ForkedProcess as exc:
                        ok = exc.owner_pid == me and exc.pid == os.getpid()
                        report[name] = "ForkedProcess" if ok else f"wrong pids: {exc}"
                    except BaseException as exc:  # anything else goes to the parent's report
                        report[name] = repr(exc)
                # What garbage collection and the exit's atexit hook would
                # run; a detached finalizer (after close) runs nothing.
                eng._finalizer()
                report["close_after"] = repr(eng.close())
                os.write(write, json.dumps(report).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        code = wait_child(child, 60)
        with os.fdopen(read) as f:
            report = json.loads(f.read() or "{}")
        assert code == 0, report
        if close_in_child:
            assert report.pop("close") is True
        assert report.pop("close_after") == "None"
        assert report == dict.fromkeys(child_calls(eng, extra, stream), "ForkedProcess")

        # The parent: same workers, same segments, its slots untouched by the child.
        assert our_segments(me) == segments
        assert all(psutil.pid_exists(pid) for pid in pids)
        stats = eng.stats()
        assert [w["alive"] for w in stats["workers"]] == [True, True]
        assert [w["pid"] for w in stats["workers"]] == pids
        assert stats["accepted"] == 3 * len(HOSTS)
        assert eng.submit(batch(2, start=3)) == 2 * len(HOSTS)
        assert extra.submit(batch(1, start=5)) == len(HOSTS)
        eng.flush(timeout=30)
        rows = eng.get_many(HOSTS, "cpu")
        assert rows["count"].tolist() == [6] * len(HOSTS)
        assert rows["sum"].tolist() == [3.0] * len(HOSTS)
        assert rows["last_ts"].tolist() == [T0 + 5 * 10**9] * len(HOSTS)
        assert eng.stats()["applied"] == 6 * len(HOSTS)
        extra.release()
        stream.close()
    finally:
        eng.close()
    assert not (our_segments(me) & segments)



def run_child(body) -> tuple[int, dict]:
    """Fork; the child runs ``body()`` (a dict it reports) and ``os._exit``s
    with 0 if it returned; the parent gets (exit code, report)."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(read)
            os.write(write, json.dumps(body()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    code = wait_child(child, 60)
    with os.fdopen(read) as f:
        return code, json.loads(f.read() or "{}")


def test_child_closing_the_gateway_leaves_the_parent_serving():
    names = ("ingest", "acked", "query", "alerts")
    ports = dict(zip(names, free_ports()))
    with engine.Engine(workers=2) as eng:
        gateway = eng.serve({n: f"tcp://127.0.0.1:{p}" for n, p in ports.items()})

        def body():
            gateway.close()  # the parent's threads, sockets and slots: not the child's
            eng.close()
            return {"gateway_closed": gateway._closed, "engine_closed": eng.closed}

        code, report = run_child(body)
        assert code == 0, report
        assert report == {"gateway_closed": True, "engine_closed": True}
        assert gateway.healthy
        with Client(ports=ports, timeout=10) as client:
            assert client.send(batch(2), ack=True) == 2 * len(HOSTS)
            eng.flush(timeout=30)
            assert client.get(HOSTS[0], "cpu")["count"] == 2
        assert eng.stats()["accepted"] == 2 * len(HOSTS)


def test_a_new_engine_in_the_child_works():
    me = os.getpid()
    with engine.Engine(workers=1) as eng:
        eng.submit(batch(1))
        before = our_segments(me)

        def body():
            with pytest.raises(ForkedProcess):
                eng.get(HOSTS[0], "cpu")
            with engine.Engine(workers=1) as own:  # what the error tells the child to do
                own.submit(batch(4))
                own.flush(timeout=30)
                counts = own.get_many(HOSTS, "cpu")["count"].tolist()
                mine = our_segments(os.getpid())
            return {"counts": counts, "had": len(mine), "left": sorted(our_segments(os.getpid()))}

        code, report = run_child(body)
        assert code == 0, report
        assert report == {"counts": [4] * len(HOSTS), "had": 3, "left": []}  # ctl, rules, t0
        assert our_segments(me) == before
        eng.flush(timeout=30)
        assert eng.get_many(HOSTS, "cpu")["count"].tolist() == [1] * len(HOSTS)


# The child leaves the way a program does: SystemExit through the ``with``
# (close() in the child), then atexit (the engine's finalizer) and the
# interpreter's teardown; or, with no ``with``, the engine collected at exit.
SCRIPT = textwrap.dedent("""
    import json, os, select, sys
    import engine
    from engine.errors import ForkedProcess

    T0 = engine.DEFAULT_TS_MIN + 10**18
    hosts = [f"web-{i:02d}" for i in range(20)]

    def batch(t):
        return engine.make_events(hosts, "cpu", [T0 + t * 10**9] * len(hosts), [1.0] * len(hosts))

    def ours():
        return sorted(n for n in engine.list_segments() if n.startswith(f"ringflow-{os.getpid()}-"))

    def parent_after(eng, child, before):
        # The child's pidfd becomes readable when it exits: a wait with a
        # deadline, no polling.
        fd = os.pidfd_open(child)
        try:
            exited = select.select([fd], [], [], 60)[0]
        finally:
            os.close(fd)
        if not exited:
            os.kill(child, 9)
            os.waitpid(child, 0)
            raise SystemExit("the child did not exit")
        status = os.waitpid(child, 0)[1]
        out = {"child_code": os.waitstatus_to_exitcode(status),
               "segments_kept": ours() == before,
               "alive": [w["alive"] for w in eng.stats()["workers"]]}
        eng.submit(batch(1))
        eng.flush(timeout=30)
        out["counts"] = eng.get_many(hosts, "cpu")["count"].tolist()
        return out

    def child(eng):
        try:
            eng.submit(batch(1))
        except ForkedProcess:
            sys.exit(0)
        sys.exit(3)

    def fork_and_check(eng):
        eng.submit(batch(0))
        eng.flush(timeout=30)
        before = ours()
        pid = os.fork()
        if pid == 0:
            child(eng)
        return parent_after(eng, pid, before)

    if sys.argv[1] == "with":
        with engine.Engine(workers=2) as eng:
            out = fork_and_check(eng)
    else:
        eng = engine.Engine(workers=2)
        out = fork_and_check(eng)
        eng.close()
    out["segments_after_close"] = ours()
    print(json.dumps(out))
""")


@pytest.mark.parametrize("how", ["with", "collected"])
def test_child_normal_exit_leaves_the_parent_whole(tmp_path, how):
    script = tmp_path / "forked.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p))
    with subprocess.Popen([sys.executable, str(script), how], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            pytest.fail(f"the script did not finish: {stderr}")
    assert proc.returncode == 0, stderr
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out == {
        "child_code": 0,
        "segments_kept": True,
        "alive": [True, True],
        "counts": [2] * 20,
        "segments_after_close": [],
    }, stderr
    assert not our_segments(proc.pid)
