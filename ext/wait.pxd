# cython: language_level=3
# Wait strategies: what a side does while its ring is full or empty.  Spin,
# yield and sleep re-check their condition; block parks on a futex doorbell
# (rf_atomic.h) after a short spin and yield.  The WAIT_* codes come from
# the generated layout (EngineConfig.wait names them).

from libc.stdint cimport int64_t, uint32_t
from atomic cimport (rf_cpu_relax, rf_now_ns, rf_yield, rf_sleep_ns, rf_load_acquire_u32,
                     rf_store_seqcst_u32, rf_futex_wait, rf_store_relaxed_u32)
from layout cimport WAIT_SPIN, WAIT_YIELD, WAIT_SLEEP, WAIT_BLOCK

# Spins before a blocking or sleeping waiter gives the core away: long
# enough to catch a peer that is about to publish, short enough that an
# idle engine does not burn a core.
cdef enum:
    SPIN_LIMIT = 200
    SLEEP_MIN_NS = 1000
    SLEEP_MAX_NS = 1000000
    # The blocking strategy yields for this long before it parks: a peer
    # that publishes again within it costs no futex wake-up, a system call
    # that took 30% of the gateway's ingest thread when workers parked
    # between its frames.
    YIELD_BEFORE_PARK_NS = 100000

ctypedef struct Waiter:
    int kind
    int64_t spins
    int64_t backoff_ns
    int64_t since_ns

cdef inline void waiter_init(Waiter *w, int kind) noexcept nogil:
    w.kind = kind
    w.spins = 0
    w.backoff_ns = SLEEP_MIN_NS
    w.since_ns = 0

cdef inline void waiter_reset(Waiter *w) noexcept nogil:
    w.spins = 0
    w.backoff_ns = SLEEP_MIN_NS

cdef inline int64_t waiter_arm(Waiter *w, uint32_t *bell) noexcept nogil:
    """One idle step.  Returns -1 when the caller should simply re-check its
    condition, or the doorbell value to park on (blocking strategy): the
    caller then re-checks once more and calls waiter_park or waiter_disarm."""
    if w.kind == WAIT_SPIN or w.spins < SPIN_LIMIT:
        rf_cpu_relax()
        w.spins += 1
        if w.spins == SPIN_LIMIT:
            w.since_ns = rf_now_ns()
        return -1
    if w.kind == WAIT_YIELD:
        rf_yield()
        return -1
    if w.kind == WAIT_BLOCK and rf_now_ns() - w.since_ns < YIELD_BEFORE_PARK_NS:
        rf_yield()
        return -1
    if w.kind == WAIT_SLEEP:
        rf_sleep_ns(w.backoff_ns)
        if w.backoff_ns < SLEEP_MAX_NS:
            w.backoff_ns *= 2
        return -1
    cdef uint32_t seen = rf_load_acquire_u32(&bell[1])
    rf_store_seqcst_u32(&bell[0], 1)
    return seen

cdef inline void waiter_park(uint32_t *bell, uint32_t seen,
                             int64_t timeout_ns) noexcept nogil:
    if timeout_ns > 0:
        rf_futex_wait(&bell[1], seen, timeout_ns)
    rf_store_relaxed_u32(&bell[0], 0)

cdef inline void waiter_disarm(uint32_t *bell) noexcept nogil:
    rf_store_relaxed_u32(&bell[0], 0)
