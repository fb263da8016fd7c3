# cython: language_level=3
"""State tables: the per-series update kernel and lock-free seqlock reads of
one table (private module; the engine's workers run the same kernels
through engine._worker, and engine._query reads every table of an engine).

:class:`Table` is the kernels' face for tests and benchmarks: apply, sweep
and reload a table in this process, and read it back."""

cimport numpy as cnp
import numpy as np
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE, PyBUF_C_CONTIGUOUS
from libc.stdint cimport int64_t, uint64_t, uint32_t
from libc.string cimport memset, memcpy
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from atomic cimport rf_load_acquire_u64, rf_store_relaxed_u64, rf_store_release_u64, rf_mix64
from layout cimport (Event, StateRow, IndexEntry, TableHeader, Rule, RulesHeader, Alert, RowUndo,
                     ProducerMark, RF_OK, RF_FULL, TABLE_MAGIC, MAX_RULES, SKETCH_BUCKETS,
                     STAT_TTL, NVIEWS, PRODUCER_MARK_SLOTS)
from params cimport Params, BatchCounters, params_init
from alertsink cimport AlertSink, sink_array
from index cimport (table_rows, series_hash, table_load, table_marks, mark_find,
                    mark_raise)
from query cimport row_read, table_find, status_seen
from apply cimport apply_batch, table_sweep, table_reload, ordinals_reserve
from undo cimport table_repair
from outarrays cimport rows_out, alerts_out
from engine.errors import raise_for_status

cnp.import_array()


ROW_BYTES = sizeof(StateRow)
HEADER_BYTES = sizeof(TableHeader)
ALERT_BYTES = sizeof(Alert)
RULE_BYTES = sizeof(Rule)
RULES_HEADER_BYTES = sizeof(RulesHeader)
MAX_RULE_COUNT = MAX_RULES
SKETCH_SIZE = SKETCH_BUCKETS
STAT_TTL_CODE = STAT_TTL


