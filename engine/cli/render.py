"""How the ``ringflow`` commands show things: one renderer per kind of output.

* figures: :func:`num`, :func:`count`, :func:`local_time`, :func:`ago`,
  :func:`since` and the like, each a value as a short string;
* counters: :func:`counter_cells` renders the worker counters
  (:data:`WORKER_COUNTER_VIEW`, explained by :func:`counter_legend`)
  wherever they show: :func:`workers_table` (``demo``, ``serve`` and
  ``stats``), :func:`engine_counters_line`, :func:`serve_status_line`;
  :func:`counters_line`, :func:`serve_counters`, :func:`final_line`,
  :func:`show_stats`;
* health: :func:`show_series` (``query``), :func:`show_status` (``status``),
  :func:`scenario_status_table` (``demo``);
* alerts: :func:`alert_line` (``alerts``), :func:`scenario_alert_line`
  (``demo``);
* the suite's summary: :func:`show_bench`.

Tables are rich tables, made when asked (importing this module costs no
rich).  Nothing here reads from the engine or the network: every renderer
takes the dicts the commands got.
"""

from __future__ import annotations

import json
import sys
import time

__all__ = [
    "WORKER_COUNTER_VIEW", "ago", "alert_line", "count", "counter_cells", "counter_legend",
    "counter_totals", "counters_line", "engine_alert_line", "engine_counters_line",
    "err_console", "final_line", "local_time", "num", "out_console",
    "print_json", "scenario_alert_line", "scenario_status_table", "serve_counters",
    "serve_status_line", "show_bench", "show_series", "show_stats", "show_status", "since",
    "status_text", "workers_table",
]

#: Colour (rich style) of each status in the demo's output.
COLOURS = {"OK": "green", "WARN": "yellow", "STALE": "magenta", "CRIT": "bold red"}


# --- consoles -------------------------------------------------------------------

def err_console():
    """A rich console on stderr that prints text as given (no markup).

    Returns
    -------
    rich.console.Console
    """
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def out_console():
    """A rich console on stdout; piped output gets room for whole tables
    (rich would assume 80 columns).

    Returns
    -------
    rich.console.Console
    """
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def print_json(obj) -> None:
    """Print ``obj`` as indented JSON on stdout.

    Parameters
    ----------
    obj : object
        Anything :func:`json.dumps` takes.
    """
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


# --- figures ----------------------------------------------------------------------

def num(v, digits: int = 6) -> str:
    """A value as the commands show it: ``-`` for None, thousands separators
    for integers, ``digits`` significant digits for floats.

    Parameters
    ----------
    v : object
        The value.
    digits : int
        Significant digits of a float.

    Returns
    -------
    str
    """
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def count(n: int) -> str:
    """A counter in at most 7 characters: 12,345 / 327k / 25.6M / 1.2G.

    Parameters
    ----------
    n : int
        The counter.

    Returns
    -------
    str
    """
    if n < 100_000:
        return f"{n:,}"
    if n < 10_000_000:
        return f"{n / 1e3:,.0f}k"
    if n < 10_000_000_000:
        return f"{n / 1e6:,.1f}M"
    return f"{n / 1e9:,.1f}G"


def short(x) -> str:
    """A float in 4 significant digits, ``-`` for None.

    Parameters
    ----------
    x : float or None

    Returns
    -------
    str
    """
    return "-" if x is None else f"{x:.4g}"


def age(ts_ns, now_ns: int) -> str:
    """How long ago an event time was: ``850ms``, ``12.5s``, ``3.2m``, ``1.1h``, ``4.0d``.

    Parameters
    ----------
    ts_ns : int or None
        Event time, ns since the epoch; falsy for none.
    now_ns : int
        Now, ns since the epoch.

    Returns
    -------
    str
        Negative (``-2s``) for a time ahead of ``now_ns``; ``-`` for none.
    """
    if not ts_ns:
        return "-"
    s = (now_ns - ts_ns) / 1e9
    sign, s = ("-", -s) if s < 0 else ("", s)
    if s < 1:
        return f"{sign}{s * 1000:.0f}ms"
    for unit, size in (("s", 1), ("m", 60), ("h", 3600)):
        if s < 120 * size:
            return f"{sign}{s / size:.3g}{unit}"
    return f"{sign}{s / 86400:.1f}d"


