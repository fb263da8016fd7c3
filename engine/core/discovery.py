"""Each running engine's record of itself, for ``ringflow ls`` and
:func:`engine.attach` (issue 17, item 6).

The record is a small JSON dict in a :class:`shared_memory_dict.SharedMemoryDict`
named ``ringflow-<pid>-info`` (the package adds ``sm_``: the segment is
``/dev/shm/sm_ringflow-<pid>-info``).  The engine is its only writer and
writes it rarely (start, a gateway attached, close), never per event.

Readers do not use ``SharedMemoryDict``: on Python 3.11 opening it in
another process goes through ``SharedMemory(name)``, which registers the
segment with that process's resource tracker, and the tracker unlinks it
when the reader exits (pulling it from under the engine).  They map the
file read-only by hand and parse it with the package's JSON serializer; a
read that meets a write in progress fails to parse and is retried.
"""

from __future__ import annotations

import json
import mmap
import os
import threading
import time

from .shm import _SHM_DIR, PREFIX

__all__ = ["INFO_PREFIX", "EngineInfo", "info_name", "read_info", "running_engines"]

#: What SharedMemoryDict puts before the names it is given.
_SMD_PREFIX = "sm_"
#: Every info segment's file name starts with this.
INFO_PREFIX = f"{_SMD_PREFIX}{PREFIX}-"
_INFO_BYTES = 8192
#: Bumped when the record's fields or the tables' layout change meaning.
RECORD_VERSION = 1


def info_name(pid: int) -> str:
    """The SharedMemoryDict name of engine ``pid``'s record."""
    return f"{PREFIX}-{pid}-info"


def _path(pid: int) -> str:
    return os.path.join(_SHM_DIR, _SMD_PREFIX + info_name(pid))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EngineInfo:
    """The writer side, held by the engine that publishes itself.

    Parameters
    ----------
    record : dict
        The first record (JSON-serialisable).
    """

    def __init__(self, record: dict) -> None:
        from shared_memory_dict import SharedMemoryDict
        from shared_memory_dict.serializers import JSONSerializer

        self._pid = os.getpid()
        # The engine's threads (start, serve, the supervisor's state
        # changes) write rarely; one at a time, so no update is lost.
        self._lock = threading.Lock()
        # Sized from the first record (it grows later by the endpoints only):
        # 256 workers name 256 table segments.
        size = max(_INFO_BYTES, 2 * len(json.dumps(record)) + 4096)
        self._dict = SharedMemoryDict(info_name(self._pid), size,
                                      serializer=JSONSerializer())
        self.name = self._dict.shm.name
        try:
            self.update(record)
        except BaseException:
            shm = self._dict.shm
            self._dict = None
            shm.close()
            shm.unlink()
            raise

    def update(self, fields: dict) -> None:
        """Merge ``fields`` into the record (one write of the whole dict)."""
        with self._lock:
            if os.getpid() != self._pid or self._dict is None:
                return
            self._dict.update({**fields, "updated": time.time()})

    @property
    def shm(self):
        """The underlying ``SharedMemory`` (the engine's cleanup unlinks it)."""
        return self._dict.shm

    def drop(self) -> None:
        """Forget the dict; the segment is closed and unlinked by the engine."""
        with self._lock:
            self._dict = None


def read_info(pid: int, retries: int = 20) -> dict | None:
    """Engine ``pid``'s record, or None when it has none (or it died).

    Maps the segment read-only: nothing is registered, locked or written.
    """
    from shared_memory_dict.serializers import DeserializationError, JSONSerializer

    ser = JSONSerializer()
    for _ in range(retries):
        try:
            fd = os.open(_path(pid), os.O_RDONLY)
        except OSError:
            # Gone, or another user's engine (its record is 0600).
            return None
        try:
            size = os.fstat(fd).st_size
            if not size:
                return None
            with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ) as mm:
                data = mm[:]
        finally:
            os.close(fd)
        try:
            rec = ser.loads(data)
        except (DeserializationError, UnicodeDecodeError):
            time.sleep(0.001)  # a write in progress: it is one memcpy
            continue
        if rec.get("pid") != pid:
            time.sleep(0.001)
            continue
        return rec
    return None


def running_engines() -> list[dict]:
    """Records of the engines running on this host, by pid; records left by
    dead engines (SIGKILL before their tracker ran) are skipped."""
    out = []
    try:
        names = os.listdir(_SHM_DIR)
    except FileNotFoundError:
        return out
    for n in sorted(names):
        if not (n.startswith(INFO_PREFIX) and n.endswith("-info")):
            continue
        try:
            pid = int(n[len(INFO_PREFIX):-len("-info")])
        except ValueError:
            continue
        if not pid_alive(pid):
            continue
        rec = read_info(pid)
        if rec is not None and rec.get("state") != "closed":
            out.append(rec)
    return out
