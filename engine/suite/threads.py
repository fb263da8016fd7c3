"""Thread-based contenders: the designs ringflow is compared against.

Every contender applies the workload to a dict of per-series state with
Python threads, and is written as well as its design allows (``tuning`` says
how).  Common to all of them:

* every design does the work of ringflow's update kernel per event (see
  :func:`_apply_ordered`): count, sum, min, max, Welford mean and m2, an
  EWMA decaying in event time (half-life :data:`HALF_LIFE_NS`), last,
  last_ts, first_ts and a stale counter; the oracle checks the six
  :data:`~engine.suite.base.STATE_FIELDS`, taken from that fuller row;
* the numpy records are turned into Python lists on the clock, right after
  the run's start time (a service receiving the events would have to), for
  all of them alike;
* work moves in blocks of ``block`` events (64): a lock is taken per block,
  not per event, and the last event of each block is the latency sample
  (creation = run start + ``created_ns`` when paced, else the moment the
  producer took the block; applied = ``perf_counter_ns()`` right after its
  update);
* producers split the stream round-robin by chunks of ``chunk`` events, so
  the order of one series across producers is not kept: designs that must be
  right order ``last`` by ``(ts, stream index)``, which is the oracle's rule
  (ties go to the later event in the stream);
* ``peak_rss_bytes`` is ``ru_maxrss`` of this process (its peak so far, not
  only this run's); ``cpu_seconds`` is the ``process_time`` delta of the
  whole process.
"""

from __future__ import annotations

import queue
import resource
import sys
import threading
import time

import numpy as np

from .base import Contender, RunResult, Workload

__all__ = [
    "HALF_LIFE_NS",
    "ROW_FIELDS",
    "new_row",
    "update_row",
    "SingleThread",
    "GlobalLock",
    "GlobalLockPerEvent",
    "QueuePool",
    "ThreadPerRequest",
    "Optimistic",
    "CONTENDERS",
]

_perf = time.perf_counter_ns

#: Half-life of the EWMA every Python contender keeps, in ns of event time
#: (the one constant of the suite's contenders: aio and procs import it).
HALF_LIFE_NS = 10e9

#: A row, in every Python contender of the suite: the six STATE_FIELDS
#: first (count, sum, min, max, last, last_ts), then what ringflow's kernel
#: also keeps.  ``last_index`` (the stream index of ``last``) is only used by
#: the designs that order ``last`` by ``(ts, index)``.
ROW_FIELDS = ("count", "sum", "min", "max", "last", "last_ts", "last_index", "mean", "m2",
              "ewma", "first_ts", "stale")


def new_row(t, v, i=0) -> list:
    """The row of a series' first event ``(ts=t, value=v)``, stream index ``i``."""
    return [1, v, v, v, v, t, i, v, 0.0, v, t, 0]


def update_row(s, i, t, v, half_life=HALF_LIFE_NS) -> None:
    """Apply event ``(i, t, v)`` to row ``s`` (see :data:`ROW_FIELDS`) in place.

    The same rule as ringflow's kernel (tests/reference.py series_state_ref):
    Welford mean/m2; an event newer than ``last`` -- by ``(ts, stream
    index)``, ties to the later event -- becomes ``last`` and moves the EWMA
    (weight ``1 - 2 ** (-dt / half_life)``), an older one is only counted in
    the aggregates and in ``stale``."""
    n, sm, mn, mx, last, last_ts, li, mean, m2, ewma, first_ts, stale = s
    n += 1
    inv = 1.0 / n
    delta = v - mean
    mean += v * inv - mean * inv
    m2 += delta * (v - mean)
    if t > last_ts or (t == last_ts and i > li):
        if t > last_ts:
            a = 2.0 ** ((last_ts - t) / half_life)
            ewma = a * ewma + (1.0 - a) * v
        last = v
        last_ts = t
        li = i
    else:
        stale += 1
    s[:] = (n, sm + v, v if v < mn else mn, v if v > mx else mx, last, last_ts, li, mean, m2,
            ewma, t if t < first_ts else first_ts, stale)


def _peak_rss() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) if sys.platform == "darwin" else int(r) * 1024


