"""Every byte layout that crosses a process boundary, written down once.

This module is the one source of the shared-memory contract: the record
structs (events, ring headers, state rows, index entries, table headers,
rules, alerts), the control segment's blocks and counters, and the codes
that both sides read (kernel status codes, series statuses, stat codes,
rule flags, magics, sketch constants).

Python builds its numpy dtypes and constants from the tables below
(:func:`numpy_dtype`; ``engine.core.records`` and ``engine.health.rules``
re-export them).  The compiled side gets the same tables as Cython
declarations: ``setup.py`` imports this module before anything is compiled
(which is why it imports nothing but the standard library and
:mod:`engine.errors`, and NumPy only inside :func:`numpy_dtype`) and writes
:func:`cython_declarations` to
``build/gen/layout.pxd`` before cythonizing; every ``ext/*.pxd`` and
``ext/*.pyx`` cimports its structs and enums from there.  The generator
refuses (:class:`LayoutError`) a record whose C struct would get implicit
padding or whose size is not the one stated, so the C struct and the
packed numpy dtype cannot differ.  The layout test still compares the C
compiler's own offsets (``engine._table.row_offsets()`` and friends).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

# The kernels' status codes are defined with their exceptions (RF_* below).
from ..errors import (
    STATUS_BUSY,
    STATUS_CORRUPT,
    STATUS_FULL,
    STATUS_OK,
    STATUS_STOPPED,
    STATUS_TIMEOUT,
    STATUS_UNAVAILABLE,
    EngineError,
)

__all__ = [
    "Layout",
    "LayoutError",
    "Field",
    "Struct",
    "STRUCTS",
    "ENUMS",
    "struct_size",
    "field_offset",
    "numpy_dtype",
    "struct_format",
    "check_structs",
    "cython_declarations",
]


class LayoutError(EngineError, ValueError):
    """A record or block layout that the C side and numpy would not agree on."""


# --------------------------------------------------------------------------
# Codes

#: Wait strategies by code, from lowest latency and highest idle CPU to the
#: reverse (the kernels' ``WAIT_*`` codes).
WAIT_STRATEGIES = ("spin", "yield", "sleep", "block")

#: Series status names by code; code order is severity order.
STATUS_NAMES = ("OK", "WARN", "STALE", "CRIT")

#: Stat names by stat code.  Codes 15..17 are the three sliding views, whose
#: user-facing names depend on the engine's ``views``
#: (``engine.health.rules.stat_name``).
STAT_NAMES = (
    "last", "ewma", "mean", "min", "max", "var", "count",
    "win_count", "win_sum", "win_min", "win_max", "win_mean",
    "p50", "p95", "p99",
    "view0", "view1", "view2",
)  # fmt: skip
#: Stat code of alerts decided by the TTL rather than by a rule's stat.
STAT_TTL = 255

#: A seqlock reader retrying a row looks at the clock once every this many
#: tries (a power of two), so that a read of a stable row costs no clock.
READ_CHECK_EVERY = 64
#: A row whose version stays the same odd value this long (ns) after the
#: reader's first look at the clock is reported unavailable
#: (``STATUS_UNAVAILABLE``) unless the table's writer can still run: a
#: worker's write of one row takes well under a microsecond, so only a
#: writer that died, was stopped or was descheduled inside it holds a row
#: this long.
READ_GIVE_UP_NS = 1_000_000
#: ... and this long when the writer is still running or runnable (a
#: descheduled writer on a busy machine gets back to a core within a few
#: scheduler slices; one that stays runnable inside a write this long is
#: hung, and a reader still never hangs with it).
READ_RUNNABLE_GIVE_UP_NS = 100_000_000

#: At most this many rules: the state row's ``rule`` field is a u8 holding
#: ``1 + index``, with 0 meaning "no rule".
MAX_RULES = 255
#: ``metric`` is ``"*"``: the rule of every metric without its own (metric field 0).
RULE_WILDCARD = 1
#: The rule has a warn level (otherwise ``warn`` holds the crit level).
RULE_HAS_WARN = 2
#: The rule has a crit level (otherwise ``crit`` is ``+inf``).
RULE_HAS_CRIT = 4
#: Thresholds fall (``warn > crit``); the stored thresholds are negated.
RULE_FALLING = 8

#: Row flag: the row holds a series.
ROW_USED = 1
#: Row flag: the previous window is final and in the views (or was empty):
#: a lateness raised by a reload never reopens it, and nothing folds it twice.
ROW_PREV_FINAL = 2

#: A row's seqlock version names the ordinal of the last event applied to it
#: (docs/faults.md): event ``o`` writes it ``8 * o + VERSION_WRITING`` (odd)
#: and leaves it ``8 * o + VERSION_APPLIED``; a new row is initialised under
#: ``8 * o + VERSION_INIT_WRITING`` / ``VERSION_INIT_DONE``, and a row a
#: killed worker left mid-write is put back as ``8 * o + VERSION_REPAIRED``.
#: Every value a row takes is larger than the last, so a reader never sees
#: one twice, and a worker replaying a span skips an event whose row
#: already reads ``>= 8 * o + VERSION_APPLIED``.
VERSION_STEP = 8
VERSION_INIT_WRITING = 1
VERSION_INIT_DONE = 2
VERSION_REPAIRED = 4
VERSION_WRITING = 5
VERSION_APPLIED = 6

#: Row flag, set only in a reader's copy: the row's shard is not
#: :data:`SHARD_OK`, so its status reads at least STALE (docs/faults.md).
ROW_SHARD_DOWN = 4
#: The metric id reserved for producer markers (idempotent producers,
#: docs/journal.md): a client's event carrying it is rejected as invalid.
PRODUCER_METRIC = 0xFFFFFFFF
#: The flags of a producer marker event (only the gateway's marker submit
#: routes one).
EVENT_MARKER = 0x4D4B

#: A table's ``shard`` word (written by the engine's supervisor only): why
#: the shard's rows may not be current.  Code 0 is ``ok``.
SHARD_STATES = ("ok", "down", "recovering", "hung", "degraded")

#: Buckets of a row's quantile sketch (its ``sketch`` field): four per power
#: of two, so 85 keep any window whose max/min is below 2**21 (2.1e6) exact
#: to the bucket (docs/health.md, "The quantile sketch").
SKETCH_BUCKETS = 85
#: Where a window's first value lands in the sketch: in the row's line 2
#: (counters 1..33), the line that is prefetched with the row, so a window
#: whose values stay within 16x of its first one touches no other.
SKETCH_FIRST = 17
#: Sliding views of a row (its ``view`` field).
NVIEWS = 3
#: ``fold_age``: no window folded into the views yet.
FOLD_NONE = 65535
#: ``fold_age`` saturates here, one below :data:`FOLD_NONE`.
FOLD_CAP = 65534

#: Magic of an initialised state table ("RFTABLE4": 384-byte rows).
TABLE_MAGIC = 0x52465441424C4534
#: Magic of an initialised ring header ("RFLRING1").
RING_MAGIC = 0x52464C52494E4731

#: Magic of a journal segment file ("RFJ1" read as a little-endian u32).
JOURNAL_MAGIC = 0x314A4652
#: Version of the journal's format (docs/journal.md).
JOURNAL_VERSION = 1
#: Kind of a journal frame: a batch of Event records.
JOURNAL_EVENTS = 1

#: The wire protocol (PROTOCOL.md): the first two bytes of every frame.
FRAME_MAGIC = b"RF"
#: The protocol version every frame carries.
FRAME_VERSION = 1
#: Frame types: binary events, JSON lines, a lookup (query), its rows (reply).
FRAME_EVENTS = 1
FRAME_JSON = 2
FRAME_LOOKUP = 3
FRAME_ROWS = 4
#: Every reason a message (or, for ``invalid_record``, a record) is rejected,
#: by code; the gateway's C drain detects the first six itself.
REASONS = (
    "short_frame",     # fewer than 8 bytes
    "bad_magic",
    "bad_version",
    "bad_type",
    "bad_length",      # body length does not match the header
    "too_large",       # over the gateway's --max-message-bytes
    "bad_utf8",
    "bad_json",        # a line is not a JSON object
    "bad_field",       # unknown, missing or mistyped field in a JSON line
    "invalid_record",  # NaN/inf value or event time out of range (per record)
    "backpressure",    # acked endpoint only: rings stayed full past the ack timeout
    "unavailable",     # the engine lost a worker, or a series' row is stuck mid-write
)

# --------------------------------------------------------------------------
# Records


class Field(NamedTuple):
    """One field of a record: name, numpy kind code (``u1`` .. ``f8``),
    element count (arrays) and a comment carried into the C declaration."""

    name: str
    kind: str
    count: int = 1
    doc: str = ""


class Struct(NamedTuple):
    """A record: its fields in order, the size it must have, and why it is
    laid out so (a comment carried into the C declaration)."""

    fields: tuple[Field, ...]
    size: int
    doc: str = ""


# numpy kind -> (C type, bytes); a scalar's alignment in C is its size.
_KINDS = {
    "u1": ("uint8_t", 1),
    "i2": ("int16_t", 2),
    "u2": ("uint16_t", 2),
    "u4": ("uint32_t", 4),
    "i4": ("int32_t", 4),
    "f4": ("float", 4),
    "u8": ("uint64_t", 8),
    "i8": ("int64_t", 8),
    "f8": ("double", 8),
}

F = Field

#: Every record shared between processes, by its C name.
STRUCTS: dict[str, Struct] = {
    "Event": Struct(
        (F("key", "u8"), F("ts", "i8"), F("metric", "u4"), F("flags", "u4"),
         F("value", "f8")),
        32,
        "The 32-byte event record (engine.EVENT_DTYPE).",
    ),
    "RingHeader": Struct(
        (F("magic", "u8"), F("capacity", "u8"), F("mask", "u8"), F("record_size", "u8"),
         F("producer_bell", "u8", doc="byte offset of the producer's doorbell"),
         F("consumer_bell", "u8", doc="byte offset of the consumer's doorbell"),
         F("data", "u8", doc="byte offset of the record array"),
         F("_pad0", "u8"),
         F("published", "i8", doc="producer cursor: sequences below it are readable"),
         F("_pad1", "i8", 7),
         F("consumed", "i8", doc="consumer cursor: sequences below it are free"),
         F("_pad2", "i8", 7)),
        192,
        "One ring's header: three cache lines so the producer's cursor and the\n"
        "consumer's cursor never share a line.",
    ),
    "StateRow": Struct(
        (F("version", "u8", doc="seqlock: odd while the worker writes the row"),
         F("count", "u8"), F("sum", "f8"), F("min", "f8"), F("max", "f8"), F("last", "f8"),
         F("last_ts", "i8", doc="the series' watermark"),
         F("ewma", "f8"),
         F("mean", "f8", doc="line 1"),
         F("m2", "f8"), F("win_start", "i8"), F("win_sum", "f8"), F("win_min", "f8"),
         F("win_max", "f8"), F("win_count", "u4"), F("sk_base", "i2"), F("status", "u1"),
         F("rule", "u1"), F("pending", "u1"), F("sk_shift", "u1"),
         F("sk_lo", "u1", doc="lowest non-zero sketch counter"),
         F("sk_hi", "u1", doc="highest non-zero sketch counter"),
         F("fold_age", "u2", doc="here, in a line every event writes, so a roll does not"
           " touch one more"),
         F("sketch", "u2", SKETCH_BUCKETS, "from byte 126: lines 2-3 and most of 4"),
         F("key", "u8", doc="byte 296, the tail of line 4: written at a first event, a"
           " stale one or a pending status"),
         F("first_ts", "i8"), F("pending_since", "i8"),
         F("prev_sum", "f8", doc="line 5: what window rolls, late events and status"
           " changes write"),
         F("prev_min", "f8"), F("prev_max", "f8"), F("status_since", "i8"),
         F("metric", "u4"),
         F("stale", "u4", doc="events older than last_ts: counted, never \"last\""),
         F("late", "u4", doc="stale events too late for their window"),
         F("prev_count", "u4"), F("view", "f4", NVIEWS), F("flags", "u4")),
        384,
        "384 bytes, six cache lines (engine.STATE_DTYPE; docs/health.md defines\n"
        "every field).  Ordered by how often an event touches a field: an\n"
        "in-order event in the current window touches lines 0-1 (statistics,\n"
        "window, sketch header) and the one line of the sketch its value counts\n"
        "in, line 2 for a window that stays within 16x of its first value; a\n"
        "window roll, a late event or a status change touches line 5 too.\n"
        "With the table larger than the cache, lines touched per event is what\n"
        "the kernel's speed follows (bench/kernel.py: 4 lines ran at 42% of the\n"
        "plain kernel, 3 lines at over 50%).",
    ),
    "SpanIntent": Struct(
        (F("ring", "u8", doc="index of the ring among the worker's rings"),
         F("start", "i8", doc="the ring's consumer cursor when the span began"),
         F("count", "i8", doc="events in the span"),
         F("base", "u8", doc="ordinal of the span's first event"),
         F("applied", "u8", doc="the worker's applied counter before the span"),
         F("invalid", "u8", doc="its invalid counter before the span"),
         F("full", "u8", doc="its full counter before the span"),
         F("journaled", "u8", doc="1 once the span is in the journal (docs/journal.md)")),
        64,
        "What a worker is about to apply: one span of one ring, and the ordinal\n"
        "its first event gets, and the exact counters before it, which a replay\n"
        "starts again from (docs/faults.md).  A worker block holds two, written\n"
        "alternately, so a kill while one is written leaves the other whole.",
    ),
    "RowUndo": Struct(
        (F("row", "u8", doc="the row being written; its version is odd while it is"),
         F("alert_head", "i8", doc="the alert sink's head before the write"),
         F("cold", "u8", doc="1 once line 5 of the row (from prev_sum) was saved too"),
         F("hot", "u8", doc="bytes of the row saved from its start (lines 0-1)"),
         F("sketch", "u8", doc="1 once the sketch's counters in use were saved"),
         F("ids", "u8", doc="1 once the tail of line 4 (key, first_ts, pending_since)"
           " was saved"),
         F("sk_pos", "u2", doc="the one sketch counter saved, or UNDO_NO_COUNTER"),
         F("sk_old", "u2", doc="its value before the write"),
         F("_pad", "u4", 3),
         F("image", "u1", 384, "the row before the write: its hot lines, the rest as saved")),
        448,
        "A worker's undo slot: the pre-image of the one row it is writing, so a\n"
        "worker started after a kill puts a row left mid-write back as it was\n"
        "(docs/faults.md).  An event copies lines 0-1 and the one sketch counter\n"
        "it counts in; the sketch's counters in use, line 5 and the tail of line\n"
        "4 are copied only on the rare paths that write them, so an event still\n"
        "touches three lines.",
    ),
    "JournalSegment": Struct(
        (F("magic", "u4", doc="JOURNAL_MAGIC"), F("version", "u4"),
         F("shard", "u4", doc="checked on replay"), F("_pad", "u4")),
        16,
        "The header of a journal segment file (docs/journal.md); frames follow.",
    ),
    "JournalFrame": Struct(
        (F("length", "u4", doc="payload bytes: count * 32"),
         F("crc", "u4", doc="CRC32C of the frame from `base` to the payload's end"),
         F("base", "u8", doc="ordinal of the first event"),
         F("count", "u4"), F("kind", "u4", doc="JOURNAL_EVENTS")),
        24,
        "The header of one journal frame: one span of a worker, its events follow.",
    ),
    "IndexEntry": Struct(
        (F("key", "u8"), F("metric", "u4"),
         F("row1", "u4", doc="row number + 1; 0 marks an empty entry")),
        16,
        "An entry of a table's open-addressing index, four a cache line.",
    ),
    "TableHeader": Struct(
        (F("magic", "u8"),
         F("slots", "u8", doc="index entries, a power of two"),
         F("mask", "u8"),
         F("limit", "u8", doc="rows: past it new series are refused and counted"),
         F("used", "u8", doc="rows in use, store-released by the worker only"),
         F("writer", "u8", doc="pid of the worker that applies to the table, 0 for none"),
         F("next_ordinal", "u8",
           doc="ordinals below it may be in rows' versions; stored before use"),
         F("shard", "u8", doc="SHARD_OK, or why its rows are not current (engine-written)"),
         F("marks", "u8", doc="producer marks in use (idempotent producers)"),
         F("_pad", "u8", 7)),
        128,
        "The header of a state table: header | index | rows | producer marks.",
    ),
    "ProducerMark": Struct(
        (F("key", "u8", doc="the producer's marker key for this shard; 0: empty"),
         F("mark", "u8", doc="the highest sequence * 4096 + part the shard took")),
        16,
        "One producer's mark in a table (idempotent producers, PROTOCOL.md):\n"
        "set by the producer's marker events, journaled and snapshotted with\n"
        "the rows, raised only (so a replay may apply a marker twice).",
    ),
    "Rule": Struct(
        (F("metric", "u4"), F("stat", "u1"), F("flags", "u1"), F("_pad0", "u2"),
         F("warn", "f8"), F("crit", "f8"), F("clear", "f8"), F("for_ns", "i8"),
         F("ttl_ns", "i8"), F("_pad1", "u8", 2)),
        64,
        "One compiled rule, one cache line (engine.health.rules.RULE_DTYPE).\n"
        "Thresholds of a falling rule are stored negated, so every rule is\n"
        "evaluated as a rising one.",
    ),
    "RulesHeader": Struct(
        (F("generation", "u8"), F("count", "u8"), F("ttl_ns", "i8"), F("lateness_ns", "i8"),
         F("_pad", "u8", 4)),
        64,
        "The rules segment: this header, then up to MAX_RULES rules.  The engine\n"
        "writes it under the generation word (odd while writing); workers copy\n"
        "it when the generation changes.",
    ),
    "Alert": Struct(
        (F("key", "u8"), F("ts", "i8"), F("metric", "u4"), F("old", "u1"), F("new", "u1"),
         F("stat", "u1"), F("rule", "u1"), F("value", "f8")),
        32,
        "32 bytes, so that an alert ring is an ordinary event ring\n"
        "(engine.ALERT_DTYPE).",
    ),
    "FrameHeader": Struct(
        (F("magic", "u1", 2, "FRAME_MAGIC"), F("version", "u1"), F("type", "u1"),
         F("count", "u4", doc="records (events, lookups, rows) or body bytes (JSON)")),
        8,
        "The 8-byte header of every wire frame (PROTOCOL.md), little-endian.",
    ),
    "LookupRecord": Struct(
        (F("key", "u8"), F("metric", "u4"), F("pad", "u4")),
        16,
        "One (key, metric) pair of a binary lookup (engine.net.protocol.LOOKUP_DTYPE).",
    ),
}
del F


def struct_size(name: str) -> int:
    """Bytes of record ``name`` (packed: the generator refuses padding).

    Parameters
    ----------
    name : str
        A key of :data:`STRUCTS`.

    Returns
    -------
    int
    """
    return sum(_KINDS[f.kind][1] * f.count for f in STRUCTS[name].fields)


def field_offset(name: str, field: str) -> int:
    """Byte offset of ``field`` in record ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`STRUCTS`.
    field : str
        One of its field names.

    Returns
    -------
    int

    Raises
    ------
    KeyError
        An unknown record or field.
    """
    off = 0
    for f in STRUCTS[name].fields:
        if f.name == field:
            return off
        off += _KINDS[f.kind][1] * f.count
    raise KeyError(f"{name} has no field {field!r}")


# numpy kind -> the struct module's code, for the records Python packs with
# struct (the wire frame header); a u1 array is a byte string.
_STRUCT_CODES = {"u1": "B", "i2": "h", "u2": "H", "u4": "I", "i4": "i", "f4": "f",
                 "u8": "Q", "i8": "q", "f8": "d"}


def struct_format(name: str) -> str:
    """The :mod:`struct` format of record ``name``, little-endian, packed.

    Parameters
    ----------
    name : str
        A key of :data:`STRUCTS`.

    Returns
    -------
    str
        E.g. ``"<2sBBI"`` for the wire frame header.
    """
    codes = []
    for f in STRUCTS[name].fields:
        if f.count == 1:
            codes.append(_STRUCT_CODES[f.kind])
        elif f.kind == "u1":
            codes.append(f"{f.count}s")
        else:
            codes.append(f"{f.count}{_STRUCT_CODES[f.kind]}")
    return "<" + "".join(codes)


def numpy_dtype(name: str):
    """The packed, little-endian numpy dtype of record ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`STRUCTS`.

    Returns
    -------
    numpy.dtype
    """
    import numpy as np  # here: setup.py imports this module only to generate

    spec = []
    for f in STRUCTS[name].fields:
        code = f.kind if f.kind == "u1" else "<" + f.kind
        spec.append((f.name, code) if f.count == 1 else (f.name, code, (f.count,)))
    return np.dtype(spec, align=False)


# --------------------------------------------------------------------------
# The control segment

#: Bytes of the control segment's header line (the alert doorbells).
CONTROL_HEADER_BYTES = 64
#: The engine's alert thread sleeps on this doorbell, shared by every alert ring.
ALERT_CONSUMER_BELL = 8
#: Workers never wait for room in an alert ring (they count a drop), so its
#: producer doorbell is one nobody sleeps on.
ALERT_PRODUCER_BELL = 16

#: A worker block: doorbell line, control line, counters lines, two span
#: intents, the undo slot (docs/faults.md).
WORKER_BLOCK_BYTES = 1024
#: Byte offset of a worker block's control words.
WORKER_CONTROL_OFFSET = 64
#: Byte offset of a worker block's counters.
WORKER_COUNTERS_OFFSET = 128
#: A worker block's control words (u64 each), in order.
WORKER_CONTROL = ("stop", "ready", "pid",
                  # the alert sink's head, stored after each alert is written,
                  # so the next worker publishes what its predecessor wrote
                  "alert_head",
                  # the supervisor's restarts of this worker, for stats
                  "restarts",
                  # which of the two span intents is current
                  "intent",
                  # monotonic ns of the drain loop's last turn (hung-worker check)
                  "heartbeat",
                  # the engine's test hook: a worker started with it set exits
                  "crash")
#: Byte offset of a worker block's two span intents.
WORKER_INTENT_OFFSET = 320
#: Byte offset of a worker block's undo slot.
WORKER_UNDO_OFFSET = 448
#: A worker's counters (u64 each, from :data:`WORKER_COUNTERS_OFFSET`), in order.
WORKER_COUNTERS = ("applied", "invalid", "full", "stale", "batches", "max_batch",
                   "late", "alerts", "alerts_dropped", "rules_generation", "sweeps",
                   # exactly-once recovery (docs/faults.md): spans replayed
                   # and their events, rows put back after a kill
                   "replayed_spans", "replayed_events", "rows_repaired",
                   # the journal (docs/journal.md): failed writes, the errno of
                   # the last one, and bytes written
                   "journal_errors", "journal_errno", "journal_bytes",
                   # wall time (ns) of the journal's last fdatasync
                   "journal_synced_ns",
                   # every event with an ordinal below this one is applied:
                   # where a snapshot taken now may start its replay
                   "applied_ordinal",
                   # times the worker waited for room in its full alert ring
                   # (a status change is never dropped: docs/health.md, Alerts)
                   "alert_waits")

#: A producer block: doorbell line, counters line.
PRODUCER_BLOCK_BYTES = 128
#: Byte offset of a producer block's counters.
PRODUCER_COUNTERS_OFFSET = 64
#: A producer's counters (u64 each, from :data:`PRODUCER_COUNTERS_OFFSET`), in order.
PRODUCER_COUNTERS = ("accepted", "invalid", "batches")

EVENT_BYTES = struct_size("Event")
RING_HEADER_BYTES = struct_size("RingHeader")
ROW_BYTES = struct_size("StateRow")
INDEX_ENTRY_BYTES = struct_size("IndexEntry")
TABLE_HEADER_BYTES = struct_size("TableHeader")
PRODUCER_MARK_BYTES = struct_size("ProducerMark")
#: Producer mark entries of a table (open addressing, at most half used:
#: 32,768 producers a shard): after the rows, a fixed 1 MiB.
PRODUCER_MARK_SLOTS = 65536
RULE_BYTES = struct_size("Rule")
RULES_HEADER_BYTES = struct_size("RulesHeader")
#: Byte offsets of a ring header's two cursors (read by the engine's stats).
RING_PUBLISHED_OFFSET = field_offset("RingHeader", "published")
RING_CONSUMED_OFFSET = field_offset("RingHeader", "consumed")


@dataclass(frozen=True)
class Layout:
    """Byte offsets inside the control segment of one engine.

    A header line (the alert doorbells), worker blocks (doorbell, control
    words, counters), then producer blocks (doorbell, counters), then one
    header per event ring and one per alert ring, then the ring records,
    page-aligned.  Ring ``(p, w)`` carries producer ``p``'s events to worker
    ``w``; alert ring ``w`` carries worker ``w``'s status changes to the
    engine.

    Parameters
    ----------
    workers, producers : int
        How many of each the engine has.
    ring_slots : int
        Records per event ring (a power of two).
    alert_slots : int
        Records per alert ring (a power of two).
    """

    workers: int
    producers: int
    ring_slots: int
    alert_slots: int = 4096

    ALERT_CONSUMER_BELL = ALERT_CONSUMER_BELL
    ALERT_PRODUCER_BELL = ALERT_PRODUCER_BELL

    @property
    def worker_base(self) -> int:
        """Offset of the first worker block."""
        return CONTROL_HEADER_BYTES

    def worker_block(self, w: int) -> int:
        """Offset of worker ``w``'s block (its doorbell is at its start)."""
        return self.worker_base + w * WORKER_BLOCK_BYTES

    def worker_control(self, w: int, word: str) -> int:
        """Offset of one of worker ``w``'s :data:`WORKER_CONTROL` words."""
        return self.worker_block(w) + WORKER_CONTROL_OFFSET + 8 * WORKER_CONTROL.index(word)

    def worker_counter(self, w: int, name: str = WORKER_COUNTERS[0]) -> int:
        """Offset of one of worker ``w``'s :data:`WORKER_COUNTERS` (the first
        by default, where the whole run of them starts)."""
        return self.worker_block(w) + WORKER_COUNTERS_OFFSET + 8 * WORKER_COUNTERS.index(name)

    @property
    def producer_base(self) -> int:
        """Offset of the first producer block."""
        return self.worker_block(self.workers)

    def producer_block(self, p: int) -> int:
        """Offset of producer ``p``'s block (its doorbell is at its start)."""
        return self.producer_base + p * PRODUCER_BLOCK_BYTES

    def producer_counters(self, p: int) -> int:
        """Offset of producer ``p``'s :data:`PRODUCER_COUNTERS`."""
        return self.producer_block(p) + PRODUCER_COUNTERS_OFFSET

    @property
    def ring_header_base(self) -> int:
        """Offset of the first ring header."""
        return self.producer_block(self.producers)

    def ring_index(self, p: int, w: int) -> int:
        """Number of ring ``(p, w)`` among the event rings."""
        return p * self.workers + w

    def ring_header(self, p: int, w: int) -> int:
        """Offset of the header of producer ``p``'s ring to worker ``w``."""
        return self.ring_header_base + self.ring_index(p, w) * RING_HEADER_BYTES

    def alert_header(self, w: int) -> int:
        """Offset of the header of worker ``w``'s alert ring."""
        return self.ring_header(self.producers, 0) + w * RING_HEADER_BYTES

    @property
    def data_base(self) -> int:
        """Offset of the first ring's records (page-aligned)."""
        end = self.alert_header(self.workers)
        return (end + 4095) // 4096 * 4096

    def ring_data(self, p: int, w: int) -> int:
        """Offset of ring ``(p, w)``'s records."""
        return self.data_base + self.ring_index(p, w) * self.ring_slots * EVENT_BYTES

    def alert_data(self, w: int) -> int:
        """Offset of worker ``w``'s alert records."""
        return self.ring_data(self.producers, 0) + w * self.alert_slots * EVENT_BYTES

    @property
    def total_bytes(self) -> int:
        """Size of the whole control segment."""
        return self.alert_data(self.workers)

    def rings_of_worker(self, w: int) -> list[int]:
        """Header offsets of the rings worker ``w`` drains, by producer."""
        return [self.ring_header(p, w) for p in range(self.producers)]

    def rings_of_producer(self, p: int) -> list[int]:
        """Header offsets of the rings producer ``p`` fills, by worker."""
        return [self.ring_header(p, w) for w in range(self.workers)]

    def all_rings(self) -> list[int]:
        """Header offsets of every event ring."""
        return [self.ring_header(p, w) for p in range(self.producers) for w in range(self.workers)]