def local_time(ts_ns, ms: bool = True) -> str:
    """An event time (ns since the epoch) in local time, to the millisecond.

    Parameters
    ----------
    ts_ns : int or None
        Event time; ``-`` for None.
    ms : bool
        Show the milliseconds.

    Returns
    -------
    str
        ``2026-11-22 12:04:31.123``.
    """
    if ts_ns is None:
        return "-"
    secs, ns = divmod(int(ts_ns), 10**9)
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(secs))
    return f"{text}.{ns // 10**6:03d}" if ms else text


def ago(ts_ns, now_ns: int) -> str:
    """``3.2m ago``; event times come from the senders' clocks, which may be
    ahead of this one: ``in 2s``.

    Parameters
    ----------
    ts_ns : int or None
        Event time, ns since the epoch.
    now_ns : int
        Now, ns since the epoch.

    Returns
    -------
    str
    """
    if not ts_ns:
        return "-"
    text = age(ts_ns, now_ns)
    return f"in {text[1:]}" if text.startswith("-") else f"{text} ago"


def since(ts_ns, now_ns: int) -> str:
    """An event time in local time, to the second, and how long ago.

    Parameters
    ----------
    ts_ns, now_ns : int
        The event time (None for none) and now, in ns since the epoch.

    Returns
    -------
    str
        ``2026-11-22 12:04:31 (3.2m ago)``, ``-`` for None.
    """
    if ts_ns is None:
        return "-"
    return f"{local_time(ts_ns, ms=False)} ({ago(ts_ns, now_ns)})"


def relative(ts: int | None, start: int) -> str:
    """An event time in seconds from ``start``: ``+1.25s``; ``-`` for None.

    Parameters
    ----------
    ts : int or None
        Event time, ns.
    start : int
        The origin, ns.

    Returns
    -------
    str
    """
    return "-" if ts is None else f"{(ts - start) / 1e9:+.2f}s"


def status_text(series: dict) -> str:
    """A series' status with its pending evaluations: ``WARN (2 pending)``.

    Parameters
    ----------
    series : dict
        A series as the gateway returns it.

    Returns
    -------
    str
    """
    status = series.get("status") or "-"
    if series.get("pending"):
        status += f" ({series['pending']} pending)"
    return status


def _table(title: str | None = None, **options):
    """A rich table in the commands' style: a rule under the heading and no
    outer padding."""
    from rich import box
    from rich.table import Table

    if title is not None:
        options.update(title=title, title_justify="left")
    return Table(box=box.SIMPLE_HEAD, pad_edge=False, **options)


# --- counters ---------------------------------------------------------------------

#: The counters of a worker that every view of them shows (``ringflow
#: stats``, serve's status and final lines, the demo), in order: the key in
#: a worker's dict of ``Engine.stats()["workers"]`` (the same key sums them
#: in :func:`counter_totals`), the heading, and what it counts (the legend;
#: the definitions are docs/health.md's, "What one valid event does").
WORKER_COUNTER_VIEW: tuple[tuple[str, str, str], ...] = (
    ("applied", "applied", "events applied to the state"),
    ("stale", "stale",
     "events older than their series' newest (out of order), in the lifetime figures "
     "and (unless late) their window, never in last, EWMA or status"),
    ("late", "late",
     "of the stale events, those that found their window closed (its end plus the "
     "lateness passed), in no window and no quantile"),
    ("invalid", "invalid", "events refused as invalid"),
    ("full", "full", "events refused because the table had no room for a new series"),
    ("series", "series", "series in the table"),
    ("alerts", "alerts", "status changes written to the alert ring"),
    ("alerts_dropped", "dropped", "status changes lost because the alert ring was full"),
)


# The counters the legend explains (the others say what they are).
_LEGEND = ("stale", "late", "full", "alerts", "dropped")


def counter_cells(counters: dict, compact: bool = False) -> list[tuple[str, str]]:
    """The worker counters (:data:`WORKER_COUNTER_VIEW`) of one worker, or
    of the engine (:func:`counter_totals`), as headings and texts: the one
    renderer of these counters, for every table and line that shows them.

    Parameters
    ----------
    counters : dict
        A worker's dict of ``Engine.stats()["workers"]``, or
        :func:`counter_totals`.
    compact : bool
        At most 7 characters a counter (:func:`count`: ``327k``) instead of
        the whole number.

    Returns
    -------
    list of (str, str)
    """
    show = count if compact else num
    return [(heading, show(counters.get(key, 0))) for key, heading, _ in WORKER_COUNTER_VIEW]


