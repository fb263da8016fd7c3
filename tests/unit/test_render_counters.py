"""The worker counters' renderer (engine/cli/render.py): each heading shows
its own counter, in every view of them (the ``late`` column once showed
the ``stale`` counter)."""

from __future__ import annotations

import io
import re

from engine.cli import render

# A distinct value per counter, so that a column showing another's counter
# cannot pass.
WORKER = {"worker": 1, "pid": 4242, "alive": True, "state": "ok", "restarts": 0,
          "applied": 100_003, "stale": 307, "late": 41, "invalid": 5, "full": 7,
          "series": 1_009, "alerts": 13, "alerts_dropped": 2, "batches": 17,
          "table_fill": 0.25, "ring_pending": 19}
HEADINGS = {"applied": "applied", "stale": "stale", "late": "late", "invalid": "invalid",
            "full": "full", "series": "series", "alerts": "alerts",
            "alerts_dropped": "dropped"}


def table_text(table) -> str:
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=250, highlight=False).print(table)
    return buf.getvalue()


def parse_table(text: str) -> list[dict]:
    """The rows of a rendered workers table, as {heading: cell}: cells are
    two spaces apart or more (one in a compact table, whose headings have
    no space)."""
    lines = [line for line in text.splitlines() if line.strip()]
    at = next(i for i, line in enumerate(lines) if line.split()[:1] == ["worker"])
    split = (lambda s: re.split(r"\s{2,}", s.strip())) if "  " in lines[at].strip() \
        else str.split
    headings = split(lines[at])
    rows = [split(line) for line in lines[at + 2:] if not line.strip().startswith("─")]
    rows = [r for r in rows if len(r) == len(headings)]
    return [dict(zip(headings, r)) for r in rows]


def test_each_heading_shows_its_own_counter():
    cells = dict(render.counter_cells(WORKER))
    assert cells == {heading: f"{WORKER[key]:,}" for key, heading in HEADINGS.items()}
    compact = dict(render.counter_cells(WORKER, compact=True))
    assert compact["applied"] == "100k" and compact["late"] == "41"
    assert compact["stale"] == "307" and compact["dropped"] == "2"


def test_tables_and_lines_show_the_same_counters():
    stats = {"workers": [WORKER, {**WORKER, "worker": 2, "late": 3, "stale": 4}],
             "rejected_invalid": 12, "accepted": 200_006, "state": "ok",
             "alerts_delivered": 26}
    for compact in (False, True):
        rows = parse_table(table_text(render.workers_table(stats, compact=compact)))
        assert [(r["worker"], r["stale"], r["late"], r["dropped"]) for r in rows] == [
            ("1", "307", "41", "2"), ("2", "4", "3", "2")], rows
    line = render.engine_counters_line(stats)
    # Sums over the workers; invalid also counts what was refused at submit.
    assert "stale 311  late 44  invalid 12" in line
    assert "alerts 26  dropped 4  alerts delivered 26" in line
    counters = render.serve_counters(stats, {"messages": 3, "queries": 1})
    status = render.serve_status_line(counters, None, 1.0)
    assert "stale 311  late 44" in status and "dropped 4  delivered 26" in status
    final = render.final_line(counters)
    assert " stale=311 late=44 " in final and " alerts_dropped=4 " in final


def test_the_legend_names_what_stale_and_late_count():
    legend = render.counter_legend()
    assert "stale: events older than their series' newest" in legend
    assert "late: of the stale events, those that found their window closed" in legend
    assert "dropped: status changes lost" in legend