# --------------------------------------------------------------------------
# The generator


def _upper(name: str) -> str:
    return name.upper()


#: The enums of the generated declarations: (comment, [(name, value), ...]).
ENUMS: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = (
    ("Status codes of every kernel (engine.errors maps them to exceptions).",
     (("RF_OK", STATUS_OK), ("RF_TIMEOUT", STATUS_TIMEOUT), ("RF_STOPPED", STATUS_STOPPED),
      ("RF_BUSY", STATUS_BUSY), ("RF_UNAVAILABLE", STATUS_UNAVAILABLE),
      ("RF_FULL", STATUS_FULL), ("RF_CORRUPT", STATUS_CORRUPT))),
    ("Seqlock reads: a retry looks at the clock every READ_CHECK_EVERY tries (a\n"
     "power of two) and gives up READ_GIVE_UP_NS after its first look, or\n"
     "READ_RUNNABLE_GIVE_UP_NS while the table's writer can still run.",
     (("READ_CHECK_EVERY", READ_CHECK_EVERY), ("READ_GIVE_UP_NS", READ_GIVE_UP_NS),
      ("READ_RUNNABLE_GIVE_UP_NS", READ_RUNNABLE_GIVE_UP_NS))),
    ("A table's shard word (engine-written): why its rows may not be current.",
     tuple((f"SHARD_{_upper(n)}", i) for i, n in enumerate(SHARD_STATES))),
    ("Row versions: ordinal * VERSION_STEP + phase (docs/faults.md).",
     (("VERSION_STEP", VERSION_STEP), ("VERSION_INIT_WRITING", VERSION_INIT_WRITING),
      ("VERSION_INIT_DONE", VERSION_INIT_DONE), ("VERSION_REPAIRED", VERSION_REPAIRED),
      ("VERSION_WRITING", VERSION_WRITING), ("VERSION_APPLIED", VERSION_APPLIED))),
    ("Wait strategies (EngineConfig.wait).",
     tuple((f"WAIT_{_upper(n)}", i) for i, n in enumerate(WAIT_STRATEGIES))),
    ("Magics of initialised shared structures.",
     (("RING_MAGIC", RING_MAGIC), ("TABLE_MAGIC", TABLE_MAGIC))),
    ("The journal's format (docs/journal.md).",
     (("JOURNAL_MAGIC", JOURNAL_MAGIC), ("JOURNAL_VERSION", JOURNAL_VERSION),
      ("JOURNAL_EVENTS", JOURNAL_EVENTS))),
    ("Series statuses; code order is severity order.",
     tuple((f"ST_{n}", i) for i, n in enumerate(STATUS_NAMES))),
    ("Stat codes of rules and alerts; STAT_COUNT_ALL is how many there are.",
     tuple((f"STAT_{_upper(n)}", i) for i, n in enumerate(STAT_NAMES))
     + (("STAT_COUNT_ALL", len(STAT_NAMES)), ("STAT_TTL", STAT_TTL))),
    ("Rule flags and the most rules a segment holds.",
     (("RULE_WILDCARD", RULE_WILDCARD), ("RULE_HAS_WARN", RULE_HAS_WARN),
      ("RULE_HAS_CRIT", RULE_HAS_CRIT), ("RULE_FALLING", RULE_FALLING),
      ("MAX_RULES", MAX_RULES))),
    ("State row flags, sketch and views.",
     (("ROW_USED", ROW_USED), ("ROW_PREV_FINAL", ROW_PREV_FINAL),
      ("ROW_SHARD_DOWN", ROW_SHARD_DOWN), ("PRODUCER_METRIC", PRODUCER_METRIC),
      ("EVENT_MARKER", EVENT_MARKER), ("PRODUCER_MARK_SLOTS", PRODUCER_MARK_SLOTS),
      ("SKETCH_BUCKETS", SKETCH_BUCKETS), ("SKETCH_FIRST", SKETCH_FIRST),
      # What the undo slot copies (ext/undo.pxd): the sketch, the tail of
      # line 4 (key to pending_since) and line 5 (from prev_sum).
      ("ROW_SKETCH_OFFSET", field_offset("StateRow", "sketch")),
      ("ROW_IDS_OFFSET", field_offset("StateRow", "key")),
      ("ROW_IDS_BYTES", field_offset("StateRow", "prev_sum") - field_offset("StateRow", "key")),
      ("ROW_COLD_OFFSET", field_offset("StateRow", "prev_sum")),
      ("ROW_COLD_BYTES", struct_size("StateRow") - field_offset("StateRow", "prev_sum")),
      ("NVIEWS", NVIEWS), ("FOLD_NONE", FOLD_NONE),
      ("FOLD_CAP", FOLD_CAP))),
    ("A worker block: byte offsets, control words (WC_*) and counters (WK_*).",
     (("WB_BYTES", WORKER_BLOCK_BYTES), ("WB_CONTROL", WORKER_CONTROL_OFFSET),
      ("WB_COUNTERS", WORKER_COUNTERS_OFFSET), ("WB_INTENT", WORKER_INTENT_OFFSET),
      ("WB_UNDO", WORKER_UNDO_OFFSET))
     + tuple((f"WC_{_upper(n)}", i) for i, n in enumerate(WORKER_CONTROL))
     + tuple((f"WK_{_upper(n)}", i) for i, n in enumerate(WORKER_COUNTERS))),
    ("A producer block: byte offsets and counters (PC_*).",
     (("PB_BYTES", PRODUCER_BLOCK_BYTES), ("PB_COUNTERS", PRODUCER_COUNTERS_OFFSET))
     + tuple((f"PC_{_upper(n)}", i) for i, n in enumerate(PRODUCER_COUNTERS))),
    ("Wire frames (PROTOCOL.md): magic bytes, version, types, rejection reasons.",
     (("FRAME_MAGIC_0", FRAME_MAGIC[0]), ("FRAME_MAGIC_1", FRAME_MAGIC[1]),
      ("FRAME_VERSION", FRAME_VERSION), ("FRAME_EVENTS", FRAME_EVENTS),
      ("FRAME_JSON", FRAME_JSON), ("FRAME_LOOKUP", FRAME_LOOKUP), ("FRAME_ROWS", FRAME_ROWS))
     + tuple((f"REASON_{_upper(n)}", i) for i, n in enumerate(REASONS))),
)


