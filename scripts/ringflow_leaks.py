#!/usr/bin/env python3
"""List, and with --clean remove, what a crashed ringflow left behind:
shared-memory segments in /dev/shm whose creating process is gone, and
worker processes whose engine is gone.

A clean shutdown, an exception inside ``with Engine()``, and a killed engine
process all clean up by themselves (the tests check each); this is for the
case nobody planned for, such as ``kill -9`` of the resource tracker too.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

SHM = "/dev/shm"


def orphan_segments() -> list[str]:
    """Segments named ringflow-<pid>-... whose creator pid no longer runs."""
    found = []
    for name in sorted(os.listdir(SHM)):
        # sm_ringflow-<pid>-info: an engine's record (shared-memory-dict's name).
        if not name.removeprefix("sm_").startswith("ringflow-"):
            continue
        try:
            pid = int(name.removeprefix("sm_").split("-")[1])
        except (IndexError, ValueError):
            continue
        if not os.path.exists(f"/proc/{pid}"):
            found.append(name)
    return found


def orphan_workers() -> list[int]:
    """Worker processes (python -m engine.core.workermain) adopted by init."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if b"engine.core.workermain" in cmd and ppid == 1:
            found.append(int(entry))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clean", action="store_true",
                        help="unlink the orphaned segments and kill the orphaned workers")
    args = parser.parse_args(argv)
    segments, workers = orphan_segments(), orphan_workers()
    for name in segments:
        print(f"segment {SHM}/{name}")
        if args.clean:
            os.unlink(os.path.join(SHM, name))
    for pid in workers:
        print(f"worker pid {pid}")
        if args.clean:
            os.kill(pid, signal.SIGKILL)
    if not segments and not workers:
        print("nothing left behind")
    return 1 if (segments or workers) and not args.clean else 0


if __name__ == "__main__":
    sys.exit(main())