def counter_totals(stats: dict) -> dict:
    """The engine's totals of the worker counters (keys of
    :data:`WORKER_COUNTER_VIEW`): the sums over its workers, but ``invalid``,
    which also counts the events refused at submit (``rejected_invalid``).

    Parameters
    ----------
    stats : dict
        :meth:`engine.Engine.stats` (or the gateway's ``stats`` op).

    Returns
    -------
    dict
    """
    workers = stats.get("workers", [])
    totals = {key: sum(w.get(key, 0) for w in workers) for key, _, _ in WORKER_COUNTER_VIEW}
    if "rejected_invalid" in stats:
        totals["invalid"] = stats["rejected_invalid"]
    return totals


def counter_legend() -> str:
    """What the worker counters count, in one paragraph (under the tables of
    ``ringflow stats`` and the demo).

    Returns
    -------
    str
    """
    return "; ".join(f"{heading}: {meaning}" for _, heading, meaning in WORKER_COUNTER_VIEW
                     if heading in _LEGEND) + "."


def workers_table(stats: dict, title: str = "workers", *, compact: bool = True):
    """A rich table of ``stats["workers"]`` (:meth:`engine.Engine.stats`, or
    the gateway's ``stats`` op): one row a worker, its counters by
    :func:`counter_cells`.

    Parameters
    ----------
    stats : dict
        Has ``workers``, a list of dicts.
    title : str
        Above the table.
    compact : bool
        The demo's and serve's table: counters in at most 7 characters,
        collapsed padding, no cell wrapped (80 columns).  Otherwise
        ``ringflow stats``': whole counters, and each worker's liveness,
        state and restarts, how full its table and rings are and the
        batches it applied.

    Returns
    -------
    rich.table.Table
    """
    table = _table(title, collapse_padding=True) if compact else _table(title)
    rows = []
    for w in stats.get("workers", []):
        cells = [("worker", str(w.get("worker"))), ("pid", str(w.get("pid")))]
        if not compact:
            cells += [("alive", "yes" if w.get("alive") else "NO"),
                      ("state", str(w.get("state", "ok"))),
                      ("restarts", num(w.get("restarts", 0)))]
        cells += counter_cells(w, compact)
        if not compact:
            cells += [("table fill", f"{100 * w.get('table_fill', 0):.1f}%"),
                      ("ring backlog", num(w.get("ring_pending", 0)))]
            cells.append(("batches", num(w.get("batches", 0))))
        rows.append(cells)
    headings = [h for h, _ in rows[0]] if rows else ["worker"]
    for heading in headings:
        table.add_column(heading, justify="right", no_wrap=compact)
    for cells in rows:
        table.add_row(*(text for _, text in cells))
    return table


def counters_line(pairs) -> str:
    """Counters on one line, two spaces apart: ``applied 1,234  series 56``.

    Parameters
    ----------
    pairs : iterable of (str, object)
        Name and value; a value shows as :func:`num` shows it (a string as
        given).

    Returns
    -------
    str
    """
    return "  ".join(f"{name} {num(value)}" for name, value in pairs)


def engine_counters_line(stats: dict) -> str:
    """The engine's totals on one line: the worker counters
    (:func:`counter_cells` of :func:`counter_totals`), events accepted and
    the alerts delivered to subscribers.

    Parameters
    ----------
    stats : dict
        :meth:`engine.Engine.stats`.

    Returns
    -------
    str
    """
    pairs = counter_cells(counter_totals(stats))
    if "alerts_delivered" in stats:
        pairs.append(("alerts delivered", num(stats["alerts_delivered"])))
    return counters_line(pairs)


