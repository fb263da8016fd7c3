"""Thread-based contenders: the designs ringflow is compared against.

Every contender applies the workload to a dict of per-series state with
Python threads, and is written as well as its design allows (``tuning`` says
how).  Common to all of them:

* the numpy records are turned into Python lists before the clock starts
  (every Python design needs Python values; the conversion, about 20 ms for
  200k events, is left out of ``seconds`` for all of them alike);
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
    "SingleThread",
    "GlobalLock",
    "QueuePool",
    "ThreadPerRequest",
    "Optimistic",
    "CONTENDERS",
]

_perf = time.perf_counter_ns


def _peak_rss() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) if sys.platform == "darwin" else int(r) * 1024


class _Run:
    """The per-run material shared by the threads of one contender."""

    def __init__(self, workload: Workload, chunk: int, block: int):
        ev = workload.events
        self.K = ev["key"].tolist()
        self.M = ev["metric"].tolist()
        self.T = ev["ts"].tolist()
        self.V = ev["value"].tolist()
        self.n = len(self.K)
        self.created = workload.created_ns
        self.paced = bool(self.n and workload.created_ns.any())
        self.chunk = chunk
        self.block = block
        self.lat: list[int] = []  # list.append is atomic under the GIL
        self.t0 = 0
        self.cpu0 = 0.0

    def start(self) -> None:
        self.cpu0 = time.process_time()
        self.t0 = _perf()

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


def _apply_ordered(state, K, M, T, V, a, b) -> None:
    """Apply events a..b-1; ``last`` goes to the largest (ts, index).

    A row is ``[count, sum, min, max, last, last_ts, last_index]``."""
    for i, k, m, t, v in zip(range(a, b), K[a:b], M[a:b], T[a:b], V[a:b]):
        s = state.get((k, m))
        if s is None:
            state[(k, m)] = [1, v, v, v, v, t, i]
        else:
            s[0] += 1
            s[1] += v
            if v < s[2]:
                s[2] = v
            elif v > s[3]:
                s[3] = v
            if t > s[5] or (t == s[5] and i > s[6]):
                s[4] = v
                s[5] = t
                s[6] = i


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
    description = "one thread updating a dict of per-series lists (the baseline)"
    tuning = (
        "update inlined in a zip loop over Python lists, rows are mutable lists "
        "(no allocation per event after a series' first), min/max with one "
        "comparison chain; in stream order so last only needs ts >= last_ts"
    )

    def __init__(self, chunk: int = 4096, block: int = 64):
        self.chunk, self.block = chunk, block

    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        r = _Run(workload, self.chunk, self.block)
        K, M, T, V = r.K, r.M, r.T, r.V
        state: dict = {}
        lat = r.lat
        r.start()
        for a, b, created in r.blocks():
            for k, m, t, v in zip(K[a:b], M[a:b], T[a:b], V[a:b]):
                s = state.get((k, m))
                if s is None:
                    state[(k, m)] = [1, v, v, v, v, t]
                else:
                    s[0] += 1
                    s[1] += v
                    if v < s[2]:
                        s[2] = v
                    elif v > s[3]:
                        s[3] = v
                    if t >= s[5]:
                        s[4] = v
                        s[5] = t
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
    )

    def __init__(self, chunk: int = 1024, block: int = 64):
        self.chunk, self.block = chunk, block

    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        producers = max(1, int(producers))
        r = _Run(workload, self.chunk, self.block)
        K, M, T, V = r.K, r.M, r.T, r.V
        state: dict = {}
        lock = threading.Lock()
        lat = r.lat
        errs = _Errors()

        def producer(p):
            for a, b, created in r.blocks(p, producers):
                with lock:
                    _apply_ordered(state, K, M, T, V, a, b)
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


class QueuePool(Contender):
    """Producers feed one queue.Queue; a pool of workers applies under one mutex."""

    name = "queue_pool"
    description = "producers -> one queue.Queue -> pool of worker threads, one mutex on the dict"
    tuning = (
        "queue items are chunks of 256 events (not single events); a short "
        "bounded queue (8 items) for back-pressure: 64 items gave 15x the p50 "
        "latency and less throughput; 4 workers taking the mutex per block of "
        "64 events (1 worker is as fast under the GIL, but then it is no pool)"
    )

    def __init__(self, workers: int = 4, chunk: int = 256, block: int = 64, maxsize: int = 8):
        self.workers, self.chunk, self.block, self.maxsize = workers, chunk, block, maxsize

    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        producers = max(1, int(producers))
        r = _Run(workload, self.chunk, self.block)
        K, M, T, V = r.K, r.M, r.T, r.V
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
                            _apply_ordered(state, K, M, T, V, a, b)
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
    )

    def __init__(self, request: int = 16, max_threads: int = 16, chunk: int = 1024):
        self.request, self.max_threads, self.chunk = request, max_threads, chunk

    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        producers = max(1, int(producers))
        r = _Run(workload, self.chunk, self.request)
        K, M, T, V = r.K, r.M, r.T, r.V
        state: dict = {}
        lock = threading.Lock()
        lat = r.lat
        sem = threading.BoundedSemaphore(self.max_threads)
        errs = _Errors()
        live: list = []  # request threads, joined at the end

        def request(a, b, created):
            try:
                with lock:
                    _apply_ordered(state, K, M, T, V, a, b)
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

    Each record is ``[version, count, sum, min, max, reg]`` where ``reg`` is
    the ``(ts, index, value)`` of ``last``.  A thread reads the version and a
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
        "threads take the stream round-robin in chunks of 1024"
    )

    def __init__(self, chunk: int = 1024, block: int = 64, preempt=None):
        self.chunk, self.block, self.preempt = chunk, block, preempt

    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        producers = max(1, int(producers))
        r = _Run(workload, self.chunk, self.block)
        K, M, T, V = r.K, r.M, r.T, r.V
        pre = self.preempt
        recs: dict = {}
        lat = r.lat
        errs = _Errors()
        stale = [0] * producers
        retries = [0] * producers
        minus = (-(2**63), -1, 0.0)
        inf = float("inf")

        def producer(p):
            nstale = nretry = 0
            setdefault = recs.setdefault
            for a, b, created in r.blocks(p, producers):
                i = a
                for k, m, t, v in zip(K[a:b], M[a:b], T[a:b], V[a:b]):
                    rec = recs.get((k, m))
                    if rec is None:
                        rec = setdefault((k, m), [0, 0, 0.0, inf, -inf, minus, threading.Lock()])
                    while True:
                        ver = rec[0]
                        n1 = rec[1] + 1
                        s1 = rec[2] + v
                        lo = rec[3] if rec[3] <= v else v
                        hi = rec[4] if rec[4] >= v else v
                        reg = rec[5]
                        newer = t > reg[0] or (t == reg[0] and i > reg[1])
                        if pre is not None:
                            pre()
                        with rec[6]:  # CAS on the version
                            if rec[0] == ver:
                                rec[1] = n1
                                rec[2] = s1
                                rec[3] = lo
                                rec[4] = hi
                                rec[0] = ver + 1
                                break
                        nretry += 1
                    if newer:
                        if pre is not None:
                            pre()
                        new = (t, i, v)
                        with rec[6]:  # atomic exchange of the last register
                            old = rec[5]
                            rec[5] = new
                        if old > new:
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
            s: [rec[1], rec[2], rec[3], rec[4], rec[5][2], rec[5][0]] for s, rec in recs.items()
        }
        notes = f"{self.tuning}; {sum(retries)} CAS retries"
        return r.result(self.name, state, producers, notes, stale=sum(stale))


CONTENDERS = {
    c.name: c for c in (SingleThread, GlobalLock, QueuePool, ThreadPerRequest, Optimistic)
}