def check_structs() -> None:
    """Refuse any record the C compiler would lay out differently from its
    packed numpy dtype, and any block whose words do not fit.

    Raises
    ------
    LayoutError
        A field off its natural alignment (C would pad before it), a size
        not a multiple of the widest field (C would pad after it), a size
        other than the one stated, or counters overflowing their block.
    """
    for name, spec in STRUCTS.items():
        off, widest = 0, 1
        for f in spec.fields:
            if f.kind not in _KINDS:
                raise LayoutError(f"{name}.{f.name}: unknown kind {f.kind!r}")
            size = _KINDS[f.kind][1]
            if off % size:
                raise LayoutError(
                    f"{name}.{f.name} ({_KINDS[f.kind][0]}) at byte {off} is not {size}-byte "
                    f"aligned: C would insert {size - off % size} bytes of padding before it "
                    "that the packed numpy dtype does not have; reorder the fields or add "
                    "an explicit _pad field"
                )
            widest = max(widest, size)
            off += size * f.count
        if off % widest:
            raise LayoutError(
                f"{name} is {off} bytes, not a multiple of its widest field ({widest}): "
                "C would pad its end; add an explicit _pad field"
            )
        if off != spec.size:
            raise LayoutError(f"{name} is {off} bytes; its layout says {spec.size}")
    if WORKER_COUNTERS_OFFSET + 8 * len(WORKER_COUNTERS) > WORKER_BLOCK_BYTES:
        raise LayoutError("worker counters overflow the worker block")
    if WORKER_CONTROL_OFFSET + 8 * len(WORKER_CONTROL) > WORKER_COUNTERS_OFFSET:
        raise LayoutError("worker control words overflow into the counters")
    if WORKER_COUNTERS_OFFSET + 8 * len(WORKER_COUNTERS) > WORKER_INTENT_OFFSET:
        raise LayoutError("worker counters overflow into the span intents")
    if WORKER_INTENT_OFFSET + 2 * STRUCTS["SpanIntent"].size > WORKER_UNDO_OFFSET:
        raise LayoutError("span intents overflow into the undo slot")
    if WORKER_UNDO_OFFSET + STRUCTS["RowUndo"].size > WORKER_BLOCK_BYTES:
        raise LayoutError("the undo slot overflows the worker block")
    if STRUCTS["RowUndo"].fields[-1].count != STRUCTS["StateRow"].size:
        raise LayoutError("the undo slot's image is not one state row")
    if PRODUCER_COUNTERS_OFFSET + 8 * len(PRODUCER_COUNTERS) > PRODUCER_BLOCK_BYTES:
        raise LayoutError("producer counters overflow the producer block")


