"""Record layouts and name hashing.

The event record is the unit that crosses every boundary (socket, ring,
kernel).  Every record's layout is written down once, in
:mod:`engine.core.layout`; the dtypes here and the C structs the kernels use
are both built from it.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable

import numpy as np

from ..errors import InvalidEvents
from .layout import numpy_dtype

__all__ = [
    "EVENT_DTYPE",
    "STATE_DTYPE",
    "ALERT_DTYPE",
    "entity_id",
    "metric_id",
    "make_events",
    "as_events",
    "DEFAULT_TS_MIN",
    "DEFAULT_TS_MAX",
    "as_ids",
    "series_ids",
    "finite_or_none",
]

#: 32-byte event record: little-endian, packed, no padding.
EVENT_DTYPE = numpy_dtype("Event")

#: 384-byte per-series state row (six cache lines), as kept in a state
#: table; docs/health.md defines every field.  The variance is
#: ``m2 / count``; ``stale`` counts events older than ``last_ts`` when they
#: arrived (they count in the aggregates but never replace ``last`` or the
#: status), ``late`` those too late for their window; ``version`` is the
#: row's seqlock word (even when read).
STATE_DTYPE = numpy_dtype("StateRow")

#: 32-byte alert record: a status change of one series, as a worker writes
#: it to its alert ring (docs/health.md, Alerts).
ALERT_DTYPE = numpy_dtype("Alert")

#: Default sane range of event times: 2000-01-01 to 2100-01-01 (ns).
DEFAULT_TS_MIN = 946_684_800 * 10**9
DEFAULT_TS_MAX = 4_102_444_800 * 10**9


def entity_id(name: str) -> int:
    """Stable 64-bit id of an entity name.

    The 8-byte BLAKE2b digest of the UTF-8 name read as a little-endian
    integer: the same in every process and every language.

    Parameters
    ----------
    name : str
        Entity (host) name, e.g. ``"web-01"``.

    Returns
    -------
    int
        The id, in ``0 .. 2**64 - 1``.
    """
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def metric_id(name: str) -> int:
    """Stable 32-bit id of a metric name (4-byte BLAKE2b, little-endian).

    Parameters
    ----------
    name : str
        Metric name, e.g. ``"cpu"``.

    Returns
    -------
    int
        The id, in ``0 .. 2**32 - 1``.
    """
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "little")


def as_ids(values, hasher, dtype, what: str) -> np.ndarray:
    """Ids from an array of ids, or from names and ids mixed in any sequence.

    Parameters
    ----------
    values : array_like of int or str, or one of them
    hasher : callable
        :func:`entity_id` or :func:`metric_id`, applied to names.
    dtype : numpy dtype
        ``np.uint64`` for entities, ``np.uint32`` for metrics.
    what : str
        How errors name the argument.

    Raises
    ------
    InvalidEvents
        A value that is neither a name nor an id that fits ``dtype``.
    """
    bits = np.dtype(dtype).itemsize * 8
    if isinstance(values, (str, int, np.integer)):
        values = [values]
    if isinstance(values, np.ndarray) and values.dtype.kind in "ui":
        if values.dtype.kind == "i" and values.size and values.min() < 0:
            raise InvalidEvents(f"{what} ids must not be negative")
        if values.dtype.itemsize * 8 > bits and values.size and values.max() >= 2**bits:
            raise InvalidEvents(f"{what} ids must fit in {bits} bits")
        return values.astype(dtype, copy=False).ravel()
    if isinstance(values, np.ndarray) and values.dtype.kind not in "UO":
        raise InvalidEvents(f"{what} must be integer ids or names, got dtype {values.dtype}")
    items = values.ravel().tolist() if isinstance(values, np.ndarray) else list(values)

    # Element by element: np.asarray would turn [1, "web-01"] into strings and
    # [2**63, 1] into floats.
    def one(v) -> int:
        if isinstance(v, str):
            return hasher(v)
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < 2**bits:
            return int(v)
        raise InvalidEvents(f"{what} must be names or u{bits} ids, got {v!r}")

    return np.fromiter((one(v) for v in items), dtype=dtype, count=len(items))


def series_ids(keys, metrics) -> tuple[np.ndarray, np.ndarray]:
    """The entity and metric ids of a lookup of many series, as contiguous
    arrays of one length (the embedded reads and the client's lookups share
    this, so that both accept the same arguments).

    Parameters
    ----------
    keys : array_like of int or str
        Entity ids or names.
    metrics : array_like of int or str
        Metric ids or names, one per key, or one metric for every key.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``uint64`` keys and ``uint32`` metrics.

    Raises
    ------
    InvalidEvents
        A value that is neither a name nor an id of the right width.
    ValueError
        As many metrics as keys were not given (nor a single one).
    """
    k = np.ascontiguousarray(as_ids(keys, entity_id, np.uint64, "keys"))
    m = np.ascontiguousarray(as_ids(metrics, metric_id, np.uint32, "metrics"))
    if m.size == 1 and k.size != 1:
        m = np.full(k.size, m[0], np.uint32)
    if m.size != k.size:
        raise ValueError(f"{k.size} keys but {m.size} metrics")
    return k, m


def make_events(
    keys: Iterable[int] | Iterable[str] | np.ndarray,
    metrics: Iterable[int] | Iterable[str] | np.ndarray,
    ts: Iterable[int] | np.ndarray | None,
    values: Iterable[float] | np.ndarray,
) -> np.ndarray:
    """Build a contiguous array of :data:`EVENT_DTYPE` records.

    Parameters
    ----------
    keys : array_like of int or str
        Entity ids, or names hashed with :func:`entity_id`.
    metrics : array_like of int or str
        Metric ids, or names hashed with :func:`metric_id`.  A single value
        is broadcast to every event.
    ts : array_like of int or None
        Event times in nanoseconds since the Unix epoch; ``None`` stamps
        every event with the current time.
    values : array_like of float
        The readings.

    Returns
    -------
    numpy.ndarray
        One record per reading.
    """
    vals = np.asarray(values, dtype=np.float64).ravel()
    n = vals.size
    out = np.zeros(n, dtype=EVENT_DTYPE)
    out["value"] = vals
    k = as_ids(keys, entity_id, np.uint64, "keys")
    m = as_ids(metrics, metric_id, np.uint32, "metrics")
    for name, arr in (("keys", k), ("metrics", m)):
        if arr.size not in (1, n):
            raise InvalidEvents(f"{name} has {arr.size} elements, values has {n}")
    out["key"] = k
    out["metric"] = m
    if ts is None:
        out["ts"] = time.time_ns()
    else:
        t = np.asarray(ts)
        if t.dtype.kind not in "ui":
            raise InvalidEvents(f"ts must be integer nanoseconds, got dtype {t.dtype}")
        t = t.astype(np.int64, copy=False).ravel()
        if t.size not in (1, n):
            raise InvalidEvents(f"ts has {t.size} elements, values has {n}")
        out["ts"] = t
    return out


def as_events(events) -> np.ndarray:
    """Check that ``events`` is a C-contiguous 1-d EVENT_DTYPE array (no copy).

    Raises
    ------
    InvalidEvents
        For any other object, dtype or layout.
    """
    if not isinstance(events, np.ndarray):
        raise InvalidEvents(
            f"events must be a numpy array of engine.EVENT_DTYPE, got {type(events).__name__}"
        )
    if events.dtype != EVENT_DTYPE:
        raise InvalidEvents(f"events must have dtype engine.EVENT_DTYPE, got {events.dtype}")
    if events.ndim != 1 or not events.flags.c_contiguous:
        raise InvalidEvents("events must be a 1-d C-contiguous array (use np.ascontiguousarray)")
    return events


def finite_or_none(x):
    """``x``, or None where JSON has no spelling for it (NaN, infinities).

    Every JSON reply and alert goes through it, so that a non-finite
    statistic reads as ``null`` rather than as invalid JSON.

    Parameters
    ----------
    x : object
        A value bound for JSON.

    Returns
    -------
    object
        ``x`` unchanged unless it is a non-finite float.
    """
    return x if x is None or not isinstance(x, float) or math.isfinite(x) else None
