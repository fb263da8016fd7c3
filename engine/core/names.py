"""The names an engine knows (entity and metric id -> name), bounded and,
with a data dir, journaled (issue 15, docs/journal.md).

Every path that learns a name (JSON ingest, queries by name,
``register_names``, the ``names`` op) goes through ``setdefault`` of one of
the two tables, so this is the one place that bounds them and writes them
down.  A name is learnt once: a known id costs one dict lookup and nothing
else.  A new one is refused and counted when it is longer than
``max_name_bytes`` or when ``max_names`` are known, so no sender can grow
the engine's memory without bound; the event itself is still taken, by id.
The ``dropped_*`` counters count refusals (a name sent twice counts twice).

With a data dir each new name is appended to ``names.log`` (one JSON line,
written to the OS before ``setdefault`` returns, so a crash of the process
loses none) and snapshots carry the whole registry; a snapshot compacts the
log to the names learnt since its copy.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

__all__ = ["NameRegistry", "NameTable"]

LOG_NAME = "names.log"
_KIND_CODES = {"entities": "e", "metrics": "m"}
_CODE_KINDS = {v: k for k, v in _KIND_CODES.items()}


class NameTable(dict):
    """One kind's ``id -> name`` dict; learning goes through
    :meth:`setdefault` (and ``[]=``), which bound and journal it."""

    __slots__ = ("_registry", "_kind")

    def __init__(self, registry: NameRegistry, kind: str) -> None:
        super().__init__()
        self._registry = registry
        self._kind = kind

    def setdefault(self, ident, name):
        known = self.get(ident)
        if known is not None:
            return known
        self._registry._learn(self, ident, name)
        return name

    def __setitem__(self, ident, name) -> None:
        if ident not in self:
            self._registry._learn(self, ident, name)

    def update(self, *args, **kwargs) -> None:
        for ident, name in dict(*args, **kwargs).items():
            self.setdefault(ident, name)

    def _put(self, ident, name) -> None:
        dict.__setitem__(self, ident, name)


class NameRegistry(dict):
    """``{"entities": NameTable, "metrics": NameTable}``, as readers expect
    ``engine.names``, with the bounds and the journal.

    Parameters
    ----------
    max_names : int
        Names kept in all (entities and metrics); past it new ones are
        refused and counted in ``dropped_full``.
    max_name_bytes : int
        Longest name kept (UTF-8 bytes); longer ones are counted in
        ``dropped_long``.
    """

    def __init__(self, max_names: int, max_name_bytes: int) -> None:
        super().__init__(entities=NameTable(self, "entities"),
                         metrics=NameTable(self, "metrics"))
        self.max_names = max_names
        self.max_name_bytes = max_name_bytes
        self.dropped_full = 0
        self.dropped_long = 0
        self.log_errors = 0
        self._log_fd = -1
        self._log_path: Path | None = None
        # Taken only to add a name (rare: each is learnt once) and around a
        # snapshot's copy; never per event.
        self._lock = threading.Lock()

    @property
    def known(self) -> int:
        return len(self["entities"]) + len(self["metrics"])

    def _learn(self, table: NameTable, ident, name) -> None:
        if not isinstance(name, str):
            raise TypeError(f"names must be strings, got {name!r}")
        if len(name) > self.max_name_bytes or len(name.encode()) > self.max_name_bytes:
            self.dropped_long += 1
            return
        if self.known >= self.max_names:
            # Checked before the lock too: once full, every unknown name of
            # a JSON stream lands here, and must not serialise on it.
            self.dropped_full += 1
            return
        with self._lock:
            if ident in table:
                return
            if self.known >= self.max_names:
                self.dropped_full += 1
                return
            table._put(ident, name)
            if self._log_fd >= 0:
                line = json.dumps({"k": _KIND_CODES[table._kind], "i": ident, "n": name})
                try:
                    os.write(self._log_fd, (line + "\n").encode())
                except OSError:
                    # Kept in memory, and in the next snapshot; the event
                    # that named it is not refused for a full disk here.
                    self.log_errors += 1

    def add_silently(self, kind: str, names: dict) -> None:
        """Take names known already (a snapshot's, the rules' metrics)
        without writing them to the log; bounded like any other."""
        table = self[kind]
        for ident, name in names.items():
            if ident not in table and self.known < self.max_names:
                table._put(ident, name)

    def stats(self) -> dict:
        return {"known": self.known, "entities": len(self["entities"]),
                "metrics": len(self["metrics"]), "max_names": self.max_names,
                "dropped_full": self.dropped_full, "dropped_long": self.dropped_long,
                "log_errors": self.log_errors}

    # --- the journal ----------------------------------------------------------

    def open_log(self, root) -> int:
        """Replay ``root/names.log`` into the registry and append to it from
        now on.  Returns the names it held.  The log is cut at the first
        line that does not read whole (a crash inside a write leaves one,
        at the end)."""
        path = Path(root) / LOG_NAME
        loaded, good = 0, 0
        if path.exists():
            data = path.read_bytes()
            for raw in data.splitlines(keepends=True):
                try:
                    if not raw.endswith(b"\n"):
                        raise ValueError("cut short")
                    rec = json.loads(raw)
                    self.add_silently(_CODE_KINDS[rec["k"]], {int(rec["i"]): str(rec["n"])})
                except (ValueError, KeyError, TypeError):
                    break
                good += len(raw)
                loaded += 1
            if good != len(data):
                os.truncate(path, good)
        self._log_path = path
        self._log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                               0o644)
        return loaded

    def copy_for_snapshot(self) -> tuple[dict, int]:
        """The names as plain dicts, and the log's size when they were
        copied: :meth:`compact_log` keeps what was appended after it."""
        with self._lock:
            names = {kind: dict(table) for kind, table in self.items()}
            size = os.fstat(self._log_fd).st_size if self._log_fd >= 0 else 0
        return names, size

    def compact_log(self, covered: int) -> None:
        """Once a snapshot holding the names copied at log size ``covered``
        is durable: rewrite the log with only what came after."""
        if self._log_fd < 0:
            return
        with self._lock:
            with open(self._log_path, "rb") as f:
                f.seek(covered)
                rest = f.read()
            tmp = self._log_path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                f.write(rest)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._log_path)
            dirfd = os.open(self._log_path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
            os.close(self._log_fd)
            self._log_fd = os.open(self._log_path,
                                   os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def close_log(self) -> None:
        if self._log_fd >= 0:
            os.close(self._log_fd)
            self._log_fd = -1
