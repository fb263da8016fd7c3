"""The journal's on-disk format: append-only segment files of CRC32C-framed
event batches, one directory per shard (docs/journal.md).

Modelled on Prometheus' WAL and Kafka's record batches: every batch is one
frame (length, CRC32C, the ordinal of its first event, its count, its
events), segments are rolled at a size and named by the first ordinal they
hold, and a crash can only leave a torn last frame, which is cut off and
counted.  Damage anywhere else stops a start with the file and the offset;
:func:`repair` cuts the journal there (as ``redis-check-aof --fix`` does).

This module writes and reads whole batches with no Python object per
event: a batch is one ``write`` of a header and the events' bytes, and a
replay hands out zero-copy views of each frame.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import crc32c as _crc
import numpy as np

from ..core.layout import (
    JOURNAL_EVENTS,
    JOURNAL_MAGIC,
    JOURNAL_VERSION,
    field_offset,
    struct_format,
)
from ..core.records import EVENT_DTYPE
from ..errors import EngineError

__all__ = [
    "FRAME", "FRAME_EVENTS", "SEGMENT_HEADER", "JournalCorrupt", "JournalError", "Scan",
    "SegmentWriter", "frame_bytes", "prune", "pruned_below", "repair", "repair_tail",
    "replay", "scan", "segment_name",
]

#: A segment file starts with: magic, format version, shard, reserved
#: (engine/core/layout.py ``JournalSegment``, which ext/journal.pxd writes).
SEGMENT_HEADER = struct.Struct(struct_format("JournalSegment"))
#: A frame: payload bytes, CRC32C (of the rest of the header and the
#: payload), ordinal of the first event, events, kind (``JournalFrame``).
FRAME = struct.Struct(struct_format("JournalFrame"))
#: Frame kind: a batch of EVENT_DTYPE records.
FRAME_EVENTS = JOURNAL_EVENTS
_CRC_FROM = field_offset("JournalFrame", "base")   # the CRC covers the frame from here
_EVENT = EVENT_DTYPE.itemsize
#: Largest frame payload a reader accepts: a length past it is damage, not
#: a request to read gigabytes.
MAX_FRAME_BYTES = 1 << 30


class JournalError(EngineError):
    """The journal could not be written or read."""


class JournalCorrupt(JournalError):
    """A frame before the journal's last one is damaged: the journal cannot
    be replayed past it without losing what follows.  ``ringflow repair``
    cuts it there.

    Attributes
    ----------
    path : str
        The segment file.
    offset : int
        Byte offset of the damaged frame in it.
    """

    def __init__(self, path: str, offset: int, why: str) -> None:
        super().__init__(f"journal damaged in {path} at byte {offset}: {why}; "
                         f"`ringflow repair` cuts the journal there (losing what follows)")
        self.path = path
        self.offset = offset


def segment_name(first_ordinal: int) -> str:
    """A segment's file name: its first ordinal, zero-padded so that names
    sort as numbers."""
    return f"{first_ordinal:020d}.wal"


def frame_bytes(base: int, events: np.ndarray) -> tuple[bytes, memoryview]:
    """The header of the frame of ``events`` (first ordinal ``base``) and
    the events' bytes, for one vectored write."""
    body = memoryview(np.ascontiguousarray(events, EVENT_DTYPE)).cast("B")
    header = bytearray(FRAME.pack(len(body), 0, base, len(events), FRAME_EVENTS))
    crc = _crc.crc32c(body, _crc.crc32c(bytes(header[_CRC_FROM:])))
    FRAME.pack_into(header, 0, len(body), crc, base, len(events), FRAME_EVENTS)
    return bytes(header), body


