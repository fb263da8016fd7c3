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
#
# docs/health.md is the contract of every field and of the rules; the
# NumPy oracle in tests/health_reference.py implements it a second time.

from libc.stdint cimport int64_t, uint64_t, uint32_t, uint16_t, int16_t, uint8_t
from libc.string cimport memcpy, memset
from libc.math cimport isfinite, isnan, INFINITY, NAN, exp, exp2, pow, ldexp
from rf cimport (Event, RingHeader, rf_load_acquire_u64, rf_load_relaxed_u64,
                 rf_store_relaxed_u64, rf_store_release_u64, rf_fence_acquire,
                 rf_fence_release, rf_cpu_relax, rf_yield, rf_mix64,
                 rf_prefetch_w, rf_load_acquire_u32, rf_store_release_u32,
                 rf_load_acquire_i64, ring_publish)

cdef enum:
    ROW_USED = 1
    # The previous window is final and in the views (or was empty): a
    # lateness raised by a reload never reopens it, and nothing folds it twice.
    ROW_PREV_FINAL = 2
    TABLE_MAGIC = 0x52465441424c4533   # "RFTABLE3": 256-byte rows
    # Software pipeline of the update kernel: the index entry of event
    # i + INDEX_AHEAD and the row of event i + ROW_AHEAD are prefetched
    # while event i is applied.
    INDEX_AHEAD = 24
    ROW_AHEAD = 12
    PIPE = 64                # ring of in-flight lookups: a power of two > INDEX_AHEAD

    SKETCH_BUCKETS = 22
    SKETCH_FIRST = 11        # where a window's first value lands
    SKETCH_MAX = 65535
    NVIEWS = 3
    FOLD_NONE = 65535        # fold_age: no window folded into the views yet
    FOLD_CAP = 65534

    ST_OK = 0
    ST_WARN = 1
    ST_STALE = 2
    ST_CRIT = 3

    STAT_LAST = 0
    STAT_EWMA = 1
    STAT_MEAN = 2
    STAT_MIN = 3
    STAT_MAX = 4
    STAT_VAR = 5
    STAT_COUNT = 6
    STAT_WIN_COUNT = 7
    STAT_WIN_SUM = 8
    STAT_WIN_MIN = 9
    STAT_WIN_MAX = 10
    STAT_WIN_MEAN = 11
    STAT_P50 = 12
    STAT_P95 = 13
    STAT_P99 = 14
    STAT_VIEW0 = 15
    STAT_COUNT_ALL = 18
    STAT_TTL = 255

    RULE_WILDCARD = 1
    RULE_HAS_WARN = 2
    RULE_HAS_CRIT = 4
    RULE_FALLING = 8
    MAX_RULES = 255

# 256 bytes, four cache lines; engine.STATE_DTYPE mirrors it field for field
# (tests/unit/test_layout.py checks every offset).  Ordered by how often an
# event touches a field: an in-order event in the current window touches
# lines 0-2 only (statistics, window, sketch); line 3 and the tail of line
# 2 hold what changes on late, stale or rolling events and status changes.
# With the table larger than the cache, lines touched per event is what
# the kernel's speed follows (bench/kernel.py: 4 lines ran at 42% of the
# plain kernel, 3 lines at over 50%).
ctypedef struct StateRow:
    uint64_t version      # seqlock: odd while the worker writes the row
    uint64_t count
    double sum
    double min
    double max
    double last
    int64_t last_ts       # the series' watermark
    double ewma
    # line 1
    double mean
    double m2
    int64_t win_start
    double win_sum
    double win_min
    double win_max
    uint32_t win_count
    int16_t sk_base
    uint8_t status
    uint8_t rule
    uint8_t pending
    uint8_t sk_shift
    uint16_t sketch[22]   # runs into line 2
    # line 2, from byte 166: cold
    uint16_t fold_age
    uint64_t key
    int64_t first_ts
    double prev_sum
    # line 3
    double prev_min
    double prev_max
    int64_t status_since
    int64_t pending_since
    uint32_t metric
    uint32_t stale        # events older than last_ts: counted, never "last"
    uint32_t late         # stale events too late for their window
    uint32_t prev_count
    float view[3]
    uint32_t flags

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

