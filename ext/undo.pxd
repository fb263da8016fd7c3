# cython: language_level=3
# Exactly-once across a worker's death (docs/faults.md): the undo slot that
# lets the next worker put a row left mid-write back as it was, and the
# row-version arithmetic that lets it skip events already applied.
#
# A row's version is ordinal * VERSION_STEP + phase: every write moves it
# forward, so a seqlock reader never sees one value twice, and a span
# replayed after a fault skips each event whose row already reads
# "applied" for its ordinal.

from libc.stdint cimport int64_t, uint64_t, uint16_t
from libc.string cimport memcpy, memset
from atomic cimport rf_store_release_u64, rf_compiler_barrier
from layout cimport (StateRow, RowUndo, TableHeader, IndexEntry, ROW_USED, VERSION_STEP,
                     VERSION_WRITING, VERSION_APPLIED, VERSION_REPAIRED, SKETCH_BUCKETS,
                     ROW_SKETCH_OFFSET, ROW_COLD_OFFSET, ROW_COLD_BYTES, ROW_IDS_OFFSET,
                     ROW_IDS_BYTES)
from params cimport Params
from index cimport table_index, table_rows, series_hash, index_find

cdef enum:
    # Lines 0-1 of a row: statistics, window and the sketch's header, what
    # every event writes.  The one sketch counter an event counts in is
    # saved on its own (undo_counter); the sketch's counters in use
    # (undo_sketch), line 5 (undo_cold) and the tail of line 4 (undo_ids)
    # only on the paths that write them.
    UNDO_HOT_BYTES = 128
    # RowUndo.sk_pos when no single counter was saved.
    UNDO_NO_COUNTER = 0xFFFF
    # What table_repair found.
    REPAIRED_ROW = 1
    REPAIRED_INSERT = 2

cdef inline uint64_t version_writing(uint64_t ordinal) noexcept nogil:
    return ordinal * VERSION_STEP + VERSION_WRITING

cdef inline uint64_t version_applied(uint64_t ordinal) noexcept nogil:
    return ordinal * VERSION_STEP + VERSION_APPLIED

cdef inline void undo_take(RowUndo *u, const StateRow *r, uint64_t row,
                           int64_t alert_head) noexcept nogil:
    """Save the lines an event writes of row number ``row`` before writing
    it: a copy of lines the event touches anyway, so no extra miss."""
    # A constant size, not a variable one: the compiler turns it into a few
    # vector moves, where a variable size is a call to libc's memcpy per
    # event (bench/kernel.py: 0.61-0.70 of the kernel without the slot).
    memcpy(u.image, r, UNDO_HOT_BYTES)
    u.hot = UNDO_HOT_BYTES
    u.cold = 0
    u.ids = 0
    u.sketch = 0
    u.sk_pos = UNDO_NO_COUNTER
    u.alert_head = alert_head
    # Named only once the image is whole: a kill during the copy leaves the
    # previous row named, and that row's version is even (nothing to undo).
    rf_store_release_u64(&u.row, row)
    # And before the row turns odd: the version store must not move up.
    rf_compiler_barrier()

cdef inline void undo_cold(const Params *p, const StateRow *r) noexcept nogil:
    """Save line 5 of the row being written, once, before a rare path
    writes it (stale and late events, window rolls, status changes)."""
    cdef RowUndo *u = p.undo
    if not u.cold:
        memcpy(u.image + ROW_COLD_OFFSET, (<const char *>r) + ROW_COLD_OFFSET,
               ROW_COLD_BYTES)
        rf_store_release_u64(&u.cold, 1)
        rf_compiler_barrier()

cdef inline void undo_ids(const Params *p, const StateRow *r) noexcept nogil:
    """Save the tail of line 4 (key, first_ts, pending_since), once, before
    a first or stale event moves first_ts or a status starts pending."""
    cdef RowUndo *u = p.undo
    if not u.ids:
        memcpy(u.image + ROW_IDS_OFFSET, (<const char *>r) + ROW_IDS_OFFSET, ROW_IDS_BYTES)
        rf_store_release_u64(&u.ids, 1)
        rf_compiler_barrier()

cdef inline void undo_counter(const Params *p, const StateRow *r, int64_t i) noexcept nogil:
    """Save sketch counter i before an event adds one to it (the sketch's
    common path: one counter, so one line of the sketch touched)."""
    cdef RowUndo *u = p.undo
    u.sk_old = r.sketch[i]
    # The value before the position that names it, and both before the
    # counter changes: a kill in between leaves nothing or the old value.
    rf_compiler_barrier()
    u.sk_pos = <uint16_t>i
    rf_compiler_barrier()