class _Run:
    """The per-run material shared by the threads of one contender."""

    def __init__(self, workload: Workload, chunk: int, block: int):
        self.events = workload.events
        self.K = self.M = self.T = self.V = None
        self.n = len(workload.events)
        self.created = workload.created_ns
        self.paced = bool(self.n and workload.created_ns.any())
        self.chunk = chunk
        self.block = block
        self.lat: list[int] = []  # list.append is atomic under the GIL
        self.t0 = 0
        self.cpu0 = 0.0

    def start(self) -> None:
        """Start the clock, then turn the records into Python lists (on the
        clock: a service receiving the events would have to)."""
        self.cpu0 = time.process_time()
        self.t0 = _perf()
        ev = self.events
        self.K = ev["key"].tolist()
        self.M = ev["metric"].tolist()
        self.T = ev["ts"].tolist()
        self.V = ev["value"].tolist()

    def blocks(self, p: int = 0, producers: int = 1):
        """Yield ``(a, b, created)`` for producer ``p``'s blocks, paced.

        ``created`` is the absolute creation time of event ``b - 1`` (the
        block's latency sample): its scheduled time when paced (the producer
        waits for it), else now."""
        n, chunk, block = self.n, self.chunk, self.block
        for c in range(p * chunk, n, producers * chunk):
            for a in range(c, min(c + chunk, n), block):
                b = min(a + block, c + chunk, n)
                if self.paced:
                    due = self.t0 + int(self.created[b - 1])
                    now = _perf()
                    while now < due:
                        gap = due - now
                        time.sleep(gap / 1e9 if gap > 200_000 else 0)
                        now = _perf()
                    yield a, b, due
                else:
                    yield a, b, _perf()

    def result(self, name, state, producers, notes, stale=0) -> RunResult:
        seconds = (_perf() - self.t0) / 1e9
        cpu = time.process_time() - self.cpu0
        out = {s: tuple(r[:6]) for s, r in state.items()}
        return RunResult(
            name=name,
            seconds=seconds,
            state=out,
            latencies_ns=np.asarray(self.lat, np.int64),
            stale_overwrites=stale,
            peak_rss_bytes=_peak_rss(),
            cpu_seconds=cpu,
            producers=producers,
            notes=notes,
        )


#: Appended to the ``tuning`` of the lock-based thread contenders.
_SAME_WORK = ("; the kernel's per-event work in the shared fold (count, sum, min, max, "
              "Welford mean/m2, event-time EWMA, last, last_ts, first_ts, stale); numpy "
              "records converted to Python lists on the clock")


def _apply_ordered(state, K, M, T, V, a, b, half_life=HALF_LIFE_NS) -> None:
    """Apply events a..b-1 (the fold of every thread contender but
    ``optimistic``); ``last`` goes to the largest (ts, index).

    A row is :data:`ROW_FIELDS`; the update is :func:`update_row`, inlined
    (a call per event costs ~15%)."""
    get = state.get
    for i, k, m, t, v in zip(range(a, b), K[a:b], M[a:b], T[a:b], V[a:b]):
        s = get((k, m))
        if s is None:
            state[(k, m)] = [1, v, v, v, v, t, i, v, 0.0, v, t, 0]
            continue
        n, sm, mn, mx, last, last_ts, li, mean, m2, ewma, first_ts, stale = s
        n += 1
        inv = 1.0 / n
        delta = v - mean
        mean += v * inv - mean * inv
        m2 += delta * (v - mean)
        if t > last_ts or (t == last_ts and i > li):
            if t > last_ts:
                a_ = 2.0 ** ((last_ts - t) / half_life)
                ewma = a_ * ewma + (1.0 - a_) * v
            last = v
            last_ts = t
            li = i
        else:
            stale += 1
        s[:] = (n, sm + v, v if v < mn else mn, v if v > mx else mx, last, last_ts, li, mean,
                m2, ewma, t if t < first_ts else first_ts, stale)


def _join_all(threads) -> None:
    for th in threads:
        th.join()


class _Errors:
    """Collect the first exception of any thread, to re-raise in run()."""

    def __init__(self):
        self.exc: BaseException | None = None

    def wrap(self, fn, *args):
        def target():
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - re-raised by run()
                if self.exc is None:
                    self.exc = e

        return target

    def raise_(self):
        if self.exc is not None:
            raise self.exc


