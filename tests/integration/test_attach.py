"""Discovery and read-only attach (issue 17, items 4 and 6): an engine's
record, ``engine.attach`` from another process while ingest runs,
``ringflow ls`` and ``ringflow top --once`` against a real server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import engine
from engine.core.discovery import read_info, running_engines
from engine.errors import AttachError
from tests.helpers import served_engine, wait_for

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
HOSTS = [f"host-{i:03d}" for i in range(64)]

# The attached reader, in its own interpreter: reads in a loop until a line
# arrives on stdin, then prints the rows of HOSTS once more and its count.
READER = """
import json, select, sys
import engine
hosts = json.loads(sys.argv[2])
with engine.attach(int(sys.argv[1])) as view:
    reads = 0
    print("looping", flush=True)
    while not select.select([sys.stdin], [], [], 0)[0]:
        view.get_many(hosts, "cpu")
        reads += 1
    sys.stdin.readline()
    rows = view.get_many(hosts, "cpu")
    print(json.dumps({"reads": reads, "last": rows["last"].tolist(),
                      "count": rows["count"].tolist(), "snapshot": len(view.snapshot())}))
"""


def _env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _submit(eng, value: float) -> None:
    eng.submit(engine.make_events(HOSTS, "cpu", None, np.full(len(HOSTS), value)))


def test_record_published_and_removed():
    with engine.Engine(workers=2):
        rec = read_info(os.getpid())
        assert rec["pid"] == os.getpid() and rec["workers"] == 2 and rec["state"] == "ok"
        assert len(rec["tables"]) == 2 and rec["endpoints"] is None
        assert any(r["pid"] == os.getpid() for r in running_engines())
    assert read_info(os.getpid()) is None
    assert not any(r["pid"] == os.getpid() for r in running_engines())


def test_attach_from_another_process_while_ingest_runs():
    with served_engine() as (eng, urls, _ctx):
        assert read_info(os.getpid())["endpoints"] == urls
        _submit(eng, 0.0)
        eng.flush()
        stop = threading.Event()
        sent = [0]

        def ingest():
            while not stop.is_set():
                sent[0] += 1
                _submit(eng, float(sent[0]))

        proc = subprocess.Popen([sys.executable, "-c", READER, str(os.getpid()),
                                 json.dumps(HOSTS)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=_env(), cwd=REPO)
        thread = threading.Thread(target=ingest)
        try:
            assert proc.stdout.readline().strip() == "looping", proc.stderr.read()
            thread.start()
            # Ingest goes on while the attached process reads in a loop.
            start = eng.stats()["applied"]
            wait_for(lambda: eng.stats()["applied"] >= start + 50 * len(HOSTS), 20,
                     "ingest progressing beside the attached reader")
            assert proc.poll() is None
        finally:
            stop.set()
            if thread.is_alive():
                thread.join(10)
        eng.flush()
        out, err = proc.communicate("done\n", timeout=30)
        assert proc.returncode == 0, err
        got = json.loads(out.strip().splitlines()[-1])
        rows = eng.get_many(HOSTS, "cpu")
        assert got["reads"] > 0
        assert got["last"] == rows["last"].tolist() == [float(sent[0])] * len(HOSTS)
        assert got["count"] == rows["count"].tolist()
        assert got["snapshot"] == len(eng.snapshot())


def test_attach_survives_worker_restart_and_refuses_after_close():
    with engine.Engine(workers=2) as eng:
        _submit(eng, 1.0)
        eng.flush()
        view = engine.attach(os.getpid())
        assert view.get(HOSTS[0], "cpu")["last"] == 1.0
        pid = eng.pids[0]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: eng.state == "ok" and eng.pids[0] != pid, 20, "worker replaced")
        _submit(eng, 2.0)
        eng.flush()
        assert view.get_many(HOSTS, "cpu")["last"].tolist() == [2.0] * len(HOSTS)
        assert view.alive
    assert not view.alive
    with pytest.raises(AttachError, match="closed or died"):
        view.get(HOSTS[0], "cpu")
    view.close()
    with pytest.raises(AttachError, match="view is closed"):
        view.snapshot()  # closed view: refused as well


def test_attach_errors():
    with pytest.raises(AttachError, match="publishes no ringflow engine record"):
        engine.attach(os.getpid())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with pytest.raises(AttachError, match="has exited"):
        engine.attach(dead.pid)
    with pytest.raises(AttachError, match="no running engine named"):
        engine.attach("no-such-engine-name")
    with engine.Engine(workers=1):
        rec = read_info(os.getpid())
        from engine.query.attach import AttachedEngine

        with pytest.raises(AttachError, match="rows of"):
            AttachedEngine({**rec, "state_itemsize": rec["state_itemsize"] + 8})


def _ringflow(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *argv], capture_output=True,
                          text=True, timeout=30, env=_env(), cwd=REPO)


def test_ls_lists_running_not_closed():
    with served_engine() as (_eng, urls, _ctx):
        out = _ringflow("ls", "--json")
        assert out.returncode == 0, out.stderr
        mine = [r for r in json.loads(out.stdout) if r["pid"] == os.getpid()]
        assert len(mine) == 1 and mine[0]["endpoints"] == urls
        table = _ringflow("ls")
        assert str(os.getpid()) in table.stdout and urls["query"] in table.stdout
    out = _ringflow("ls", "--json")
    assert os.getpid() not in [r["pid"] for r in json.loads(out.stdout)]


RULES = """
[[rule]]
metric = "cpu"
warn = 0.8
crit = 0.9
"""


def test_top_once_frame():
    with served_engine({"rules": RULES}) as (eng, urls, _ctx):
        eng.register_names(entities=["web-hot", "web-cool"], metrics=["cpu"])
        eng.submit(engine.make_events(["web-hot", "web-cool"], "cpu", None, [0.99, 0.1]))
        eng.flush()
        ports = ",".join(u.rsplit(":", 1)[1] for u in urls.values())
        out = _ringflow("top", "--once", "--interval", "0.2", "--ports", ports)
        assert out.returncode == 0, out.stderr
        frame = out.stdout
        assert "ringflow top" in frame and urls["query"] in frame
        assert "state ok" in frame and "series 2" in frame
        for heading in ("applied", "stale", "late", "table", "ring", "restarts"):
            assert heading in frame
        worst = frame[frame.index("worst entities"):]
        assert "web-hot" in worst and "CRIT" in worst and "web-cool" not in worst
