# cython: language_level=3
"""The read side of an engine's state tables, for any process (private
module): :class:`TableSet` routes a lookup to its shard's table and
seqlock-reads the row, never blocking the worker that writes it.  Built on
ext/query.pxd, the same reads engine._wire answers binary lookups with."""

cimport numpy as cnp
from libc.stdint cimport int64_t, uint64_t, uint32_t
from libc.string cimport memcpy
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from shard cimport shard_of
from layout cimport StateRow, TableHeader, RF_OK
from sketch cimport sketch_quantile
from query cimport table_find, lookup_into
from outarrays cimport rows_out
from engine._table cimport Table
from engine.errors import raise_for_status

cnp.import_array()


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
