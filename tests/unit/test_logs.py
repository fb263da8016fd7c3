"""engine.observe.logs: every line is one event that parses back."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.observe import logs

_PAIR = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')


def parse_logfmt(line: str) -> dict:
    """A small logfmt reader: key=bare or key="JSON-escaped string"."""
    out, pos = {}, 0
    for m in _PAIR.finditer(line):
        assert line[pos:m.start()].strip() == "", f"junk in {line!r} at {pos}"
        key, raw = m.groups()
        out[key] = json.loads(raw) if raw.startswith('"') else raw
        pos = m.end()
    assert line[pos:].strip() == ""
    return out


def emit(fmt: str, msg: str, fields=None, level="info") -> list[str]:
    buf = io.StringIO()
    log = logs.setup(fmt, "debug", stream=buf)
    try:
        getattr(log, level)(msg, extra={"fields": fields} if fields else None)
    finally:
        logs.teardown()
    return buf.getvalue().splitlines()


def test_logfmt_line():
    (line,) = emit("logfmt", "rules reloaded", {"rules": 3, "path": "/a b/r.toml"}, "warning")
    assert re.match(r"ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=warning msg=", line)
    d = parse_logfmt(line)
    assert (d["level"], d["msg"], d["rules"], d["path"]) == \
        ("warning", "rules reloaded", "3", "/a b/r.toml")


def test_json_line():
    (line,) = emit("json", "status", {"applied": 7, "event": "status"})
    d = json.loads(line)
    assert (d["level"], d["msg"], d["applied"], d["event"]) == ("info", "status", 7, "status")
    assert d["ts"].endswith("Z")


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@given(msg=_text, value=_text)
def test_any_text_is_one_parseable_line(msg, value):
    fields = {"k": value}
    (line,) = emit("logfmt", msg, fields)
    d = parse_logfmt(line)
    assert d["msg"] == msg and d["k"] == value
    (line,) = emit("json", msg, fields)
    d = json.loads(line)
    assert d["msg"] == msg and d["k"] == value


def test_level_filters_and_rich_writes():
    buf = io.StringIO()
    log = logs.setup("logfmt", "warning", stream=buf)
    try:
        log.info("hidden")
        log.error("shown")
    finally:
        logs.teardown()
    assert [parse_logfmt(x)["msg"] for x in buf.getvalue().splitlines()] == ["shown"]
    (line,) = [x for x in emit("rich", "hello there", {"n": 1}) if x.strip()]
    assert "hello there" in line and "n=1" in line and "INFO" in line


def test_default_format_and_bad_values():
    assert logs.default_format(io.StringIO()) == "logfmt"
    with pytest.raises(ValueError):
        logs.setup("xml")
    with pytest.raises(ValueError):
        logs.setup("json", "loud")
    assert logging.getLogger(logs.LOGGER).handlers == []
