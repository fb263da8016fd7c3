"""``python -m engine demo``: an engine with health rules, fed a fleet of
servers at full speed while a few of them go through scripted incidents
(engine/scenario.py); alerts are printed as they happen, then the fleet's
status and the workers' counters."""

from __future__ import annotations

import time

import numpy as np

from ..core.config import EngineConfig
from ..core.durations import format_duration
from ..core.engine import Engine
from .scenario import METRICS as SCENARIO_METRICS
from .scenario import MIN_HOSTS, STEPS, Background, Scenario

__all__ = ["METRICS", "run", "workers_table", "status_table", "alert_line"]

#: Metrics of the load generator's synthetic fleet (engine.cli.loadgen) with
#: their typical level and spread.
METRICS = {
    "cpu": (0.45, 0.15),
    "mem": (0.60, 0.10),
    "disk": (0.70, 0.05),
    "latency_ms": (12.0, 4.0),
    "errors": (0.5, 0.5),
}

#: The demo plays the scenario at 10x speed (or slower, to fill a longer run).
MIN_INTERVAL = 0.1
# Alert lines printed before the rest are only counted.
_MAX_ALERT_LINES = 200
_COLOURS = {"OK": "green", "WARN": "yellow", "STALE": "magenta", "CRIT": "bold red"}


def _count(n: int) -> str:
    """A counter in at most 7 characters: 12,345 / 327k / 25.6M / 1.2G."""
    if n < 100_000:
        return f"{n:,}"
    if n < 10_000_000:
        return f"{n / 1e3:,.0f}k"
    if n < 10_000_000_000:
        return f"{n / 1e6:,.1f}M"
    return f"{n / 1e9:,.1f}G"


