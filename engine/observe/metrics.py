"""Prometheus metrics of a running server (``ringflow serve --metrics-port``).

Nothing here touches the ingest hot path: a custom collector reads
:meth:`engine.Engine.stats` and :meth:`engine.net.gateway.Gateway.stats` when
Prometheus scrapes, and the only thing recorded as it happens is the latency
of queries (one histogram observation per query, in the gateway's query
thread; queries are not the ingest path).  docs/metrics.md lists every metric.
"""

from __future__ import annotations

import ipaddress

from ..errors import EngineError

#: Bucket bounds (seconds) of the query latency histogram: from a 50 us
#: lookup to a multi-second fleet-wide scan.
QUERY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_STATES = ("ok", "recovering", "degraded")
_INSTALL = "pip install prometheus_client"


class MetricsError(EngineError):
    """The metrics endpoint cannot start (missing library, refused bind)."""


def _client():
    try:
        import prometheus_client
    except ImportError:
        raise MetricsError(f"--metrics-port needs prometheus_client: {_INSTALL}") from None
    return prometheus_client


def check_bind(host: str, insecure: bool) -> None:
    """Refuse a non-loopback metrics address unless ``insecure``.

    Raises
    ------
    MetricsError
        ``host`` is not a loopback address or ``localhost`` and ``insecure``
        is false: the endpoint has no authentication.
    """
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not insecure:
        raise MetricsError(f"--metrics-host {host} is not a loopback address; the metrics "
                           "endpoint has no authentication: pass --insecure to bind it")


class RingflowCollector:
    """A prometheus_client collector reading the engine's and gateway's
    counters at scrape time.

    Parameters
    ----------
    engine : engine.Engine
        The served engine.
    gateway : engine.net.gateway.Gateway or None
        Its gateway, for message, rejection and query metrics.
    """

    def __init__(self, engine, gateway=None) -> None:
        self.engine = engine
        self.gateway = gateway

    def describe(self):
        # Empty: registering does not call collect() (which reads the engine).
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        st = self.engine.stats()
        c, g = CounterMetricFamily, GaugeMetricFamily
        applied = c("ringflow_events_applied", "Events applied to the state tables",
                    labels=["worker"])
        rejected = c("ringflow_events_rejected", "Events rejected, by reason",
                     labels=["worker", "reason"])
        stale = c("ringflow_events_stale", "Out-of-order events (older than the series)",
                  labels=["worker"])
        late = c("ringflow_events_late", "Events later than the allowed lateness",
                 labels=["worker"])
        ring = g("ringflow_ring_fill_ratio", "Fullest ring of the worker (0..1)",
                 labels=["worker"])
        rows = g("ringflow_table_rows", "Series rows used in the worker's table",
                 labels=["worker"])
        cap = g("ringflow_table_capacity_rows", "Series rows the worker's table holds",
                labels=["worker"])
        restarts = c("ringflow_worker_restarts", "Times the worker was replaced",
                     labels=["worker"])
        alerts = c("ringflow_alerts_written", "Alerts the worker wrote", labels=["worker"])
        waits = c("ringflow_alert_waits", "Times the worker waited for alert space",
                  labels=["worker"])
        wstate = g("ringflow_worker_state", "1 for the worker's current state",
                   labels=["worker", "state"])
        for w in st["workers"]:
            lw = str(w["worker"])
            applied.add_metric([lw], w["applied"])
            rejected.add_metric([lw, "invalid"], w["invalid"])
            rejected.add_metric([lw, "table_full"], w["full"])
            stale.add_metric([lw], w["stale"])
            late.add_metric([lw], w["late"])
            ring.add_metric([lw], w["ring_fill"])
            rows.add_metric([lw], w["series"])
            cap.add_metric([lw], w["table_capacity"])
            restarts.add_metric([lw], w.get("restarts", 0))
            alerts.add_metric([lw], w["alerts"])
            waits.add_metric([lw], w["alert_waits"])
            for s in _STATES:
                wstate.add_metric([lw, s], 1.0 if w.get("state") == s else 0.0)
        # Invalid events caught at submit, before any worker.
        rejected.add_metric(["submit", "invalid"],
                            sum(p["invalid"] for p in st["producers"]))
        yield from (applied, rejected, stale, late, ring, rows, cap, restarts, alerts, waits,
                    wstate)
        state = g("ringflow_engine_state", "1 for the engine's current state",
                  labels=["state"])
        for s in _STATES:
            state.add_metric([s], 1.0 if st["state"] == s else 0.0)
        yield state
        log = st.get("alert_log")
        if log is not None:
            yield g("ringflow_alert_log_head", "Sequence number of the newest alert",
                    value=log["head"])
            yield g("ringflow_alert_log_first", "Sequence number of the oldest alert kept",
                    value=log["first"])
        j = st.get("journal")
        if j is not None:
            yield c("ringflow_journal_written_bytes", "Bytes journaled since the start",
                    value=j["bytes"])
            yield c("ringflow_journal_errors", "Failed journal writes", value=j["errors"])
            yield g("ringflow_journal_lag_events", "Events taken, not yet journaled",
                    value=j["lag"])
        if self.gateway is not None:
            gs = self.gateway.stats()
            yield c("ringflow_gateway_messages", "Messages received by the gateway",
                    value=gs["messages"])
            rej = c("ringflow_gateway_rejected", "Messages the gateway rejected, by reason",
                    labels=["reason"])
            for reason, n in sorted(gs["rejected"].items()):
                rej.add_metric([str(reason)], n)
            yield rej
            yield c("ringflow_gateway_queries", "Queries answered", value=gs["queries"])
            yield c("ringflow_gateway_query_errors", "Queries answered with an error",
                    value=gs["query_errors"])
            yield c("ringflow_gateway_alerts_published", "Alerts published",
                    value=gs["alerts_published"])
            yield c("ringflow_gateway_alerts_missed", "Alerts subscribers missed",
                    value=gs["alerts_missed"])
            yield c("ringflow_gateway_thread_restarts", "Gateway thread restarts",
                    value=gs["restarts"])


