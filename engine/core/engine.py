"""The embedded engine: worker processes, rings and state tables, driven from
the calling process."""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from .. import _control, _ring, _router, _table
from ..errors import (
    STATUS_OK,
    STATUS_TIMEOUT,
    Backpressure,
    ConfigError,
    CorruptState,
    EngineClosed,
    EngineError,
    FlushTimeout,
    ForkedProcess,
    WorkerDied,
    raise_for_status,
)
from ..health.alerts import TOPICS, AlertHub, AlertStream
from ..health.rules import RULES_SEGMENT_BYTES, Rules
from ..journal.alertlog import AlertLogFile
from ..journal.recovery import DataDir, Recovery, ShardRecovery, recover_shard
from ..journal.snapshot import (
    Snapshot,
    SnapshotError,
    list_snapshots,
    load_newest,
    read_from_ordinals,
    write_snapshot,
)
from ..journal.wal import prune
from ..query.reader import Reader
from ..supervise.supervisor import Supervisor
from .config import EngineConfig
from .layout import (
    PRODUCER_COUNTERS,
    RING_CONSUMED_OFFSET,
    RING_PUBLISHED_OFFSET,
    WORKER_COUNTERS,
    Layout,
)
from .names import NameRegistry
from .records import ALERT_DTYPE, STATE_DTYPE, as_events, entity_id, metric_id
from .shm import Segment

if TYPE_CHECKING:
    from ..net.gateway import Gateway

__all__ = ["Engine", "Producer"]

# Kernels wait in slices this long, then come back to Python to notice a dead
# worker or an expired timeout.
_SLICE_NS = 50_000_000


def _spawn_worker(specs: list, pass_fds: tuple, w: int) -> subprocess.Popen:
    """Start worker ``w`` from its spec: a fresh interpreter (fork + exec)
    that inherits no threads, sockets or locks, and unlike
    multiprocessing's spawn never re-runs the embedding program's
    ``__main__``.  ``pass_fds``: the data dir's lock, which a worker holds
    with the engine, so no new engine opens the journal while a worker of
    this one (orphaned by a SIGKILL of the engine) still appends to it."""
    return subprocess.Popen(
        [sys.executable, "-m", "engine.core.workermain", specs[w]],
        stdin=subprocess.DEVNULL,
        close_fds=True,
        pass_fds=pass_fds,
    )


def _snapshot_loop(ref, stop: threading.Event, interval: float) -> None:
    """Snapshot the engine every ``interval`` seconds until ``stop``."""
    while not stop.wait(interval):
        eng = ref()
        if eng is None or eng._closing:
            return
        try:
            with eng._snapshot_lock:
                if not stop.is_set():
                    eng._snapshot()
                    eng._snapshot_error = None
        except Exception as exc:  # noqa: BLE001 - the thread must outlive any one failure
            # Tried again at the next interval; stats() shows why.
            eng._snapshot_error = f"{type(exc).__name__}: {exc}"
        del eng


