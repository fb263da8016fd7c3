"""Compare two built source trees of ringflow on the same benchmarks, in one run.

For a change that must not change speed (a refactor), a figure measured
yesterday is no baseline on a shared, noisy machine: this script runs each
benchmark script of both trees alternately, round after round (A B, then B A,
so that drift hits both alike), and reports every figure's median per tree
and the ratio of the medians, with the spread of the rounds.

    python bench/compare_trees.py /path/to/old-tree . --rounds 3
    python bench/compare_trees.py OLD NEW --benches kernel,embedded --quick

Each tree must be built in place (``python setup.py build_ext --inplace``);
the scripts run with ``PYTHONPATH`` set to their tree, so each imports its
own ``engine``.  Figures are every ``events_per_s`` a script writes to its
``--json`` output, named by the row and the path to it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

DEFAULT_BENCHES = ("kernel", "embedded", "gateway")
# Per-script settings that keep one round in tens of seconds.
DEFAULT_ARGS = {
    "kernel": ["--series", "1k,100k", "--repeats", "5"],
    "embedded": ["--workers", "2", "--batches", "65536", "--repeats", "3",
                 "--baseline-events", "20000"],
    "gateway": ["--batches", "4096", "--window", "16", "--no-python-sender", "--repeats", "3",
                "--baseline-events", "20000"],
}


def figures(result: dict) -> dict[str, float]:
    """Every ``events_per_s`` in a script's JSON rows, keyed by row name and path."""
    out: dict[str, float] = {}

    def walk(node, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "events_per_s" and isinstance(value, (int, float)):
                    out[path or "events_per_s"] = float(value)
                else:
                    walk(value, f"{path}/{key}" if path else key)

    for row in result.get("rows", []):
        name = row.get("name", "?")
        before = set(out)
        walk(row.get("values", {}), name)
        # A row's own events_per_s repeats one of its parts' (kernel.py's
        # headline is its in-cache figure): keep the parts alone.
        if name in out and len(set(out) - before) > 1:
            del out[name]
    return out


def run_once(tree: Path, bench: str, extra: list[str], timeout: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="rf-compare-") as tmp:
        out = Path(tmp) / f"{bench}.json"
        cmd = [sys.executable, str(tree / "bench" / f"{bench}.py"), "--json", str(out), *extra]
        env = dict(os.environ, PYTHONPATH=str(tree))
        done = subprocess.run(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, timeout=timeout)
        if done.returncode != 0:
            raise SystemExit(f"{bench} in {tree} failed (rc {done.returncode}):\n"
                             f"{done.stderr[-2000:]}")
        return figures(json.loads(out.read_text()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("old", type=Path, help="the baseline tree (built in place)")
    p.add_argument("new", type=Path, help="the tree under test (built in place)")
    p.add_argument("--benches", default=",".join(DEFAULT_BENCHES),
                   help=f"comma-separated scripts of bench/ (default {','.join(DEFAULT_BENCHES)})")
    p.add_argument("--rounds", type=int, default=3,
                   help="runs of each script per tree, alternating trees (default 3)")
    p.add_argument("--quick", action="store_true", help="pass --quick to every script")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds one script run may take (default 900)")
    p.add_argument("--json", type=Path, help="also write every figure of every round here")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    for name, tree in trees.items():
        if not (tree / "engine").is_dir():
            p.error(f"{name} tree {tree} has no engine/ package")
    benches = [b.strip() for b in args.benches.split(",") if b.strip()]
    # Wide enough for the figures' full names when the output is a file.
    console = Console(width=max(Console().width, 150))
    runs: dict[str, dict[str, dict[str, list[float]]]] = {}
    started = time.perf_counter()
    for bench in benches:
        extra = ["--quick"] if args.quick else list(DEFAULT_ARGS.get(bench, []))
        per_tree: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
        for r in range(args.rounds):
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            for which in order:
                console.print(f"[dim]{bench}: round {r + 1}/{args.rounds}, {which} tree "
                              f"({time.perf_counter() - started:.0f} s in)[/dim]")
                for key, value in run_once(trees[which], bench, extra, args.timeout).items():
                    per_tree[which].setdefault(key, []).append(value)
        runs[bench] = per_tree

    table = Table(title=f"new vs old: medians of {args.rounds} alternating rounds "
                        f"(M events/s; range in brackets)")
    for col in ("bench", "figure", "old", "new", "new / old"):
        table.add_column(col, justify="left" if col in ("bench", "figure") else "right",
                         no_wrap=True)
    ratios = []
    for bench, per_tree in runs.items():
        for key in per_tree["old"]:
            old, new = per_tree["old"][key], per_tree["new"].get(key)
            if not new:
                continue
            mo, mn = statistics.median(old), statistics.median(new)
            ratio = mn / mo if mo else float("nan")
            ratios.append(ratio)
            table.add_row(bench, key, f"{mo / 1e6:.1f} [{min(old) / 1e6:.1f}-{max(old) / 1e6:.1f}]",
                          f"{mn / 1e6:.1f} [{min(new) / 1e6:.1f}-{max(new) / 1e6:.1f}]",
                          f"{ratio:.2f}")
    console.print(table)
    if ratios:
        console.print(f"median ratio over {len(ratios)} figures: {statistics.median(ratios):.3f}")
    if args.json:
        args.json.write_text(json.dumps({"trees": {k: str(v) for k, v in trees.items()},
                                         "rounds": args.rounds, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
