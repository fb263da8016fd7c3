"""Snapshots of a running engine's state (issue 15, docs/journal.md): every
shard's rows, with the journal ordinal each shard's replay starts from, the
names and the rules, in one file written atomically and checksummed.

Taken without stopping anything, as a *fuzzy* snapshot: for each shard the
ordinal below which every event is applied (the worker's
``applied_ordinal``) is read first, then every row is copied under its
seqlock.  A row may already hold later events; the replay skips those,
since a row records the ordinal of the last event it applied
(docs/faults.md).  So ``load(snapshot); replay(journal, from=ordinal)``
gives exactly the state of the journal's end, however much the workers did
during the copy.

The file is written as Redis writes its RDB file and Prometheus its
checkpoints: to a temporary name, fsynced, renamed into place, and the
directory fsynced, so a crash leaves the previous snapshot or the new one,
never a torn one under the real name.  A CRC32C over the whole file guards
against damage after that; a snapshot that fails it is skipped and the one
before it used, which is why two are kept and the journal is pruned only up
to the older one.

Layout (little-endian)::

    header   magic "RFS1", version, shards, meta bytes, rows bytes,
             stored bytes, created (ns)
    meta     JSON: per shard its from-ordinal, row and mark counts; names;
             rules; the state row's layout (``row_layout``: STATE_DTYPE's
             fields, offsets and size), which a reader must share
    rows     every shard's rows (STATE_DTYPE), shard after shard, then every
             shard's producer marks ((key, mark) u64 pairs), as one zstd
             frame (``stored bytes`` of it)
    trailer  CRC32C of everything before it, magic "RFSE"

The rows are compressed with zstd (level 1, on every core): a table's rows
shrink about 9x (1 M series: 256 MB -> 28 MB, with the 256-byte rows before
issue 16), so that a snapshot is bound
by the copy and the compressor rather than by the disk.
"""

from __future__ import annotations

import json
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import crc32c as _crc
import numpy as np
import zstandard

from ..core.records import STATE_DTYPE
from ..errors import EngineError
from .wal import fsync_dir

__all__ = ["Snapshot", "SnapshotError", "SnapshotLayoutError", "list_snapshots", "load_newest",
           "write_snapshot"]

HEADER = struct.Struct("<4sIIIQQQ")
TRAILER = struct.Struct("<I4s")
MAGIC = b"RFS1"
END_MAGIC = b"RFSE"
#: 2: 384-byte rows and the row layout in the description (issue 16); a
#: version 1 file holds 256-byte rows.
VERSION = 2
PREFIX, SUFFIX = "snapshot-", ".snap"
#: Snapshots kept: the newest, and the one a damaged newest falls back to.
KEEP = 2


class SnapshotError(EngineError):
    """A snapshot file is damaged or not a snapshot (it is skipped, and the
    one before it used)."""


class SnapshotLayoutError(SnapshotError):
    """A whole snapshot written with another state row layout (another
    version of ringflow): never skipped, since the one before it has the
    same layout, and never read as rows of this one."""


def row_layout() -> dict:
    """This build's state row layout as a snapshot records it."""
    return {"bytes": STATE_DTYPE.itemsize,
            "fields": [[name, STATE_DTYPE.fields[name][1], STATE_DTYPE.fields[name][0].str,
                        list(STATE_DTYPE.fields[name][0].shape)] for name in STATE_DTYPE.names]}


def _check_layout(path, version: int, meta: dict | None) -> None:
    got = (meta or {}).get("row_layout") if version == VERSION else None
    if got == row_layout():
        return
    size = got.get("bytes", "?") if isinstance(got, dict) else 256 if version == 1 else "?"
    raise SnapshotLayoutError(
        f"{path}: written by another version of ringflow, with {size}-byte state rows laid "
        f"out differently from this one's {STATE_DTYPE.itemsize}-byte rows; its rows cannot "
        "be read.  Start the ringflow that wrote it, or move the data dir's snapshots "
        "elsewhere to rebuild the state from the journal alone (only if the journal was "
        "never pruned: otherwise the start refuses)")


@dataclass
class Snapshot:
    """One snapshot, loaded or about to be written."""

    #: Per shard: the ordinal its journal replay starts from.
    from_ordinals: list
    #: Per shard: its rows (STATE_DTYPE).
    rows: list
    #: Per shard: its producer marks, (key, mark) uint64 pairs.
    marks: list = field(default_factory=list)
    names: dict = field(default_factory=dict)
    rules: dict | None = None
    created_ns: int = 0
    path: str | None = None

    @property
    def series(self) -> int:
        return sum(len(r) for r in self.rows)


def snapshot_name(created_ns: int) -> str:
    return f"{PREFIX}{created_ns:020d}{SUFFIX}"


def list_snapshots(root) -> list[Path]:
    """Snapshot files of a data dir, oldest first."""
    root = Path(root)
    return sorted(p for p in root.glob(f"{PREFIX}*{SUFFIX}")
                  if p.name[len(PREFIX):-len(SUFFIX)].isdigit())


