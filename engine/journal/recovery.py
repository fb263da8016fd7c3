"""Starting on a data dir: claim it, check it fits the engine, and replay
each shard's journal into its table before the workers start
(docs/journal.md, "Recovery").

The replay is the one ``docs/faults.md`` proves exact for a worker fault:
``Table.apply(events, settings, alerts, base=ordinal)`` with the ordinals the
events had when they were first applied, so the state after it equals the
state before the stop for every journaled event, and an event is never
applied twice (a row that already reads applied for an ordinal skips it).
The alerts the replay raises are not sent: the statuses come back as they
were, and only changes after the start are published.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.discovery import pid_alive
from ..errors import ConfigError, CorruptState, EngineError, raise_for_status
from .wal import pruned_below, repair, replay, scan

__all__ = ["DataDir", "Recovery", "ShardRecovery", "recover_shard", "shard_dir"]

#: The data dir's description of the engine that wrote it.
META_NAME = "ringflow.json"
META_FORMAT = 1
LOCK_NAME = "LOCK"


def shard_dir(root: Path, shard: int) -> Path:
    """The journal directory of one shard."""
    return Path(root) / f"shard-{shard:03d}"


@dataclass
class ShardRecovery:
    """What a start found and replayed in one shard's journal."""

    shard: int
    segments: int = 0
    frames: int = 0
    events: int = 0
    #: Ordinal after the last replayed event: the worker's journal goes on above it.
    end_ordinal: int = 0
    #: A torn last frame cut off: ``{"path", "offset", "bytes"}``, or None.
    torn: dict | None = None
    #: Frames journaled twice by a worker replaced mid-span, skipped.
    duplicates: int = 0
    #: Series loaded from the snapshot, before the replay.
    series_loaded: int = 0
    seconds: float = 0.0


@dataclass
class Recovery:
    """What a start recovered from its data dir (``Engine.stats()["journal"]``)."""

    shards: list = field(default_factory=list)
    seconds: float = 0.0
    #: The snapshot loaded: ``{"path", "created_ns", "series"}``, or None.
    snapshot: dict | None = None
    #: Newer snapshots that were damaged and skipped: "path: why".
    snapshots_skipped: list = field(default_factory=list)
    #: Names read back from the names log (learnt after the snapshot).
    names: int = 0
    #: Wall time (ns since the epoch) the recovery finished.
    at_ns: int = 0

    @property
    def events(self) -> int:
        return sum(s.events for s in self.shards)

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.shards)

    @property
    def torn_tails(self) -> int:
        return sum(1 for s in self.shards if s.torn)

    def to_dict(self) -> dict:
        return {
            "events": self.events, "frames": self.frames, "seconds": self.seconds,
            "at_ns": self.at_ns, "torn_tails": self.torn_tails,
            "snapshot": self.snapshot, "snapshots_skipped": list(self.snapshots_skipped),
            "names": self.names,
            "shards": [asdict(s) for s in self.shards],
        }


