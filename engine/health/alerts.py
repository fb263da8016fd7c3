"""The engine's alert thread and alert log: drains every worker's alert
ring, numbers each status change, keeps the last ones, and hands them to
iterators, callbacks and the gateway.

Workers write alert records into their own SPSC rings (shared memory); a
worker whose ring is full waits for room, so no status change is ever
dropped between a kernel and this thread.  One thread here is the single
consumer of all of them.  It copies each batch into the alert log (NumPy
arrays, no Python object per alert) and gives every alert a sequence
number, ``seq``, one greater than the one before, and a per-topic number,
``topic_seq`` (the topic is the new status, or ENGINE), so that a reader
filtering on topics can see a gap too.  The log holds the last
``alert_log`` alerts; a reader that fell further behind is told how many it
missed.  Readers (:class:`AlertStream`, the gateway's publisher, the
``alerts`` query op) each keep their own place in the log: a slow reader
slows nobody.  Callbacks run on this thread, and get one object per alert.
"""

from __future__ import annotations

import collections
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

import numpy as np

from ..core.records import ALERT_DTYPE, finite_or_none
from ..errors import ForkedProcess
from .rules import STATUS_NAMES, stat_name

__all__ = ["Alert", "AlertHub", "AlertLog", "AlertStream", "EngineAlert",
           "alerts_from_records", "ENGINE_TOPIC", "TOPICS"]

#: The alert endpoint's topic of :class:`EngineAlert` (series alerts are
#: published under their new status).
ENGINE_TOPIC = "ENGINE"
#: Every topic of the alert log, by topic number (statuses by status code).
TOPICS = (*STATUS_NAMES, ENGINE_TOPIC)
_ENGINE_INDEX = len(STATUS_NAMES)
# The log's worker column for an engine alert.
_ENGINE_WORKER = -1

log = logging.getLogger("ringflow.alerts")

# Records read from one ring per pass: bounded, so one busy worker cannot
# starve the others' alerts, and large, so a burst moves in few passes.
_READ_BATCH = 16384
# Alerts a stream takes from the log per visit (under the hub's lock).
_STREAM_BATCH = 4096
_STAT_TTL = "ttl"


@dataclass(frozen=True)
class Alert:
    """A status change of one series.

    Attributes
    ----------
    entity, metric : str or None
        Names, where the engine knows them.
    key, metric_id : int
        The ids.
    old, new : str
        Status names.
    stat : str
        The statistic that decided (``"ttl"`` for silence).
    value : float
        Its value; for a change to STALE (``stat == "ttl"``) the TTL in
        seconds.
    ts : int
        Event time of the deciding event (ns since the epoch); for STALE,
        when the silence passed the TTL.
    worker : int
        The worker that owns the series.
    seq : int
        The alert's number in the engine's alert log (1, 2, ...: one more
        than the alert before it, across workers and restarts).
    topic_seq : int
        Its number among the alerts of its topic (its new status).
    """

    entity: str | None
    metric: str | None
    key: int
    metric_id: int
    old: str
    new: str
    stat: str
    value: float
    ts: int
    worker: int
    seq: int = 0
    topic_seq: int = 0

    @property
    def silent_since(self) -> int | None:
        """For a change to STALE: event time (ns) of the series' last event."""
        if self.stat != _STAT_TTL:
            return None
        return self.ts - int(round(self.value * 1e9))

    def to_dict(self) -> dict:
        """JSON-ready form (as published on the alert endpoint)."""
        out = {"entity": self.entity, "metric": self.metric, "entity_id": self.key,
               "metric_id": self.metric_id, "old": self.old, "new": self.new,
               "stat": self.stat, "value": finite_or_none(self.value), "ts": self.ts,
               "worker": self.worker, "seq": self.seq, "topic_seq": self.topic_seq}
        if self.stat == _STAT_TTL:
            out["silent_since"] = self.silent_since
        return out

    def __str__(self) -> str:
        who = self.entity if self.entity is not None else f"{self.key:#x}"
        what = self.metric if self.metric is not None else f"{self.metric_id:#x}"
        if self.stat == _STAT_TTL:
            silent = (time.time_ns() - self.silent_since) / 1e9
            why = f"silent {silent:.1f} s, ttl {self.value:g} s"
        else:
            why = f"{self.stat} = {self.value:g}"
        return f"{who} {what}: {self.old} -> {self.new} ({why})"

    @property
    def topic(self) -> str:
        """Its topic on the alert endpoint: the new status."""
        return self.new


