"""Exceptions raised by ringflow.

Every error the engine raises derives from :class:`EngineError`, and the
status codes that compiled kernels return are turned into exceptions in one
place, :func:`raise_for_status`.
"""

from __future__ import annotations

# The status codes every compiled kernel returns, defined here beside the
# one place that maps them to exceptions; engine.core.layout hands them to
# the generated Cython declarations (RF_*), so the kernels are built from
# these very numbers and Python never imports a compiled module to name one.
#: Success.
STATUS_OK = 0
#: A wait slice ran out; the caller decides what next.
STATUS_TIMEOUT = 1
#: A worker saw its stop flag with its rings drained.
STATUS_STOPPED = 2
#: A single-threaded endpoint was entered twice.
STATUS_BUSY = 3
#: A row stayed mid-write (odd seqlock version) past the readers' bound: its
#: writer died or stalled inside the write, so no consistent copy exists.
STATUS_UNAVAILABLE = 4
#: A table has no room for what it was asked to take.
STATUS_FULL = 5
#: Data handed to a kernel contradicts itself (a snapshot naming one series
#: twice, a row left mid-write).
STATUS_CORRUPT = 6

__all__ = [
    "EngineError",
    "ConfigError",
    "AttachError",
    "EngineClosed",
    "ForkedProcess",
    "Backpressure",
    "ConcurrentUse",
    "FlushTimeout",
    "WorkerDied",
    "SeriesUnavailable",
    "InvalidEvents",
    "raise_for_status",
    "GatewayTimeout",
    "Rejected",
    "QueryError",
    "ProtocolError",
    "SettingsError",
    "ServeError",
    "GatewayDown",
    "TableFull",
    "CorruptState",
    "SecurityError",
    "Forbidden",
]


class EngineError(Exception):
    """Root of every error ringflow raises."""


class ConfigError(EngineError, ValueError):
    """An engine setting is out of range or inconsistent."""


class EngineClosed(EngineError):
    """The engine was used after :meth:`engine.Engine.close`."""


class AttachError(EngineError):
    """:func:`engine.attach` found no such engine, the engine it read has
    closed or died, or its record or table layout is not this version's."""


class ForkedProcess(EngineError):
    """An engine (or one of its handles) was used in a process forked from
    the one that created it.

    The child shares the parent's segments, workers and producer slots, so
    it may not drive them: every call raises this, and nothing the child
    does (``close()``, garbage collection, its exit) touches the parent's
    engine.  Create a new engine in the child instead.

    Attributes
    ----------
    owner_pid : int
        The process that created the engine.
    pid : int
        The process that tried to use it.
    """

    def __init__(self, what: str, owner_pid: int, pid: int) -> None:
        super().__init__(
            f"this {what} was created in process {owner_pid} and cannot be used in the "
            f"forked process {pid}; create a new Engine in the child"
        )
        self.owner_pid = owner_pid
        self.pid = pid


class InvalidEvents(EngineError, TypeError):
    """A batch is not a contiguous array of :data:`engine.EVENT_DTYPE`."""


class Backpressure(EngineError):
    """The rings stayed full for longer than the caller's timeout.

    Attributes
    ----------
    accepted : int
        Events of the batch that were accepted before the timeout; they will
        be applied.  Resubmit ``events[handled:]`` to send the rest.
    handled : int
        Index of the first event of the batch that was not taken.
    """

    def __init__(self, message: str, accepted: int = 0, handled: int = 0):
        super().__init__(message)
        self.accepted = accepted
        self.handled = handled


class ConcurrentUse(EngineError):
    """One producer was used from two threads at once; each thread needs its
    own (:meth:`engine.Engine.producer`)."""


class FlushTimeout(EngineError, TimeoutError):
    """:meth:`engine.Engine.flush` gave up before every event was applied."""


class WorkerDied(EngineError):
    """A worker is gone and the engine cannot replace it: it died while the
    engine started, or kept dying until the supervisor gave up on its shard
    (``degraded``, docs/faults.md).  A worker that dies once is replaced
    without an error.

    Attributes
    ----------
    worker : int
        Index of the worker.
    exitcode : int or None
        Its exit code (negative: killed by that signal number).
    cause : str or None
        The supervisor's account of why the shard was given up on.
    accepted, handled : int
        For :meth:`engine.Producer.submit`: events of the batch taken before
        the error (0 when it refused the batch up front).
    """

    def __init__(self, worker: int, exitcode: int | None, pid: int | None = None,
                 *, cause: str | None = None, accepted: int = 0, handled: int = 0):
        if cause is not None:
            message = f"shard {worker} is degraded: {cause}"
        else:
            how = (f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0
                   else f"exit code {exitcode}")
            message = f"worker {worker} (pid {pid}) died: {how}"
        super().__init__(message)
        self.worker = worker
        self.exitcode = exitcode
        self.pid = pid
        self.cause = cause
        self.accepted = accepted
        self.handled = handled


class SeriesUnavailable(EngineError):
    """A series' row stayed mid-write past the readers' bound (about a
    millisecond; up to 100 ms while its worker is still running or
    runnable), so no consistent copy of it could be read.

    Its writer, the worker that owns the series, died or stalled between the
    two halves of the row's seqlock write.  A reader gives up rather than
    spin, and never invents a copy; the row reads again once a worker
    finishes or repairs it.

    Attributes
    ----------
    key : int or None
        The series' entity id.
    metric : int or None
        The series' metric id.
    worker : int or None
        The worker (shard) that owns it, when the reader knows.
    """

    def __init__(self, message: str, key: int | None = None, metric: int | None = None,
                 worker: int | None = None):
        super().__init__(message)
        self.key = key
        self.metric = metric
        self.worker = worker