# engine.rules.RULE_DTYPE mirrors it.  Thresholds of a falling rule are
# stored negated, so every rule is evaluated as a rising one.
ctypedef struct Rule:
    uint32_t metric
    uint8_t stat
    uint8_t flags
    uint16_t _pad0
    double warn
    double crit
    double clear
    int64_t for_ns
    int64_t ttl_ns
    uint64_t _pad1[2]

# The rules segment: this header, then up to MAX_RULES rules.  The engine
# writes it under the generation word (odd while writing); workers copy it
# when the generation changes.
ctypedef struct RulesHeader:
    uint64_t generation
    uint64_t count
    int64_t ttl_ns
    int64_t lateness_ns
    uint64_t _pad[4]

# 32 bytes, so that an alert ring is an ordinary event ring
# (engine.ALERT_DTYPE mirrors it).
ctypedef struct Alert:
    uint64_t key
    int64_t ts
    uint32_t metric
    uint8_t old
    uint8_t new
    uint8_t stat
    uint8_t rule
    double value

# Where the kernels put alerts: a plain array (tests, Table.apply) or the
# producer end of a worker's alert ring.
ctypedef struct AlertSink:
    Alert *buf
    uint64_t mask         # ring: capacity - 1; array: all ones
    int64_t cap
    int64_t head          # next sequence to write
    int64_t limit         # head must stay below it
    RingHeader *ring      # NULL for an array
    char *base            # the ring's mapping, for its doorbell
    uint64_t written
    uint64_t dropped

ctypedef struct Params:
    int64_t ts_min
    int64_t ts_max
    int64_t window
    int64_t lateness
    double half_life      # ns, of the EWMA
    double view_decay[3]  # per window
    int64_t ttl           # default TTL (ns; 0: never)
    const Rule *rules
    int64_t nrules
    bint health           # windows, sketch and rules; off: lifetime statistics only

ctypedef struct BatchCounters:
    uint64_t applied
    uint64_t invalid
    uint64_t full
    uint64_t stale
    uint64_t late

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


# --- alerts -----------------------------------------------------------

cdef inline void sink_array(AlertSink *s, Alert *buf, int64_t cap) noexcept nogil:
    memset(s, 0, sizeof(AlertSink))
    s.buf = buf
    s.mask = <uint64_t>-1
    s.cap = cap
    s.limit = cap

cdef inline void sink_ring(AlertSink *s, char *base, RingHeader *h) noexcept nogil:
    memset(s, 0, sizeof(AlertSink))
    s.buf = <Alert *>(base + h.data)
    s.mask = h.mask
    s.cap = <int64_t>h.capacity
    s.ring = h
    s.base = base
    s.head = rf_load_acquire_i64(&h.published)
    s.limit = rf_load_acquire_i64(&h.consumed) + s.cap

cdef inline void sink_publish(AlertSink *s) noexcept nogil:
    if s.ring != NULL and s.head != rf_load_acquire_i64(&s.ring.published):
        ring_publish(s.base, s.ring, s.head)

cdef inline void sink_emit(AlertSink *s, const StateRow *r, uint8_t old,
                           uint8_t new, uint8_t stat, double value,
                           int64_t ts) noexcept nogil:
    cdef Alert *a
    if s.head >= s.limit:
        if s.ring != NULL:
            s.limit = rf_load_acquire_i64(&s.ring.consumed) + s.cap
        if s.head >= s.limit:
            # The row's status is right regardless; the loss is counted.
            s.dropped += 1
            return
    a = &s.buf[<uint64_t>s.head & s.mask]
    a.key = r.key
    a.ts = ts
    a.metric = r.metric
    a.old = old
    a.new = new
    a.stat = stat
    a.rule = r.rule
    a.value = value
    s.head += 1
    s.written += 1