class DataDir:
    """A data dir claimed by one engine: a ``LOCK`` file held with
    ``flock`` for the engine's life (as Prometheus' lock file), so two
    engines never append to one journal; the kernel drops the lock when the
    holder dies, SIGKILL included.

    Parameters
    ----------
    root : str or Path
        Created if missing.
    workers : int
        The engine's shards.  Events are sharded by ``mix64(key) % workers``,
        so a journal only replays into the shard count that wrote it: a
        different count is refused with a clear error.
    """

    def __init__(self, root, workers: int, timeout: float = 30.0) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the data dir {self.root}: {exc.strerror}") from None
        self.lock_fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                               0o644)
        try:
            self._lock(timeout)
            os.ftruncate(self.lock_fd, 0)
            os.write(self.lock_fd, f"{os.getpid()}\n".encode())
            self._check_meta(workers)
            for w in range(workers):
                shard_dir(self.root, w).mkdir(exist_ok=True)
        except BaseException:
            self.close()
            raise
        self.workers = workers

    def _lock(self, timeout: float) -> None:
        """Take the lock.  Held by a live engine: refused at once.  Held
        after its engine died (its workers finish draining and exit within
        a fraction of a second): waited for, up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            holder = self._holder()
            if (holder is not None and _alive(holder)) or time.monotonic() > deadline:
                raise EngineError(
                    f"the data dir {self.root} is in use by another engine"
                    + (f" (pid {holder})" if holder else "")
                    + f": its {LOCK_NAME} file is locked")
            time.sleep(0.01)

    def _holder(self) -> int | None:
        try:
            return int(os.pread(self.lock_fd, 32, 0).split()[0])
        except (ValueError, IndexError, OSError):
            return None

    def _check_meta(self, workers: int) -> None:
        meta_path = self.root / META_NAME
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
                written = int(meta["workers"])
            except (ValueError, KeyError, TypeError) as exc:
                raise EngineError(f"{meta_path} is not a ringflow data dir description "
                                  f"({exc}); move it away to start afresh") from None
            if written != workers:
                raise ConfigError(
                    f"the data dir {self.root} was written by an engine of {written} workers; "
                    f"start with workers={written} (events are sharded by key over the "
                    f"workers, so its journal replays into that many shards only)")
            return
        # Written whole or not at all: temporary file, fsync, rename, and an
        # fsync of the directory so the name survives a crash too.
        tmp = self.root / (META_NAME + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"format": META_FORMAT, "workers": workers}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, meta_path)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def shard(self, w: int) -> Path:
        return shard_dir(self.root, w)

    def close(self) -> None:
        """Release this process's hold of the lock (idempotent); workers
        that inherited it hold it until they exit."""
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        # This process: another engine of it holds the data dir.
        return True
    return pid_alive(pid)


def recover_shard(directory, shard: int, table, settings, alert_scratch: np.ndarray,
                  rows: np.ndarray | None = None, from_ordinal: int = 0,
                  marks: np.ndarray | None = None) -> ShardRecovery:
    """Load one shard's table (a fresh one, before its worker starts) from
    a snapshot's ``rows``, if any, and replay its journal from
    ``from_ordinal``, the snapshot's position.

    A torn tail (a crash inside the last write) is cut off first and
    reported; damage anywhere else raises
    :class:`engine.journal.wal.JournalCorrupt` naming the file and offset.
    Alerts the replay raises go to ``alert_scratch`` and are dropped: they
    were published, or were due, before the stop.
    """
    t0 = time.perf_counter()
    out = ShardRecovery(shard)
    if rows is not None and len(rows):
        raise_for_status(table.load_rows(rows), f"loading the snapshot of shard {shard}")
        out.series_loaded = len(rows)
    if marks is not None and len(marks):
        raise_for_status(table.load_marks(marks), f"loading the producer marks of shard {shard}")
    found = scan(directory, shard)
    if found.torn is not None:
        path, offset, nbytes = found.torn
        repair(directory, shard)
        out.torn = {"path": path, "offset": offset, "bytes": nbytes}
    out.segments = len(found.segments)
    out.duplicates = found.duplicates
    pruned = pruned_below(directory)
    if pruned > from_ordinal:
        raise CorruptState(
            f"the journal of shard {shard} in {directory} was pruned below ordinal {pruned} "
            f"by a snapshot that cannot be read now (starting from ordinal {from_ordinal} "
            f"would lose what it held); restore a good snapshot into the data dir")
    for base, events in replay(directory, from_ordinal, shard):
        table.apply(events, settings, alert_scratch, base=base)
        out.frames += 1
        out.events += len(events)
    # Past everything the journal holds (markers and sweeps leave no ordinal
    # in a row): the worker's next frame must come after its last one.
    out.end_ordinal = max(found.end_ordinal, from_ordinal)
    table.advance_ordinals(out.end_ordinal)
    out.seconds = time.perf_counter() - t0
    return out