cdef class Settings:
    """Kernel settings and rules, for :meth:`Table.apply` (the worker keeps
    its own copy of the same in its drain loop).

    Parameters
    ----------
    ts_min, ts_max : int
        Sane range of event times (ns); ``ts_min`` must not be negative.
    window_ns, lateness_ns : int
        Window width and allowed lateness (``0 <= lateness <= window``).
    half_life_ns : float
        Half-life of the EWMA in event time.
    views : tuple of 3 numbers
        Horizons of the sliding views, in windows.
    ttl_ns : int
        Default TTL (0: never STALE).
    rules : numpy.ndarray, optional
        Compiled rules (``engine.health.rules.RULE_DTYPE``).
    health : bool
        False: lifetime statistics only, no windows, sketch or rules (the
        plain-statistics kernel the benchmarks compare against).
    """
    cdef Params p
    cdef Rule *store
    cdef RowUndo undo

    def __cinit__(self, *, int64_t ts_min, int64_t ts_max, int64_t window_ns,
                  int64_t lateness_ns=0, double half_life_ns, views=(1, 5, 15),
                  int64_t ttl_ns=0, rules=None, bint health=True):
        cdef double v[3]
        self.store = <Rule *>PyMem_Malloc(MAX_RULES * sizeof(Rule))
        if self.store == NULL:
            raise MemoryError()
        if window_ns <= 0:
            raise ValueError(f"window must be positive, got {window_ns} ns")
        # Window arithmetic (starts, ends plus lateness) must not overflow.
        if ts_min < 0 or ts_max > 0x7FFFFFFFFFFFFFFF - 4 * window_ns:
            raise ValueError("event times must lie in 0 .. INT64_MAX - 4 windows")
        if not 0 <= lateness_ns <= window_ns:
            raise ValueError(f"lateness must be in 0..window ({window_ns} ns), "
                             f"got {lateness_ns}")
        if not half_life_ns > 0:
            raise ValueError(f"half-life must be positive, got {half_life_ns}")
        if len(views) != NVIEWS or not all(x > 0 for x in views):
            raise ValueError(f"views must be {NVIEWS} positive horizons, got {views!r}")
        for j in range(NVIEWS):
            v[j] = float(views[j])
        if ttl_ns < 0:
            raise ValueError("ttl must not be negative")
        params_init(&self.p, ts_min, ts_max, window_ns, lateness_ns, half_life_ns, v, ttl_ns)
        self.p.rules = self.store
        self.p.health = health
        memset(&self.undo, 0, sizeof(RowUndo))
        self.undo.row = <uint64_t>-1
        self.p.undo = &self.undo
        self.set_rules(rules, ttl_ns, lateness_ns)

    def __dealloc__(self):
        PyMem_Free(self.store)

    def undo_slot(self):
        """The undo slot the kernels saved the last written row in:
        ``(row, cold, image, sketch, sk_pos, sk_old, ids)``, image the
        row's bytes before the write: lines 0-1 always, line 5 (from
        prev_sum) when ``cold``, the tail of line 4 (key to pending_since)
        when ``ids``, the sketch's counters sk_lo..sk_hi when ``sketch``,
        else the one counter ``sk_pos`` (65535: none) was ``sk_old``
        (docs/faults.md)."""
        return (self.undo.row, bool(self.undo.cold),
                bytes((<char *>self.undo.image)[:sizeof(StateRow)]),
                bool(self.undo.sketch), self.undo.sk_pos, self.undo.sk_old,
                bool(self.undo.ids))

    def set_rules(self, rules, int64_t ttl_ns, int64_t lateness_ns):
        """Replace the rules, the default TTL and the lateness (call
        :meth:`Table.reload` afterwards, as a worker does)."""
        cdef cnp.ndarray r
        cdef int64_t n = 0
        if not 0 <= lateness_ns <= self.p.window:
            raise ValueError(f"lateness must be in 0..window ({self.p.window} ns), "
                             f"got {lateness_ns}")
        if ttl_ns < 0:
            raise ValueError("ttl must not be negative")
        if rules is not None:
            r = cnp.PyArray_GETCONTIGUOUS(rules)
            if r.ndim != 1 or r.itemsize != sizeof(Rule):
                raise ValueError("rules must be a 1-d RULE_DTYPE array")
            n = r.shape[0]
            if n > MAX_RULES:
                raise ValueError(f"at most {MAX_RULES} rules, got {n}")
            if n:
                memcpy(self.store, cnp.PyArray_DATA(r), n * sizeof(Rule))
        self.p.nrules = n
        self.p.ttl = ttl_ns
        self.p.lateness = lateness_ns

    @property
    def window_ns(self):
        return self.p.window

    @property
    def lateness_ns(self):
        return self.p.lateness


def row_offsets():
    """Byte offset of every StateRow field, for the layout test."""
    cdef StateRow r
    cdef size_t b = <size_t>&r
    return {
        "version": <size_t>&r.version - b, "key": <size_t>&r.key - b,
        "metric": <size_t>&r.metric - b, "flags": <size_t>&r.flags - b,
        "count": <size_t>&r.count - b, "sum": <size_t>&r.sum - b,
        "min": <size_t>&r.min - b, "max": <size_t>&r.max - b,
        "last": <size_t>&r.last - b, "last_ts": <size_t>&r.last_ts - b,
        "first_ts": <size_t>&r.first_ts - b, "mean": <size_t>&r.mean - b,
        "m2": <size_t>&r.m2 - b, "ewma": <size_t>&r.ewma - b,
        "stale": <size_t>&r.stale - b, "late": <size_t>&r.late - b,
        "status_since": <size_t>&r.status_since - b,
        "pending_since": <size_t>&r.pending_since - b,
        "win_start": <size_t>&r.win_start - b, "win_count": <size_t>&r.win_count - b,
        "prev_count": <size_t>&r.prev_count - b, "win_sum": <size_t>&r.win_sum - b,
        "win_min": <size_t>&r.win_min - b, "win_max": <size_t>&r.win_max - b,
        "prev_sum": <size_t>&r.prev_sum - b, "prev_min": <size_t>&r.prev_min - b,
        "prev_max": <size_t>&r.prev_max - b, "view": <size_t>&r.view[0] - b,
        "fold_age": <size_t>&r.fold_age - b, "sk_base": <size_t>&r.sk_base - b,
        "status": <size_t>&r.status - b, "pending": <size_t>&r.pending - b,
        "rule": <size_t>&r.rule - b, "sk_shift": <size_t>&r.sk_shift - b,
        "sk_lo": <size_t>&r.sk_lo - b, "sk_hi": <size_t>&r.sk_hi - b,
        "sketch": <size_t>&r.sketch[0] - b,
    }