# --- the quantile sketch ----------------------------------------------

cdef inline int64_t bucket_of(double x) noexcept nogil:
    # Exponent and top two mantissa bits: four buckets per power of two,
    # integer work only.  Zero, negative and subnormal values share 0.
    cdef uint64_t bits
    if not (x > 0.0):
        return 0
    memcpy(&bits, &x, 8)
    if (bits >> 52) == 0:
        return 0
    return <int64_t>(bits >> 50)

cdef inline double bucket_estimate(int64_t b) noexcept nogil:
    # The harmonic mean of the bucket's bounds: within 1/9 of any value in
    # the bucket.  Taken on the mantissas and scaled after: 2 * lo * hi
    # overflows for values above 1e154.
    cdef double lo, hi, scale
    cdef uint64_t bits
    if b < 4:
        return 0.0
    lo = 1.0 + <double>(b & 3) * 0.25
    hi = lo + 0.25
    # 2 ** (E - 1023) built from its bits: exact, and cheaper than ldexp.
    bits = (<uint64_t>(b >> 2)) << 52
    memcpy(&scale, &bits, 8)
    return (2.0 * lo * hi / (lo + hi)) * scale

cdef inline void sketch_add(StateRow *r, double x) noexcept nogil:
    """Count x in the current window's sketch; the caller has not yet
    counted it in win_count."""
    cdef int64_t b = bucket_of(x)
    cdef int64_t i, j, top, delta, base
    cdef uint64_t low
    if r.win_count == 0:
        memset(r.sketch, 0, sizeof(r.sketch))
        r.sk_shift = 0
        r.sk_base = <int16_t>(b - SKETCH_FIRST)
    i = b - r.sk_base
    if i >= SKETCH_BUCKETS:
        # Above the kept range: move it up, folding what falls off the
        # bottom into bucket 0 (high quantiles stay exact to the bucket).
        delta = i - (SKETCH_BUCKETS - 1)
        low = 0
        for j in range(SKETCH_BUCKETS if delta + 1 > SKETCH_BUCKETS else delta + 1):
            low += r.sketch[j]
        for j in range(1, SKETCH_BUCKETS):
            r.sketch[j] = r.sketch[j + delta] if j + delta < SKETCH_BUCKETS else 0
        while low > SKETCH_MAX:
            # Folding overflowed bucket 0: halve everything (as often as
            # needed) instead of saturating, so the ranks stay proportional.
            low = (low + 1) >> 1
            for j in range(1, SKETCH_BUCKETS):
                r.sketch[j] = <uint16_t>((r.sketch[j] + 1) >> 1)
            r.sk_shift += 1
        r.sketch[0] = <uint16_t>low
        r.sk_base = <int16_t>(b - (SKETCH_BUCKETS - 1))
        i = SKETCH_BUCKETS - 1
    elif i < 0:
        # Below: move the range down as far as its highest bucket allows.
        top = SKETCH_BUCKETS - 1
        while top > 0 and r.sketch[top] == 0:
            top -= 1
        base = r.sk_base + top - (SKETCH_BUCKETS - 1)
        if base < b:
            base = b
        delta = r.sk_base - base
        if delta > 0:
            j = SKETCH_BUCKETS - 1
            while j >= delta:
                r.sketch[j] = r.sketch[j - delta]
                j -= 1
            for j in range(delta):
                r.sketch[j] = 0
            r.sk_base = <int16_t>base
        i = b - r.sk_base
        if i < 0:
            i = 0
    if r.sketch[i] == SKETCH_MAX:
        for j in range(SKETCH_BUCKETS):
            r.sketch[j] = <uint16_t>((r.sketch[j] + 1) >> 1)
        r.sk_shift += 1
    r.sketch[i] += 1

