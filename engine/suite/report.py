"""``report.md`` and the PNG plots of a suite run (see :mod:`engine.suite.runner`).

The plots need matplotlib (headless Agg backend); without it the report
says so and only the tables are written.
"""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["write_report", "summary_rows", "target_rows", "CONTENDER_HEAD"]

_MiB = 1024 * 1024


def _f(v, fmt: str = "{:,.0f}", none: str = "-") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return fmt.format(v)


def _ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:,.1f}"


def _table(head: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)) -> list[str]:
    """A markdown table; columns in ``left`` (negative: from the end) are
    left-aligned, the others (figures) right-aligned."""
    n = len(head)
    lefts = {i % n for i in left}
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join("---" if i in lefts else "---:" for i in range(n)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _correct(r: dict) -> str:
    if "error" in r:
        return "ERROR"
    if r.get("correct"):
        return "yes"
    return f"**WRONG** ({r.get('mismatches')} mismatches)"


def _range(r: dict) -> str:
    rates = r.get("repeat_events_per_s") or []
    if len(rates) < 2:
        return "-"
    return f"{min(rates) / 1e6:,.2f}-{max(rates) / 1e6:,.2f} M"


def _stale(r: dict) -> str:
    counts = r.get("repeat_stale_overwrites")
    if counts and len(counts) > 1:
        return ", ".join(f"{c:,}" for c in counts)
    return _f(r.get("stale_overwrites"))


def summary_rows(results: dict, section: str = "runs") -> list[list[str]]:
    """A contenders table as rows of text: name, events per run, events/s
    (median), the range over repeats, x baseline, p50/p99/p99.9 ms, RSS MiB,
    CPU %, stale overwrites (each repeat), correct?  ``section`` is
    ``"runs"`` (1 producer) or ``"contended"``."""
    rows = []
    runs = (results.get("contenders") or {}).get(section, [])
    for r in sorted(runs, key=lambda r: -(r.get("events_per_s") or 0)):
        if "error" in r:
            rows.append([r["name"], _f(r.get("events")), "-", "-", "-", "-", "-", "-", "-",
                         "-", "-", "-", "ERROR: " + str(r["error"]).splitlines()[0][:80]])
            continue
        rows.append([
            r["name"], _f(r.get("events")), _f(r.get("events_per_s")), _range(r),
            _f(r.get("x_baseline"), "{:.2f}x"),
            _ms(r.get("p50_ms")), _ms(r.get("p99_ms")), _ms(r.get("p999_ms")),
            _ms(r.get("std_ms")),
            _f(r["rss_growth_bytes"] / _MiB if "rss_growth_bytes" in r
               else (r.get("peak_rss_bytes") or 0) / _MiB, "{:,.1f}"),
            _f(100 * r["cpu_utilisation"] if r.get("cpu_utilisation") is not None else None,
               "{:.0f}%"),
            _stale(r), _correct(r)])
    return rows


CONTENDER_HEAD = ["contender", "events per run", "events/s (median)", "range",
                  "x baseline", "p50 ms", "p99 ms", "p99.9 ms", "std ms", "RSS added MiB",
                  "CPU %",
                  "stale overwrites", "correct?"]

#: Issue #5's targets: (headline key, threshold, what).
TARGETS = (("x_single", 30.0, "ringflow embedded >= 30x the single-thread baseline"),
           ("x_global_lock", 100.0, "ringflow embedded >= 100x the global-lock design "
                                    "(tuned: a lock per 64 events), at its best producer count"),
           ("x_global_lock_per_event", 100.0, "ringflow embedded >= 100x the global-lock "
                                              "design as the seed story ran it (a lock per "
                                              "event), at its best producer count"))


def _judged(results: dict) -> str | None:
    """Why this run cannot judge the targets (they are for the full suite on
    the full workload), or None when it can."""
    from .runner import SECTIONS

    s = results.get("settings", {})
    if s.get("quick"):
        return "n/a (quick run)"
    if list(s.get("sections", [])) != list(SECTIONS):
        return "n/a (partial run)"
    full = s.get("full_events")
    if full and s.get("events", 0) < full:
        return f"n/a ({s.get('events'):,} events)"
    return None


def target_rows(results: dict) -> list[list[str]]:
    """Issue #5's targets in this run as rows of text: target, measured,
    verdict (MET, MISSED, "counted", or "n/a (...)" for a quick, partial or
    small run); empty without a contenders section."""
    hl = results.get("headline")
    if not hl:
        return []
    rows = []
    not_judged = _judged(results)
    for key, want, what in TARGETS:
        got = hl.get(key)
        verdict = ("-" if got is None else not_judged
                   or ("MET" if got >= want else "MISSED"))
        rows.append([what, _f(got, "{:.1f}x"), verdict])
    # ringflow's count is 0 by construction: the verdict rests on the oracle,
    # which compares last and last_ts of every series after every run.
    c = results.get("contenders") or {}
    rf = [r for r in c.get("runs", []) + c.get("contended", []) if r["name"] == "ringflow"]
    if rf:
        clean = all("error" not in r and all(r.get("repeat_correct") or [r.get("correct")])
                    for r in rf)
        n = sum(len(r.get("repeat_correct") or [0]) for r in rf)
        rows.append(["ringflow: zero stale overwrites (its final last and last_ts equal "
                     "the oracle's in every run)",
                     f"{'0' if clean else 'a wrong state'} in {n} run(s)",
                     not_judged or ("MET" if clean else "MISSED")])
    stale = hl.get("stale_overwrites", {})
    others = {n: v for n, v in stale.items() if v}
    rows.append(["stale overwrites of the other designs (most in one run)",
                 ", ".join(f"{n} {v:,}" for n, v in others.items()) or "none", "counted"])
    d = results.get("duration_s")
    if d is not None:
        rows.append(["the full suite in under 10 minutes", f"{d / 60:.1f} min",
                     not_judged or ("MET" if d < 600 else "MISSED")])
    return rows


def _targets(results: dict) -> list[str]:
    rows = target_rows(results)
    if not rows:
        return []
    rf_rate = results["headline"].get("ringflow_events_per_s")
    lines = ["## Targets", "",
             f"ringflow embedded at its best: {_f(rf_rate)} events/s. Every ratio is "
             "between medians of this run.", ""]
    lines += _table(["target", "measured", "verdict"], rows, left=(0, 1, 2))
    lines.append("")
    return lines


def _markdown(results: dict, plots: list[Path], plot_note: str | None) -> str:
    h = results.get("host", {})
    s = results.get("settings", {})
    lines = ["# ringflow comparative benchmark", ""]
    lines.append(f"Run {results.get('started_utc', '?')} "
                 f"({_f(results.get('duration_s'), '{:.1f}')} s), "
                 f"{'quick' if s.get('quick') else 'full'} mode, "
                 f"sections: {', '.join(s.get('sections', []))}.")
    lines.append("")
    lines.append(f"Host: {h.get('cores')} cores ({h.get('cpu_model')}), {h.get('platform')}; "
                 f"Python {h.get('python')}, NumPy {h.get('numpy')}, libzmq {h.get('libzmq')}, "
                 f"pyzmq {h.get('pyzmq')}; commit {str(h.get('git_commit'))[:12]}"
                 f"{' (dirty)' if h.get('git_dirty') else ''}.")
    lines.append("")
    wl = results.get("workload") or {}
    if wl:
        lines.append(f"Workload: {wl.get('events'):,} events, seed {wl.get('seed')} "
                     f"({s.get('workload_source')}); oracle: {s.get('oracle_source')}.")
        lines.append("")
    if plot_note:
        lines += [f"> {plot_note}", ""]

    lines += _targets(results)
    c = results.get("contenders")
    if c is not None:
        lines += ["## Contenders", ""]
        base = (f"`{c.get('baseline')}` at {_f(c.get('baseline_events_per_s'))} events/s "
                "in this run" if c.get("baseline_events_per_s")
                else f"`{c.get('baseline')}` did not run, so no ratios")
        reps = c.get("repeats", 1)
        s = results.get("settings", {})
        prefix = (f"Designs under {_f(s.get('fast_events_per_s'))} events/s in a pilot run "
                  f"the first {_f(c.get('slow_events'))} events (\"events per run\"), "
                  "checked against the oracle of that prefix. "
                  if c.get("slow_events", 0) < c.get("events", 0) else "")
        lines.append(f"Every contender on the same workload, 1 producer, as fast as it "
                     f"goes; each figure is the median of {reps} run(s) (\"range\": the "
                     f"slowest and fastest). Baseline: {base}. {prefix}Latency is "
                     "from the creation of a request (a design's batch, timed from its last "
                     "event; ringflow: a probe event sent alone) to its being applied; each "
                     "design's notes in results.json say where it samples. At full speed it "
                     "is mostly time queued behind the design's own backlog: the producers "
                     "section compares designs at one offered load. \"RSS added\": the "
                     "peak resident memory of the design's processes minus what the run's "
                     "process held before it started (the workload itself). CPU % is of "
                     "one core. A contender whose final state differs from the oracle's is "
                     "WRONG whatever its speed.")
        lines.append("")
        lines += _table(CONTENDER_HEAD, summary_rows(results), left=(0, -1))
        lines.append("")
        if c.get("contended"):
            lines += [f"### Contended: {c.get('contended_producers')} producers", "",
                      f"The same runs with {c.get('contended_producers')} concurrent "
                      "producers (threads, tasks or processes, as the design has them), "
                      "unpaced; ratios against the same baseline. Stale overwrites: an "
                      "older event replacing a newer `last`, counted in each run.", ""]
            lines += _table(CONTENDER_HEAD, summary_rows(results, "contended"),
                            left=(0, -1))
            lines.append("")
        wrong = [r for r in c.get("runs", []) + c.get("contended", [])
                 if r.get("status") == "WRONG"]
        for r in wrong:
            ex = "; ".join(r.get("mismatch_examples", [])[:3])
            lines.append(f"- `{r['name']}` x{r.get('producers', 1)} is WRONG: "
                         f"{r.get('mismatches')} mismatches, "
                         f"e.g. {ex}")
        if wrong:
            lines.append("")
        info = results.get("contender_info", {})
        if any(v.get("description") for v in info.values()):
            lines += _table(["contender", "design", "tuning"],
                            [[n, v.get("description", ""), v.get("tuning", "")]
                             for n, v in info.items()], left=(0, 1, 2))
            lines.append("")

    p = results.get("producers")
    if p is not None:
        lines += ["## Producers", ""]
        lines.append(f"A paced workload ({_f(p.get('events'))} events at "
                     f"{_f(p.get('rate'))} events/s) with 1, 2, 4, ... concurrent producers "
                     f"until p99 passes {p.get('slo_p99_ms')} ms. \"max producers\" is the "
                     "most producers sustained with p99 within it.")
        lines.append("")
        levels = p.get("levels", [])
        rows = []
        for name, v in p.get("results", {}).items():
            by = {r["producers"]: r for r in v.get("runs", [])}
            cells = []
            for lv in levels:
                r = by.get(lv)
                if r is None:
                    cells.append("")
                elif "error" in r:
                    cells.append("ERROR")
                else:
                    cells.append(_ms(r.get("p99_ms")) + (" WRONG" if not r.get("correct")
                                                         else ""))
            rows.append([name, _f(v.get("max_producers"), "{}", "none"),
                         _f(v.get("max_producers_events_per_s"))] + cells)
        lines += _table(["contender", "max producers", "events/s there"]
                        + [f"p99 ms x{lv}" for lv in levels], rows)
        lines.append("")
        lines += ["Latency at that offered load with 1 producer, the one figure every "
                  "design is measured at alike (a request's creation to applied, "
                  "HdrHistogram; \"samples\": requests timed):", ""]
        rows = []
        for name, v in p.get("results", {}).items():
            r = next((r for r in v.get("runs", []) if r.get("producers") == 1), None)
            if r is None or "error" in r:
                continue
            rows.append([name, _ms(r.get("p50_ms")), _ms(r.get("p99_ms")),
                         _ms(r.get("p999_ms")), _ms(r.get("std_ms")), _ms(r.get("max_ms")),
                         _f(r.get("latency_samples")), _correct(r)])
        rows.sort(key=lambda row: float(row[2].replace(",", "")) if row[2] != "-" else 1e18)
        lines += _table(["contender", "p50 ms", "p99 ms", "p99.9 ms", "std ms", "max ms",
                         "samples", "correct?"], rows, left=(0, -1))
        lines.append("")

    sc = results.get("scaling")
    if sc is not None:
        lines += ["## Scaling", ""]
        lines.append(f"ringflow with 1..N workers, {_f(sc.get('events'))} events (the median "
                     f"of {sc.get('repeats', 1)} run(s)), 1 producer; efficiency per core = "
                     "rate / (cores used x rate at 1 worker), where cores used = min(workers, "
                     f"{sc.get('cores_usable') or results.get('host', {}).get('cores')} "
                     "cores this run may use); per worker "
                     "divides by the workers instead. The producer and, through the gateway, "
                     "the gateway and its clients run on the same cores as the workers.")
        lines.append("")
        rows = []
        for name, runs in sc.get("results", {}).items():
            for r in runs:
                if "error" in r:
                    rows.append([name, str(r["workers"]), "-", "-", "-", "-", "-",
                                 "ERROR: " + str(r["error"]).splitlines()[0][:80]])
                else:
                    rows.append([name, str(r["workers"]), _f(r.get("events_per_s")),
                                 _range(r), _f(r.get("efficiency"), "{:.0%}"),
                                 _f(r.get("efficiency_per_worker"), "{:.0%}"),
                                 _ms(r.get("p99_ms")), _correct(r)])
        lines += _table(["contender", "workers", "events/s (median)", "range",
                         "efficiency/core", "efficiency/worker", "p99 ms", "correct?"], rows,
                        left=(0, -1)) if rows else ["(no scaling run)"]
        lines.append("")

    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{pl.stem}]({pl.name})" for pl in plots]
        lines.append("")
    if results.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    if results.get("errors"):
        lines += ["## Errors", ""] + [f"- {e}" for e in results["errors"]] + [""]
    return "\n".join(lines)


