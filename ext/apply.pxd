# cython: language_level=3
# The writer side of a state table (one worker): a batch of events folded
# into the rows through a software-pipelined lookup, the TTL sweep, a reload
# after new rules, and the seqlock copy of the shared rules segment.

from libc.stdint cimport int64_t, uint64_t, uint32_t
from libc.string cimport memcpy
from atomic cimport (rf_load_acquire_u64, rf_load_relaxed_u64, rf_store_relaxed_u64,
                     rf_store_release_u64, rf_store_release_u32, rf_fence_acquire,
                     rf_fence_release, rf_prefetch_w, rf_now_ns)
from layout cimport (Event, StateRow, IndexEntry, TableHeader, Rule, RulesHeader,
                     ST_STALE, STAT_TTL, MAX_RULES, VERSION_STEP, VERSION_INIT_WRITING,
                     VERSION_INIT_DONE, PRODUCER_METRIC)
from params cimport Params, BatchCounters, event_valid
from alertsink cimport AlertSink, sink_room
from window cimport prev_final
from status cimport status_commit, status_evaluate, rule_for, row_ttl
from row cimport row_update, row_init, row_prefetch
from index cimport table_index, table_rows, series_hash, index_find, mark_raise
from undo cimport undo_take, version_writing, version_applied

cdef enum:
    # Rows a whole-table pass (sweep, reload) goes through between two
    # heartbeats: a pass over a large table must not read as a hung worker.
    BEAT_ROWS = 65536
    # Software pipeline of the update kernel: the index entry of event
    # i + INDEX_AHEAD and the row of event i + ROW_AHEAD are prefetched
    # while event i is applied.
    INDEX_AHEAD = 24
    ROW_AHEAD = 12
    PIPE = 64                # ring of in-flight lookups: a power of two > INDEX_AHEAD

cdef inline void beat(const Params *p, uint64_t i) noexcept nogil:
    if p.heartbeat != NULL and (i & (BEAT_ROWS - 1)) == 0:
        rf_store_relaxed_u64(p.heartbeat, <uint64_t>rf_now_ns())

cdef inline uint64_t ordinals_reserve(TableHeader *th, uint64_t n) noexcept nogil:
    """The first of n fresh ordinals (docs/faults.md), recorded in the table
    before any row can carry one of them."""
    cdef uint64_t base = th.next_ordinal
    if base == 0:
        base = 1
    rf_store_release_u64(&th.next_ordinal, base + n)
    return base

cdef inline int64_t index_insert(TableHeader *th, IndexEntry *index, StateRow *rows,
                                 uint64_t s, const Event *e, uint64_t ordinal,
                                 const Params *p) noexcept nogil:
    """Find or create the row of e's series (writer only); -1 when the
    table is full.  A new row is initialised under versions of e's
    ordinal, below the ones its first update writes."""
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
    rf_store_relaxed_u64(&r.version, ordinal * VERSION_STEP + VERSION_INIT_WRITING)
    rf_fence_release()
    row_init(r, e.key, e.metric, p)
    rf_store_release_u64(&r.version, ordinal * VERSION_STEP + VERSION_INIT_DONE)
    index[s].key = e.key
    index[s].metric = e.metric
    rf_store_release_u32(&index[s].row1, <uint32_t>(used + 1))
    rf_store_release_u64(&th.used, used + 1)
    return <int64_t>used