class SingleThread(Contender):
    """One thread, one dict: the baseline every ratio is against."""

    name = "single"
    single_threaded = True
    description = "one thread updating a dict of per-series lists (the baseline)"
    tuning = (
        "the kernel's per-event work (count, sum, min, max, Welford mean/m2, "
        "event-time EWMA, last, last_ts, first_ts, stale) in the shared fold: "
        "a zip loop over Python lists, the row unpacked into locals and written "
        "back in one slice assignment; numpy records converted to Python lists "
        "on the clock"
    )

    def __init__(self, chunk: int = 4096, block: int = 64):
        self.chunk, self.block = chunk, block

    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        r = _Run(workload, self.chunk, self.block)
        state: dict = {}
        lat = r.lat
        apply = _apply_ordered
        r.start()
        K, M, T, V = r.K, r.M, r.T, r.V
        for a, b, created in r.blocks():
            apply(state, K, M, T, V, a, b)
            lat.append(_perf() - created)
        notes = "producers ignored: one thread" if producers != 1 else ""
        return r.result(self.name, state, 1, notes)


class GlobalLock(Contender):
    """N producer threads sharing one dict behind one lock."""

    name = "global_lock"
    description = "N producer threads updating one shared dict under one threading.Lock"
    tuning = (
        "the lock is taken once per block of 64 events, not per event "
        "(per-event locking measured 4.6x slower with 1 producer, 13x with 4; "
        "256-event blocks no faster and 4x the latency); stream split "
        "round-robin in chunks of 1024; last ordered by (ts, stream index) "
        "under the lock, so no stale overwrite is possible"
    ) + _SAME_WORK

    def __init__(self, chunk: int = 1024, block: int = 64):
        self.chunk, self.block = chunk, block

    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        producers = max(1, int(producers))
        r = _Run(workload, self.chunk, self.block)
        state: dict = {}
        lock = threading.Lock()
        lat = r.lat
        errs = _Errors()

        def producer(p):
            for a, b, created in r.blocks(p, producers):
                with lock:
                    _apply_ordered(state, r.K, r.M, r.T, r.V, a, b)
                lat.append(_perf() - created)

        threads = [threading.Thread(target=errs.wrap(producer, p)) for p in range(producers)]
        r.start()
        try:
            for th in threads:
                th.start()
        finally:
            _join_all(t for t in threads if t.ident is not None)
        errs.raise_()
        return r.result(self.name, state, producers, self.tuning)


class GlobalLockPerEvent(GlobalLock):
    """The global-lock design as the seed story ran it: the lock per event."""

    name = "global_lock_per_event"
    description = ("N producer threads updating one shared dict, taking the one "
                   "threading.Lock for every event (each event a request)")
    tuning = (
        "the same code as global_lock with blocks of 1 event: the form the "
        "failure story describes (every request takes the global mutex), kept "
        "beside the tuned global_lock so the cost of the lock itself shows; "
        "stream split round-robin in chunks of 1024"
    ) + _SAME_WORK

    def __init__(self, chunk: int = 1024):
        super().__init__(chunk=chunk, block=1)