@dataclass(frozen=True)
class EngineAlert:
    """A change of one shard's state: its worker died, hung, is being
    replaced, is back, or was given up on (docs/faults.md).

    While a shard is not ``ok`` none of its series reads as OK; this alert
    says why and when it ends.

    Attributes
    ----------
    worker : int
        The shard's worker.
    old, new : str
        Shard states (``engine.core.layout.SHARD_STATES``: ok, down,
        recovering, hung, degraded).
    cause : str
        What happened, e.g. ``"worker 1 (pid 4242) was killed by signal 9"``.
    pid : int or None
        The worker process the change is about.
    restarts : int
        Restarts of this worker so far.
    ts : int
        Wall time of the change, ns since the epoch.
    seq, topic_seq : int
        Its numbers in the alert log (as :class:`Alert`'s; its topic is
        ENGINE).
    """

    worker: int
    old: str
    new: str
    cause: str
    pid: int | None
    restarts: int
    ts: int
    seq: int = 0
    topic_seq: int = 0

    @property
    def topic(self) -> str:
        """Its topic on the alert endpoint: :data:`ENGINE_TOPIC`."""
        return ENGINE_TOPIC

    def to_dict(self) -> dict:
        """JSON-ready form (as published on the alert endpoint)."""
        return {"topic": ENGINE_TOPIC, "worker": self.worker, "old": self.old,
                "new": self.new, "cause": self.cause, "pid": self.pid,
                "restarts": self.restarts, "ts": self.ts, "seq": self.seq,
                "topic_seq": self.topic_seq}

    @classmethod
    def from_dict(cls, d: dict) -> EngineAlert:
        """The alert :meth:`to_dict` made."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def __str__(self) -> str:
        return f"ENGINE worker {self.worker}: {self.old} -> {self.new} ({self.cause})"


def alerts_from_records(records: np.ndarray, worker, names: dict | None = None,
                        views=(1, 5, 15), seq: int = 0,
                        topic_seqs: np.ndarray | None = None) -> list[Alert]:
    """Alert objects for ALERT_DTYPE records (one Python object per status
    change: changes are rare, the hot path never builds them).

    ``worker`` is one worker for all, or an array of one per record;
    ``seq`` the first record's number in the log (0: not in a log)."""
    if records.dtype != ALERT_DTYPE:
        raise ValueError("records must be ALERT_DTYPE")
    names = names or {}
    entities = names.get("entities", {})
    metrics = names.get("metrics", {})
    n = len(records)
    workers = [worker] * n if np.isscalar(worker) else np.asarray(worker).tolist()
    tseqs = [0] * n if topic_seqs is None else topic_seqs.tolist()
    out = []
    for i, (key, ts, metric, old, new, stat, _rule, value) in enumerate(records.tolist()):
        out.append(Alert(entities.get(key), metrics.get(metric), key, metric,
                         STATUS_NAMES[old], STATUS_NAMES[new], stat_name(stat, views),
                         value, ts, workers[i], seq + i if seq else 0, tseqs[i]))
    return out