def serve_counters(stats: dict, gw: dict) -> dict:
    """The counters ``ringflow serve`` reports, from the engine's and the
    gateway's statistics.

    Parameters
    ----------
    stats : dict
        :meth:`engine.Engine.stats`.
    gw : dict
        :meth:`engine.Gateway.stats`.

    Returns
    -------
    dict
        ``messages``, ``accepted``, ``pending`` (in the rings), the worker
        counters of :func:`counter_totals` (``applied``, ``stale``,
        ``late``, ``invalid``, ``table_full``, ``series``, ``alerts``,
        ``alerts_dropped``), ``alerts_delivered``, ``rejected_messages``
        (but for invalid records), ``queries``.
    """
    rejected = gw.get("rejected", {})
    totals = counter_totals(stats)
    totals["table_full"] = totals.pop("full")
    return {
        "messages": gw.get("messages", 0),
        "accepted": gw.get("accepted", 0),
        "pending": sum(w["ring_pending"] for w in stats["workers"]),
        **totals,
        "alerts_delivered": stats.get("alerts_delivered", 0),
        "rejected_messages": sum(v for k, v in rejected.items() if k != "invalid_record"),
        "queries": gw.get("queries", 0),
    }


def serve_status_line(counters: dict, prev: dict | None, dt: float) -> str:
    """``ringflow serve``'s periodic line: the time, the worker counters
    (:func:`counter_cells`) with the rate of applied events since the
    previous line, the alerts delivered and the gateway's counters.

    Parameters
    ----------
    counters : dict
        :func:`serve_counters` now.
    prev : dict or None
        :func:`serve_counters` at the previous line.
    dt : float
        Seconds since the previous line.

    Returns
    -------
    str
    """
    cells = counter_cells({**counters, "full": counters["table_full"]})
    if prev is not None and dt > 0:
        rate = (counters["applied"] - prev["applied"]) / dt
        cells[0] = (cells[0][0], f"{cells[0][1]} (+{rate:,.0f}/s)")
    cells += [("delivered", num(counters["alerts_delivered"])),
              ("messages", num(counters["messages"])), ("queries", num(counters["queries"])),
              ("rejected", num(counters["rejected_messages"]))]
    return f"{time.strftime('%H:%M:%S')} {counters_line(cells)}"


def final_line(counters: dict) -> str:
    """``final: messages=12 accepted=...``: every counter, for scripts.

    Parameters
    ----------
    counters : dict
        :func:`serve_counters`.

    Returns
    -------
    str
    """
    return "final: " + " ".join(f"{k}={v}" for k, v in counters.items())


def _thread_health(t: dict) -> str:
    """One gateway thread's ``state``, restarts and last error, in a line."""
    text = t.get("state", "?")
    n = t.get("restarts", 0)
    if n:
        text += f", {n:,} restart{'s' if n != 1 else ''}"
    err = t.get("last_error")
    if err:
        text += (f", last error {err.get('type')}: {err.get('message')} at "
                 f"{local_time(int(err.get('at', 0) * 1e9))}")
    return text


def show_stats(out, stats: dict) -> None:
    """Print ``ringflow stats``: the workers table, the gateway's counters
    (rejections by reason, only those that happened), the engine's totals
    and what the worker counters count (:func:`counter_legend`).

    Parameters
    ----------
    out : rich.console.Console
    stats : dict
        The gateway's ``stats`` op.
    """
    out.print(workers_table(stats, compact=False))
    # Why a shard is not ok, or how its last fault ended (docs/faults.md).
    for w in stats.get("workers", []):
        if w.get("cause"):
            when = local_time(w["state_since"]) if w.get("state_since") else "?"
            out.print(f"worker {w['worker']} ({w.get('state')} since {when}): {w['cause']}",
                      soft_wrap=True)
    gw = stats.get("gateway") or {}
    if gw:
        gt = _table("gateway")
        gt.add_column("counter")
        gt.add_column("value", justify="right")
        for k, val in gw.items():
            if k == "threads":
                for name, t in val.items():
                    gt.add_row(f"thread {name}", _thread_health(t))
            elif isinstance(val, dict):
                for reason, n in val.items():
                    if n:
                        gt.add_row(f"{k}: {reason}", num(n))
            else:
                gt.add_row(k, num(val))
        out.print(gt)
    out.print(f"engine: {stats.get('state', '?')}, {num(stats.get('accepted'))} accepted; "
              f"{engine_counters_line(stats)}", soft_wrap=True, markup=False)
    out.print(counter_legend(), soft_wrap=True, markup=False)
    out.print(journal_line(stats.get("journal")), soft_wrap=True, markup=False)


