# cython: language_level=3
"""The producer side of an engine: validate a batch, shard it by key and
scatter it into one SPSC ring per worker in a single counting-sort pass
(private module; :class:`engine.Engine` drives it)."""

cimport numpy as cnp
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE, PyBUF_C_CONTIGUOUS
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport int64_t, uint64_t, uint32_t
from libc.string cimport memset
from atomic cimport rf_now_ns, rf_load_acquire_i64, rf_store_relaxed_u64
from shard cimport shard_of as shard_of_key
from layout cimport Event, RingHeader, RF_OK, RF_TIMEOUT, RF_BUSY, PB_COUNTERS, PC_ACCEPTED, \
    PC_INVALID, PC_BATCHES, PRODUCER_METRIC
from ring cimport ring_data, ring_free, ring_publish
from wait cimport Waiter, waiter_init, waiter_reset, waiter_arm, waiter_park, waiter_disarm
from params cimport Params, event_valid

from engine.core.layout import PRODUCER_COUNTERS

cnp.import_array()

# Producer counters, u64 slots after the producer's doorbell line
# (engine/core/layout.py).
COUNTER_NAMES = PRODUCER_COUNTERS
STATUS_BUSY = RF_BUSY


def shard_of(cnp.ndarray keys, uint64_t workers):
    """``mix64(key) % workers`` for every key of a uint64 array."""
    cdef const uint64_t[::1] k = keys
    out = cnp.PyArray_EMPTY(1, [k.shape[0]], cnp.NPY_UINT32, 0)
    cdef uint32_t[::1] o = out
    cdef Py_ssize_t i
    if workers == 0:
        raise ValueError("workers must be positive")
    with nogil:
        for i in range(k.shape[0]):
            o[i] = <uint32_t>shard_of_key(k[i], workers)
    return out


