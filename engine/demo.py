"""``python -m engine demo``: an engine on its defaults, fed a synthetic fleet
of servers, queried while it runs."""

from __future__ import annotations

import time

import numpy as np

from .config import EngineConfig
from .core import Engine
from .records import EVENT_DTYPE, entity_id, metric_id

#: Metrics of the synthetic fleet with their typical level and spread.
METRICS = {
    "cpu": (0.45, 0.15),
    "mem": (0.60, 0.10),
    "disk": (0.70, 0.05),
    "latency_ms": (12.0, 4.0),
    "errors": (0.5, 0.5),
}


class Fleet:
    """Deterministic synthetic server-health traffic.

    Batches are drawn from a pool generated once, so that producing load
    costs far less than the engine spends applying it; each batch gets fresh
    event times, and a small share of events arrives late.
    """

    def __init__(self, hosts: int, batch: int, seed: int = 0, pool: int = 16) -> None:
        rng = np.random.default_rng(seed)
        self.host_names = [f"web-{i:04d}" for i in range(hosts)]
        self.metric_names = list(METRICS)
        host_ids = np.array([entity_id(n) for n in self.host_names], np.uint64)
        metric_ids = np.array([metric_id(n) for n in self.metric_names], np.uint32)
        self.pool = []
        for _ in range(pool):
            ev = np.zeros(batch, EVENT_DTYPE)
            h = rng.integers(0, hosts, batch)
            m = rng.integers(0, len(metric_ids), batch)
            ev["key"] = host_ids[h]
            ev["metric"] = metric_ids[m]
            level = np.array([METRICS[n][0] for n in self.metric_names])[m]
            spread = np.array([METRICS[n][1] for n in self.metric_names])[m]
            ev["value"] = np.abs(rng.normal(level, spread))
            self.pool.append(ev)
        # A batch spans one millisecond of event time, in order but for 1%
        # of its events, which arrive up to 5 s late.
        self.span = 1_000_000
        self.offsets = np.arange(batch, dtype=np.int64) * self.span // batch
        late = rng.random(batch) < 0.01
        self.offsets[late] -= rng.integers(0, 5 * 10**9, int(late.sum()))
        self.clock = time.time_ns()
        self.i = 0

    def next(self) -> np.ndarray:
        """The next batch, stamped after the previous one (or now, if later)."""
        ev = self.pool[self.i % len(self.pool)]
        self.i += 1
        self.clock = max(self.clock + self.span, time.time_ns())
        np.add(self.offsets, self.clock, out=ev["ts"])
        return ev


def workers_table(stats: dict, title: str = "workers"):
    """A rich table of ``Engine.stats()["workers"]``: one row a worker."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("worker", "pid", "applied", "late", "invalid", "full", "series", "batches"):
        table.add_column(col, justify="right")
    for w in stats["workers"]:
        table.add_row(str(w["worker"]), str(w["pid"]), f"{w['applied']:,}", f"{w['stale']:,}",
                      f"{w['invalid']:,}", f"{w['full']:,}", f"{w['series']:,}",
                      f"{w['batches']:,}")
    return table


def run(workers: int = 2, seconds: float = 5.0, hosts: int = 2000, batch: int = 16384,
        wait: str = "block", show: int = 4) -> dict:
    """Run the demo and print what the engine saw.

    Parameters
    ----------
    workers : int
        Worker processes.
    seconds : float
        How long to ingest.
    hosts : int
        Hosts in the synthetic fleet (five metrics each).
    batch : int
        Events per submitted batch.
    wait : str
        Wait strategy of the engine.
    show : int
        Hosts to print at the end.

    Returns
    -------
    dict
        Events submitted, seconds, events/s and the engine's stats.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    console = Console()
    fleet = Fleet(hosts, batch)
    cfg = EngineConfig(workers=workers, wait=wait,
                       table_capacity=max(1024, hosts * len(METRICS)))
    console.print(f"[bold]ringflow demo[/]: {workers} workers, {hosts} hosts x "
                  f"{len(METRICS)} metrics, batches of {batch}, {seconds:g} s of ingest")
    submitted = accepted = 0
    probe = fleet.host_names[0]
    with Engine(config=cfg) as eng:
        columns = [TextColumn("ingest"), BarColumn(), TextColumn("{task.fields[rate]}"),
                   TimeRemainingColumn()]
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("ingest", total=seconds, rate="")
            t0 = time.perf_counter()
            last_update = t0
            while True:
                now = time.perf_counter()
                if now - t0 >= seconds:
                    break
                accepted += eng.submit(fleet.next())
                submitted += batch
                if now - last_update > 0.2:
                    row = eng.get(probe, "cpu")
                    cpu = f"{row['last']:.2f}" if row is not None else "-"
                    progress.update(task, completed=now - t0,
                                    rate=f"{submitted / (now - t0) / 1e6:6.1f} M events/s, "
                                         f"{probe} cpu={cpu}")
                    last_update = now
            eng.flush()
            elapsed = time.perf_counter() - t0
            progress.update(task, completed=seconds,
                            rate=f"{submitted / elapsed / 1e6:6.1f} M events/s")
        stats = eng.stats()

        table = Table(title=f"a few series (of {stats['series']})")
        for col in ("host", "metric", "count", "last", "mean", "min", "max", "ewma", "late"):
            table.add_column(col, justify="right" if col not in ("host", "metric") else "left")
        names = fleet.host_names[:show]  # the fleet's names: the table shows no raw ids
        for host in names:
            rows = eng.get_many([host] * len(METRICS), fleet.metric_names)
            for metric, r in zip(fleet.metric_names, rows):
                if r["count"] == 0:
                    continue
                table.add_row(host, metric, f"{r['count']:,}", f"{r['last']:.3f}",
                              f"{r['mean']:.3f}", f"{r['min']:.3f}", f"{r['max']:.3f}",
                              f"{r['ewma']:.3f}", f"{r['stale']:,}")
        console.print(table)

        console.print(workers_table(stats))
    rate = submitted / elapsed
    console.print(f"submitted {submitted:,} events in {elapsed:.2f} s: "
                  f"[bold]{rate / 1e6:.1f} M events/s[/] submit-to-applied; "
                  f"{stats['applied']:,} applied, {stats['rejected_invalid']:,} rejected, "
                  f"{stats['stale']:,} arrived late (counted, never overwrote newer state)")
    return {"events": submitted, "accepted": accepted, "seconds": elapsed,
            "events_per_s": rate, "stats": stats}
