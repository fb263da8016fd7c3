"""The ``ringflow`` command line against a real server: ``serve`` runs as a
subprocess on free ports; ``send``, ``query`` and ``stats`` run as
subprocesses or through :func:`engine.cli.main.main` in this process.  The
health commands (``status``, ``alerts``, ``reload``, SIGHUP) are in
test_health_cli.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

import engine
from engine.cli.main import build_parser, main
from engine.cli.serve import resolve_settings
from tests.helpers import free_ports, wait_for

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
READY = "ringflow serving on "
SMALL = ["--workers", "2", "--ring-capacity", "4096", "--table-capacity", "4096", "--quiet",
         "--data-dir", "none"]


def ports_arg(ports: list[int]) -> str:
    return ",".join(map(str, ports))


def server_segments(pid: int) -> list[str]:
    return [n for n in engine.list_segments() if n.startswith(f"ringflow-{pid}-")]


def _env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def ringflow(*argv: str, input: str | None = None,
             timeout: float = 30) -> subprocess.CompletedProcess:
    """``python -m engine ARGV`` as a subprocess."""
    return subprocess.run([sys.executable, "-m", "engine", *argv], input=input,
                          capture_output=True, text=True, timeout=timeout, env=_env(), cwd=REPO)


class Server:
    """``python -m engine serve`` in a subprocess, its output collected by a
    thread."""

    def __init__(self, args: list[str], ports: list[int] | None, new_session: bool = False):
        self.ports = ports
        argv = [sys.executable, "-m", "engine", "serve", *args]
        if "--data-dir" not in args:
            # In memory unless a test asks for a journal: two servers of
            # one test must not share ./ringflow-data.
            argv += ["--data-dir", "none"]
        if ports is not None:
            argv += ["--ports", ports_arg(ports)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=_env(), cwd=REPO,
                                     start_new_session=new_session)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith(READY):
                self.ready.set()
        self.ready.set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, timeout: float = 30) -> None:
        assert self.ready.wait(timeout), f"server not ready in {timeout}s:\n{self.output}"
        assert self.proc.poll() is None, f"server exited {self.proc.returncode}:\n{self.output}"

    def worker_pids(self) -> list[int]:
        m = re.search(r"workers \(pids ([\d, ]+)\)", self.output)
        assert m, self.output
        return [int(p) for p in m.group(1).split(",")]

    def stop(self, sig: int = signal.SIGTERM, group: bool = False, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._reader.join(10)
        return rc

    def final(self) -> dict:
        m = re.search(r"^final: (.*)$", self.output, re.M)
        assert m, self.output
        return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


@pytest.fixture
def serve():
    """Start servers; each is stopped (SIGTERM) at the end of the test and
    must leave no segment and no worker behind."""
    started: list[Server] = []

    def start(*args: str, ports: list[int] | None = None, new_session: bool = False,
              default_ports: bool = True) -> Server:
        if ports is None and default_ports:
            ports = free_ports()
        srv = Server([*SMALL, *args], ports, new_session)
        started.append(srv)
        srv.wait_ready()
        return srv

    yield start
    for srv in started:
        workers = srv.worker_pids() if "workers (pids" in srv.output else []
        srv.stop(signal.SIGTERM)
        assert_clean(srv, workers)


def assert_clean(srv: Server, workers: list[int]) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (
            server_segments(srv.pid) or any(_alive(p) for p in workers)):
        time.sleep(0.05)
    assert not server_segments(srv.pid), f"segments left: {server_segments(srv.pid)}"
    assert not [p for p in workers if _alive(p)], "worker processes left running"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """:func:`engine.cli.main.main` in this process: (exit code, stdout, stderr)."""
    try:
        rc = main(list(argv))
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


# --- help and usage errors (no server) ----------------------------------------

@pytest.mark.parametrize("command", ["serve", "send", "query", "status", "alerts", "reload",
                                     "stats", "demo"])
def test_every_command_has_help(capsys, command):
    rc, out, _ = run_main(capsys, command, "--help")
    assert rc == 0
    assert f"usage: ringflow {command}" in out
    # A description and per-option help text.
    assert "--help" in out and len(out.splitlines()) > 8
    if command != "demo":
        assert "--host" in out and "--ports" in out
    if command == "serve":
        assert "[engine]" in out and "[gateway]" in out and "status_interval" in out
        assert "[health]" in out and "--rules" in out and "SIGHUP" in out
        assert "ewma-alpha" not in out and "ewma_alpha" not in out
    if command in ("query", "status", "alerts", "reload"):
        assert "examples:" in out and f"ringflow {command}" in out.split("examples:")[1]


@pytest.mark.parametrize("argv, message", [
    (["send", "--rate", "-5"], "must be a positive number"),
    (["send", "--ports", "1,2"], "one base port or 4 ports"),
    (["send", "--ports", "70000"], "1..65535"),
    (["send", "--seconds", "1", "--events", "5"], "not allowed with argument"),
    (["send", "-", "--entities", "3"], "--entities applies to synthetic load only"),
    (["send", "/nonexistent/events.jsonl"], "cannot open /nonexistent/events.jsonl"),
    (["query"], "the following arguments are required: ENTITY"),
    (["query", "web-1", "cpu", "--ids"], "must be integers"),
    (["stats", "--timeout", "0"], "must be a positive number"),
    (["serve", "--workers", "0"], "must be a positive integer"),
    (["serve", "--wait", "nap"], "invalid choice"),
    (["serve", "--host", "tcp://127.0.0.1:7710"], "carries a port"),
    (["serve", "--ports", "7710,7710,7711,7712"], "four different ports"),
    (["serve", "--ring-capacity", "8"], "ring_capacity must be in 16..2**26"),
    (["serve", "--config", "/nonexistent/ringflow.toml"], "cannot read config file"),
    (["serve", "--ewma-alpha", "0.1"], "unrecognized arguments: --ewma-alpha"),
    (["serve", "--window", "5x"], "unknown unit 'x'"),
    (["serve", "--half-life", "-1"], "must not be negative"),
    (["serve", "--window", "10s", "--lateness", "1m"], "must not exceed the window"),
    (["serve", "--rules", "/nonexistent/rules.toml"], "rules file not found"),
    (["query", "web-1", "cpu", "--metric", "mem"], "give the metric once"),
    (["status", "--limit", "0"], "must be a positive integer"),
    (["alerts", "--status", "CRIT,BAD"], "statuses are a comma-separated list"),
    (["alerts", "--count", "0"], "must be a positive integer"),
    (["reload", "--rules", "/nonexistent/rules.toml"], "cannot read /nonexistent/rules.toml"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_a_usage_error(capsys, argv, message):
    rc, _, err = run_main(capsys, *argv)
    assert rc == 2
    assert "error:" in err and message in err
    assert "Traceback" not in err


# --- TOML config -----------------------------------------------------------------

def test_toml_values_and_flag_precedence(tmp_path):
    cfg = tmp_path / "ringflow.toml"
    (tmp_path / "rules.toml").write_text('[[rule]]\nmetric = "disk"\ncrit = 0.9\n')
    cfg.write_text(
        '[engine]\nworkers = 3\nwait = "sleep"\nring_capacity = 1024\nwindow = 30\n'
        'half_life = "2500ms"\nviews = [1, 4, 16]\nalert_capacity = 64\ntick = "100ms"\n'
        '[health]\nrules = "rules.toml"\n'
        '[gateway]\nhost = "tcp://127.0.0.1"\nports = 20000\nacked_port = 20100\n'
        'ack_timeout = 1.5\n[serve]\nquiet = true\n')
    parser = build_parser()
    s = resolve_settings(parser.parse_args(["serve", "--config", str(cfg)]))
    assert (s.workers, s.wait, s.ring_capacity, s.ack_timeout, s.quiet) == (
        3, "sleep", 1024, 1.5, True)
    # Durations in their shortest exact spelling; the rules file relative to
    # the config file, made absolute (SIGHUP re-reads it from anywhere).
    assert (s.window, s.half_life, s.tick, s.lateness) == ("30s", "2500ms", "100ms", None)
    assert (s.views, s.alert_capacity) == ((1, 4, 16), 64)
    assert s.rules == str(tmp_path / "rules.toml")
    ec = s.engine_config()
    assert (ec.window_ns, ec.half_life_ns, ec.tick_ns, ec.lateness_ns) == (
        30 * 10**9, 2_500_000_000, 100_000_000, 10 * 10**9)
    assert [r.metric for r in ec.health_rules.rules] == ["disk"]
    assert not hasattr(s, "ewma_alpha")
    assert s.ports == {"ingest": 20000, "acked": 20100, "query": 20002, "alerts": 20003}
    assert s.table_capacity == engine.EngineConfig.table_capacity      # default kept

    s = resolve_settings(parser.parse_args(
        ["serve", "--config", str(cfg), "--workers", "1", "--ports", "21000",
         "--query-port", "21500", "--no-quiet", "--wait", "block"]))
    assert (s.workers, s.wait, s.ring_capacity, s.quiet) == (1, "block", 1024, False)
    # --ports wins over the file's ports and acked_port; --query-port over --ports.
    assert s.ports == {"ingest": 21000, "acked": 21001, "query": 21500, "alerts": 21003}
    assert s.origin["workers"] == "flag" and s.origin["ring_capacity"] == str(cfg)

    other = tmp_path / "other.toml"
    other.write_text('[[rule]]\nmetric = "cpu"\nwarn = 0.8\n')
    s = resolve_settings(parser.parse_args(
        ["serve", "--config", str(cfg), "--window", "1m", "--lateness", "0",
         "--half-life", "0.5", "--rules", str(other)]))
    assert (s.window, s.lateness, s.half_life, s.rules) == ("1m", "0s", "500ms", str(other))
    assert s.origin["window"] == "flag" and s.origin["views"] == str(cfg)


@pytest.mark.parametrize("body, message", [
    ("[engine]\nwrokers = 2\n", "unknown key 'wrokers' in [engine]"),
    ("[gateway]\nport = 7710\n", "unknown key 'port' in [gateway]"),
    ("[engnie]\nworkers = 2\n", "unknown section 'engnie'"),
    ("workers = 2\n", "unknown key 'workers'"),
    ("[engine]\nworkers = \"two\"\n", "[engine] workers must be a positive integer"),
    ("[engine]\nwait = \"nap\"\n", "[engine] wait must be one of"),
    ("[gateway]\nports = [1, 2]\n", "[gateway] ports must be one base port or 4 ports"),
    ("[serve]\nquiet = 1\n", "[serve] quiet must be true or false"),
    ("[engine\nworkers = 2\n", "is not valid TOML"),
    ("[engine]\newma_alpha = 0.1\n", "unknown key 'ewma_alpha' in [engine]"),
    ("[engine]\nwindow = \"5x\"\n", "[engine] window must be a duration: unknown unit"),
    ("[engine]\nhalf_life = -1\n", "[engine] half_life must not be negative"),
    ("[engine]\nviews = [1, 5]\n", "[engine] views must be 3 positive integers"),
    ("[health]\nrules = \"missing.toml\"\n", "[health] rules rules file not found"),
    ("[health]\nrule = \"x.toml\"\n", "unknown key 'rule' in [health]"),
])
def test_toml_errors_name_the_key(capsys, tmp_path, body, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    rc, _, err = run_main(capsys, "serve", "--config", str(cfg))
    assert rc == 2
    assert message in err and str(cfg) in err
    assert "Traceback" not in err


def test_unknown_key_exits_2_as_a_process(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[engine]\nworkers = 2\nshards = 4\n")
    r = ringflow("serve", "--config", str(cfg), timeout=20)
    assert r.returncode == 2, r.stderr
    assert "unknown key 'shards' in [engine]" in r.stderr
    assert "Traceback" not in r.stderr


# --- against a running server ---------------------------------------------------

def test_config_file_then_flags_for_a_real_server(serve, tmp_path):
    ports = free_ports()
    cfg = tmp_path / "ringflow.toml"
    cfg.write_text(f"[engine]\nworkers = 1\n[gateway]\nports = {ports}\n")
    srv = serve("--config", str(cfg), "--workers", "3", default_ports=False)
    assert "3 workers" in srv.output                         # the flag won
    for name, port in zip(("ingest", "acked", "query", "alerts"), ports):
        assert f"{name}=tcp://127.0.0.1:{port}" in srv.output  # the file's ports
    assert len(srv.worker_pids()) == 3


def test_send_synthetic_then_query_and_stats(serve, capsys):
    srv = serve()
    p = ports_arg(srv.ports)
    r = ringflow("send", "--ports", p, "--seconds", "1.5", "--entities", "50", "--ack",
                 "--batch", "2048")
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"sent ([\d,]+) events in ([\d,]+) messages .*gateway accepted ([\d,]+), "
                  r"refused 0 records", r.stdout)
    assert m, r.stdout
    sent, accepted = (int(m.group(i).replace(",", "")) for i in (1, 3))
    assert sent == accepted > 0
    assert "events/s" in r.stdout

    # Fire-and-forget, a fixed number of events, at a set rate.
    r = ringflow("send", "--ports", p, "--events", "3000", "--rate", "20000", "--entities", "50")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sent 3,000 events" in r.stdout

    def stats_once_applied():
        rc, out, _ = run_main(capsys, "stats", "--ports", p, "--json")
        assert rc == 0
        stats = json.loads(out)
        return stats if stats["applied"] >= accepted + 3000 else None

    stats = wait_for(stats_once_applied, 10, "every event sent applied", every=0.1)
    assert stats["applied"] == accepted + 3000
    assert stats["series"] == 50 * 5
    assert len(stats["workers"]) == 2
    assert stats["gateway"]["accepted"] == accepted + 3000

    rc, out, _ = run_main(capsys, "stats", "--ports", p)
    assert rc == 0
    assert "workers" in out and "gateway" in out and f"{accepted + 3000:,}" in out

    rc, out, _ = run_main(capsys, "query", "web-0007", "--ports", p, "--json")
    assert rc == 0
    summary = json.loads(out)
    # No rules: every series OK (or STALE, never here: no ttl either).
    assert (summary["entity"], summary["status"], summary["since"]) == ("web-0007", "OK", None)
    rows = summary["series"]
    assert sorted(r["metric"] for r in rows) == ["cpu", "disk", "errors", "latency_ms", "mem"]
    assert all(r["entity"] == "web-0007" and r["count"] > 0 for r in rows)
    assert sum(r["count"] for r in rows) > 0

    rc, out, _ = run_main(capsys, "query", "web-0007", "latency_ms", "--ports", p, "--json")
    row = json.loads(out)
    assert rc == 0 and row["metric"] == "latency_ms" and row["min"] <= row["last"] <= row["max"]
    assert row["last_ts"] <= time.time_ns()   # synthetic event times follow the clock

    r = ringflow("query", "web-0007", "--ports", p)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("web-0007: OK\n")
    for name in ("cpu", "disk", "errors", "latency_ms", "mem", "count", "ewma", "status",
                 "win mean", "p50", "p95", "p99", "view1", "view5", "view15"):
        assert name in r.stdout

    rc, out, err = run_main(capsys, "query", "web-9999", "--ports", p)
    assert rc == 1 and "no entity web-9999" in err
    rc, out, err = run_main(capsys, "query", "web-9999", "--ports", p, "--json")
    assert rc == 1 and json.loads(out) is None
    rc, out, err = run_main(capsys, "query", "web-0007", "swap", "--ports", p, "--json")
    assert rc == 1 and "no series web-0007 swap" in err and json.loads(out) is None


JSON_LINES = """\
{"entity": "db-1", "metric": "cpu", "value": 0.5, "ts": 1732300000000000000}
{"entity": "db-1", "metric": "cpu", "value": 0.7, "ts": 1732300001000000000}
{"entity": "db-1", "metric": "cpu", "value":
{"entity": "db-1", "metric": "mem"}

{"entity": "db-1", "metric": "mem", "value": 0.25}
{"entity": "db-2", "metric": "cpu", "value": NaN}
{"entity": "db-2", "metric": "cpu", "value": 1, "host": "x"}
["db-2", "cpu", 1]
{"entity": "db-2", "metric": "cpu", "value": "high"}
{"entity": "db-2", "metric": "cpu", "value": 0.9}
"""


def test_send_json_lines_file_and_stdin(serve, capsys, tmp_path):
    srv = serve()
    p = ports_arg(srv.ports)
    path = tmp_path / "events.jsonl"
    path.write_text(JSON_LINES)
    r = ringflow("send", str(path), "--ports", p, "--ack", "--batch", "2")
    assert r.returncode == 1, r.stdout + r.stderr
    bad = {int(m) for m in re.findall(rf"{re.escape(str(path))}:(\d+): ", r.stderr)}
    assert bad == {3, 4, 7, 8, 9, 10}
    assert "missing field 'value'" in r.stderr and "unknown field(s) host" in r.stderr
    assert "value must be finite" in r.stderr
    assert "sent 4 events" in r.stdout and "gateway accepted 4" in r.stdout
    assert "11 lines read, 6 malformed (skipped)" in r.stdout
    assert "Traceback" not in r.stderr

    rc, out, _ = run_main(capsys, "query", "db-1", "cpu", "--ports", p, "--json")
    row = json.loads(out)
    assert (row["count"], row["last"], row["min"], row["max"]) == (2, 0.7, 0.5, 0.7)
    assert row["last_ts"] == 1732300001000000000

    # The same through stdin, every line good: exit 0.
    good = "\n".join(line for line in JSON_LINES.splitlines()[:2]) + "\n"
    r = ringflow("send", "-", "--ports", p, "--ack", input=good)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sent 2 events" in r.stdout and "0 malformed" in r.stdout
    rc, out, _ = run_main(capsys, "query", "db-1", "cpu", "--ports", p, "--json")
    assert json.loads(out)["count"] == 4

    # A slow producer on stdin: each line goes out without waiting for a
    # full batch or the end of the input.
    proc = subprocess.Popen([sys.executable, "-m", "engine", "send", "-", "--ports", p],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
    try:
        proc.stdin.write('{"entity": "db-3", "metric": "cpu", "value": 0.125}\n')
        proc.stdin.flush()
        def query_db3():
            rc, out, _ = run_main(capsys, "query", "db-3", "cpu", "--ports", p, "--json")
            return json.loads(out) if rc == 0 else None

        assert wait_for(query_db3, 15, "db-3 cpu known", every=0.05)["last"] == 0.125
        assert proc.poll() is None              # still reading its input
    finally:
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, out + err
    assert "sent 1 events" in out

    # Fire-and-forget from a file, in-process: the events arrive.
    rc, out, err = run_main(capsys, "send", str(path), "--ports", p)
    assert rc == 1 and "6 malformed" in out
    def db2_count():
        rc, out, _ = run_main(capsys, "query", "db-2", "cpu", "--ports", p, "--json")
        return rc == 0 and json.loads(out)["count"] == 2

    wait_for(db2_count, 10, "both db-2 cpu events applied", every=0.05)


def test_no_server_is_exit_2(capsys):
    p = ports_arg(free_ports())
    for argv in (["query", "web-1"], ["query", "web-1", "cpu", "--json"], ["stats"],
                 ["send", "--events", "10"]):
        t0 = time.monotonic()
        rc, _, err = run_main(capsys, *argv, "--ports", p, "--timeout", "0.3")
        assert rc == 2, (argv, err)
        assert "no answer from the gateway" in err and "Traceback" not in err
        assert time.monotonic() - t0 < 5


def test_port_in_use_is_a_clear_error(serve):
    srv = serve()
    r = ringflow("serve", *SMALL, "--ports", ports_arg(srv.ports), timeout=30)
    assert r.returncode == 1
    assert "cannot bind" in r.stderr and "Traceback" not in r.stderr


# --- shutdown -------------------------------------------------------------------

@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGINT to the process group",
                                 "SIGTERM to the process group"])
def test_signal_drains_and_leaves_nothing(serve, how):
    from engine.net.client import Client
    from engine.net.gateway import endpoint_urls

    group = "group" in how
    sig = getattr(signal, how.split()[0])
    srv = serve(new_session=group)
    workers = srv.worker_pids()
    urls = endpoint_urls("tcp://127.0.0.1", dict(zip(("ingest", "acked", "query", "alerts"),
                                                     srv.ports)))
    ev = np.zeros(2000, engine.EVENT_DTYPE)
    ev["key"] = np.arange(2000, dtype=np.uint64) % 300
    ev["metric"] = 1
    ev["value"] = 1.0
    acked = [0]
    stop = threading.Event()
    sent_some = threading.Event()

    def sender() -> None:
        with Client(endpoints=urls, timeout=2.0) as c:
            while not stop.is_set():
                ev["ts"] = time.time_ns()
                try:
                    acked[0] += c.send(ev, ack=True)
                except Exception:
                    return              # the gateway stopped reading
                if acked[0] >= 20_000:
                    sent_some.set()

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    assert sent_some.wait(20), srv.output
    acked_before = acked[0]
    rc = srv.stop(sig, group=group)
    stop.set()
    t.join(10)
    assert rc == 0, srv.output
    assert f"received {sig.name}" in srv.output
    assert "ringflow stopped cleanly" in srv.output
    final = srv.final()
    # Everything acked, before the signal or while draining, was applied.
    assert final["applied"] >= acked[0] >= acked_before > 0
    assert final["applied"] == final["accepted"] and final["pending"] == 0
    assert final["series"] == 300
    assert_clean(srv, workers)


def test_sighup_to_the_group_reloads_and_stops_nothing(serve):
    """SIGHUP no longer stops the server; without --rules there is nothing
    to re-read, which it says.  The workers never see the signal."""
    srv = serve(new_session=True)
    workers = srv.worker_pids()
    os.killpg(srv.pid, signal.SIGHUP)
    wait_for(lambda: "received SIGHUP" in srv.output, 10, f"SIGHUP reported:\n{srv.output}")
    assert "received SIGHUP: no rules file to re-read" in srv.output, srv.output
    assert srv.proc.poll() is None and all(_alive(p) for p in workers)
    r = ringflow("stats", "--ports", ports_arg(srv.ports), "--json")
    assert r.returncode == 0 and all(w["alive"] for w in json.loads(r.stdout)["workers"])
    assert srv.stop(signal.SIGTERM) == 0 and "ringflow stopped cleanly" in srv.output
    assert_clean(srv, workers)


def test_a_killed_worker_is_replaced_and_serve_goes_on(serve):
    """SIGKILL of a worker: serve says so, replaces it and keeps serving;
    a later SIGTERM still stops it cleanly with exit 0."""
    srv = serve()
    workers = srv.worker_pids()
    os.kill(workers[1], signal.SIGKILL)
    wait_for(lambda: "serves its shard again" in srv.output, 20, "the replacement")
    assert srv.proc.poll() is None, srv.output
    assert f"worker 1 (pid {workers[1]}) was killed by signal 9 (SIGKILL)" in srv.output
    assert "ENGINE worker 1: ok -> down" in srv.output
    new = int(re.search(r"worker 1 restarted as pid (\d+)", srv.output).group(1))
    assert srv.stop() == 0, srv.output
    assert "ringflow stopped cleanly" in srv.output and "Traceback" not in srv.output
    assert_clean(srv, [*workers, new])
