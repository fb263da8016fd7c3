# cython: language_level=3
# One series' row: its initialisation and the fused per-event update
# (Welford statistics, EWMA, windows, status).  docs/health.md is the
# contract of every field; the NumPy oracle in tests/health_reference.py
# implements it a second time.

from libc.stdint cimport int64_t, uint64_t, uint32_t
from libc.string cimport memset
from libc.math cimport INFINITY, exp2
from atomic cimport rf_prefetch_w
from layout cimport Event, StateRow, ROW_USED, FOLD_NONE
from params cimport Params, BatchCounters
from alertsink cimport AlertSink
from window cimport window_add
from status cimport status_evaluate, rule_for
from undo cimport undo_cold, undo_ids

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
            undo_ids(p, r)
            r.first_ts = ts
        r.last = x
        r.last_ts = ts
        if p.health:
            status_evaluate(r, ts, p, s)
    else:
        # Older than what the series already shows: it counts in the
        # aggregates but never replaces the current value or the status.
        undo_cold(p, r)
        r.stale += 1
        c.stale += 1
        # Only here can first_ts fall (it is never above last_ts), which
        # keeps line 4's tail out of the in-order path.
        if ts < r.first_ts:
            undo_ids(p, r)
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

cdef inline void row_prefetch(StateRow *r, bint health) noexcept nogil:
    # Without the health layer an event touches only the first two lines;
    # with it, the sketch's line 2 too, where a window's first value lands
    # (SKETCH_FIRST) and, for most windows, all the others.
    cdef char *b = <char *>r
    rf_prefetch_w(b)
    rf_prefetch_w(b + 64)
    if health:
        rf_prefetch_w(b + 128)
