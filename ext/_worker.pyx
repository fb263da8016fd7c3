# cython: language_level=3
"""A worker's drain loop: take everything its rings hold as one batch per
ring and fold it into the worker's state table, without the GIL (private
module; :mod:`engine.core.workermain` runs it in each worker process)."""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE, PyBUF_C_CONTIGUOUS
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport int64_t, uint64_t, uint32_t
from libc.string cimport memset
from posix.unistd cimport getpid, getppid
from atomic cimport (rf_load_acquire_u64, rf_store_relaxed_u64, rf_store_release_u64,
                     rf_cpu_relax, rf_compiler_barrier, rf_sleep_ns,
                     rf_load_acquire_i64, rf_now_ns, rf_wall_ns)
from layout cimport (Event, RingHeader, TableHeader, Rule, RulesHeader, RowUndo, SpanIntent,
                     TABLE_MAGIC, MAX_RULES, RF_TIMEOUT, RF_STOPPED, WB_BYTES, WB_CONTROL,
                     WB_COUNTERS, WB_INTENT, WB_UNDO, WC_STOP, WC_READY, WC_PID,
                     WC_ALERT_HEAD, WC_INTENT, WC_HEARTBEAT, WC_CRASH, WK_APPLIED,
                     WK_INVALID, WK_FULL, WK_STALE, WK_BATCHES, WK_MAX_BATCH, WK_LATE,
                     WK_ALERTS, WK_ALERTS_DROPPED, WK_RULES_GENERATION, WK_SWEEPS,
                     WK_REPLAYED_SPANS, WK_REPLAYED_EVENTS, WK_ROWS_REPAIRED,
                     WK_JOURNAL_ERRORS, WK_JOURNAL_ERRNO, WK_JOURNAL_BYTES,
                     WK_APPLIED_ORDINAL, WK_JOURNAL_SYNCED_NS, WK_ALERT_WAITS)
from ring cimport ring_data, ring_readable, ring_release
from wait cimport Waiter, waiter_init, waiter_reset, waiter_arm, waiter_park, waiter_disarm
from params cimport Params, BatchCounters, params_init
from alertsink cimport AlertSink, sink_ring, sink_publish, sink_room
from apply cimport apply_batch, table_sweep, table_reload, rules_copy, ordinals_reserve
from undo cimport table_repair, REPAIRED_ROW, REPAIRED_INSERT
from journal cimport Journal, journal_open, journal_append, journal_sync, journal_close

from engine.core.layout import WORKER_COUNTERS

# The worker block's layout (engine/core/layout.py): doorbell line, control
# line, counters line(s).
BLOCK_BYTES = WB_BYTES
CONTROL_OFFSET = WB_CONTROL
COUNTERS_OFFSET = WB_COUNTERS
COUNTER_NAMES = WORKER_COUNTERS

cdef enum:
    # Events applied between two alert publications.
    ALERT_SLICE = 4096

# fsync=interval syncs the journal this often; a failed journal write is
# tried again after this long.
cdef int64_t JOURNAL_SYNC_NS = 1_000_000_000
cdef int64_t JOURNAL_RETRY_NS = 10_000_000
# A worker waiting for room in its alert ring looks again this often: the
# engine's alert thread frees room in bulk, a drain of up to a whole ring.
cdef int64_t ALERT_ROOM_POLL_NS = 20_000

STATUS_TIMEOUT = RF_TIMEOUT
STATUS_STOPPED = RF_STOPPED
# Bits of WorkerLoop.repaired: what the loop found left by a killed worker.
ROW_PUT_BACK = REPAIRED_ROW
INSERT_FINISHED = REPAIRED_INSERT