def journal_line(journal: dict | None) -> str:
    """One line on the journal (``stats()["journal"]``): where, policy,
    bytes, failures, and what the start recovered and when."""
    if journal is None:
        return "journal: none (the state lives in memory only; serve --data-dir DIR keeps it)"
    text = (f"journal: {journal['dir']}, fsync={journal['fsync']}, "
            f"{num(journal['bytes'])} bytes written since the start")
    if journal.get("failing"):
        text += f"; FAILING on {journal['failing']} shard(s): {journal['error']}"
    if journal.get("errors"):
        text += f"; {num(journal['errors'])} failed writes"
    if journal.get("lag"):
        text += f"; {num(journal['lag'])} events waiting to be journaled"
    if journal.get("synced_ns"):
        text += f"; synced {local_time(journal['synced_ns'], ms=True)}"
    rec = journal.get("recovered")
    if rec and rec.get("frames"):
        text += (f"; recovered {num(rec['events'])} events at "
                 f"{local_time(rec['at_ns'], ms=False)} in {rec['seconds']:.2f}s")
    elif rec:
        text += "; started on an empty journal"
    if rec and rec.get("torn_tails"):
        text += f", {rec['torn_tails']} torn tail(s) cut"
    return text


# --- health -------------------------------------------------------------------------

def show_series(out, head: str, rows: list[dict], now: int) -> None:
    """Print ``ringflow query``: ``head``, then one column per metric and
    one row per figure (a dozen figures fit the height of a terminal better
    than its width).

    Parameters
    ----------
    out : rich.console.Console
    head : str
        The line above the table (not its title: a title wraps at the
        table's width).
    rows : list of dict
        Series as the gateway returns them.
    now : int
        Now, ns since the epoch.
    """
    from rich.markup import escape

    rows = sorted(rows, key=lambda r: (r.get("metric") or "", r.get("metric_id", 0)))
    out.print(head, soft_wrap=True, markup=False)
    table = _table()
    table.add_column("")
    for r in rows:
        table.add_column(escape(r.get("metric") or f"#{r.get('metric_id')}"), justify="right")

    def add(label: str, cell) -> None:
        table.add_row(label, *(escape(cell(r)) for r in rows))

    def std(r):
        var = r.get("var")
        return var ** 0.5 if isinstance(var, (int, float)) and var >= 0 else None

    def win(r, key):
        return (r.get("window") or {}).get(key)

    add("status", status_text)
    add("since", lambda r: since(r.get("since"), now))
    for name in ("last", "ewma"):
        add(name, lambda r, name=name: num(r.get(name), 4))
    add("count", lambda r: num(r.get("count")))
    add("mean", lambda r: num(r.get("mean"), 4))
    add("std", lambda r: num(std(r), 4))
    add("min", lambda r: num(r.get("min"), 4))
    add("max", lambda r: num(r.get("max"), 4))
    add("window", lambda r: f"from {local_time(win(r, 'start'), ms=False)[11:]}"
        if win(r, "start") is not None else "-")
    add("win count", lambda r: num(win(r, "count")))
    for key in ("mean", "min", "max"):
        add(f"win {key}", lambda r, key=key: num(win(r, key), 4))
    for q in ("p50", "p95", "p99"):
        add(q, lambda r, q=q: num((r.get("quantiles") or {}).get(q), 4))
    view_names = list(dict.fromkeys(k for r in rows for k in (r.get("views") or {})))
    for name in view_names:
        add(name, lambda r, name=name: num((r.get("views") or {}).get(name), 4))
    add("age", lambda r: ago(r.get("last_ts"), now))          # of the last event
    add("stale/late", lambda r: f"{num(r.get('stale'))}/{num(r.get('late'))}")
    out.print(table)


