"""Plain NumPy / Python reference implementations of every kernel.

The compiled kernels are checked against these on random and adversarial
input; they favour obviousness over speed.
"""

from __future__ import annotations

import numpy as np

from engine.core.layout import PRODUCER_METRIC

MASK64 = (1 << 64) - 1


def mix64_ref(z: int) -> int:
    """SplitMix64's finaliser, on Python ints."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def mix64_np(keys: np.ndarray) -> np.ndarray:
    """The same mixer vectorised over uint64 (wrapping arithmetic)."""
    z = keys.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def shard_ref(keys: np.ndarray, workers: int) -> np.ndarray:
    """``mix64(key) % workers``."""
    return (mix64_np(keys) % np.uint64(workers)).astype(np.uint32)


def valid_mask(events: np.ndarray, ts_min: int, ts_max: int) -> np.ndarray:
    """Which events the engine must apply to a series' row.  The reserved
    metric never is: as a producer marker (flags EVENT_MARKER, where
    markers are let through) it raises the producer's mark beside the rows,
    and otherwise it is invalid."""
    return (
        np.isfinite(events["value"]) & (events["ts"] >= ts_min) & (events["ts"] <= ts_max)
        & (events["metric"] != PRODUCER_METRIC)
    )


def series_state_ref(events: np.ndarray, ts_min: int, ts_max: int, half_life: float) -> dict:
    """Sequential per-series fold of ``events`` in arrival order.

    Returns ``{(key, metric): dict}`` with count, sum, min, max, mean, var
    (population), last, last_ts, first_ts, ewma and stale, exactly as the
    update kernel defines them: an event older than the series' newest event
    time counts in count/sum/min/max/mean/var but never replaces last,
    last_ts or ewma, and is counted in stale.  The EWMA decays in event
    time: an in-order event ``dt`` ns after the newest one weighs
    ``1 - 2 ** (-dt / half_life)`` (docs/health.md).
    """
    out: dict = {}
    ok = valid_mask(events, ts_min, ts_max)
    for e, good in zip(events.tolist(), ok.tolist()):
        key, ts, metric, _flags, x = e
        if not good:
            continue
        s = out.get((key, metric))
        if s is None:
            s = out[(key, metric)] = {
                "count": 0, "values": [], "last": 0.0, "last_ts": None,
                "first_ts": ts, "ewma": 0.0, "stale": 0,
            }
        s["count"] += 1
        s["values"].append(x)
        if s["last_ts"] is None or ts >= s["last_ts"]:
            if s["last_ts"] is None:
                s["ewma"] = x
            else:
                a = 2.0 ** (-(ts - s["last_ts"]) / half_life)
                s["ewma"] = a * s["ewma"] + (1.0 - a) * x
            s["last"] = x
            s["last_ts"] = ts
        else:
            s["stale"] += 1
        s["first_ts"] = min(s["first_ts"], ts)
    for s in out.values():
        v = np.array(s.pop("values"))
        s.update(sum=float(v.sum()), min=float(v.min()), max=float(v.max()),
                 mean=float(v.mean()), var=float(v.var()))
    return out


def aggregate_ref(events: np.ndarray, ts_min: int, ts_max: int) -> np.ndarray:
    """Vectorised oracle for large streams: per-series count, sum, min, max,
    mean, last (value at the greatest event time, the latest arrival among
    equal times), last_ts and first_ts, sorted by (key, metric)."""
    ev = events[valid_mask(events, ts_min, ts_max)]
    order = np.lexsort((np.arange(len(ev)), ev["ts"], ev["metric"], ev["key"]))
    ev = ev[order]
    key, metric = ev["key"], ev["metric"]
    new = np.ones(len(ev), bool)
    new[1:] = (key[1:] != key[:-1]) | (metric[1:] != metric[:-1])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], len(ev)) - 1
    res = np.zeros(len(starts), dtype=[
        ("key", "<u8"), ("metric", "<u4"), ("count", "<u8"), ("sum", "<f8"),
        ("min", "<f8"), ("max", "<f8"), ("mean", "<f8"), ("last", "<f8"),
        ("last_ts", "<i8"), ("first_ts", "<i8"),
    ])
    res["key"] = key[starts]
    res["metric"] = metric[starts]
    res["count"] = ends - starts + 1
    res["sum"] = np.add.reduceat(ev["value"], starts) if len(ev) else []
    res["min"] = np.minimum.reduceat(ev["value"], starts) if len(ev) else []
    res["max"] = np.maximum.reduceat(ev["value"], starts) if len(ev) else []
    res["mean"] = res["sum"] / np.maximum(res["count"], 1)
    res["last"] = ev["value"][ends]
    res["last_ts"] = ev["ts"][ends]
    res["first_ts"] = ev["ts"][starts]
    return res


def sequential_moments_ref(values) -> dict:
    """count, sum, mean, m2 and var (population) folded in arrival order
    the way the update kernel does it: a running sum, and Welford's update
    with one reciprocal ``1/n``, the mean scaled before subtracting
    (``mean += x/n - mean/n``) so that it stays finite for readings near
    DBL_MAX of opposite signs.

    NumPy's pairwise sum and two-pass variance are the better oracles for
    ordinary data; this one is for adversarial values (cancellation,
    overflow to inf, denormals) where a correct sequential fold legitimately
    differs from them.  Without FMA contraction it currently matches the
    kernel bit for bit, but the tests compare with a rounding tolerance so
    that an equally good reordering of the arithmetic still passes.
    """
    n, total, mean, m2, var = 0, 0.0, 0.0, 0.0, 0.0
    for x in values:
        x = float(x)
        n += 1
        inv = 1.0 / float(n)
        delta = x - mean
        total += x
        mean += x * inv - mean * inv
        m2 += delta * (x - mean)
        var = m2 * inv
    return {"count": n, "sum": total, "mean": mean, "m2": m2, "var": var}


def admitted_mask_ref(events: np.ndarray, ts_min: int, ts_max: int, limit: int,
                      known=()) -> np.ndarray:
    """Which events a table with room for ``limit`` series applies.

    An event is applied when it is valid and its series is one of the first
    ``limit`` distinct series (``known`` ones, already in the table, first;
    then new valid series in arrival order).  Valid events of any later
    series are refused (the kernel's ``full`` counter); invalid events never
    create a series.
    """
    seen = dict.fromkeys(known)
    ok = valid_mask(events, ts_min, ts_max)
    out = np.zeros(len(events), bool)
    for i, (key, metric, good) in enumerate(
        zip(events["key"].tolist(), events["metric"].tolist(), ok.tolist())
    ):
        if not good:
            continue
        s = (key, metric)
        if s not in seen:
            if len(seen) >= limit:
                continue
            seen[s] = None
        out[i] = True
    return out