cdef inline double sketch_quantile(const StateRow *r, double q) noexcept nogil:
    cdef uint64_t n = 0, rank, cum = 0
    cdef int64_t i
    cdef double est
    if r.win_count == 0:
        return NAN
    if r.sk_shift == 0:
        # Never halved: the counters add up to the window's count.
        n = r.win_count
    else:
        for i in range(SKETCH_BUCKETS):
            n += r.sketch[i]
    rank = <uint64_t>(q * <double>(n - 1))
    if rank + rank >= n:
        # A high quantile: from the top, a bucket or two instead of twenty.
        # The bucket holding rank r is the highest i with
        # count(sketch[i:]) >= n - r.
        i = SKETCH_BUCKETS - 1
        while True:
            cum += r.sketch[i]
            if cum >= n - rank or i == 0:
                break
            i -= 1
    else:
        for i in range(SKETCH_BUCKETS):
            cum += r.sketch[i]
            if cum > rank:
                break
    est = bucket_estimate(r.sk_base + i)
    if est < r.win_min:
        est = r.win_min
    if est > r.win_max:
        est = r.win_max
    return est


# --- windows and views ------------------------------------------------

cdef inline void view_fold(StateRow *r, uint32_t count, double sum, int64_t t,
                           const Params *p) noexcept nogil:
    """Fold a finished window (t windows before the current one) into the
    views."""
    cdef double m, dg
    cdef int64_t g
    cdef int j
    if count == 0:
        return
    m = sum / <double>count
    if r.fold_age == FOLD_NONE:
        for j in range(NVIEWS):
            r.view[j] = <float>m
    else:
        g = <int64_t>r.fold_age - t
        for j in range(NVIEWS):
            dg = pow(p.view_decay[j], <double>g)
            r.view[j] = <float>(dg * <double>r.view[j] + (1.0 - dg) * m)
    r.fold_age = <uint16_t>t

cdef inline void prev_final(StateRow *r, const Params *p) noexcept nogil:
    """The previous window can no longer change: fold it, once."""
    if not (r.flags & ROW_PREV_FINAL):
        view_fold(r, r.prev_count, r.prev_sum, 1, p)
        r.flags |= ROW_PREV_FINAL


cdef inline void window_roll(StateRow *r, int64_t start, int64_t ts, int64_t wm,
                             const Params *p) noexcept nogil:
    cdef int64_t k = (start - r.win_start) // p.window
    cdef int64_t age
    prev_final(r, p)
    if k == 1:
        r.prev_count = r.win_count
        r.prev_sum = r.win_sum
        r.prev_min = r.win_min
        r.prev_max = r.win_max
    else:
        view_fold(r, r.win_count, r.win_sum, 0, p)
        r.prev_count = 0
        r.prev_sum = 0.0
        r.prev_min = INFINITY
        r.prev_max = -INFINITY
    # The new previous window is open for late events until the watermark
    # passes its end plus the lateness.
    r.flags &= ~ROW_PREV_FINAL
    if r.fold_age != FOLD_NONE:
        age = <int64_t>r.fold_age + k
        r.fold_age = <uint16_t>(age if age < FOLD_CAP else FOLD_CAP)
    r.win_start = start
    r.win_count = 0
    r.win_sum = 0.0
    r.win_min = INFINITY
    r.win_max = -INFINITY
    if start + p.lateness <= ts:
        # With no lateness allowed, the window just closed is final at once.
        prev_final(r, p)

