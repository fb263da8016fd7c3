"""A snapshot holds state rows byte for byte, so one written with another
row layout (the 256-byte rows before issue 16, or any later change) is
refused with an error that says so, never read as rows of this build and
never skipped for an older one of the same kind."""

from __future__ import annotations

import json
import struct

import crc32c
import numpy as np
import pytest
import zstandard

from engine.core.records import STATE_DTYPE
from engine.errors import EngineError
from engine.journal import snapshot as S


def forge(root, name: str, version: int, meta: dict, rows: bytes) -> None:
    """A whole snapshot file (right sizes, right checksum) of any version
    and description, as another build would have written it."""
    stored = zstandard.ZstdCompressor(level=1).compress(rows)
    body = json.dumps(meta).encode()
    header = S.HEADER.pack(S.MAGIC, version, len(meta["shards"]), len(body), len(rows),
                           len(stored), 1)
    crc = crc32c.crc32c(stored, crc32c.crc32c(body, crc32c.crc32c(header)))
    (root / name).write_bytes(header + body + stored + struct.pack("<I4s", crc, S.END_MAGIC))


def test_a_snapshot_of_this_layout_reads_back(tmp_path):
    rows = np.zeros(3, STATE_DTYPE)
    rows["count"] = [1, 2, 3]
    path = S.write_snapshot(tmp_path, S.Snapshot([5], [rows]))
    snap = S.read_snapshot(path)
    assert (snap.rows[0] == rows).all() and snap.from_ordinals == [5]


def test_a_version_1_snapshot_of_256_byte_rows_is_refused(tmp_path):
    meta = {"shards": [{"from_ordinal": 1, "rows": 3, "marks": 0}], "names": {}, "rules": None}
    forge(tmp_path, S.snapshot_name(10), 1, meta, bytes(3 * 256))
    with pytest.raises(S.SnapshotLayoutError, match="256-byte state rows") as info:
        S.read_snapshot(tmp_path / S.snapshot_name(10))
    assert f"{STATE_DTYPE.itemsize}-byte" in str(info.value)
    assert isinstance(info.value, EngineError)
    # Not skipped for an older snapshot (of the same layout, or none).
    forge(tmp_path, S.snapshot_name(5), 1, meta, bytes(3 * 256))
    with pytest.raises(S.SnapshotLayoutError):
        S.load_newest(tmp_path)


def test_a_snapshot_of_another_layout_of_the_same_size_is_refused(tmp_path):
    """Same version, same row size, one field moved: the sizes agree, the
    layout does not, and the file is refused rather than misread."""
    layout = S.row_layout()
    a, b = layout["fields"][1], layout["fields"][2]
    a[1], b[1] = b[1], a[1]
    meta = {"shards": [{"from_ordinal": 1, "rows": 2, "marks": 0}], "names": {}, "rules": None,
            "row_layout": layout}
    forge(tmp_path, S.snapshot_name(10), S.VERSION, meta, bytes(2 * STATE_DTYPE.itemsize))
    with pytest.raises(S.SnapshotLayoutError, match="laid out differently"):
        S.load_newest(tmp_path)


def test_a_damaged_snapshot_is_still_skipped(tmp_path):
    rows = np.zeros(1, STATE_DTYPE)
    good = S.write_snapshot(tmp_path, S.Snapshot([1], [rows], created_ns=5))
    bad = S.write_snapshot(tmp_path, S.Snapshot([2], [rows], created_ns=10))
    data = bytearray(bad.read_bytes())
    data[-20] ^= 0xFF
    bad.write_bytes(bytes(data))
    snap, skipped = S.load_newest(tmp_path)
    assert snap.path == str(good) and len(skipped) == 1
