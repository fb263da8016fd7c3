"""The alert log on disk: the engine's numbered status changes, kept across
restarts so that a subscriber can ask for what it missed after the engine
came back (docs/health.md, Alerts; PROTOCOL.md, op ``alerts``).

Two files in ``DATA_DIR/alerts/``: ``alerts.log``, appended to, and
``alerts.log.1``, the one before it; and ``id``, the log's id (alert
numbers are comparable only under one id).  When the current file holds about
one in-memory log's worth of alerts it becomes ``alerts.log.1`` (replacing
the older one) and a new one starts, so the two together always cover the
in-memory log and the disk use is bounded.

Each append is a frame, as in the event journal: a header (magic, payload
bytes, CRC32C of the payload) and the payload.  A payload is either a
batch of one worker's alerts (kind ``A``: first sequence number, worker,
count, then the ALERT_DTYPE records and their per-topic sequence numbers)
or one engine alert (kind ``E``: sequence number, topic sequence number,
the alert as JSON).  A start reads both files frame by frame and stops at
the first damaged or torn frame of the current one, cutting it there (a
crash mid-append tears at most the last frame).

Frames go to the operating system as they are made; they are synced at
close, and on every append with ``fsync="always"``.  An alert raised in
the last moments before the machine (not just the process) failed can
therefore be missing after the restart; the series' state is not: it comes
back from the event journal.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import struct
from collections.abc import Iterator
from pathlib import Path

import crc32c as _crc
import numpy as np

from ..core.records import ALERT_DTYPE
from .wal import fsync_dir

__all__ = ["AlertLogFile", "ALERTS_DIR"]

#: The alert log's directory under a data dir.
ALERTS_DIR = "alerts"
_CURRENT = "alerts.log"
_PREVIOUS = "alerts.log.1"
_ID = "id"
_MAGIC = b"RFAL"
_HEADER = struct.Struct("<4sII")          # magic, payload bytes, CRC32C
_BATCH = struct.Struct("<cQhI")           # b"A", first seq, worker, count
_ENGINE = struct.Struct("<cQQ")           # b"E", seq, topic seq
_RECORD = ALERT_DTYPE.itemsize + 8        # a record and its topic seq
_MAX_PAYLOAD = 1 << 28

log = logging.getLogger("ringflow.alerts")


class AlertLogFile:
    """Appends the alert log's frames to ``root/alerts/`` and reads them
    back at a start.

    Parameters
    ----------
    root : path
        The data dir.
    capacity : int
        Alerts the in-memory log holds: a file is rotated past that many.
    fsync : bool
        Sync every frame (the engine's ``fsync="always"``).
    """

    def __init__(self, root, capacity: int, fsync: bool = False) -> None:
        self.dir = Path(root) / ALERTS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.capacity = capacity
        self.fsync = fsync
        self.errors = 0
        self.error: str | None = None
        self._fd = -1
        self._records = 0

    # --- reading --------------------------------------------------------

    def frames(self) -> Iterator[tuple]:
        """The frames on disk, oldest first: ``("A", seq, worker, records,
        topic_seqs)`` or ``("E", seq, topic_seq, dict)``.  Cuts a torn or
        damaged tail off the current file."""
        for name in (_PREVIOUS, _CURRENT):
            path = self.dir / name
            if not path.exists():
                continue
            data = path.read_bytes()
            good, records = 0, 0
            for frame, end in _parse(data):
                if frame is None:
                    break
                good = end
                records += len(frame[3]) if frame[0] == "A" else 1
                yield frame
            if good < len(data):
                log.warning("alert log %s: %d damaged or torn bytes at its end cut off",
                            path, len(data) - good)
                if name == _CURRENT:
                    with open(path, "r+b") as f:
                        f.truncate(good)
            if name == _CURRENT:
                self._records = records

    def log_id(self) -> str:
        """The log's id, kept in ``alerts/id`` (made at the first start).

        A failed write removes the file (see :meth:`_fail`): the numbers
        after it may be given again after a restart, so that restart makes
        a new id and readers start over instead of mistaking one alert for
        another."""
        path = self.dir / _ID
        try:
            found = path.read_text().strip()
            if len(found) == 16 and all(c in "0123456789abcdef" for c in found):
                return found
        except FileNotFoundError:
            pass
        new = secrets.token_hex(8)
        tmp = self.dir / (_ID + ".tmp")
        with open(tmp, "w") as f:
            f.write(new + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(self.dir)
        return new

    # --- writing --------------------------------------------------------

    def open(self) -> None:
        """Open the current file for appending (after :meth:`frames`)."""
        self._fd = os.open(self.dir / _CURRENT, os.O_WRONLY | os.O_CREAT | os.O_APPEND
                           | os.O_CLOEXEC, 0o644)

    def append_batch(self, seq: int, worker: int, records: np.ndarray,
                     topic_seqs: np.ndarray) -> None:
        """One worker's alerts, numbered from ``seq``."""
        body = b"".join((_BATCH.pack(b"A", seq, worker, len(records)), records.tobytes(),
                         topic_seqs.astype("<u8", copy=False).tobytes()))
        self._write(body, len(records))

    def append_engine(self, seq: int, topic_seq: int, alert: dict) -> None:
        """One engine alert."""
        self._write(_ENGINE.pack(b"E", seq, topic_seq) + json.dumps(alert).encode(), 1)

    def _write(self, body: bytes, records: int) -> None:
        if self._fd < 0:
            if self.error is not None:
                # Broken since an earlier failure: not written, counted.
                self.errors += 1
            return
        frame = _HEADER.pack(_MAGIC, len(body), _crc.crc32c(body)) + body
        at = None
        try:
            if self._records >= self.capacity:
                self._rotate()
            at = os.lseek(self._fd, 0, os.SEEK_END)
            if os.write(self._fd, frame) != len(frame):
                raise OSError(28, "short write (disk full?)")
            if self.fsync:
                os.fdatasync(self._fd)
            self._records += records
        except OSError as exc:
            self._fail(exc, at)

    def _fail(self, exc: OSError, at: int | None) -> None:
        # The in-memory log still has the alert, and the subscribers get
        # it: a failing disk costs the copy across a restart, counted.  The
        # file stops here (cut back to its last whole frame), and its id
        # goes, so that a restart numbers under a new one.
        self.errors += 1
        self.error = f"{type(exc).__name__}: {exc}"
        log.error("alert log %s: %s; alerts are no longer kept across a restart "
                  "(the running engine still serves them)", self.dir, self.error)
        if self._fd >= 0:
            try:
                if at is not None:
                    os.ftruncate(self._fd, at)
            except OSError:
                pass
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1
        try:
            (self.dir / _ID).unlink(missing_ok=True)
            fsync_dir(self.dir)
        except OSError:
            pass

    def _rotate(self) -> None:
        os.fdatasync(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.replace(self.dir / _CURRENT, self.dir / _PREVIOUS)
        self.open()
        self._records = 0
        fsync_dir(self.dir)

    def close(self) -> None:
        """Sync and close the current file."""
        if self._fd < 0:
            return
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            self.errors += 1
            self.error = f"{type(exc).__name__}: {exc}"
        os.close(self._fd)
        self._fd = -1


def _parse(data: bytes) -> Iterator[tuple]:
    """``(frame, end offset)`` for each good frame; ``(None, offset)`` at the
    first bad one."""
    off = 0
    view = memoryview(data)
    while off < len(data):
        if off + _HEADER.size > len(data):
            yield None, off
            return
        magic, size, crc = _HEADER.unpack_from(data, off)
        start, end = off + _HEADER.size, off + _HEADER.size + size
        if magic != _MAGIC or size > _MAX_PAYLOAD or end > len(data):
            yield None, off
            return
        body = view[start:end]
        if _crc.crc32c(body) != crc:
            yield None, off
            return
        frame = _decode(body)
        if frame is None:
            yield None, off
            return
        yield frame, end
        off = end


def _decode(body: memoryview):
    kind = bytes(body[:1])
    if kind == b"A" and len(body) >= _BATCH.size:
        _, seq, worker, n = _BATCH.unpack_from(body)
        if len(body) != _BATCH.size + n * _RECORD:
            return None
        rec_end = _BATCH.size + n * ALERT_DTYPE.itemsize
        records = np.frombuffer(body[_BATCH.size:rec_end], ALERT_DTYPE).copy()
        topic_seqs = np.frombuffer(body[rec_end:], "<u8").copy()
        return ("A", seq, worker, records, topic_seqs)
    if kind == b"E" and len(body) >= _ENGINE.size:
        _, seq, topic_seq = _ENGINE.unpack_from(body)
        try:
            alert = json.loads(bytes(body[_ENGINE.size:]))
        except ValueError:
            return None
        return ("E", seq, topic_seq, alert)
    return None