cdef inline void window_add(StateRow *r, int64_t ts, double x, int64_t wm,
                            bint fresh, const Params *p, BatchCounters *c) noexcept nogil:
    cdef int64_t start
    cdef bint check_prev = False
    # Most events fall in the current window: no division for them.
    if not fresh and ts >= r.win_start and <uint64_t>(ts - r.win_start) < <uint64_t>p.window:
        start = r.win_start
    else:
        start = ts - ts % p.window
    if fresh:
        r.win_start = start
        # The window before the first one is empty: nothing to fold.
        r.flags |= ROW_PREV_FINAL if start + p.lateness <= ts else 0
    elif start > r.win_start:
        window_roll(r, start, ts, wm, p)
    elif start == r.win_start:
        check_prev = ts > wm
    elif (start == r.win_start - p.window and r.win_start + p.lateness > wm
            and not (r.flags & ROW_PREV_FINAL)):
        r.prev_count += 1
        r.prev_sum += x
        if x < r.prev_min:
            r.prev_min = x
        if x > r.prev_max:
            r.prev_max = x
        return
    else:
        r.late += 1
        c.late += 1
        return
    sketch_add(r, x)
    r.win_count += 1
    r.win_sum += x
    if x < r.win_min:
        r.win_min = x
    if x > r.win_max:
        r.win_max = x
    if check_prev and wm < r.win_start + p.lateness <= ts:
        # The watermark just passed the previous window's end plus the
        # lateness: it can no longer change.  (The flags' cold line is read
        # only here, not for every event.)
        prev_final(r, p)


# --- rules and status -------------------------------------------------

cdef inline double stat_value(const StateRow *r, int stat) noexcept nogil:
    if stat == STAT_LAST:
        return r.last
    if stat == STAT_EWMA:
        return r.ewma
    if stat == STAT_MEAN:
        return r.mean
    if stat == STAT_MIN:
        return r.min
    if stat == STAT_MAX:
        return r.max
    if stat == STAT_VAR:
        return r.m2 / <double>r.count
    if stat == STAT_COUNT:
        return <double>r.count
    if stat >= STAT_VIEW0 and stat < STAT_VIEW0 + NVIEWS:
        if r.fold_age == FOLD_NONE:
            return NAN
        return <double>r.view[stat - STAT_VIEW0]
    if stat == STAT_WIN_COUNT:
        return <double>r.win_count
    if r.win_count == 0:
        return NAN
    if stat == STAT_WIN_SUM:
        return r.win_sum
    if stat == STAT_WIN_MIN:
        return r.win_min
    if stat == STAT_WIN_MAX:
        return r.win_max
    if stat == STAT_WIN_MEAN:
        return r.win_sum / <double>r.win_count
    if stat == STAT_P50:
        return sketch_quantile(r, 0.5)
    if stat == STAT_P95:
        return sketch_quantile(r, 0.95)
    if stat == STAT_P99:
        return sketch_quantile(r, 0.99)
    return NAN

cdef inline void status_commit(StateRow *r, uint8_t new, int64_t ts, uint8_t stat,
                               double value, AlertSink *s) noexcept nogil:
    cdef uint8_t old = r.status
    r.pending = 0
    if new == old:
        return
    r.status = new
    r.status_since = ts
    sink_emit(s, r, old, new, stat, value, ts)

cdef inline void status_evaluate(StateRow *r, int64_t ts, const Params *p,
                                 AlertSink *s) noexcept nogil:
    """The rule state machine of docs/health.md, after an in-order event
    (or a reload) at event time ts."""
    cdef const Rule *rule
    cdef double v, x
    cdef uint8_t raw, target
    if r.rule == 0:
        if r.status != ST_OK:
            status_commit(r, ST_OK, ts, STAT_LAST, r.last, s)
        return
    rule = &p.rules[r.rule - 1]
    v = stat_value(r, rule.stat)
    if not isfinite(v):
        # No value yet (an empty window), or one no threshold can judge
        # (an overflowed variance): the status stays as it is.
        return
    x = -v if rule.flags & RULE_FALLING else v
    if x >= rule.crit:
        raw = ST_CRIT
    elif x >= rule.warn:
        raw = ST_WARN
    else:
        raw = ST_OK
    if r.status == ST_STALE:
        status_commit(r, raw, ts, rule.stat, v, s)
        return
    target = raw
    if raw == ST_OK and (r.status == ST_WARN or r.status == ST_CRIT) and x >= rule.clear:
        target = ST_WARN if rule.flags & RULE_HAS_WARN else ST_CRIT
    if target > r.status:
        if r.pending == 0:
            r.pending = target
            r.pending_since = ts
        elif target < r.pending:
            r.pending = target
        if ts - r.pending_since >= rule.for_ns:
            status_commit(r, r.pending, ts, rule.stat, v, s)
    elif target == r.status:
        r.pending = 0
    else:
        status_commit(r, target, ts, rule.stat, v, s)

