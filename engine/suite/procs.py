"""Process-based contenders of the suite, and the measuring helpers every
contender of :mod:`engine.suite.aio`, :mod:`engine.suite.procs` and
:mod:`engine.suite.ringflow` shares.

``mp_queue``: the parent process (the producers, one thread each) routes
chunks of events by key to ``W`` worker processes through
``multiprocessing.Queue``\\s (spawn context); each worker folds its shard
into a dict of its own and sends the dict back at the end.

Producers: every contender of these modules gives each producer a disjoint
set of series (:func:`partition`, a hash of key and metric), in stream
order, so that per-series order -- and with it ``last`` on equal ``ts`` and
the order of the floating-point sums -- is the stream's whatever the
interleaving of producers.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time

import numpy as np

try:
    import psutil
except ImportError as exc:  # the [bench] extra: say how to get it
    from . import INSTALL

    raise ImportError(f"engine.suite.procs needs psutil (the [bench] extra): {INSTALL}") from exc

from .base import Contender, RunResult, Workload
from .threads import HALF_LIFE_NS

__all__ = [
    "CONTENDERS", "MpQueue", "Meter", "partition", "fold_rows", "pace_ns", "created_at",
    "chunks", "LINGER_NS",
]

_MIX = np.uint64(0x9E3779B97F4A7C15)


def partition(workload: Workload, producers: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split a workload among ``producers``: each gets the events of its
    own series, in stream order, with their ``created_ns``.

    Returns
    -------
    list of (events, created_ns)
    """
    ev = workload.events
    if producers <= 1:
        return [(ev, workload.created_ns)]
    owner = series_hash(ev) % np.uint64(producers)
    out = []
    for p in range(producers):
        sel = np.flatnonzero(owner == np.uint64(p))
        out.append((np.ascontiguousarray(ev[sel]), workload.created_ns[sel]))
    return out


def series_hash(ev: np.ndarray) -> np.ndarray:
    """A well-mixed uint64 per event of its (key, metric)."""
    with np.errstate(over="ignore"):
        h = (ev["key"] ^ ev["metric"].astype(np.uint64)) * _MIX
    return h >> np.uint64(29)


def pace_ns(start_ns: int, created_ns: int) -> None:
    """Sleep until ``start_ns + created_ns`` (time.time_ns clock); no-op for
    throughput runs (created_ns == 0) or when already late."""
    if created_ns:
        due = start_ns + int(created_ns)
        while (left := due - time.time_ns()) > 0:
            time.sleep(left / 1e9)


#: In a paced run, a batch is cut once its first event has waited this long
#: (the usual linger of batching producers): batches of up to N events when
#: they come fast, small ones when they trickle.
LINGER_NS = 1_000_000


def chunks(created: np.ndarray, size: int, linger_ns: int = LINGER_NS):
    """``(i, j)`` bounds of the batches of a producer's events: ``size``
    events, or in a paced run (``created`` non-zero, non-decreasing) fewer
    when the batch would span more than ``linger_ns`` of due times."""
    n = len(created)
    paced = n > 0 and bool(created[-1])
    i = 0
    while i < n:
        j = min(i + size, n)
        if paced and created[j - 1] - created[i] > linger_ns:
            cut = int(np.searchsorted(created[i:j], created[i] + linger_ns, "right"))
            j = i + max(1, cut)
        yield i, j
        i = j


def created_at(start_ns: int, created_ns: int) -> int:
    """When an event was created, on the time.time_ns clock: its due time
    ``start_ns + created_ns`` in a paced run (it exists then, whether or not
    its producer got to run), else now (throughput runs)."""
    return start_ns + int(created_ns) if created_ns else time.time_ns()


