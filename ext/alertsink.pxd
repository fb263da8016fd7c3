# cython: language_level=3
# The alert sink: status changes leave the kernels here.  A worker never
# lets a kernel meet a full alert ring: it cuts its work to the room there is
# (sink_room) and waits for the engine's alert thread to make more.  Only an
# array sink (tests, the replay at start) or a ring whose consumer is gone
# drops an alert, and counts it.

from libc.stdint cimport int64_t, uint64_t, uint8_t
from libc.string cimport memset
from atomic cimport rf_load_acquire_i64, rf_store_release_i64
from layout cimport Alert, RingHeader, StateRow
from ring cimport ring_publish

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
    # The worker block's copy of head, stored after each alert is whole, so
    # that the worker started after a kill publishes what this one wrote
    # (docs/faults.md); NULL for an array.
    int64_t *shared_head

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

cdef inline int64_t sink_room(AlertSink *s) noexcept nogil:
    """Alerts that can be written now without a drop."""
    if s.ring != NULL:
        s.limit = rf_load_acquire_i64(&s.ring.consumed) + s.cap
    return s.limit - s.head

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
    if s.shared_head != NULL:
        rf_store_release_i64(s.shared_head, s.head)
