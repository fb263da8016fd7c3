"""The read model: lock-free reads of the workers' state tables.

Every read of series state goes through a :class:`Reader`: the embedded
API (:class:`engine.Engine` delegates its reads to one), the gateway's JSON
ops (:mod:`engine.query.ops`) and its binary lookups (the table addresses
that :class:`engine._wire.LookupServer` reads come from here too).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np

# The compiled read side, imported here and nowhere else in engine/query.
from .._query import TableSet
from .._table import Table
from ..core.records import STATE_DTYPE, entity_id, metric_id, series_ids
from ..errors import SeriesUnavailable, unavailable_message
from .readable import (
    QUANTILES,
    STATUS_CODES,
    STATUS_NAMES,
    entity_dict,
    merge_sketches,
    merged_quantile,
    series_dict,
)

__all__ = ["Reader"]

_KEY_FIELD = STATE_DTYPE.names.index("key")


def _series_key(key) -> int:
    return entity_id(key) if isinstance(key, str) else int(key)


def _series_metric(metric) -> int:
    return metric_id(metric) if isinstance(metric, str) else int(metric)


def _no_check() -> None:
    pass


class Reader:
    """Lock-free reads of the state tables of a running engine.

    Each row is read under its seqlock, so no read waits for ingest and
    none blocks it; rows of different series may come from slightly
    different instants while ingest runs.

    A row whose seqlock stays mid-write (its worker died or stalled inside
    the write) is given up on after about a millisecond, and never replaced
    by an invented copy.  Reads that name their series (:meth:`get`,
    :meth:`get_many`, :meth:`series`, :meth:`entity_rows`, :meth:`entity`,
    :meth:`quantiles` with ``keys``) raise
    :class:`engine.errors.SeriesUnavailable` naming the series and its
    worker.  Fleet-wide scans (:meth:`snapshot`, :meth:`status`,
    :meth:`quantiles` of every entity) leave such rows out and count them
    in :attr:`unavailable`: one wedged row must not blind the monitor to
    every other series.

    A reader needs nothing from the engine but the tables' memory and the
    settings that name what it reads, so that a read-only attach from
    another process can build one from the segments' names alone
    (``Segment.attach(name).buf`` per worker, in worker order), without an
    :class:`engine.Engine`.

    Parameters
    ----------
    buffers : sequence of buffer
        Each worker's table segment, in worker order (worker ``w`` owns
        shard ``w``).
    names : dict
        ``{"entities": {id: name}, "metrics": {id: name}}``, shared rather
        than copied: names registered later show in later reads.
    window_ns : int
        The engine's window width, to report each window's start and end.
    views : sequence of 3 numbers
        The view horizons, to name the views.
    check : callable, optional
        Called before every read; it raises when the tables can no longer
        be trusted (the engine's raises :class:`engine.errors.EngineClosed`
        and :class:`engine.errors.WorkerDied`).
    """

    def __init__(self, buffers: Sequence, names: dict, *, window_ns: int,
                 views: Sequence = (1, 5, 15),
                 check: Callable[[], None] | None = None) -> None:
        #: The workers' tables (``Table.used`` is each one's series count).
        self.tables = [Table(buf) for buf in buffers]
        #: What the engine's start recovered from its journal
        #: (``Recovery.to_dict()``), or None: set by the engine, shown by
        #: the ``status`` op so that a restarted server says where its
        #: state came from.
        self.recovered: dict | None = None
        self._tableset = TableSet(self.tables)
        self.names = names
        self.window_ns = window_ns
        self.views = tuple(views)
        #: Raises unless the tables may be read (see ``check`` above).
        self.check = check or _no_check
        # A row buffer per thread for reads that return a dict: no NumPy
        # record per call, and no sharing between the gateway's threads.
        self._local = threading.local()

    def close(self) -> None:
        """Let go of the tables' memory (their segments may then close)."""
        for t in self.tables:
            t.release_buffer()
        self._tableset = None

    @property
    def unavailable(self) -> int:
        """Rows that fleet-wide scans of this reader left out because they
        stayed mid-write (a row is counted once per scan that met it)."""
        return sum(t.unavailable for t in self.tables)

    def _named(self, exc: SeriesUnavailable, worker: int | None = None) -> SeriesUnavailable:
        """``exc`` again, naming the series by name where the engine knows it."""
        w = exc.worker if exc.worker is not None else worker
        return SeriesUnavailable(
            unavailable_message(exc.key, exc.metric, w,
                                entity=self.names["entities"].get(exc.key),
                                metric_name=self.names["metrics"].get(exc.metric)),
            key=exc.key, metric=exc.metric, worker=w)

    def header_addresses(self) -> list[int]:
        """Address of each table's header in this process, in worker order,
        for the compiled lookup server."""
        return self._tableset.header_addresses()

    # --- rows -----------------------------------------------------------

    def get(self, key: int | str, metric: int | str) -> np.void | None:
        """One series' state; see :meth:`engine.Engine.get`."""
        self.check()
        k = _series_key(key)
        out = np.empty(1, STATE_DTYPE)
        try:
            found = self._tableset.find_into(k, _series_metric(metric), out)
        except SeriesUnavailable as exc:
            raise self._named(exc) from None
        return out[0] if found else None

    def get_many(self, keys, metrics) -> np.ndarray:
        """Many series' state in the order asked; see :meth:`engine.Engine.get_many`.

        Raises :class:`engine.errors.SeriesUnavailable` for the first series
        whose row stays mid-write: the answer is positional, and no row
        could honestly stand in that series' place.
        """
        self.check()
        k, m = series_ids(keys, metrics)
        out = np.empty(k.size, STATE_DTYPE)
        try:
            self._tableset.get_many_into(k, m, out)
        except SeriesUnavailable as exc:
            raise self._named(exc) from None
        return out

    def entity_rows(self, key: int | str) -> np.ndarray:
        """Every series of one entity; see :meth:`engine.Engine.entity_rows`."""
        self.check()
        table = self._tableset.table_of(_series_key(key))
        size = 64
        while True:
            out = np.empty(size, STATE_DTYPE)
            try:
                n = table.select_key_into(_series_key(key), out)
            except SeriesUnavailable as exc:
                raise self._named(exc, self.tables.index(table)) from None
            if n >= 0:
                return out[:n]
            size = -n + 64

    def snapshot(self) -> np.ndarray:
        """Every series of every table; see :meth:`engine.Engine.snapshot`.

        Rows that stay mid-write are left out and counted in
        :attr:`unavailable`.
        """
        self.check()
        parts = []
        for t in self.tables:
            size = t.used + 1024
            while True:
                out = np.empty(size, STATE_DTYPE)
                n = t.snapshot_into(out)
                if n >= 0:
                    parts.append(out[:n])
                    break
                size = -n + 1024
        return np.concatenate(parts) if parts else np.empty(0, STATE_DTYPE)

    # --- readable dicts -------------------------------------------------

    def series_dict(self, row) -> dict:
        """One row (a STATE_DTYPE record, or the tuple ``tolist()`` gives) as
        a readable, JSON-ready dict (:func:`engine.query.readable.series_dict`)."""
        return series_dict(row, self.names, window_ns=self.window_ns, views=self.views)

    def series_dicts(self, rows: np.ndarray) -> list[dict]:
        """:meth:`series_dict` of every row of an array."""
        # One tolist() for the whole array instead of a NumPy scalar per field.
        return [self.series_dict(values) for values in rows.tolist()]

    def series(self, key: int | str, metric: int | str) -> dict | None:
        """One series as a readable dict; see :meth:`engine.Engine.series`."""
        self.check()
        out = getattr(self._local, "row", None)
        if out is None:
            out = self._local.row = np.empty(1, STATE_DTYPE)
        try:
            found = self._tableset.find_into(_series_key(key), _series_metric(metric), out)
        except SeriesUnavailable as exc:
            raise self._named(exc) from None
        if not found:
            return None
        return self.series_dict(out.tolist()[0])

    def entity(self, key: int | str) -> dict:
        """Every series of one entity and its status; see :meth:`engine.Engine.entity`."""
        rows = self.series_dicts(self.entity_rows(key))
        return entity_dict(_series_key(key), rows, self.names)

    def quantiles(self, metric: int | str, keys=None) -> dict:
        """One metric's quantiles over many series; see :meth:`engine.Engine.quantiles`.

        Over the whole fleet it reads as :meth:`snapshot` (rows stuck
        mid-write left out and counted); over ``keys`` as :meth:`get_many`
        (raises :class:`engine.errors.SeriesUnavailable`).
        """
        mid = _series_metric(metric)
        if keys is None:
            rows = self.snapshot()
            rows = rows[rows["metric"] == mid]
        else:
            rows = self.get_many(keys, mid)
        rows = rows[rows["count"] > 0]
        merged = merge_sketches(rows)
        out = {"series": len(rows), "count": int(rows["win_count"].sum())}
        for label, q in QUANTILES:
            out[label] = merged_quantile(merged, q)
        return out

    def status(self, min_status: str = "WARN") -> list[dict]:
        """Entities at ``min_status`` or worse, worst first; see :meth:`engine.Engine.status`.

        Rows that stay mid-write are left out and counted in
        :attr:`unavailable`.
        """
        self.check()
        if min_status not in STATUS_CODES:
            raise ValueError(f"min_status must be one of {', '.join(STATUS_NAMES)}")
        level = STATUS_CODES[min_status]
        by_key: dict[int, list] = {}
        for t in self.tables:
            size = 256
            while True:
                out = np.empty(size, STATE_DTYPE)
                n = t.select_status_into(level, out)
                if n >= 0:
                    break
                size = -n + 256
            for values in out[:n].tolist():
                by_key.setdefault(values[_KEY_FIELD], []).append(self.series_dict(values))
        entities = [entity_dict(k, rows, self.names) for k, rows in by_key.items()]
        entities.sort(key=lambda e: (-STATUS_CODES[e["status"]], e["since"] or 0,
                                     e["entity"] or ""))
        return entities
