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
import math
import struct
import time

import msgspec
import numpy as np

from .. import _jsonl
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
    "pack_json_body",
    "pack_lookup",
    "pack_rows",
    "parse_header",
    "parse_events",
    "parse_json_lines",
    "JsonLinesDecoder",
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
TYPE_ROWS = FRAME_ROWS       #: reply to a lookup, body: count x STATE_DTYPE rows (384 bytes each)

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


def pack_json_body(body, producer: tuple[int, int] | None = None) -> bytes:
    """One JSON-lines ingest frame (type 2) around ``body``, JSON lines
    encoded already (e.g. a run of whole lines read from a file).
    ``producer``: as :func:`pack_events`."""
    return _producer_header(TYPE_JSON, len(body), producer) + bytes(body)


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


class _Line(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One JSON line as msgspec decodes it (the fields of PROTOCOL.md);
    ``gc=False``: a frame's objects never form cycles, so the collector
    need not track them."""

    entity: int | str
    metric: int | str
    value: float
    ts: int | float | msgspec.UnsetType = msgspec.UNSET


#: Names longer than this are hashed each time rather than cached.
_CACHE_NAME_CHARS = 64


class JsonLinesDecoder:
    """Decodes the bodies of type-2 frames into EVENT_DTYPE records, for
    one thread (it keeps a name cache and an output buffer).

    The fast path parses the whole body with msgspec (one object per line,
    fields checked by type) and walks the objects in C (engine._jsonl)
    straight into the record array; names are hashed once per decoder
    (a bounded cache) and the new ones are registered in ``names`` in one
    batch per message, once the message is known to be good.  Anything the
    fast path does not take (a malformed line, a non-standard literal such
    as ``NaN``, an id out of range, ...) goes through the line-by-line
    reference path, which accepts exactly what the fast path accepts and
    more (``NaN``/``Infinity``, numbers past a double), and raises the
    error naming the line.

    Parameters
    ----------
    names : dict, optional
        ``{"entities": {id: name}, "metrics": {id: name}}`` (the engine's
        :class:`engine.core.names.NameRegistry`) to record the names seen.
    strict : bool
        Also refuse empty names (``ringflow send`` checks its lines so).
    max_cached : int
        Names cached per kind; the cache is emptied when full.
    check_only : bool
        Only check the lines (``ringflow send``): names are not hashed nor
        learnt, and the records' ids for names are 0.
    """

    def __init__(self, names: dict | None = None, strict: bool = False,
                 max_cached: int = 1 << 18, check_only: bool = False) -> None:
        self.names = None if check_only else names
        self.strict = strict
        self.max_cached = max_cached
        self._decoder = msgspec.json.Decoder(_Line)
        self._filler = _jsonl.Filler(_Line, entity_id, metric_id, max_cached, strict,
                                     not check_only)
        self._out = np.empty(1024, EVENT_DTYPE)

    def decode(self, body, now: int | None = None) -> np.ndarray:
        """The records of ``body`` as a view of this decoder's buffer,
        valid until its next call.

        Parameters
        ----------
        body : bytes-like
            The body of a type-2 frame.
        now : int, optional
            The ``ts`` of lines without one (default: the clock, read once).

        Raises
        ------
        ProtocolError
            ``bad_utf8``, ``bad_json`` or ``bad_field``: the whole message
            is rejected.
        """
        if now is None:
            now = time.time_ns()
        lines = _jsonl.count_lines(body)
        if lines >= 0:
            try:
                items = self._decoder.decode_lines(body)
            except msgspec.DecodeError:        # ValidationError included
                items = None
            if items is not None and len(items) == lines:
                if len(self._out) < lines:
                    self._out = np.empty(max(lines, 2 * len(self._out)), EVENT_DTYPE)
                new_entities: list = []
                new_metrics: list = []
                bad = self._filler.fill(items, self._out, new_entities, new_metrics, now)
                if bad < 0:
                    self._learn(new_entities, new_metrics)
                    return self._out[:lines]
                # Names cached from a refused message were never registered.
                self._filler.forget(new_entities, new_metrics)
        out, new_entities, new_metrics = _reference_lines(body, now, self.strict)
        self._learn(new_entities, new_metrics)
        return out

    def _learn(self, entities: list, metrics: list) -> None:
        if self.names is None:
            return
        for kind, new in (("entities", entities), ("metrics", metrics)):
            if new:
                table = self.names[kind]
                for ident, name in new:
                    table.setdefault(ident, name)


def parse_json_lines(body, names: dict | None = None, now: int | None = None) -> np.ndarray:
    """Decode a JSON-lines body into a new array of EVENT_DTYPE records.

    Each non-blank line (lines end at ``\\n``) is an object with ``entity``
    (name or id), ``metric`` (name or id), ``value`` (number) and
    optionally ``ts`` (nanoseconds: an integer, or a number rounded to the
    nearest integer; the gateway's clock when absent).  A NaN value, or a
    ``ts`` that is not finite or past the i64 range, is kept here as an
    invalid record (value NaN), which the router rejects (counted).
    The gateway keeps a :class:`JsonLinesDecoder` per thread instead.

    Parameters
    ----------
    body : bytes-like
        The body of a type-2 frame.
    names : dict, optional
        ``{"entities": {id: name}, "metrics": {id: name}}`` to record the names seen.
    now : int, optional
        The ``ts`` of lines without one (default: the clock).

    Raises
    ------
    ProtocolError
        ``bad_utf8``, ``bad_json`` or ``bad_field``: the whole message is rejected.
    """
    return JsonLinesDecoder(names).decode(body, now).copy()


def _reference_lines(body, now: int, strict: bool = False):
    """The line-by-line decoder: the reference the fast path is tested
    against, and the path of every message the fast path refuses.

    Returns
    -------
    (records, new_entities, new_metrics)
        The new names as ``(id, name)`` lists, to be registered.
    """
    data = bytes(body)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("bad_utf8", f"body is not UTF-8: {exc}") from None
    numbered = [(number, line) for number, line in enumerate(data.split(b"\n"), 1)
                if line.strip(b" \t\r")]
    out = np.zeros(len(numbered), EVENT_DTYPE)
    new: dict = {"entities": {}, "metrics": {}}
    for i, (number, line) in enumerate(numbered):
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError("bad_json", f"line {number}: {exc}") from None
        if not isinstance(rec, dict):
            raise ProtocolError("bad_json", f"line {number}: not a JSON object")
        extra = set(rec) - _JSON_FIELDS
        if extra:
            raise ProtocolError("bad_field", f"line {number}: unknown field(s) {sorted(extra)}")
        for need in ("entity", "metric", "value"):
            if need not in rec:
                raise ProtocolError("bad_field", f"line {number}: missing field {need!r}")
        key = _id(rec["entity"], entity_id, 64, "entity", number, new["entities"], strict)
        metric = _id(rec["metric"], metric_id, 32, "metric", number, new["metrics"], strict)
        value = rec["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError("bad_field", f"line {number}: value must be a number")
        try:
            value = float(value)
        except OverflowError:
            raise ProtocolError("bad_field",
                                f"line {number}: value does not fit a double") from None
        ts = rec.get("ts", now)
        if isinstance(ts, float):
            if math.isfinite(ts) and -(2.0**63) <= ts < 2.0**63:
                ts = round(ts)          # ties to even, as the fast path's nearbyint
            else:
                ts, value = 0, math.nan  # invalid_record, counted by the router
        elif isinstance(ts, bool) or not isinstance(ts, int) or not -(2**63) <= ts < 2**63:
            raise ProtocolError("bad_field",
                                f"line {number}: ts must be a number of nanoseconds in the "
                                f"i64 range")
        out[i] = (key, ts, metric, 0, value)
    return (out, list(new["entities"].items()), list(new["metrics"].items()))


def _id(value, hasher, bits: int, field: str, line: int, new: dict, strict: bool) -> int:
    if isinstance(value, str):
        if strict and not value:
            raise ProtocolError("bad_field", f"line {line}: {field} is an empty name")
        try:
            ident = hasher(value)
        except UnicodeEncodeError:
            raise ProtocolError(
                "bad_field", f"line {line}: {field} name is not valid Unicode") from None
        new.setdefault(ident, value)
        return ident
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**bits:
        raise ProtocolError("bad_field", f"line {line}: {field} must be a name or a u{bits} id")
    return value
