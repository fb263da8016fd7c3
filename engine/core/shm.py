"""Shared-memory segments under ``/dev/shm``.

Only the process that creates a segment registers it with CPython's
resource tracker and unlinks it; every other process attaches with a plain
``mmap`` of the same file.  On Python 3.11, ``SharedMemory(name)`` in an
attaching process registers the segment too and the tracker then unlinks it
when that process exits, pulling it from under the creator: attaching by
hand avoids that.  The creator's registration stays useful: if the creator
is killed, the tracker still unlinks what it left.

A process forked from the creator inherits the segment objects but is not
their creator: :meth:`Segment.unlink` refuses there, since unlinking would
pull the segments from under the parent and drop the parent's registration
with the resource tracker, which the child shares.
"""

from __future__ import annotations

import mmap
import os
import secrets
from multiprocessing import shared_memory

from ..errors import ForkedProcess

__all__ = ["Segment", "PREFIX", "list_segments"]

#: Every segment ringflow creates has a name starting with this.
PREFIX = "ringflow"
_SHM_DIR = "/dev/shm"


def list_segments() -> list[str]:
    """Names of the ringflow segments present in ``/dev/shm`` now."""
    try:
        # sm_ringflow-<pid>-info: an engine's record (engine/core/discovery.py),
        # named by shared-memory-dict, which puts sm_ before the name.
        return sorted(n for n in os.listdir(_SHM_DIR)
                      if n.startswith(PREFIX) or n.startswith("sm_" + PREFIX))
    except FileNotFoundError:
        return []


class Segment:
    """A named shared-memory segment, created here or attached.

    Use :meth:`create` or :meth:`attach`; ``buf`` is a writable memoryview
    over the whole segment.
    """

    def __init__(self, name: str, size: int, buf: memoryview, owner: bool, handle) -> None:
        self.name = name
        self.size = size
        self.buf = buf
        self.owner = owner
        self._handle = handle
        # Creation is bound to a process, not to an object a fork copies.
        self._pid = os.getpid()
        self._closed = False
        self._unlinked = False

    @classmethod
    def create(cls, size: int, tag: str) -> Segment:
        """Create a zero-filled segment of ``size`` bytes, unique to this call."""
        name = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(4)}-{tag}"
        shm = shared_memory.SharedMemory(name=name, create=True, size=max(size, 1))
        return cls(shm.name, size, shm.buf, True, shm)

    @classmethod
    def attach(cls, name: str) -> Segment:
        """Map an existing segment without registering it anywhere."""
        fd = os.open(os.path.join(_SHM_DIR, name), os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        return cls(name, size, memoryview(mm), False, mm)

    def close(self) -> None:
        """Unmap; every object holding a view of ``buf`` must be released first."""
        if self._closed:
            return
        self.buf.release()
        self._handle.close()
        self._closed = True

    def unlink(self) -> None:
        """Remove the name (creator only); the memory goes with the last mapping.

        Raises
        ------
        PermissionError
            The segment was attached, not created, here.
        engine.errors.ForkedProcess
            This process was forked from the creator.
        """
        if not self.owner:
            raise PermissionError(f"only the creator unlinks segment {self.name}")
        if os.getpid() != self._pid:
            raise ForkedProcess(f"segment {self.name}", self._pid, os.getpid())
        if self._unlinked:
            return
        self._unlinked = True
        try:
            self._handle.unlink()
        except FileNotFoundError:
            pass

    def __repr__(self) -> str:
        return f"Segment({self.name!r}, size={self.size}, owner={self.owner})"
