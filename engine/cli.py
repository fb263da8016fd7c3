"""The ``ringflow`` command (also ``python -m engine``)."""

from __future__ import annotations

import argparse
import sys

from .config import WAIT_STRATEGIES


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringflow",
        description="ringflow: a multi-process event engine with a Cython core.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="run an engine on its defaults, feed it a synthetic fleet, query it",
        description="Start an engine, ingest synthetic server-health events for a few "
                    "seconds with a progress line, then print throughput, a few series "
                    "and the engine's counters.",
    )
    demo.add_argument("--workers", type=_positive_int, default=2,
                      help="worker processes (default: 2)")
    demo.add_argument("--seconds", type=_positive_float, default=5.0,
                      help="seconds of ingest (default: 5)")
    demo.add_argument("--hosts", type=_positive_int, default=2000,
                      help="hosts in the synthetic fleet, five metrics each (default: 2000)")
    demo.add_argument("--batch", type=_positive_int, default=16384,
                      help="events per submitted batch (default: 16384)")
    demo.add_argument("--wait", choices=WAIT_STRATEGIES, default="block",
                      help="wait strategy of workers and producers (default: block)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run

        run(workers=args.workers, seconds=args.seconds, hosts=args.hosts, batch=args.batch,
            wait=args.wait)
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands first


if __name__ == "__main__":
    sys.exit(main())