def _comment(text: str, indent: str = "") -> list[str]:
    return [f"{indent}# {line}" if line else f"{indent}#" for line in text.splitlines()]


def cython_declarations() -> str:
    """The Cython declaration file (``layout.pxd``) of every record and code.

    Returns
    -------
    str
        ``cdef enum`` blocks and ``ctypedef struct`` declarations, in
        the order of :data:`ENUMS` and :data:`STRUCTS`.

    Raises
    ------
    LayoutError
        From :func:`check_structs`.
    """
    check_structs()
    types = sorted({_KINDS[f.kind][0] for s in STRUCTS.values() for f in s.fields} - {"float",
                                                                                      "double"})
    out = [
        "# cython: language_level=3",
        "# Generated by setup.py from engine/core/layout.py: edit that file, not this one.",
        "",
        f"from libc.stdint cimport {', '.join(types)}",
    ]
    for doc, members in ENUMS:
        out += ["", *_comment(doc), "cdef enum:"]
        out += [f"    {n} = {v:#x}" if v > 0xFFFF else f"    {n} = {v}" for n, v in members]
    for name, spec in STRUCTS.items():
        out += ["", *_comment(spec.doc), f"ctypedef struct {name}:"]
        for f in spec.fields:
            decl = f"    {_KINDS[f.kind][0]} {f.name}" + (f"[{f.count}]" if f.count > 1 else "")
            out.append(f"{decl:<30}# {f.doc}" if f.doc else decl)
    return "\n".join(out) + "\n"
