# cython: language_level=3
"""The gateway's receive loop for binary frames, in C (private module).

pyzmq costs about a microsecond of Python per received message, which caps
one-event messages far below what the rings take.  This module calls libzmq
directly, through the function addresses of the libzmq that pyzmq itself
loaded (so no second copy of libzmq and no build-time dependency on its
headers): frames are received, checked and their records copied into a
staging batch without the GIL and without a Python object per message.

Frames that C should not handle (JSON lines, or a batch that is full) are
handed back to Python as a :class:`Frame`, a zero-copy buffer over the
received message.
"""

cimport numpy as cnp
from cpython.buffer cimport PyBUF_WRITABLE
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy, memset
from libc.stdio cimport snprintf
from atomic cimport rf_now_ns
from layout cimport (TableHeader, StateRow, Event, FrameHeader, LookupRecord, RF_OK,
                     FRAME_MAGIC_0, FRAME_MAGIC_1, FRAME_VERSION, FRAME_EVENTS, FRAME_JSON,
                     FRAME_LOOKUP, FRAME_ROWS, REASON_SHORT_FRAME, REASON_BAD_MAGIC,
                     REASON_BAD_VERSION, REASON_BAD_TYPE, REASON_BAD_LENGTH, REASON_TOO_LARGE)
from query cimport lookup_into
from shard cimport shard_of

from engine.core import layout as _layout

cnp.import_array()

cdef extern from *:
    """
    typedef struct { unsigned char _[64]; } __attribute__((aligned(8))) rf_zmq_msg_t;
    """
    ctypedef struct rf_zmq_msg_t:
        pass

ctypedef int (*msg_init_t)(rf_zmq_msg_t *) noexcept nogil
ctypedef int (*msg_recv_t)(rf_zmq_msg_t *, void *, int) noexcept nogil
ctypedef void *(*msg_data_t)(rf_zmq_msg_t *) noexcept nogil
ctypedef size_t (*msg_size_t)(const rf_zmq_msg_t *) noexcept nogil
ctypedef int (*msg_close_t)(rf_zmq_msg_t *) noexcept nogil
ctypedef int (*send_t)(void *, const void *, size_t, int) noexcept nogil
ctypedef int (*errno_t)() noexcept nogil
ctypedef int (*msg_more_t)(const rf_zmq_msg_t *) noexcept nogil
ctypedef int (*msg_send_t)(rf_zmq_msg_t *, void *, int) noexcept nogil
ctypedef const char *(*msg_gets_t)(const rf_zmq_msg_t *, const char *) noexcept nogil

cdef enum:
    ZMQ_DONTWAIT = 1
    # Frame sizes, from the layout's structs (engine/core/layout.py).
    RECORD = sizeof(Event)
    HEADER = sizeof(FrameHeader)
    LOOKUP = sizeof(LookupRecord)
    # The reasons C detects are the layout's first ones, up to too_large.
    C_REASONS = REASON_TOO_LARGE + 1

# Outcomes of one drain() call.
cdef enum:
    D_DRAINED = 0      # the socket has nothing more now
    D_BATCH_FULL = 1   # the staging batch is full; the frame that did not fit is pending
    D_PENDING = 2      # a frame for Python is pending (JSON lines, or large)
    D_LIMIT = 3        # max_frames frames were read
    D_ERROR = 4        # libzmq failed; errno in .last_errno

DRAINED = D_DRAINED
PENDING = D_PENDING
LIMIT = D_LIMIT
ERROR = D_ERROR

# The names of the reasons C detects, from the one table of reasons.
REASON_NAMES = _layout.REASONS[:C_REASONS]

cdef msg_init_t z_msg_init
cdef msg_recv_t z_msg_recv
cdef msg_data_t z_msg_data
cdef msg_size_t z_msg_size
cdef msg_close_t z_msg_close
cdef send_t z_send
cdef errno_t z_errno
cdef msg_more_t z_msg_more
cdef msg_send_t z_msg_send
cdef msg_gets_t z_msg_gets
cdef bint bound = False