def alert_offsets():
    """Byte offset of every Alert field, for the layout test."""
    cdef Alert a
    cdef size_t b = <size_t>&a
    return {"key": <size_t>&a.key - b, "ts": <size_t>&a.ts - b,
            "metric": <size_t>&a.metric - b, "old": <size_t>&a.old - b,
            "new": <size_t>&a.new - b, "stat": <size_t>&a.stat - b,
            "rule": <size_t>&a.rule - b, "value": <size_t>&a.value - b,
            "itemsize": sizeof(Alert)}


def rule_offsets():
    """Byte offset of every Rule field, for the layout test."""
    cdef Rule u
    cdef size_t b = <size_t>&u
    return {"metric": <size_t>&u.metric - b, "stat": <size_t>&u.stat - b,
            "flags": <size_t>&u.flags - b, "warn": <size_t>&u.warn - b,
            "crit": <size_t>&u.crit - b, "clear": <size_t>&u.clear - b,
            "for_ns": <size_t>&u.for_ns - b, "ttl_ns": <size_t>&u.ttl_ns - b,
            "itemsize": sizeof(Rule), "header": sizeof(RulesHeader)}


def event_offsets():
    """Byte offset of every Event field, for the layout test."""
    cdef Event e
    cdef size_t b = <size_t>&e
    return {"key": <size_t>&e.key - b, "ts": <size_t>&e.ts - b,
            "metric": <size_t>&e.metric - b, "flags": <size_t>&e.flags - b,
            "value": <size_t>&e.value - b, "itemsize": sizeof(Event)}


INDEX_ENTRY_BYTES = sizeof(IndexEntry)


def table_bytes(uint64_t slots, uint64_t limit):
    """Bytes a table with ``slots`` index entries and ``limit`` rows takes
    (and its producer marks)."""
    return sizeof(TableHeader) + slots * sizeof(IndexEntry) + limit * sizeof(StateRow) \
        + PRODUCER_MARK_SLOTS * sizeof(ProducerMark)


def init_table(buffer, uint64_t slots, uint64_t limit):
    """Write an empty table at the start of a zero-filled ``buffer``: an
    index of ``slots`` entries (a power of two) and room for ``limit``
    series, at most half of ``slots`` so that probe chains stay short."""
    cdef Py_buffer view
    if slots == 0 or slots & (slots - 1):
        raise ValueError(f"index slots must be a power of two, got {slots}")
    if limit == 0 or 2 * limit > slots or limit >= 0xFFFFFFFF:
        raise ValueError(f"table limit must be in 1..{slots // 2}, got {limit}")
    PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
    try:
        if <size_t>view.len < sizeof(TableHeader) + slots * sizeof(IndexEntry) \
                + limit * sizeof(StateRow) + PRODUCER_MARK_SLOTS * sizeof(ProducerMark):
            raise ValueError("table does not fit in the buffer")
        th = <TableHeader *>view.buf
        # A fresh /dev/shm segment is zero already; clearing again would
        # touch every page of a large table for nothing.
        th.slots = slots
        th.mask = slots - 1
        th.limit = limit
        rf_store_relaxed_u64(&th.used, 0)
        rf_store_release_u64(&th.magic, TABLE_MAGIC)
    finally:
        PyBuffer_Release(&view)


def mix64(cnp.ndarray keys):
    """The 64-bit mixer applied to every element of a uint64 array."""
    cdef const uint64_t[::1] k = keys
    out = cnp.PyArray_EMPTY(1, [k.shape[0]], cnp.NPY_UINT64, 0)
    cdef uint64_t[::1] o = out
    cdef Py_ssize_t i
    with nogil:
        for i in range(k.shape[0]):
            o[i] = rf_mix64(k[i])
    return out


def series_slots(cnp.ndarray keys, cnp.ndarray metrics, uint64_t mask):
    """Home slot of each (key, metric) in a table with this mask."""
    cdef const uint64_t[::1] k = keys
    cdef const uint32_t[::1] m = metrics
    out = cnp.PyArray_EMPTY(1, [k.shape[0]], cnp.NPY_UINT64, 0)
    cdef uint64_t[::1] o = out
    cdef Py_ssize_t i
    with nogil:
        for i in range(k.shape[0]):
            o[i] = series_hash(k[i], m[i]) & mask
    return out


