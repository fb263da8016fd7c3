# cython: language_level=3
# The state table: a worker's series rows in shared memory, found through an
# open-addressing index.  One writer (the worker), any number of readers in
# any process; each row is guarded by a seqlock version word.
#
# Layout: header | index (slots x 16 bytes) | rows (limit x StateRow).
# The index is compact (four entries a cache line) so that probing stays in
# cache, and rows are dense, in the order series first appeared.  An index
# entry is written once and never changes: its row number is published with
# a store-release after the row is initialised, so a reader that sees it
# also sees the row.

from libc.stdint cimport int64_t, uint64_t, uint32_t
from libc.string cimport memcpy
from libc.math cimport isfinite, INFINITY
from rf cimport (Event, rf_load_acquire_u64, rf_load_relaxed_u64,
                 rf_store_relaxed_u64, rf_store_release_u64, rf_fence_acquire,
                 rf_fence_release, rf_cpu_relax, rf_yield, rf_mix64,
                 rf_prefetch_w, rf_load_acquire_u32, rf_store_release_u32)

cdef enum:
    ROW_USED = 1
    TABLE_MAGIC = 0x52465441424c4532   # "RFTABLE2"
    # Software pipeline of the update kernel: the index entry of event
    # i + INDEX_AHEAD and the row of event i + ROW_AHEAD are prefetched
    # while event i is applied.
    INDEX_AHEAD = 24
    ROW_AHEAD = 12
    PIPE = 64                # ring of in-flight lookups: a power of two > INDEX_AHEAD

# 128 bytes, two cache lines; engine.STATE_DTYPE mirrors it field for field
# (tests/unit/test_layout.py checks every offset).
ctypedef struct StateRow:
    uint64_t version      # seqlock: odd while the worker writes the row
    uint64_t key
    uint32_t metric
    uint32_t flags
    uint64_t count
    double sum
    double min
    double max
    double last
    int64_t last_ts
    int64_t first_ts
    double mean
    double m2
    double var
    double ewma
    uint64_t stale        # events older than last_ts: counted, never "last"
    uint64_t reserved

ctypedef struct IndexEntry:
    uint64_t key
    uint32_t metric
    uint32_t row1         # row number + 1; 0 marks an empty entry

ctypedef struct TableHeader:
    uint64_t magic
    uint64_t slots        # index entries, a power of two
    uint64_t mask
    uint64_t limit        # rows: past it new series are refused and counted
    uint64_t used         # rows in use, store-released by the worker only
    uint64_t _pad[11]

ctypedef struct Params:
    int64_t ts_min
    int64_t ts_max
    double ewma_alpha

ctypedef struct BatchCounters:
    uint64_t applied
    uint64_t invalid
    uint64_t full
    uint64_t stale

cdef inline IndexEntry *table_index(TableHeader *th) noexcept nogil:
    return <IndexEntry *>((<char *>th) + sizeof(TableHeader))

cdef inline StateRow *table_rows(TableHeader *th) noexcept nogil:
    return <StateRow *>((<char *>th) + sizeof(TableHeader)
                        + th.slots * sizeof(IndexEntry))

cdef inline uint64_t series_hash(uint64_t key, uint32_t metric) noexcept nogil:
    # A different input than the shard hash (mix64(key)), so that the keys
    # one worker owns still spread over its whole table.
    return rf_mix64(key ^ (<uint64_t>metric * 0x9E3779B97F4A7C15ULL)
                    ^ 0xD6E8FEB86659FD93ULL)

cdef inline bint event_valid(const Event *e, const Params *p) noexcept nogil:
    return isfinite(e.value) and e.ts >= p.ts_min and e.ts <= p.ts_max

cdef inline void row_update(StateRow *r, const Event *e, double alpha) noexcept nogil:
    cdef double x = e.value
    cdef uint64_t n = r.count + 1
    # One division per event: the reciprocal serves the mean and the variance.
    cdef double inv = 1.0 / <double>n
    cdef double delta = x - r.mean
    r.count = n
    r.sum += x
    if x < r.min:
        r.min = x
    if x > r.max:
        r.max = x
    # Scaled before subtracting: x - mean overflows for readings near
    # DBL_MAX of opposite signs, and the mean must stay finite whenever the
    # readings are (the variance may legitimately overflow to inf).
    r.mean += x * inv - r.mean * inv
    r.m2 += delta * (x - r.mean)
    r.var = r.m2 * inv
    if e.ts >= r.last_ts:
        # Newest (or equal) event time: it becomes the series' current state.
        r.last = x
        r.last_ts = e.ts
        # A weighted sum, not ewma + alpha * (x - ewma): the difference of
        # two finite readings near DBL_MAX overflows.
        r.ewma = x if n == 1 else (1.0 - alpha) * r.ewma + alpha * x
    else:
        # Older than what the series already shows: it counts in the
        # aggregates but never replaces the current value.
        r.stale += 1
    if e.ts < r.first_ts:
        r.first_ts = e.ts


cdef inline void row_init(StateRow *r, uint64_t key, uint32_t metric) noexcept nogil:
    r.key = key
    r.metric = metric
    r.count = 0
    r.sum = 0.0
    r.min = INFINITY
    r.max = -INFINITY
    r.last = 0.0
    r.last_ts = -0x7FFFFFFFFFFFFFFF - 1
    r.first_ts = 0x7FFFFFFFFFFFFFFF
    r.mean = 0.0
    r.m2 = 0.0
    r.var = 0.0
    r.ewma = 0.0
    r.stale = 0
    r.reserved = 0
    r.flags = ROW_USED


