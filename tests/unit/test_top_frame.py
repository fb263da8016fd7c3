"""``ringflow top``'s frame: rates from the counters' deltas, through the
one counter renderer."""

from __future__ import annotations

from rich.console import Console

from engine.cli.top import frame, ls_table


def _text(renderable) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def _stats(applied: int, queries: int) -> dict:
    w = {"worker": 0, "state": "ok", "restarts": 3, "applied": applied, "stale": 7,
         "late": 1, "table_fill": 0.25, "ring_fill": 0.5}
    return {"state": "ok", "series": 9, "applied": applied, "alerts": 4, "workers": [w],
            "gateway": {"queries": queries}}


def test_rates_from_deltas():
    status = {"counts": {"CRIT": 1}, "entities": [
        {"entity": "web-1", "status": "CRIT",
         "series": [{"metric": "cpu", "status": "CRIT"}, {"metric": "mem", "status": "OK"}]}]}
    text = _text(frame(_stats(1500, 30), status, _stats(500, 10), 0.5, "tcp://x:1"))
    assert "ingest 2,000/s" in text and "queries 40/s" in text
    assert "25.0%" in text and "50.0%" in text and "CRIT 1" in text
    row = next(line for line in text.splitlines() if "web-1" in line)
    assert "cpu" in row and "mem" not in row


def test_first_frame_has_no_rate():
    text = _text(frame(_stats(1500, 30), {"entities": []}, None, 0.0, "tcp://x:1"))
    assert "ingest -" in text and "queries -" in text


def test_ls_table():
    rec = {"pid": 42, "name": "srv", "state": "ok", "workers": 2, "started": 100.0,
           "data_dir": "/d", "endpoints": {"query": "tcp://127.0.0.1:1"}}
    text = _text(ls_table([rec], 100.0 + 3725))
    assert "42" in text and "1h02m05s" in text and "query=tcp://127.0.0.1:1" in text