def show_status(out, reply: dict, everything: bool, now: int) -> None:
    """Print ``ringflow status``: how many entities, then each, worst first,
    with its series at its level or worse under it.

    Parameters
    ----------
    out : rich.console.Console
    reply : dict
        The gateway's ``status`` op: ``entities``, ``total`` and (from
        servers that send it) ``counts``, every series by status.
    everything : bool
        OK entities were asked for too (``--all``).
    now : int
        Now, ns since the epoch.
    """
    entities, total = reply["entities"], reply["total"]
    series, rec = reply.get("series"), reply.get("recovered")
    if rec is not None:
        out.print(f"state recovered from the journal at {local_time(rec['at_ns'], ms=False)}: "
                  f"{rec['events']:,} events replayed in {rec['seconds']:.2f}s; a series "
                  f"shows its last status until it reports again or its TTL passes",
                  soft_wrap=True, markup=False)
    if not entities:
        if series == 0 or (everything and series is None):
            out.print("no series known yet: nothing has been sent"
                      + (" since the start" if rec is None else ""), soft_wrap=True)
        elif everything:
            out.print("no entity at all yet", soft_wrap=True)
        elif series is None:
            out.print("no entity at WARN or worse", soft_wrap=True)
        else:
            out.print(f"no entity at WARN or worse: {series:,} series, each OK as of its "
                      f"last reading", soft_wrap=True)
        return
    from rich.markup import escape

    what = "entities" if total != 1 else "entity"
    head = f"{total} {what}" + ("" if everything else " at WARN or worse") + \
        (f", the {len(entities)} worst shown (--limit)" if len(entities) < total else "")
    out.print(head, soft_wrap=True, markup=False)
    counts = reply.get("counts")
    if counts:
        # Every series, whatever --limit cut: how bad it is overall.
        out.print("series: " + ", ".join(f"{n:,} {name}" for name, n in reversed(counts.items())
                                         if n), soft_wrap=True, markup=False)
    table = _table()
    for c in ("entity / metric", "status", "since", "last", "ewma", "p95"):
        table.add_column(c, justify="left" if c in ("entity / metric", "status", "since")
                         else "right")
    for e in entities:
        name = e.get("entity") or f"{e['entity_id']:#x}"
        table.add_row(escape(name), e["status"], since(e.get("since"), now), "", "", "")
        for r in e.get("series", []):
            metric = r.get("metric") or f"#{r.get('metric_id')}"
            table.add_row(escape(f"  {metric}"), escape(status_text(r)),
                          since(r.get("since"), now), num(r.get("last"), 4),
                          num(r.get("ewma"), 4),
                          num((r.get("quantiles") or {}).get("p95"), 4))
    out.print(table)


def scenario_status_table(status: list[dict], start: int, limit: int = 10,
                          title: str = "status (entities not OK, worst first)"):
    """A rich table of ``Engine.status()`` for the demo: one row an entity,
    with its series that are not OK; times from the scenario's start.

    Parameters
    ----------
    status : list of dict
        :meth:`engine.Engine.status`.
    start : int
        The scenario's start, ns.
    limit : int
        Entities to list; the rest are counted.
    title : str
        Above the table.

    Returns
    -------
    rich.table.Table
    """
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("entity", "status", "since", "series (last value)"):
        table.add_column(col, justify="left", no_wrap=col != "series (last value)")
    for e in status[:limit]:
        name = e["entity"] if e["entity"] is not None else f"{e['entity_id']:#x}"
        series = ", ".join(
            f"{s['metric'] or hex(s['metric_id'])} {short(s['last'])}"
            + ("" if s["status"] == e["status"]
               else f" [{COLOURS.get(s['status'], '')}]{s['status']}[/]")
            for s in e["series"])
        table.add_row(name, f"[{COLOURS.get(e['status'], '')}]{e['status']}[/]",
                      relative(e["since"], start), series)
    if len(status) > limit:
        table.add_row(f"... {len(status) - limit} more", "", "", "")
    if not status:
        table.add_row("(every entity is OK)", "", "", "")
    return table


# --- alerts -------------------------------------------------------------------------

def alert_line(alert: dict) -> str:
    """One alert the gateway published, as ``ringflow alerts`` prints it.

    Parameters
    ----------
    alert : dict
        The alert's JSON (PROTOCOL.md).

    Returns
    -------
    str
        ``2026-11-22 12:04:31.123 web-17 disk OK -> CRIT (last = 0.97)``
    """
    who = alert.get("entity")
    if who is None:
        who = f"{alert.get('entity_id', 0):#x}"
    what = alert.get("metric")
    if what is None:
        what = f"{alert.get('metric_id', 0):#x}"
    value = alert.get("value")
    shown = f"{value:g}" if isinstance(value, (int, float)) else "-"
    why = f"{alert.get('stat')} = {shown}"
    since = alert.get("silent_since")
    if alert.get("stat") == "ttl" and isinstance(since, int):
        # A change to STALE: its value is the TTL; say how long it is silent.
        silent = (time.time_ns() - since) / 1e9
        why = f"silent {silent:.1f} s, ttl {shown} s"
    return (f"{local_time(alert.get('ts'))} {who} {what} {alert.get('old')} -> "
            f"{alert.get('new')} ({why})")


