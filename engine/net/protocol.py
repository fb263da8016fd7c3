"""Wire protocol, version 1: frame layouts, message types, rejection reasons.

Every message is one ZeroMQ frame that starts with an 8-byte header::

    bytes 0-1  magic b"RF"
    byte  2    version (1)
    byte  3    type (see ``TYPE_*``)
    bytes 4-7  u32 little-endian count: records for binary types, bytes of
               body for JSON lines

PROTOCOL.md at the repository root documents every frame for clients in any
language; this module is the one place in Python that packs and parses them.
"""

from __future__ import annotations

import json
import struct
import time

import numpy as np

from ..core.layout import (
    FRAME_EVENTS,
    FRAME_JSON,
    FRAME_LOOKUP,
    FRAME_MAGIC,
    FRAME_ROWS,
    FRAME_VERSION,
    REASONS,
    numpy_dtype,
    struct_format,
)
from ..core.records import EVENT_DTYPE, STATE_DTYPE, entity_id, metric_id
from ..errors import ProtocolError

__all__ = [
    "MAGIC",
    "VERSION",
    "HEADER",
    "TYPE_EVENTS",
    "TYPE_JSON",
    "TYPE_LOOKUP",
    "TYPE_ROWS",
    "LOOKUP_DTYPE",
    "REASONS",
    "DEFAULT_HOST",
    "DEFAULT_PORTS",
    "PRODUCER",
    "VERSION_PRODUCER",
    "split_producer",
    "ProtocolError",
    "pack_events",
    "pack_json",
    "pack_lookup",
    "pack_rows",
    "parse_header",
    "parse_events",
    "parse_json_lines",
    "parse_lookup",
    "parse_rows",
]

# The frame layout and codes are defined once, in engine.core.layout, with
# the C drain's; here they get the names this module has always exported.
MAGIC = FRAME_MAGIC
VERSION = FRAME_VERSION
HEADER = struct.Struct(struct_format("FrameHeader"))

TYPE_EVENTS = FRAME_EVENTS   #: body: count x 32-byte EVENT_DTYPE records
TYPE_JSON = FRAME_JSON       #: body: count bytes of UTF-8 JSON lines
TYPE_LOOKUP = FRAME_LOOKUP   #: query endpoint, body: count x 16-byte LOOKUP_DTYPE (key, metric)
TYPE_ROWS = FRAME_ROWS       #: reply to a lookup, body: count x 256-byte STATE_DTYPE rows

#: One (key, metric) pair of a binary lookup: 16 bytes, little-endian.
LOOKUP_DTYPE = numpy_dtype("LookupRecord")

DEFAULT_HOST = "tcp://127.0.0.1"
#: Default ports: ingest PULL, ingest ROUTER (acked), query ROUTER, alerts PUB.
DEFAULT_PORTS = {"ingest": 7710, "acked": 7711, "query": 7712, "alerts": 7713}

_JSON_FIELDS = {"entity", "metric", "ts", "value"}

#: Version of an acked ingest frame that names its producer (idempotent
#: producers, PROTOCOL.md): the 8-byte header, then PRODUCER, then the body.
VERSION_PRODUCER = 2
#: Producer id (u64, not 0) and the message's sequence number (u64, from 1).
PRODUCER = struct.Struct("<QQ")
#: The largest sequence number: the engine keeps sequence * 4096 + part
#: (a message's parts in one shard) as an exact double.
MAX_SEQUENCE = 2**41 - 1


def pack_header(kind: int, count: int) -> bytes:
    return HEADER.pack(MAGIC, VERSION, kind, count)


def _producer_header(kind: int, count: int, producer: tuple[int, int] | None) -> bytes:
    if producer is None:
        return pack_header(kind, count)
    pid, seq = producer
    if not (0 < pid < 2**64 and 0 < seq <= MAX_SEQUENCE):
        raise ValueError(f"producer id must be in 1..2**64-1 and sequence in 1..2**41-1, "
                         f"got {producer}")
    return HEADER.pack(MAGIC, VERSION_PRODUCER, kind, count) + PRODUCER.pack(pid, seq)


