"""The engine's alert thread: drains every worker's alert ring and hands
each status change to iterators, callbacks and the gateway.

Workers write alert records into their own SPSC rings (shared memory) and
never wait for room; one thread here is the single consumer of all of
them.  Status changes are rare next to events, so this side may build one
Python object per alert."""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..core.records import ALERT_DTYPE, finite_or_none
from ..errors import ForkedProcess
from .rules import STATUS_NAMES, stat_name

__all__ = ["Alert", "AlertHub", "AlertStream", "EngineAlert", "alerts_from_records",
           "ENGINE_TOPIC"]

#: The alert endpoint's topic of :class:`EngineAlert` (series alerts are
#: published under their new status).
ENGINE_TOPIC = "ENGINE"

log = logging.getLogger("ringflow.alerts")

# Records read from one ring per pass: bounded, so one busy worker cannot
# starve the others' alerts.
_READ_BATCH = 1024
# A subscriber that stops reading loses alerts past this many (counted).
_SUBSCRIBER_QUEUE = 100_000
_END = object()


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
        Its value.
    ts : int
        Event time of the deciding event (ns since the epoch); for STALE,
        when the silence passed the TTL.
    worker : int
        The worker that owns the series.
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

    def to_dict(self) -> dict:
        """JSON-ready form (as published on the alert endpoint)."""
        return {"entity": self.entity, "metric": self.metric, "entity_id": self.key,
                "metric_id": self.metric_id, "old": self.old, "new": self.new,
                "stat": self.stat, "value": finite_or_none(self.value), "ts": self.ts,
                "worker": self.worker}

    def __str__(self) -> str:
        who = self.entity if self.entity is not None else f"{self.key:#x}"
        what = self.metric if self.metric is not None else f"{self.metric_id:#x}"
        return f"{who} {what}: {self.old} -> {self.new} ({self.stat} = {self.value:g})"

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
    """

    worker: int
    old: str
    new: str
    cause: str
    pid: int | None
    restarts: int
    ts: int

    @property
    def topic(self) -> str:
        """Its topic on the alert endpoint: :data:`ENGINE_TOPIC`."""
        return ENGINE_TOPIC

    def to_dict(self) -> dict:
        """JSON-ready form (as published on the alert endpoint)."""
        return {"topic": ENGINE_TOPIC, "worker": self.worker, "old": self.old,
                "new": self.new, "cause": self.cause, "pid": self.pid,
                "restarts": self.restarts, "ts": self.ts}

    def __str__(self) -> str:
        return f"ENGINE worker {self.worker}: {self.old} -> {self.new} ({self.cause})"


def alerts_from_records(records: np.ndarray, worker: int, names: dict | None = None,
                        views=(1, 5, 15)) -> list[Alert]:
    """Alert objects for ALERT_DTYPE records (one Python object per status
    change: changes are rare, the hot path never builds them)."""
    if records.dtype != ALERT_DTYPE:
        raise ValueError("records must be ALERT_DTYPE")
    names = names or {}
    entities = names.get("entities", {})
    metrics = names.get("metrics", {})
    out = []
    for key, ts, metric, old, new, stat, _rule, value in records.tolist():
        out.append(Alert(entities.get(key), metrics.get(metric), key, metric,
                         STATUS_NAMES[old], STATUS_NAMES[new], stat_name(stat, views),
                         value, ts, worker))
    return out


class AlertStream:
    """An iterator over the status changes that happen after it was opened.

    Returned by :meth:`engine.Engine.alerts`.  Iteration blocks until the
    next alert; with a ``timeout`` it ends when none came for that long.
    It also ends when the engine closes.  Use it as a context manager, or
    call :meth:`close`, to stop receiving.

    The alert thread that fills it lives in the engine's process only: in
    a forked child, iterating or :meth:`get` raises
    :class:`engine.errors.ForkedProcess` instead of waiting for alerts
    that can never come, and :meth:`close` does nothing.
    """

    def __init__(self, hub: AlertHub, timeout: float | None) -> None:
        self._hub = hub
        self._timeout = timeout
        self._queue: queue.Queue = queue.Queue(_SUBSCRIBER_QUEUE)
        self.dropped = 0
        self._pid = os.getpid()
        hub._subscribe(self)

    def __iter__(self) -> Iterator[Alert]:
        return self

    def _check_process(self) -> None:
        pid = os.getpid()
        if pid != self._pid:
            raise ForkedProcess("AlertStream", self._pid, pid)

    def __next__(self) -> Alert:
        self._check_process()
        try:
            item = self._queue.get(timeout=self._timeout)
        except queue.Empty:
            raise StopIteration from None
        if item is _END:
            raise StopIteration
        return item

    def get(self, timeout: float | None = None) -> Alert | None:
        """The next alert, or ``None`` when none came within ``timeout``
        seconds or the engine closed.

        Raises
        ------
        engine.errors.ForkedProcess
            Called in a process forked from the engine's.
        """
        self._check_process()
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        return None if item is _END else item

    def close(self) -> None:
        """Stop receiving alerts (in a forked child: nothing to stop)."""
        # The hub's lock may have been held by the alert thread at the
        # fork, and that thread does not exist here to release it.
        if os.getpid() == self._pid:
            self._hub._unsubscribe(self)

    def __enter__(self) -> AlertStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _offer(self, item) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1


class AlertHub:
    """Single consumer of the workers' alert rings.

    Parameters
    ----------
    ringset : engine._ring.RingSet
        The consumer end of every worker's alert ring, in worker order.
    workers : int
        How many rings it has.
    wake : callable
        Rings the doorbell the alert thread sleeps on.
    dropped : callable
        Returns how many alerts the workers dropped so far (full rings).
    names : dict
        The engine's name registry (``{"entities": {...}, "metrics": {...}}``),
        read when an alert is named.
    views : tuple
        The engine's view horizons, to name view statistics.
    """

    def __init__(self, ringset, workers: int, wake: Callable[[], None],
                 dropped: Callable[[], int], names: dict, views) -> None:
        self._dropped = dropped
        self._dropped_seen = 0
        self._drop_callbacks: list[Callable[[int, int], None]] = []
        self._rings = ringset
        self._names = names
        self._views = views
        self._wake = wake
        self._workers = workers
        self._buffers = [np.empty(_READ_BATCH, ALERT_DTYPE) for _ in range(workers)]
        # Guards the subscriber lists against the dispatch loop only: taken
        # once per drained batch, never by a worker or an ingest thread.
        self._lock = threading.Lock()
        self._streams: list[AlertStream] = []
        self._callbacks: list[Callable[[Alert], None]] = []
        self._stop = threading.Event()
        # Engine alerts posted by the supervisor, dispatched on this thread
        # with the rest (deque appends and pops are atomic: no lock).
        self._posted: collections.deque = collections.deque()
        self.delivered = 0
        self.callback_errors = 0
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
            if callback in self._drop_callbacks:
                self._drop_callbacks.remove(callback)

    def add_drop_callback(self, callback: Callable[[int, int], None]) -> None:
        """Call ``callback(new_drops, total_drops)`` on the alert thread
        whenever workers are seen to have dropped alerts (full rings)."""
        with self._lock:
            self._drop_callbacks.append(callback)

    def _check_dropped(self) -> None:
        total = self._dropped()
        if total <= self._dropped_seen:
            return
        new, self._dropped_seen = total - self._dropped_seen, total
        with self._lock:
            for callback in self._drop_callbacks:
                try:
                    callback(new, total)
                except Exception:
                    self.callback_errors += 1
                    log.exception("alert drop callback %r failed", callback)

    # --- the thread -----------------------------------------------------

    def post(self, alert: EngineAlert) -> None:
        """Deliver an engine alert from another thread, on the alert thread."""
        self._posted.append(alert)
        self._wake()

    def drain(self) -> int:
        """Read every alert now in the rings (and every posted engine alert)
        and dispatch it; returns how many were read."""
        total = 0
        posted = []
        while self._posted:
            posted.append(self._posted.popleft())
        if posted:
            total += len(posted)
            self._dispatch(posted)
        for w in range(self._workers):
            buf = self._buffers[w]
            while True:
                n = self._rings.read_into(w, buf)
                if not n:
                    break
                total += n
                self._dispatch(alerts_from_records(buf[:n], w, self._names, self._views))
                if n < len(buf):
                    break
        return total

    def _dispatch(self, alerts: list[Alert]) -> None:
        with self._lock:
            for alert in alerts:
                for stream in self._streams:
                    stream._offer(alert)
                for callback in self._callbacks:
                    try:
                        callback(alert)
                    except Exception:
                        # One bad callback must not stop alerts for the rest.
                        self.callback_errors += 1
                        log.exception("alert callback %r failed", callback)
            self.delivered += len(alerts)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._rings.wait(0.2) or self._posted:
                self.drain()
            self._check_dropped()
        self.drain()
        self._check_dropped()

    def close(self) -> None:
        """Drain what the workers wrote, stop the thread, end the streams."""
        self._stop.set()
        self._wake()
        self._thread.join(10)
        with self._lock:
            for stream in self._streams:
                stream._offer(_END)
            self._streams.clear()
            self._callbacks.clear()
        self._rings.release_buffer()
