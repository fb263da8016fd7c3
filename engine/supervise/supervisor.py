"""Supervision of an engine's workers (docs/faults.md).

A worker that exits, is killed, or stops turning its drain loop for
``worker_timeout`` is replaced by a fresh process on the same rings and the
same table; the other shards never stop.  The new worker repairs the row
its predecessor left mid-write and replays the span it was applying, so
every accepted event is applied exactly once.  A worker that keeps dying is
restarted with back-off and, after ``max_restarts`` failed starts in a
row (a worker that dies before it serves, or within ``stable_after`` of
starting to), given up on: its shard is ``degraded`` and the engine says
why instead of exiting.  A worker that served longer than that is replaced
at once, however often that happens (as supervisord's ``startsecs``).

While a shard is not ``ok`` its table's shard word says so, and every read
of its series shows at least STALE (ext/query.pxd ``status_seen``); each
change of a shard's state is an :class:`engine.health.alerts.EngineAlert`.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import _control
from ..core.layout import SHARD_STATES, field_offset
from ..errors import WorkerDied
from ..health.alerts import EngineAlert

__all__ = ["Supervisor", "WorkerRecord", "describe_exit"]

_SHARD_WORD = field_offset("TableHeader", "shard")
_CODES = {name: code for code, name in enumerate(SHARD_STATES)}


def describe_exit(returncode: int | None) -> str:
    """How a process ended, for people: ``"was killed by signal 9
    (SIGKILL)"`` or ``"exited with code 3"``."""
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown"
        return f"was killed by signal {-returncode} ({name})"
    return f"exited with code {returncode}"


@dataclass
class WorkerRecord:
    """The supervisor's view of one shard's worker (read by ``stats``)."""

    index: int
    proc: subprocess.Popen
    state: str = "ok"
    restarts: int = 0
    cause: str | None = None
    #: Wall time (ns) of the last change of ``state``.
    since: int = field(default_factory=time.time_ns)
    #: Seconds from the last death to the replacement serving, once known.
    last_recovery_s: float | None = None
    #: Failed starts in a row (see the module's docstring).
    failures: int = 0
    pidfd: int = -1
    died_at: float | None = None
    restart_at: float | None = None
    spawned_at: float = field(default_factory=time.monotonic)
    ready_at: float | None = field(default_factory=time.monotonic)
    #: Why the supervisor killed it, until its exit is seen (sent once).
    killed_for: str | None = None

    def to_dict(self) -> dict:
        return {"state": self.state, "restarts": self.restarts, "cause": self.cause,
                "state_since": self.since, "last_recovery_s": self.last_recovery_s}


