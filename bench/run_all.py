"""Run every ringflow benchmark and summarise the targets.

Each benchmark script runs in its own process (one at a time: the machine
has few cores), writes its results as JSON into the output directory, and
the summary collects every target with its measured value.  A Markdown
version of the summary is written too (``summary.md``), ready to paste.

    python bench/run_all.py --quick          # a smoke run, about a minute
    python bench/run_all.py                  # the default settings of every script
    python bench/run_all.py --only ring,kernel --pytest
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCHES = ("ring", "kernel", "embedded", "idle", "latency", "rss", "gateway", "alert_latency",
           "query", "query_capacity")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--quick", action="store_true", help="pass --quick to every script")
    p.add_argument("--only", default=",".join(BENCHES),
                   help=f"comma-separated subset of {','.join(BENCHES)}")
    p.add_argument("--out", default=str(ROOT / "bench-results"),
                   help="directory for the JSON results and summary.md (default bench-results/)")
    p.add_argument("--pytest", action="store_true",
                   help="also run the pytest-benchmark suite (bench/test_bench_kernels.py)")
    p.add_argument("--pause", type=float, default=1.0,
                   help="seconds of rest between scripts, so that one's tail does not "
                        "disturb the next")
    args, extra = p.parse_known_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        p.error(f"unknown benchmarks: {', '.join(unknown)}")

    durations: dict[str, float] = {}
    failed: list[str] = []
    for i, name in enumerate(names):
        if i:
            time.sleep(args.pause)
        cmd = [sys.executable, str(HERE / f"{name}.py"), "--json", str(out / f"{name}.json")]
        if args.quick:
            cmd.append("--quick")
        cmd += extra
        print(f"\n$ {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=ROOT)
        durations[name] = time.perf_counter() - t0
        if rc != 0:
            failed.append(name)
            print(f"!! {name} exited with {rc}", flush=True)

    if args.pytest:
        cmd = [sys.executable, "-m", "pytest", str(HERE / "test_bench_kernels.py"),
               "--benchmark-only", "-q", f"--benchmark-json={out / 'pytest-benchmark.json'}"]
        print(f"\n$ {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        if subprocess.call(cmd, cwd=ROOT) != 0:
            failed.append("pytest")
        durations["pytest"] = time.perf_counter() - t0

    reports = {}
    for name in names:
        f = out / f"{name}.json"
        if f.exists() and name not in failed:
            reports[name] = json.loads(f.read_text())
    (out / "all.json").write_text(json.dumps(reports, indent=2) + "\n")
    summarize(reports, durations, failed, out, args.quick)
    return 1 if failed else 0


def summarize(reports: dict, durations: dict, failed: list[str], out: Path,
              quick: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False)
    if not con.is_terminal:
        con = Console(highlight=False, width=160)
    t = Table(title="ringflow benchmarks: targets" + (" (quick run)" if quick else ""))
    for col in ("bench", "target", "goal", "measured", "met", "s"):
        t.add_column(col)
    md = ["| bench | target | goal | measured | met |", "|---|---|---|---|---|"]
    for name, rep in reports.items():
        for tg in rep["targets"]:
            met = {True: "MET", False: "MISSED", None: "n/a"}[tg["met"]]
            style = {"MET": "green", "MISSED": "red"}.get(met, "dim")
            t.add_row(name, tg["target"], tg["goal"], tg["measured"], f"[{style}]{met}[/]",
                      f"{durations.get(name, 0):.0f}")
            md.append(f"| {name} | {tg['target']} | {tg['goal']} | {tg['measured']} | {met} |")
    for name in failed:
        t.add_row(name, "-", "-", "-", "[red]FAILED[/]", f"{durations.get(name, 0):.0f}")
        md.append(f"| {name} | - | - | - | FAILED |")
    con.print(t)
    total = sum(durations.values())
    con.print(f"[dim]{len(reports)} benchmark(s) in {total:.0f} s; results in {out}/[/]")
    ctx = next(iter(reports.values()), {}).get("context_start", {})
    md.append("")
    md.append(f"Measured {ctx.get('time', '?')} on {ctx.get('cpus', '?')} cores "
              f"(python {ctx.get('python', '?')}, numpy {ctx.get('numpy', '?')})"
              + (", quick settings" if quick else "") + "; medians over repeats.")
    (out / "summary.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    sys.exit(main())