cdef inline void apply_batch(TableHeader *th, const Event *ev, int64_t n,
                             uint64_t base, const Params *p, BatchCounters *c,
                             AlertSink *s) noexcept nogil:
    """Fold n events into the table: the fused per-series update, windows,
    sketch and rules.  Event i has ordinal base + i (reserved by the
    caller, ordinals_reserve); an event whose row already reads applied for
    its ordinal (a span replayed after a fault) is counted, not applied
    again, and each row is saved in p.undo before it is written.

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
    cdef uint64_t o
    cdef const Event *e
    cdef StateRow *r
    for k in range(n if n < INDEX_AHEAD else INDEX_AHEAD):
        hashes[k] = series_hash(ev[k].key, ev[k].metric) & mask
        rf_prefetch_w(&index[hashes[k]])
    for k in range(n if n < ROW_AHEAD else ROW_AHEAD):
        found[k] = index_find(th, index, hashes[k], ev[k].key, ev[k].metric)
        if found[k] >= 0:
            row_prefetch(&rows[found[k]], p.health)
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
                row_prefetch(&rows[row], p.health)
        e = &ev[i]
        if not event_valid(e, p):
            c.invalid += 1
            continue
        if e.metric == PRODUCER_METRIC:
            # A producer's marker (event_valid let it through only as one):
            # bookkeeping beside the rows, not an event of a series.
            if e.key == 0 or not mark_raise(th, e.key, <uint64_t>e.value):
                c.full += 1
            continue
        o = base + <uint64_t>i
        row = found[i & (PIPE - 1)]
        if row < 0:
            row = index_insert(th, index, rows, hashes[i & (PIPE - 1)], e, o, p)
            if row < 0:
                c.full += 1
                continue
        r = &rows[row]
        if r.version >= version_applied(o):
            # Applied before a fault, by the worker this one replaced.
            c.applied += 1
            continue
        undo_take(p.undo, r, <uint64_t>row, s.head)
        rf_store_relaxed_u64(&r.version, version_writing(o))
        rf_fence_release()
        row_update(r, e, p, s, c)
        rf_store_release_u64(&r.version, version_applied(o))
        c.applied += 1


cdef inline uint64_t table_sweep(TableHeader *th, int64_t now, const Params *p,
                                 AlertSink *s, uint64_t start) noexcept nogil:
    """Mark STALE every series silent for longer than its TTL at wall time
    now, from row start on; the alert's event time is when the silence
    passed the TTL, its value the TTL in seconds.  Returns the row to go on
    from: th.used when the pass is done, earlier when a ring sink has no
    room for the next alert (the caller waits for room and calls again)."""
    cdef StateRow *rows = table_rows(th)
    cdef uint64_t i, used = th.used, o = 0
    cdef int64_t ttl
    cdef StateRow *r
    for i in range(start, used):
        beat(p, i)
        r = &rows[i]
        if r.status == ST_STALE or r.count == 0:
            continue
        ttl = row_ttl(r, p)
        if ttl <= 0 or now - r.last_ts <= ttl:
            continue
        if s.ring != NULL and s.head >= s.limit and sink_room(s) <= 0:
            return i
        if o == 0:
            # One ordinal for the whole pass, taken only when a row changes.
            o = ordinals_reserve(th, 1)
        undo_take(p.undo, r, i, s.head)
        rf_store_relaxed_u64(&r.version, version_writing(o))
        rf_fence_release()
        status_commit(r, ST_STALE, r.last_ts + ttl, STAT_TTL, <double>ttl / 1e9, p, s)
        rf_store_release_u64(&r.version, version_applied(o))
    return used


cdef inline uint64_t table_reload(TableHeader *th, const Params *p,
                                  AlertSink *s, uint64_t start) noexcept nogil:
    """After new rules: re-resolve every series' rule and re-evaluate it at
    its watermark, keeping windows, statistics and status, from row start
    on.  Returns the row to go on from, as table_sweep (one row changes
    status at most once, so one alert's room is enough for the next)."""
    cdef StateRow *rows = table_rows(th)
    cdef uint64_t i, used = th.used
    cdef uint64_t o = 0
    cdef StateRow *r
    for i in range(start, used):
        beat(p, i)
        if s.ring != NULL and s.head >= s.limit and sink_room(s) <= 0:
            return i
        if o == 0:
            o = ordinals_reserve(th, 1)
        r = &rows[i]
        undo_take(p.undo, r, i, s.head)
        rf_store_relaxed_u64(&r.version, version_writing(o))
        rf_fence_release()
        r.rule = rule_for(p, r.metric)
        r.pending = 0
        if r.count and p.health and r.win_start + p.lateness <= r.last_ts:
            # A lowered lateness can make the previous window final now.
            prev_final(r, p)
        if r.count and r.status != ST_STALE:
            status_evaluate(r, r.last_ts, p, s)
        rf_store_release_u64(&r.version, version_applied(o))
    return used

cdef inline bint rules_copy(const char *segment, Rule *dst, Params *p,
                            uint64_t *generation) noexcept nogil:
    """Seqlock-copy the rules segment into dst (room for MAX_RULES) and
    point p at it; False when the engine was writing it (try again)."""
    cdef const RulesHeader *h = <const RulesHeader *>segment
    cdef uint64_t g1 = rf_load_acquire_u64(&h.generation), g2, count
    cdef int64_t ttl, lateness
    if g1 & 1:
        return False
    count = h.count
    if count > MAX_RULES:
        count = MAX_RULES
    memcpy(dst, segment + sizeof(RulesHeader), count * sizeof(Rule))
    ttl = h.ttl_ns
    lateness = h.lateness_ns
    rf_fence_acquire()
    g2 = rf_load_relaxed_u64(&h.generation)
    if g1 != g2:
        return False
    p.rules = dst
    p.nrules = <int64_t>count
    p.ttl = ttl
    if lateness >= 0 and lateness <= p.window:
        p.lateness = lateness
    generation[0] = g1
    return True
