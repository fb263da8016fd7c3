# cython: language_level=3
"""Single-producer/single-consumer rings of 32-byte event records in shared
memory (private module; :class:`engine.Engine` and its alert thread use it,
and tests and benchmarks drive a ring directly).

A :class:`Ring` is a view over bytes that some shared-memory segment owns:
it never allocates the records, so any process that maps the same segment
can attach to the same ring.  The producer and the consumer each use their
own ``Ring`` object (in the same or in different processes)."""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE, PyBUF_C_CONTIGUOUS
from libc.stdint cimport int64_t, uint64_t, uint32_t
from libc.string cimport memset
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from atomic cimport (rf_load_acquire_i64, rf_store_release_i64, rf_load_relaxed_i64,
                     rf_load_acquire_u64, rf_store_release_u64, rf_now_ns)
from layout cimport Event, RingHeader, RING_MAGIC, RF_OK, RF_TIMEOUT
from ring cimport ring_data, ring_readable, ring_free, ring_publish, ring_release, copy_in
from wait cimport (Waiter, waiter_init, waiter_reset, waiter_arm, waiter_park,
                   waiter_disarm)

from engine.core.layout import WAIT_STRATEGIES

HEADER_BYTES = sizeof(RingHeader)
# The codes are the kernels' WAIT_* (both come from engine/core/layout.py).
WAIT_KINDS = {name: code for code, name in enumerate(WAIT_STRATEGIES)}
STATUS_OK = RF_OK
STATUS_TIMEOUT = RF_TIMEOUT


def init_header(buffer, Py_ssize_t offset, uint64_t capacity, uint64_t data,
                uint64_t producer_bell, uint64_t consumer_bell):
    """Write a fresh ring header at ``offset`` of ``buffer``.

    The record array starts at byte ``data`` and the two doorbells at the
    given byte offsets, all relative to the start of ``buffer``."""
    cdef Py_buffer view
    if capacity == 0 or capacity & (capacity - 1):
        raise ValueError(f"ring capacity must be a power of two, got {capacity}")
    PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
    try:
        if (offset + sizeof(RingHeader) > <size_t>view.len
                or data + capacity * sizeof(Event) > <size_t>view.len
                or producer_bell + 8 > <size_t>view.len
                or consumer_bell + 8 > <size_t>view.len):
            raise ValueError("ring layout does not fit in the buffer")
        h = <RingHeader *>((<char *>view.buf) + offset)
        memset(h, 0, sizeof(RingHeader))
        h.capacity = capacity
        h.mask = capacity - 1
        h.record_size = sizeof(Event)
        h.producer_bell = producer_bell
        h.consumer_bell = consumer_bell
        h.data = data
        rf_store_release_i64(&h.published, 0)
        rf_store_release_i64(&h.consumed, 0)
        rf_store_release_u64(&h.magic, RING_MAGIC)
    finally:
        PyBuffer_Release(&view)


