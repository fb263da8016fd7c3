"""The journal's on-disk format (engine/journal/wal.py, docs/journal.md):
frames written and read back whole, segments rolled and named by their
first ordinal, a torn tail cut at any byte recovered and counted, damage
anywhere else named by file and offset, and repair cutting there.

CRC32C comes from the crc32c package; a plain table-driven CRC32C here is
the reference it is checked against."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from engine import EVENT_DTYPE
from engine.journal import wal

FEW = settings(max_examples=60, deadline=None,
               phases=[p for p in Phase if p is not Phase.explain])
ROOT = Path(__file__).resolve().parents[2]


def crc32c_ref(data: bytes, crc: int = 0) -> int:
    """Castagnoli CRC, reflected polynomial 0x82F63B78, bit by bit."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def events(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, EVENT_DTYPE)
    ev["key"] = rng.integers(1, 2**63, n, dtype=np.uint64)
    ev["ts"] = rng.integers(0, 2**62, n)
    ev["metric"] = rng.integers(0, 2**32, n, dtype=np.uint32)
    ev["value"] = rng.normal(size=n)
    return ev


def write(tmp_path: Path, sizes, segment_bytes: int = 1 << 20) -> list[np.ndarray]:
    batches = [events(n, seed=i) for i, n in enumerate(sizes)]
    base = 1
    with wal.SegmentWriter(tmp_path, 0, segment_bytes=segment_bytes, fsync="never") as w:
        for ev in batches:
            w.append(base, ev)
            base += len(ev)
    return batches


def test_crc32c_matches_the_reference():
    assert wal._crc.crc32c(b"123456789") == crc32c_ref(b"123456789") == 0xE3069283
    blob = events(7).tobytes()
    assert wal._crc.crc32c(blob) == crc32c_ref(blob)


def test_frames_are_read_back_whole_and_segments_named_by_first_ordinal(tmp_path):
    batches = write(tmp_path, [1, 100, 5000, 3, 4096] * 4, segment_bytes=200_000)
    s = wal.scan(tmp_path, shard=0)
    assert s.torn is None and s.frames == 20
    assert s.events == sum(len(b) for b in batches) == s.end_ordinal - 1
    assert len(s.segments) > 1
    for path, first in s.segments:
        assert Path(path).name == wal.segment_name(first)
    got = list(wal.replay(tmp_path, shard=0))
    assert [b for b, _ in got] == list(np.cumsum([1] + [len(b) for b in batches])[:-1])
    assert all((g == b).all() for (_, g), b in zip(got, batches))
    # From the middle of a frame: the frame is cut to start there.
    frm = 1 + 1 + 100 + 40           # 40 events into the third frame
    tail = list(wal.replay(tmp_path, frm))
    assert tail[0][0] == frm and (tail[0][1] == batches[2][40:]).all()