cdef inline int64_t index_find(TableHeader *th, IndexEntry *index, uint64_t s,
                               uint64_t key, uint32_t metric) noexcept nogil:
    """Row number of (key, metric), probing from slot s; -1 when absent."""
    cdef uint64_t mask = th.mask
    cdef uint32_t row1
    while True:
        row1 = rf_load_acquire_u32(&index[s].row1)
        if row1 == 0:
            return -1
        if index[s].key == key and index[s].metric == metric:
            return <int64_t>row1 - 1
        s = (s + 1) & mask


cdef inline int64_t index_insert(TableHeader *th, IndexEntry *index, StateRow *rows,
                                 uint64_t s, const Event *e) noexcept nogil:
    """Find or create the row of e's series (writer only); -1 when the
    table is full."""
    cdef uint64_t mask = th.mask
    cdef uint64_t used
    cdef StateRow *r
    cdef uint32_t row1
    while True:
        row1 = index[s].row1
        if row1 == 0:
            break
        if index[s].key == e.key and index[s].metric == e.metric:
            return <int64_t>row1 - 1
        s = (s + 1) & mask
    used = th.used
    if used >= th.limit:
        return -1
    r = &rows[used]
    rf_store_relaxed_u64(&r.version, r.version + 1)
    rf_fence_release()
    row_init(r, e.key, e.metric)
    rf_store_release_u64(&r.version, r.version + 1)
    index[s].key = e.key
    index[s].metric = e.metric
    rf_store_release_u32(&index[s].row1, <uint32_t>(used + 1))
    rf_store_release_u64(&th.used, used + 1)
    return <int64_t>used


cdef inline void apply_batch(TableHeader *th, const Event *ev, int64_t n,
                             const Params *p, BatchCounters *c) noexcept nogil:
    """Fold n events into the table: the fused per-series update.

    A three-stage software pipeline hides the cache misses of a large
    table: event i + INDEX_AHEAD gets its index entry prefetched, event
    i + ROW_AHEAD gets its row located and prefetched, and event i is
    applied.  A row found ahead of time stays valid (rows never move); a
    series not found ahead is looked up again when applied, since an
    earlier event of the batch may have created it meanwhile."""
    cdef IndexEntry *index = table_index(th)
    cdef StateRow *rows = table_rows(th)
    cdef uint64_t mask = th.mask
    cdef uint64_t hashes[PIPE]
    cdef int64_t found[PIPE]
    cdef int64_t i, k, row
    cdef uint64_t v
    cdef const Event *e
    cdef StateRow *r
    for k in range(n if n < INDEX_AHEAD else INDEX_AHEAD):
        hashes[k] = series_hash(ev[k].key, ev[k].metric) & mask
        rf_prefetch_w(&index[hashes[k]])
    for k in range(n if n < ROW_AHEAD else ROW_AHEAD):
        found[k] = index_find(th, index, hashes[k], ev[k].key, ev[k].metric)
        if found[k] >= 0:
            rf_prefetch_w(&rows[found[k]])
            rf_prefetch_w((<char *>&rows[found[k]]) + 64)
    for i in range(n):
        k = i + INDEX_AHEAD
        if k < n:
            hashes[k & (PIPE - 1)] = series_hash(ev[k].key, ev[k].metric) & mask
            rf_prefetch_w(&index[hashes[k & (PIPE - 1)]])
        k = i + ROW_AHEAD
        if k < n:
            row = index_find(th, index, hashes[k & (PIPE - 1)], ev[k].key, ev[k].metric)
            found[k & (PIPE - 1)] = row
            if row >= 0:
                rf_prefetch_w(&rows[row])
                rf_prefetch_w((<char *>&rows[row]) + 64)
        e = &ev[i]
        if not event_valid(e, p):
            c.invalid += 1
            continue
        row = found[i & (PIPE - 1)]
        if row < 0:
            row = index_insert(th, index, rows, hashes[i & (PIPE - 1)], e)
            if row < 0:
                c.full += 1
                continue
        r = &rows[row]
        v = r.version
        rf_store_relaxed_u64(&r.version, v + 1)
        rf_fence_release()
        if e.ts < r.last_ts:
            c.stale += 1
        row_update(r, e, p.ewma_alpha)
        rf_store_release_u64(&r.version, v + 2)
        c.applied += 1


cdef inline bint row_read(const StateRow *r, StateRow *out) noexcept nogil:
    """Seqlock read of one row into out; retries until a stable, even
    version is seen before and after the copy.  Never blocks the writer."""
    cdef uint64_t v1, v2
    cdef long tries = 0
    while True:
        v1 = rf_load_acquire_u64(&r.version)
        if not (v1 & 1):
            memcpy(out, <const void *>r, sizeof(StateRow))
            rf_fence_acquire()
            v2 = rf_load_relaxed_u64(&r.version)
            if v1 == v2:
                return True
        tries += 1
        if tries & 1023:
            rf_cpu_relax()
        else:
            rf_yield()

cdef inline bint table_find(TableHeader *th, uint64_t key, uint32_t metric,
                            StateRow *out) noexcept nogil:
    cdef int64_t row = index_find(th, table_index(th),
                                  series_hash(key, metric) & th.mask, key, metric)
    if row < 0:
        return False
    row_read(&table_rows(th)[row], out)
    return True
