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
from libc.string cimport memcpy
from atomic cimport rf_mix64, rf_load_acquire_u32, rf_store_release_u32, rf_store_release_u64
from layout cimport (TableHeader, IndexEntry, StateRow, ProducerMark, RF_OK, RF_FULL,
                     RF_CORRUPT, ROW_SHARD_DOWN, VERSION_STEP, PRODUCER_MARK_SLOTS)
from atomic cimport rf_load_acquire_u64

cdef inline IndexEntry *table_index(TableHeader *th) noexcept nogil:
    return <IndexEntry *>((<char *>th) + sizeof(TableHeader))

cdef inline StateRow *table_rows(TableHeader *th) noexcept nogil:
    return <StateRow *>((<char *>th) + sizeof(TableHeader)
                        + th.slots * sizeof(IndexEntry))

cdef inline ProducerMark *table_marks(TableHeader *th) noexcept nogil:
    """The producer marks, after the rows (PRODUCER_MARK_SLOTS entries)."""
    return <ProducerMark *>((<char *>th) + sizeof(TableHeader)
                            + th.slots * sizeof(IndexEntry) + th.limit * sizeof(StateRow))

cdef inline uint64_t mark_find(TableHeader *th, uint64_t key) noexcept nogil:
    """The mark of producer key in this table, or 0 (any thread: an entry's
    key is published after its mark, a mark only ever rises)."""
    cdef ProducerMark *m = table_marks(th)
    cdef uint64_t s = rf_mix64(key) & (PRODUCER_MARK_SLOTS - 1), k
    while True:
        k = rf_load_acquire_u64(&m[s].key)
        if k == 0:
            return 0
        if k == key:
            return rf_load_acquire_u64(&m[s].mark)
        s = (s + 1) & (PRODUCER_MARK_SLOTS - 1)

cdef inline bint mark_raise(TableHeader *th, uint64_t key, uint64_t mark) noexcept nogil:
    """Raise producer key's mark to at least mark (the writer only); False
    when the key is new and half the entries are in use."""
    cdef ProducerMark *m = table_marks(th)
    cdef uint64_t s = rf_mix64(key) & (PRODUCER_MARK_SLOTS - 1)
    while True:
        if m[s].key == key:
            if mark > m[s].mark:
                rf_store_release_u64(&m[s].mark, mark)
            return True
        if m[s].key == 0:
            if th.marks >= PRODUCER_MARK_SLOTS // 2:
                return False
            rf_store_release_u64(&m[s].mark, mark)
            rf_store_release_u64(&m[s].key, key)
            rf_store_release_u64(&th.marks, th.marks + 1)
            return True
        s = (s + 1) & (PRODUCER_MARK_SLOTS - 1)

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

cdef inline int table_load(TableHeader *th, const StateRow *src, uint64_t n) noexcept nogil:
    """Fill an empty table with n rows saved from another (a snapshot,
    docs/journal.md), rebuilding the index, before any reader or writer
    uses it.  RF_OK; RF_FULL when they do not fit; RF_CORRUPT when a row
    is mid-write or names a series twice.  The table's next ordinal goes
    past every ordinal the rows carry, so that nothing applied later can
    look already applied."""
    cdef IndexEntry *index = table_index(th)
    cdef StateRow *rows = table_rows(th)
    cdef uint64_t i, s, top = 0, mask = th.mask
    cdef StateRow *r
    if th.used != 0:
        return RF_CORRUPT
    if n > th.limit:
        return RF_FULL
    for i in range(n):
        if src[i].version & 1:
            return RF_CORRUPT
        s = series_hash(src[i].key, src[i].metric) & mask
        while index[s].row1 != 0:
            if index[s].key == src[i].key and index[s].metric == src[i].metric:
                return RF_CORRUPT
            s = (s + 1) & mask
        r = &rows[i]
        memcpy(r, &src[i], sizeof(StateRow))
        # A flag of the reader that saved it, never of the row.
        r.flags &= ~(<uint32_t>ROW_SHARD_DOWN)
        if r.version // VERSION_STEP > top:
            top = r.version // VERSION_STEP
        index[s].key = r.key
        index[s].metric = r.metric
        rf_store_release_u32(&index[s].row1, <uint32_t>(i + 1))
        rf_store_release_u64(&th.used, i + 1)
    if top + 1 > th.next_ordinal:
        rf_store_release_u64(&th.next_ordinal, top + 1)
    return RF_OK