def workers_table(stats: dict, title: str = "workers"):
    """A rich table of ``Engine.stats()["workers"]``: one row a worker.

    ``stale`` counts events older than their series' newest (out of order),
    ``late`` those of them too late for their window (docs/health.md)."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD,
                  collapse_padding=True, pad_edge=False)
    cols = ("worker", "pid", "applied", "stale", "late", "invalid", "full", "series",
            "batches", "alerts")
    for col in cols:
        table.add_column(col, justify="right", no_wrap=True)
    for w in stats["workers"]:
        table.add_row(str(w["worker"]), str(w["pid"]), *(_count(w.get(c, 0)) for c in cols[2:]))
    return table


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def _rel(ts: int | None, start: int) -> str:
    return "-" if ts is None else f"{(ts - start) / 1e9:+.2f}s"


def alert_line(alert, start: int) -> str:
    """One alert as a line of rich markup: event time (seconds from the
    scenario's start), host, metric, old -> new, stat = value."""
    colour = _COLOURS.get(alert.new, "")
    who = alert.entity if alert.entity is not None else f"{alert.key:#x}"
    what = alert.metric if alert.metric is not None else f"{alert.metric_id:#x}"
    if alert.stat == "ttl":
        why = f"silent, last = {_fmt(alert.value)}"
    else:
        why = f"{alert.stat} = {_fmt(alert.value)}"
    return (f"{_rel(alert.ts, start):>8}  {who:<10} {what:<11} "
            f"{alert.old:>5} -> [{colour}]{alert.new:<5}[/]  {why}")


def status_table(status: list[dict], start: int, limit: int = 10,
                 title: str = "status (entities not OK, worst first)"):
    """A rich table of ``Engine.status()``: one row an entity, with its
    series that are not OK."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("entity", "status", "since", "series (last value)"):
        table.add_column(col, justify="left", no_wrap=col != "series (last value)")
    for e in status[:limit]:
        name = e["entity"] if e["entity"] is not None else f"{e['entity_id']:#x}"
        series = ", ".join(
            f"{s['metric'] or hex(s['metric_id'])} {_fmt(s['last'])}"
            + ("" if s["status"] == e["status"]
               else f" [{_COLOURS.get(s['status'], '')}]{s['status']}[/]")
            for s in e["series"])
        table.add_row(name, f"[{_COLOURS.get(e['status'], '')}]{e['status']}[/]",
                      _rel(e["since"], start), series)
    if len(status) > limit:
        table.add_row(f"... {len(status) - limit} more", "", "", "")
    if not status:
        table.add_row("(every entity is OK)", "", "", "")
    return table


def run(workers: int = 2, seconds: float = 5.0, hosts: int = 2000, batch: int = 16384,
        wait: str = "block", show: int = 10) -> dict:
    """Run the demo and print what the engine saw.

    The scenario (:mod:`engine.cli.scenario`) plays at 10x speed: a sampling
    interval of 100 ms, so 5 s cover the whole script (scenario time: cpu
    WARN -> CRIT -> WARN -> OK from 0.8 to 1.7 s, a host silent from 0.6 s,
    STALE at 1.7 s and back at 4 s, a latency spike at 2.3-3 s, a disk
    filling from 3.5 s); longer runs slow it down to fill the time.  The
    script starts at the last window boundary, up to a window before the
    run, so everything happens up to a second earlier in the run.
    Meanwhile the calm hosts are ingested as fast as the engine takes them.

    Parameters
    ----------
    workers : int
        Worker processes.
    seconds : float
        How long to ingest.
    hosts : int
        Hosts in the fleet (five metrics each; at least 5: four have a
        scripted incident).
    batch : int
        Events per submitted background batch.
    wait : str
        Wait strategy of the engine.
    show : int
        Entities to list in the status table.

    Returns
    -------
    dict
        ``events`` submitted, ``accepted``, ``seconds``, ``events_per_s``,
        the engine's ``stats``, the ``alerts`` (as dicts) and the final
        ``status`` (``Engine.status()``).
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(highlight=False)
    hosts = max(int(hosts), MIN_HOSTS)
    interval = max(MIN_INTERVAL, seconds / STEPS)
    sc = Scenario(hosts=hosts, interval=interval)
    background = Background(sc, batch)
    cfg = EngineConfig(workers=workers, wait=wait,
                       table_capacity=max(1024, hosts * len(SCENARIO_METRICS)),
                       rules=sc.rules_toml(), **sc.engine_settings())
    iv = sc.interval_ns
    console.print(f"[bold]ringflow demo[/]: {workers} workers, {hosts} hosts x "
                  f"{len(SCENARIO_METRICS)} metrics, {seconds:g} s; readings every "
                  f"{format_duration(iv)} (windows {format_duration(sc.window_ns)}, "
                  f"TTL {format_duration(sc.ttl_ns)})")

    submitted = accepted = 0
    alerts: list = []
    printed = 0
    story = list(sc.scripted_hosts)
    with Engine(config=cfg) as eng:
        eng.register_names(entities=sc.hosts)
        stream = eng.alerts()
        # The script starts at the last window boundary (windows are aligned
        # to the epoch), less than a window ago and so less than the TTL:
        # its first steps are caught up at once, then it follows the clock.
        start = time.time_ns() // sc.window_ns * sc.window_ns
        end = time.time_ns() + int(seconds * 1e9)
        for inc in sc.incidents:
            at = f"{inc.begin * iv / 1e9:4.1f}-{inc.end * iv / 1e9:.1f}s"
            late = "" if start + inc.begin * iv < end else " [dim](after the run)[/]"
            console.print(f"  {at:>10}  {inc.host}  {inc.description}{late}")
        columns = [TextColumn("ingest"), BarColumn(), TextColumn("{task.fields[rate]}"),
                   TimeRemainingColumn()]
        progress = Progress(*columns, console=console, transient=True,
                            disable=not console.is_terminal)

        def show_alerts() -> None:
            nonlocal printed
            while (alert := stream.get(0)) is not None:
                alerts.append(alert)
                if printed < _MAX_ALERT_LINES:
                    progress.console.print(alert_line(alert, start))
                    printed += 1

        with progress:
            task = progress.add_task("ingest", total=seconds, rate="")
            t0 = time.perf_counter()
            last_update = t0
            step = 0
            while True:
                now = time.perf_counter()
                if now - t0 >= seconds:
                    break
                ev = background.next()
                accepted += eng.submit(ev)
                submitted += len(ev)
                # The scripted hosts read on the scenario's clock: event time
                # follows the wall clock, which the TTL runs on.  Steps due
                # together go in one batch.
                due = (time.time_ns() - start) // iv + 1
                if due > step:
                    ev = np.concatenate([sc.delivery(k, start, hosts=story)
                                         for k in range(step, due)])
                    accepted += eng.submit(ev)
                    submitted += len(ev)
                    step = due
                show_alerts()
                if now - last_update > 0.2:
                    progress.update(task, completed=now - t0,
                                    rate=f"{submitted / (now - t0) / 1e6:6.1f} M events/s, "
                                         f"step {step}/{STEPS}")
                    last_update = now
            eng.flush()
            elapsed = time.perf_counter() - t0
            # The last alerts: those of the last events and of the TTL check.
            time.sleep(min(0.3, iv / 1e9))
            show_alerts()
        if printed < len(alerts):
            console.print(f"  ... and {len(alerts) - printed} more alerts")
        stream.close()
        status = eng.status()
        stats = eng.stats()
        console.print(status_table(status, start, show))
        console.print(workers_table(stats))

    rate = submitted / elapsed
    scripted = sum(a.entity in sc.scripted_hosts for a in alerts)
    console.print(f"submitted {submitted:,} events in {elapsed:.2f} s: "
                  f"[bold]{rate / 1e6:.1f} M events/s[/] submit-to-applied; "
                  f"{stats['applied']:,} applied, {stats['rejected_invalid']:,} rejected, "
                  f"{stats['stale']:,} out of order ({stats['late']:,} of them too late for "
                  f"their window); {len(alerts)} alerts ({scripted} from the scripted hosts)")
    return {"events": submitted, "accepted": accepted, "seconds": elapsed,
            "events_per_s": rate, "stats": stats, "alerts": [a.to_dict() for a in alerts],
            "status": status, "steps": step}
