"""CURVE on every gateway endpoint (issue 17 item 1): keyed clients work,
anonymous and unknown keys get nothing, only admin keys reload rules, and a
bind beyond loopback without CURVE is refused."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

import engine
from engine.errors import GatewayTimeout, QueryError, SecurityError
from engine.net.client import Client
from engine.net.security import CurveServer, create_keys, load_public_key
from tests.helpers import free_ports, served_engine, wait_for

RULES = {"rule": [{"metric": "cpu", "warn": 0.8, "crit": 0.9}]}


@pytest.fixture
def keys(tmp_path):
    """Server, client, admin and stranger key pairs; clients/ and admins/
    hold the public keys the server allows."""
    out = {}
    for name, where in (("server", "server"), ("client", "clients"), ("admin", "admins"),
                        ("stranger", "strangers")):
        pub, sec = create_keys(tmp_path / where, name)
        out[name] = (pub, sec)
    out["dirs"] = (tmp_path / "clients", tmp_path / "admins")
    return out


@pytest.fixture
def curved(keys):
    curve = CurveServer.from_files(keys["server"][1], *keys["dirs"])
    with served_engine(curve=curve) as (eng, urls, _ctx):
        yield eng, urls, keys


def _client(urls, keys, name, timeout=5.0):
    if name is None:
        return Client(endpoints=urls, timeout=timeout)
    return Client(endpoints=urls, timeout=timeout, curve_secret=keys[name][1],
                  curve_server=keys["server"][0])


@pytest.mark.timeout(60)
def test_keyed_client_sends_queries_and_subscribes(curved):
    eng, urls, keys = curved
    with _client(urls, keys, "client") as c:
        with c.alerts(timeout=5.0) as feed:
            assert feed.wait_connected(5.0)
            assert c.send(engine.make_events(["web-01"], "cpu", None, [0.5]), ack=True) == 1
            eng.flush(5.0)
            assert c.get("web-01", "cpu")["last"] == 0.5
            assert isinstance(c.status(), dict)   # a fleet-wide op, via the query process
            wait_for(lambda: eng.gateway.stats()["alert_subscriptions"] >= 1, 5.0,
                     "the CURVE subscription")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("who", [None, "stranger"])
def test_anonymous_or_unknown_key_gets_nothing(curved, who):
    eng, urls, keys = curved
    with _client(urls, keys, who, timeout=0.5) as c:
        with pytest.raises(GatewayTimeout, match="CURVE"):
            c.ping()
        with pytest.raises(GatewayTimeout):
            c.send(engine.make_events(["web-01"], "cpu", None, [0.5]), ack=True)
    assert eng.gateway.stats()["accepted"] == 0


@pytest.mark.timeout(60)
def test_only_admin_keys_reload_rules_or_register_names(curved):
    eng, urls, keys = curved
    with _client(urls, keys, "client") as c:
        with pytest.raises(QueryError, match="admin") as info:
            c.reload(RULES)
        assert info.value.reply["reason"] == "forbidden"
        with pytest.raises(QueryError, match="admin"):
            c.register_names(["web-09"])
    assert len(eng.rules.rules) == 0
    with _client(urls, keys, "admin") as a:
        assert a.reload(RULES)["count"] == 1
        assert a.register_names(["web-09"]) == 1
    assert len(eng.rules.rules) == 1


def test_bind_beyond_loopback_refused_without_curve():
    with engine.Engine(workers=1) as eng:
        ports = free_ports(4)
        urls = dict(zip(("ingest", "acked", "query", "alerts"),
                        [f"tcp://127.0.0.1:{p}" for p in ports[:3]] + [f"tcp://*:{ports[3]}"]))
        with pytest.raises(SecurityError, match="insecure"):
            eng.serve(endpoints=urls)
        assert eng.gateway is None


@pytest.mark.timeout(60)
def test_insecure_bind_starts_and_warns(caplog):
    # Bound on every interface but only ever connected to on 127.0.0.1.
    ports = free_ports(4)
    urls = dict(zip(("ingest", "acked", "query", "alerts"),
                    [f"tcp://0.0.0.0:{p}" for p in ports]))
    with caplog.at_level(logging.WARNING, "ringflow.security"):
        with engine.Engine(workers=1) as eng:
            eng.serve(endpoints=urls, insecure=True)
            local = {k: v.replace("0.0.0.0", "127.0.0.1") for k, v in urls.items()}
            with Client(endpoints=local, timeout=5.0) as c:
                assert c.ping() >= 0
    assert any("insecure" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(60)
def test_serve_cli_refuses_a_public_host_without_curve(tmp_path):
    base = free_ports(1)[0]
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "serve", "--host", "tcp://*", "--ports", str(base),
         "--data-dir", "none", "--workers", "1"],
        capture_output=True, text=True, timeout=30, cwd=os.getcwd())
    assert proc.returncode != 0
    assert "CURVE" in proc.stderr and "--insecure" in proc.stderr


@pytest.mark.timeout(90)
def test_serve_cli_with_insecure_in_its_config_starts_and_warns(tmp_path):
    """``insecure = true`` under [gateway] of the config file: serve binds
    every interface, says so, and still serves (connected on loopback)."""
    base = free_ports(4)[0]
    conf = tmp_path / "serve.toml"
    conf.write_text(f'[gateway]\nhost = "tcp://0.0.0.0"\nports = {base}\ninsecure = true\n'
                    '[engine]\nworkers = 1\ndata_dir = "none"\n')
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--config", str(conf),
                             "--log-format", "logfmt"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            if "ringflow serving on" in line:
                break
        text = "".join(out)
        assert "ringflow serving on" in text, text
        assert "WARNING" in text and "--insecure" in text
        with Client(ports={"ingest": base, "acked": base + 1, "query": base + 2,
                           "alerts": base + 3}, timeout=5.0) as c:
            assert c.ping() >= 0
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0


def test_keys_command_writes_a_pair_and_refuses_to_overwrite(tmp_path):
    run = [sys.executable, "-m", "engine", "keys", str(tmp_path), "--name", "web"]
    first = subprocess.run(run, capture_output=True, text=True, timeout=30)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "web.key").exists() and (tmp_path / "web.key_secret").exists()
    assert os.stat(tmp_path / "web.key_secret").st_mode & 0o077 == 0
    key = load_public_key(tmp_path / "web.key")
    again = subprocess.run(run, capture_output=True, text=True, timeout=30)
    assert again.returncode != 0 and "--force" in again.stderr
    assert load_public_key(tmp_path / "web.key") == key
    forced = subprocess.run([*run, "--force"], capture_output=True, text=True, timeout=30)
    assert forced.returncode == 0
    assert load_public_key(tmp_path / "web.key") != key


@pytest.mark.timeout(90)
def test_cli_client_with_and_without_keys(curved):
    eng, urls, keys = curved
    ports = [u.rsplit(":", 1)[1] for u in (urls["ingest"], urls["acked"], urls["query"],
                                            urls["alerts"])]
    base = [sys.executable, "-m", "engine", "stats", "--ports", ",".join(ports)]
    ok = subprocess.run([*base, "--curve-secret", str(keys["client"][1]),
                         "--curve-server", str(keys["server"][0])],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    anon = subprocess.run([*base, "--timeout", "1"], capture_output=True, text=True, timeout=60)
    assert anon.returncode == 2
    assert "CURVE" in anon.stderr