def pack_events(events: np.ndarray, producer: tuple[int, int] | None = None) -> bytes:
    """One binary ingest frame (type 1) carrying ``events``; with
    ``producer`` ``(id, sequence)``, a version-2 frame for the acked
    endpoint that a retry can repeat without applying it twice."""
    ev = np.ascontiguousarray(events, dtype=EVENT_DTYPE)
    return _producer_header(TYPE_EVENTS, len(ev), producer) + ev.tobytes()


def pack_json(records, producer: tuple[int, int] | None = None) -> bytes:
    """One JSON-lines ingest frame (type 2) from dicts with entity, metric,
    value and optionally ts (ns); names stay names on the wire.
    ``producer``: as :func:`pack_events`."""
    body = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
    return _producer_header(TYPE_JSON, len(body), producer) + body


def pack_lookup(keys, metrics) -> bytes:
    """One binary lookup frame (type 3) for the query endpoint."""
    k = np.asarray(keys, dtype=np.uint64).ravel()
    m = np.asarray(metrics, dtype=np.uint32).ravel()
    if m.size == 1 and k.size != 1:
        m = np.full(k.size, m[0], np.uint32)
    body = np.zeros(k.size, LOOKUP_DTYPE)
    body["key"] = k
    body["metric"] = m
    return pack_header(TYPE_LOOKUP, k.size) + body.tobytes()


def pack_rows(rows: np.ndarray) -> bytes:
    """The reply to a lookup (type 4): STATE_DTYPE rows in the order asked."""
    return pack_header(TYPE_ROWS, len(rows)) + np.ascontiguousarray(rows, STATE_DTYPE).tobytes()


def parse_header(frame, max_bytes: int | None = None, producer: bool = False
                 ) -> tuple[int, int]:
    """Check the header of ``frame`` (any buffer) and its length;
    ``producer``: a version-2 acked frame, whose body follows the producer
    extension (:func:`split_producer`).

    Returns
    -------
    (type, count)

    Raises
    ------
    ProtocolError
        With the reason the whole message is rejected.
    """
    size = len(frame)
    start = HEADER.size + (PRODUCER.size if producer else 0)
    if max_bytes is not None and size > max_bytes:
        raise ProtocolError("too_large", f"message of {size} bytes is over the {max_bytes} limit")
    if size < start:
        raise ProtocolError("short_frame", f"message of {size} bytes is shorter than the header")
    magic, version, kind, count = HEADER.unpack_from(frame, 0)
    if magic != MAGIC:
        raise ProtocolError("bad_magic", f"bad magic {bytes(magic)!r}, expected b'RF'")
    if version != (VERSION_PRODUCER if producer else VERSION):
        raise ProtocolError("bad_version", f"protocol version {version} is not supported here "
                            f"(1 is; 2, with a producer, on the acked endpoint)")
    item = {TYPE_EVENTS: EVENT_DTYPE.itemsize, TYPE_JSON: 1, TYPE_LOOKUP: LOOKUP_DTYPE.itemsize,
            TYPE_ROWS: STATE_DTYPE.itemsize}.get(kind)
    if item is None:
        raise ProtocolError("bad_type", f"unknown message type {kind}")
    if size - start != count * item:
        raise ProtocolError(
            "bad_length",
            f"header says {count} {'bytes' if kind == TYPE_JSON else 'records'} "
            f"({count * item} bytes of body) but the body has {size - start}",
        )
    return kind, count


def parse_events(frame, count: int, offset: int = HEADER.size) -> np.ndarray:
    """The records of a type-1 frame as a read-only EVENT_DTYPE view (no
    copy); ``offset``: where its body starts."""
    return np.frombuffer(frame, EVENT_DTYPE, count=count, offset=offset)