@FEW
@given(st.data())
def test_a_torn_tail_is_cut_at_any_byte_and_the_rest_recovered(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("j")
    batches = write(d, [10, 20, 30])
    last = sorted(d.glob("*.wal"))[-1]
    size = last.stat().st_size
    frame = wal.FRAME.size + 30 * EVENT_DTYPE.itemsize
    cut = data.draw(st.integers(size - frame + 1, size - 1))
    os.truncate(last, cut)
    s = wal.scan(d)
    assert s.torn is not None and s.frames == 2 and s.events == 30
    assert s.torn[1] == size - frame and s.torn[2] == cut - (size - frame)
    got = list(wal.replay(d))
    assert len(got) == 2 and (got[1][1] == batches[1]).all()
    r = wal.repair(d)
    assert r["cut"]["offset"] == size - frame and r["events"] == 30
    assert wal.scan(d).torn is None and last.stat().st_size == size - frame


def test_zeros_after_the_last_frame_are_a_torn_tail(tmp_path):
    write(tmp_path, [10, 20])
    last = sorted(tmp_path.glob("*.wal"))[-1]
    with open(last, "ab") as f:
        f.write(bytes(4096))
    s = wal.scan(tmp_path)
    assert s.torn is not None and s.torn[2] == 4096 and s.events == 30


@FEW
@given(st.data())
def test_a_bit_flip_in_the_middle_is_named_then_repaired_to_the_prefix(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("j")
    write(d, [50, 60, 70, 80])
    path = sorted(d.glob("*.wal"))[-1]
    blob = bytearray(path.read_bytes())
    # A byte inside one of the first three frames (not the last one).
    first_frames_end = (wal.SEGMENT_HEADER.size
                        + 3 * wal.FRAME.size + (50 + 60 + 70) * EVENT_DTYPE.itemsize)
    at = data.draw(st.integers(wal.SEGMENT_HEADER.size, first_frames_end - 1))
    blob[at] ^= 1 << data.draw(st.integers(0, 7))
    path.write_bytes(bytes(blob))
    with pytest.raises(wal.JournalCorrupt) as info:
        wal.scan(d)
    assert info.value.path == str(path)
    assert wal.SEGMENT_HEADER.size <= info.value.offset <= at
    assert "ringflow repair" in str(info.value)
    r = wal.repair(d)
    assert r["cut"]["offset"] == info.value.offset
    s = wal.scan(d)
    assert s.torn is None and s.events == r["events"] < 260


def test_damage_in_an_earlier_segment_stops_the_scan(tmp_path):
    write(tmp_path, [4096] * 6, segment_bytes=200_000)
    first = sorted(tmp_path.glob("*.wal"))[0]
    blob = bytearray(first.read_bytes())
    blob[-5] ^= 0xFF                      # the last frame of a segment that is not last
    first.write_bytes(bytes(blob))
    with pytest.raises(wal.JournalCorrupt):
        wal.scan(tmp_path)
    r = wal.repair(tmp_path)
    assert len(r["removed"]) == len(list(tmp_path.glob("*.wal"))) + len(r["removed"]) - 1
    assert wal.scan(tmp_path).torn is None


def test_a_foreign_file_or_shard_is_refused(tmp_path):
    write(tmp_path, [5])
    with pytest.raises(wal.JournalCorrupt, match="shard 0, not 1"):
        # One segment only: the last, but a wrong shard is no torn write.
        for p in sorted(tmp_path.glob("*.wal")):
            p.rename(p.with_name(wal.segment_name(1)))
        write(tmp_path / "other", [5])
        (tmp_path / "other" / wal.segment_name(1)).rename(tmp_path / wal.segment_name(9))
        wal.scan(tmp_path, shard=1)


def test_ringflow_repair_reports_and_cuts(tmp_path):
    shard = tmp_path / "shard-000"
    write(shard, [10, 20])
    last = sorted(shard.glob("*.wal"))[-1]
    os.truncate(last, last.stat().st_size - 7)
    run = [sys.executable, "-m", "engine", "repair"]
    env = {**os.environ, "COLUMNS": "200"}
    check = subprocess.run([*run, "--check", str(tmp_path)], capture_output=True, text=True,
                           cwd=ROOT, env=env, timeout=60)
    assert check.returncode == 1 and "torn tail" in check.stdout
    fix = subprocess.run([*run, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=60)
    assert fix.returncode == 0 and "kept 1 batches, 10 events" in fix.stdout
    again = subprocess.run([*run, "--check", str(tmp_path)], capture_output=True, text=True,
                           cwd=ROOT, env=env, timeout=60)
    assert again.returncode == 0, again.stdout


@FEW
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300)), min_size=1, max_size=12),
       st.sampled_from([4096, 1 << 20]))
def test_the_workers_writer_writes_the_same_bytes(tmp_path_factory, sizes, segment_bytes):
    """The worker's C writer (ext/journal.pxd), with spans in one piece or
    two (a ring that wraps), writes exactly what engine.journal.wal writes."""
    from engine import _worker

    c_dir, py_dir = tmp_path_factory.mktemp("c"), tmp_path_factory.mktemp("py")
    frames, base = [], 1
    for i, (n, split) in enumerate(sizes):
        ev = events(n, seed=i)
        frames.append((base, ev, min(split, n)))
        base += n + 3                      # ordinals may skip (sweeps take some)
    written = _worker.journal_write(str(c_dir), 2, segment_bytes, False, frames)
    with wal.SegmentWriter(py_dir, 2, segment_bytes=segment_bytes, fsync="never") as w:
        for b, ev, _ in frames:
            w.append(b, ev)
    c_files = sorted(p.name for p in c_dir.glob("*.wal"))
    assert c_files == sorted(p.name for p in py_dir.glob("*.wal"))
    for name in c_files:
        assert (c_dir / name).read_bytes() == (py_dir / name).read_bytes(), name
    assert written == w.bytes_written
    got = list(wal.replay(c_dir, shard=2))
    assert [(b, len(e)) for b, e in got] == [(b, len(ev)) for b, ev, _ in frames]


def test_a_span_journaled_twice_is_skipped_not_damage(tmp_path):
    from engine import _worker

    ev = events(10)
    _worker.journal_write(str(tmp_path), 0, 1 << 20, False,
                          [(1, ev, 10), (1, ev, 4), (11, ev, 0)])
    s = wal.scan(tmp_path)
    assert s.torn is None and s.duplicates == 1 and s.frames == 2 and s.events == 20