cdef class Producer:
    """One producer of an engine: owns one ring per worker (their producer
    end) and a doorbell that the workers ring when they free space.

    Not thread-safe by design (each ring has one producer); concurrent use
    from two threads is detected and refused rather than locked."""
    cdef Py_buffer view
    cdef bint has_view
    cdef char *base
    cdef Py_ssize_t workers
    cdef RingHeader **rings
    cdef Event **datas
    cdef int64_t *cursor
    cdef int64_t *counts
    cdef int64_t *fill
    cdef uint32_t *scratch
    cdef int64_t chunk
    cdef uint32_t *bell
    cdef uint64_t *counters
    cdef Waiter waiter
    cdef Params params
    cdef bint busy
    # every ring of the engine, for flush(): events of other producers count
    cdef Py_ssize_t nall
    cdef RingHeader **all_rings
    cdef int64_t *targets

    def __cinit__(self, buffer, list ring_offsets, Py_ssize_t block_offset,
                  list all_ring_offsets, int64_t ts_min, int64_t ts_max,
                  int wait_kind, int64_t chunk=0):
        self.has_view = False
        self.rings = NULL
        PyObject_GetBuffer(buffer, &self.view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
        self.has_view = True
        self.base = <char *>self.view.buf
        self.workers = len(ring_offsets)
        self.nall = len(all_ring_offsets)
        if self.workers == 0:
            raise ValueError("a producer needs at least one ring")
        self.rings = <RingHeader **>PyMem_Malloc(self.workers * sizeof(void *))
        self.datas = <Event **>PyMem_Malloc(self.workers * sizeof(void *))
        self.cursor = <int64_t *>PyMem_Malloc(self.workers * sizeof(int64_t))
        self.counts = <int64_t *>PyMem_Malloc((self.workers + 1) * sizeof(int64_t))
        self.fill = <int64_t *>PyMem_Malloc(self.workers * sizeof(int64_t))
        self.all_rings = <RingHeader **>PyMem_Malloc(self.nall * sizeof(void *))
        self.targets = <int64_t *>PyMem_Malloc(self.nall * sizeof(int64_t))
        cdef uint64_t smallest = 0
        for i, off in enumerate(ring_offsets):
            h = <RingHeader *>(self.base + <Py_ssize_t>off)
            self.rings[i] = h
            self.datas[i] = ring_data(self.base, h)
            self.cursor[i] = rf_load_acquire_i64(&h.published)
            if smallest == 0 or h.capacity < smallest:
                smallest = h.capacity
        for i, off in enumerate(all_ring_offsets):
            self.all_rings[i] = <RingHeader *>(self.base + <Py_ssize_t>off)
        # Half a ring per chunk: the worker drains one half while we fill
        # the other, and a chunk always fits in an empty ring.
        self.chunk = chunk if chunk > 0 else <int64_t>(smallest // 2)
        if self.chunk < 1:
            self.chunk = 1
        if self.chunk > <int64_t>smallest:
            raise ValueError("chunk larger than the smallest ring")
        self.scratch = <uint32_t *>PyMem_Malloc(self.chunk * sizeof(uint32_t))
        self.bell = <uint32_t *>(self.base + block_offset)
        self.counters = <uint64_t *>(self.base + block_offset + PB_COUNTERS)
        self.params.ts_min = ts_min
        self.params.ts_max = ts_max
        # A client's event never passes as a producer marker.
        self.params.markers = False
        waiter_init(&self.waiter, wait_kind)
        self.busy = False

    def __dealloc__(self):
        PyMem_Free(self.rings)
        PyMem_Free(self.datas)
        PyMem_Free(self.cursor)
        PyMem_Free(self.counts)
        PyMem_Free(self.fill)
        PyMem_Free(self.scratch)
        PyMem_Free(self.all_rings)
        PyMem_Free(self.targets)
        self.release_buffer()

    def release_buffer(self):
        if self.has_view:
            PyBuffer_Release(&self.view)
            self.has_view = False
            self.base = NULL

    cdef int enter(self) except -1:
        # Runs under the GIL with no Python code between test and set, so
        # two threads cannot both get in: the second is told, not locked out.
        if self.base == NULL:
            raise ValueError("producer is closed")
        if self.busy:
            return RF_BUSY
        self.busy = True
        return RF_OK

    cdef bint has_room(self) noexcept nogil:
        cdef Py_ssize_t w
        for w in range(self.workers):
            if self.counts[w] and ring_free(self.rings[w], self.cursor[w]) < self.counts[w]:
                return False
        return True

    cdef int submit_span(self, const Event *ev, int64_t n, int64_t slice_ns,
                         int64_t *done, int64_t *invalid) noexcept nogil:
        cdef int64_t pos = done[0], m, i, remaining, seen, marks
        cdef Py_ssize_t w
        cdef uint64_t W = <uint64_t>self.workers
        cdef uint32_t s
        cdef int64_t deadline = rf_now_ns() + slice_ns
        cdef uint64_t mask
        while pos < n:
            m = n - pos
            if m > self.chunk:
                m = self.chunk
            memset(self.counts, 0, (self.workers + 1) * sizeof(int64_t))
            marks = 0
            # Pass 1: validate and count per shard.
            for i in range(m):
                if event_valid(&ev[pos + i], &self.params):
                    s = <uint32_t>shard_of_key(ev[pos + i].key, W)
                    # A producer marker is routed, not counted as an event.
                    marks += ev[pos + i].metric == PRODUCER_METRIC
                else:
                    s = <uint32_t>W
                self.scratch[i] = s
                self.counts[s] += 1
            # Wait until every ring this chunk touches has room for its share.
            waiter_reset(&self.waiter)
            while not self.has_room():
                remaining = deadline - rf_now_ns()
                if remaining <= 0:
                    done[0] = pos
                    return RF_TIMEOUT
                seen = waiter_arm(&self.waiter, self.bell)
                if seen >= 0:
                    if self.has_room():
                        waiter_disarm(self.bell)
                    else:
                        waiter_park(self.bell, <uint32_t>seen, remaining)
            # Pass 2: scatter straight into the ring slots, then publish.
            for w in range(self.workers):
                self.fill[w] = self.cursor[w]
            for i in range(m):
                s = self.scratch[i]
                if s < W:
                    mask = self.rings[s].mask
                    self.datas[s][self.fill[s] & mask] = ev[pos + i]
                    self.fill[s] += 1
            for w in range(self.workers):
                if self.counts[w]:
                    self.cursor[w] = self.fill[w]
                    ring_publish(self.base, self.rings[w], self.cursor[w])
            invalid[0] += self.counts[W]
            rf_store_relaxed_u64(&self.counters[PC_ACCEPTED],
                                 self.counters[PC_ACCEPTED]
                                 + <uint64_t>(m - self.counts[W] - marks))
            rf_store_relaxed_u64(&self.counters[PC_INVALID],
                                 self.counters[PC_INVALID] + <uint64_t>self.counts[W])
            rf_store_relaxed_u64(&self.counters[PC_BATCHES],
                                 self.counters[PC_BATCHES] + 1)
            pos += m
            done[0] = pos
        return RF_OK

    def submit(self, cnp.ndarray events, int64_t start, int64_t slice_ns,
               bint markers=False):
        """Route ``events[start:]`` into the rings, waiting at most
        ``slice_ns`` for room.  Returns ``(status, done, invalid)``: events
        before index ``done`` are handled (accepted or rejected), ``invalid``
        of them were rejected.  ``markers``: let producer markers through
        (the gateway's idempotent producers, docs/journal.md)."""
        cdef int64_t done = start, invalid = 0
        cdef int status
        cdef const Event *ev
        cdef int64_t n
        if self.enter() != RF_OK:
            return RF_BUSY, start, 0
        try:
            if not cnp.PyArray_IS_C_CONTIGUOUS(events) or events.itemsize != sizeof(Event) \
                    or events.ndim != 1:
                raise ValueError("events must be a 1-d C-contiguous EVENT_DTYPE array")
            ev = <const Event *>cnp.PyArray_DATA(events)
            n = events.shape[0]
            self.params.markers = markers
            with nogil:
                status = self.submit_span(ev, n, slice_ns, &done, &invalid)
        finally:
            self.params.markers = False
            self.busy = False
        return status, done, invalid

    def flush_begin(self):
        """Remember how far every ring of the engine has been published."""
        if self.base == NULL:
            raise ValueError("producer is closed")
        cdef Py_ssize_t i
        for i in range(self.nall):
            self.targets[i] = rf_load_acquire_i64(&self.all_rings[i].published)

    cdef bint drained(self) noexcept nogil:
        cdef Py_ssize_t i
        for i in range(self.nall):
            if rf_load_acquire_i64(&self.all_rings[i].consumed) < self.targets[i]:
                return False
        return True

    def flush_wait(self, int64_t slice_ns):
        """Wait at most ``slice_ns`` until every ring has been consumed up to
        what :meth:`flush_begin` saw.  Returns a status code."""
        cdef int64_t deadline = rf_now_ns() + slice_ns, remaining, seen
        cdef int status = RF_OK
        if self.enter() != RF_OK:
            return RF_BUSY
        try:
            with nogil:
                waiter_reset(&self.waiter)
                while not self.drained():
                    remaining = deadline - rf_now_ns()
                    if remaining <= 0:
                        status = RF_TIMEOUT
                        break
                    seen = waiter_arm(&self.waiter, self.bell)
                    if seen >= 0:
                        if self.drained():
                            waiter_disarm(self.bell)
                        else:
                            # Rings of other producers ring their own
                            # doorbells, not ours: park briefly, re-check.
                            waiter_park(self.bell, <uint32_t>seen,
                                        remaining if remaining < 200000 else 200000)
        finally:
            self.busy = False
        return status