def _program_name() -> str:
    """What ``ringflow ls`` calls this process: its program, ``ringflow``
    for ``python -m engine``."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "ringflow" if prog in ("__main__.py", "ringflow") else (prog or "python")


def _cleanup(owner_pid: int, procs: list, segments: list, stoppers: list) -> None:
    """Last-resort cleanup (garbage collection, interpreter exit, failed
    start): kill what still runs and unlink what was created.

    Only in ``owner_pid``, the process that created the engine: a forked
    child inherits this finalizer and its ``atexit`` registration, and
    running it there would kill the parent's workers and unlink the
    parent's segments under it.
    """
    if os.getpid() != owner_pid:
        return
    # The supervisor first: it would replace the workers killed below.
    for stop in stoppers:
        stop()
    stoppers.clear()
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass
    for seg in segments:
        try:
            seg.close()
        except BufferError:
            # A view is still exported: the unlink below still removes the
            # name, and the memory goes when the mapping does.
            pass
        seg.unlink()


class Producer:
    """One producer slot of an engine, for one thread.

    Each ring has exactly one producer, so two threads that submit at the
    same time need two producers: take one per thread from
    :meth:`Engine.producer`.  A producer used from two threads at once
    refuses the second call instead of taking a lock.  In a process forked
    from the engine's, every call raises
    :class:`engine.errors.ForkedProcess`.
    """

    def __init__(self, engine: Engine, slot: int, kernel: _router.Producer) -> None:
        self._engine = engine
        self.slot = slot
        self._kernel = kernel

    def release(self) -> None:
        """Give the slot back to the engine; the next :meth:`Engine.producer`
        may hand it out again (its rings carry on from their cursors).

        Raises
        ------
        ForkedProcess
            Called in a process forked from the engine's.
        """
        eng = self._engine
        eng._check_process()
        if eng._producers[self.slot] is self:
            eng._producers[self.slot] = None
            self._kernel.release_buffer()

    def submit(self, events: np.ndarray, timeout: float | None = None) -> int:
        """Route a batch into the workers' rings.

        Parameters
        ----------
        events : numpy.ndarray
            1-d C-contiguous array of :data:`engine.EVENT_DTYPE`.
        timeout : float, optional
            Seconds to wait for room while the rings are full; ``None``
            waits as long as it takes.

        Returns
        -------
        int
            Events accepted.  The others had a NaN or infinite value or an
            event time outside the sane range; they are counted in
            :meth:`Engine.stats` under ``rejected_invalid``.

        Raises
        ------
        Backpressure
            The rings stayed full past ``timeout``; its ``accepted`` events
            were taken and will be applied.
        WorkerDied
            A shard was given up on after its worker kept dying (its
            ``accepted`` and ``handled`` say how much of the batch was
            taken).  A worker that dies once is replaced meanwhile: its
            events wait in its rings, and a full ring is backpressure.
        ForkedProcess
            Called in a process forked from the engine's.
        """
        return self._submit(events, timeout, False)

    def _submit(self, events: np.ndarray, timeout: float | None, markers: bool) -> int:
        """:meth:`submit`; ``markers``: let producer markers through (the
        gateway's idempotent producers, docs/journal.md)."""
        eng = self._engine
        eng._check_writable()
        ev = as_events(events)
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        done = 0
        invalid = 0
        slice_ns = _SLICE_NS
        while True:
            status, done, bad = self._kernel.submit(ev, done, slice_ns, markers)
            invalid += bad
            if status == STATUS_OK:
                return done - invalid
            if status != STATUS_TIMEOUT:
                raise_for_status(status, "submit")
            eng._check_writable(done - invalid, done)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Backpressure(
                        f"rings full for {timeout:g}s; {done - invalid} of {len(ev)} "
                        "events accepted",
                        accepted=done - invalid,
                        handled=done,
                    )
                slice_ns = min(_SLICE_NS, int(left * 1e9))


class Engine:
    """A running ringflow engine: worker processes, their rings and tables.

    Parameters
    ----------
    workers : int
        Worker processes (shards).
    config : EngineConfig, optional
        Every other setting; keyword arguments override its fields.
    **settings
        Fields of :class:`engine.EngineConfig`.

    Notes
    -----
    An engine belongs to the process that created it.  In a child forked
    from that process every method raises
    :class:`engine.errors.ForkedProcess` (create a new engine in the
    child), except :meth:`close`, which there only marks the child's copy
    closed; nothing the child does, its exit and garbage collection
    included, stops the parent's workers, unlinks its segments or uses its
    producer slots.

    Examples
    --------
    >>> import engine
    >>> with engine.Engine(workers=2) as eng:                    # doctest: +SKIP
    ...     eng.submit(engine.make_events(["web-01"], "cpu", None, [0.5]))
    ...     eng.flush()
    ...     eng.get("web-01", "cpu")["last"]
    1
    0.5
    """

    def __init__(self, workers: int | None = None, *, config: EngineConfig | None = None,
                 **settings) -> None:
        # First: everything below belongs to this process, and _check and
        # close() compare against it (pyzmq's fork guard).
        self._pid = os.getpid()
        base = config or EngineConfig()
        if workers is not None:
            settings["workers"] = workers
        if settings:
            from dataclasses import replace

            base = replace(base, **settings)
        self.config = cfg = base
        self.layout = lay = Layout(cfg.workers, cfg.producers, cfg.ring_slots, cfg.alert_slots)
        self._rules = cfg.health_rules
        #: Names the engine has seen, by id: ``{"entities": {...}, "metrics": {...}}``.
        #: Queries and alerts show names from here; the gateway fills it
        #: from JSON ingest, :meth:`register_names` from Python.
        self.names = NameRegistry(cfg.max_names, cfg.max_name_bytes)
        self.names.add_silently("metrics", dict(self._rules.metric_names()))
        self._alerts: AlertHub | None = None
        self._rules_generation = 0
        # Reloads are rare control-plane calls; two at once must not
        # interleave their writes to the rules segment.
        self._reload_lock = threading.Lock()
        self._closed = False
        self._closing = False
        self._supervisor: Supervisor | None = None
        self._procs: list = []
        self._segments: list[Segment] = []
        self._stoppers: list = []
        self._finalizer = weakref.finalize(
            self, _cleanup, self._pid, self._procs, self._segments, self._stoppers,
        )
        self._producers: list[Producer | None] = [None] * cfg.producers
        self._gateway = None
        self._info = None
        self._data_dir: DataDir | None = None
        self._recovery: Recovery | None = None
        # Snapshots (periodic thread, snapshot_now, close) one at a time.
        self._snapshot_lock = threading.Lock()
        self._snapshot_info: dict | None = None
        self._snapshot_error: str | None = None
        self._snapshot_stop = threading.Event()
        try:
            self._start(cfg, lay)
        except BaseException:
            self._finalizer()
            self._closed = True
            raise

    # --- start-up -------------------------------------------------------

    def _start(self, cfg: EngineConfig, lay: Layout) -> None:
        self._control_segment = Segment.create(lay.total_bytes, "ctl")
        self._segments.append(self._control_segment)
        buf = self._control_segment.buf
        for p in range(cfg.producers):
            for w in range(cfg.workers):
                _ring.init_header(
                    buf, lay.ring_header(p, w), lay.ring_slots, lay.ring_data(p, w),
                    lay.producer_block(p), lay.worker_block(w),
                )
        for w in range(cfg.workers):
            _ring.init_header(
                buf, lay.alert_header(w), lay.alert_slots, lay.alert_data(w),
                lay.ALERT_PRODUCER_BELL, lay.ALERT_CONSUMER_BELL,
            )
        self._rules_segment = Segment.create(RULES_SEGMENT_BYTES, "rul")
        self._segments.append(self._rules_segment)
        self._write_rules(self._rules)
        self._table_segments = []
        for w in range(cfg.workers):
            seg = Segment.create(cfg.table_bytes(), f"t{w}")
            self._segments.append(seg)
            _table.init_table(seg.buf, cfg.table_slots, cfg.table_capacity)
            self._table_segments.append(seg)
        if cfg.data_dir is not None:
            self._data_dir = DataDir(cfg.data_dir, cfg.workers, cfg.start_timeout)
            self._stoppers.append(self._data_dir.close)
            # Also when the start fails after the names log was opened.
            self._stoppers.append(self.names.close_log)
            self._recovery = self._recover(cfg)

        # The alert thread starts before the workers: a worker whose alert
        # ring is full waits for it (a reload at start can fill one).  It
        # must not hold the engine itself: an engine dropped without
        # close() is then still collected and cleaned up.
        alert_file = None
        if self._data_dir is not None:
            alert_file = AlertLogFile(self._data_dir.root, cfg.alert_log,
                                      fsync=cfg.fsync == "always")
        self._alerts = AlertHub(
            _ring.RingSet(buf, [lay.alert_header(w) for w in range(cfg.workers)]),
            cfg.workers,
            lambda: _control.ring_bell(buf, lay.ALERT_CONSUMER_BELL),
            self.names,
            cfg.views,
            capacity=cfg.alert_log,
            file=alert_file,
        )
        self._stoppers.append(self._alerts.close)

        specs = []
        for w in range(cfg.workers):
            spec = {
                "control": self._control_segment.name,
                "table": self._table_segments[w].name,
                "rules": self._rules_segment.name,
                "rings": lay.rings_of_worker(w),
                "block": lay.worker_block(w),
                "alert_ring": lay.alert_header(w),
                "settings": {
                    "ts_min": int(cfg.ts_min),
                    "ts_max": int(cfg.ts_max),
                    "window_ns": cfg.window_ns,
                    "lateness_ns": cfg.effective_lateness_ns,
                    "half_life_ns": float(cfg.half_life_ns),
                    "views": [float(v) for v in cfg.views],
                    "ttl_ns": self._rules.ttl_ns,
                    "tick_ns": cfg.tick_ns,
                },
                "wait_code": cfg.wait_code,
                "parent_pid": os.getpid(),
            }
            if self._data_dir is not None:
                spec["settings"]["journal"] = {
                    "dir": str(self._data_dir.shard(w)), "shard": w,
                    "segment_bytes": cfg.segment_bytes, "fsync": cfg.fsync,
                }
            specs.append(json.dumps(spec))
        # The supervisor starts replacements from the same specs; it must not
        # hold the engine (an engine dropped without close() is collected).
        fds = () if self._data_dir is None else (self._data_dir.lock_fd,)
        spawn = functools.partial(_spawn_worker, specs, fds)
        for w in range(cfg.workers):
            self._procs.append(spawn(w))

        deadline = time.monotonic() + cfg.start_timeout
        for w, proc in enumerate(self._procs):
            ready_at = lay.worker_control(w, "ready")
            while not _control.load_u64(buf, ready_at)[0]:
                if proc.poll() is not None:
                    raise WorkerDied(w, proc.returncode, proc.pid)
                if time.monotonic() > deadline:
                    raise EngineError(f"worker {w} did not start within {cfg.start_timeout}s")
                time.sleep(0.002)

        self._reader = Reader([seg.buf for seg in self._table_segments], self.names,
                              window_ns=cfg.window_ns, views=cfg.views, check=self._check)
        if self._recovery is not None:
            self._reader.recovered = self._recovery.to_dict()
        self._publish(cfg)
        self._default = self.producer()
        self._supervisor = Supervisor(
            self._procs, spawn, buf, [seg.buf for seg in self._table_segments], lay, cfg,
            self._post_engine_alert,
        )
        self._stoppers.append(self._supervisor.close)
        if self._data_dir is not None and cfg.snapshot_interval_ns:
            stop = self._snapshot_stop
            # The thread holds the engine weakly: an engine dropped without
            # close() is still collected.
            threading.Thread(target=_snapshot_loop, args=(weakref.ref(self), stop,
                             cfg.snapshot_interval_ns / 1e9),
                             name="ringflow-snapshots", daemon=True).start()
            self._stoppers.insert(0, stop.set)

    def _publish(self, cfg: EngineConfig) -> None:
        """Write this engine's record for ``ringflow ls`` and
        :func:`engine.attach` (engine/core/discovery.py); its segment is
        cleaned up with the others."""
        from .. import __version__
        from .discovery import RECORD_VERSION, EngineInfo

        record = {
            "pid": self._pid, "version": __version__, "record": RECORD_VERSION,
            "started": time.time(), "state": "ok", "workers": cfg.workers,
            "name": _program_name(),
            "data_dir": None if cfg.data_dir is None else os.fspath(cfg.data_dir),
            "tables": [seg.name for seg in self._table_segments],
            "control": self._control_segment.name,
            "table_bytes": cfg.table_bytes(), "state_itemsize": STATE_DTYPE.itemsize,
            "window_ns": cfg.window_ns, "views": list(cfg.views), "endpoints": None,
        }
        try:
            self._info = EngineInfo(record)
        except Exception as exc:  # noqa: BLE001 - the record serves ls/attach, not the engine
            logging.getLogger("ringflow").warning(
                "engine record for `ringflow ls` / engine.attach not published: %s", exc)
            return
        shm = self._info.shm
        self._segments.append(Segment(shm.name, shm.size, shm.buf, True, shm))

    def _post_engine_alert(self, alert) -> None:
        """A shard changed state (supervisor thread): tell the alert
        subscribers, and ``ringflow ls`` through the record."""
        self._alerts.post(alert)
        info = self._info
        if info is not None and not self._closing:
            try:
                info.update({"state": self._supervisor.state})
            except Exception:  # noqa: BLE001 - the record is informative; the alert went out
                pass

    def _recover(self, cfg: EngineConfig) -> Recovery:
        """Load the newest good snapshot into the fresh tables and replay
        each shard's journal after it, before the workers start, with the
        settings and rules the workers use: the state comes back as it was
        for every journaled event (the alerts the replay raises are not
        sent again)."""
        rules = self._rules
        compiled = rules.compile(cfg.views)
        t0 = time.perf_counter()
        out = Recovery()
        snap, out.snapshots_skipped = load_newest(self._data_dir.root)
        if snap is not None:
            if len(snap.rows) != cfg.workers:
                raise CorruptState(f"{snap.path} holds {len(snap.rows)} shards, the engine "
                                   f"{cfg.workers}")
            out.snapshot = {"path": snap.path, "created_ns": snap.created_ns,
                            "series": snap.series}
            for kind, table in snap.names.items():
                if kind in self.names:
                    self.names.add_silently(kind, table)

        def one(w: int) -> ShardRecovery:
            # A Settings per shard: it holds the kernel's undo slot, which
            # every apply writes.
            settings = _table.Settings(
                ts_min=int(cfg.ts_min), ts_max=int(cfg.ts_max), window_ns=cfg.window_ns,
                lateness_ns=cfg.effective_lateness_ns, half_life_ns=float(cfg.half_life_ns),
                views=tuple(float(v) for v in cfg.views), ttl_ns=rules.ttl_ns, rules=compiled,
            )
            table = _table.Table(self._table_segments[w].buf)
            try:
                # Alerts the replay raises land here and are dropped.
                scratch = np.zeros(1 << 12, ALERT_DTYPE)
                return recover_shard(
                    self._data_dir.shard(w), w, table, settings, scratch,
                    rows=None if snap is None else snap.rows[w],
                    marks=None if snap is None else snap.marks[w],
                    from_ordinal=0 if snap is None else snap.from_ordinals[w])
            finally:
                table.release_buffer()

        # The shards replay side by side: Table.apply and the CRC32C checks
        # run without the GIL.
        with ThreadPoolExecutor(max_workers=min(cfg.workers, os.cpu_count() or 1)) as pool:
            out.shards = list(pool.map(one, range(cfg.workers)))
        # Rows a snapshot saved under other rules are re-evaluated by a
        # reload pass when their worker starts; otherwise the tables stand
        # as replayed under the rules in force, and the workers start
        # without one (it would reset pending escalations, restamp rows).
        if snap is None or snap.rules == json.loads(json.dumps(rules.to_dict())):
            for w in range(cfg.workers):
                _control.store_u64(self._control_segment.buf,
                                   self.layout.worker_counter(w, "rules_generation"),
                                   self._rules_generation)
        # The names learnt after the snapshot, and from now on the log.
        out.names = self.names.open_log(self._data_dir.root)
        out.seconds = time.perf_counter() - t0
        out.at_ns = time.time_ns()
        return out

    def snapshot_now(self) -> dict:
        """Snapshot the state into the data dir now, without stopping
        ingest (docs/journal.md, Snapshots), and delete the journal
        segments the older of the two kept snapshots covers.

        Returns
        -------
        dict
            ``path``, ``series``, ``seconds``, ``bytes``, ``pruned``
            (journal segments deleted).

        Raises
        ------
        EngineError
            No ``data_dir``; or a shard is not serving (a snapshot is
            taken only of shards whose worker is up); or a row stayed
            mid-write.
        """
        self._check()
        if self._data_dir is None:
            raise EngineError("this engine has no data_dir to snapshot into")
        with self._snapshot_lock:
            try:
                return self._snapshot()
            except OSError as exc:
                raise SnapshotError(f"writing a snapshot into {self._data_dir.root}: "
                                    f"{exc.strerror or exc}") from exc

    def _snapshot(self) -> dict:
        t0 = time.perf_counter()
        sup, lay, buf = self._supervisor, self.layout, self._control_segment.buf
        if sup is not None and sup.state != "ok":
            raise EngineError(f"not snapshotting while the engine is {sup.state}")
        from_ordinals, rows, marks = [], [], []
        for w, table in enumerate(self._reader.tables):
            # First the ordinal below which everything is applied, then the
            # rows: each may hold more, which the replay skips.
            from_ordinals.append(_control.load_u64(
                buf, lay.worker_counter(w, "applied_ordinal"))[0])
            used = table.used
            out = np.empty(used + 1024, STATE_DTYPE)
            lost = table.unavailable
            n = table.snapshot_into(out)
            while n < 0:
                out = np.empty(-n + 1024, STATE_DTYPE)
                n = table.snapshot_into(out)
            if table.unavailable != lost:
                raise EngineError(f"not snapshotting: a row of shard {w} stayed mid-write")
            rows.append(out[:n])
            marks.append(table.marks())
        if sup is not None and sup.state != "ok":
            # A shard went down during the copy: its rows may carry the
            # readers' down flag and status; the next snapshot is taken.
            raise EngineError(f"not snapshotting while the engine is {sup.state}")
        names, names_covered = self.names.copy_for_snapshot()
        snap = Snapshot(from_ordinals, rows, marks, names=names, rules=self._rules.to_dict())
        path = write_snapshot(self._data_dir.root, snap)
        self.names.compact_log(names_covered)
        pruned = []
        kept = list_snapshots(self._data_dir.root)
        if len(kept) >= 2:
            # Up to the older kept snapshot: the newest may still turn out
            # damaged, and the start then needs the journal from the older.
            for w, below in enumerate(read_from_ordinals(kept[-2])):
                pruned += prune(self._data_dir.shard(w), below)
        info = {"path": str(path), "series": snap.series, "at_ns": time.time_ns(),
                "seconds": time.perf_counter() - t0, "bytes": path.stat().st_size,
                "pruned": len(pruned)}
        self._snapshot_info = info
        return info

    def _check_process(self) -> None:
        """Raise :class:`ForkedProcess` unless this is the engine's own process."""
        # One getpid() per call, not per event: the price of never driving
        # the parent's rings from a fork, which a flag set by os.fork's
        # hooks would miss when a C library forks on its own.
        pid = os.getpid()
        if pid != self._pid:
            raise ForkedProcess("Engine", self._pid, pid)

    def _check(self) -> None:
        # Not the workers: one that dies is replaced, and reads go on
        # meanwhile (its series read at least STALE until it is back).
        self._check_process()
        if self._closed:
            raise EngineClosed("the engine is closed")

    def _check_writable(self, accepted: int = 0, handled: int = 0) -> None:
        """Raise :class:`WorkerDied` when a shard was given up on: events
        for it could be taken but never applied."""
        self._check()
        sup = self._supervisor
        if sup is not None and sup.records_degraded:
            exc = sup.degraded()
            if exc is not None:
                exc.accepted, exc.handled = accepted, handled
                raise exc

    # --- producers ------------------------------------------------------

    def producer(self) -> Producer:
        """Claim the next free producer slot, for a thread of its own.

        Returns
        -------
        Producer
            Its :meth:`Producer.submit` may run concurrently with every other
            producer's, without a lock.

        Raises
        ------
        EngineError
            Every slot (``config.producers``) is taken.
        """
        self._check()
        for slot, taken in enumerate(self._producers):
            if taken is None:
                lay, cfg = self.layout, self.config
                kernel = _router.Producer(
                    self._control_segment.buf, lay.rings_of_producer(slot),
                    lay.producer_block(slot), lay.all_rings(), int(cfg.ts_min), int(cfg.ts_max),
                    cfg.wait_code,
                )
                handle = Producer(self, slot, kernel)
                self._producers[slot] = handle
                return handle
        raise EngineError(
            f"all {self.config.producers} producer slots are taken; "
            "start the engine with more producers="
        )

    def submit(self, events: np.ndarray, timeout: float | None = None) -> int:
        """Submit a batch through the engine's default producer.

        See :meth:`Producer.submit`; not for concurrent use from several
        threads (take a :meth:`producer` per thread).
        """
        return self._default.submit(events, timeout)

    def flush(self, timeout: float | None = None) -> None:
        """Return once every event accepted so far, by any producer, has been
        applied to the state tables.

        Raises
        ------
        FlushTimeout
            Not everything was applied within ``timeout`` seconds.
        WorkerDied
            A shard was given up on (degraded), so its events will not be
            applied.  A worker replaced after a fault only delays the
            return: its replacement applies what it left (docs/faults.md).
        """
        self._check_writable()
        kernel = self._default._kernel
        kernel.flush_begin()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            slice_ns = _SLICE_NS
            if deadline is not None:
                slice_ns = max(0, min(slice_ns, int((deadline - time.monotonic()) * 1e9)))
            status = kernel.flush_wait(slice_ns)
            if status == STATUS_OK:
                return
            if status != STATUS_TIMEOUT:
                raise_for_status(status, "flush")
            self._check_writable()
            if deadline is not None and time.monotonic() >= deadline:
                raise FlushTimeout(f"events still pending after {timeout:g}s")

    # --- lock-free reads -------------------------------------------------

    def get(self, key: int | str, metric: int | str) -> np.void | None:
        """One series' state, read directly from shared memory.

        Parameters
        ----------
        key : int or str
            Entity id, or name (hashed with :func:`engine.entity_id`).
        metric : int or str
            Metric id, or name (hashed with :func:`engine.metric_id`).

        Returns
        -------
        numpy.void or None
            A :data:`engine.STATE_DTYPE` record, or ``None`` for a series the
            engine has not seen.

        Raises
        ------
        engine.errors.SeriesUnavailable
            The series' row stayed mid-write for about a millisecond (its
            worker died or stalled inside the write); no copy is invented.
        """
        return self._reader.get(key, metric)

    def get_many(self, keys, metrics) -> np.ndarray:
        """Vectorised :meth:`get`.

        Parameters
        ----------
        keys : array_like of int or str
        metrics : array_like of int or str
            Same length as ``keys``, or one metric for all.

        Returns
        -------
        numpy.ndarray
            :data:`engine.STATE_DTYPE` rows in the order asked; a series the
            engine has not seen reads as a row with ``count == 0``.

        Raises
        ------
        engine.errors.SeriesUnavailable
            For the first series whose row stayed mid-write (as :meth:`get`):
            the answer is positional, and no row could honestly stand in
            that series' place.
        """
        return self._reader.get_many(keys, metrics)

    def entity_rows(self, key: int | str) -> np.ndarray:
        """Every series of one entity (all its metrics), as STATE_DTYPE rows.

        Scans the one table that owns the entity's shard, comparing keys
        only, and seqlock-reads the matches.
        """
        return self._reader.entity_rows(key)

    def snapshot(self) -> np.ndarray:
        """Every series of every worker, as :data:`engine.STATE_DTYPE` rows.

        Each row is a consistent (seqlock) read; rows of different series
        may come from slightly different instants while ingest runs.  A row
        that stays mid-write (its worker died or stalled inside the write)
        is left out after about a millisecond and counted in
        ``stats()["rows_unavailable"]``, so one wedged row never stops a
        fleet-wide read (:meth:`status` and :meth:`quantiles` of every
        entity do the same).
        """
        return self._reader.snapshot()

    def stats(self) -> dict:
        """Counters of the engine, per worker and per producer.

        Returns
        -------
        dict
            ``applied``, ``rejected_invalid`` (at submit and in workers),
            ``rejected_table_full``, ``stale`` (out-of-order events), ``series``,
            ``rows_unavailable`` (rows that fleet-wide reads left out because
            they stayed mid-write, see :meth:`snapshot`); ``state``: ``ok``,
            ``recovering`` (a shard is down, hung or being replaced) or
            ``degraded`` (a shard was given up on, docs/faults.md);
            ``workers``: per worker its pid, liveness, ``state``,
            ``restarts``, ``cause`` and ``state_since`` of the last change,
            ``last_recovery_s``, counters, table fill and ring fill;
            ``producers``: per slot accepted, invalid and batches;
            ``journal``: ``None`` without a ``data_dir``, else its ``dir``,
            ``fsync`` policy, ``bytes`` written since the start, write
            ``errors``, shards ``failing`` to write now and the ``error``,
            ``lag`` (events taken, not yet journaled), ``synced_ns`` (the
            oldest shard's last fdatasync), the last ``snapshot`` and
            ``snapshot_error``, and what the start ``recovered``
            (:attr:`recovery`).
        """
        self._check()
        lay, cfg, buf = self.layout, self.config, self._control_segment.buf
        workers = []
        for w, rec in enumerate(self._supervisor.records):
            proc = rec.proc
            values = _control.load_u64(buf, lay.worker_counter(w), len(WORKER_COUNTERS))
            row = dict(zip(WORKER_COUNTERS, values))
            pending = []
            for off in lay.rings_of_worker(w):
                pub, cons = (_control.load_u64(buf, off + RING_PUBLISHED_OFFSET)[0],
                             _control.load_u64(buf, off + RING_CONSUMED_OFFSET)[0])
                pending.append(pub - cons)
            used = self._reader.tables[w].used
            row.update(
                worker=w,
                pid=proc.pid,
                alive=proc.poll() is None,
                **rec.to_dict(),
                series=used,
                table_capacity=cfg.table_capacity,
                table_fill=used / cfg.table_capacity,
                ring_pending=sum(pending),
                ring_fill=max(pending) / lay.ring_slots,
            )
            workers.append(row)
        producers = []
        for p in range(cfg.producers):
            values = _control.load_u64(buf, lay.producer_counters(p), len(PRODUCER_COUNTERS))
            producers.append(dict(zip(PRODUCER_COUNTERS, values), producer=p,
                                  in_use=self._producers[p] is not None))
        return {
            "state": self._supervisor.state,
            "workers": workers,
            "producers": producers,
            "accepted": sum(p["accepted"] for p in producers),
            "applied": sum(w["applied"] for w in workers),
            "rejected_invalid": sum(p["invalid"] for p in producers)
            + sum(w["invalid"] for w in workers),
            "rejected_table_full": sum(w["full"] for w in workers),
            "stale": sum(w["stale"] for w in workers),
            "late": sum(w["late"] for w in workers),
            "series": sum(w["series"] for w in workers),
            "rows_unavailable": self._reader.unavailable,
            "alerts": sum(w["alerts"] for w in workers),
            "alerts_dropped": sum(w["alerts_dropped"] for w in workers),
            "alert_waits": sum(w["alert_waits"] for w in workers),
            "alerts_delivered": self._alerts.delivered if self._alerts else 0,
            "alert_log": self._alert_log_stats(),
            "alert_callback_errors": self._alerts.callback_errors if self._alerts else 0,
            "journal": self._journal_stats(workers),
            "names": self.names.stats(),
        }

    def _alert_log_stats(self) -> dict | None:
        if self._alerts is None:
            return None
        log = self._alerts.log
        return {"head": log.head - 1, "first": log.first, "capacity": log.capacity,
                "file_errors": log.file_errors}

    def _journal_stats(self, workers: list) -> dict | None:
        if self._data_dir is None:
            return None
        errnos = [w["journal_errno"] for w in workers if w["journal_errno"]]
        return {
            "dir": str(self._data_dir.root),
            "fsync": self.config.fsync,
            "bytes": sum(w["journal_bytes"] for w in workers),
            "errors": sum(w["journal_errors"] for w in workers),
            # A shard whose last journal write failed holds its events in
            # its rings (nothing is applied unjournaled) and retries.
            "failing": len(errnos),
            "error": os.strerror(errnos[0]) if errnos else None,
            # Events taken but not yet journaled: a worker journals a span
            # as it takes it from its rings, so what waits there.
            "lag": sum(w["ring_pending"] for w in workers),
            # The oldest of the shards' last fdatasync (ns since the epoch;
            # 0: none yet): what a machine crash could lose is after it.
            "synced_ns": min(w["journal_synced_ns"] for w in workers),
            "recovered": self._recovery.to_dict() if self._recovery else None,
            "snapshot": self._snapshot_info,
            "snapshot_error": self._snapshot_error,
        }

    def _journal_failure(self) -> str | None:
        """Why a shard cannot write its journal now (its last write failed),
        or None: a few loads, for the gateway's acked rounds."""
        if self._data_dir is None:
            return None
        buf, lay = self._control_segment.buf, self.layout
        for w in range(self.config.workers):
            err = _control.load_u64(buf, lay.worker_counter(w, "journal_errno"))[0]
            if err:
                return f"shard {w}: {os.strerror(err)}"
        return None

    @property
    def recovery(self) -> Recovery | None:
        """What the start recovered from ``data_dir`` (``None`` without one):
        events and frames replayed per shard, torn tails cut, seconds."""
        return self._recovery

    # --- health: rules, status, alerts ------------------------------------

    def _write_rules(self, rules: Rules) -> int:
        """Publish rules to the workers under the segment's generation word
        (a seqlock: odd while writing).  Returns the new generation."""
        image = rules.encode(self.config.views)
        buf = self._rules_segment.buf
        gen = self._rules_generation
        _control.store_u64(buf, 0, gen + 1)
        # x86 keeps stores in order, so the workers see the odd generation
        # before any byte of the new image, and the image before the even one.
        buf[8:len(image)] = image[8:]
        _control.store_u64(buf, 0, gen + 2)
        self._rules_generation = gen + 2
        return gen + 2

    @property
    def rules(self) -> Rules:
        """The rules in force (:class:`engine.health.rules.Rules`)."""
        return self._rules

    def reload_rules(self, rules, timeout: float = 10.0) -> Rules:
        """Replace the rules on the running engine, keeping all state.

        Each worker takes the new rules between two batches, re-resolves
        every series' rule and re-evaluates it at its newest event time
        (docs/health.md, Reload).  Returns once every worker has done so.

        Parameters
        ----------
        rules : str, dict or Rules
            A TOML file path, a TOML string or a dict.
        timeout : float
            Seconds to wait for the workers.

        Returns
        -------
        Rules
            The rules now in force.

        Raises
        ------
        ConfigError
            The rules are invalid; the old ones stay in force.
        EngineError
            A worker did not take them within ``timeout``.
        """
        self._check()
        cfg = self.config
        parsed = Rules.load(rules, views=cfg.views)
        parsed.check_window(cfg.window_ns)
        self.names["metrics"].update(parsed.metric_names())
        with self._reload_lock:
            gen = self._write_rules(parsed)
            self._rules = parsed
        lay, buf = self.layout, self._control_segment.buf
        deadline = time.monotonic() + timeout
        for w in range(cfg.workers):
            _control.ring_bell(buf, lay.worker_block(w))
            word = lay.worker_counter(w, "rules_generation")
            while _control.load_u64(buf, word)[0] < gen:
                self._check()
                if time.monotonic() > deadline:
                    raise EngineError(f"worker {w} did not take the new rules within {timeout:g}s")
                time.sleep(0.001)
        return parsed

    def register_names(self, entities=(), metrics=()) -> None:
        """Remember entity and metric names, so that queries and alerts show
        them instead of ids.

        Parameters
        ----------
        entities, metrics : iterable of str
        """
        self._check_process()
        for kind, hasher, values in (("entities", entity_id, entities),
                                     ("metrics", metric_id, metrics)):
            for name in values:
                if not isinstance(name, str):
                    raise TypeError(f"{kind} names must be strings, got {name!r}")
                self.names[kind].setdefault(hasher(name), name)

    def alerts(self, timeout: float | None = None, since: int | None = None) -> AlertStream:
        """Iterate the status changes from now on (or after alert ``since``).

        Parameters
        ----------
        timeout : float, optional
            End the iteration when no alert came for this many seconds
            (default: wait until the engine closes).
        since : int, optional
            Start after the alert with this number (``Alert.seq``), from
            the engine's alert log: what a consumer that stopped asks for
            when it comes back.  Default: the next alert.

        Returns
        -------
        AlertStream
            Yields :class:`engine.Alert` (and :class:`engine.EngineAlert`)
            objects; close it (or use it as a context manager) to stop
            receiving.  Its ``missed`` counts alerts it fell too far behind
            to get (more than ``alert_log`` behind).

        Examples
        --------
        >>> with eng.alerts(timeout=1.0) as stream:          # doctest: +SKIP
        ...     for alert in stream:
        ...         print(alert)
        web-17 disk: OK -> CRIT (last = 0.97)
        """
        self._check()
        if since is not None and (not isinstance(since, int) or since < 0):
            raise ConfigError(f"since must be an alert number (int >= 0), got {since!r}")
        return AlertStream(self._alerts, timeout, since)

    def alerts_since(self, since: int = 0, limit: int = 10_000, topics=None) -> dict:
        """The alerts numbered above ``since`` that the alert log holds.

        Parameters
        ----------
        since : int
            The last alert number the caller has (0: from the oldest kept).
        limit : int
            Most alerts returned (0: only the numbers).
        topics : list of str, optional
            Only these topics (``OK``, ``WARN``, ``STALE``, ``CRIT``,
            ``ENGINE``).

        Returns
        -------
        dict
            ``alerts`` (objects, oldest first), ``next`` (``since`` for the
            next call), ``missed`` (alerts above ``since`` no longer kept),
            ``head`` (the newest alert's number), ``topic_heads`` (the
            newest ``topic_seq`` per topic) and ``log`` (the alert log's id:
            numbers are comparable only under one id; it changes when the
            engine restarts without a data dir).  All from one consistent
            look at the log.
        """
        self._check()
        if not isinstance(since, int) or since < 0:
            raise ConfigError(f"since must be an alert number (int >= 0), got {since!r}")
        if not isinstance(limit, int) or limit < 0:
            raise ConfigError(f"limit must be an int >= 0, got {limit!r}")
        if topics is not None:
            topics = [str(t).upper() for t in topics]
            unknown = [t for t in topics if t not in TOPICS]
            if unknown:
                raise ConfigError(f"unknown alert topics {unknown}; topics: {', '.join(TOPICS)}")
        return self._alerts.log.query(since, limit, topics)

    def on_alert(self, callback):
        """Call ``callback(alert)`` for every status change, on the engine's
        alert thread (keep it short).  Returns ``callback``, so it works as
        a decorator; :meth:`remove_alert_callback` undoes it."""
        self._check()
        self._alerts.add_callback(callback)
        return callback

    def remove_alert_callback(self, callback) -> None:
        """Stop calling ``callback``; once this returns it is not running."""
        self._check_process()
        if self._alerts is not None:
            self._alerts.remove_callback(callback)

    def series(self, key: int | str, metric: int | str) -> dict | None:
        """One series as a readable dict: statistics, windows, quantiles,
        views, status and since when (``None`` if the engine has not seen
        it).  Raises :class:`engine.errors.SeriesUnavailable` as :meth:`get`."""
        return self._reader.series(key, metric)

    def entity(self, key: int | str) -> dict:
        """Every series of one entity as readable dicts, worst status first,
        with the entity's status (the worst of its series).  Raises
        :class:`engine.errors.SeriesUnavailable` when one of them stayed
        mid-write: an entity shown without a series could read as healthy."""
        return self._reader.entity(key)

    def quantiles(self, metric: int | str, keys=None) -> dict:
        """p50/p95/p99 of one metric over many series' current windows (the
        whole fleet, or ``keys``), from their merged sketches.

        Parameters
        ----------
        metric : int or str
        keys : array_like of int or str, optional
            Entities to merge; default every entity with this metric.

        Returns
        -------
        dict
            ``series`` merged, ``count`` of values, and ``p50``, ``p95``,
            ``p99`` (``None`` when no window has values).
        """
        return self._reader.quantiles(metric, keys)

    def status(self, min_status: str = "WARN", limit: int | None = None) -> list[dict]:
        """Entities with a series at ``min_status`` or worse, worst first.

        An entity's status is the worst of its series' (severity order OK <
        WARN < STALE < CRIT); ties go to the longest-standing, then by name.
        The entities are ranked and cut over the rows in C and NumPy: only
        the ``limit`` returned are made dicts.

        Parameters
        ----------
        min_status : {"WARN", "OK", "STALE", "CRIT"}
        limit : int, optional
            The first ``limit`` entities only; default all.

        Returns
        -------
        list of dict
            ``entity``, ``entity_id``, ``status``, ``since`` and ``series``
            (the series at ``min_status`` or worse, as :meth:`series` gives).
        """
        return self._reader.status(min_status, limit)

    # --- network gateway ------------------------------------------------

    def serve(self, endpoints: dict | None = None, **settings) -> Gateway:
        """Start the ZeroMQ gateway in front of this engine.

        Parameters
        ----------
        endpoints : dict, optional
            ``ingest`` (PULL), ``acked`` (ROUTER), ``query`` (ROUTER) and
            ``alerts`` (PUB) URLs; by default 127.0.0.1 ports 7710-7713.
        **settings
            ``max_message_bytes``, ``ack_timeout``, ``hwm``, and the restart
            limits of its threads ``max_restarts``, ``restart_window`` and
            ``restart_backoff``: see :class:`engine.net.gateway.GatewayConfig`.

        Returns
        -------
        Gateway
            Running; it takes two producer slots (fire-and-forget and acked
            ingest) and stops with :meth:`close`.
        """
        self._check()
        if self._gateway is not None:
            raise EngineError("this engine already serves a gateway")
        from ..net.gateway import Gateway, GatewayConfig

        gateway = Gateway(self, GatewayConfig(endpoints, **settings))
        self._gateway = gateway
        if self._info is not None:
            try:
                self._info.update({"endpoints": gateway.endpoints})
            except Exception as exc:  # noqa: BLE001 - informative only, as in _publish
                logging.getLogger("ringflow").warning("engine record not updated: %s", exc)
        return gateway

    @property
    def gateway(self) -> Gateway | None:
        """The running gateway, if :meth:`serve` started one."""
        return self._gateway

    # --- shutdown -------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    @property
    def state(self) -> str:
        """``ok``; ``recovering`` while a shard's worker is down, hung or
        being replaced; ``degraded`` once a shard was given up on
        (docs/faults.md)."""
        sup = self._supervisor
        return "ok" if sup is None else sup.state

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers now serving each shard (a replaced
        worker's successor's)."""
        return [rec.proc.pid for rec in self._supervisor.records]

    def _set_crash_hook(self, worker: int, mode: str | None = "exit") -> None:
        """Test hook: every worker started for shard ``worker`` from now on
        exits at once (``"exit"``: a crash loop), or waits before it serves
        (``"hold"``) until the hook is cleared (``None``)."""
        from .workermain import CRASH_EXIT, CRASH_HOLD

        self._check()
        code = {None: 0, "exit": CRASH_EXIT, "hold": CRASH_HOLD}[mode]
        _control.store_u64(self._control_segment.buf,
                           self.layout.worker_control(worker, "crash"), code)

    def close(self, timeout: float = 30.0) -> None:
        """Drain what was accepted, stop the workers, remove every segment.

        Safe to call twice.  A worker being replaced when it is called
        drains its shard once its replacement serves (within ``timeout``);
        the pending events of a degraded shard are not applied
        (docs/faults.md).

        In a process forked from the engine's it only marks this copy
        closed (as pyzmq's ``close`` and ``term`` do in a child): the
        workers, segments and producer slots are the parent's, and a
        ``with`` block or ``finally`` in the child must not raise over its
        own error.
        """
        if self._closed:
            return
        if os.getpid() != self._pid:
            self._closed = True
            self._finalizer.detach()
            return
        self._closing = True
        if self._info is not None:
            # First: attached readers and ``ringflow ls`` stop trusting it now.
            self._info.update({"state": "closed"})
            self._info.drop()
        try:
            if self._gateway is not None:
                # Stop reading the network first; what was read is submitted.
                self._gateway.close()
            try:
                self.flush(timeout)
            except EngineError:
                pass
            if self._supervisor is not None:
                # Before the stop words: the workers exit on purpose now.
                self._supervisor.close()
            lay = self.layout
            for w in range(self.config.workers):
                _control.store_u64(self._control_segment.buf, lay.worker_control(w, "stop"), 1)
                _control.ring_bell(self._control_segment.buf, lay.worker_block(w))
            deadline = time.monotonic() + timeout
            for p in self._procs:
                try:
                    p.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            if self._alerts is not None:
                # After the workers: the alerts of the drained events too.
                self._alerts.close()
            if self._data_dir is not None:
                # The last snapshot, of the drained tables: the next start
                # loads it and replays nothing.
                self._snapshot_stop.set()
                try:
                    with self._snapshot_lock:
                        self._snapshot()
                except Exception as exc:  # noqa: BLE001 - close() goes on: the journal has it
                    self._snapshot_error = f"at close: {type(exc).__name__}: {exc}"
                self.names.close_log()
            for handle in self._producers:
                if handle is not None:
                    handle._kernel.release_buffer()
            self._reader.close()
        finally:
            self._closed = True
            self._finalizer()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        if os.getpid() != self._pid:
            state = f"of process {self._pid}, unusable here"
        else:
            state = "closed" if self._closed else "running"
        return f"<Engine workers={self.config.workers} {state}>"
