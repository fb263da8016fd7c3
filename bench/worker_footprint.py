"""What one worker process costs: the modules it imports and its idle RSS.

A restarted worker is a fresh interpreter, so what it imports is what every
restart pays for.  The import count comes from a fresh interpreter importing
exactly what ``engine.core.workermain`` imports; the RSS from the workers of
a running engine, idle.

    python bench/worker_footprint.py
    python bench/worker_footprint.py --workers 4 --json footprint.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

# What a worker process imports before it drains (engine/core/workermain.py).
_WORKER_IMPORTS = (
    "import sys; import engine.core.workermain; "
    "from engine._worker import WorkerLoop; from engine.core.shm import Segment; "
    "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'zmq', 'asyncio', 'numpy'}); "
    "print(len(sys.modules), ','.join(heavy))"
)


def rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--settle", type=float, default=0.5,
                   help="seconds the idle workers run before RSS is read (default 0.5)")
    p.add_argument("--json", help="also write the figures as JSON here")
    args = p.parse_args(argv)

    out = subprocess.run([sys.executable, "-c", _WORKER_IMPORTS], capture_output=True,
                         text=True, check=True).stdout.split()
    modules, heavy = int(out[0]), (out[1] if len(out) > 1 else "")

    import engine

    with engine.Engine(workers=args.workers) as eng:
        # Idle workers park on their doorbells: RSS after start-up settles.
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline:
            time.sleep(0.05)
        rss = [rss_mib(pid) for pid in eng.pids]
    result = {"modules": modules, "heavy_modules": heavy.split(",") if heavy else [],
              "worker_rss_mib": rss}
    print(f"a worker imports {modules} modules (zmq/asyncio/numpy among them: {heavy or 'none'}); "
          f"idle RSS per worker: {', '.join(f'{r:.1f}' for r in rss)} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
