# cython: language_level=3
# A worker's kernel settings (event-time range, window, lateness, EWMA
# half-life, view decays, default TTL, rules) and the per-batch counters the
# kernels add to.  Not shared memory: each worker and each test Settings
# object keeps its own.

from libc.stdint cimport int64_t, uint64_t
from libc.math cimport isfinite, exp
from layout cimport Event, Rule, RowUndo, NVIEWS, PRODUCER_METRIC, EVENT_MARKER

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
    RowUndo *undo         # where the row being written is saved (ext/undo.pxd)
    uint64_t *heartbeat   # the worker's heartbeat word, beaten in long sweeps; or NULL
    bint markers          # producer markers are valid (workers; a router only in marker mode)

ctypedef struct BatchCounters:
    uint64_t applied
    uint64_t invalid
    uint64_t full
    uint64_t stale
    uint64_t late

cdef inline bint event_valid(const Event *e, const Params *p) noexcept nogil:
    # The reserved metric only as a producer marker, and only where markers
    # are expected: a client cannot forge one through a producer.
    return isfinite(e.value) and e.ts >= p.ts_min and e.ts <= p.ts_max and \
        (e.metric != PRODUCER_METRIC or (p.markers and e.flags == EVENT_MARKER))

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
    p.undo = NULL
    p.heartbeat = NULL
    p.markers = True
