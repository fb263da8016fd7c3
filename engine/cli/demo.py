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
from .render import scenario_alert_line, scenario_status_table, workers_table
from .scenario import METRICS as SCENARIO_METRICS
from .scenario import MIN_HOSTS, STEPS, Background, Scenario

__all__ = ["run"]

#: The demo plays the scenario at 10x speed (or slower, to fill a longer run).
MIN_INTERVAL = 0.1
# Alert lines printed before the rest are only counted.
_MAX_ALERT_LINES = 200


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
                    progress.console.print(scenario_alert_line(alert, start))
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
        console.print(scenario_status_table(status, start, show))
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
