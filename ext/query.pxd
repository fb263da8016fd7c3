# cython: language_level=3
# The read side of a state table, for any process: a seqlock copy of one
# row, and the lookup of a series.  Readers never block the writer and
# never write shared memory.

from libc.stdint cimport int64_t, uint64_t, uint32_t
from libc.string cimport memcpy
from atomic cimport (rf_load_acquire_u64, rf_load_relaxed_u64, rf_fence_acquire,
                     rf_cpu_relax, rf_yield)
from layout cimport TableHeader, StateRow
from index cimport table_index, table_rows, series_hash, index_find

cdef inline bint row_read(const StateRow *r, StateRow *out) noexcept nogil:
    """Seqlock read of one row into out; retries until a stable, even
    version is seen before and after the copy.  Never blocks the writer."""
    cdef uint64_t v1, v2
    cdef long tries = 0
    while True:
        v1 = rf_load_acquire_u64(&r.version)
        if not (v1 & 1):
            memcpy(out, <const void *>r, sizeof(StateRow))
            rf_fence_acquire()
            v2 = rf_load_relaxed_u64(&r.version)
            if v1 == v2:
                return True
        tries += 1
        if tries & 1023:
            rf_cpu_relax()
        else:
            rf_yield()

cdef inline bint table_find(TableHeader *th, uint64_t key, uint32_t metric,
                            StateRow *out) noexcept nogil:
    cdef int64_t row = index_find(th, table_index(th),
                                  series_hash(key, metric) & th.mask, key, metric)
    if row < 0:
        return False
    row_read(&table_rows(th)[row], out)
    return True
