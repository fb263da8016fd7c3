"""The stale and late counters from the kernel to every view of them:
events known to be stale, and of those, late (docs/health.md), go into an
embedded engine and into ``ringflow serve``; ``Engine.stats()``, the
workers table, ``ringflow stats``, serve's status line and its final line
show each number under its own name."""

from __future__ import annotations

import signal
import time

import pytest

import engine
from engine.cli import render
from engine.net.client import Client
from tests.helpers import free_ports, wait_for
from tests.integration.test_cli import SMALL, Server, assert_clean, ports_arg, run_main
from tests.unit.test_render_counters import parse_table, table_text

pytestmark = pytest.mark.timeout(60)

S = 10**9
W = 60 * S          # the default window; the default lateness is 10 s
RULES = '[[rule]]\nmetric = "cpu"\nwarn = 0.8\ncrit = 0.9\n'
STALE, LATE, ALERTS = 5, 2, 2


def known_events():
    """Seven readings of web-1 cpu: 2 in order (OK -> CRIT -> OK: two
    alerts), 5 stale of which 2 late.  With the watermark at B + W + 5 s:
    two stale readings fall in the current window, one in the previous
    window, still open (its end plus the 10 s lateness is ahead of the
    watermark): stale, not late; two in the window before: late."""
    b = time.time_ns() // W * W - 2 * W
    ts_values = [
        (b + 1 * S, 0.95),          # new series: CRIT
        (b + W + 5 * S, 0.1),       # in order, the next window: OK
        (b + W + 1 * S, 0.99),      # stale, current window
        (b + W + 2 * S, 0.99),      # stale, current window
        (b + 30 * S, 0.99),         # stale, previous window (open)
        (b - W + 5 * S, 0.99),      # stale and late
        (b - W + 6 * S, 0.99),      # stale and late
    ]
    ts, values = zip(*ts_values)
    return engine.make_events(["web-1"] * len(ts), "cpu", list(ts), list(values))


def owner(stats: dict) -> dict:
    """The worker that holds the one series."""
    (w,) = [w for w in stats["workers"] if w["series"]]
    return w


def test_known_stale_and_late_events_show_under_their_names():
    with engine.Engine(workers=2, rules=RULES) as eng:
        stream = eng.alerts()
        eng.submit(known_events())
        eng.flush()
        row = eng.series("web-1", "cpu")
        assert (row["count"], row["stale"], row["late"]) == (7, STALE, LATE)
        assert [(a.old, a.new) for a in (stream.get(10), stream.get(10))] == [
            ("OK", "CRIT"), ("CRIT", "OK")]
        stats = wait_for(lambda: (s := eng.stats())["alerts_delivered"] == ALERTS and s,
                         what="both alerts delivered")
    w = owner(stats)
    assert (w["applied"], w["stale"], w["late"], w["alerts"]) == (7, STALE, LATE, ALERTS)
    assert (stats["stale"], stats["late"]) == (STALE, LATE)
    for compact in (True, False):
        (shown,) = [r for r in parse_table(table_text(render.workers_table(stats,
                                                                          compact=compact)))
                    if r["series"] == "1"]
        assert (shown["applied"], shown["stale"], shown["late"], shown["alerts"],
                shown["dropped"]) == ("7", str(STALE), str(LATE), str(ALERTS), "0"), shown
    assert (f"applied 7  stale {STALE}  late {LATE}  invalid 0  full 0  series 1  "
            f"alerts {ALERTS}  dropped 0  alerts delivered {ALERTS}"
            ) == render.engine_counters_line(stats)


def test_ringflow_stats_and_serve_lines_show_stale_and_late(tmp_path, capsys):
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    srv = Server([*SMALL, "--no-quiet", "--status-interval", "0.2", "--rules", str(rules)],
                 free_ports())
    workers = []
    try:
        srv.wait_ready()
        workers = srv.worker_pids()
        assert "counters stale: events older than their series' newest" in srv.output
        with Client(ports=dict(zip(("ingest", "acked", "query", "alerts"), srv.ports)),
                    timeout=10) as c:
            assert c.send(known_events(), ack=True) == 7
        want = f"applied 7  stale {STALE}  late {LATE}  invalid 0  full 0  series 1  " \
               f"alerts {ALERTS}  dropped 0  delivered {ALERTS}"
        wait_for(lambda: want in srv.output, 10, f"{want!r} in serve's status lines:\n"
                 f"{srv.output}")

        rc, out, _ = run_main(capsys, "stats", "--ports", ports_arg(srv.ports))
        assert rc == 0, out
        (shown,) = [r for r in parse_table(out) if r["series"] == "1"]
        assert (shown["stale"], shown["late"], shown["alerts"], shown["dropped"]) == (
            str(STALE), str(LATE), str(ALERTS), "0"), out
        assert f"stale {STALE}  late {LATE}" in out and f"alerts delivered {ALERTS}" in out
        assert "late: of the stale events, those that found their window closed" in out
    finally:
        assert srv.stop(signal.SIGTERM) == 0, srv.output
        assert_clean(srv, workers)
    final = srv.final()
    assert (final["stale"], final["late"], final["alerts"], final["alerts_dropped"]) == (
        STALE, LATE, ALERTS, 0), srv.output
