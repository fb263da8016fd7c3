# cython: language_level=3
"""The read side of an engine's state tables, for any process (private
module): :class:`TableSet` routes a lookup to its shard's table and
seqlock-reads the row, never blocking the worker that writes it.  Built on
ext/query.pxd, the same reads engine._wire answers binary lookups with."""

cimport numpy as cnp
import numpy as np
from libc.stdint cimport int64_t, uint64_t, uint32_t, uint16_t, uint8_t, int32_t
from libc.string cimport memcpy, memset
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from shard cimport shard_of
from layout cimport StateRow, TableHeader, RF_OK
from sketch cimport sketch_quantile
from query cimport table_find, lookup_into, row_read, status_seen
from index cimport table_rows
from atomic cimport rf_load_acquire_u64, rf_load_relaxed_u64, rf_fence_acquire, rf_mix64
from outarrays cimport rows_out
from engine._table cimport Table
from engine.errors import raise_for_status

cnp.import_array()


#: Bits of a row position (``where``) that hold the row within its table;
#: the table's index is above them.
ROW_BITS = 40
cdef uint64_t _ROW_MASK = (<uint64_t>1 << 40) - 1

# Field kinds scan_field converts to float64 (numpy dtype chars).
cdef enum:
    K_F64 = 0
    K_U64 = 1
    K_I64 = 2
    K_U32 = 3
    K_I32 = 4
    K_U16 = 5
    K_U8 = 6

_KINDS = {"f8": K_F64, "u8": K_U64, "i8": K_I64, "u4": K_U32, "i4": K_I32,
          "u2": K_U16, "u1": K_U8}


cdef inline double field_value(const char *p, int kind) noexcept nogil:
    if kind == K_F64:
        return (<const double *>p)[0]
    if kind == K_U64:
        return <double>(<const uint64_t *>p)[0]
    if kind == K_I64:
        return <double>(<const int64_t *>p)[0]
    if kind == K_U32:
        return <double>(<const uint32_t *>p)[0]
    if kind == K_I32:
        return <double>(<const int32_t *>p)[0]
    if kind == K_U16:
        return <double>(<const uint16_t *>p)[0]
    return <double>(<const uint8_t *>p)[0]


def row_quantiles(cnp.ndarray rows, double[::1] qs):
    """Quantiles ``qs`` of the current window of every row of ``rows`` (a
    STATE_DTYPE array), decoded by the rules' own sketch_quantile: an
    ``(len(rows), len(qs))`` float64 array, NaN for an empty window."""
    cdef Py_ssize_t n = rows.shape[0], m = qs.shape[0], i, j
    cdef const StateRow *src = rows_out(rows, 0) if n else NULL
    out = np.empty((n, m), np.float64)
    cdef double[:, ::1] o = out
    for j in range(m):
        if not 0.0 <= qs[j] <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {qs[j]}")
    with nogil:
        for i in range(n):
            for j in range(m):
                o[i, j] = sketch_quantile(&src[i], qs[j])
    return out


def distinct_count(const uint64_t[::1] keys):
    """How many distinct values ``keys`` holds, by one pass over an
    open-addressing set (no sort): the number of entities of a status
    query, which ranks and reads only the few it returns."""
    cdef Py_ssize_t n = keys.shape[0], i
    cdef uint64_t cap = 16, mask, h, k, distinct = 0
    cdef bint zero = False
    while cap < <uint64_t>(2 * n):
        cap <<= 1
    mask = cap - 1
    cdef uint64_t *slots = <uint64_t *>PyMem_Malloc(cap * sizeof(uint64_t))
    if slots == NULL:
        raise MemoryError()
    try:
        with nogil:
            memset(slots, 0, cap * sizeof(uint64_t))
            for i in range(n):
                k = keys[i]
                if k == 0:
                    # 0 marks an empty slot: counted on the side.
                    zero = True
                    continue
                h = rf_mix64(k) & mask
                while slots[h] != 0 and slots[h] != k:
                    h = (h + 1) & mask
                if slots[h] == 0:
                    slots[h] = k
                    distinct += 1
    finally:
        PyMem_Free(slots)
    return distinct + zero


def sketch_quantile_row(row, double q):
    """Quantile ``q`` of the current window of one STATE_DTYPE row, as the
    rules compute it (NaN for an empty window).  The row is a table's:
    ``sk_lo`` and ``sk_hi`` mark its lowest and highest non-zero counters
    (docs/health.md), and only those are read."""
    cdef StateRow r
    cdef const unsigned char[::1] raw = memoryview(row).cast("B")
    if raw.shape[0] != sizeof(StateRow):
        raise ValueError("row must be one STATE_DTYPE record")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    memcpy(&r, &raw[0], sizeof(StateRow))
    return sketch_quantile(&r, q)