def write_snapshot(root, snap: Snapshot) -> Path:
    """Write ``snap`` into the data dir ``root`` atomically; returns its
    path.  Older snapshots beyond the newest :data:`KEEP` are deleted."""
    root = Path(root)
    created = snap.created_ns or time.time_ns()
    marks = [np.ascontiguousarray(m, np.uint64).reshape(-1, 2)
             for m in (snap.marks or [np.zeros((0, 2), np.uint64)] * len(snap.rows))]
    # Written flat (a memoryview of an empty 2-d array cannot be cast).
    flat_marks = [m.reshape(-1) for m in marks]
    meta = json.dumps({
        "shards": [{"from_ordinal": int(o), "rows": len(r), "marks": len(m)}
                   for o, r, m in zip(snap.from_ordinals, snap.rows, marks)],
        "names": {kind: {str(k): v for k, v in table.items()}
                  for kind, table in snap.names.items()},
        "rules": snap.rules,
        "row_layout": row_layout(),
    }).encode()
    parts = [np.ascontiguousarray(r, STATE_DTYPE) for r in snap.rows] + flat_marks
    rows_bytes = sum(r.nbytes for r in parts)
    packer = zstandard.ZstdCompressor(level=1, threads=-1)
    chunks = packer.compressobj(size=rows_bytes)
    stored = [chunks.compress(memoryview(r).cast("B")) for r in parts]
    stored.append(chunks.flush())
    stored_bytes = sum(len(c) for c in stored)
    header = HEADER.pack(MAGIC, VERSION, len(snap.rows), len(meta), rows_bytes, stored_bytes,
                         created)
    final = root / snapshot_name(created)
    tmp = root / f".{final.name}.tmp"
    crc = _crc.crc32c(meta, _crc.crc32c(header))
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(meta)
        for chunk in stored:
            crc = _crc.crc32c(chunk, crc)
            f.write(chunk)
        f.write(TRAILER.pack(crc, END_MAGIC))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(root)
    for old in list_snapshots(root)[:-KEEP]:
        old.unlink(missing_ok=True)
    return final


def read_snapshot(path) -> Snapshot:
    """Read and check one snapshot file; :class:`SnapshotError` if it is
    damaged."""
    path = Path(path)
    data = path.read_bytes()
    view = memoryview(data)
    if len(data) < HEADER.size + TRAILER.size:
        raise SnapshotError(f"{path}: cut short ({len(data)} bytes)")
    magic, version, shards, meta_len, rows_bytes, stored_bytes, created = \
        HEADER.unpack_from(view, 0)
    if magic != MAGIC or not 1 <= version <= VERSION:
        raise SnapshotError(f"{path}: not a ringflow snapshot (magic {magic!r}, "
                            f"version {version})")
    end = HEADER.size + meta_len + stored_bytes
    if end + TRAILER.size != len(data):
        raise SnapshotError(f"{path}: {len(data)} bytes, its header says "
                            f"{end + TRAILER.size}")
    crc, end_magic = TRAILER.unpack_from(view, end)
    if end_magic != END_MAGIC or _crc.crc32c(view[:end]) != crc:
        raise SnapshotError(f"{path}: checksum mismatch")
    try:
        meta = json.loads(bytes(view[HEADER.size:HEADER.size + meta_len]))
    except ValueError as exc:
        raise SnapshotError(f"{path}: bad description: {exc}") from None
    # Before the rows' sizes are checked: rows of another layout are refused
    # as such, not as damage (a damaged one is skipped, this one must not be).
    _check_layout(path, version, meta if isinstance(meta, dict) else None)
    try:
        per_shard = meta["shards"]
        if len(per_shard) != shards or \
                sum(int(s["rows"]) * STATE_DTYPE.itemsize + int(s["marks"]) * 16
                    for s in per_shard) != rows_bytes:
            raise ValueError("shard table does not match the header")
        raw = zstandard.ZstdDecompressor().decompress(
            view[HEADER.size + meta_len:end], max_output_size=rows_bytes)
        if len(raw) != rows_bytes:
            raise ValueError(f"{len(raw)} bytes of rows, the header says {rows_bytes}")
    except (ValueError, KeyError, TypeError, zstandard.ZstdError) as exc:
        raise SnapshotError(f"{path}: bad description: {exc}") from None
    rows, marks, off = [], [], 0
    for shard in per_shard:
        n = int(shard["rows"])
        rows.append(np.frombuffer(raw, STATE_DTYPE, n, off))
        off += n * STATE_DTYPE.itemsize
    for shard in per_shard:
        n = int(shard["marks"])
        marks.append(np.frombuffer(raw, np.uint64, 2 * n, off).reshape(n, 2))
        off += 16 * n
    names = {kind: {int(k): v for k, v in table.items()}
             for kind, table in meta.get("names", {}).items()}
    return Snapshot([int(s["from_ordinal"]) for s in per_shard], rows, marks, names,
                    meta.get("rules"), created, str(path))


def read_from_ordinals(path) -> list[int]:
    """The per-shard replay ordinals of a snapshot, from its header and
    description only (the file is trusted: it was checked when loaded or
    written)."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER.size)
            meta_len = HEADER.unpack(head)[3]
            meta = json.loads(f.read(meta_len))
        return [int(s["from_ordinal"]) for s in meta["shards"]]
    except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise SnapshotError(f"{path}: cannot read its description: {exc}") from None


def load_newest(root) -> tuple[Snapshot | None, list[str]]:
    """The newest snapshot of a data dir that reads whole, and what was
    skipped on the way (``"path: why"`` of each damaged newer one).  The
    temporary file of a write a crash interrupted is removed first.

    Raises
    ------
    SnapshotLayoutError
        The newest whole snapshot holds rows of another layout."""
    skipped = []
    for tmp in Path(root).glob(f".{PREFIX}*{SUFFIX}.tmp"):
        tmp.unlink(missing_ok=True)
        skipped.append(f"{tmp}: an interrupted write, removed")
    for path in reversed(list_snapshots(root)):
        try:
            return read_snapshot(path), skipped
        except SnapshotLayoutError:
            raise
        except (SnapshotError, OSError) as exc:
            skipped.append(str(exc))
    return None, skipped