cdef inline uint8_t rule_for(const Params *p, uint32_t metric) noexcept nogil:
    """1 + index of the rule for metric (its own, else the wildcard), or 0."""
    cdef int64_t i
    cdef uint8_t wildcard = 0
    for i in range(p.nrules):
        if p.rules[i].flags & RULE_WILDCARD:
            if wildcard == 0:
                wildcard = <uint8_t>(i + 1)
        elif p.rules[i].metric == metric:
            return <uint8_t>(i + 1)
    return wildcard

cdef inline int64_t row_ttl(const StateRow *r, const Params *p) noexcept nogil:
    if r.rule:
        return p.rules[r.rule - 1].ttl_ns
    return p.ttl


# --- the per-event update ---------------------------------------------

cdef inline void row_update(StateRow *r, const Event *e, const Params *p,
                            AlertSink *s, BatchCounters *c) noexcept nogil:
    cdef double x = e.value
    cdef int64_t ts = e.ts
    cdef int64_t wm = r.last_ts
    cdef bint fresh = r.count == 0
    cdef uint64_t n = r.count + 1
    # One division per event: the reciprocal serves the mean and the variance.
    cdef double inv = 1.0 / <double>n
    cdef double delta = x - r.mean
    cdef double a
    r.count = n
    r.sum += x
    if x < r.min:
        r.min = x
    if x > r.max:
        r.max = x
    # Scaled before subtracting: x - mean overflows for readings near
    # DBL_MAX of opposite signs, and the mean must stay finite whenever the
    # readings are (m2 may legitimately overflow to inf).
    r.mean += x * inv - r.mean * inv
    r.m2 += delta * (x - r.mean)
    if p.health:
        window_add(r, ts, x, wm, fresh, p, c)
    if fresh or ts >= wm:
        # Newest (or equal) event time: it becomes the series' current state.
        if fresh:
            r.ewma = x
        elif ts > wm:
            a = exp2(-<double>(ts - wm) / p.half_life)
            # A weighted sum, not ewma + (1 - a) * (x - ewma): the difference
            # of two finite readings near DBL_MAX overflows.
            r.ewma = a * r.ewma + (1.0 - a) * x
        if fresh:
            r.first_ts = ts
        r.last = x
        r.last_ts = ts
        if p.health:
            status_evaluate(r, ts, p, s)
    else:
        # Older than what the series already shows: it counts in the
        # aggregates but never replaces the current value or the status.
        r.stale += 1
        c.stale += 1
        # Only here can first_ts fall (it is never above last_ts), which
        # keeps its cold line out of the in-order path.
        if ts < r.first_ts:
            r.first_ts = ts


cdef inline void row_init(StateRow *r, uint64_t key, uint32_t metric,
                          const Params *p) noexcept nogil:
    # Everything but the version word, which the caller holds odd.
    memset(<char *>r + 8, 0, sizeof(StateRow) - 8)
    r.key = key
    r.metric = metric
    r.min = INFINITY
    r.max = -INFINITY
    r.last_ts = -0x7FFFFFFFFFFFFFFF - 1
    r.first_ts = 0x7FFFFFFFFFFFFFFF
    r.win_start = -0x7FFFFFFFFFFFFFFF - 1
    r.win_min = INFINITY
    r.win_max = -INFINITY
    r.prev_min = INFINITY
    r.prev_max = -INFINITY
    r.fold_age = FOLD_NONE
    r.rule = rule_for(p, metric)
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
                                 uint64_t s, const Event *e, const Params *p) noexcept nogil:
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
    row_init(r, e.key, e.metric, p)
    rf_store_release_u64(&r.version, r.version + 1)
    index[s].key = e.key
    index[s].metric = e.metric
    rf_store_release_u32(&index[s].row1, <uint32_t>(used + 1))
    rf_store_release_u64(&th.used, used + 1)
    return <int64_t>used


