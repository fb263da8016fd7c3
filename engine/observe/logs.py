"""Log events of ``ringflow serve``: one event per line, as logfmt, JSON or
rich (``--log-format``).

An event is a message and optional fields, given as
``log.info(msg, extra={"fields": {...}})``; every format shows both.  logfmt::

    ts=2026-12-05T18:30:00.123Z level=info msg="rules reloaded" rules=3

JSON: one object per line with ``ts``, ``level``, ``msg`` and the fields.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys

#: The logger of ``ringflow serve`` (and of whatever it starts).
LOGGER = "ringflow"
FORMATS = ("logfmt", "json", "rich")
LEVELS = ("debug", "info", "warning", "error")


def _ts(record: logging.LogRecord) -> str:
    t = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _fields(record: logging.LogRecord) -> dict:
    fields = getattr(record, "fields", None)
    return dict(fields) if fields else {}


def _one_line(text: str) -> str:
    """JSON text with its unprintable characters escaped: NEL, U+2028 and
    the like break lines for some readers even though JSON allows them raw
    (only inside strings, where a ``\\u`` escape of four hex digits means the
    same)."""
    if text.isprintable():
        return text
    # json.dumps escapes them as ensure_ascii would (surrogate pairs past
    # the BMP); every other character stays as it is.
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in text)


def _logfmt_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else str(value)
    # Quoted when it would not read back as one bare token.
    if text == "" or any(c in text for c in ' ="\\') or not text.isprintable():
        return _one_line(json.dumps(text, ensure_ascii=False))
    return text


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=info msg="..." key=value``: values with spaces, quotes,
    ``=`` or control characters are quoted and escaped as JSON strings, so
    one event is always one line."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        pairs = [("ts", _ts(record)), ("level", record.levelname.lower()), ("msg", msg)]
        pairs += [(str(k).replace(" ", "_").replace("=", "_"), v)
                  for k, v in _fields(record).items()]
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in pairs)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``msg``, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        out = {"ts": _ts(record), "level": record.levelname.lower(), "msg": msg}
        for k, v in _fields(record).items():
            out.setdefault(str(k), v)
        return _one_line(json.dumps(out, ensure_ascii=False, default=str))


def default_format(stream=None) -> str:
    """``rich`` when ``stream`` (default stderr) is a terminal, else ``logfmt``."""
    stream = stream if stream is not None else sys.stderr
    try:
        return "rich" if stream.isatty() else "logfmt"
    except (AttributeError, ValueError):
        return "logfmt"


def setup(fmt: str | None = None, level: str = "info", stream=None) -> logging.Logger:
    """Configure the ``ringflow`` logger: one handler on ``stream`` (default
    stderr) in format ``fmt`` (None: :func:`default_format`); replaces the
    handler a previous call installed.

    Returns
    -------
    logging.Logger
    """
    stream = stream if stream is not None else sys.stderr
    fmt = fmt or default_format(stream)
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    if fmt == "rich":
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(file=stream), show_path=False, markup=False,
                              rich_tracebacks=False, log_time_format="%H:%M:%S")
        handler.setFormatter(_RichFieldsFormatter())
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(LogfmtFormatter() if fmt == "logfmt" else JsonFormatter())
    log = logging.getLogger(LOGGER)
    for old in list(log.handlers):
        log.removeHandler(old)
    if not hasattr(log, "_ringflow_saved"):
        # Put back by teardown(): an in-process caller's logging (a test's
        # caplog, an application's root handlers) must work again after.
        log._ringflow_saved = (log.level, log.propagate)
    log.addHandler(handler)
    log.setLevel(level.upper())
    # Serve's events go to its own handler only, never twice via the root.
    log.propagate = False
    return log


def teardown() -> None:
    """Remove the handler :func:`setup` installed (serve calls it on exit,
    so that in-process callers keep no handler on a closed stream)."""
    log = logging.getLogger(LOGGER)
    for old in list(log.handlers):
        log.removeHandler(old)
        old.close()
    saved = getattr(log, "_ringflow_saved", None)
    if saved is not None:
        log.setLevel(saved[0])
        log.propagate = saved[1]
        del log._ringflow_saved


class _RichFieldsFormatter(logging.Formatter):
    # RichHandler shows time and level itself; the fields follow the message.
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        fields = _fields(record)
        if fields:
            msg += "  " + " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items())
        return msg