def fold_rows(state: dict, rows, half_life: float = HALF_LIFE_NS) -> None:
    """Fold ``EVENT_DTYPE`` rows (as ``tolist()`` tuples: key, ts, metric,
    flags, value), in stream order, into ``{(key, metric): row}``, a row being
    :data:`engine.suite.threads.ROW_FIELDS` (the six STATE_FIELDS first).

    The work of ringflow's kernel per event, as every Python contender does
    it: count, sum, min, max, Welford mean/m2, an EWMA decaying in event
    time, last, last_ts, first_ts, stale.  An older event never replaces
    ``last`` (it is counted in ``stale``); ties: the later one does."""
    get = state.get
    for key, ts, metric, _flags, v in rows:
        sk = (key, metric)
        s = get(sk)
        if s is None:
            state[sk] = [1, v, v, v, v, ts, 0, v, 0.0, v, ts, 0]
            continue
        n, sm, mn, mx, last, last_ts, li, mean, m2, ewma, first_ts, stale = s
        n += 1
        inv = 1.0 / n
        delta = v - mean
        mean += v * inv - mean * inv
        m2 += delta * (v - mean)
        if ts >= last_ts:
            if ts > last_ts:
                a = 2.0 ** ((last_ts - ts) / half_life)
                ewma = a * ewma + (1.0 - a) * v
            last = v
            last_ts = ts
        else:
            stale += 1
        s[:] = (n, sm + v, v if v < mn else mn, v if v > mx else mx, last, last_ts, li, mean,
                m2, ewma, ts if ts < first_ts else first_ts, stale)


def as_state(state: dict) -> dict:
    """``{(key, metric): tuple}`` of the six STATE_FIELDS (the first six of
    a row), with plain ints and floats."""
    return {(int(k), int(m)): (int(s[0]), float(s[1]), float(s[2]), float(s[3]),
                               float(s[4]), int(s[5]))
            for (k, m), s in state.items()}


def _cpu_ns(pid: int, fallback: float) -> float:
    """CPU seconds of a process from /proc/PID/schedstat (ns), or
    ``fallback``."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return fallback
    return total / 1e9


class Meter:
    """Peak RSS (sum over the processes, sampled every ``interval`` s) and
    CPU seconds (user + system since :meth:`start`) of a set of processes.

    ``pids`` is a callable returning the pids to watch (it may grow); a
    process that exits keeps the CPU of its last sample.  Other processes'
    CPU comes in clock ticks (10 ms) from psutil; this process's from its
    own CPU clock.
    """

    def __init__(self, pids, interval: float = 0.005) -> None:
        self._pids = pids
        self._me = os.getpid()
        self._interval = interval
        self._procs: dict[int, psutil.Process] = {}
        self._base: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="suite-meter", daemon=True)

    def _sample(self) -> None:
        rss = 0
        for pid in self._pids():
            p = self._procs.get(pid)
            try:
                if p is None:
                    p = self._procs[pid] = psutil.Process(pid)
                with p.oneshot():
                    t = p.cpu_times()
                    rss += p.memory_info().rss
            except psutil.Error:
                continue
            # psutil counts clock ticks (10 ms): too coarse for short runs.
            # This process reads its own CPU clock, others their schedstat
            # (ns on CPU, all threads), when the kernel has it.
            cpu = time.process_time() if pid == self._me else _cpu_ns(pid, t.user + t.system)
            self._base.setdefault(pid, cpu)
            self._last[pid] = cpu
        self.peak_rss = max(self.peak_rss, rss)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def start(self) -> Meter:
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> tuple[int, float]:
        """Stop sampling; returns ``(peak_rss_bytes, cpu_seconds)``."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            self._sample()
        return self.peak_rss, self.cpu_of()

    def cpu_of(self, pids=None) -> float:
        pids = self._last if pids is None else pids
        return float(sum(self._last.get(p, 0.0) - self._base.get(p, 0.0) for p in pids))


# --- mp_queue -----------------------------------------------------------------

#: Events per queue item: one pickle, one pipe write, one lock round per chunk.
CHUNK = 1024
#: Chunks each worker's queue holds before a producer waits (backpressure).
QUEUE_CHUNKS = 64


def _mp_worker(inq, outq, producers: int) -> None:
    """Fold chunks from ``inq`` until every producer sent its ``None``; then
    send back (state, latencies, cpu seconds, finish time)."""
    cpu0 = time.process_time()
    outq.put(("ready", os.getpid()))
    state: dict = {}
    lat: list[int] = []
    done = 0
    finish = time.time_ns()
    while done < producers:
        item = inq.get()
        if item is None:
            done += 1
            continue
        created, chunk = item
        fold_rows(state, chunk.tolist())
        finish = time.time_ns()
        lat.append(finish - created)
    outq.put(("done", os.getpid(), as_state(state), np.asarray(lat, np.int64),
              time.process_time() - cpu0, finish))


