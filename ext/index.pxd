# cython: language_level=3
# A state table's open-addressing index, and where its parts lie.
#
# Layout: header | index (slots x 16 bytes) | rows (limit x StateRow).
# The index is compact (four entries a cache line) so that probing stays in
# cache, and rows are dense, in the order series first appeared.  An index
# entry is written once and never changes: its row number is published with
# a store-release after the row is initialised, so a reader that sees it
# also sees the row.

from libc.stdint cimport int64_t, uint64_t, uint32_t
from atomic cimport rf_mix64, rf_load_acquire_u32
from layout cimport TableHeader, IndexEntry, StateRow

cdef inline IndexEntry *table_index(TableHeader *th) noexcept nogil:
    return <IndexEntry *>((<char *>th) + sizeof(TableHeader))

cdef inline StateRow *table_rows(TableHeader *th) noexcept nogil:
    return <StateRow *>((<char *>th) + sizeof(TableHeader)
                        + th.slots * sizeof(IndexEntry))

cdef inline uint64_t series_hash(uint64_t key, uint32_t metric) noexcept nogil:
    # A different input than the shard hash (mix64(key)), so that the keys
    # one worker owns still spread over its whole table.
    return rf_mix64(key ^ (<uint64_t>metric * 0x9E3779B97F4A7C15ULL)
                    ^ 0xD6E8FEB86659FD93ULL)

cdef inline int64_t index_find(TableHeader *th, IndexEntry *index, uint64_t s,
                               uint64_t key, uint32_t metric) noexcept nogil:
    """Row number of (key, metric), probing from slot s; -1 when absent."""
    cdef uint64_t mask = th.mask
    cdef uint32_t row1
    while True:
        row1 = rf_load_acquire_u32(&index[s].row1)
        if row1 == 0:
            return -1
        if index[s].key == key and index[s].metric == metric:
            return <int64_t>row1 - 1
        s = (s + 1) & mask
