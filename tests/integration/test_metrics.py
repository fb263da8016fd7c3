"""The Prometheus endpoint (engine.observe.metrics) on a live engine and
gateway: real HTTP GETs on 127.0.0.1, parsed by prometheus_client's parser."""

from __future__ import annotations

import json
import re
import signal
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import engine
from engine.net.client import Client
from engine.observe.metrics import MetricsError, MetricsServer, check_bind
from tests.helpers import served_engine, wait_for
from tests.integration.test_cli import ringflow, serve  # noqa: F401 - fixture

TS = 1_732_300_000_000_000_000


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def values(fam, name=None) -> dict:
    return {tuple(sorted(s.labels.items())): s.value for s in fam.samples
            if name is None or s.name == name}


@pytest.mark.timeout(60)
def test_applied_counter_labels_and_query_histogram():
    n = 5_000
    with served_engine() as (eng, urls, _ctx):
        m = MetricsServer(eng, eng._gateway, port=0)
        try:
            ports = {k: int(u.rsplit(":", 1)[1]) for k, u in urls.items()}
            with Client(ports=ports) as c:
                keys = np.arange(n) % 50 + 1
                c.send(engine.make_events(keys, "cpu", TS + np.arange(n),
                                          np.arange(n, dtype=np.float64)))
                wait_for(lambda: eng.stats()["applied"] == n, 20, "events applied")
                fams = scrape(m.url)
                applied = values(fams["ringflow_events_applied"],
                                 "ringflow_events_applied_total")
                assert sum(applied.values()) == n
                assert {k[0][1] for k in applied} == {"0", "1"}   # worker labels
                assert fams["ringflow_events_applied"].type == "counter"
                rejected = values(fams["ringflow_events_rejected"])
                assert {dict(k)["reason"] for k in rejected} >= {"invalid", "table_full"}
                state = values(fams["ringflow_engine_state"])
                assert state[(("state", "ok"),)] == 1.0
                assert values(fams["ringflow_gateway_messages"])[()] >= 1
                # JSON queries (binary lookups are answered in C, untimed),
                # then their latencies are in the histogram.
                c.status()
                c.stats()
                fams = scrape(m.url)
                hist = fams["ringflow_query_duration_seconds"]
                assert hist.type == "histogram"
                counts = {dict(s.labels)["path"]: s.value for s in hist.samples
                          if s.name.endswith("_count")}
                assert counts["local"] + counts["fleet"] >= 2
        finally:
            m.close()


def test_non_loopback_needs_insecure():
    check_bind("127.0.0.1", False)
    check_bind("::1", False)
    check_bind("localhost", False)
    check_bind("0.0.0.0", True)
    with pytest.raises(MetricsError, match="--insecure"):
        check_bind("0.0.0.0", False)
    with pytest.raises(MetricsError, match="--insecure"):
        check_bind("10.1.2.3", False)


@pytest.mark.timeout(60)
def test_serve_metrics_port_and_json_logs(serve):  # noqa: F811 - the fixture
    """``ringflow serve --metrics-port 0 --log-format json``: the endpoint
    answers, and every event line (status, signal) is one JSON object."""
    srv = serve("--metrics-port", "0", "--log-format", "json", "--no-quiet",
                "--status-interval", "0.2")
    url = re.search(r"metrics HTTP\s+(http://\S+)", srv.output).group(1)
    assert "127.0.0.1" in url
    fams = scrape(url)
    assert fams["ringflow_events_applied"].type == "counter"
    wait_for(lambda: '"msg": "applied' in srv.output, 10, f"a status event:\n{srv.output}")
    assert srv.stop(signal.SIGTERM) == 0, srv.output
    events = [json.loads(x) for x in srv.lines if x.startswith("{")]
    status = [e for e in events if e.get("event") == "status"]
    assert status and status[0]["level"] == "info" and status[0]["applied"] == 0
    assert any(e["msg"].startswith("received SIGTERM") for e in events)
    assert "ringflow stopped cleanly" in srv.output


def test_serve_refuses_non_loopback_metrics_without_insecure():
    r = ringflow("serve", "--data-dir", "none", "--metrics-port", "0",
                 "--metrics-host", "0.0.0.0")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--insecure" in r.stderr and "Traceback" not in r.stderr