class MpQueue(Contender):
    name = "mp_queue"
    description = ("multiprocessing pipeline: producer threads route chunks by key through "
                   "one multiprocessing.Queue per worker to W worker processes (spawn), each "
                   "folding its shard into a dict")
    tuning = (f"chunks of {CHUNK} events (a numpy slice: one pickle and one pipe write per "
              f"chunk, not per event; an item per event costs a pickle + pipe write + lock "
              f"each, ~10-20 us, i.e. well under 100k events/s), bounded queues of "
              f"{QUEUE_CHUNKS} chunks for backpressure, workers started before the clock; "
              f"each worker does the kernel's per-event work (Welford mean/m2, event-time EWMA, "
              f"first_ts, stale besides the six checked fields) and converts its numpy "
              f"chunks to Python tuples on the clock (ndarray.tolist() per chunk)")

    def __init__(self, workers: int = 2, chunk: int = CHUNK) -> None:
        self.workers = workers
        self.chunk = chunk

    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        ctx = mp.get_context("spawn")
        W = self.workers
        inqs = [ctx.Queue(QUEUE_CHUNKS) for _ in range(W)]
        outq = ctx.Queue()
        procs = [ctx.Process(target=_mp_worker, args=(inqs[w], outq, producers),
                             name=f"suite-mp-{w}", daemon=True) for w in range(W)]
        parts = partition(workload, producers)
        meter = None
        try:
            for p in procs:
                p.start()
            for _ in range(W):
                msg = _get(outq, procs, 60)
                assert msg[0] == "ready"
            me = os.getpid()
            pids = [me] + [p.pid for p in procs]
            meter = Meter(lambda: pids).start()
            errors: list[BaseException] = []
            start = time.time_ns()

            def produce(events: np.ndarray, created: np.ndarray) -> None:
                try:
                    shard = (events["key"] % np.uint64(W)).astype(np.intp)
                    subs = [np.flatnonzero(shard == w) for w in range(W)]
                    # Batches per worker, sent in the order their last event
                    # is due (round-robin in a throughput run).
                    plan = [(int(created[idx[j - 1]]), k, w, idx[i:j])
                            for w, idx in enumerate(subs)
                            for k, (i, j) in enumerate(chunks(created[idx], self.chunk))]
                    plan.sort(key=lambda b: (b[0], b[1], b[2]))
                    for due, _k, w, sel in plan:
                        pace_ns(start, due)
                        inqs[w].put((created_at(start, created[sel[0]]), events[sel]))
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)
                finally:
                    for q in inqs:
                        q.put(None)

            threads = [threading.Thread(target=produce, args=part, name=f"suite-mp-prod-{i}")
                       for i, part in enumerate(parts)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            state: dict = {}
            lats = []
            worker_cpu = 0.0
            finish = start
            for _ in range(W):
                msg = _get(outq, procs, 120)
                _, _pid, st, lat, cpu, fin = msg
                state.update(st)
                lats.append(lat)
                worker_cpu += cpu
                finish = max(finish, fin)
            peak, _ = meter.stop()
            cpu = meter.cpu_of([me]) + worker_cpu
            for p in procs:
                p.join(10)
            return RunResult(
                name=self.name, seconds=(finish - start) / 1e9, state=state,
                latencies_ns=np.concatenate(lats), stale_overwrites=0,
                peak_rss_bytes=int(peak), cpu_seconds=cpu, producers=producers,
                notes=f"{W} workers, {self.chunk} events per chunk; latency: the first event "
                      "of each chunk, created (time.time_ns when the producer takes the chunk, "
                      "or its due time in a paced run) -> its chunk folded in the worker",
            )
        finally:
            if meter is not None:
                meter.stop()
            for p in procs:
                if p.pid is None:  # never started
                    continue
                if p.is_alive():
                    p.kill()
                p.join(5)
            for q in [*inqs, outq]:
                q.cancel_join_thread()
                q.close()


def _get(q, procs, timeout: float):
    """``q.get()`` that fails instead of hanging when a worker died."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                p = dead[0]
                raise RuntimeError(f"worker {p.name} died (exit {p.exitcode})") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"no message from the workers within {timeout}s") from None


CONTENDERS = {MpQueue.name: MpQueue()}
