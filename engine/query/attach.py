"""A read-only view of an engine running in another local process
(issue 17, item 6).

:func:`attach` finds the engine's record (engine/core/discovery.py), maps
its table segments and reads them with the same seqlock reads as the
engine itself (:class:`engine.query.reader.Reader`).  Nothing here takes a
lock or writes to the engine's memory, so an attached reader cannot slow or
stop ingest; rows may come from slightly different instants, as for any
reader.  The mapping is read-write only because the compiled table reader
takes a writable buffer; no code path here stores into it.
"""

from __future__ import annotations

import os

import numpy as np

from ..core.discovery import RECORD_VERSION, _path, pid_alive, read_info, running_engines
from ..core.records import STATE_DTYPE
from ..core.shm import Segment
from ..errors import AttachError

__all__ = ["AttachedEngine", "attach"]


def _find(pid_or_name) -> int:
    if isinstance(pid_or_name, int):
        return pid_or_name
    text = str(pid_or_name)
    if text.isdigit():
        return int(text)
    pids = [rec["pid"] for rec in running_engines() if rec.get("name") == text]
    if len(pids) > 1:
        raise AttachError(f"{len(pids)} engines are named {text!r} (pids "
                          f"{', '.join(map(str, pids))}): attach by pid")
    if pids:
        return pids[0]
    raise AttachError(f"no running engine named {text!r} on this host "
                      "(`ringflow ls` lists them)")


def attach(pid_or_name) -> AttachedEngine:
    """Read a running engine's state tables from this process.

    Parameters
    ----------
    pid_or_name : int or str
        The engine's process id (as ``ringflow ls`` shows it), or the name
        its record carries.

    Returns
    -------
    AttachedEngine
        A read-only view; close it (or use it in ``with``) when done.

    Raises
    ------
    engine.errors.AttachError
        No such engine runs here, it has closed or died, or its record or
        table layout differs from this version's.

    Examples
    --------
    >>> import engine
    >>> with engine.attach(12345) as view:                    # doctest: +SKIP
    ...     view.get("web-01", "cpu")["last"]
    """
    pid = _find(pid_or_name)
    if not pid_alive(pid):
        raise AttachError(f"no process {pid}: the engine has exited")
    rec = read_info(pid)
    if rec is None:
        raise AttachError(f"process {pid} publishes no ringflow engine record")
    return AttachedEngine(rec)


class AttachedEngine:
    """A read-only view of another process's engine; see :func:`attach`.

    Parameters
    ----------
    record : dict
        The engine's published record.
    """

    def __init__(self, record: dict) -> None:
        from .reader import Reader

        if record.get("state") == "closed":
            raise AttachError(f"engine {record.get('pid')} has closed")
        if (record.get("record") != RECORD_VERSION
                or record.get("state_itemsize") != STATE_DTYPE.itemsize):
            raise AttachError(
                f"engine {record.get('pid')} runs ringflow {record.get('version')} with "
                f"record {record.get('record')}, rows of {record.get('state_itemsize')} "
                f"bytes; this process reads record {RECORD_VERSION}, rows of "
                f"{STATE_DTYPE.itemsize} bytes")
        self.pid = int(record["pid"])
        self.record = record
        self._info_path = _path(self.pid)
        self._closed = False
        self._segments: list[Segment] = []
        try:
            for name in record["tables"]:
                seg = Segment.attach(name)
                if seg.size != record["table_bytes"]:
                    raise AttachError(f"table segment {name} is {seg.size} bytes, "
                                      f"the record says {record['table_bytes']}")
                self._segments.append(seg)
        except FileNotFoundError as exc:
            self._release()
            raise AttachError(f"engine {self.pid} is gone (its tables are): {exc}") from None
        except BaseException:
            self._release()
            raise
        self._reader = Reader([seg.buf for seg in self._segments],
                              {"entities": {}, "metrics": {}},
                              window_ns=record["window_ns"], views=record["views"],
                              check=self._check)

    def _check(self) -> None:
        # One stat per read: the engine unlinks its record first thing in
        # close() (and its resource tracker does after a SIGKILL).  Our
        # mappings stay valid either way: reads after it would be of
        # memory no one updates, so they are refused, not crashed.
        if self._closed:
            raise AttachError("this attached view is closed")
        if not os.path.exists(self._info_path):
            raise AttachError(f"engine {self.pid} has closed or died")

    def get(self, key, metric) -> np.void | None:
        """One series' state row (``STATE_DTYPE``), or None if unknown.

        Parameters
        ----------
        key : int or str
            Entity id or name.
        metric : int or str
            Metric id or name.
        """
        return self._reader.get(key, metric)

    def get_many(self, keys, metrics) -> np.ndarray:
        """Rows of many series (``STATE_DTYPE``; unknown ones have key 0).

        Parameters
        ----------
        keys, metrics : array_like
            Entity and metric ids or names, broadcast together.
        """
        return self._reader.get_many(keys, metrics)

    def snapshot(self) -> np.ndarray:
        """Every series' row, read row by row under its seqlock."""
        return self._reader.snapshot()

    def status(self, min_status: str = "WARN", limit: int | None = None) -> list[dict]:
        """Entities with a series at ``min_status`` or worse, worst first
        (as :meth:`engine.Engine.status`; names show as ids, since names
        live in the engine's process).

        Parameters
        ----------
        min_status : str
        limit : int, optional
        """
        return self._reader.status(min_status, limit)

    @property
    def alive(self) -> bool:
        """Whether the engine still runs and has not closed."""
        return not self._closed and os.path.exists(self._info_path) and pid_alive(self.pid)

    def _release(self) -> None:
        for seg in self._segments:
            try:
                seg.close()
            except BufferError:
                pass
        self._segments = []

    def close(self) -> None:
        """Unmap the tables (never unlinks: they are the engine's)."""
        if self._closed:
            return
        self._closed = True
        if getattr(self, "_reader", None) is not None:
            self._reader.close()
        self._release()

    def __enter__(self) -> AttachedEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AttachedEngine(pid={self.pid}, {'closed' if self._closed else 'open'})"