def split_producer(frame, max_bytes: int | None = None):
    """An acked ingest frame: version 1 as it is, or version 2 with its
    producer extension taken off.

    Returns
    -------
    (frame, producer, offset)
        ``producer`` is ``(id, sequence)`` or None; ``offset``: where the
        body starts.  The header of a version-2 frame is checked as a
        version-1 one would be (:func:`parse_header`) by the caller, on
        ``frame`` rebuilt without the extension only when needed.
    """
    view = memoryview(frame)
    if len(view) >= HEADER.size + PRODUCER.size and bytes(view[:2]) == MAGIC \
            and view[2] == VERSION_PRODUCER:
        pid, seq = PRODUCER.unpack_from(view, HEADER.size)
        if pid == 0 or not 0 < seq <= MAX_SEQUENCE:
            raise ProtocolError("bad_field", f"producer id {pid} / sequence {seq}: the id "
                                f"must not be 0 and the sequence must be in 1..2**41-1")
        return view, (pid, seq), HEADER.size + PRODUCER.size
    return view, None, HEADER.size


def parse_lookup(frame, count: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = np.frombuffer(frame, LOOKUP_DTYPE, count=count, offset=HEADER.size)
    return np.ascontiguousarray(pairs["key"]), np.ascontiguousarray(pairs["metric"])


def parse_rows(frame) -> np.ndarray:
    kind, count = parse_header(frame)
    if kind != TYPE_ROWS:
        raise ProtocolError("bad_type", f"expected a rows reply (type 4), got type {kind}")
    return np.frombuffer(frame, STATE_DTYPE, count=count, offset=HEADER.size).copy()


def parse_json_lines(body: bytes, names: dict | None = None) -> np.ndarray:
    """Decode a JSON-lines body into EVENT_DTYPE records.

    Each non-blank line is an object with ``entity`` (name or id), ``metric``
    (name or id), ``value`` (number) and optionally ``ts`` (integer ns; the
    gateway's clock when absent).  A NaN value is kept here and rejected
    (counted) by the router like any invalid record.

    Parameters
    ----------
    body : bytes
        The body of a type-2 frame.
    names : dict, optional
        ``{"entities": {id: name}, "metrics": {id: name}}`` to record the names seen.

    Raises
    ------
    ProtocolError
        ``bad_utf8``, ``bad_json`` or ``bad_field``: the whole message is rejected.
    """
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("bad_utf8", f"body is not UTF-8: {exc}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    out = np.zeros(len(lines), EVENT_DTYPE)
    now = time.time_ns()
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError("bad_json", f"line {i + 1}: {exc}") from None
        if not isinstance(rec, dict):
            raise ProtocolError("bad_json", f"line {i + 1}: not a JSON object")
        extra = set(rec) - _JSON_FIELDS
        if extra:
            raise ProtocolError("bad_field", f"line {i + 1}: unknown field(s) {sorted(extra)}")
        for need in ("entity", "metric", "value"):
            if need not in rec:
                raise ProtocolError("bad_field", f"line {i + 1}: missing field {need!r}")
        out[i]["key"] = _id(rec["entity"], entity_id, 64, "entity", i, names, "entities")
        out[i]["metric"] = _id(rec["metric"], metric_id, 32, "metric", i, names, "metrics")
        value = rec["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError("bad_field", f"line {i + 1}: value must be a number")
        try:
            out[i]["value"] = float(value)
        except OverflowError:
            raise ProtocolError("bad_field", f"line {i + 1}: value does not fit a double") from None
        ts = rec.get("ts", now)
        if isinstance(ts, bool) or not isinstance(ts, int) or not -(2**63) <= ts < 2**63:
            raise ProtocolError("bad_field", f"line {i + 1}: ts must be integer nanoseconds")
        out[i]["ts"] = ts
    return out


def _id(value, hasher, bits: int, field: str, line: int, names: dict | None, kind: str) -> int:
    if isinstance(value, str):
        try:
            ident = hasher(value)
        except UnicodeEncodeError:
            raise ProtocolError(
                "bad_field", f"line {line + 1}: {field} name is not valid Unicode") from None
        if names is not None:
            names[kind].setdefault(ident, value)
        return ident
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**bits:
        raise ProtocolError("bad_field", f"line {line + 1}: {field} must be a name or a u{bits} id")
    return value
