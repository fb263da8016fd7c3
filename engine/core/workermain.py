"""Entry point of a worker process: ``python -m engine.core.workermain SPEC``.

The engine starts each worker as a fresh interpreter (fork + exec), so a
worker never inherits the parent's threads, sockets or locks."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

# A worker's drain loop returns this often when idle, to notice an orphaning.
IDLE_NS = 100_000_000
#: Values of the crash word of a worker block (Engine._set_crash_hook).
CRASH_EXIT = 1
CRASH_HOLD = 2


def main(spec: dict) -> None:
    """Attach the engine's segments, signal readiness, drain until stopped.

    Parameters
    ----------
    spec : dict
        Segment names, byte offsets and settings, built by the engine.
    """
    # The engine coordinates shutdown; a Ctrl-C aimed at the terminal's
    # process group must not kill workers halfway through a batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A file size limit reached by the journal must fail the write (EFBIG,
    # counted, retried: docs/journal.md), not kill the worker.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    from .._worker import STATUS_STOPPED, WorkerLoop
    from .shm import Segment

    journal = spec["settings"].get("journal")
    if journal is not None:
        # A worker this one replaces may have been killed inside a journal
        # write; the torn frame it left is cut off before anything is
        # appended after it (a torn frame is only valid at the very end).
        from ..journal.wal import repair_tail

        cut = repair_tail(journal["dir"], journal["shard"])
        if cut is not None:
            print(f"ringflow worker {journal['shard']}: cut a torn journal frame of "
                  f"{cut['bytes']} bytes off {cut['path']} at byte {cut['offset']}",
                  file=sys.stderr)

    control = Segment.attach(spec["control"])
    table = Segment.attach(spec["table"])
    rules = Segment.attach(spec["rules"])
    loop = WorkerLoop(
        control.buf,
        table.buf,
        rules.buf,
        spec["rings"],
        spec["block"],
        spec["alert_ring"],
        spec["settings"],
        spec["wait_code"],
    )
    try:
        # The engine's test hook (Engine._set_crash_hook): a worker that dies
        # at start every time (a crash loop), or one held before it serves,
        # until the hook is cleared (the parent's start_timeout bounds it).
        while (hook := loop.crash_requested()) == CRASH_HOLD:
            time.sleep(0.005)
        if hook == CRASH_EXIT:
            os._exit(70)
        loop.mark_ready(os.getpid())
        while True:
            if loop.run(IDLE_NS) == STATUS_STOPPED:
                break
            if os.getppid() != spec["parent_pid"]:
                break
    finally:
        loop.release_buffers()
        control.close()
        table.close()
        rules.close()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