class QueuePool(Contender):
    """Producers feed one queue.Queue; a pool of workers applies under one mutex."""

    name = "queue_pool"
    description = "producers -> one queue.Queue -> pool of worker threads, one mutex on the dict"
    tuning = (
        "queue items are chunks of 256 events (not single events); a short "
        "bounded queue (8 items) for back-pressure: 64 items gave 15x the p50 "
        "latency and less throughput; an item is put when its 256 events exist, so "
        "at a low offered rate the wait to fill it is in the latency; 4 workers "
        "taking the mutex per block of "
        "64 events (1 worker is as fast under the GIL, but then it is no pool)"
    ) + _SAME_WORK

    def __init__(self, workers: int = 4, chunk: int = 256, block: int = 64, maxsize: int = 8):
        self.workers, self.chunk, self.block, self.maxsize = workers, chunk, block, maxsize

    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        producers = max(1, int(producers))
        r = _Run(workload, self.chunk, self.block)
        state: dict = {}
        lock = threading.Lock()
        lat = r.lat
        q: queue.Queue = queue.Queue(self.maxsize)
        errs = _Errors()
        stop = object()

        def producer(p):
            # One item per chunk: its blocks with their creation times.
            item: list = []
            for a, b, created in r.blocks(p, producers):
                item.append((a, b, created))
                if b - item[0][0] >= r.chunk or b == r.n:
                    q.put(item)
                    item = []
            if item:
                q.put(item)

        def worker():
            # Keeps draining after an error so that producers never block on
            # a full queue; the error is re-raised by run().
            failed = False
            while True:
                item = q.get()
                if item is stop:
                    return
                if failed:
                    continue
                try:
                    for a, b, created in item:
                        with lock:
                            _apply_ordered(state, r.K, r.M, r.T, r.V, a, b)
                        lat.append(_perf() - created)
                except BaseException as e:  # noqa: BLE001 - re-raised by run()
                    failed = True
                    if errs.exc is None:
                        errs.exc = e

        prods = [threading.Thread(target=errs.wrap(producer, p)) for p in range(producers)]
        works = [threading.Thread(target=errs.wrap(worker)) for _ in range(self.workers)]
        r.start()
        try:
            for th in works + prods:
                th.start()
        finally:
            _join_all(t for t in prods if t.ident is not None)
            for _ in works:
                q.put(stop)
            _join_all(t for t in works if t.ident is not None)
        errs.raise_()
        return r.result(self.name, state, producers, self.tuning)


class ThreadPerRequest(Contender):
    """A new thread per request of a few events, all updating under one lock."""

    name = "thread_per_request"
    description = "a new threading.Thread per request of 16 events, updating under one lock"
    tuning = (
        "a request carries 16 events (an agent's report), not one (one event "
        "per thread is 10x slower); at most 16 request threads alive (a "
        "semaphore, so producers never wait for a whole batch to join; 256 "
        "alive gave 10x the p50 latency with 4 producers); 256 KiB stacks"
    ) + _SAME_WORK

    def __init__(self, request: int = 16, max_threads: int = 16, chunk: int = 1024):
        self.request, self.max_threads, self.chunk = request, max_threads, chunk

    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        producers = max(1, int(producers))
        r = _Run(workload, self.chunk, self.request)
        state: dict = {}
        lock = threading.Lock()
        lat = r.lat
        sem = threading.BoundedSemaphore(self.max_threads)
        errs = _Errors()
        live: list = []  # request threads, joined at the end

        def request(a, b, created):
            try:
                with lock:
                    _apply_ordered(state, r.K, r.M, r.T, r.V, a, b)
                lat.append(_perf() - created)
            finally:
                sem.release()

        def producer(p):
            for a, b, created in r.blocks(p, producers):
                sem.acquire()
                th = threading.Thread(target=errs.wrap(request, a, b, created))
                try:
                    th.start()
                except BaseException:
                    sem.release()
                    raise
                live.append(th)

        old_stack = threading.stack_size()
        threading.stack_size(256 * 1024)
        try:
            prods = [threading.Thread(target=errs.wrap(producer, p)) for p in range(producers)]
            r.start()
            try:
                for th in prods:
                    th.start()
            finally:
                _join_all(t for t in prods if t.ident is not None)
                _join_all(live)
        finally:
            threading.stack_size(old_stack)
        errs.raise_()
        notes = f"{self.tuning}; {len(live)} threads started"
        return r.result(self.name, state, producers, notes)