def bind_libzmq():
    """Resolve the libzmq entry points from the library pyzmq loaded."""
    global z_msg_init, z_msg_recv, z_msg_data, z_msg_size, z_msg_close, z_send, z_errno, bound
    global z_msg_more, z_msg_send, z_msg_gets
    if bound:
        return
    import ctypes

    import zmq.backend.cython._zmq as backend
    lib = ctypes.CDLL(backend.__file__)

    def address(name):
        return <size_t>ctypes.cast(getattr(lib, name), ctypes.c_void_p).value

    cdef size_t a
    a = address("zmq_msg_init")
    z_msg_init = <msg_init_t>a
    a = address("zmq_msg_recv")
    z_msg_recv = <msg_recv_t>a
    a = address("zmq_msg_data")
    z_msg_data = <msg_data_t>a
    a = address("zmq_msg_size")
    z_msg_size = <msg_size_t>a
    a = address("zmq_msg_close")
    z_msg_close = <msg_close_t>a
    a = address("zmq_send")
    z_send = <send_t>a
    a = address("zmq_errno")
    z_errno = <errno_t>a
    a = address("zmq_msg_more")
    z_msg_more = <msg_more_t>a
    a = address("zmq_msg_send")
    z_msg_send = <msg_send_t>a
    a = address("zmq_msg_gets")
    z_msg_gets = <msg_gets_t>a
    bound = True


cdef class Frame:
    """A received message handed to Python: a read-only buffer over libzmq's
    own memory, released when this object goes."""
    cdef rf_zmq_msg_t msg
    cdef bint live
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]

    def __dealloc__(self):
        if self.live:
            z_msg_close(&self.msg)

    def __len__(self):
        return z_msg_size(&self.msg) if self.live else 0

    def __getbuffer__(self, Py_buffer *view, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("a received frame is read-only")
        self.shape[0] = z_msg_size(&self.msg)
        self.strides[0] = 1
        view.buf = z_msg_data(&self.msg)
        view.obj = self
        view.len = self.shape[0]
        view.readonly = 1
        view.itemsize = 1
        view.format = NULL
        view.ndim = 1
        view.shape = self.shape
        view.strides = self.strides
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer *view):
        pass


