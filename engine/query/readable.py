"""State rows turned into what a person reads (docs/health.md defines every
field): the one place that derives figures from a row, for the embedded API,
the gateway's JSON replies and the alerts alike.

The kernels keep raw accumulators (``m2``, window sums, sketch counters);
the derived figures (variance, window means, quantiles, status names) are
computed here, when a row is read, so that the hot path never does it."""

from __future__ import annotations

import functools
import math

import numpy as np

from ..core.layout import FOLD_NONE, ROW_SHARD_DOWN
from ..core.records import STATE_DTYPE, finite_or_none
from ..health.rules import STAT_NAMES, STATUS_NAMES, stat_name

__all__ = [
    "STATUS_NAMES",
    "STATUS_CODES",
    "QUANTILES",
    "sketch_quantile",
    "merge_sketches",
    "merged_quantile",
    "series_dict",
    "entity_dict",
]

STATUS_CODES = {name: code for code, name in enumerate(STATUS_NAMES)}
#: The quantiles every query reports.
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))

_VIEW0 = STAT_NAMES.index("view0")
_INDEX = {name: i for i, name in enumerate(STATE_DTYPE.names)}


def _bucket_estimate(b: int) -> float:
    if b < 4:
        return 0.0
    # On the mantissas, scaled after: 2 * lo * hi overflows above 1e154.
    lo = 1.0 + (b & 3) * 0.25
    hi = lo + 0.25
    return math.ldexp(2.0 * lo * hi / (lo + hi), (b >> 2) - 1023)


def _decode(base: int, counts, total, lo: float, hi: float, q: float) -> float:
    # The one sketch decoder (docs/health.md): the bucket holding rank
    # floor(q * (total - 1)), its estimate clamped to the exact min and max.
    # total >= 1 here, so int() is floor().
    rank = int(q * (total - 1))
    last = len(counts) - 1
    cum = 0
    i = 0
    while i < last:
        cum += counts[i]
        if cum > rank:
            break
        i += 1
    return min(max(_bucket_estimate(base + i), lo), hi)


def sketch_quantile(sk_base: int, sketch, win_count: int, win_min: float, win_max: float,
                    q: float) -> float | None:
    """Quantile ``q`` of a row's current window from its sketch, exactly as
    the rules compute it: within 1/9 of the true value at rank
    ``floor(q * (n - 1))`` (docs/health.md).  ``None`` for an empty window."""
    if not win_count:
        return None
    # Python ints: NumPy 2 adds u16 counters in u16, and a window's counters
    # may total more than 65535 (only one counter is kept below that).
    counts = sketch.tolist() if isinstance(sketch, np.ndarray) else [int(c) for c in sketch]
    return _decode(sk_base, counts, sum(counts), win_min, win_max, q)


def merge_sketches(rows: np.ndarray) -> tuple[int, np.ndarray, float, float]:
    """Merge the current-window sketches of several rows (one metric across
    hosts, say) into one histogram: the sketches are mergeable because a
    bucket is the same value range in every row.

    Counters are scaled back by each row's halvings (``2 ** sk_shift``), and
    each row's collapsed bucket 0 stays where that row put it.

    Returns
    -------
    (base, counts, lo, hi)
        Bucket index of ``counts[0]``, the merged counts (float, since
        scaled), and the exact min and max over the rows' windows.  An
        empty merge gives ``(0, [], nan, nan)``.
    """
    rows = rows[rows["win_count"] > 0]
    if not len(rows):
        return 0, np.zeros(0), math.nan, math.nan
    width = rows["sketch"].shape[1]
    bases = rows["sk_base"].astype(np.int64)
    base = int(bases.min())
    counts = np.zeros(int(bases.max()) - base + width)
    scale = np.ldexp(1.0, rows["sk_shift"].astype(np.int64))
    for b, sketch, k in zip(bases.tolist(), rows["sketch"], scale):
        counts[b - base:b - base + width] += sketch * k
    return base, counts, float(rows["win_min"].min()), float(rows["win_max"].max())


def merged_quantile(merged: tuple[int, np.ndarray, float, float], q: float) -> float | None:
    """Quantile ``q`` of a :func:`merge_sketches` result, with the same rank
    rule and estimate as one row's (docs/health.md); ``None`` when empty."""
    base, counts, lo, hi = merged
    total = counts.sum()
    if not total:
        return None
    # Python floats add like NumPy's cumsum (in order, in float64).
    return _decode(base, counts.tolist(), total, lo, hi, q)


def _window(count: int, total: float, lo: float, hi: float) -> dict:
    if not count:
        return {"count": 0, "sum": 0.0, "min": None, "max": None, "mean": None}
    return {"count": count, "sum": finite_or_none(total), "min": lo, "max": hi,
            "mean": finite_or_none(total / count)}