# --- plots ---------------------------------------------------------------------

def _spans_decades(values) -> bool:
    v = [x for x in values if x and x > 0]
    return bool(v) and max(v) / min(v) >= 10


def _latency_plot(results: dict, out_dir: Path, files: list, sub: str, plt) -> None:
    """p50/p99/p99.9 by contender: at the producers section's common paced
    load with 1 producer (the comparable figure), and as fast as each goes
    (where latency is mostly time queued behind the design's own backlog)."""
    import numpy as np

    panels = []
    p = results.get("producers") or {}
    paced = [{"name": n, **r} for n, v in (p.get("results") or {}).items()
             for r in v.get("runs", []) if r.get("producers") == 1 and "error" not in r
             and r.get("p99_ms") is not None]
    if paced:
        panels.append((f"at {p.get('rate', 0):,.0f} events/s offered, 1 producer", paced))
    c = results.get("contenders") or {}
    full = [r for r in c.get("runs", []) if "error" not in r and r.get("p99_ms") is not None]
    if full:
        panels.append(("as fast as each goes, 1 producer (queueing included)", full))
    if not panels:
        return
    n = max(len(rows) for _, rows in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 0.85 * n + 2), 3.6 * len(panels)
                                                      + 0.8), squeeze=False)
    for ax, (title, rows) in zip(axes[:, 0], panels):
        rows = sorted(rows, key=lambda r: r["p99_ms"])
        x = np.arange(len(rows))
        for i, (key, label) in enumerate((("p50_ms", "p50"), ("p99_ms", "p99"),
                                          ("p999_ms", "p99.9"))):
            ax.bar(x + (i - 1) * 0.27, [max(r[key] or 0, 1e-4) for r in rows], 0.27,
                   label=label)
        ax.set_xticks(x, [r["name"] + ("\n(WRONG)" if not r["correct"] else "")
                          for r in rows], rotation=25, ha="right", fontsize=8.5)
        ax.set_yscale("log")
        ax.axhline(SLO_MS, color="red", linestyle="--", linewidth=1,
                   label=f"{SLO_MS:g} ms")
        ax.set_ylabel("creation -> applied\n(ms, log scale)")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", which="major", alpha=0.3)
        ax.legend(fontsize=8, ncol=4, loc="upper left")
    fig.suptitle(f"Latency by contender, sorted by p99\n{sub}", fontsize=10)
    fig.tight_layout()
    files.append(out_dir / "latency.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)


#: The p99 line drawn on the latency plots (the producers section's threshold).
SLO_MS = 10.0


def _plots(results: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: list[Path] = []
    host = results.get("host", {})
    sub = f"{host.get('cores')} cores, {host.get('cpu_model')}"

    c = results.get("contenders") or {}
    runs = [r for r in c.get("runs", []) if "error" not in r]
    if runs:
        import numpy as np

        runs = sorted(runs, key=lambda r: r["events_per_s"])
        busy = {r["name"]: r for r in c.get("contended", []) if "error" not in r}
        pc = c.get("contended_producers")
        names = [r["name"] + (" (WRONG)" if not r["correct"] else "") for r in runs]
        y = np.arange(len(runs), dtype=float)
        h = 0.4 if busy else 0.7
        fig, ax = plt.subplots(figsize=(10, (0.62 if busy else 0.45) * len(runs) + 2))
        allrates = []
        for off, label, color, rows in (
                (h / 2 if busy else 0.0, "1 producer", "#1f77b4", runs),
                (-h / 2, f"{pc} producers", "#ff7f0e",
                 [busy.get(r["name"]) for r in runs])):
            if not busy and rows is not runs:
                continue
            have = [(i, r) for i, r in enumerate(rows) if r is not None]
            rates = [r["events_per_s"] for _, r in have]
            allrates += rates
            lo = [r["events_per_s"] - min(r.get("repeat_events_per_s") or [r["events_per_s"]])
                  for _, r in have]
            hi = [max(r.get("repeat_events_per_s") or [r["events_per_s"]]) - r["events_per_s"]
                  for _, r in have]
            bars = ax.barh(y[[i for i, _ in have]] + off, rates, h, label=label,
                           color=[("#d62728" if not r["correct"] else color)
                                  for _, r in have],
                           xerr=[lo, hi], error_kw={"elinewidth": 0.8, "capsize": 2})
            for b, (_, r) in zip(bars, have):
                if not r["correct"]:
                    b.set_hatch("//")
                    b.set_edgecolor("black")
                text = f"{r['events_per_s']:,.0f}"
                if r.get("x_baseline"):
                    text += f"  ({r['x_baseline']:.2g}x)"
                if r.get("stale_overwrites"):
                    text += f"  {r['stale_overwrites']} stale"
                if not r["correct"]:
                    text += "  WRONG"
                ax.text(r["events_per_s"] * 1.08, b.get_y() + b.get_height() / 2, text,
                        va="center", fontsize=7.5)
        ax.set_yticks(y, names)
        ax.set_xscale("log")
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())
        lo = 10 ** math.floor(math.log10(max(min(allrates) / 2, 1e-3)))
        ax.set_xlim(lo, max(allrates) * 12)
        base = c.get("baseline_events_per_s")
        if base:
            ax.axvline(base, color="black", linestyle="--", linewidth=1,
                       label=f"baseline {c.get('baseline')} ({base:,.0f}/s)")
        ax.legend(loc="lower right", fontsize=8)
        ax.set_xlabel("throughput (events/s, log scale); bar = median, whisker = "
                      "slowest..fastest repeat; (Nx) = ratio to the baseline")
        ax.set_title(f"Throughput by contender, same workload and oracle "
                     f"(red hatched = WRONG result)\n{sub}", fontsize=10)
        fig.tight_layout()
        files.append(out_dir / "throughput.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)

    _latency_plot(results, out_dir, files, sub, plt)

    p = results.get("producers") or {}
    series = {n: [r for r in v.get("runs", []) if r.get("p99_ms") is not None]
              for n, v in (p.get("results") or {}).items()}
    series = {n: v for n, v in series.items() if v}
    if series:
        fig, ax = plt.subplots(figsize=(10, 5.2))
        colors = plt.get_cmap("tab20").colors
        markers = "osD^vP*Xhp<>"
        for i, (n, rows) in enumerate(series.items()):
            ours = n.startswith("ringflow")  # drawn heavier: the design under test
            ax.plot([r["producers"] for r in rows], [max(r["p99_ms"], 1e-6) for r in rows],
                    marker=markers[i % len(markers)],
                    color=({"ringflow": "black", "ringflow_gateway": "#8c1010"}.get(n)
                           or colors[(2 * i) % 20 + (i >= 10)]),
                    linestyle="-" if len(rows) > 1 else "none", markersize=7,
                    linewidth=2.6 if ours else 1.4, zorder=3 if ours else 2,
                    label=n + (" (WRONG)" if any(not r["correct"] for r in rows) else ""))
        ax.axhline(p.get("slo_p99_ms", 10), color="red", linestyle="--",
                   label=f"{p.get('slo_p99_ms', 10):g} ms threshold")
        ax.set_xscale("log", base=2)
        from matplotlib.ticker import NullFormatter

        levels = sorted({r["producers"] for rows in series.values() for r in rows})
        ax.set_xticks(levels, [str(v) for v in levels])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yscale("log")
        ax.set_xlabel("concurrent producers (log2 scale)")
        ax.set_ylabel("p99 latency (ms, log scale)")
        ax.set_title(f"p99 latency vs producers ({p.get('rate', 0):,.0f} events/s offered "
                     f"in all); a line stops where p99 passes the threshold\n{sub}",
                     fontsize=10)
        ax.grid(which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        files.append(out_dir / "producers_p99.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)

    sc = (results.get("scaling") or {}).get("results") or {}
    sc = {n: [r for r in rows if "error" not in r] for n, rows in sc.items()}
    sc = {n: rows for n, rows in sc.items() if rows}
    if sc:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
        labels = {"ringflow": "embedded", "ringflow_gateway": "via gateway"}
        for n, rows in sc.items():
            w = [r["workers"] for r in rows]
            a1.plot(w, [r["events_per_s"] for r in rows], marker="o",
                    label=f"{n} ({labels.get(n, n)})")
            eff = [(r["workers"], r["efficiency"]) for r in rows
                   if r.get("efficiency") is not None]
            if eff:
                a2.plot([e[0] for e in eff], [100 * e[1] for e in eff], marker="o",
                        label=f"{n} ({labels.get(n, n)})")
        from matplotlib.ticker import FuncFormatter

        ws = sorted({r["workers"] for rows in sc.values() for r in rows})
        for a in (a1, a2):
            if ws and ws[-1] / ws[0] >= 8:
                a.set_xscale("log", base=2)
            a.set_xticks(ws, [str(w) for w in ws])
        cores = (results.get("scaling") or {}).get("cores_usable") or host.get("cores")
        if cores and ws and ws[-1] > cores:
            for a in (a1, a2):
                a.axvline(cores, color="grey", linestyle=":",
                          label=f"{cores} cores: more workers share them")
        a1.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        a1.set_xlabel("workers")
        a1.set_ylabel("throughput (events/s)")
        allr = [r["events_per_s"] for rows in sc.values() for r in rows]
        if _spans_decades(allr):
            a1.set_yscale("log")
            a1.set_ylabel("throughput (events/s, log scale)")
        else:
            a1.set_ylim(bottom=0)
        a1.set_title("Throughput vs workers")
        a1.legend(fontsize=8)
        a2.axhline(100, color="black", linestyle="--", label="linear (100%)")
        a2.set_ylim(0, 115)
        a2.set_xlabel("workers")
        a2.set_ylabel("efficiency per core used (% of 1-worker rate)")
        a2.set_title("Efficiency per core vs workers")
        a2.legend(fontsize=8)
        fig.suptitle(f"ringflow scaling, {sub}", fontsize=10)
        fig.tight_layout()
        files.append(out_dir / "scaling.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    return files


def write_report(results: dict, out_dir) -> list[Path]:
    """Write ``report.md`` and the PNG plots into ``out_dir``; returns the
    files written (report.md first).  Without matplotlib the plots are
    skipped and the report says so."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_note = None
    try:
        plots = _plots(results, out_dir)
    except ImportError as exc:
        plots = []
        plot_note = f"plots skipped: matplotlib is not installed ({exc})"
        results.setdefault("notes", []).append(plot_note)
    report = out_dir / "report.md"
    report.write_text(_markdown(results, plots, plot_note), encoding="utf-8")
    return [report, *plots]
