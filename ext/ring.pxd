# cython: language_level=3
# The hot path of a single-producer/single-consumer ring of 32-byte records
# in shared memory: claim room, copy in, publish; see what is readable,
# release it.  Cursors are published with store-release and read with
# load-acquire, so the records written before a publish are visible to the
# consumer that sees the new cursor; each publish or release rings the
# other side's doorbell.  The Event and RingHeader structs come from the
# generated layout.

from libc.stdint cimport int64_t, uint64_t, uint32_t
from atomic cimport rf_load_acquire_i64, rf_store_release_i64, rf_bell_ring
from layout cimport Event, RingHeader

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