@functools.lru_cache(maxsize=64)
def _view_labels(views: tuple) -> tuple[str, ...]:
    # Validated and named once per set of horizons, not once per row.
    return tuple(stat_name(_VIEW0 + j, views) for j in range(len(views)))


def series_dict(values, names: dict | None = None, *, window_ns: int = 0,
                views=(1, 5, 15), quantiles=None) -> dict:
    """One state row (a STATE_DTYPE record, or the tuple ``tolist()`` gives)
    as a JSON-ready dict: names where known, derived figures, non-finite
    numbers as ``None``.

    Parameters
    ----------
    values : numpy.void or tuple
        The row.
    names : dict, optional
        ``{"entities": {id: name}, "metrics": {id: name}}``.
    window_ns : int
        The engine's window width, to report each window's end.
    views : sequence of 3 numbers
        The view horizons, to name the views.
    quantiles : sequence of float, optional
        The row's window quantiles in :data:`QUANTILES` order (NaN for an
        empty window), decoded already (by ``engine._query.row_quantiles``
        for a whole array of rows); decoded here when not given.
    """
    v = values if isinstance(values, tuple) else values.tolist()
    g = _INDEX
    names = names or {}
    key, metric = v[g["key"]], v[g["metric"]]
    count = v[g["count"]]
    out = {
        "entity": names.get("entities", {}).get(key), "entity_id": key,
        "metric": names.get("metrics", {}).get(metric), "metric_id": metric,
        "count": count,
    }
    for name in ("sum", "min", "max", "mean"):
        out[name] = finite_or_none(v[g[name]]) if count else None
    out["var"] = finite_or_none(v[g["m2"]] / count) if count else None
    for name in ("ewma", "last"):
        out[name] = finite_or_none(v[g[name]]) if count else None
    for name in ("last_ts", "first_ts"):
        out[name] = v[g[name]] if count else None
    out["stale"] = v[g["stale"]]
    out["late"] = v[g["late"]]
    status = v[g["status"]]
    out["status"] = STATUS_NAMES[status] if status < len(STATUS_NAMES) else str(status)
    out["since"] = v[g["status_since"]] if status or v[g["status_since"]] else None
    pending = v[g["pending"]]
    out["pending"] = STATUS_NAMES[pending] if pending else None
    out["pending_since"] = v[g["pending_since"]] if pending else None
    # Set in the read copy while the series' worker is down, hung or
    # recovering: the row is its last known state, not its current one.
    out["shard_down"] = bool(v[g["flags"]] & ROW_SHARD_DOWN)
    start = v[g["win_start"]]
    win = _window(v[g["win_count"]], v[g["win_sum"]], v[g["win_min"]], v[g["win_max"]])
    prev = _window(v[g["prev_count"]], v[g["prev_sum"]], v[g["prev_min"]], v[g["prev_max"]])
    if count:
        win["start"] = start
        prev["start"] = start - window_ns if window_ns else None
        if window_ns:
            win["end"] = start + window_ns
            prev["end"] = start
    out["window"] = win
    out["prev_window"] = prev
    if quantiles is not None:
        out["quantiles"] = {label: (None if x != x else x)
                            for (label, _), x in zip(QUANTILES, quantiles)}
    else:
        sketch = v[g["sketch"]]
        out["quantiles"] = {
            label: sketch_quantile(v[g["sk_base"]], sketch, v[g["win_count"]],
                                   v[g["win_min"]], v[g["win_max"]], q)
            for label, q in QUANTILES
        }
    folded = v[g["fold_age"]] != FOLD_NONE
    out["views"] = {
        label: (finite_or_none(float(x)) if folded else None)
        for label, x in zip(_view_labels(tuple(views)), v[g["view"]])
    }
    return out


def entity_dict(key: int, rows: list[dict], names: dict) -> dict:
    """An entity's status from its series (as :func:`series_dict` gives
    them): the worst, since the earliest change among the series at that
    level.  Sorts ``rows`` in place, worst first.

    Returns
    -------
    dict
        ``entity`` (name or ``None``), ``entity_id``, ``status``, ``since``
        and ``series`` (``rows``).
    """
    rows.sort(key=lambda r: (-STATUS_CODES[r["status"]], r["since"] or 0))
    worst = rows[0]["status"] if rows else "OK"
    since = [r["since"] for r in rows if r["status"] == worst and r["since"] is not None]
    return {"entity": names["entities"].get(key), "entity_id": key, "status": worst,
            "since": min(since) if since else None, "series": rows}