class AlertLog:
    """The last ``capacity`` alerts, numbered; one writer (the alert
    thread), any number of readers, all under ``lock``.

    Parameters
    ----------
    capacity : int
        Alerts kept.
    names : dict
        The engine's name registry, read when alerts are named.
    views : tuple
        The engine's view horizons, to name view statistics.
    file : engine.journal.alertlog.AlertLogFile or None
        Where the log is also written (with a data dir); its frames are
        read back first.
    """

    def __init__(self, capacity: int, names: dict | None = None, views=(1, 5, 15),
                 file=None) -> None:
        self.capacity = int(capacity)
        self.lock = threading.Condition(threading.Lock())
        self._names = names if names is not None else {}
        self._views = views
        self._rec = np.zeros(self.capacity, ALERT_DTYPE)
        self._worker = np.zeros(self.capacity, np.int16)
        self._tseq = np.zeros(self.capacity, np.uint64)
        self._engine: dict[int, EngineAlert] = {}
        #: The next alert's number.
        self.head = 1
        self._topic_heads = np.zeros(len(TOPICS), np.uint64)
        self._file = None
        self.loaded = 0
        # The oldest number whose slot holds a real alert: above
        # ``head - capacity``, after a gap in what a start read back.
        self._low = 1
        #: The log's identity: alert numbers mean something only within
        #: one log.  Random per engine without a data dir (numbers restart
        #: at 1), kept in the data dir with one; a reader that sees it
        #: change starts over from 0 (PROTOCOL.md, Alerts).
        self.log_id = secrets.token_hex(8) if file is None else file.log_id()
        if file is not None:
            for frame in file.frames():
                if frame[0] == "A":
                    _, seq, worker, records, tseqs = frame
                    self._put(seq, records, worker, tseqs)
                else:
                    _, seq, tseq, d = frame
                    self._put_engine(EngineAlert.from_dict({**d, "seq": seq,
                                                            "topic_seq": tseq}))
                self.loaded += 1
            file.open()
            self._file = file

    @property
    def first(self) -> int:
        """The oldest alert's number still kept."""
        return max(1, self._low, self.head - self.capacity)

    def topic_heads(self) -> dict:
        """The last ``topic_seq`` given, per topic."""
        with self.lock:
            return dict(zip(TOPICS, self._topic_heads.tolist()))

    # --- the writer -----------------------------------------------------

    def append(self, records: np.ndarray, worker: int) -> tuple[int, np.ndarray]:
        """Number and keep one worker's alerts; returns the first one's
        number and their per-topic numbers.

        The file (if any) is written first: a reader never sees an alert
        the log on disk lacks, short of a failed write (counted)."""
        n = len(records)
        tseqs = np.empty(n, np.uint64)
        new = records["new"]
        for t in range(len(STATUS_NAMES)):
            hit = new == t
            k = int(np.count_nonzero(hit))
            if k:
                tseqs[hit] = self._topic_heads[t] + np.arange(1, k + 1, dtype=np.uint64)
        # Only this thread changes head: read without the lock.
        seq = self.head
        if self._file is not None:
            self._file.append_batch(seq, worker, records, tseqs)
        with self.lock:
            self._put(seq, records, worker, tseqs)
            self.lock.notify_all()
        return seq, tseqs

    def append_engine(self, alert: EngineAlert) -> EngineAlert:
        """Number and keep one engine alert; returns it numbered."""
        alert = EngineAlert(**{**alert.__dict__, "seq": self.head,
                               "topic_seq": int(self._topic_heads[_ENGINE_INDEX]) + 1})
        if self._file is not None:
            self._file.append_engine(alert.seq, alert.topic_seq, alert.to_dict())
        with self.lock:
            self._put_engine(alert)
            self.lock.notify_all()
        return alert

    def _put(self, seq: int, records: np.ndarray, worker: int, tseqs: np.ndarray) -> None:
        # A batch from the file may overlap what is already kept, or leave
        # a gap (a torn frame was cut, an older file rotated away): numbers
        # always come from the batch, and nothing below a gap is served.
        if seq > self.head:
            self._low = seq
        n = len(records)
        if n > self.capacity:
            seq, records, tseqs = seq + n - self.capacity, records[-self.capacity:], \
                tseqs[-self.capacity:]
            n = self.capacity
        at = seq % self.capacity
        first = min(n, self.capacity - at)
        self._rec[at:at + first] = records[:first]
        self._rec[:n - first] = records[first:]
        self._worker[at:at + first] = worker
        self._worker[:n - first] = worker
        self._tseq[at:at + first] = tseqs[:first]
        self._tseq[:n - first] = tseqs[first:]
        new = records["new"]
        for t in range(len(STATUS_NAMES)):
            hit = tseqs[new == t]
            if len(hit):
                self._topic_heads[t] = max(int(self._topic_heads[t]), int(hit.max()))
        self.head = max(self.head, seq + n)
        if self._engine:
            self._forget_engine()

    def _put_engine(self, alert: EngineAlert) -> None:
        if alert.seq > self.head:
            self._low = alert.seq
        at = alert.seq % self.capacity
        self._rec[at] = np.zeros((), ALERT_DTYPE)
        self._worker[at] = _ENGINE_WORKER
        self._tseq[at] = alert.topic_seq
        self._engine[alert.seq] = alert
        self._topic_heads[_ENGINE_INDEX] = max(int(self._topic_heads[_ENGINE_INDEX]),
                                               alert.topic_seq)
        self.head = max(self.head, alert.seq + 1)
        self._forget_engine()

    def _forget_engine(self) -> None:
        first = self.first
        for seq in [s for s in self._engine if s < first]:
            del self._engine[seq]

    def close(self) -> None:
        """Sync and close the file, if any."""
        if self._file is not None:
            self._file.close()

    @property
    def file_errors(self) -> int:
        """Failed writes of the log's file (the alerts themselves went out)."""
        return 0 if self._file is None else self._file.errors

    # --- readers --------------------------------------------------------

    def read(self, since: int, limit: int, topics=None) -> tuple[int, list]:
        """Alerts numbered above ``since``, oldest first, at most ``limit``.

        Parameters
        ----------
        since : int
            The last number the reader has (0: from the oldest kept).
        limit : int
            Most alerts returned.
        topics : iterable of str or None
            Only these topics (statuses, ENGINE); ``None``: all.

        Returns
        -------
        (int, list)
            The next number to ask from (``since`` of the next call), and
            the :class:`Alert` / :class:`EngineAlert` objects.  Alerts above
            ``since`` that the log no longer holds are skipped: the caller
            sees the gap in their numbers (see :meth:`missed`).
        """
        wanted = _wanted(topics)
        with self.lock:
            nxt, raw = self._slice(since, limit, wanted)
        return nxt, self._objects(*raw) if raw else []

    def _slice(self, since: int, limit: int, wanted) -> tuple[int, tuple | None]:
        # Under the lock: copies of what a read returns, made into objects
        # after the lock is let go (the alert thread waits on it).
        start = max(int(since) + 1, self.first)
        stop = self.head
        if stop <= start:
            return max(int(since), stop - 1), None
        idx = np.arange(start, stop, dtype=np.int64) % self.capacity
        worker = self._worker[idx]
        if wanted is not None:
            topic = np.where(worker == _ENGINE_WORKER, _ENGINE_INDEX, self._rec["new"][idx])
            keep = np.flatnonzero(wanted[topic])
        else:
            keep = np.arange(len(idx))
        if len(keep) > limit:
            keep = keep[:limit]
            stop = start + int(keep[-1]) + 1
        pos = idx[keep]
        seqs = start + keep
        records = self._rec[pos].copy()
        workers = worker[keep].copy()
        tseqs = self._tseq[pos].copy()
        engine_alerts = {int(q): self._engine[int(q)] for q in seqs[workers == _ENGINE_WORKER]
                         if int(q) in self._engine}
        return stop - 1, (seqs, records, workers, tseqs, engine_alerts)

    def _objects(self, seqs, records, workers, tseqs, engine_alerts) -> list:
        out = alerts_from_records(records, workers, self._names, self._views, 0, tseqs)
        for i, s in enumerate(seqs.tolist()):
            if workers[i] == _ENGINE_WORKER:
                out[i] = engine_alerts.get(s)
            else:
                out[i] = _renumber(out[i], s)
        return [a for a in out if a is not None]

    def missed(self, since: int) -> int:
        """Alerts numbered above ``since`` the log no longer holds."""
        return max(0, self.first - int(since) - 1)

    def query(self, since: int, limit: int, topics=None) -> dict:
        """One consistent look at the log (all under one hold of the lock):
        what :meth:`engine.Engine.alerts_since` and the ``alerts`` op return.

        Returns
        -------
        dict
            ``alerts`` (objects), ``next``, ``missed``, ``head`` (the newest
            number), ``topic_heads`` and ``log`` (:attr:`log_id`).
        """
        wanted = _wanted(topics)
        with self.lock:
            missed = self.missed(since)
            heads = dict(zip(TOPICS, self._topic_heads.tolist()))
            head = self.head - 1
            nxt, raw = self._slice(since, limit, wanted) if limit else (since, None)
        return {"alerts": self._objects(*raw) if raw else [], "next": nxt, "missed": missed,
                "head": head, "topic_heads": heads, "log": self.log_id}


