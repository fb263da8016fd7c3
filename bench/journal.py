"""The journal's format against this machine's disk (issue 15, first part):
the disk's own sequential write bandwidth with ``fdatasync``, the journal
writer under each fsync policy, and replay with every CRC checked.

The engine does not journal yet (docs/journal.md): this measures the
format and the disk it will be bound by, in one run.

* disk: ``--mib`` MiB written in 4 MiB ``write`` calls to a fresh file,
  then one ``fdatasync``, against the clock;
* writer: frames of ``--batch`` events (a worker's span) through
  ``SegmentWriter`` with ``fsync`` ``never``, ``interval`` (``fdatasync``
  once a second, as the engine will) and ``always`` (every frame);
* replay: every frame read back from the mapped segments, CRC32C checked.

Bytes on disk per event are reported (32 bytes of record plus the frame
header's share).  Files go into a temporary directory under ``--dir``
(default: the current directory, on the disk a data dir would use) and are
removed.

    python bench/journal.py
    python bench/journal.py --mib 512 --batch 65536 --json journal.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import engine
from engine.journal import wal

try:
    import common as C
except ImportError:  # pragma: no cover
    from bench import common as C


def disk_bandwidth(d: Path, mib: int) -> float:
    """Bytes/s of sequential writes made durable by one fdatasync."""
    chunk = os.urandom(4 << 20)
    path = d / "disk.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        t0 = time.perf_counter()
        for _ in range(mib // 4):
            os.write(fd, chunk)
        os.fdatasync(fd)
        took = time.perf_counter() - t0
    finally:
        os.close(fd)
        path.unlink()
    return (mib << 20) / took


def write_rate(d: Path, policy: str, frames: int, ev: np.ndarray) -> tuple[float, int]:
    """Events/s through SegmentWriter, and bytes written."""
    target = d / f"shard-{policy}"
    w = wal.SegmentWriter(target, 0, fsync=policy)
    base, last_sync = 1, time.perf_counter()
    t0 = time.perf_counter()
    for _ in range(frames):
        w.append(base, ev)
        base += len(ev)
        if policy == "interval" and time.perf_counter() - last_sync >= 1.0:
            w.sync()
            last_sync = time.perf_counter()
    w.close()
    took = time.perf_counter() - t0
    return frames * len(ev) / took, w.bytes_written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--mib", type=int, default=256,
                   help="MiB written by the disk and writer measurements (default 256)")
    p.add_argument("--batch", type=int, default=65_536,
                   help="events per frame, as a worker's span (default 65536)")
    p.add_argument("--always-frames", type=int, default=200,
                   help="frames written with fsync=always (default 200: one fdatasync each)")
    p.add_argument("--dir", default=".", help="where the temporary files go (default .)")
    p.add_argument("--json", help="also write the figures as JSON here")
    args = p.parse_args(argv)
    con = C.console()
    C.print_header(con, "journal format and disk", args)
    report = C.Report("journal", vars(args))

    ev = np.zeros(args.batch, engine.EVENT_DTYPE)
    ev["key"] = np.arange(args.batch, dtype=np.uint64)
    ev["value"] = 1.0
    frame = wal.FRAME.size + ev.nbytes
    frames = max(1, (args.mib << 20) // frame)
    d = Path(tempfile.mkdtemp(prefix="ringflow-journal-bench-", dir=args.dir))
    try:
        disk = disk_bandwidth(d, args.mib)
        rows = []
        for policy, n in (("never", frames), ("interval", frames),
                          ("always", min(frames, args.always_frames))):
            rate, written = write_rate(d, policy, n, ev)
            rows.append((policy, rate, written / (n * args.batch)))
        t0 = time.perf_counter()
        replayed = sum(len(e) for _, e in wal.replay(d / "shard-never"))
        replay_rate = replayed / (time.perf_counter() - t0)
    finally:
        shutil.rmtree(d, ignore_errors=True)

    from rich.table import Table
    t = Table(title=f"journal writer, frames of {args.batch:,} events")
    for col in ("fsync", "events/s", "MB/s", "bytes/event", "of the disk's bandwidth"):
        t.add_column(col, justify="right")
    for policy, rate, per_event in rows:
        t.add_row(policy, C.fmt_rate(rate), f"{rate * per_event / 1e6:.0f}", f"{per_event:.4f}",
                  f"{rate * per_event / disk:.2f}")
        report.rows.append(C.Result("writer", {"fsync": policy},
                                    {"events_per_s": rate, "bytes_per_event": per_event}))
    con.print(f"disk: {disk / 1e6:.0f} MB/s sequential with one fdatasync "
              f"({args.mib} MiB)")
    con.print(t)
    con.print(f"replay (mapped segments, every CRC32C checked): "
              f"{C.fmt_rate(replay_rate)} events")
    report.rows.append(C.Result("disk", {"mib": args.mib}, {"bytes_per_s": disk}))
    report.rows.append(C.Result("replay", {}, {"events_per_s": replay_rate}))
    report.target("replay", ">= 20 M events/s", C.fmt_rate(replay_rate), replay_rate >= 20e6)
    report.finish(con, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
