"""The journal against this machine's disk (issue 15): the disk's own
sequential write bandwidth with ``fdatasync``, the journal writer under
each fsync policy, replay with every CRC checked, and the engine itself
with the journal off, ``never``, ``interval`` and ``always``, all in one
run, so that every ratio compares figures measured side by side.

* disk: ``--mib`` MiB written in 4 MiB ``write`` calls to a fresh file,
  then one ``fdatasync``, against the clock;
* writer: frames of ``--batch`` events (a worker's span) through
  ``SegmentWriter`` with ``fsync`` ``never``, ``interval`` (``fdatasync``
  once a second, as the engine will) and ``always`` (every frame);
* replay: every frame read back from the mapped segments, CRC32C checked;
* engine: an embedded engine (``--workers``) submitting batches of
  ``--batch`` events over ``--series`` series for ``--seconds`` per policy,
  sustained (the journal grows by the disk's rate meanwhile); then a new
  engine started on the data dir, whose recovery rate is reported;
* gateway: the same engine serving its gateway, a sender process blasting
  frames of 4096 events at the PULL endpoint, and the acked endpoint with
  16 messages in flight (bench/gateway.py's sender and timing), for
  ``--gateway-seconds`` per repeat, per policy.

Bytes on disk per event are reported (32 bytes of record plus the frame
header's share).  Files go into a temporary directory under ``--dir``
(default: the current directory, on the disk a data dir would use) and are
removed.

    python bench/journal.py
    python bench/journal.py --seconds 60 --json journal.json
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


def engine_rate(d: Path, policy: str, args, ev: np.ndarray) -> dict:
    """Sustained embedded ingest under one policy ("off": no data dir),
    then the recovery of a new engine on its data dir."""
    data = None if policy == "off" else d / f"engine-{policy}"
    # Snapshots only when asked: the replay below is of the whole journal.
    cfg = dict(workers=args.workers, data_dir=data, fsync="interval" if data is None else policy,
               snapshot_interval=None)
    ev = ev.copy()
    with engine.Engine(**cfg) as eng:
        eng.submit(ev)
        eng.flush()
        start = eng.stats()["applied"]
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            C.advance_time(ev)
            eng.submit(ev)
        eng.flush()
        took = time.perf_counter() - t0
        stats = eng.stats()
    # close() took one snapshot (the only one: nothing is pruned).
    snap = eng._snapshot_info
    applied = stats["applied"] - start
    out = {"events_per_s": applied / took, "events": stats["applied"]}
    if data is not None:
        out["bytes_per_event"] = stats["journal"]["bytes"] / stats["applied"]
        out["snapshot_s"] = snap["seconds"]
        out["snapshot_series"] = snap["series"]
        # The journal alone, as after a crash before any snapshot.
        for path in data.glob("snapshot-*.snap"):
            path.unlink()
        t0 = time.perf_counter()
        with engine.Engine(**cfg) as eng:
            rec = eng.recovery
            start_s = time.perf_counter() - t0
        out["replay_events_per_s"] = rec.events / rec.seconds
        out["replayed"] = rec.events
        out["start_s"] = start_s
        shutil.rmtree(data, ignore_errors=True)
    return out


def snapshot_time(d: Path, series: int) -> dict:
    """One snapshot of ``series`` series (while nothing else runs), and the
    start that loads it."""
    data = d / "snapshot"
    ev = np.zeros(series, engine.EVENT_DTYPE)
    ev["key"] = np.arange(1, series + 1, dtype=np.uint64)
    ev["metric"] = 1
    ev["ts"] = C.TS0 + np.arange(series)
    ev["value"] = np.random.default_rng(3).normal(50.0, 15.0, series)
    cfg = dict(workers=2, data_dir=data, table_capacity=_pow2(series), snapshot_interval=None)
    with engine.Engine(**cfg) as eng:
        for i in range(0, series, 65536):
            eng.submit(ev[i:i + 65536])
        eng.flush()
        takes = [eng.snapshot_now() for _ in range(3)]
    t0 = time.perf_counter()
    with engine.Engine(**cfg) as eng:
        load_s = eng.recovery.seconds
        start_s = time.perf_counter() - t0
    shutil.rmtree(data, ignore_errors=True)
    return {"series": series, "seconds": C.median([t["seconds"] for t in takes]),
            "bytes": takes[-1]["bytes"], "load_s": load_s, "start_s": start_s}


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def gateway_rates(d: Path, policy: str, args) -> dict:
    """PULL and acked ingest through the gateway under one policy."""
    try:
        import gateway as G
    except ImportError:  # pragma: no cover - imported as bench.journal
        from bench import gateway as G

    data = None if policy == "off" else d / f"gateway-{policy}"
    cfg = dict(workers=args.workers, data_dir=data, fsync="interval" if data is None else policy,
               table_capacity=max(args.series, 1024))
    endpoints = G.free_endpoints()
    out = {}
    with engine.Engine(**cfg) as eng:
        eng.submit(C.all_series_once(args.series))
        eng.flush()
        stream = G.replay_events(1 << 20, args.series, 7, C.TS0 + 10**15)
        eng.serve(endpoints=endpoints)
        sender = G.Sender(endpoints)
        try:
            nfr = sender.load(stream, 4096)
            for row in G.run_modes(eng, sender, [("c", 0), ("acked", 16)], 4096, nfr,
                                   args.gateway_seconds, 3):
                out[row["mode"]] = row["events_per_s"]
        finally:
            sender.close()
    if data is not None:
        shutil.rmtree(data, ignore_errors=True)
    return out


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
    p.add_argument("--seconds", type=float, default=60.0,
                   help="sustained engine ingest per policy, seconds (default 60)")
    p.add_argument("--workers", type=int, default=2, help="engine workers (default 2)")
    p.add_argument("--snapshot-series", type=int, default=1_000_000,
                   help="series of the snapshot measurement (default 1000000)")
    p.add_argument("--gateway-seconds", type=float, default=5.0,
                   help="gateway ingest per repeat (3 repeats) and policy, seconds "
                        "(default 5; 0 skips the gateway)")
    p.add_argument("--series", type=int, default=100_000,
                   help="series the engine's events go to (default 100000)")
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
        for policy in ("never", "interval", "always"):
            shutil.rmtree(d / f"shard-{policy}", ignore_errors=True)
        stream = C.gen_events(args.batch, args.series)
        engine_rows = {}
        con.print(f"snapshot of {args.snapshot_series:,} series ...")
        snapshot = snapshot_time(d, args.snapshot_series)
        gateway_rows = {}
        for policy in ("off", "never", "interval", "always"):
            con.print(f"engine, journal {policy}: {args.seconds:g} s ...")
            engine_rows[policy] = engine_rate(d, policy, args, stream)
            if args.gateway_seconds > 0:
                con.print(f"gateway, journal {policy} ...")
                gateway_rows[policy] = gateway_rates(d, policy, args)
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
    off = engine_rows["off"]["events_per_s"]
    t = Table(title=f"embedded engine, {args.workers} workers, batches of {args.batch:,}, "
                    f"{args.seconds:g} s sustained per policy")
    for col in ("journal", "events/s", "vs off", "bytes/event", "MB/s to disk",
                "replay events/s", "start s", "snapshot s"):
        t.add_column(col, justify="right")
    for policy, row in engine_rows.items():
        rate, per_event = row["events_per_s"], row.get("bytes_per_event")
        t.add_row(policy, C.fmt_rate(rate), f"{rate / off:.2f}",
                  "-" if per_event is None else f"{per_event:.2f}",
                  "-" if per_event is None else f"{rate * per_event / 1e6:.0f}",
                  C.fmt_rate(row["replay_events_per_s"]) if per_event else "-",
                  f"{row['start_s']:.2f}" if per_event else "-",
                  f"{row['snapshot_s']:.2f}" if per_event else "-")
        report.rows.append(C.Result("engine", {"journal": policy}, row))
    con.print(t)
    if gateway_rows:
        t = Table(title="through the gateway: PULL (frames of 4096) and acked (16 in flight), "
                        "median of 3")
        for col in ("journal", "PULL events/s", "vs off", "acked events/s", "vs off"):
            t.add_column(col, justify="right")
        g_off = gateway_rows["off"]
        for policy, row in gateway_rows.items():
            t.add_row(policy, C.fmt_rate(row["c"]), f"{row['c'] / g_off['c']:.2f}",
                      C.fmt_rate(row["acked"]), f"{row['acked'] / g_off['acked']:.2f}")
            report.rows.append(C.Result("gateway", {"journal": policy}, row))
        con.print(t)
    con.print(f"snapshot of {snapshot['series']:,} series: {snapshot['seconds']:.2f} s "
              f"(median of 3, {snapshot['bytes'] / 1e6:.0f} MB on disk); a start loading it: "
              f"{snapshot['load_s']:.2f} s of recovery, {snapshot['start_s']:.2f} s in all")
    report.rows.append(C.Result("snapshot", {"series": snapshot["series"]}, snapshot))
    report.target("snapshot of 1 M series", "<= 1 s", f"{snapshot['seconds']:.2f} s",
                  snapshot["seconds"] <= 1.0 if snapshot["series"] >= 1_000_000 else None)
    interval = engine_rows["interval"]
    bound = disk / interval["bytes_per_event"]
    goal = min(0.8 * bound, 0.6 * off)
    report.target("engine, fsync=interval",
                  f">= min(80% of disk/bytes per event = {C.fmt_rate(0.8 * bound)}, "
                  f"60% of off = {C.fmt_rate(0.6 * off)})",
                  C.fmt_rate(interval["events_per_s"]), interval["events_per_s"] >= goal)
    report.target("engine replay", ">= 20 M events/s",
                  C.fmt_rate(interval["replay_events_per_s"]),
                  interval["replay_events_per_s"] >= 20e6)
    report.rows.append(C.Result("disk", {"mib": args.mib}, {"bytes_per_s": disk}))
    report.rows.append(C.Result("replay", {}, {"events_per_s": replay_rate}))
    report.target("replay", ">= 20 M events/s", C.fmt_rate(replay_rate), replay_rate >= 20e6)
    report.finish(con, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