class Supervisor:
    """Watches the workers from one thread of the engine's process.

    It blocks on the workers' pidfds (a death is seen the moment it
    happens, at no cost to the hot path) and wakes every ``interval``
    seconds to read each worker's heartbeat word.

    Parameters
    ----------
    procs : list of subprocess.Popen
        The workers, in shard order.  Replacements are appended to this
        list too, so the engine's last-resort cleanup kills them all.
    spawn : callable
        ``spawn(w)`` starts a new worker process for shard ``w``.
    control : buffer
        The control segment (ready, heartbeat and restart words).
    tables : list of buffer
        Each shard's table segment (its shard word).
    layout : engine.core.layout.Layout
    config : engine.EngineConfig
        ``worker_timeout``, ``max_restarts``, ``stable_after``,
        ``restart_backoff`` and ``start_timeout``.
    post : callable
        Delivers an :class:`EngineAlert` (the engine's alert hub).
    """

    def __init__(self, procs: list, spawn: Callable[[int], subprocess.Popen], control,
                 tables: list, layout, config, post: Callable[[EngineAlert], None]) -> None:
        self._procs = procs
        self._spawn = spawn
        self._control = control
        self._tables = tables
        self._layout = layout
        self._post = post
        self._timeout_ns = config.worker_timeout_ns
        self._max_restarts = config.max_restarts
        self._stable = config.stable_after_ns / 1e9
        self._backoff = config.restart_backoff_ns / 1e9
        self._start_timeout = config.start_timeout
        # Heartbeats are read a few times per timeout, and at least every
        # 100 ms so that a pending restart or a finished recovery is seen soon.
        self._interval_ms = max(5, min(100, config.worker_timeout_ns // 4_000_000))
        self.records = [WorkerRecord(w, p) for w, p in enumerate(procs)]
        #: True once a shard was given up on: one attribute for the hot path.
        self.records_degraded = False
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        self._poller = select.poll()
        self._poller.register(self._wake_r, select.POLLIN)
        self._by_fd: dict[int, WorkerRecord] = {}
        for rec in self.records:
            self._watch(rec)
        self._thread = threading.Thread(target=self._run, name="ringflow-supervisor",
                                        daemon=True)
        self._thread.start()

    # --- state ------------------------------------------------------------

    @property
    def state(self) -> str:
        """``ok`` when every shard is; ``degraded`` when one was given up on;
        ``recovering`` while one is down, hung or being replaced."""
        states = {rec.state for rec in self.records}
        if states == {"ok"}:
            return "ok"
        return "degraded" if "degraded" in states else "recovering"

    def degraded(self) -> WorkerDied | None:
        """The error of the first shard given up on, or None."""
        for rec in self.records:
            if rec.state == "degraded":
                return WorkerDied(rec.index, rec.proc.returncode, rec.proc.pid,
                                  cause=rec.cause)
        return None

    def _set(self, rec: WorkerRecord, state: str, cause: str) -> None:
        old, rec.state, rec.cause, rec.since = rec.state, state, cause, time.time_ns()
        if state == "degraded":
            self.records_degraded = True
        _control.store_u64(self._tables[rec.index], _SHARD_WORD, _CODES[state])
        if old != state:
            self._post(EngineAlert(rec.index, old, state, cause, rec.proc.pid, rec.restarts,
                                   rec.since))

    # --- the thread ---------------------------------------------------------

    def _watch(self, rec: WorkerRecord) -> None:
        rec.pidfd = os.pidfd_open(rec.proc.pid)
        self._by_fd[rec.pidfd] = rec
        self._poller.register(rec.pidfd, select.POLLIN)

    def _unwatch(self, rec: WorkerRecord) -> None:
        if rec.pidfd >= 0:
            self._poller.unregister(rec.pidfd)
            del self._by_fd[rec.pidfd]
            os.close(rec.pidfd)
            rec.pidfd = -1

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            # Here, not in close(): close() may run on this very thread (the
            # engine's finalizer, when a collection happens here).
            for rec in self.records:
                if rec.pidfd >= 0:
                    os.close(rec.pidfd)
                    rec.pidfd = -1
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _loop(self) -> None:
        last_turn = time.monotonic()
        while True:
            # Soon while a shard waits for its replacement: the time from a
            # fault to serving again is what a restart costs.
            interval_ms = self._interval_ms
            now = time.monotonic()
            for rec in self.records:
                if rec.state == "recovering":
                    interval_ms = 2
                elif rec.restart_at is not None:
                    # Not every 2 ms through a back-off: when it ends.
                    interval_ms = min(interval_ms, max(1, int((rec.restart_at - now) * 1000)))
            ready = self._poller.poll(interval_ms)
            if self._stopping:
                return
            for fd, _event in ready:
                rec = self._by_fd.get(fd)
                if rec is not None:
                    self._exited(rec)
            now = time.monotonic()
            # Stopped or starved along with the workers (Ctrl-Z of the whole
            # process group, a frozen cgroup): their silence says nothing
            # this turn, and killing them all would be the outage.
            judge = now - last_turn < interval_ms / 1000 + self._timeout_ns / 2e9
            last_turn = now
            for rec in self.records:
                if rec.restart_at is not None and now >= rec.restart_at:
                    self._restart(rec)
                elif rec.state == "recovering":
                    self._check_started(rec, now)
                elif rec.state == "ok" and judge:
                    self._check_heartbeat(rec)

    def _exited(self, rec: WorkerRecord) -> None:
        rec.proc.wait()
        self._unwatch(rec)
        if self._stopping:
            return
        what = f"worker {rec.index} (pid {rec.proc.pid}) {describe_exit(rec.proc.returncode)}"
        if rec.killed_for is not None:
            what = f"{rec.killed_for}; killed"
        elif rec.state == "recovering":
            what += " while starting"
        rec.killed_for = None
        now = time.monotonic()
        rec.died_at = rec.died_at or now
        if rec.ready_at is None or now - rec.ready_at < self._stable:
            rec.failures += 1
        else:
            rec.failures = 0
        rec.ready_at = None
        if rec.failures >= self._max_restarts:
            self._set(rec, "degraded",
                      f"{what}; not restarted: {rec.failures} failed starts in a row")
            return
        # The first restart is immediate; failed starts back off.
        delay = 0.0 if not rec.failures else self._backoff * 2.0 ** min(rec.failures - 1, 16)
        rec.restart_at = now + delay
        self._set(rec, "down", f"{what}; restarting in {delay:.3g} s" if delay
                  else f"{what}; restarting")

    def _restart(self, rec: WorkerRecord) -> None:
        rec.restart_at = None
        lay = self._layout
        _control.store_u64(self._control, lay.worker_control(rec.index, "ready"), 0)
        _control.store_u64(self._control, lay.worker_control(rec.index, "heartbeat"), 0)
        try:
            proc = self._spawn(rec.index)
        except OSError as exc:
            # Out of processes or memory: a failed start.
            rec.failures += 1
            if rec.failures >= self._max_restarts:
                self._set(rec, "degraded", f"starting worker {rec.index} failed: {exc}; "
                          f"not restarted: {rec.failures} failed starts in a row")
                return
            rec.restart_at = time.monotonic() + max(self._backoff, 0.1)
            self._set(rec, "down", f"starting worker {rec.index} failed: {exc}")
            return
        self._procs.append(proc)
        rec.proc = proc
        rec.restarts += 1
        rec.spawned_at = time.monotonic()
        _control.store_u64(self._control, lay.worker_control(rec.index, "restarts"),
                           rec.restarts)
        self._watch(rec)
        self._set(rec, "recovering", f"worker {rec.index} restarted as pid {proc.pid} "
                  f"(restart {rec.restarts})")

    def _check_started(self, rec: WorkerRecord, now: float) -> None:
        lay = self._layout
        if _control.load_u64(self._control, lay.worker_control(rec.index, "ready"))[0]:
            took = now - rec.died_at if rec.died_at is not None else None
            rec.last_recovery_s = took
            rec.died_at = None
            rec.ready_at = now
            self._set(rec, "ok", f"worker {rec.index} (pid {rec.proc.pid}) serves its shard "
                      f"again" + (f", {took:.3f} s after the fault" if took is not None else ""))
        elif now - rec.spawned_at > self._start_timeout:
            self._kill(rec, f"worker {rec.index} (pid {rec.proc.pid}) did not start within "
                       f"{self._start_timeout:g} s")

    def _check_heartbeat(self, rec: WorkerRecord) -> None:
        beat = _control.load_u64(self._control,
                                 self._layout.worker_control(rec.index, "heartbeat"))[0]
        if not beat:
            return
        age = time.monotonic_ns() - beat
        if age > self._timeout_ns:
            # The fault began with the last turn of its loop.
            rec.died_at = time.monotonic() - age / 1e9
            cause = (f"worker {rec.index} (pid {rec.proc.pid}) made no progress "
                     f"for {age / 1e9:.2f} s (worker_timeout {self._timeout_ns / 1e9:g} s)")
            self._set(rec, "hung", cause)
            self._kill(rec, cause)

    def _kill(self, rec: WorkerRecord, cause: str) -> None:
        if rec.killed_for is not None:
            return
        rec.killed_for = cause
        if rec.pidfd >= 0:
            # By pidfd: never another process that reused the pid.
            try:
                signal.pidfd_send_signal(rec.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # --- shutdown -------------------------------------------------------------

    def close(self) -> None:
        """Stop supervising (before the engine stops its workers)."""
        if self._stopping:
            return
        # The wake before the flag: the thread closes the pipe only once it
        # has seen the flag, so the write never meets a closed descriptor.
        os.write(self._wake_w, b"x")
        self._stopping = True
        if threading.current_thread() is not self._thread:
            self._thread.join(5)