cdef class TableSet:
    """Read access to the tables of every worker of one engine, routed by
    shard: ``worker = mix64(key) % len(tables)``.

    Parameters
    ----------
    tables : list of engine._table.Table
        One table per worker, in worker order; they must outlive this set
        (a released table makes every read through the set raise).
    """
    cdef list tables
    cdef TableHeader **headers
    cdef Py_ssize_t count

    def __cinit__(self, list tables):
        self.tables = list(tables)
        self.count = len(tables)
        if self.count == 0:
            raise ValueError("a TableSet needs at least one table")
        self.headers = <TableHeader **>PyMem_Malloc(self.count * sizeof(TableHeader *))
        for i, t in enumerate(self.tables):
            self.headers[i] = (<Table?>t).header()

    def __dealloc__(self):
        PyMem_Free(self.headers)

    def find_into(self, uint64_t key, uint32_t metric, cnp.ndarray out):
        """Seqlock-read (key, metric) from its shard's table into ``out[0]``;
        return whether the series exists.

        Raises
        ------
        engine.errors.SeriesUnavailable
            The row stayed mid-write for about a millisecond (its worker
            died or stalled inside the write); ``out[0]`` is then undefined.
        """
        cdef StateRow *dst = rows_out(out, 1)
        cdef bint found
        cdef int status
        cdef uint64_t w = shard_of(key, <uint64_t>self.count)
        cdef TableHeader *th = self.headers[w]
        (<Table>self.tables[w]).check()
        with nogil:
            status = table_find(th, key, metric, dst, &found)
        if status != RF_OK:
            raise_for_status(status, "find_into", key=key, metric=metric, worker=w)
        return found

    def header_addresses(self):
        """Addresses of the table headers in shard order, for compiled
        readers in other modules; the tables must outlive their use."""
        return [<size_t>self.headers[i] for i in range(self.count)]

    def table_of(self, uint64_t key):
        """The table that owns ``key``'s shard."""
        return self.tables[shard_of(key, <uint64_t>self.count)]

    def get_many_into(self, cnp.ndarray keys, cnp.ndarray metrics, cnp.ndarray out):
        """Seqlock-read each (keys[i], metrics[i]) into out[i]; rows of
        unknown series are zero but for key and metric.  Returns how many
        were found.

        Raises
        ------
        engine.errors.SeriesUnavailable
            A row stayed mid-write for about a millisecond; it names the
            first such series, and ``out`` is then undefined.  The answer is
            positional, so there is no honest value to put in that series'
            place: a zero row would say "never seen", and the torn copy is
            not a state the series ever had.
        """
        cdef const uint64_t[::1] k = keys
        cdef const uint32_t[::1] m = metrics
        cdef Py_ssize_t i, n = k.shape[0]
        cdef int64_t found = 0
        cdef uint64_t w = <uint64_t>self.count
        cdef bint hit
        cdef int status = RF_OK
        if m.shape[0] != n:
            raise ValueError(f"{n} keys but {m.shape[0]} metrics")
        cdef StateRow *dst = rows_out(out, n)
        for t in self.tables:
            (<Table>t).check()
        with nogil:
            for i in range(n):
                status = lookup_into(self.headers, w, k[i], m[i], &dst[i], &hit)
                if status != RF_OK:
                    break
                found += hit
        if status != RF_OK:
            raise_for_status(status, "get_many_into", key=k[i], metric=m[i],
                             worker=shard_of(k[i], w))
        return found

    # --- fleet-wide scans for the query ops (engine.query.reader) ---------
    #
    # A scan never builds a Python object per row: it fills the caller's
    # arrays (reused between queries) with the few fields the ops select,
    # sort and cut on, with the GIL released; the ops then read in full
    # only the rows they return (read_rows).  A row position ("where") is
    # table << ROW_BITS | row.

    def scan_status(self, int min_status, uint64_t[::1] keys, uint8_t[::1] statuses,
                    int64_t[::1] since, uint64_t[::1] where, int64_t[::1] counts):
        """Count every series by status into ``counts`` (indexed by status
        code, at least 256 long), and seqlock-read the key, status and
        status_since of every row at ``min_status`` or worse into ``keys``,
        ``statuses``, ``since`` and ``where``.

        Returns the number of rows selected, or ``-needed`` when the arrays
        are too small (then ``counts`` is undefined).  Statuses are as
        readers see them (at least STALE while a shard is down).  A row that
        stays mid-write is left out of the selection (still counted by the
        status it showed) and counted in its table's ``unavailable``.
        """
        cdef Py_ssize_t room = min(min(keys.shape[0], statuses.shape[0]),
                                   min(since.shape[0], where.shape[0]))
        if counts.shape[0] < 256:
            raise ValueError("counts must have room for 256 status codes")
        cdef Py_ssize_t n = 0
        cdef uint64_t w, i, used, v1
        cdef uint8_t s
        cdef uint64_t k
        cdef int64_t t
        cdef bint fast
        cdef TableHeader *th
        cdef StateRow *rows
        cdef StateRow tmp
        skipped = np.zeros(self.count, np.uint64)
        cdef uint64_t[::1] skip = skipped
        for tb in self.tables:
            (<Table>tb).check()
        with nogil:
            memset(&counts[0], 0, 256 * sizeof(int64_t))
            for w in range(<uint64_t>self.count):
                th = self.headers[w]
                rows = table_rows(th)
                used = rf_load_acquire_u64(&th.used)
                for i in range(used):
                    s = status_seen(th, rows[i].status)
                    counts[s] += 1
                    if s < min_status:
                        continue
                    if n >= room:
                        n += 1
                        continue
                    # The three fields under the row's seqlock; the full
                    # copy (with its wait for a writer) only if that fails.
                    fast = False
                    v1 = rf_load_acquire_u64(&rows[i].version)
                    if not (v1 & 1):
                        k = rows[i].key
                        s = rows[i].status
                        t = rows[i].status_since
                        rf_fence_acquire()
                        fast = rf_load_relaxed_u64(&rows[i].version) == v1
                    if fast:
                        s = status_seen(th, s)
                    elif row_read(th, &rows[i], &tmp) == RF_OK:
                        k, s, t = tmp.key, tmp.status, tmp.status_since
                    else:
                        skip[w] += 1
                        continue
                    # The status may have changed between the count and the read.
                    if s >= min_status:
                        keys[n] = k
                        statuses[n] = s
                        since[n] = t
                        where[n] = (w << 40) | i
                        n += 1
        if n > room:
            return -n
        for w in range(<uint64_t>self.count):
            (<Table>self.tables[w]).unavailable += skip[w]
        return n

    def scan_field(self, Py_ssize_t offset, str kind, double[::1] values,
                   uint64_t[::1] where):
        """Seqlock-read one numeric field (at byte ``offset`` of a row, of
        numpy kind ``kind``: f8, u8, i8, u4, i4, u2, u1) of every row, as
        float64, into ``values`` and the row's position into ``where``.

        Returns the number of rows read, or ``-needed`` when the arrays are
        too small.  A row that stays mid-write is left out and counted in
        its table's ``unavailable``.
        """
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}")
        cdef int code = _KINDS[kind]
        if offset < 0 or <size_t>(offset + int(kind[1])) > sizeof(StateRow):
            raise ValueError("offset is outside a row")
        cdef Py_ssize_t room = min(values.shape[0], where.shape[0])
        cdef Py_ssize_t n = 0, total = 0
        cdef uint64_t w, i, used, v1
        cdef double x = 0.0
        cdef bint fast
        cdef TableHeader *th
        cdef StateRow *rows
        cdef StateRow tmp
        skipped = np.zeros(self.count, np.uint64)
        cdef uint64_t[::1] skip = skipped
        for tb in self.tables:
            (<Table>tb).check()
        with nogil:
            for w in range(<uint64_t>self.count):
                total += <Py_ssize_t>rf_load_acquire_u64(&self.headers[w].used)
        if total > room:
            return -total
        with nogil:
            for w in range(<uint64_t>self.count):
                th = self.headers[w]
                rows = table_rows(th)
                used = rf_load_acquire_u64(&th.used)
                for i in range(used):
                    if n >= room:
                        break
                    fast = False
                    v1 = rf_load_acquire_u64(&rows[i].version)
                    if not (v1 & 1):
                        x = field_value((<const char *>&rows[i]) + offset, code)
                        rf_fence_acquire()
                        fast = rf_load_relaxed_u64(&rows[i].version) == v1
                    if not fast:
                        if row_read(th, &rows[i], &tmp) != RF_OK:
                            skip[w] += 1
                            continue
                        x = field_value((<const char *>&tmp) + offset, code)
                    values[n] = x
                    where[n] = (w << 40) | i
                    n += 1
        for w in range(<uint64_t>self.count):
            (<Table>self.tables[w]).unavailable += skip[w]
        return n

    def read_rows(self, uint64_t[::1] where, cnp.ndarray out):
        """Seqlock-read the rows at positions ``where`` (as the scans give
        them) into ``out``.  Returns a bool array: False where the row
        stayed mid-write (``out`` there is undefined; counted in its
        table's ``unavailable``)."""
        cdef Py_ssize_t n = where.shape[0], j
        cdef StateRow *dst = rows_out(out, n)
        ok = np.ones(n, np.bool_)
        cdef uint8_t[::1] good = ok.view(np.uint8)
        cdef uint64_t w, i
        cdef TableHeader *th
        for j in range(n):
            w = where[j] >> 40
            i = where[j] & _ROW_MASK
            if w >= <uint64_t>self.count or i >= rf_load_acquire_u64(&self.headers[w].used):
                raise ValueError(f"no row at position {where[j]}")
        for tb in self.tables:
            (<Table>tb).check()
        with nogil:
            for j in range(n):
                w = where[j] >> 40
                i = where[j] & _ROW_MASK
                th = self.headers[w]
                if row_read(th, &table_rows(th)[i], &dst[j]) != RF_OK:
                    good[j] = 0
        for j in range(n):
            if not good[j]:
                (<Table>self.tables[where[j] >> 40]).unavailable += 1
        return ok