cdef class Table:
    """A state table in ``buffer`` (written by :func:`init_table`).

    Any number of ``Table`` objects in any processes may read the same
    table; exactly one may :meth:`apply` to it.  Its attributes are declared
    in ext/engine/_table.pxd, for engine._query.

    A row whose seqlock version stays odd (its writer died or stalled inside
    the write) is given up on after about a millisecond: reads of one
    series or of one entity raise :class:`engine.errors.SeriesUnavailable`,
    and the whole-table scans (:meth:`snapshot_into`,
    :meth:`select_status_into`) leave the row out and count it in
    :attr:`unavailable`, so that one wedged row does not blind a fleet-wide
    view.  No copy is ever made up.

    Attributes
    ----------
    unavailable : int
        Rows this object's whole-table scans left out because they stayed
        mid-write, since it was created.
    """

    def __cinit__(self, buffer):
        self.has_view = False
        PyObject_GetBuffer(buffer, &self.view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
        self.has_view = True
        self.th = <TableHeader *>self.view.buf
        if <size_t>self.view.len < sizeof(TableHeader) or \
                rf_load_acquire_u64(&self.th.magic) != TABLE_MAGIC:
            self.release_buffer()
            raise ValueError("no state table in this buffer (bad magic)")
        if <size_t>self.view.len < sizeof(TableHeader) + self.th.slots * sizeof(IndexEntry) \
                + self.th.limit * sizeof(StateRow) + PRODUCER_MARK_SLOTS * sizeof(ProducerMark):
            self.release_buffer()
            raise ValueError("the buffer is shorter than the table its header describes")

    def __dealloc__(self):
        self.release_buffer()

    def release_buffer(self):
        if self.has_view:
            PyBuffer_Release(&self.view)
            self.has_view = False
            self.th = NULL

    cdef TableHeader *header(self) noexcept:
        return self.th

    @property
    def slots(self):
        self.check()
        return self.th.slots

    @property
    def limit(self):
        self.check()
        return self.th.limit

    @property
    def used(self):
        self.check()
        return rf_load_acquire_u64(&self.th.used)

    def apply(self, cnp.ndarray events, Settings settings not None, alerts, base=None):
        """Run the update kernel over ``events`` (EVENT_DTYPE, contiguous),
        writing status changes into ``alerts`` (ALERT_DTYPE) from index 0.

        Event ``i`` gets ordinal ``base + i`` (docs/faults.md); by default
        fresh ordinals.  Passing the ``base`` of an earlier call replays
        that span as a worker does after a fault: events already applied
        are counted, not applied again.

        Returns ``(applied, invalid, full, stale, late, alerts_written,
        alerts_dropped)`` for the batch."""
        self.check()
        if not cnp.PyArray_IS_C_CONTIGUOUS(events) or events.itemsize != sizeof(Event) \
                or events.ndim != 1:
            raise ValueError("events must be a 1-d C-contiguous EVENT_DTYPE array")
        cdef BatchCounters c
        cdef AlertSink s
        cdef int64_t cap
        cdef Alert *buf = alerts_out(alerts, &cap)
        sink_array(&s, buf, cap)
        memset(&c, 0, sizeof(c))
        cdef const Event *ev = <const Event *>cnp.PyArray_DATA(events)
        cdef int64_t n = events.shape[0]
        cdef uint64_t first
        if base is None:
            first = ordinals_reserve(self.th, <uint64_t>n)
        else:
            first = base
            if first == 0:
                raise ValueError("ordinals start at 1")
            if first + <uint64_t>n > self.th.next_ordinal:
                rf_store_release_u64(&self.th.next_ordinal, first + <uint64_t>n)
        with nogil:
            apply_batch(self.th, ev, n, first, &settings.p, &c, &s)
        return c.applied, c.invalid, c.full, c.stale, c.late, s.written, s.dropped

    def load_rows(self, cnp.ndarray rows):
        """Fill this empty table with ``rows`` (STATE_DTYPE, as
        :meth:`snapshot_into` copies them: a snapshot), rebuilding its
        index; before any worker or reader uses it.  Returns a status code:
        ``STATUS_OK``, ``STATUS_FULL`` (more rows than the table's limit)
        or ``STATUS_CORRUPT`` (a row mid-write, or a series twice)."""
        self.check()
        if rows.itemsize != sizeof(StateRow) or rows.ndim != 1 or rows.dtype.names is None \
                or not cnp.PyArray_IS_C_CONTIGUOUS(rows):
            raise ValueError("rows must be a 1-d C-contiguous STATE_DTYPE array")
        # Read only: a snapshot's rows may be a read-only buffer.
        cdef const StateRow *src = <const StateRow *>cnp.PyArray_DATA(rows)
        cdef uint64_t n = <uint64_t>rows.shape[0]
        cdef int status
        if n == 0:
            return RF_OK
        with nogil:
            status = table_load(self.th, src, n)
        return status

    def advance_ordinals(self, uint64_t ordinal):
        """Make every ordinal handed out from now on at least ``ordinal``
        (a start, past everything its journal holds: a marker leaves no
        ordinal in a row, and a reused ordinal would name a segment that
        exists)."""
        self.check()
        if ordinal > self.th.next_ordinal:
            rf_store_release_u64(&self.th.next_ordinal, ordinal)

    @property
    def mark_count(self):
        """Producer marks in use (at most PRODUCER_MARK_SLOTS // 2)."""
        self.check()
        return rf_load_acquire_u64(&self.th.marks)

    def find_mark(self, uint64_t key):
        """The mark of producer marker key ``key`` (0: none), read while the
        worker writes (PROTOCOL.md, idempotent producers)."""
        self.check()
        return mark_find(self.th, key)

    def marks(self):
        """Every producer mark in use, as an array of (key, mark) uint64
        pairs: what a snapshot saves beside the rows."""
        self.check()
        cdef ProducerMark *m = table_marks(self.th)
        cdef Py_ssize_t i, n = 0
        out = np.zeros((PRODUCER_MARK_SLOTS, 2), np.uint64)
        cdef uint64_t[:, ::1] o = out
        for i in range(PRODUCER_MARK_SLOTS):
            key = rf_load_acquire_u64(&m[i].key)
            if key:
                o[n, 0] = key
                o[n, 1] = rf_load_acquire_u64(&m[i].mark)
                n += 1
        return out[:n].copy()

    def load_marks(self, marks):
        """Raise the producer marks of this table to ``marks`` ((key, mark)
        pairs, as :meth:`marks` returns them; a snapshot's).  Returns a
        status code: ``STATUS_FULL`` when they do not fit."""
        self.check()
        cdef const uint64_t[:, ::1] src = np.ascontiguousarray(marks, np.uint64).reshape(-1, 2)
        cdef Py_ssize_t i
        for i in range(src.shape[0]):
            if src[i, 0] == 0 or not mark_raise(self.th, src[i, 0], src[i, 1]):
                return RF_FULL
        return RF_OK

    def repair(self, Settings settings not None):
        """What a worker does first after a kill (docs/faults.md): put back
        the row ``settings``' undo slot names if it is mid-write, and finish
        or drop a half-added row.  Returns ``(found, alert_head)``: bits of
        ``engine._worker.ROW_PUT_BACK`` and ``INSERT_FINISHED``, and the
        alert head to resume from (-1 unless a row was put back)."""
        self.check()
        cdef int64_t head = -1
        cdef int found
        with nogil:
            found = table_repair(self.th, &settings.undo, &head)
        return found, head

    def sweep(self, int64_t now_ns, Settings settings not None, alerts):
        """Mark STALE the series silent past their TTL at ``now_ns``.

        Returns ``(alerts_written, alerts_dropped)``."""
        self.check()
        cdef AlertSink s
        cdef int64_t cap
        cdef Alert *buf = alerts_out(alerts, &cap)
        sink_array(&s, buf, cap)
        with nogil:
            table_sweep(self.th, now_ns, &settings.p, &s, 0)
        return s.written, s.dropped

    def reload(self, Settings settings not None, alerts):
        """Re-resolve and re-evaluate every series after
        :meth:`Settings.set_rules`.  Returns ``(alerts_written,
        alerts_dropped)``."""
        self.check()
        cdef AlertSink s
        cdef int64_t cap
        cdef Alert *buf = alerts_out(alerts, &cap)
        sink_array(&s, buf, cap)
        with nogil:
            table_reload(self.th, &settings.p, &s, 0)
        return s.written, s.dropped

    def select_status_into(self, int min_status, cnp.ndarray out):
        """Seqlock-read every row whose status is at least ``min_status``
        into ``out``.  Returns the number written, or ``-needed`` when
        ``out`` is too small.  A row that stays mid-write is left out and
        counted in :attr:`unavailable`."""
        self.check()
        cdef StateRow *dst = rows_out(out, 0)
        cdef StateRow *rows = table_rows(self.th)
        cdef uint64_t i, used = rf_load_acquire_u64(&self.th.used)
        cdef int64_t n = 0, room = out.shape[0]
        cdef uint64_t skipped = 0
        with nogil:
            for i in range(used):
                if status_seen(self.th, rows[i].status) >= min_status:
                    if n < room:
                        if row_read(self.th, &rows[i], &dst[n]) != RF_OK:
                            skipped += 1
                        # Status may have changed between the test and the read.
                        elif dst[n].status >= min_status:
                            n += 1
                    else:
                        n += 1
        if n > room:
            # The caller scans again with room for all: count the stuck
            # rows of that pass, not of this one too.
            return -n
        self.unavailable += skipped
        return n

    def find_into(self, uint64_t key, uint32_t metric, cnp.ndarray out):
        """Seqlock-read the row of (key, metric) into ``out[0]``; return
        whether the series exists.  Raises
        :class:`engine.errors.SeriesUnavailable` when the row stays
        mid-write."""
        self.check()
        cdef bint found
        cdef int status
        cdef StateRow *dst = rows_out(out, 1)
        with nogil:
            status = table_find(self.th, key, metric, dst, &found)
        if status != RF_OK:
            raise_for_status(status, "find_into", key=key, metric=metric)
        return found

    def snapshot_into(self, cnp.ndarray out):
        """Copy every series' row into ``out`` (a STATE_DTYPE array).

        Returns the number of rows written, or ``-needed`` when ``out`` is
        too small (series may be added while the scan runs).  A row that
        stays mid-write is left out (the rows after it move up) and counted
        in :attr:`unavailable`."""
        self.check()
        cdef StateRow *dst = rows_out(out, 0)
        cdef StateRow *rows = table_rows(self.th)
        cdef uint64_t i, used = rf_load_acquire_u64(&self.th.used)
        cdef int64_t n = 0
        if <uint64_t>out.shape[0] < used:
            return -<int64_t>used
        with nogil:
            for i in range(used):
                if row_read(self.th, &rows[i], &dst[n]) == RF_OK:
                    n += 1
        self.unavailable += used - <uint64_t>n
        return n

    def select_key_into(self, uint64_t key, cnp.ndarray out):
        """Seqlock-read every row of entity ``key`` into ``out``.

        Returns the number of rows written, or ``-needed`` when ``out`` is
        too small.  A row's key never changes once the row is published, so
        the scan compares keys without a seqlock and reads only the matches.
        Raises :class:`engine.errors.SeriesUnavailable` (naming the first
        such series) when a row of the entity stays mid-write: the caller
        asked for this entity, and an answer without one of its series
        could read as healthy."""
        self.check()
        cdef StateRow *dst = rows_out(out, 0)
        cdef StateRow *rows = table_rows(self.th)
        cdef uint64_t i, used = rf_load_acquire_u64(&self.th.used)
        cdef int64_t n = 0, room = out.shape[0]
        cdef int status = RF_OK
        with nogil:
            for i in range(used):
                if rows[i].key == key:
                    if n < room:
                        status = row_read(self.th, &rows[i], &dst[n])
                        if status != RF_OK:
                            break
                    n += 1
        if status != RF_OK:
            # key and metric are written once, before the row is published.
            raise_for_status(status, "select_key_into", key=key, metric=rows[i].metric)
        return n if n <= room else -n

    def series_slots(self, cnp.ndarray keys, cnp.ndarray metrics):
        """Home index slot of each (key, metric) in this table."""
        self.check()
        return series_slots(keys, metrics, self.th.mask)