cdef class Ring:
    """One end (or both) of an SPSC ring living in ``buffer`` at ``offset``.

    Parameters
    ----------
    buffer : writable buffer
        The shared-memory mapping that holds the ring.
    offset : int
        Byte offset of the ring header, written by :func:`init_header`.
    wait : {"block", "sleep", "yield", "spin"}
        What this end does while it waits.
    """
    cdef Py_buffer view
    cdef bint has_view
    cdef char *base
    cdef RingHeader *h
    cdef Event *data
    cdef Waiter waiter
    cdef int64_t cursor_cache
    cdef readonly object wait

    def __cinit__(self, buffer, Py_ssize_t offset, wait="block"):
        self.has_view = False
        if wait not in WAIT_KINDS:
            raise ValueError(f"unknown wait strategy {wait!r}; "
                             f"choose one of {sorted(WAIT_KINDS)}")
        PyObject_GetBuffer(buffer, &self.view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
        self.has_view = True
        if offset < 0 or offset + sizeof(RingHeader) > <size_t>self.view.len:
            raise ValueError("ring header lies outside the buffer")
        self.base = <char *>self.view.buf
        self.h = <RingHeader *>(self.base + offset)
        if rf_load_acquire_u64(&self.h.magic) != RING_MAGIC:
            raise ValueError("no ring header at this offset (bad magic)")
        self.data = ring_data(self.base, self.h)
        self.wait = wait
        waiter_init(&self.waiter, WAIT_KINDS[wait])

    def __dealloc__(self):
        self.release_buffer()

    def release_buffer(self):
        """Drop this object's hold on the mapping, so that it can be closed."""
        if self.has_view:
            PyBuffer_Release(&self.view)
            self.has_view = False
            self.h = NULL

    cdef inline void check(self) except *:
        if self.h == NULL:
            raise ValueError("ring is closed")

    @property
    def capacity(self):
        self.check()
        return self.h.capacity

    @property
    def published(self):
        """The producer cursor: every sequence below it has been published."""
        self.check()
        return rf_load_acquire_i64(&self.h.published)

    @property
    def consumed(self):
        """The consumer cursor: every sequence below it has been released."""
        self.check()
        return rf_load_acquire_i64(&self.h.consumed)

    # --- producer side -------------------------------------------------

    def publish(self, events, double timeout=-1.0):
        """Copy ``events`` (C-contiguous EVENT_DTYPE records) into the ring.

        Waits with this end's strategy while the ring is full.  Returns the
        number of records published, which is less than ``len(events)`` only
        when ``timeout`` seconds (negative: forever) ran out."""
        self.check()
        cdef Py_buffer src
        PyObject_GetBuffer(events, &src, PyBUF_C_CONTIGUOUS)
        cdef int64_t n = src.len // sizeof(Event)
        cdef const Event *ev = <const Event *>src.buf
        cdef int64_t done = 0, room, k, pub
        cdef int64_t deadline = rf_now_ns() + <int64_t>(timeout * 1e9) if timeout >= 0 else -1
        cdef int64_t seen
        cdef uint32_t *bell = <uint32_t *>(self.base + self.h.producer_bell)
        try:
            with nogil:
                pub = rf_load_relaxed_i64(&self.h.published)
                while done < n:
                    room = ring_free(self.h, pub)
                    if room > 0:
                        k = n - done
                        if k > room:
                            k = room
                        copy_in(self.data, self.h.mask, pub, ev + done, k)
                        pub += k
                        done += k
                        ring_publish(self.base, self.h, pub)
                        waiter_reset(&self.waiter)
                        continue
                    if deadline >= 0 and rf_now_ns() >= deadline:
                        break
                    seen = waiter_arm(&self.waiter, bell)
                    if seen >= 0:
                        if ring_free(self.h, pub) > 0:
                            waiter_disarm(bell)
                        else:
                            waiter_park(bell, <uint32_t>seen, 50000000)
        finally:
            PyBuffer_Release(&src)
        return done

    # --- consumer side -------------------------------------------------

    def wait_readable(self, double timeout=-1.0):
        """Wait until at least one record is readable; return how many are
        (0 when ``timeout`` seconds ran out)."""
        self.check()
        cdef int64_t cons = rf_load_relaxed_i64(&self.h.consumed)
        cdef int64_t avail = 0, seen
        cdef int64_t deadline = rf_now_ns() + <int64_t>(timeout * 1e9) if timeout >= 0 else -1
        cdef uint32_t *bell = <uint32_t *>(self.base + self.h.consumer_bell)
        with nogil:
            while True:
                avail = ring_readable(self.h, cons)
                if avail > 0:
                    break
                if deadline >= 0 and rf_now_ns() >= deadline:
                    break
                seen = waiter_arm(&self.waiter, bell)
                if seen >= 0:
                    if ring_readable(self.h, cons) > 0:
                        waiter_disarm(bell)
                    else:
                        waiter_park(bell, <uint32_t>seen, 50000000)
        waiter_reset(&self.waiter)
        return avail

    def readable(self):
        """How many records are published and not yet released."""
        self.check()
        return ring_readable(self.h, rf_load_relaxed_i64(&self.h.consumed))

    def release(self, int64_t n):
        """Hand ``n`` consumed records back to the producer."""
        self.check()
        cdef int64_t cons = rf_load_relaxed_i64(&self.h.consumed)
        if n < 0 or n > ring_readable(self.h, cons):
            raise ValueError(f"cannot release {n} records; "
                             f"{ring_readable(self.h, cons)} are readable")
        ring_release(self.base, self.h, cons + n)

    def consume_checksum(self, double timeout=-1.0):
        """Consumer kernel for tests and benchmarks: wait for records, take
        everything available as one batch, and fold it into a checksum.

        Returns ``(count, first_key, key_sum, value_sum, in_order)`` where
        ``in_order`` says whether the keys were consecutive integers
        following ``first_key``."""
        self.check()
        cdef int64_t avail = self.wait_readable(timeout)
        cdef int64_t cons = rf_load_relaxed_i64(&self.h.consumed)
        cdef uint64_t mask = self.h.mask
        cdef uint64_t first = 0, ksum = 0, prev
        cdef double vsum = 0.0
        cdef bint ordered = True
        cdef int64_t i
        cdef const Event *e
        if avail == 0:
            return 0, 0, 0, 0.0, True
        with nogil:
            first = self.data[cons & mask].key
            prev = first - 1
            for i in range(avail):
                e = &self.data[(cons + i) & mask]
                ksum += e.key
                vsum += e.value
                if e.key != prev + 1:
                    ordered = False
                prev = e.key
            ring_release(self.base, self.h, cons + avail)
        return avail, first, ksum, vsum, ordered


cdef class RingSet:
    """The consumer end of several rings that share one consumer doorbell
    (the engine's view of its workers' alert rings): one thread waits on
    all of them at once and drains them into an array.

    Parameters
    ----------
    buffer : writable buffer
        The mapping that holds the rings.
    offsets : list of int
        Byte offsets of the ring headers.
    wait : {"block", "sleep", "yield", "spin"}
        What :meth:`wait` does while every ring is empty.
    """
    cdef Py_buffer view
    cdef bint has_view
    cdef char *base
    cdef RingHeader **h
    cdef Py_ssize_t count
    cdef Waiter waiter

    def __cinit__(self, buffer, list offsets, wait="block"):
        self.has_view = False
        self.h = NULL
        if wait not in WAIT_KINDS:
            raise ValueError(f"unknown wait strategy {wait!r}")
        PyObject_GetBuffer(buffer, &self.view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
        self.has_view = True
        self.base = <char *>self.view.buf
        self.count = len(offsets)
        self.h = <RingHeader **>PyMem_Malloc(max(1, self.count) * sizeof(RingHeader *))
        if self.h == NULL:
            raise MemoryError()
        for i, off in enumerate(offsets):
            if off < 0 or off + sizeof(RingHeader) > <size_t>self.view.len:
                raise ValueError("ring header lies outside the buffer")
            self.h[i] = <RingHeader *>(self.base + <Py_ssize_t>off)
            if rf_load_acquire_u64(&self.h[i].magic) != RING_MAGIC:
                raise ValueError(f"no ring header at offset {off}")
        waiter_init(&self.waiter, WAIT_KINDS[wait])

    def __dealloc__(self):
        PyMem_Free(self.h)
        self.release_buffer()

    def release_buffer(self):
        """Drop this object's hold on the mapping."""
        if self.has_view:
            PyBuffer_Release(&self.view)
            self.has_view = False
            self.base = NULL

    cdef int64_t readable_total(self) noexcept nogil:
        cdef Py_ssize_t i
        cdef int64_t n = 0
        for i in range(self.count):
            n += ring_readable(self.h[i], rf_load_relaxed_i64(&self.h[i].consumed))
        return n

    def wait(self, double timeout=-1.0):
        """Wait until some ring has records; return how many are readable
        in all (0 when ``timeout`` seconds ran out)."""
        if self.base == NULL:
            raise ValueError("ring set is closed")
        if self.count == 0:
            return 0
        cdef int64_t avail = 0, seen
        cdef int64_t deadline = rf_now_ns() + <int64_t>(timeout * 1e9) if timeout >= 0 else -1
        cdef uint32_t *bell = <uint32_t *>(self.base + self.h[0].consumer_bell)
        with nogil:
            while True:
                avail = self.readable_total()
                if avail > 0:
                    break
                if deadline >= 0 and rf_now_ns() >= deadline:
                    break
                seen = waiter_arm(&self.waiter, bell)
                if seen >= 0:
                    if self.readable_total() > 0:
                        waiter_disarm(bell)
                    else:
                        waiter_park(bell, <uint32_t>seen,
                                    50000000 if deadline < 0 else max(1, deadline - rf_now_ns()))
        waiter_reset(&self.waiter)
        return avail

    def read_into(self, Py_ssize_t index, out):
        """Copy up to ``len(out)`` readable records of ring ``index`` into
        ``out`` (a writable array of 32-byte records), release them, and
        return how many were copied (oldest first)."""
        if self.base == NULL:
            raise ValueError("ring set is closed")
        if not 0 <= index < self.count:
            raise IndexError(f"ring {index} out of range")
        cdef Py_buffer dst
        PyObject_GetBuffer(out, &dst, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
        cdef RingHeader *h = self.h[index]
        cdef int64_t cons, avail, room, i
        cdef Event *data = ring_data(self.base, h)
        cdef Event *o = <Event *>dst.buf
        try:
            if dst.len % sizeof(Event):
                raise ValueError("out must hold 32-byte records")
            room = dst.len // sizeof(Event)
            with nogil:
                cons = rf_load_relaxed_i64(&h.consumed)
                avail = ring_readable(h, cons)
                if avail > room:
                    avail = room
                for i in range(avail):
                    o[i] = data[(cons + i) & <int64_t>h.mask]
                if avail:
                    ring_release(self.base, h, cons + avail)
        finally:
            PyBuffer_Release(&dst)
        return avail
