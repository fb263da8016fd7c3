# cython: language_level=3
# Rules and status: the value a rule watches, the OK / WARN / CRIT / STALE
# state machine with hysteresis and hold time, rule resolution and TTLs
# (docs/health.md, Rules).  Every change is emitted to the alert sink.

from libc.stdint cimport int64_t, uint32_t, uint8_t
from libc.math cimport isfinite, NAN
from layout cimport (StateRow, Rule, ST_OK, ST_WARN, ST_STALE, ST_CRIT, STAT_LAST,
                     STAT_EWMA, STAT_MEAN, STAT_MIN, STAT_MAX, STAT_VAR, STAT_COUNT,
                     STAT_WIN_COUNT, STAT_WIN_SUM, STAT_WIN_MIN, STAT_WIN_MAX,
                     STAT_WIN_MEAN, STAT_P50, STAT_P95, STAT_P99, STAT_VIEW0, NVIEWS,
                     FOLD_NONE, RULE_WILDCARD, RULE_HAS_WARN, RULE_FALLING, PRODUCER_METRIC)
from params cimport Params
from alertsink cimport AlertSink, sink_emit
from sketch cimport sketch_quantile
from undo cimport undo_cold, undo_ids

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
                               double value, const Params *p, AlertSink *s) noexcept nogil:
    cdef uint8_t old = r.status
    r.pending = 0
    if new == old:
        return
    undo_cold(p, r)
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
            status_commit(r, ST_OK, ts, STAT_LAST, r.last, p, s)
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
        status_commit(r, raw, ts, rule.stat, v, p, s)
        return
    target = raw
    if raw == ST_OK and (r.status == ST_WARN or r.status == ST_CRIT) and x >= rule.clear:
        target = ST_WARN if rule.flags & RULE_HAS_WARN else ST_CRIT
    if target > r.status:
        if r.pending == 0:
            undo_ids(p, r)
            r.pending = target
            r.pending_since = ts
        elif target < r.pending:
            r.pending = target
        if ts - r.pending_since >= rule.for_ns:
            status_commit(r, r.pending, ts, rule.stat, v, p, s)
    elif target == r.status:
        r.pending = 0
    else:
        status_commit(r, target, ts, rule.stat, v, p, s)

cdef inline uint8_t rule_for(const Params *p, uint32_t metric) noexcept nogil:
    """1 + index of the rule for metric (its own, else the wildcard), or 0."""
    cdef int64_t i
    cdef uint8_t wildcard = 0
    if metric == PRODUCER_METRIC:
        # A producer's marker row is bookkeeping, never health.
        return 0
    for i in range(p.nrules):
        if p.rules[i].flags & RULE_WILDCARD:
            if wildcard == 0:
                wildcard = <uint8_t>(i + 1)
        elif p.rules[i].metric == metric:
            return <uint8_t>(i + 1)
    return wildcard

cdef inline int64_t row_ttl(const StateRow *r, const Params *p) noexcept nogil:
    if r.metric == PRODUCER_METRIC:
        return 0
    if r.rule:
        return p.rules[r.rule - 1].ttl_ns
    return p.ttl
