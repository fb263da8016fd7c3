"""The Prometheus endpoint (engine.observe.metrics) on a live engine and
gateway: real HTTP GETs on 127.0.0.1, parsed by prometheus_client's parser."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest

import engine
from engine.net.client import Client
from engine.observe.metrics import MetricsError, MetricsServer, check_bind
from tests.helpers import served_engine, wait_for

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

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