cdef class Drain:
    """Receives binary ingest frames from one socket into a staging batch.

    Parameters
    ----------
    staging : numpy.ndarray
        C-contiguous EVENT_DTYPE array the records are copied into.
    max_message_bytes : int
        Frames larger than this are rejected as ``too_large``.
    direct_records : int
        Frames with at least this many records are handed to Python whole
        (zero-copy) instead of being copied into the batch.
    """
    cdef cnp.ndarray staging
    cdef char *batch
    cdef int64_t room
    cdef readonly int64_t fill
    cdef size_t max_bytes
    cdef int64_t direct
    cdef uint64_t rejected[C_REASONS]
    cdef readonly uint64_t frames
    cdef readonly int last_errno
    cdef Frame pending

    def __cinit__(self, cnp.ndarray staging, size_t max_message_bytes, int64_t direct_records):
        bind_libzmq()
        if not cnp.PyArray_IS_C_CONTIGUOUS(staging) or staging.itemsize != RECORD:
            raise ValueError("staging must be a C-contiguous EVENT_DTYPE array")
        self.staging = staging
        self.batch = <char *>cnp.PyArray_DATA(staging)
        self.room = staging.shape[0]
        self.fill = 0
        self.max_bytes = max_message_bytes
        self.direct = direct_records if direct_records > 0 else 1
        memset(self.rejected, 0, sizeof(self.rejected))
        self.frames = 0
        self.pending = None

    @property
    def rejected(self):
        """Frames rejected in C, by reason."""
        return {REASON_NAMES[i]: self.rejected[i] for i in range(C_REASONS)}

    def take_batch(self):
        """The staged records (a view of the staging array); empties it."""
        n = self.fill
        self.fill = 0
        return self.staging[:n]

    def take_pending(self):
        """The frame left for Python, or None."""
        f = self.pending
        self.pending = None
        return f

    cdef int classify(self, const uint8_t *p, size_t size, int64_t *count) noexcept nogil:
        # -1: binary events (count set); -2: hand to Python; >=0: reason.
        cdef uint32_t n
        if size > self.max_bytes:
            return REASON_TOO_LARGE
        if size < HEADER:
            return REASON_SHORT_FRAME
        if p[0] != FRAME_MAGIC_0 or p[1] != FRAME_MAGIC_1:
            return REASON_BAD_MAGIC
        if p[2] != FRAME_VERSION:
            return REASON_BAD_VERSION
        if p[3] == FRAME_JSON:
            return -2
        if p[3] != FRAME_EVENTS:
            return REASON_BAD_TYPE
        memcpy(&n, p + 4, 4)
        if <uint64_t>size - HEADER != <uint64_t>n * RECORD:
            return REASON_BAD_LENGTH
        count[0] = n
        return -1

    def drain(self, size_t socket, int max_frames):
        """Receive without blocking until the socket is empty, the batch is
        full, a frame needs Python, or ``max_frames`` were read.  Returns one
        of DRAINED, BATCH_FULL, PENDING, LIMIT, ERROR."""
        if self.pending is not None:
            return D_PENDING
        cdef Frame holder = Frame.__new__(Frame)
        cdef rf_zmq_msg_t *msg = &holder.msg
        cdef void *sock = <void *>socket
        cdef int rc, kind, status = D_LIMIT, _i
        cdef int64_t count
        cdef const uint8_t *p
        cdef size_t size
        with nogil:
            for _i in range(max_frames):
                z_msg_init(msg)
                rc = z_msg_recv(msg, sock, ZMQ_DONTWAIT)
                if rc < 0:
                    z_msg_close(msg)
                    self.last_errno = z_errno()
                    status = D_DRAINED if self.last_errno == 11 else D_ERROR
                    break
                self.frames += 1
                p = <const uint8_t *>z_msg_data(msg)
                size = z_msg_size(msg)
                kind = self.classify(p, size, &count)
                if kind >= 0:
                    self.rejected[kind] += 1
                    z_msg_close(msg)
                    continue
                if kind == -2 or count >= self.direct:
                    status = D_PENDING
                    break
                if count > self.room - self.fill:
                    status = D_BATCH_FULL
                    break
                memcpy(self.batch + self.fill * RECORD, p + HEADER, count * RECORD)
                self.fill += count
                z_msg_close(msg)
        if status == D_PENDING or status == D_BATCH_FULL:
            holder.live = True
            self.pending = holder
            if status == D_BATCH_FULL:
                status = D_PENDING
        return status


def send_copies(size_t socket, bytes frame, int64_t count):
    """Send ``frame`` ``count`` times on a socket (blocking sends), from C:
    a load generator that measures the gateway, not the sender's Python."""
    bind_libzmq()
    cdef const char *data = frame
    cdef size_t size = len(frame)
    cdef void *sock = <void *>socket
    cdef int64_t _i, sent = 0
    with nogil:
        for _i in range(count):
            if z_send(sock, data, size, 0) < 0:
                break
            sent += 1
    return sent


cdef enum:
    MAX_PARTS = 8         # routing envelope frames kept per request
    ZMQ_SNDMORE = 2