class Optimistic(Contender):
    """Producer threads update per-series records by compare-and-retry on a version.

    Each record is ``[version, count, sum, min, max, mean, m2, first_ts,
    stale, reg, lock]`` where ``reg`` is the ``(ts, index, value, ewma)`` of
    ``last`` (the same per-event work as the other contenders: Welford
    mean/m2, the event-time EWMA moving with ``last``).  A thread reads the version and a
    snapshot, computes the new aggregates and whether its event is newer
    than the snapshot's ``reg``, then compare-and-swaps the aggregates on the
    version (retrying on conflict).  Only after that does it publish ``last``
    with an exchange of ``reg``: the version guards the aggregates but not the
    ordering of ``last`` across threads, so a thread that was preempted
    between its CAS and its publish can overwrite a newer ``last`` with its
    older event.  Each exchange sees exactly what it replaced, so those stale
    overwrites are counted exactly; with one producer there are none.

    CAS and exchange are emulated with a tiny per-record lock held only
    around compare+store (hardware CAS in a C design); new records are
    created with ``dict.setdefault``, which is atomic under the GIL.

    Under the GIL a thread is rarely switched out inside those windows, so
    stale overwrites and retries are rare here (a few per 200k events with
    4 producers); on free-threaded Python or in C on several cores the
    windows are open all the time.  ``preempt``, a test hook (e.g.
    ``lambda: time.sleep(0)``), is called inside both windows to model that.
    """

    name = "optimistic"
    description = (
        "per-series records, compare-and-retry on a version, last published after "
        "the CAS (no global lock)"
    )
    tuning = (
        "no lock on the read/compute path; the emulated CAS holds a per-record "
        "lock only around compare+store; new series via dict.setdefault; "
        "threads take the stream round-robin in chunks of 1024; the kernel's "
        "per-event work (Welford mean/m2, EWMA, first_ts, stale); numpy records "
        "converted to Python lists on the clock"
    )

    def __init__(self, chunk: int = 1024, block: int = 64, preempt=None):
        self.chunk, self.block, self.preempt = chunk, block, preempt

    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        producers = max(1, int(producers))
        r = _Run(workload, self.chunk, self.block)
        pre = self.preempt
        recs: dict = {}
        lat = r.lat
        errs = _Errors()
        stale = [0] * producers
        retries = [0] * producers
        minus = (-(2**63), -1, 0.0, 0.0)
        inf = float("inf")
        never = 2**63 - 1
        hl = HALF_LIFE_NS

        def producer(p):
            nstale = nretry = 0
            setdefault = recs.setdefault
            K, M, T, V = r.K, r.M, r.T, r.V
            for a, b, created in r.blocks(p, producers):
                i = a
                for k, m, t, v in zip(K[a:b], M[a:b], T[a:b], V[a:b]):
                    rec = recs.get((k, m))
                    if rec is None:
                        rec = setdefault((k, m), [0, 0, 0.0, inf, -inf, 0.0, 0.0, never, 0,
                                                  minus, threading.Lock()])
                    while True:
                        ver, n, sm, lo, hi, mean, m2, first, old_stale, reg, _lk = rec
                        n += 1
                        inv = 1.0 / n
                        delta = v - mean
                        mean += v * inv - mean * inv
                        m2 += delta * (v - mean)
                        if v < lo:
                            lo = v
                        if v > hi:
                            hi = v
                        if t < first:
                            first = t
                        newer = t > reg[0] or (t == reg[0] and i > reg[1])
                        if pre is not None:
                            pre()
                        with rec[10]:  # CAS on the version
                            if rec[0] == ver:
                                rec[:9] = (ver + 1, n, sm + v, lo, hi, mean, m2, first,
                                           old_stale if newer else old_stale + 1)
                                break
                        nretry += 1
                    if newer:
                        # The EWMA moves with last, from the snapshot's register.
                        if reg[1] < 0:
                            ewma = v
                        elif t > reg[0]:
                            w = 2.0 ** ((reg[0] - t) / hl)
                            ewma = w * reg[3] + (1.0 - w) * v
                        else:
                            ewma = reg[3]
                        if pre is not None:
                            pre()
                        new = (t, i, v, ewma)
                        with rec[10]:  # atomic exchange of the last register
                            old = rec[9]
                            rec[9] = new
                        if old[:2] > new[:2]:
                            nstale += 1
                    i += 1
                lat.append(_perf() - created)
            stale[p] = nstale
            retries[p] = nretry

        threads = [threading.Thread(target=errs.wrap(producer, p)) for p in range(producers)]
        r.start()
        try:
            for th in threads:
                th.start()
        finally:
            _join_all(t for t in threads if t.ident is not None)
        errs.raise_()
        state = {
            s: [rec[1], rec[2], rec[3], rec[4], rec[9][2], rec[9][0]] for s, rec in recs.items()
        }
        notes = f"{self.tuning}; {sum(retries)} CAS retries"
        return r.result(self.name, state, producers, notes, stale=sum(stale))


CONTENDERS = {
    c.name: c for c in (SingleThread, GlobalLock, GlobalLockPerEvent, QueuePool,
                        ThreadPerRequest, Optimistic)
}

