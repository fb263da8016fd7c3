# cython: language_level=3
# The declaration of engine._table's Table, so that engine._query can hold
# tables and read their headers without a Python call per lookup.  It lives
# under engine/ because Cython finds a cimported extension type by its
# module's full name (engine._table).

from libc.stdint cimport uint64_t
from layout cimport TableHeader

cdef class Table:
    cdef Py_buffer view
    cdef bint has_view
    cdef TableHeader *th
    # Rows this object's bulk reads skipped because they stayed mid-write.
    cdef readonly uint64_t unavailable

    cdef inline void check(self) except *:
        if self.th == NULL:
            raise ValueError("table is closed")

    cdef TableHeader *header(self) noexcept