def unavailable_message(key: int, metric: int, worker: int | None = None,
                        entity: str | None = None, metric_name: str | None = None) -> str:
    """The message of :class:`SeriesUnavailable` (and of the gateway's
    ``unavailable`` query replies): the series by name where known, else by
    id, and its worker."""
    who = f"series {entity or key}/{metric_name or metric}"
    if worker is not None:
        who += f" of worker {worker}"
    return f"{who} is unavailable: its row stayed mid-write (the worker died or stalled)"


def raise_for_status(status: int, what: str, *, key: int | None = None,
                     metric: int | None = None, worker: int | None = None) -> None:
    """Map a kernel status code to an exception; return for ``STATUS_OK``.

    ``STATUS_TIMEOUT`` is not an error by itself: callers that wait in slices
    handle it before calling this.  ``key``, ``metric`` and ``worker`` name
    the series of a read that ended ``STATUS_UNAVAILABLE``.
    """
    if status == STATUS_OK:
        return
    if status == STATUS_UNAVAILABLE:
        raise SeriesUnavailable(f"{what}: {unavailable_message(key, metric, worker)}",
                                key=key, metric=metric, worker=worker)
    if status == STATUS_TIMEOUT:
        raise Backpressure(f"{what}: timed out waiting for the workers")
    if status == STATUS_BUSY:
        raise ConcurrentUse(
            f"{what}: this producer is in use by another thread; "
            "give each thread its own producer (Engine.producer())"
        )
    if status == STATUS_FULL:
        raise TableFull(f"{what}: the table is full")
    if status == STATUS_CORRUPT:
        raise CorruptState(f"{what}: the data contradicts itself")
    raise EngineError(f"{what}: kernel status {status}")


class TableFull(EngineError):
    """A state table cannot take what it was given (a snapshot of more
    series than ``table_capacity``)."""


class CorruptState(EngineError):
    """Saved state that contradicts itself (a snapshot naming a series
    twice, or holding a row caught mid-write)."""


class GatewayTimeout(EngineError, TimeoutError):
    """A ZeroMQ gateway did not take a message or did not reply in time.

    Raised by :class:`engine.net.client.Client` and
    :class:`engine.net.aio.AsyncClient`.  When a reply was awaited, the
    request socket has been closed and will be replaced, so a late reply is
    never taken for the next request's.
    """


class Rejected(EngineError):
    """The acked ingest endpoint rejected a message (its reply had ``ok: false``).

    Attributes
    ----------
    reason : str or None
        One of :data:`engine.net.protocol.REASONS`, as the gateway sent it.
    accepted : int
        Records of the call that were accepted before the rejection (earlier
        frames of a split send, plus those taken from the rejected frame
        under ``backpressure``); they will be applied.
    handled : int
        Index, in the records given to the call, of the first record the
        gateway did not take: resend ``records[handled:]``.
    reply : dict or None
        The gateway's reply, decoded.
    """

    def __init__(self, message: str, reason: str | None = None, accepted: int = 0,
                 reply: dict | None = None, handled: int = 0):
        super().__init__(message)
        self.reason = reason
        self.accepted = accepted
        self.reply = reply
        self.handled = handled


class QueryError(EngineError):
    """The query endpoint answered ``ok: false``; the message is its ``error``.

    Attributes
    ----------
    reply : dict or None
        The gateway's reply, decoded.
    """

    def __init__(self, message: str, reply: dict | None = None):
        super().__init__(message)
        self.reply = reply


class ProtocolError(EngineError, ValueError):
    """A message that breaks the wire protocol (PROTOCOL.md).

    Attributes
    ----------
    reason : str
        One of :data:`engine.net.protocol.REASONS`: what the gateway answers.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SettingsError(ConfigError):
    """A ``ringflow serve`` setting (from a file or a flag) is unknown or out of range."""


class ServeError(EngineError, RuntimeError):
    """``ringflow serve`` could not start, or had to stop (a port in use, a
    worker that died, a gateway thread down for good)."""


class GatewayDown(EngineError):
    """A gateway thread stopped on an error and will not be restarted: its
    restarts ran out, or the engine behind it cannot go on.

    Attributes
    ----------
    thread : str
        The thread: ``pull``, ``acked`` or ``query``.
    cause : BaseException
        What stopped it the last time.
    restarts : int
        How often it had been restarted before.
    """

    def __init__(self, thread: str, cause: BaseException, restarts: int, why: str) -> None:
        super().__init__(f"gateway thread {thread} died: {type(cause).__name__}: {cause}; "
                         f"not restarted ({why})")
        self.thread = thread
        self.cause = cause
        self.restarts = restarts


class SecurityError(ConfigError):
    """A CURVE key that cannot be loaded, or a bind that would expose an
    endpoint beyond loopback without CURVE (``--insecure`` allows it)."""


class Forbidden(EngineError):
    """A request for an admin-only op (``reload``, ``names``) from a CURVE
    key that is not in the server's admin keys."""
