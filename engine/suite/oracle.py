"""The one right answer: the final per-series state of a workload.

:func:`final_state` computes it with NumPy (group by series, no Python loop
over events); :func:`check` compares a contender's state with it and lists
every mismatch in words.  Rules (engine.suite.base): ``last`` is the value of
the event with the largest ``ts``, ties going to the one later in the
stream; an older event never replaces it.
"""

from __future__ import annotations

import math

import numpy as np

from .base import STATE_FIELDS, Workload

__all__ = ["final_state", "check", "stale_overwrites_possible"]


def _grouped(events: np.ndarray):
    """Sort by (key, metric, ts, stream index); return order and group starts."""
    n = len(events)
    idx = np.arange(n)
    order = np.lexsort((idx, events["ts"], events["metric"], events["key"]))
    k = events["key"][order]
    m = events["metric"][order]
    new = np.ones(n, bool)
    if n:
        new[1:] = (k[1:] != k[:-1]) | (m[1:] != m[:-1])
    return order, np.flatnonzero(new)


def final_state(workload: Workload | np.ndarray) -> dict:
    """Final state of every series after the whole stream.

    Parameters
    ----------
    workload : Workload or numpy.ndarray
        The workload, or its ``EVENT_DTYPE`` events in stream order.

    Returns
    -------
    dict
        ``{(key, metric): (count, sum, min, max, last, last_ts)}`` with
        Python ints and floats, fields in :data:`STATE_FIELDS` order.
    """
    ev = workload.events if isinstance(workload, Workload) else workload
    if len(ev) == 0:
        return {}
    order, starts = _grouped(ev)
    ends = np.append(starts[1:], len(ev)) - 1
    v = ev["value"][order]
    t = ev["ts"][order]
    count = np.diff(np.append(starts, len(ev)))
    total = np.add.reduceat(v, starts)
    vmin = np.minimum.reduceat(v, starts)
    vmax = np.maximum.reduceat(v, starts)
    first = order[starts]
    keys = ev["key"][first].tolist()
    mets = ev["metric"][first].tolist()
    rows = zip(
        count.tolist(), total.tolist(), vmin.tolist(), vmax.tolist(),
        v[ends].tolist(), t[ends].tolist(),
    )
    return {(k, m): row for k, m, row in zip(keys, mets, rows)}


def check(result_state: dict, expected, rtol: float = 1e-9, limit: int | None = None) -> list:
    """Every way ``result_state`` differs from the right answer.

    Parameters
    ----------
    result_state : dict
        A contender's ``{(key, metric): (count, sum, min, max, last, last_ts)}``.
    expected : Workload or dict
        The workload (its oracle state is computed) or an oracle state.
    rtol : float
        Relative tolerance of ``sum`` (summation order differs between
        designs); every other field must be equal.
    limit : int or None
        Report at most this many mismatches, then one line saying how many
        more there were.

    Returns
    -------
    list of str
        Human-readable mismatches; empty when the state is right.
    """
    oracle = expected if isinstance(expected, dict) else final_state(expected)
    out = []
    for series in oracle.keys() - result_state.keys():
        out.append(f"missing series key={series[0]} metric={series[1]}")
    for series in result_state.keys() - oracle.keys():
        out.append(f"extra series key={series[0]} metric={series[1]}")
    for series, want in oracle.items():
        got = result_state.get(series)
        if got is None:
            continue
        if len(got) != len(STATE_FIELDS):
            out.append(f"series {series}: {len(got)} fields, want {len(STATE_FIELDS)}")
            continue
        for name, g, w in zip(STATE_FIELDS, got, want):
            if name == "sum":
                scale = max(abs(w), 1.0)
                ok = math.isclose(g, w, rel_tol=rtol, abs_tol=rtol * scale)
            else:
                ok = g == w
            if not ok:
                out.append(f"series key={series[0]} metric={series[1]}: {name} {g!r} != {w!r}")
    if limit is not None and len(out) > limit:
        more = len(out) - limit
        out = out[:limit] + [f"... and {more} more mismatches"]
    return out


def stale_overwrites_possible(workload: Workload | np.ndarray) -> int:
    """Events that arrive older than their series' newest event so far.

    A design that let every arriving event replace ``last`` would make this
    many stale overwrites on a single thread; the right designs make none.

    Parameters
    ----------
    workload : Workload or numpy.ndarray

    Returns
    -------
    int
        Number of events with ``ts`` strictly below the largest ``ts`` of
        earlier events of the same series.
    """
    ev = workload.events if isinstance(workload, Workload) else workload
    n = len(ev)
    if n < 2:
        return 0
    idx = np.arange(n)
    order = np.lexsort((idx, ev["metric"], ev["key"]))  # by series, stream order
    k = ev["key"][order]
    m = ev["metric"][order]
    new = np.ones(n, bool)
    new[1:] = (k[1:] != k[:-1]) | (m[1:] != m[:-1])
    group = np.cumsum(new) - 1
    # Dense ranks of ts keep the running maximum per group within int64.
    rank = np.unique(ev["ts"], return_inverse=True)[1].ravel()[order].astype(np.int64)
    shifted = group * (n + 1) + rank
    runmax = np.maximum.accumulate(shifted)
    prev = np.empty(n, np.int64)
    prev[0] = -1
    prev[1:] = runmax[:-1]
    return int(np.count_nonzero(~new & (shifted < prev)))