def missed_line(msg: dict) -> str:
    """A MISSED notice (alerts the subscription could not get), as
    ``ringflow alerts`` prints it on stderr."""
    span = ""
    if isinstance(msg.get("from"), int) and isinstance(msg.get("to"), int):
        span = f" (numbers {msg['from']}..{msg['to']})"
    return (f"ringflow alerts: missed {msg.get('missed')} alerts{span}: the server's alert "
            "log no longer holds them; statuses are still right, `ringflow status` "
            "shows them")


def engine_alert_line(alert: dict) -> str:
    """A change of a shard's state (the ENGINE topic), as ``ringflow
    alerts`` prints it: ``2026-12-03 21:04:31.123 ENGINE worker 1: ok ->
    down (worker 1 (pid 4242) was killed by signal 9 (SIGKILL); restarting)``."""
    return (f"{local_time(alert.get('ts'))} ENGINE worker {alert.get('worker')}: "
            f"{alert.get('old')} -> {alert.get('new')} ({alert.get('cause')})")


def scenario_alert_line(alert, start: int) -> str:
    """One alert as a line of rich markup for the demo: event time (seconds
    from the scenario's start), host, metric, old -> new, stat = value.

    Parameters
    ----------
    alert : engine.Alert
        The alert.
    start : int
        The scenario's start, ns.

    Returns
    -------
    str
    """
    colour = COLOURS.get(alert.new, "")
    who = alert.entity if alert.entity is not None else f"{alert.key:#x}"
    what = alert.metric if alert.metric is not None else f"{alert.metric_id:#x}"
    if alert.stat == "ttl":
        why = f"silent, last = {short(alert.value)}"
    else:
        why = f"{alert.stat} = {short(alert.value)}"
    return (f"{relative(alert.ts, start):>8}  {who:<10} {what:<11} "
            f"{alert.old:>5} -> [{colour}]{alert.new:<5}[/]  {why}")


# --- the suite ------------------------------------------------------------------------

def show_bench(out, results: dict) -> None:
    """Print the summary of ``ringflow bench``: the contenders' tables, the
    targets, the producers' and the scaling sections' figures, the notes and
    where the results are.

    Parameters
    ----------
    out : rich.console.Console
    results : dict
        What :func:`engine.suite.runner.run_suite` returned.
    """
    from ..suite.report import CONTENDER_HEAD as head
    from ..suite.report import summary_rows, target_rows

    def table(title, heading, rows):
        t = _table(title)
        for i, c in enumerate(heading):
            t.add_column(c, justify="left" if i in (0, len(heading) - 1) else "right")
        for row in rows:
            t.add_row(*[c.replace("**", "") for c in row])
        out.print(t)

    c = results.get("contenders")
    if c is not None:
        table("contenders, 1 producer", head, summary_rows(results))
        if c.get("contended"):
            table(f"contenders, {c.get('contended_producers')} producers", head,
                  summary_rows(results, "contended"))
        if target_rows(results):
            table("targets (issue #5)", ["target", "measured", "verdict"],
                  target_rows(results))
    prod = (results.get("producers") or {}).get("results") or {}
    if prod:
        out.print("max producers with p99 <= 10 ms: " + ", ".join(
            f"{n} {v.get('max_producers') or 'none'}" for n, v in prod.items()),
            soft_wrap=True, markup=False)
    scaling = (results.get("scaling") or {}).get("results") or {}
    for name, rows in scaling.items():
        out.print(f"scaling {name}: " + ", ".join(
            f"{r['workers']}w " + (f"{r['events_per_s']:,.0f}/s" if "error" not in r
                                   else "ERROR") for r in rows), soft_wrap=True, markup=False)
    for note in results.get("notes", []):
        out.print(f"note: {note}", soft_wrap=True, markup=False)
    out.print(f"results in {results['out_dir']}/ (results.json, report.md"
              + (", plots" if any(str(f).endswith(".png") for f in results.get("files", []))
                 else "") + ")", soft_wrap=True, markup=False)
