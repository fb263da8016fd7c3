"""``ringflow top`` (a live view of a running server) and ``ringflow ls``
(the engines running on this host); issue 17, items 4 and 6."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time

from . import render

__all__ = ["frame", "ls_table", "run_ls", "run_top"]


def _rate(now: dict, before: dict | None, key: str, dt: float) -> str:
    if before is None or dt <= 0:
        return "-"
    return f"{max(0, now.get(key, 0) - before.get(key, 0)) / dt:,.0f}/s"


def frame(stats: dict, status: dict, before: dict | None, dt: float, endpoint: str):
    """One frame of ``ringflow top``: rates from the counters' deltas since
    ``before`` (``dt`` seconds earlier; ``None`` on the first frame), the
    workers' counters, fill and restarts, and the worst entities.

    Parameters
    ----------
    stats : dict
        The ``stats`` op's answer now.
    status : dict
        The ``status`` op's answer (worst entities first).
    before : dict or None
        The ``stats`` answer of the previous frame.
    dt : float
        Seconds between the two.
    endpoint : str
        The query endpoint, for the title.

    Returns
    -------
    rich.console.Group
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    gw = stats.get("gateway") or {}
    gw_before = (before or {}).get("gateway") or {}
    counts = status.get("counts", {})
    head = Text.assemble(
        (f"ringflow top  {endpoint}  ", "bold"),
        f"state {stats.get('state', '?')}  series {stats.get('series', 0):,}  ",
        f"ingest {_rate(stats, before, 'applied', dt)}  ",
        f"queries {_rate(gw, gw_before if before is not None else None, 'queries', dt)}  ",
        f"alerts {stats.get('alerts', 0):,} (dropped {stats.get('alerts_dropped', 0):,}, "
        f"delivered {stats.get('alerts_delivered', 0):,})  ",
        "status " + " ".join(f"{k} {v:,}" for k, v in counts.items()),
    )
    workers = Table(title="workers", title_justify="left")
    workers.add_column("w", justify="right")
    workers.add_column("state")
    workers.add_column("restarts", justify="right")
    workers.add_column("rate", justify="right")
    cells_of = [render.counter_cells(w, compact=True) for w in stats.get("workers", [])]
    for heading, _ in (cells_of[0] if cells_of else []):
        workers.add_column(heading, justify="right")
    workers.add_column("table", justify="right")
    workers.add_column("ring", justify="right")
    prev = {w.get("worker"): w for w in (before or {}).get("workers", [])}
    for w, cells in zip(stats.get("workers", []), cells_of):
        workers.add_row(
            str(w.get("worker")), str(w.get("state")), str(w.get("restarts", 0)),
            _rate(w, prev.get(w.get("worker")) if before is not None else None, "applied", dt),
            *(text for _, text in cells),
            f"{w.get('table_fill', 0):.1%}", f"{w.get('ring_fill', 0):.1%}")
    worst = Table(title="worst entities", title_justify="left")
    for col in ("entity", "status", "series"):
        worst.add_column(col)
    for ent in status.get("entities", []):
        bad = [s for s in ent.get("series", []) if s.get("status") == ent.get("status")]
        worst.add_row(str(ent.get("entity") or ent.get("entity_id")), str(ent.get("status")),
                      ", ".join(str(s.get("metric") or s.get("metric_id")) for s in bad[:4]))
    foot = Text("q or Ctrl-C quits", style="dim")
    return Group(head, workers, worst, foot)


@contextlib.contextmanager
def _cbreak():
    """stdin in cbreak mode while a tty (keys arrive unbuffered, unechoed),
    restored on the way out whatever happens."""
    if not sys.stdin.isatty():
        yield False
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _quit_pressed(timeout: float, tty_in: bool) -> bool:
    """Wait up to ``timeout`` seconds; True when ``q`` was pressed."""
    if not tty_in:
        time.sleep(timeout)
        return False
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    return bool(ready) and os.read(sys.stdin.fileno(), 32).lower().startswith(b"q")


def run_top(client, endpoint: str, interval: float, once: bool, limit: int) -> int:
    """The loop of ``ringflow top`` (one frame with ``once``)."""
    out = render.out_console()

    def sample():
        return client.stats(), client.status("WARN", limit=limit), time.monotonic()

    if once:
        # Two samples a short interval apart, so the rates are measured.
        before, _, t0 = sample()
        time.sleep(min(interval, 1.0))
        stats, status, t1 = sample()
        out.print(frame(stats, status, before, t1 - t0, endpoint))
        return 0
    from rich.live import Live

    before, t0 = None, time.monotonic()
    with _cbreak() as tty_in, Live(console=out, auto_refresh=False, screen=False) as live:
        try:
            while True:
                stats, status, t1 = sample()
                live.update(frame(stats, status, before, t1 - t0, endpoint), refresh=True)
                before, t0 = stats, t1
                if _quit_pressed(interval, tty_in):
                    return 0
        except KeyboardInterrupt:
            return 0


def _uptime(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"


def ls_table(records: list[dict], now: float):
    """The ``ringflow ls`` table of engine records (discovery.running_engines)."""
    from rich.table import Table

    t = Table()
    for col in ("pid", "name", "state", "workers", "uptime", "data dir", "endpoints"):
        t.add_column(col)
    for r in records:
        eps = r.get("endpoints") or {}
        t.add_row(str(r["pid"]), str(r.get("name") or "-"), str(r.get("state")),
                  str(r.get("workers")), _uptime(now - r.get("started", now)),
                  str(r.get("data_dir") or "-"),
                  " ".join(f"{k}={v}" for k, v in eps.items()) or "-")
    return t


def run_ls(as_json: bool) -> int:
    """``ringflow ls``: the engines running on this host."""
    from ..core.discovery import running_engines

    records = running_engines()
    if as_json:
        render.print_json(records)
    elif not records:
        render.out_console().print("no ringflow engine runs on this host")
    else:
        render.out_console().print(ls_table(records, time.time()))
    return 0
