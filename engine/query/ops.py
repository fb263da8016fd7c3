"""The query endpoint's JSON requests answered from a :class:`~engine.query.reader.Reader`.

A JSON query (PROTOCOL.md, Queries) goes in, the bytes of its reply come
out (:func:`answer`); binary lookups are frames, which the gateway parses
(:mod:`engine.net.protocol`) before asking the same reader.  The read ops are
functions of ``(reader, request) -> dict`` (the reply's payload) listed in
:data:`OPS`; ops that act on the engine rather than read it (stats, rules,
reload) are supplied by whoever serves the endpoint, the gateway today.
No socket is touched here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping

from ..core.records import entity_id, metric_id
from ..errors import EngineError, Forbidden, SeriesUnavailable
from .readable import STATUS_NAMES
from .reader import Reader

__all__ = ["OPS", "TOP_FIELDS", "answer", "error_reply", "entity_arg", "metric_arg", "limit_arg"]

#: Row fields a ``top`` request can rank by.
TOP_FIELDS = ("count", "sum", "min", "max", "mean", "ewma", "last", "last_ts", "first_ts",
              "stale", "late", "win_count", "win_sum", "win_min", "win_max")

# Errors that make a reply ``{"ok": false, "error": ...}`` instead of an
# internal error: what a bad request or a gone engine raises.
_REQUEST_ERRORS = (ValueError, TypeError, KeyError, RecursionError, EngineError)


def answer(frame, reader: Reader, *,
           control: Mapping[str, Callable[[dict], dict]] | None = None,
           on_error: Callable[[], None] | None = None,
           forbidden: Collection[str] = ()) -> bytes:
    """The reply to one JSON query.

    Parameters
    ----------
    frame : bytes-like
        The request as received: a JSON object with ``op``.
    reader : Reader
        What the read ops read.
    control : mapping, optional
        The ops that are not reads (``stats``, ``rules``, ``reload``), op
        name to ``handler(request) -> dict``.
    on_error : callable, optional
        Called once for each error the reply reports (counters).
    forbidden : collection of str
        Ops this sender may not run (a non-admin CURVE key): answered
        ``reason: forbidden``.

    Returns
    -------
    bytes
        A JSON object with ``ok`` and ``op``, the op's payload, and the
        request's ``id`` echoed, or ``ok: false`` and ``error``.
    """
    control = control or {}
    failed = on_error or _ignore
    request_id = None
    try:
        request = json.loads(frame)
        if not isinstance(request, dict):
            raise ValueError("a query is a JSON object")
        request_id = request.get("id")
        op = request.get("op")
        if op in forbidden:
            raise Forbidden(f"op {op!r} needs an admin key (--curve-admins on the server); "
                            "this client's key is not one")
        handler = OPS.get(op)
        if handler is not None:
            payload = handler(reader, request)
        elif op in control:
            payload = control[op](request)
        else:
            raise ValueError(f"unknown op {op!r}; ops: {', '.join(sorted([*OPS, *control]))}")
        reply = {"ok": True, "op": op, **payload}
    except _REQUEST_ERRORS as exc:
        failed()
        reply = error_reply(exc)
    if request_id is not None:
        reply["id"] = request_id
    try:
        return json.dumps(reply, allow_nan=False).encode()
    except (ValueError, TypeError):
        # The id the client chose is not representable (1e400, NaN).
        failed()
        return json.dumps({"ok": False, "error": "id must be a finite JSON value"}).encode()


def _ignore() -> None:
    pass


def error_reply(exc: BaseException) -> dict:
    """The ``ok: false`` reply for an error a query raised.

    A row stuck mid-write is the server's state, not the request's fault:
    its ``reason`` tells a client it may ask again (PROTOCOL.md).

    Parameters
    ----------
    exc : BaseException
        What the request raised.

    Returns
    -------
    dict
    """
    if isinstance(exc, SeriesUnavailable):
        return {"ok": False, "reason": "unavailable", "error": str(exc)}
    if isinstance(exc, Forbidden):
        return {"ok": False, "reason": "forbidden", "error": str(exc)}
    return {"ok": False, "error": str(exc)}


# --- arguments --------------------------------------------------------------

def _id_arg(reader: Reader, request: dict, field: str, kind: str, hasher, bits: int) -> int:
    value = request.get(field)
    if isinstance(value, str):
        ident = hasher(value)
        # A name asked for is a name learnt: later replies show it.
        reader.names[kind].setdefault(ident, value)
        return ident
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**bits:
        return value
    raise ValueError(f"{field} must be a name or a u{bits} id")


def entity_arg(reader: Reader, request: dict) -> int:
    """The request's ``entity`` (a name, remembered, or a u64 id) as an id."""
    return _id_arg(reader, request, "entity", "entities", entity_id, 64)