cdef inline void undo_line2(const Params *p, const StateRow *r) noexcept nogil:
    """undo_sketch when the counters in use all lie in line 2 of the row:
    the whole line, a constant size (vector moves, no call to libc)."""
    cdef RowUndo *u = p.undo
    if not u.sketch:
        memcpy(u.image + 128, (<const char *>r) + 128, 64)
        rf_store_release_u64(&u.sketch, 1)
        rf_compiler_barrier()

cdef inline void undo_sketch(const Params *p, const StateRow *r) noexcept nogil:
    """Save the sketch, once, before a path that writes more than one
    counter (a new window, a halving, a move of the range).  Only counters
    sk_lo..sk_hi are copied: every other one is zero (docs/health.md), which
    is how table_repair puts them back."""
    cdef RowUndo *u = p.undo
    cdef size_t lo
    if not u.sketch:
        lo = ROW_SKETCH_OFFSET + 2 * <size_t>r.sk_lo
        if r.sk_lo == r.sk_hi:
            # One counter in use (a window of one value, or of equal ones):
            # a store, not a call to libc's memcpy.
            (<uint16_t *>(u.image + lo))[0] = r.sketch[r.sk_lo]
        else:
            memcpy(u.image + lo, (<const char *>r) + lo, 2 * <size_t>(r.sk_hi - r.sk_lo + 1))
        rf_store_release_u64(&u.sketch, 1)
        rf_compiler_barrier()

cdef inline int table_repair(TableHeader *th, RowUndo *u,
                             int64_t *alert_head) noexcept nogil:
    """What a worker does first on a table a killed worker wrote: put back
    the row it left mid-write (and forget the alerts that write made, which
    the replay makes again), and finish or drop the row it was adding.

    Returns REPAIRED_ROW and REPAIRED_INSERT bits for what it found."""
    cdef StateRow *rows = table_rows(th)
    cdef IndexEntry *index = table_index(th)
    cdef uint64_t n = u.row, used, v
    cdef StateRow *r
    cdef int found = 0
    cdef size_t lo, hi
    if n < th.limit:
        r = &rows[n]
        v = r.version
        if v % VERSION_STEP == VERSION_WRITING:
            memcpy((<char *>r) + 8, u.image + 8,
                   (u.hot if u.hot <= UNDO_HOT_BYTES else UNDO_HOT_BYTES) - 8)
            if u.cold:
                memcpy((<char *>r) + ROW_COLD_OFFSET, u.image + ROW_COLD_OFFSET,
                       ROW_COLD_BYTES)
            if u.ids:
                memcpy((<char *>r) + ROW_IDS_OFFSET, u.image + ROW_IDS_OFFSET, ROW_IDS_BYTES)
            if u.sketch:
                # sk_lo and sk_hi are back from the hot lines: zero outside.
                lo = r.sk_lo
                hi = r.sk_hi if r.sk_hi < SKETCH_BUCKETS else SKETCH_BUCKETS - 1
                memset(r.sketch, 0, sizeof(r.sketch))
                if lo <= hi:
                    memcpy(&r.sketch[lo], u.image + ROW_SKETCH_OFFSET + 2 * lo,
                           2 * (hi - lo + 1))
            elif u.sk_pos < SKETCH_BUCKETS:
                r.sketch[u.sk_pos] = u.sk_old
            alert_head[0] = u.alert_head
            # Forward, never back to the old value: a reader that began
            # before the kill must not take a torn copy for a whole one.
            rf_store_release_u64(&r.version, v - VERSION_WRITING + VERSION_REPAIRED)
            found |= REPAIRED_ROW
    used = th.used
    if used < th.limit:
        r = &rows[used]
        v = r.version
        if v & 1:
            # Killed inside row_init: the row is past used and in no index
            # entry, so no reader has seen it; it is made again on replay.
            rf_store_release_u64(&r.version, v + 1)
        elif (r.flags & ROW_USED and index_find(
                th, index, series_hash(r.key, r.metric) & th.mask, r.key, r.metric)
                == <int64_t>used):
            # Killed between publishing the index entry and counting the row.
            rf_store_release_u64(&th.used, used + 1)
            found |= REPAIRED_INSERT
    return found