cdef class WorkerLoop:
    """The consumer end of every ring feeding one worker, its table, the
    producer end of its alert ring, and its copy of the rules."""
    cdef Py_buffer ctrl
    cdef Py_buffer tbl
    cdef Py_buffer rul
    cdef bint has_ctrl, has_tbl, has_rul
    cdef char *base
    cdef TableHeader *th
    cdef Py_ssize_t nrings
    cdef RingHeader **rings
    cdef int64_t *cursor
    cdef uint32_t *bell
    cdef uint64_t *control
    cdef uint64_t *counters
    cdef Params params
    cdef Rule *rules
    cdef uint64_t generation
    cdef AlertSink sink
    cdef int64_t tick_ns
    cdef int64_t next_tick
    cdef Waiter waiter
    cdef BatchCounters totals
    cdef RowUndo *undo
    cdef SpanIntent *intents
    cdef readonly int repaired
    cdef readonly int64_t replayed
    cdef Journal journal
    cdef bint journaling
    cdef bint sync_interval
    cdef bint journal_failing
    cdef int64_t next_sync
    cdef int parent
    # The engine died while this worker waited for room in its alert ring:
    # nobody will read the ring again, so kernels drop (and count) instead.
    cdef bint orphaned

    def __cinit__(self, control_buffer, table_buffer, rules_buffer, list ring_offsets,
                  Py_ssize_t block_offset, Py_ssize_t alert_ring_offset, dict settings,
                  int wait_kind):
        cdef double views[3]
        self.has_ctrl = self.has_tbl = self.has_rul = False
        self.rings = NULL
        self.cursor = NULL
        self.rules = <Rule *>PyMem_Malloc(MAX_RULES * sizeof(Rule))
        if self.rules == NULL:
            raise MemoryError()
        PyObject_GetBuffer(control_buffer, &self.ctrl, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
        self.has_ctrl = True
        PyObject_GetBuffer(table_buffer, &self.tbl, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
        self.has_tbl = True
        PyObject_GetBuffer(rules_buffer, &self.rul, PyBUF_C_CONTIGUOUS)
        self.has_rul = True
        if <size_t>self.rul.len < sizeof(RulesHeader) + MAX_RULES * sizeof(Rule):
            raise ValueError("rules buffer too small")
        self.base = <char *>self.ctrl.buf
        self.th = <TableHeader *>self.tbl.buf
        if rf_load_acquire_u64(&self.th.magic) != TABLE_MAGIC:
            raise ValueError("no state table in the table buffer")
        # Readers ask whether the writer can still run before they give up
        # on a row it holds mid-write (ext/query.pxd).
        rf_store_release_u64(&self.th.writer, <uint64_t>getpid())
        self.nrings = len(ring_offsets)
        self.rings = <RingHeader **>PyMem_Malloc(self.nrings * sizeof(void *))
        self.cursor = <int64_t *>PyMem_Malloc(self.nrings * sizeof(int64_t))
        for i, off in enumerate(ring_offsets):
            self.rings[i] = <RingHeader *>(self.base + <Py_ssize_t>off)
            self.cursor[i] = rf_load_acquire_i64(&self.rings[i].consumed)
        self.bell = <uint32_t *>(self.base + block_offset)
        self.control = <uint64_t *>(self.base + block_offset + WB_CONTROL)
        self.counters = <uint64_t *>(self.base + block_offset + WB_COUNTERS)
        for j in range(3):
            views[j] = float(settings["views"][j])
        params_init(&self.params, settings["ts_min"], settings["ts_max"],
                    settings["window_ns"], settings["lateness_ns"],
                    settings["half_life_ns"], views, settings["ttl_ns"])
        self.params.rules = self.rules
        self.tick_ns = settings["tick_ns"]
        self.next_tick = rf_now_ns() + self.tick_ns
        self.generation = 0
        self.parent = getppid()
        sink_ring(&self.sink, self.base, <RingHeader *>(self.base + alert_ring_offset))
        waiter_init(&self.waiter, wait_kind)
        memset(&self.totals, 0, sizeof(BatchCounters))
        # Resume the counters a previous life of this worker left behind.
        self.totals.applied = self.counters[WK_APPLIED]
        self.totals.invalid = self.counters[WK_INVALID]
        self.totals.full = self.counters[WK_FULL]
        self.totals.stale = self.counters[WK_STALE]
        self.totals.late = self.counters[WK_LATE]
        self.sink.written = self.counters[WK_ALERTS]
        self.sink.dropped = self.counters[WK_ALERTS_DROPPED]
        self.undo = <RowUndo *>(self.base + block_offset + WB_UNDO)
        self.intents = <SpanIntent *>(self.base + block_offset + WB_INTENT)
        self.params.undo = self.undo
        self.params.heartbeat = &self.control[WC_HEARTBEAT]
        self.journaling = False
        self.journal.fd = self.journal.dirfd = -1
        spec = settings.get("journal")
        if spec is not None:
            err = journal_open(&self.journal, spec["dir"].encode(), spec["shard"],
                               spec["segment_bytes"], spec["fsync"] == "always")
            if err:
                raise OSError(err, f"opening the journal directory {spec['dir']}")
            self.journaling = True
            self.sync_interval = spec["fsync"] == "interval"
            self.journal.bytes = self.counters[WK_JOURNAL_BYTES]
            if spec["fsync"] != "never":
                # Nothing of this worker's is unsynced yet.
                rf_store_relaxed_u64(&self.counters[WK_JOURNAL_SYNCED_NS],
                                     <uint64_t>rf_wall_ns())
            self.next_sync = rf_now_ns() + JOURNAL_SYNC_NS
        with nogil:
            # The rules first: the replay judges events by them, as the
            # previous worker did.
            while not rules_copy(<const char *>self.rul.buf, self.rules, &self.params,
                                 &self.generation):
                rf_cpu_relax()
            # Repair and replay before a reload or a sweep touches a row:
            # both take fresh ordinals, and a row stamped with one would make
            # the replay skip events never applied (docs/faults.md).
            self.recover()
            # Every ordinal handed out so far is applied now: a snapshot
            # taken from here on may start its replay at the table's next.
            rf_store_release_u64(&self.counters[WK_APPLIED_ORDINAL],
                                 rf_load_acquire_u64(&self.th.next_ordinal))
            if self.generation != self.counters[WK_RULES_GENERATION]:
                # Rules its predecessor had not applied to the table yet (or
                # a first start): re-evaluate every series, as check_rules.
                self.reload_all()
                rf_store_release_u64(&self.counters[WK_RULES_GENERATION], self.generation)

    def __dealloc__(self):
        journal_close(&self.journal)
        PyMem_Free(self.rings)
        PyMem_Free(self.cursor)
        PyMem_Free(self.rules)
        self.release_buffers()

    def release_buffers(self):
        # The journal first: its last frames reach the disk on a clean stop.
        journal_close(&self.journal)
        if self.has_ctrl:
            PyBuffer_Release(&self.ctrl)
            self.has_ctrl = False
        if self.has_tbl:
            PyBuffer_Release(&self.tbl)
            self.has_tbl = False
        if self.has_rul:
            PyBuffer_Release(&self.rul)
            self.has_rul = False
        self.base = NULL

    cdef void recover(self) noexcept nogil:
        """Take over from whatever worker ran on these rings and this table
        before, killed anywhere: repair, publish its written alerts, and
        replay the span it was applying."""
        cdef int64_t *head = <int64_t *>&self.control[WC_ALERT_HEAD]
        cdef SpanIntent *it
        cdef RingHeader *h
        self.repaired = table_repair(self.th, self.undo, head)
        # From here on every alert is recorded as written, the replay's too.
        self.sink.shared_head = head
        if self.repaired & REPAIRED_ROW:
            rf_store_relaxed_u64(&self.counters[WK_ROWS_REPAIRED],
                                 self.counters[WK_ROWS_REPAIRED] + 1)
        if head[0] > self.sink.head:
            # Alerts the previous worker wrote whole but did not publish.
            self.sink.head = head[0]
            sink_publish(&self.sink)
        self.replayed = 0
        it = &self.intents[self.control[WC_INTENT] & 1]
        if it.count <= 0 or it.ring >= <uint64_t>self.nrings:
            return
        h = self.rings[it.ring]
        if rf_load_acquire_i64(&h.consumed) != it.start:
            return
        # The span was not committed: its events are still in the ring (a
        # slot is reused only after the cursor passes it) and those applied
        # read so in their rows' versions.  The counters go back to where
        # the span began (a kill between storing them and the commit would
        # count it twice); the replay counts every event once.
        self.cursor[it.ring] = it.start
        if self.journaling and not it.journaled:
            # Killed before the span was in the journal: it goes there
            # first, under the same ordinals, or it is not applied at all.
            while self.journal_span(it.ring, it.count, it.base):
                rf_sleep_ns(JOURNAL_RETRY_NS)
            rf_store_release_u64(&it.journaled, 1)
        self.totals.applied = it.applied
        self.totals.invalid = it.invalid
        self.totals.full = it.full
        self.apply_ring(it.ring, it.count, it.base)
        rf_store_relaxed_u64(&self.counters[WK_REPLAYED_SPANS],
                             self.counters[WK_REPLAYED_SPANS] + 1)
        rf_store_relaxed_u64(&self.counters[WK_REPLAYED_EVENTS],
                             self.counters[WK_REPLAYED_EVENTS] + <uint64_t>it.count)
        self.commit(it.ring)
        self.replayed = it.count

    def crash_requested(self):
        """The engine's test hook word: 0, or what it asks of a worker at
        start (engine.core.workermain.CRASH_EXIT, CRASH_HOLD)."""
        return int(rf_load_acquire_u64(&self.control[WC_CRASH]))

    def mark_ready(self, uint64_t pid):
        rf_store_relaxed_u64(&self.control[WC_PID], pid)
        rf_store_release_u64(&self.control[WC_READY], 1)

    cdef bint any_readable(self) noexcept nogil:
        cdef Py_ssize_t r
        for r in range(self.nrings):
            if ring_readable(self.rings[r], self.cursor[r]) > 0:
                return True
        return False

    cdef int64_t drain_once(self) noexcept nogil:
        cdef Py_ssize_t r
        cdef int64_t avail, got = 0
        cdef SpanIntent *it
        cdef uint64_t next_intent
        for r in range(self.nrings):
            avail = ring_readable(self.rings[r], self.cursor[r])
            if avail <= 0:
                continue
            # The intent first (docs/faults.md): which span, and the
            # ordinals its events get, written to the spare of the two
            # intents and then made current, so a kill at any point leaves
            # one whole intent to recover from.
            next_intent = (self.control[WC_INTENT] + 1) & 1
            it = &self.intents[next_intent]
            it.ring = <uint64_t>r
            it.start = self.cursor[r]
            it.count = avail
            it.base = ordinals_reserve(self.th, <uint64_t>avail)
            it.applied = self.totals.applied
            it.invalid = self.totals.invalid
            it.full = self.totals.full
            it.journaled = 0
            rf_store_release_u64(&self.control[WC_INTENT], next_intent)
            rf_compiler_barrier()
            if self.journaling:
                # Journal before apply (the LMAX journaller): a span that
                # cannot be written is not applied, and stays in its ring.
                if self.journal_span(r, avail, it.base):
                    self.journal_failing = True
                    break
                self.journal_failing = False
                rf_store_release_u64(&it.journaled, 1)
                rf_compiler_barrier()
            self.apply_ring(r, avail, it.base)
            self.commit(r)
            # Spans are applied one after another, so every ordinal below
            # this span's end is applied (sweeps between spans take theirs
            # from the same counter, and need no replay).
            rf_store_release_u64(&self.counters[WK_APPLIED_ORDINAL], it.base + <uint64_t>avail)
            got += avail
        if not got:
            return 0
        rf_store_relaxed_u64(&self.counters[WK_BATCHES], self.counters[WK_BATCHES] + 1)
        if <uint64_t>got > self.counters[WK_MAX_BATCH]:
            rf_store_relaxed_u64(&self.counters[WK_MAX_BATCH], <uint64_t>got)
        return got

    cdef int journal_span(self, Py_ssize_t r, int64_t avail, uint64_t base) noexcept nogil:
        """Append ring r's next avail events (from the local cursor) to the
        journal as one frame: 0, or the errno of the failed write (counted;
        the caller applies nothing)."""
        cdef RingHeader *h = self.rings[r]
        cdef Event *data = ring_data(self.base, h)
        cdef int64_t start = self.cursor[r] & <int64_t>h.mask
        cdef int64_t first = <int64_t>h.capacity - start
        cdef int err
        if first > avail:
            first = avail
        err = journal_append(&self.journal, base, data + start, <uint32_t>first, data,
                             <uint32_t>(avail - first))
        if err:
            rf_store_relaxed_u64(&self.counters[WK_JOURNAL_ERRORS],
                                 self.counters[WK_JOURNAL_ERRORS] + 1)
            rf_store_relaxed_u64(&self.counters[WK_JOURNAL_ERRNO], <uint64_t>err)
            return err
        rf_store_relaxed_u64(&self.counters[WK_JOURNAL_BYTES], self.journal.bytes)
        if self.journal.always:
            # Every frame was synced before it returned.
            rf_store_relaxed_u64(&self.counters[WK_JOURNAL_SYNCED_NS], <uint64_t>rf_wall_ns())
        if self.counters[WK_JOURNAL_ERRNO]:
            rf_store_relaxed_u64(&self.counters[WK_JOURNAL_ERRNO], 0)
        return 0

    cdef void apply_ring(self, Py_ssize_t r, int64_t avail, uint64_t base) noexcept nogil:
        """Apply ring r's next avail events (in two pieces where the ring
        wraps), the first with ordinal base, and move its local cursor."""
        cdef RingHeader *h = self.rings[r]
        cdef Event *data = ring_data(self.base, h)
        cdef int64_t start = self.cursor[r] & <int64_t>h.mask
        cdef int64_t first = <int64_t>h.capacity - start
        if first > avail:
            first = avail
        self.apply_span(data + start, first, base)
        if avail > first:
            self.apply_span(data, avail - first, base + <uint64_t>first)
        self.cursor[r] += avail

    cdef void commit(self, Py_ssize_t r) noexcept nogil:
        """Publish ring r's span as applied: its alerts, the counters, then
        its consumer cursor, which frees its slots for the producer."""
        sink_publish(&self.sink)
        # Counters first, cursor second: whoever sees a ring released (a
        # flush returning) also sees the counters that include its events.
        rf_store_relaxed_u64(&self.counters[WK_APPLIED], self.totals.applied)
        rf_store_relaxed_u64(&self.counters[WK_INVALID], self.totals.invalid)
        rf_store_relaxed_u64(&self.counters[WK_FULL], self.totals.full)
        rf_store_relaxed_u64(&self.counters[WK_STALE], self.totals.stale)
        rf_store_relaxed_u64(&self.counters[WK_LATE], self.totals.late)
        self.store_alert_counters()
        ring_release(self.base, self.rings[r], self.cursor[r])

    cdef void apply_span(self, const Event *ev, int64_t n, uint64_t base) noexcept nogil:
        # In slices, publishing alerts after each: an alert waits for the
        # rest of its slice, not for the rest of a 64k-event batch
        # (bench/alert_latency.py: applied -> alert thread p99 5.1 ms with
        # whole batches at full ingest).
        cdef int64_t done = 0, k, room
        while done < n:
            k = n - done
            if k > ALERT_SLICE:
                k = ALERT_SLICE
            # An event changes its row's status at most once: k events need
            # room for k alerts at most, so none is ever dropped.
            room = self.wait_alert_room()
            if room >= 0 and k > room:
                k = room
            apply_batch(self.th, ev + done, k, base + <uint64_t>done, &self.params,
                        &self.totals, &self.sink)
            sink_publish(&self.sink)
            done += k
            # A whole ring of a large table is long work: it is progress.
            rf_store_relaxed_u64(&self.control[WC_HEARTBEAT], <uint64_t>rf_now_ns())

    cdef void store_alert_counters(self) noexcept nogil:
        rf_store_relaxed_u64(&self.counters[WK_ALERTS], self.sink.written)
        rf_store_relaxed_u64(&self.counters[WK_ALERTS_DROPPED], self.sink.dropped)

    cdef void check_rules(self) noexcept nogil:
        """Take new rules between two batches: copy them, then re-resolve
        and re-evaluate every series (docs/health.md, Reload)."""
        cdef const RulesHeader *h = <const RulesHeader *>self.rul.buf
        cdef uint64_t g = rf_load_acquire_u64(&h.generation)
        if g == self.generation or g & 1:
            return
        if not rules_copy(<const char *>self.rul.buf, self.rules, &self.params,
                          &self.generation):
            return
        self.reload_all()
        rf_store_release_u64(&self.counters[WK_RULES_GENERATION], self.generation)

    cdef void reload_all(self) noexcept nogil:
        # In parts, as room in the alert ring allows: every series whose
        # status the new rules change gets its alert.
        cdef uint64_t at = 0
        while True:
            at = table_reload(self.th, &self.params, &self.sink, at)
            sink_publish(&self.sink)
            self.store_alert_counters()
            if at >= rf_load_acquire_u64(&self.th.used):
                return
            if self.wait_alert_room() < 0:
                return

    cdef int64_t wait_alert_room(self) noexcept nogil:
        """Room in the alert ring, waited for when there is none: a status
        change is never dropped (docs/health.md, Alerts).  The wait is
        progress, not a hang.  Returns -1 once the engine is gone: its
        alerts then have no reader, the kernels drop and count them, and a
        sweep stops where it is (the worker exits next)."""
        cdef int64_t room
        if self.orphaned:
            return -1
        room = sink_room(&self.sink)
        if room > 0:
            return room
        rf_store_relaxed_u64(&self.counters[WK_ALERT_WAITS],
                             self.counters[WK_ALERT_WAITS] + 1)
        self.store_alert_counters()
        while True:
            sink_publish(&self.sink)
            rf_store_relaxed_u64(&self.control[WC_HEARTBEAT], <uint64_t>rf_now_ns())
            rf_sleep_ns(ALERT_ROOM_POLL_NS)
            room = sink_room(&self.sink)
            if room > 0:
                return room
            if getppid() != self.parent:
                self.orphaned = True
                return -1

    cdef void tick(self) noexcept nogil:
        cdef int64_t now = rf_now_ns()
        cdef uint64_t at
        cdef int64_t wall
        if self.sync_interval and now >= self.next_sync:
            # fsync=interval (Redis' everysec): at most a second of journal
            # is only in the page cache.
            self.next_sync = now + JOURNAL_SYNC_NS
            if journal_sync(&self.journal) == 0:
                rf_store_relaxed_u64(&self.counters[WK_JOURNAL_SYNCED_NS], <uint64_t>rf_wall_ns())
        if now < self.next_tick:
            return
        self.next_tick = now + self.tick_ns
        wall = rf_wall_ns()
        at = 0
        while True:
            at = table_sweep(self.th, wall, &self.params, &self.sink, at)
            sink_publish(&self.sink)
            self.store_alert_counters()
            if at >= rf_load_acquire_u64(&self.th.used):
                break
            if self.wait_alert_room() < 0:
                break
        rf_store_relaxed_u64(&self.counters[WK_SWEEPS], self.counters[WK_SWEEPS] + 1)

    cdef int loop(self, int64_t idle_ns) noexcept nogil:
        cdef int64_t idle_deadline = rf_now_ns() + idle_ns, seen, remaining, until_tick
        cdef bint stop_seen = False
        while True:
            rf_store_relaxed_u64(&self.control[WC_HEARTBEAT], <uint64_t>rf_now_ns())
            self.check_rules()
            self.tick()
            if self.orphaned:
                # The caller sees the engine gone and exits.
                return RF_TIMEOUT
            if self.drain_once():
                waiter_reset(&self.waiter)
                idle_deadline = rf_now_ns() + idle_ns
                continue
            if rf_load_acquire_u64(&self.control[WC_STOP]):
                # One more pass after seeing the flag: whatever was published
                # before the flag was raised is visible now.
                if stop_seen:
                    return RF_STOPPED
                stop_seen = True
                continue
            remaining = idle_deadline - rf_now_ns()
            if remaining <= 0:
                return RF_TIMEOUT
            if self.journal_failing:
                # The disk refused the last span (full, or failing): it is
                # tried again shortly, not in a spin.
                rf_sleep_ns(JOURNAL_RETRY_NS if remaining > JOURNAL_RETRY_NS else remaining)
                continue
            seen = waiter_arm(&self.waiter, self.bell)
            if seen >= 0:
                if self.any_readable() or rf_load_acquire_u64(&self.control[WC_STOP]):
                    waiter_disarm(self.bell)
                else:
                    # Parked no longer than the next TTL sweep.
                    until_tick = self.next_tick - rf_now_ns()
                    if until_tick < remaining:
                        remaining = until_tick if until_tick > 0 else 1
                    waiter_park(self.bell, <uint32_t>seen, remaining)

    def run(self, int64_t idle_ns):
        """Drain until the stop flag is seen with empty rings (returns
        STATUS_STOPPED) or nothing arrived for ``idle_ns`` (STATUS_TIMEOUT),
        so the caller can check on its parent."""
        if self.base == NULL:
            raise ValueError("worker loop is closed")
        cdef int status
        with nogil:
            status = self.loop(idle_ns)
        return status


def journal_write(str directory, uint32_t shard, int64_t segment_bytes, bint always,
                  frames):
    """Write ``frames`` (``(base, events, split)``: a frame of ``events``
    with first ordinal ``base``, passed as two pieces cut at ``split``, as
    a span that wraps its ring) with the worker's journal writer, into
    ``directory``.  Returns the bytes written.  For the tests, which check
    its bytes against engine.journal.wal's writer."""
    cdef Journal j
    cdef bytes path = directory.encode()
    cdef const Event *ev
    cdef uint32_t n, k
    cdef int err = journal_open(&j, path, shard, segment_bytes, always)
    if err:
        raise OSError(err, f"opening journal directory {directory}")
    try:
        for base, events, split in frames:
            buf = memoryview(events).cast("B")
            if buf.nbytes % sizeof(Event):
                raise ValueError("events must be EVENT_DTYPE records")
            n = <uint32_t>(buf.nbytes // sizeof(Event))
            k = <uint32_t>split
            if k > n:
                raise ValueError("split past the end of the events")
            ev = <const Event *><const char *>buf_address(buf)
            err = journal_append(&j, <uint64_t>base, ev, k, ev + k, n - k)
            if err:
                raise OSError(err, "writing the journal")
        return j.bytes
    finally:
        journal_close(&j)


cdef const char *buf_address(memoryview buf) except NULL:
    cdef const unsigned char[::1] view = buf
    if view.shape[0] == 0:
        return <const char *>""
    return <const char *>&view[0]