cdef class LookupServer:
    """Answers binary lookups (type 3) on a ROUTER socket in C.

    Every request waiting on the socket is received, and a lookup is
    answered right there: seqlock reads from the shared tables into a reply
    buffer, sent back behind the request's routing envelope, with the GIL
    released throughout.  Any other request (JSON) is left pending for
    Python with its envelope, as a list of frames.

    A lookup that meets a row stuck mid-write (its worker died or stalled
    inside the write) is answered, within about a millisecond, with the
    JSON error reply ``{"ok": false, "reason": "unavailable", "error":
    ...}`` naming the first such series (PROTOCOL.md, Binary lookup).

    Parameters
    ----------
    table_addresses : list of int
        Addresses of the engine's table headers in shard order
        (``TableSet.header_addresses()``); the tables must outlive this object.
    max_message_bytes : int
        Larger requests are answered with an error by Python.

    Attributes
    ----------
    answered : int
        Lookups answered here, with rows or with an error.
    failed : int
        Of those, the ones answered ``unavailable``.
    """
    cdef TableHeader **headers
    cdef uint64_t count
    cdef size_t max_bytes
    cdef rf_zmq_msg_t parts[MAX_PARTS]
    cdef int nparts
    cdef char *reply
    cdef size_t reply_room
    cdef readonly uint64_t answered
    cdef readonly uint64_t failed
    cdef readonly int last_errno

    def __cinit__(self, list table_addresses, size_t max_message_bytes):
        bind_libzmq()
        self.count = len(table_addresses)
        if self.count == 0:
            raise ValueError("a lookup server needs at least one table")
        self.headers = <TableHeader **>PyMem_Malloc(self.count * sizeof(void *))
        for i, a in enumerate(table_addresses):
            self.headers[i] = <TableHeader *><size_t>a
        self.max_bytes = max_message_bytes
        self.nparts = 0
        self.reply_room = HEADER + 64 * sizeof(StateRow)
        self.reply = <char *>PyMem_Malloc(self.reply_room)
        self.answered = 0

    def __dealloc__(self):
        self.drop_parts()
        PyMem_Free(self.headers)
        PyMem_Free(self.reply)

    cdef void drop_parts(self) noexcept nogil:
        cdef int i
        for i in range(self.nparts):
            z_msg_close(&self.parts[i])
        self.nparts = 0

    cdef int recv_request(self, void *sock) noexcept nogil:
        # 1: a whole request in parts[0:nparts]; 0: nothing waiting; -1: error.
        cdef int rc, more = 1
        cdef rf_zmq_msg_t spill
        while more:
            if self.nparts < MAX_PARTS:
                z_msg_init(&self.parts[self.nparts])
                rc = z_msg_recv(&self.parts[self.nparts], sock,
                                ZMQ_DONTWAIT if self.nparts == 0 else 0)
                if rc < 0:
                    z_msg_close(&self.parts[self.nparts])
                    self.last_errno = z_errno()
                    self.drop_parts()
                    return 0 if self.last_errno == 11 else -1
                more = z_msg_more(&self.parts[self.nparts])
                self.nparts += 1
            else:
                # An envelope deeper than any client of ours sends: read the
                # rest and drop the request.
                z_msg_init(&spill)
                rc = z_msg_recv(&spill, sock, 0)
                more = rc >= 0 and z_msg_more(&spill)
                z_msg_close(&spill)
                if not more:
                    self.drop_parts()
                    return 2
        return 1

    cdef bint is_lookup(self, int64_t *count) noexcept nogil:
        cdef rf_zmq_msg_t *req = &self.parts[self.nparts - 1]
        cdef const uint8_t *p = <const uint8_t *>z_msg_data(req)
        cdef size_t size = z_msg_size(req)
        cdef uint32_t n
        if size < HEADER or size > self.max_bytes:
            return False
        if (p[0] != FRAME_MAGIC_0 or p[1] != FRAME_MAGIC_1 or p[2] != FRAME_VERSION
                or p[3] != FRAME_LOOKUP):
            return False
        memcpy(&n, p + 4, 4)
        if <uint64_t>size - HEADER != <uint64_t>n * LOOKUP:
            return False
        count[0] = n
        return True

    cdef int answer_lookup(self, void *sock, int64_t n) noexcept nogil:
        cdef size_t need = HEADER + n * sizeof(StateRow)
        cdef char *grown
        cdef const uint8_t *p = <const uint8_t *>z_msg_data(&self.parts[self.nparts - 1])
        cdef uint64_t key
        cdef uint32_t metric
        cdef StateRow *row
        cdef int64_t i
        cdef int k, wrote
        cdef uint64_t w
        cdef bint hit
        if need > self.reply_room:
            with gil:
                grown = <char *>PyMem_Malloc(need)
                if grown == NULL:
                    return -1
                PyMem_Free(self.reply)
                self.reply = grown
                self.reply_room = need
        self.reply[0] = FRAME_MAGIC_0
        self.reply[1] = FRAME_MAGIC_1
        self.reply[2] = FRAME_VERSION
        self.reply[3] = FRAME_ROWS
        memcpy(self.reply + 4, p + 4, 4)
        for i in range(n):
            memcpy(&key, p + HEADER + i * LOOKUP, 8)
            memcpy(&metric, p + HEADER + i * LOOKUP + 8, 4)
            row = <StateRow *>(self.reply + HEADER + i * sizeof(StateRow))
            if lookup_into(self.headers, self.count, key, metric, row, &hit) != RF_OK:
                w = shard_of(key, self.count)
                # The same words as engine.errors.unavailable_message; the
                # reply room always holds them (at least 64 rows).
                wrote = snprintf(self.reply, self.reply_room,
                                 b'{"ok": false, "reason": "unavailable", "error": "series '
                                 b'%llu/%u of worker %llu is unavailable: its row stayed '
                                 b'mid-write (the worker died or stalled)"}',
                                 <unsigned long long>key, <unsigned int>metric,
                                 <unsigned long long>w)
                need = <size_t>wrote
                self.failed += 1
                break
        # The envelope goes back as it came; zmq_msg_send takes each part.
        for k in range(self.nparts - 1):
            if z_msg_send(&self.parts[k], sock, ZMQ_SNDMORE) < 0:
                z_msg_close(&self.parts[k])
        z_msg_close(&self.parts[self.nparts - 1])
        self.nparts = 0
        z_send(sock, self.reply, need, 0)
        self.answered += 1
        return 0

    def serve(self, size_t socket, int max_requests):
        """Answer the lookups waiting on the socket.  Returns DRAINED when it
        is empty, PENDING when a request for Python is waiting (take it with
        :meth:`take_pending`), LIMIT after ``max_requests``, or ERROR."""
        if self.nparts:
            return D_PENDING
        cdef void *sock = <void *>socket
        cdef int status = D_LIMIT, rc, _i
        cdef int64_t n
        with nogil:
            for _i in range(max_requests):
                rc = self.recv_request(sock)
                if rc == 0:
                    status = D_DRAINED
                    break
                if rc < 0:
                    status = D_ERROR
                    break
                if rc == 2:
                    continue
                if self.is_lookup(&n):
                    if self.answer_lookup(sock, n) < 0:
                        status = D_ERROR
                        break
                    continue
                status = D_PENDING
                break
        return status

    def pending_property(self, bytes name):
        """A metadata property of the pending request (``b"User-Id"``: the
        ZAP user id, the peer's CURVE key), as bytes, or None."""
        cdef const char *value
        if not self.nparts:
            return None
        value = z_msg_gets(&self.parts[self.nparts - 1], name)
        if value == NULL:
            return None
        return <bytes>value

    def take_pending(self):
        """The pending request as a list of frames (envelope, then the
        request), or None."""
        if not self.nparts:
            return None
        parts = [(<char *>z_msg_data(&self.parts[i]))[:z_msg_size(&self.parts[i])]
                 for i in range(self.nparts)]
        self.drop_parts()
        return parts


