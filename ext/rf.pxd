# cython: language_level=3
# Shared declarations for every ringflow extension module: the atomics header,
# the record and ring layouts, and the wait strategies.  Everything here is
# either an extern declaration or an inline function, so cimporting this file
# never creates a run-time import between the compiled modules.

from libc.stdint cimport int64_t, uint64_t, uint32_t, int32_t

cdef extern from "rf_atomic.h" nogil:
    int64_t rf_load_acquire_i64(const int64_t *p)
    void rf_store_release_i64(int64_t *p, int64_t v)
    int64_t rf_load_relaxed_i64(const int64_t *p)
    uint64_t rf_load_acquire_u64(const uint64_t *p)
    uint64_t rf_load_relaxed_u64(const uint64_t *p)
    void rf_store_relaxed_u64(uint64_t *p, uint64_t v)
    void rf_store_release_u64(uint64_t *p, uint64_t v)
    uint64_t rf_fetch_add_u64(uint64_t *p, uint64_t v)
    uint32_t rf_load_acquire_u32(const uint32_t *p)
    void rf_store_seqcst_u32(uint32_t *p, uint32_t v)
    void rf_store_relaxed_u32(uint32_t *p, uint32_t v)
    void rf_store_release_u32(uint32_t *p, uint32_t v)
    void rf_fence_acquire()
    void rf_fence_release()
    void rf_fence_seqcst()
    void rf_cpu_relax()
    void rf_prefetch_w(const void *p)
    int64_t rf_now_ns()
    int64_t rf_wall_ns()
    void rf_sleep_ns(int64_t ns)
    void rf_yield()
    int rf_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns)
    void rf_bell_ring(uint32_t *bell)
    uint64_t rf_mix64(uint64_t z)

# Status codes shared by every kernel; engine/errors.py maps them to
# exceptions in one place.
cdef enum:
    RF_OK = 0
    RF_TIMEOUT = 1        # a wait slice ran out; the caller decides what next
    RF_STOPPED = 2        # a worker saw its stop flag with its rings drained
    RF_BUSY = 3           # a single-threaded endpoint was entered twice

# The 32-byte event record (engine.EVENT_DTYPE mirrors it field for field).
ctypedef struct Event:
    uint64_t key
    int64_t ts
    uint32_t metric
    uint32_t flags
    double value

# One ring's header: three cache lines so the producer's cursor and the
# consumer's cursor never share a line.
ctypedef struct RingHeader:
    uint64_t magic
    uint64_t capacity
    uint64_t mask
    uint64_t record_size
    uint64_t producer_bell    # byte offset of the producer's doorbell
    uint64_t consumer_bell    # byte offset of the consumer's doorbell
    uint64_t data             # byte offset of the record array
    uint64_t _pad0
    int64_t published         # producer cursor: sequences below it are readable
    int64_t _pad1[7]
    int64_t consumed          # consumer cursor: sequences below it are free
    int64_t _pad2[7]

cdef enum WaitKind:
    WAIT_SPIN = 0
    WAIT_YIELD = 1
    WAIT_SLEEP = 2
    WAIT_BLOCK = 3

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

cdef inline Event *ring_data(char *base, RingHeader *h) noexcept nogil:
    return <Event *>(base + h.data)

cdef inline int64_t ring_readable(RingHeader *h, int64_t consumed) noexcept nogil:
    return rf_load_acquire_i64(&h.published) - consumed

cdef inline int64_t ring_free(RingHeader *h, int64_t published) noexcept nogil:
    return <int64_t>h.capacity - (published - rf_load_acquire_i64(&h.consumed))

cdef inline void ring_publish(char *base, RingHeader *h, int64_t cursor) noexcept nogil:
    rf_store_release_i64(&h.published, cursor)
    rf_bell_ring(<uint32_t *>(base + h.consumer_bell))

cdef inline void ring_release(char *base, RingHeader *h, int64_t cursor) noexcept nogil:
    rf_store_release_i64(&h.consumed, cursor)
    rf_bell_ring(<uint32_t *>(base + h.producer_bell))

cdef inline void copy_in(Event *data, uint64_t mask, int64_t seq,
                         const Event *src, int64_t n) noexcept nogil:
    # Two straight copies when the span wraps past the end of the array.
    cdef int64_t start = seq & mask
    cdef int64_t first = <int64_t>(mask + 1) - start
    cdef int64_t i
    if first > n:
        first = n
    for i in range(first):
        data[start + i] = src[i]
    for i in range(n - first):
        data[i] = src[first + i]
