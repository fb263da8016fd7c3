"""``python -m engine demo``: an engine with health rules, fed a fleet of
servers at full speed while a few of them go through scripted incidents
(engine/scenario.py); alerts are printed as they happen, then the fleet's
status and the workers' counters."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from ..core.config import EngineConfig
from ..core.durations import format_duration
from ..core.engine import Engine
from ..health.alerts import Alert
from .render import counter_legend, scenario_alert_line, scenario_status_table, workers_table
from .scenario import METRICS as SCENARIO_METRICS
from .scenario import MIN_HOSTS, STEPS, Background, Scenario

__all__ = ["check_alerts", "run"]

#: The demo plays the scenario at 10x speed (or slower, to fill a longer run).
MIN_INTERVAL = 0.1
# Alert lines printed before the rest are only counted.
_MAX_ALERT_LINES = 200
# How long the demo waits, at most, for the last alerts after its last step.
_TAIL_SECONDS = 5.0


def run(workers: int = 2, seconds: float = 5.0, hosts: int = 2000, batch: int = 16384,
        wait: str = "block", show: int = 10, seed: int = 0) -> dict:
    """Run the demo and print what the engine saw.

    The scenario (:mod:`engine.cli.scenario`) plays at 10x speed: a sampling
    interval of 100 ms, so 5 s cover the whole script (scenario time: cpu
    WARN -> CRIT -> WARN -> OK from 0.8 to 1.7 s, a host silent from 0.6 s,
    STALE at 1.7 s and back at 4 s, a latency spike at 2.3-3 s, a disk
    filling from 3.5 s); longer runs slow it down to fill the time.  The
    script starts at the last window boundary, up to a window before the
    run, so everything happens up to a second earlier in the run.
    Meanwhile the calm hosts are ingested as fast as the engine takes them.

    The alerts are the script's (:meth:`Scenario.scripted_alerts`) up to
    the last step played, and no other: the demo checks, and says so.

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
    seed : int
        Seed of the calm hosts' readings.

    Returns
    -------
    dict
        ``events`` submitted, ``accepted``, ``seconds``, ``events_per_s``,
        the engine's ``stats``, the ``alerts`` (as dicts), the final
        ``status`` (``Engine.status()``), ``start`` (event time of step 0),
        ``steps`` played, and ``unexpected`` and ``missing``: the alerts
        that differ from the script's (both empty when the demo told the
        truth).
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(highlight=False)
    hosts = max(int(hosts), MIN_HOSTS)
    interval = max(MIN_INTERVAL, seconds / STEPS)
    sc = Scenario(hosts=hosts, interval=interval, seed=seed)
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

        def show_alerts(timeout: float = 0) -> None:
            nonlocal printed
            while (alert := stream.get(timeout)) is not None:
                if not isinstance(alert, Alert):
                    # A shard's fault (docs/faults.md), not a status change.
                    progress.console.print(str(alert), markup=False)
                    continue
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
                # follows the wall clock, which the TTL runs on.  Step k is
                # due at start + k * interval; steps due together go in one
                # batch.
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
            # The last alerts: those of the last events and of the TTL check
            # (the silent host's STALE is due by the wall clock, within a
            # tick of its time).  Wait until every alert the workers wrote
            # and every one the script made up to its last step is here.
            want = Counter(a[:4] for a in sc.scripted_alerts(0, step))
            deadline = time.monotonic() + _TAIL_SECONDS
            while time.monotonic() < deadline:
                show_alerts(0.05)
                got = Counter((a.entity, a.metric, a.old, a.new) for a in alerts)
                if len(alerts) >= eng.stats()["alerts"] and not want - got:
                    break
        if printed < len(alerts):
            console.print(f"  ... and {len(alerts) - printed} more alerts")
        stream.close()
        status = eng.status()
        stats = eng.stats()
        console.print(scenario_status_table(status, start, show))
        console.print(workers_table(stats))
        console.print(counter_legend(), style="dim", markup=False)

    unexpected, missing = check_alerts(sc, alerts, start, step)
    rate = submitted / elapsed
    console.print(f"submitted {submitted:,} events in {elapsed:.2f} s: "
                  f"[bold]{rate / 1e6:.1f} M events/s[/] submit-to-applied; "
                  f"{stats['applied']:,} applied, {stats['rejected_invalid']:,} rejected, "
                  f"{stats['stale']:,} stale (out of order), {stats['late']:,} of them late "
                  f"(their window closed)")
    if not unexpected and not missing:
        console.print(f"{len(alerts)} alerts, exactly the script's up to step {step - 1}")
    else:
        console.print(f"[bold red]{len(alerts)} alerts, not the script's[/] (steps 0-{step - 1}):"
                      f" {len(unexpected)} unexpected {sorted(unexpected)[:5]}, "
                      f"{len(missing)} missing {sorted(missing)[:5]}", markup=False)
    return {"events": submitted, "accepted": accepted, "seconds": elapsed,
            "events_per_s": rate, "stats": stats, "alerts": [a.to_dict() for a in alerts],
            "status": status, "start": start, "steps": step,
            "unexpected": unexpected, "missing": missing}


def check_alerts(sc: Scenario, alerts: list, start: int, steps: int) -> tuple[list, list]:
    """The alerts that are not the script's, and the script's that are not
    among the alerts, for a run that played steps ``0 .. steps - 1``.

    An alert whose event time is before step ``steps`` must be one of the
    script's up to there, and each of those must be there; a later one
    (the silent host's STALE passes its TTL by the wall clock, maybe after
    the last step played) must be one of the script's later changes.

    Parameters
    ----------
    sc : Scenario
    alerts : list of engine.Alert
    start : int
        Event time of step 0, ns.
    steps : int
        Steps played.

    Returns
    -------
    unexpected, missing : list of tuple
        ``(host, metric, old, new, ts)`` and ``(host, metric, old, new,
        step)``.
    """
    bound = sc.time_of(steps, start)
    want = Counter(a[:4] for a in sc.scripted_alerts(0, steps))
    later = {a[:4] for a in sc.scripted_alerts(steps)}
    unexpected = []
    for a in alerts:
        key = (a.entity, a.metric, a.old, a.new)
        if a.ts < bound and want[key] > 0:
            want[key] -= 1
        elif a.ts >= bound and key in later:
            continue
        else:
            unexpected.append((*key, a.ts))
    missing = [a for a in sc.scripted_alerts(0, steps) if want[a[:4]] > 0]
    return unexpected, missing