def request_loop(size_t socket, bytes request, int64_t count, int window,
                 cnp.ndarray latencies):
    """Send ``request`` ``count`` times on a DEALER socket, keeping ``window``
    requests in flight, and wait for every reply, from C: a query load
    generator that measures the server, not the client's Python.

    The DEALER's replies come back in order, so reply ``i`` answers request
    ``i``; its round trip in nanoseconds goes to ``latencies[i]`` (an int64
    array of at least ``count``).  Returns the number of replies received
    (fewer than ``count`` only when a receive failed)."""
    bind_libzmq()
    if latencies.dtype.itemsize != 8 or latencies.shape[0] < count \
            or not cnp.PyArray_IS_C_CONTIGUOUS(latencies):
        raise ValueError("latencies must be a contiguous int64 array of at least count")
    if window < 1:
        raise ValueError("window must be positive")
    cdef int64_t *lat = <int64_t *>cnp.PyArray_DATA(latencies)
    cdef const char *data = request
    cdef size_t size = len(request)
    cdef void *sock = <void *>socket
    cdef int64_t sent = 0, got = 0
    cdef rf_zmq_msg_t msg
    with nogil:
        while got < count:
            while sent < count and sent - got < window:
                lat[sent] = rf_now_ns()
                if z_send(sock, data, size, 0) < 0:
                    break
                sent += 1
            z_msg_init(&msg)
            if z_msg_recv(&msg, sock, 0) < 0:
                z_msg_close(&msg)
                break
            z_msg_close(&msg)
            lat[got] = rf_now_ns() - lat[got]
            got += 1
    return got