class SegmentWriter:
    """Appends frames to one shard's journal directory, rolling segments at
    ``segment_bytes``.

    Parameters
    ----------
    directory : str or Path
        The shard's directory (created if missing).
    shard : int
        Written into each segment's header, and checked on replay.
    segment_bytes : int
        A segment is closed once it holds at least this much.
    fsync : {"always", "interval", "never"}
        ``always``: ``fdatasync`` after every frame; otherwise the caller
        calls :meth:`sync` (every second for ``interval``).
    """

    def __init__(self, directory, shard: int, *, segment_bytes: int = 64 << 20,
                 fsync: str = "interval") -> None:
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync must be always, interval or never, got {fsync!r}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shard = shard
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._fd = -1
        self._size = 0
        #: Bytes written by this writer, frames and headers.
        self.bytes_written = 0

    def _open(self, first_ordinal: int) -> None:
        path = self.dir / segment_name(first_ordinal)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        header = SEGMENT_HEADER.pack(JOURNAL_MAGIC, JOURNAL_VERSION, self.shard, 0)
        os.write(self._fd, header)
        self._size = len(header)
        self.bytes_written += len(header)
        # The new name must survive a crash as well as its bytes.
        fsync_dir(self.dir)

    def append(self, base: int, events: np.ndarray) -> int:
        """Write one frame; returns its size in bytes.  Raises
        :class:`JournalError` (with the OS's reason) when the write fails."""
        if self._fd < 0 or self._size >= self.segment_bytes:
            self.close()
            self._open(base)
        header, body = frame_bytes(base, events)
        try:
            n = os.writev(self._fd, [header, body])
            if n != len(header) + len(body):
                raise OSError(f"short write: {n} of {len(header) + len(body)} bytes")
            if self.fsync == "always":
                os.fdatasync(self._fd)
        except OSError as exc:
            raise JournalError(f"writing the journal of shard {self.shard} failed: {exc}") \
                from exc
        self._size += n
        self.bytes_written += n
        return n

    def sync(self) -> None:
        """``fdatasync`` the open segment."""
        if self._fd >= 0:
            os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            if self.fsync != "never":
                os.fdatasync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (the journal, the
    snapshots and the alert log use it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Scan:
    """What :func:`scan` found in one shard's journal."""

    #: (segment path, first ordinal) in order.
    segments: list = field(default_factory=list)
    frames: int = 0
    events: int = 0
    #: Ordinal after the last valid frame (0 for an empty journal).
    end_ordinal: int = 0
    #: A torn last frame: (path, offset, bytes after it), or None.
    torn: tuple | None = None
    #: Frames repeating the one before them (a span journaled twice).
    duplicates: int = 0


def _segments(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.wal") if p.stem.isdigit())


def _frames(path: Path, data: memoryview, shard: int | None):
    """Yield (offset, base, count, payload view) of each valid frame of one
    segment, then raise _Bad at the first frame that is not."""
    if len(data) < SEGMENT_HEADER.size:
        raise _Bad(0, "segment header cut short", tail=True)
    magic, version, seg_shard, _ = SEGMENT_HEADER.unpack_from(data, 0)
    if magic != JOURNAL_MAGIC or version != JOURNAL_VERSION:
        raise _Bad(0, f"not a ringflow journal segment (magic {magic:#x}, version {version})")
    if shard is not None and seg_shard != shard:
        raise _Bad(0, f"segment of shard {seg_shard}, not {shard}")
    off = SEGMENT_HEADER.size
    end = len(data)
    while off < end:
        if end - off < FRAME.size:
            raise _Bad(off, "frame header cut short", tail=True)
        length, crc, base, count, kind = FRAME.unpack_from(data, off)
        if kind != FRAME_EVENTS or length != count * _EVENT or length > MAX_FRAME_BYTES:
            # Zeros to the end are a write the crash cut off (the file grew,
            # its blocks were never written); anything else is damage.
            raise _Bad(off, f"bad frame header (kind {kind}, {count} events, {length} bytes)",
                       tail=not any(data[off:end]))
        stop = off + FRAME.size + length
        if stop > end:
            raise _Bad(off, f"frame of {length} bytes cut short at {end - off - FRAME.size}",
                       tail=True)
        if _crc.crc32c(data[off + _CRC_FROM:stop]) != crc:
            # Only the very last frame can be a write half done.
            raise _Bad(off, "CRC32C mismatch", tail=stop == end)
        yield off, base, count, data[off + FRAME.size:stop]
        off = stop


class _Bad(JournalError):
    """A frame that is not valid; ``tail``: as a crash inside the last
    write leaves it (nothing whole after it)."""

    def __init__(self, offset: int, why: str, tail: bool = False) -> None:
        super().__init__(why)
        self.offset, self.why, self.tail = offset, why, tail


def _map(path: Path) -> memoryview:
    """A segment's bytes, mapped rather than read: a replay hands out views
    of them, and a copy would halve its speed."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return memoryview(b"")
        return memoryview(mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ))


def _walk(directory, shard, on_frame) -> Scan:
    directory = Path(directory)
    out = Scan()
    paths = _segments(directory)
    last_ordinal = None
    last_frame = None
    for i, path in enumerate(paths):
        out.segments.append((str(path), int(path.stem)))
        data = _map(path)
        try:
            for off, base, count, payload in _frames(path, data, shard):
                if last_ordinal is not None and base < last_ordinal:
                    if (base, count) == last_frame:
                        # The same span journaled again by a worker that
                        # replaced one killed after writing it and before
                        # recording so (docs/journal.md): skipped.
                        out.duplicates += 1
                        continue
                    raise _Bad(off, f"ordinal {base} after {last_ordinal}: out of order")
                last_ordinal = base + count
                last_frame = (base, count)
                out.frames += 1
                out.events += count
                out.end_ordinal = base + count
                on_frame(base, payload)
        except _Bad as bad:
            if i == len(paths) - 1 and bad.tail:
                # What a crash inside the last write leaves: its bytes were
                # never acknowledged whole.
                out.torn = (str(path), bad.offset, len(data) - bad.offset)
                return out
            raise JournalCorrupt(str(path), bad.offset, bad.why) from None
    return out


def scan(directory, shard: int | None = None) -> Scan:
    """Check every frame of one shard's journal.

    What a crash inside the last write leaves (the last segment ending in
    a frame cut short, a last frame whose CRC fails, or zeros to the end)
    is a torn tail, reported in ``Scan.torn``, not an error.  Any other bad
    frame raises :class:`JournalCorrupt` with the file and offset.
    """
    return _walk(directory, shard, lambda base, payload: None)


def replay(directory, from_ordinal: int = 0, shard: int | None = None
           ) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first ordinal, events)`` of every valid frame holding
    events at or after ``from_ordinal``, in order, as read-only views; a
    frame straddling it is cut to start there.  Raises
    :class:`JournalCorrupt` as :func:`scan`; stops at a torn tail."""
    frames: list = []

    def keep(base: int, payload: memoryview) -> None:
        count = len(payload) // _EVENT
        if base + count <= from_ordinal:
            return
        ev = np.frombuffer(payload, EVENT_DTYPE)
        skip = max(0, from_ordinal - base)
        frames.append((base + skip, ev[skip:]))

    _walk(directory, shard, keep)
    yield from frames


def prune(directory, below: int) -> list[str]:
    """Delete the segments of one shard's journal that hold only ordinals
    below ``below`` (a snapshot covers them): every segment whose successor
    starts at or below it.  The last segment always stays.  Returns the
    deleted paths."""
    directory = Path(directory)
    paths = _segments(directory)
    doomed = [p for p, successor in zip(paths, paths[1:]) if int(successor.stem) <= below]
    if not doomed:
        return []
    # Recorded first: a start without a snapshot this old must refuse rather
    # than replay what is left as if it were the whole journal.
    if below > pruned_below(directory):
        tmp = directory / (PRUNED_NAME + ".tmp")
        tmp.write_text(f"{below}\n")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, directory / PRUNED_NAME)
        fsync_dir(directory)
    for path in doomed:
        path.unlink(missing_ok=True)
    fsync_dir(directory)
    return [str(p) for p in doomed]


#: A shard directory's record of the ordinal its journal was pruned below.
PRUNED_NAME = "PRUNED"


def pruned_below(directory) -> int:
    """The ordinal below which a shard's journal was pruned (0: never)."""
    try:
        return int((Path(directory) / PRUNED_NAME).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def repair_tail(directory, shard: int | None = None) -> dict | None:
    """Cut a torn tail off the last segment of one shard's journal, reading
    that segment only: what a worker killed inside a write leaves for its
    replacement, which appends after it.

    Returns ``{"path", "offset", "bytes"}`` of the cut, or ``None``.  Damage
    that is not a torn tail raises :class:`JournalCorrupt`.
    """
    paths = _segments(Path(directory))
    if not paths:
        return None
    path = paths[-1]
    data = _map(path)
    try:
        for _ in _frames(path, data, shard):
            pass
    except _Bad as bad:
        if not bad.tail:
            raise JournalCorrupt(str(path), bad.offset, bad.why) from None
        cut = {"path": str(path), "offset": bad.offset, "bytes": len(data) - bad.offset}
        data.release()
        if bad.offset < SEGMENT_HEADER.size:
            path.unlink()
        else:
            os.truncate(path, bad.offset)
        fsync_dir(Path(directory))
        return cut
    return None


def repair(directory, shard: int | None = None) -> dict:
    """Cut one shard's journal after its last valid frame, as
    ``redis-check-aof --fix``: the damaged segment is truncated there and
    every later segment removed.

    Returns
    -------
    dict
        ``cut``: ``None`` when nothing was wrong, else ``{"path", "offset",
        "bytes"}`` of the cut; ``removed``: later segment files deleted;
        ``frames`` and ``events`` kept.
    """
    directory = Path(directory)
    paths = _segments(directory)
    kept_frames = kept_events = 0
    for i, path in enumerate(paths):
        data = _map(path)
        try:
            for _off, _base, count, _payload in _frames(path, data, shard):
                kept_frames += 1
                kept_events += count
        except _Bad as bad:
            cut = {"path": str(path), "offset": bad.offset, "bytes": len(data) - bad.offset}
            removed = [str(p) for p in paths[i + 1:]]
            data.release()
            if bad.offset < SEGMENT_HEADER.size:
                path.unlink()
            else:
                os.truncate(path, bad.offset)
            for p in paths[i + 1:]:
                p.unlink()
            fsync_dir(directory)
            return {"cut": cut, "removed": removed, "frames": kept_frames,
                    "events": kept_events}
    return {"cut": None, "removed": [], "frames": kept_frames, "events": kept_events}