cdef inline void row_prefetch(StateRow *r, bint health) noexcept nogil:
    # Without the health layer an event touches only the first two lines.
    cdef char *b = <char *>r
    rf_prefetch_w(b)
    rf_prefetch_w(b + 64)
    if health:
        rf_prefetch_w(b + 128)


cdef inline void apply_batch(TableHeader *th, const Event *ev, int64_t n,
                             const Params *p, BatchCounters *c,
                             AlertSink *s) noexcept nogil:
    """Fold n events into the table: the fused per-series update, windows,
    sketch and rules.

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
        row = found[i & (PIPE - 1)]
        if row < 0:
            row = index_insert(th, index, rows, hashes[i & (PIPE - 1)], e, p)
            if row < 0:
                c.full += 1
                continue
        r = &rows[row]
        v = r.version
        rf_store_relaxed_u64(&r.version, v + 1)
        rf_fence_release()
        row_update(r, e, p, s, c)
        rf_store_release_u64(&r.version, v + 2)
        c.applied += 1


cdef inline void table_sweep(TableHeader *th, int64_t now, const Params *p,
                             AlertSink *s) noexcept nogil:
    """Mark STALE every series silent for longer than its TTL at wall time
    now; the alert's event time is when the silence passed the TTL."""
    cdef StateRow *rows = table_rows(th)
    cdef uint64_t i, used = th.used, v
    cdef int64_t ttl
    cdef StateRow *r
    for i in range(used):
        r = &rows[i]
        if r.status == ST_STALE or r.count == 0:
            continue
        ttl = row_ttl(r, p)
        if ttl <= 0 or now - r.last_ts <= ttl:
            continue
        v = r.version
        rf_store_relaxed_u64(&r.version, v + 1)
        rf_fence_release()
        status_commit(r, ST_STALE, r.last_ts + ttl, STAT_TTL, r.last, s)
        rf_store_release_u64(&r.version, v + 2)


cdef inline void table_reload(TableHeader *th, const Params *p,
                              AlertSink *s) noexcept nogil:
    """After new rules: re-resolve every series' rule and re-evaluate it at
    its watermark, keeping windows, statistics and status."""
    cdef StateRow *rows = table_rows(th)
    cdef uint64_t i, used = th.used, v
    cdef StateRow *r
    for i in range(used):
        r = &rows[i]
        v = r.version
        rf_store_relaxed_u64(&r.version, v + 1)
        rf_fence_release()
        r.rule = rule_for(p, r.metric)
        r.pending = 0
        if r.count and p.health and r.win_start + p.lateness <= r.last_ts:
            # A lowered lateness can make the previous window final now.
            prev_final(r, p)
        if r.count and r.status != ST_STALE:
            status_evaluate(r, r.last_ts, p, s)
        rf_store_release_u64(&r.version, v + 2)


cdef inline void params_init(Params *p, int64_t ts_min, int64_t ts_max,
                             int64_t window, int64_t lateness, double half_life,
                             const double *views, int64_t ttl) noexcept nogil:
    cdef int j
    p.ts_min = ts_min
    p.ts_max = ts_max
    p.window = window
    p.lateness = lateness
    p.half_life = half_life
    for j in range(NVIEWS):
        p.view_decay[j] = exp(-1.0 / views[j])
    p.ttl = ttl
    p.rules = NULL
    p.nrules = 0
    p.health = True


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
