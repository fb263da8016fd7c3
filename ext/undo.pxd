# cython: language_level=3
# Exactly-once across a worker's death (docs/faults.md): the undo slot that
# lets the next worker put a row left mid-write back as it was, and the
# row-version arithmetic that lets it skip events already applied.
#
# A row's version is ordinal * VERSION_STEP + phase: every write moves it
# forward, so a seqlock reader never sees one value twice, and a span
# replayed after a fault skips each event whose row already reads
# "applied" for its ordinal.

from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy
from atomic cimport rf_store_release_u64, rf_compiler_barrier
from layout cimport (StateRow, RowUndo, TableHeader, IndexEntry, ROW_USED, VERSION_STEP,
                     VERSION_WRITING, VERSION_APPLIED, VERSION_REPAIRED)
from params cimport Params
from index cimport table_index, table_rows, series_hash, index_find

cdef enum:
    # Lines 0-2 of a row: what an event writes on its common paths (lines
    # 0-1 without the health layer).  Line 3 is saved by undo_cold on the
    # paths that write it.
    UNDO_HOT_BYTES = 192
    UNDO_PLAIN_BYTES = 128
    UNDO_COLD_BYTES = 64
    # What table_repair found.
    REPAIRED_ROW = 1
    REPAIRED_INSERT = 2

cdef inline uint64_t version_writing(uint64_t ordinal) noexcept nogil:
    return ordinal * VERSION_STEP + VERSION_WRITING

cdef inline uint64_t version_applied(uint64_t ordinal) noexcept nogil:
    return ordinal * VERSION_STEP + VERSION_APPLIED

cdef inline void undo_take(RowUndo *u, const StateRow *r, uint64_t row,
                           int64_t alert_head, bint health) noexcept nogil:
    """Save the lines an event writes of row number ``row`` before writing
    it: a copy of lines the event touches anyway, so no extra miss."""
    # Two constant sizes, not one variable one: the compiler turns each into
    # a few vector moves, where a variable size is a call to libc's memcpy
    # per event (bench/kernel.py: 0.61-0.70 of the kernel without the slot).
    if health:
        memcpy(u.image, r, UNDO_HOT_BYTES)
        u.hot = UNDO_HOT_BYTES
    else:
        memcpy(u.image, r, UNDO_PLAIN_BYTES)
        u.hot = UNDO_PLAIN_BYTES
    u.cold = 0
    u.alert_head = alert_head
    # Named only once the image is whole: a kill during the copy leaves the
    # previous row named, and that row's version is even (nothing to undo).
    rf_store_release_u64(&u.row, row)
    # And before the row turns odd: the version store must not move up.
    rf_compiler_barrier()

cdef inline void undo_cold(const Params *p, const StateRow *r) noexcept nogil:
    """Save line 3 of the row being written, once, before a rare path
    writes it (late and stale events, window rolls, status changes)."""
    cdef RowUndo *u = p.undo
    if not u.cold:
        memcpy(u.image + UNDO_HOT_BYTES, (<const char *>r) + UNDO_HOT_BYTES,
               UNDO_COLD_BYTES)
        rf_store_release_u64(&u.cold, 1)
        rf_compiler_barrier()

cdef inline void undo_line2(const Params *p, const StateRow *r) noexcept nogil:
    """Without the health layer only lines 0-1 are saved: save line 2 too,
    once, before the rare writes to it there (first_ts)."""
    cdef RowUndo *u = p.undo
    if u.hot < UNDO_HOT_BYTES:
        memcpy(u.image + UNDO_PLAIN_BYTES, (<const char *>r) + UNDO_PLAIN_BYTES,
               UNDO_HOT_BYTES - UNDO_PLAIN_BYTES)
        rf_store_release_u64(&u.hot, UNDO_HOT_BYTES)
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
    if n < th.limit:
        r = &rows[n]
        v = r.version
        if v % VERSION_STEP == VERSION_WRITING:
            memcpy((<char *>r) + 8, u.image + 8,
                   (u.hot if u.hot <= UNDO_HOT_BYTES else UNDO_HOT_BYTES) - 8)
            if u.cold:
                memcpy((<char *>r) + UNDO_HOT_BYTES, u.image + UNDO_HOT_BYTES,
                       UNDO_COLD_BYTES)
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