class MetricsServer:
    """The ``/metrics`` HTTP endpoint of one served engine.

    Parameters
    ----------
    engine, gateway
        What :class:`RingflowCollector` reads.
    port : int
        TCP port; 0 picks a free one (:attr:`port` tells which).
    host : str
        Address to bind; non-loopback needs ``insecure``.
    insecure : bool
        Allow a non-loopback ``host``.
    """

    def __init__(self, engine, gateway=None, *, port: int, host: str = "127.0.0.1",
                 insecure: bool = False) -> None:
        check_bind(host, insecure)
        pc = _client()
        self.registry = pc.CollectorRegistry(auto_describe=False)
        self.registry.register(RingflowCollector(engine, gateway))
        self.query_seconds = pc.Histogram(
            "ringflow_query_duration_seconds",
            "Time from a query's arrival at the query thread to its reply, by path "
            "(local: answered by the query thread; fleet: by a query process)",
            ["path"], buckets=QUERY_BUCKETS, registry=self.registry)
        self._by_path = {p: self.query_seconds.labels(p) for p in ("local", "fleet")}
        try:
            self._server, self._thread = pc.start_http_server(port, addr=host,
                                                              registry=self.registry)
        except OSError as exc:
            raise MetricsError(f"cannot bind the metrics endpoint {host}:{port}: {exc}") \
                from None
        self.host, self.port = host, self._server.server_address[1]
        if gateway is not None:
            gateway.query_observer = self.observe

    def observe(self, path: str, seconds: float) -> None:
        """Record one query's latency (called by the gateway's query thread)."""
        self._by_path[path].observe(seconds)

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving; idempotent."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5.0)
            self._server = None


