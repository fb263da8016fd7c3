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
from .._query import TableSet, distinct_count, row_quantiles
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
_QS = np.array([q for _, q in QUANTILES])

# An entity's rank in ``status`` packed in one uint64 so that one sort does:
# severity (worst first) in the top bits, then since (earliest first).
_WORST = len(STATUS_NAMES) - 1
_SINCE_BITS = 62
_SINCE_MASK = np.uint64((1 << _SINCE_BITS) - 1)
# since of a series with none (an OK series never changed): last in the
# min over an entity's series, read as 0 (first) when the entity sorts.
_NO_SINCE = (1 << _SINCE_BITS) - 1
# Candidates up to this many are ordered by name in Python; more (a sweep
# that made thousands of entities STALE at one instant) by the rank of
# their names, cached until the names change.
_PY_NAME_SORT = 256


class _Scratch:
    """One thread's arrays for the fleet-wide scans, reused between
    queries (grown when a scan needs more room, never shrunk): a query
    allocates no array the size of the fleet."""

    def __init__(self) -> None:
        self.counts = np.zeros(256, np.int64)
        self.grow_status(0)
        self.grow_field(0)

    def grow_status(self, n: int) -> None:
        self.keys = np.empty(n, np.uint64)
        self.statuses = np.empty(n, np.uint8)
        self.since = np.empty(n, np.int64)
        self.where = np.empty(n, np.uint64)

    def grow_field(self, n: int) -> None:
        self.values = np.empty(n, np.float64)
        self.fwhere = np.empty(n, np.uint64)


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """``np.isin(values, sorted_set)`` for a sorted set, by binary search:
    np.isin sorts both arrays again (5 ms over 100,000 keys)."""
    if not len(sorted_set):
        return np.zeros(len(values), bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


def _smallest(keys: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest ``keys``, in order, ties by index
    (what a stable argsort's first ``k`` are), without sorting them all."""
    n = len(keys)
    if k < n:
        cut = keys[np.argpartition(keys, k - 1)[:k]].max()
        cand = np.flatnonzero(keys <= cut)
    else:
        cand = np.arange(n)
    return cand[np.argsort(keys[cand], kind="stable")][:k]


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
        self._unavailable_elsewhere = 0

    def close(self) -> None:
        """Let go of the tables' memory (their segments may then close)."""
        for t in self.tables:
            t.release_buffer()
        self._tableset = None

    @property
    def unavailable(self) -> int:
        """Rows that fleet-wide scans of this reader left out because they
        stayed mid-write (a row is counted once per scan that met it),
        with those other readers of the same tables reported
        (:meth:`add_unavailable`)."""
        return sum(t.unavailable for t in self.tables) + self._unavailable_elsewhere

    def add_unavailable(self, n: int) -> None:
        """Count ``n`` rows left out by another reader of these tables (the
        gateway's query process) in :attr:`unavailable`."""
        self._unavailable_elsewhere += n

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
        if not rows.flags.c_contiguous or not rows.flags.writeable:
            rows = rows.copy()
        # The sketches decoded in C, all rows at once; one tolist() for the
        # whole array instead of a NumPy scalar per field.
        qs = row_quantiles(rows, _QS).tolist()
        names, window_ns, views = self.names, self.window_ns, self.views
        return [series_dict(values, names, window_ns=window_ns, views=views, quantiles=q)
                for values, q in zip(rows.tolist(), qs)]

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

    def status(self, min_status: str = "WARN", limit: int | None = None) -> list[dict]:
        """Entities at ``min_status`` or worse, worst first; see :meth:`engine.Engine.status`.

        Rows that stay mid-write are left out and counted in
        :attr:`unavailable`.
        """
        return self.status_page(min_status, limit)["entities"]

    def status_page(self, min_status: str = "WARN", limit: int | None = None) -> dict:
        """The first ``limit`` entities at ``min_status`` or worse, how many
        there are, and the count of series per status.

        One scan of every table, in C, reads each row's status (for the
        counts) and the key, status and since of the rows selected; the
        entities are ranked and cut in NumPy, and only the rows of the
        entities returned are read in full and made dicts.

        Parameters
        ----------
        min_status : {"WARN", "OK", "STALE", "CRIT"}
        limit : int, optional
            Entities to return (0: only ``total`` and ``counts``); default
            all.

        Returns
        -------
        dict
            ``total`` (entities at ``min_status`` or worse), ``entities``
            (the first ``limit`` of them, worst first: severity, then the
            earliest since, then the name, then the order of the tables),
            ``counts`` (every series by status name, all series).

        Rows that stay mid-write are left out and counted in
        :attr:`unavailable`.
        """
        self.check()
        if min_status not in STATUS_CODES:
            raise ValueError(f"min_status must be one of {', '.join(STATUS_NAMES)}")
        level = STATUS_CODES[min_status]
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 0):
            raise ValueError("limit must be a non-negative integer or None")
        sc = self._scratch()
        while True:
            n = self._tableset.scan_status(level, sc.keys, sc.statuses, sc.since, sc.where,
                                           sc.counts)
            if n >= 0:
                break
            sc.grow_status(-n + 1024)
        counts = {name: int(c) for name, c in zip(STATUS_NAMES, sc.counts.tolist())}
        if n == 0:
            return {"total": 0, "entities": [], "counts": counts}
        keys, statuses, since = sc.keys[:n], sc.statuses[:n], sc.since[:n]
        # A series' rank: severity (worst first) packed above its since (a
        # series without one, an OK series never changed, last); an
        # entity's rank is its series' least, read with "no since" as 0.
        sev = (_WORST - np.minimum(statuses, _WORST)).astype(np.uint64)
        has_since = (statuses > 0) | (since != 0)
        t, zero = since, 0
        if since.min() < 0 or since.max() >= _NO_SINCE:
            # Outside what the packed rank holds (clocks before 1970 or
            # after 2116): since by its rank among the values, order kept
            # (0 among them: an entity without a since sorts as 0).
            values = np.unique(np.concatenate((since, [0])))
            t, zero = np.searchsorted(values, since), int(np.searchsorted(values, 0))
        packed = (sev << np.uint64(_SINCE_BITS)) | np.where(
            has_since, t, _NO_SINCE).astype(np.uint64)
        total = distinct_count(keys)
        limit = total if limit is None else min(limit, total)
        if limit == 0:
            return {"total": total, "entities": [], "counts": counts}
        sub = None
        if limit < total and has_since.all():
            # Only the series ranked up to the limit-th entity's rank can
            # belong to the entities returned: the least ranks, doubled
            # until they hold `limit` entities (every series at WARN or
            # worse has a since, so an entity's rank is its least series').
            m = limit
            while True:
                cut = np.partition(packed, m - 1)[m - 1]
                sub = np.flatnonzero(packed <= cut)
                if m >= n or distinct_count(keys[sub]) >= limit:
                    break
                m = min(n, 2 * m)
        part_keys = keys if sub is None else keys[sub]
        part_packed = packed if sub is None else packed[sub]
        order = np.argsort(part_keys)
        sorted_keys = part_keys[order]
        starts = np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))
        ent_keys = sorted_keys[starts]
        ent_rank = np.minimum.reduceat(part_packed[order], starts)
        none = (ent_rank & _SINCE_MASK) == np.uint64(_NO_SINCE)
        ent_rank[none] = (ent_rank[none] & ~_SINCE_MASK) | np.uint64(zero)
        # Each entity's first series in scan order, over all its series:
        # the last tie-break (the order the entities were met in, as before).
        if sub is None:
            first = np.minimum.reduceat(order, starts)
        else:
            pos = np.flatnonzero(_member(keys, ent_keys))
            first = pos[np.unique(keys[pos], return_index=True)[1]]
        cand = _smallest(ent_rank, limit)
        # _smallest broke ties by index; they break by name, so take every
        # entity tied with the last one kept and order them by name.
        cand = np.flatnonzero(ent_rank <= ent_rank[cand[-1]])
        cand = cand[np.argsort(ent_rank[cand], kind="stable")]
        cand = self._by_name(cand, ent_rank, ent_keys, first)[:limit]
        chosen = ent_keys[cand]
        # Only the rows of the entities returned are read in full.
        where = sc.where[:n][_member(keys, np.sort(chosen))]
        rows = np.empty(len(where), STATE_DTYPE)
        ok = self._tableset.read_rows(where, rows)
        rows = rows[ok]
        # A series may have got better since the scan.
        rows = rows[rows["status"] >= level]
        by_key: dict[int, list] = {}
        for d in self.series_dicts(rows):
            by_key.setdefault(d["entity_id"], []).append(d)
        entities = [entity_dict(k, by_key[k], self.names)
                    for k in chosen.tolist() if k in by_key]
        return {"total": total, "entities": entities, "counts": counts}

    def _by_name(self, cand: np.ndarray, ent_rank: np.ndarray, ent_keys: np.ndarray,
                 first: np.ndarray) -> np.ndarray:
        """``cand`` (ordered by rank) ordered by (rank, name, first)."""
        names = self.names["entities"]
        if len(cand) <= _PY_NAME_SORT:
            keyed = zip(ent_rank[cand].tolist(), ent_keys[cand].tolist(), first[cand].tolist(),
                        cand.tolist())
            return np.array([c for _, _, _, c in sorted(
                keyed, key=lambda e: (e[0], names.get(e[1]) or "", e[2]))], np.int64)
        name_rank = self._name_ranks(ent_keys[cand])
        return cand[np.lexsort((first[cand], name_rank, ent_rank[cand]))]

    def _name_ranks(self, keys: np.ndarray) -> np.ndarray:
        """Each entity's place in the order of the names (-1: no name, as
        ``""`` sorts first), from a table rebuilt when the names change."""
        names = self.names["entities"]
        cache = getattr(self, "_name_cache", None)
        if cache is None or cache[0] is not names or cache[1] != len(names):
            items = list(names.items())
            ids = np.fromiter((k for k, _ in items), np.uint64, len(items))
            by_name = sorted(range(len(items)), key=lambda i: items[i][1])
            rank = np.empty(len(items), np.int64)
            rank[by_name] = np.arange(len(items))
            order = np.argsort(ids)
            cache = self._name_cache = (names, len(items), ids[order], rank[order])
        _, _, ids, rank = cache
        if not len(ids):
            return np.full(len(keys), -1, np.int64)
        at = np.minimum(np.searchsorted(ids, keys), len(ids) - 1)
        return np.where(ids[at] == keys, rank[at], -1)

    def top(self, field: str, k: int, order: str = "desc") -> list[dict]:
        """The ``k`` series with the highest (``order="desc"``) or lowest
        ``field``, NaN last either way, ties in table order.

        One scan, in C, reads the field of every row; the ``k`` are chosen
        in NumPy and only they are read in full.  Rows that stay mid-write
        are left out and counted in :attr:`unavailable`.
        """
        self.check()
        dtype, offset = STATE_DTYPE.fields[field][:2]
        if dtype.kind not in "fiu" or dtype.shape:
            raise ValueError(f"{field} is not a numeric field")
        sc = self._scratch()
        while True:
            n = self._tableset.scan_field(offset, dtype.str[1:], sc.values, sc.fwhere)
            if n >= 0:
                break
            sc.grow_field(-n + 1024)
        values = sc.values[:n]
        if order == "desc":
            ranked = np.where(np.isnan(values), np.inf, -values)
        else:
            ranked = np.where(np.isnan(values), np.inf, values)
        chosen = _smallest(ranked, k)
        rows = np.empty(len(chosen), STATE_DTYPE)
        ok = self._tableset.read_rows(sc.fwhere[:n][chosen], rows)
        return self.series_dicts(rows[ok])

    def _scratch(self) -> _Scratch:
        sc = getattr(self._local, "scratch", None)
        if sc is None:
            sc = self._local.scratch = _Scratch()
        return sc