def metric_arg(reader: Reader, request: dict) -> int:
    """The request's ``metric`` (a name, remembered, or a u32 id) as an id."""
    return _id_arg(reader, request, "metric", "metrics", metric_id, 32)


def limit_arg(request: dict, name: str = "limit", default: int = 100, least: int = 1) -> int:
    """The request's count argument ``name``, an integer in least..100000."""
    value = request.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= 100_000:
        raise ValueError(f"{name} must be an integer in {least}..100000")
    return value


# --- the read ops: each returns the reply's payload -------------------------

def op_ping(reader: Reader, request: dict) -> dict:
    """``ping``: the server's clock."""
    return {"time_ns": time.time_ns()}


def op_get(reader: Reader, request: dict) -> dict:
    """``get``: one series, readable, or ``None``."""
    key, metric = entity_arg(reader, request), metric_arg(reader, request)
    return {"series": reader.series(key, metric)}


def op_entity(reader: Reader, request: dict) -> dict:
    """``entity``: every series of one entity, worst first, and its status."""
    # entity, entity_id, status, since and "series", the list replies had
    # before statuses existed (now worst first).
    return reader.entity(entity_arg(reader, request))


def op_status(reader: Reader, request: dict) -> dict:
    """``status``: the first ``limit`` entities at ``min_status`` or worse,
    worst first, how many there are, and every series counted by status."""
    # 0: the total and the counts alone.
    limit = limit_arg(request, least=0)
    min_status = request.get("min_status", "WARN")
    if min_status not in STATUS_NAMES:
        raise ValueError(f"min_status must be one of {', '.join(STATUS_NAMES)}")
    page = reader.status_page(min_status, limit)
    rec = reader.recovered
    return {"total": page["total"], "entities": page["entities"], "counts": page["counts"],
            # How many series the answer covers, and where the state came
            # from: an empty answer of a restarted server is not "all OK".
            "series": sum(t.used for t in reader.tables),
            "recovered": None if rec is None else
            {k: rec[k] for k in ("events", "frames", "seconds", "at_ns")}}


def op_top(reader: Reader, request: dict) -> dict:
    """``top``: the ``k`` series with the highest (or lowest) ``field``."""
    field = request.get("field", "last")
    if field not in TOP_FIELDS:
        raise ValueError(f"field must be one of {', '.join(TOP_FIELDS)}")
    k = limit_arg(request, "k", 10)
    order = request.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ValueError("order must be 'asc' or 'desc'")
    return {"series": reader.top(field, k, order)}


def op_names(reader: Reader, request: dict) -> dict:
    """``names``: remember entity and metric names; how many were new."""
    added = 0
    for kind, hasher in (("entities", entity_id), ("metrics", metric_id)):
        values = request.get(kind, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"{kind} must be a list of names")
        for name in values:
            ident = hasher(name)
            if ident not in reader.names[kind]:
                reader.names[kind].setdefault(ident, name)
                # Past max_names (or max_name_bytes) it is counted, not kept.
                added += ident in reader.names[kind]
    return {"registered": added}


#: The read ops by name: ``handler(reader, request) -> payload``.
OPS: dict[str, Callable[[Reader, dict], dict]] = {
    "ping": op_ping,
    "get": op_get,
    "entity": op_entity,
    "status": op_status,
    "top": op_top,
    "names": op_names,
}
