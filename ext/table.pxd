# cython: language_level=3
# The state table: a worker's open-addressing hash table of series rows in
# shared memory.  One writer (the worker), any number of readers in any
# process; each row is guarded by a seqlock version word.

from libc.stdint cimport int64_t, uint64_t, uint32_t
from libc.string cimport memcpy
from libc.math cimport isfinite, INFINITY
from rf cimport (Event, rf_load_acquire_u64, rf_load_relaxed_u64,
                 rf_store_relaxed_u64, rf_store_release_u64, rf_fence_acquire,
                 rf_fence_release, rf_cpu_relax, rf_yield, rf_mix64,
                 rf_prefetch_w)

cdef enum:
    ROW_USED = 1
    TABLE_MAGIC = 0x52465441424c4531   # "RFTABLE1"
    PREFETCH_BLOCK = 16

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

ctypedef struct TableHeader:
    uint64_t magic
    uint64_t capacity
    uint64_t mask
    uint64_t limit        # most rows ever used: past it new series are refused
    uint64_t used         # rows in use, written by the worker only
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

cdef inline StateRow *table_rows(TableHeader *th) noexcept nogil:
    return <StateRow *>((<char *>th) + sizeof(TableHeader))

cdef inline uint64_t series_hash(uint64_t key, uint32_t metric) noexcept nogil:
    # A different input than the shard hash (mix64(key)), so that the keys
    # one worker owns still spread over its whole table.
    return rf_mix64(key ^ (<uint64_t>metric * 0x9E3779B97F4A7C15ULL)
                    ^ 0xD6E8FEB86659FD93ULL)

cdef inline bint event_valid(const Event *e, const Params *p) noexcept nogil:
    return isfinite(e.value) and e.ts >= p.ts_min and e.ts <= p.ts_max

cdef inline void row_update(StateRow *r, const Event *e, double alpha) noexcept nogil:
    cdef double x = e.value
    cdef double delta
    cdef uint64_t n = r.count + 1
    r.count = n
    r.sum += x
    if x < r.min:
        r.min = x
    if x > r.max:
        r.max = x
    delta = x - r.mean
    r.mean += delta / <double>n
    r.m2 += delta * (x - r.mean)
    r.var = r.m2 / <double>n
    if e.ts >= r.last_ts:
        # Newest or equal event time: it becomes the series' current state.
        r.last = x
        r.last_ts = e.ts
        if n == 1 or r.ewma != r.ewma:
            r.ewma = x
        else:
            r.ewma += alpha * (x - r.ewma)
    else:
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

cdef inline void apply_batch(TableHeader *th, const Event *ev, int64_t n,
                             const Params *p, BatchCounters *c) noexcept nogil:
    """Fold n events into the table: the fused per-series update.

    Rows are located in blocks of PREFETCH_BLOCK events whose slots are
    prefetched first, so that the cache misses of a large table overlap
    instead of being paid one after another."""
    cdef StateRow *rows = table_rows(th)
    cdef uint64_t mask = th.mask
    cdef uint64_t slots[PREFETCH_BLOCK]
    cdef int64_t start = 0, m, j
    cdef uint64_t s, v
    cdef const Event *e
    cdef StateRow *r
    cdef uint64_t used = th.used
    while start < n:
        m = n - start
        if m > PREFETCH_BLOCK:
            m = PREFETCH_BLOCK
        for j in range(m):
            e = &ev[start + j]
            s = series_hash(e.key, e.metric) & mask
            slots[j] = s
            rf_prefetch_w(&rows[s])
            rf_prefetch_w((<char *>&rows[s]) + 64)
        for j in range(m):
            e = &ev[start + j]
            if not event_valid(e, p):
                c.invalid += 1
                continue
            s = slots[j]
            while True:
                r = &rows[s]
                if r.flags & ROW_USED:
                    if r.key == e.key and r.metric == e.metric:
                        break
                    s = (s + 1) & mask
                    continue
                r = NULL
                break
            v = 0
            if r == NULL:
                if used >= th.limit:
                    c.full += 1
                    continue
                r = &rows[s]
                v = r.version
                rf_store_relaxed_u64(&r.version, v + 1)
                rf_fence_release()
                row_init(r, e.key, e.metric)
                used += 1
                rf_store_relaxed_u64(&th.used, used)
            else:
                v = r.version
                rf_store_relaxed_u64(&r.version, v + 1)
                rf_fence_release()
            if e.ts < r.last_ts:
                c.stale += 1
            row_update(r, e, p.ewma_alpha)
            rf_store_release_u64(&r.version, v + 2)
            c.applied += 1
        start += m

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
    cdef StateRow *rows = table_rows(th)
    cdef uint64_t mask = th.mask
    cdef uint64_t s = series_hash(key, metric) & mask
    cdef uint64_t probes = 0
    while probes <= mask:
        row_read(&rows[s], out)
        if not (out.flags & ROW_USED):
            return False
        if out.key == key and out.metric == metric:
            return True
        s = (s + 1) & mask
        probes += 1
    return False