def _wanted(topics) -> np.ndarray | None:
    if topics is None:
        return None
    wanted = np.zeros(len(TOPICS) + 1, bool)
    for t in topics:
        wanted[TOPICS.index(t)] = True
    return wanted


def _renumber(alert: Alert, seq: int) -> Alert:
    object.__setattr__(alert, "seq", seq)
    return alert


class AlertStream:
    """An iterator over the status changes that happen after it was opened
    (or after a given alert number).

    Returned by :meth:`engine.Engine.alerts`.  Iteration blocks until the
    next alert; with a ``timeout`` it ends when none came for that long.
    It also ends when the engine closes.  Use it as a context manager, or
    call :meth:`close`, to stop receiving.

    The stream keeps its own place in the engine's alert log: it never
    holds the engine up, and nothing between its place and the newest alert
    is lost while the log still holds it (``alert_log`` alerts).  A stream
    further behind than that skips to the oldest alert kept and counts what
    it skipped in :attr:`missed`.

    The alert thread that fills the log lives in the engine's process only:
    in a forked child, iterating or :meth:`get` raises
    :class:`engine.errors.ForkedProcess` instead of waiting for alerts
    that can never come, and :meth:`close` does nothing.

    Attributes
    ----------
    missed : int
        Alerts this stream fell too far behind to get.
    position : int
        The number of the last alert it delivered (or skipped).
    """

    def __init__(self, hub: AlertHub, timeout: float | None, since: int | None = None) -> None:
        self._hub = hub
        self._log = hub.log
        self._timeout = timeout
        self.missed = 0
        self.position = self._log.head - 1 if since is None else int(since)
        self._pending: collections.deque = collections.deque()
        self._closed = False
        self._pid = os.getpid()
        hub._subscribe(self)

    @property
    def dropped(self) -> int:
        """Old name of :attr:`missed`."""
        return self.missed

    def __iter__(self) -> Iterator[Alert]:
        return self

    def _check_process(self) -> None:
        pid = os.getpid()
        if pid != self._pid:
            raise ForkedProcess("AlertStream", self._pid, pid)

    def _fill(self, timeout: float | None) -> bool:
        log_ = self._log
        deadline = None if timeout is None else time.monotonic() + timeout
        with log_.lock:
            while log_.head - 1 <= self.position:
                if self._closed or self._hub._ended:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                log_.lock.wait(remaining)
        got = log_.query(self.position, _STREAM_BATCH)
        self.missed += got["missed"]
        self.position = got["next"]
        self._pending.extend(got["alerts"])
        return True

    def __next__(self) -> Alert:
        item = self.get(self._timeout)
        if item is None:
            raise StopIteration
        return item

    def get(self, timeout: float | None = None) -> Alert | EngineAlert | None:
        """The next alert, or ``None`` when none came within ``timeout``
        seconds or the engine closed.

        Raises
        ------
        engine.errors.ForkedProcess
            Called in a process forked from the engine's.
        """
        self._check_process()
        while not self._pending:
            if not self._fill(timeout):
                return None
        return self._pending.popleft()

    def close(self) -> None:
        """Stop receiving alerts (in a forked child: nothing to stop)."""
        # The log's lock may have been held by the alert thread at the
        # fork, and that thread does not exist here to release it.
        if os.getpid() == self._pid:
            self._closed = True
            self._hub._unsubscribe(self)

    def __enter__(self) -> AlertStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AlertHub:
    """Single consumer of the workers' alert rings, writer of the alert log.

    Parameters
    ----------
    ringset : engine._ring.RingSet
        The consumer end of every worker's alert ring, in worker order.
    workers : int
        How many rings it has.
    wake : callable
        Rings the doorbell the alert thread sleeps on.
    names : dict
        The engine's name registry (``{"entities": {...}, "metrics": {...}}``),
        read when an alert is named.
    views : tuple
        The engine's view horizons, to name view statistics.
    capacity : int
        Alerts the log keeps.
    file : engine.journal.alertlog.AlertLogFile or None
        Where the log is also kept (with a data dir).
    """

    def __init__(self, ringset, workers: int, wake: Callable[[], None], names: dict,
                 views, capacity: int = 1 << 18, file=None) -> None:
        self._rings = ringset
        self._wake = wake
        self._workers = workers
        self.log = AlertLog(capacity, names, views, file)
        self._buffers = [np.empty(_READ_BATCH, ALERT_DTYPE) for _ in range(workers)]
        # Guards the subscriber lists; taken once per drained batch, never
        # by a worker or an ingest thread.
        self._lock = threading.Lock()
        self._streams: list[AlertStream] = []
        self._callbacks: list[Callable] = []
        self._stop = threading.Event()
        self._ended = False
        # Engine alerts posted by the supervisor, numbered on this thread
        # with the rest (deque appends and pops are atomic: no lock).
        self._posted: collections.deque = collections.deque()
        self.delivered = 0
        self.callback_errors = 0
        #: Failures of the alert thread's drain (logged; the thread goes on).
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="ringflow-alerts", daemon=True)
        self._thread.start()

    # --- subscribers ----------------------------------------------------

    def _subscribe(self, stream: AlertStream) -> None:
        with self._lock:
            self._streams.append(stream)

    def _unsubscribe(self, stream: AlertStream) -> None:
        with self._lock:
            if stream in self._streams:
                self._streams.remove(stream)
        with self.log.lock:
            self.log.lock.notify_all()

    def add_callback(self, callback: Callable[[Alert], None]) -> None:
        """Call ``callback(alert)`` on the alert thread for every change."""
        if not callable(callback):
            raise TypeError("callback must be callable")
        with self._lock:
            self._callbacks.append(callback)

    def remove_callback(self, callback: Callable[[Alert], None]) -> None:
        """Stop calling ``callback``; once this returns it is not running."""
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    # --- the thread -----------------------------------------------------

    def post(self, alert: EngineAlert) -> None:
        """Deliver an engine alert from another thread, on the alert thread."""
        self._posted.append(alert)
        self._wake()

    def drain(self) -> int:
        """Read every alert now in the rings (and every posted engine alert),
        log and dispatch it; returns how many were read."""
        total = 0
        while self._posted:
            alert = self.log.append_engine(self._posted.popleft())
            total += 1
            self._dispatch([alert])
        for w in range(self._workers):
            buf = self._buffers[w]
            while True:
                n = self._rings.read_into(w, buf)
                if not n:
                    break
                total += n
                seq, tseqs = self.log.append(buf[:n], w)
                if self._callbacks:
                    self._dispatch(alerts_from_records(
                        buf[:n], w, self.log._names, self.log._views, seq, tseqs))
                else:
                    self.delivered += n
                if n < len(buf):
                    break
        return total

    def _dispatch(self, alerts: list) -> None:
        with self._lock:
            for alert in alerts:
                for callback in self._callbacks:
                    try:
                        callback(alert)
                    except Exception:
                        # One bad callback must not stop alerts for the rest.
                        self.callback_errors += 1
                        log.exception("alert callback %r failed", callback)
            self.delivered += len(alerts)

    def _run(self) -> None:
        # This thread is the only reader of the workers' alert rings: if it
        # died, every worker would wait for room for ever.  An error is
        # logged and counted and the thread goes on.
        while not self._stop.is_set():
            try:
                if self._rings.wait(0.2) or self._posted:
                    self.drain()
            except Exception:
                self.errors += 1
                log.exception("alert thread: draining the alert rings failed")
                self._stop.wait(0.05)
        try:
            self.drain()
        except Exception:
            self.errors += 1
            log.exception("alert thread: the last drain failed")

    def close(self) -> None:
        """Drain what the workers wrote, stop the thread, end the streams.
        Safe to call twice."""
        if self._ended:
            return
        self._stop.set()
        self._wake()
        self._thread.join(10)
        with self.log.lock:
            self._ended = True
            self.log.lock.notify_all()
        with self._lock:
            self._streams.clear()
            self._callbacks.clear()
        self.log.close()
        self._rings.release_buffer()
