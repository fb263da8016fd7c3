# cython: language_level=3
# The read side of a state table, for any process: a seqlock copy of one
# row, and the lookup of a series.  Readers never block the writer and
# never write shared memory.

from libc.stdint cimport int64_t, uint64_t, uint32_t
from libc.string cimport memcpy, memset
from atomic cimport (rf_load_acquire_u64, rf_load_relaxed_u64, rf_fence_acquire,
                     rf_cpu_relax, rf_yield, rf_now_ns, rf_pid_can_run)
from libc.stdint cimport uint8_t
from layout cimport (TableHeader, StateRow, RF_OK, RF_UNAVAILABLE, READ_CHECK_EVERY,
                     READ_GIVE_UP_NS, READ_RUNNABLE_GIVE_UP_NS, SHARD_OK, ST_STALE,
                     ROW_SHARD_DOWN)
from index cimport table_index, table_rows, series_hash, index_find
from shard cimport shard_of

cdef inline uint8_t status_seen(const TableHeader *th, uint8_t status) noexcept nogil:
    """A row's status as readers see it: at least STALE while its shard is
    not ok (its worker died, hangs or recovers), since the row may no
    longer be current; never OK (docs/faults.md)."""
    if rf_load_relaxed_u64(&th.shard) != SHARD_OK and status < ST_STALE:
        return ST_STALE
    return status

cdef inline int row_read(const TableHeader *th, const StateRow *r,
                         StateRow *out) noexcept nogil:
    """Seqlock read of one row of th into out: RF_OK once a stable, even
    version is seen before and after the copy, or RF_UNAVAILABLE (out is
    then garbage) when the version stays the same odd value for
    READ_GIVE_UP_NS, or READ_RUNNABLE_GIVE_UP_NS while th's writer can
    still run.  Never blocks the writer."""
    cdef uint64_t v1, v2, held = 0
    cdef long tries = 0
    cdef int64_t now, since = 0
    while True:
        v1 = rf_load_acquire_u64(&r.version)
        if not (v1 & 1):
            memcpy(out, <const void *>r, sizeof(StateRow))
            rf_fence_acquire()
            v2 = rf_load_relaxed_u64(&r.version)
            if v1 == v2:
                if rf_load_relaxed_u64(&th.shard) != SHARD_OK:
                    out.status = status_seen(th, out.status)
                    out.flags |= ROW_SHARD_DOWN
                return RF_OK
        tries += 1
        if tries & (READ_CHECK_EVERY - 1):
            rf_cpu_relax()
            continue
        # Only a read that keeps failing looks at the clock.  A writer that
        # died or stopped between the two halves of its write leaves the
        # same odd version for good, and spinning on it would hang the
        # reader (and the C lookup server, which has no other way out).  A
        # version that moved is a live writer, so the wait starts again.
        now = rf_now_ns()
        if since == 0 or v1 != held:
            held = v1
            since = now
        elif now - since >= READ_GIVE_UP_NS:
            # A writer descheduled inside its write on a busy machine is
            # only waiting for a core: it gets longer, never forever.
            if now - since >= READ_RUNNABLE_GIVE_UP_NS or \
                    not rf_pid_can_run(<int64_t>rf_load_acquire_u64(&th.writer)):
                return RF_UNAVAILABLE
        # That writer may be waiting for this very core.
        rf_yield()

cdef inline int table_find(TableHeader *th, uint64_t key, uint32_t metric,
                           StateRow *out, bint *found) noexcept nogil:
    """Look (key, metric) up and seqlock-read its row into out.  Sets
    found; returns RF_OK, or RF_UNAVAILABLE when the row stayed mid-write
    (row_read)."""
    cdef int64_t row = index_find(th, table_index(th),
                                  series_hash(key, metric) & th.mask, key, metric)
    found[0] = row >= 0
    if row < 0:
        return RF_OK
    return row_read(th, &table_rows(th)[row], out)


cdef inline int lookup_into(TableHeader **headers, uint64_t shards, uint64_t key,
                            uint32_t metric, StateRow *out, bint *found) noexcept nogil:
    """One series of a lookup across every worker's table: its shard's
    row copied into out, or for an unknown series a zero row but for key
    and metric (found is false).  Returns table_find's status."""
    cdef int status = table_find(headers[shard_of(key, shards)], key, metric, out, found)
    if status == RF_OK and not found[0]:
        memset(out, 0, sizeof(StateRow))
        out.key = key
        out.metric = metric
    return status
