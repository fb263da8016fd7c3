"""The ZeroMQ gateway: ingest (PULL and acked ROUTER), queries (ROUTER) and
alerts (PUB) in front of an :class:`engine.Engine`.

Two threads, each owning its sockets (ZeroMQ sockets are not thread-safe):

* the **ingest** thread reads the PULL and acked ROUTER sockets, validates
  each frame's header and hands the records to its own producer slot, so it
  never shares a ring with ``Engine.submit`` and takes no lock.  While the
  rings are full it stops reading; ZeroMQ's high-water marks then push back
  on the senders, and the gateway's memory stays bounded.
* the **query** thread answers JSON requests and binary lookups from the
  shared state tables (seqlock reads): queries never wait for ingest.  What
  a request means and reads is :mod:`engine.query.ops`; this module only
  moves frames.  The fleet-wide ops (``status``, ``top``, ``entity``) are
  forwarded to a **query process** attached to the same tables
  (:mod:`engine.query.process`), so that a long one never holds this
  process's GIL, nor so a ping, a ``get`` or a lookup (README, "Queries
  that scale", has the measurements that chose a process over threads).

Small frames are coalesced: every frame already waiting on the PULL socket
is received by :mod:`engine._wire` in C, without blocking and without a
Python object per frame, and their records are submitted as one batch.

Each thread is watched by itself: a loop that stops on an unexpected error
closes its socket, records the cause (``stats()["threads"]``; ``healthy``
turns false at once) and, after a back-off, runs again on a fresh socket in
the same thread, so a socket never changes threads.  Past
``GatewayConfig.max_restarts`` within ``restart_window``, or when the engine
behind it cannot go on, the thread stays down and :attr:`Gateway.down` says
why (``ringflow serve`` then exits non-zero).
"""

from __future__ import annotations

import collections
import datetime
import functools
import itertools
import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import zmq

from .. import _table, _wire
from ..core.layout import EVENT_MARKER, PRODUCER_MARK_SLOTS, PRODUCER_METRIC
from ..core.records import EVENT_DTYPE
from ..errors import (
    STATUS_OK as _STATUS_OK,
)
from ..errors import (
    Backpressure,
    EngineClosed,
    EngineError,
    GatewayDown,
    WorkerDied,
)
from ..query import ops
from . import protocol as P
from . import security
from .subscriptions import MISSED

__all__ = ["Gateway", "GatewayConfig", "endpoint_urls"]

_POLL_MS = 100
# Frames read without blocking before the batch is submitted.
_COALESCE_FRAMES = 1024
# Producers whose sequences are kept in memory; past it the longest idle is
# dropped and read back from its marker rows if it sends again.
_MAX_PRODUCERS = 65536
# A message's share of one shard is cut into at most this many parts; a
# marker holds sequence * _PARTS + part, below 2**53 (an exact double).
_PARTS = 4096
# An acked round waits for its journal write in slices this long.
_JOURNAL_WAIT_NS = 50_000_000
_COALESCE_ROUNDS = 64
_COALESCE_RECORDS = 65536
# Frames at least this large skip the staging copy.
_DIRECT_RECORDS = 1024
_ALERT_HWM = 100_000
# The alert endpoint's topic of a publisher's notice that it skipped alerts.
MISSED_TOPIC = MISSED.encode()
# Alerts the publisher takes from the engine's log at a time.
_ALERT_BATCH = 4096
# Most alerts one ``alerts`` query returns.
_ALERTS_OP_LIMIT = 100_000
# Longest wait before a failed gateway thread runs again.
_BACKOFF_MAX = 5.0
# How long a restarted loop keeps trying to bind its endpoint: libzmq closes
# the old listener on its I/O thread, a moment after the old socket's close().
_REBIND_S = 2.0
# JSON ops that read the whole fleet (or a whole entity): answered by the
# query process, never by the query thread.
_SLOW_OPS = frozenset({"status", "top", "entity"})
# Slow queries in flight per query process; past it they are answered
# ``busy`` at once rather than queued without bound.
_MAX_SLOW_QUEUED = 256
# Seconds a query process gets to bind its socket before requests queue
# for it anyway (ZeroMQ holds them), and to exit when told.
_QP_STOP_S = 5.0


def endpoint_urls(host: str = P.DEFAULT_HOST, ports: dict | None = None) -> dict:
    """``{"ingest": "tcp://127.0.0.1:7710", ...}`` for a host and ports."""
    merged = {**P.DEFAULT_PORTS, **(ports or {})}
    return {name: f"{host}:{port}" for name, port in merged.items()}


class GatewayConfig:
    """Settings of a gateway.

    Parameters
    ----------
    endpoints : dict, optional
        ``ingest``, ``acked``, ``query``, ``alerts`` URLs; defaults bind
        127.0.0.1 on ports 7710-7713.
    max_message_bytes : int
        Larger messages (whole frame: header, producer extension and body)
        are rejected.  It is also every bound socket's ``ZMQ_MAXMSGSIZE``:
        libzmq reads a larger message's size prefix and drops the
        connection before allocating it, so an oversized frame costs no
        memory (PROTOCOL.md, "Limits").
    ack_timeout : float
        Seconds an acked message may wait for room in the rings before it is
        answered with ``backpressure`` (the records taken so far are kept).
    hwm : int
        ZeroMQ receive high-water mark, in messages, of the bound sockets.
    max_queued_bytes : int
        Bytes that may wait in one connection's receive queue: the
        high-water mark used is ``min(hwm, max(1, max_queued_bytes //
        max_message_bytes))``, so no connection queues more than
        ``max(max_queued_bytes, max_message_bytes)`` bytes of messages.
    max_restarts : int
        Restarts a gateway thread gets within ``restart_window`` seconds;
        the next failure leaves it down (0: never restarted).
    restart_window : float
        Seconds over which ``max_restarts`` is counted.
    restart_backoff : float
        Seconds before the first restart; each further restart within the
        window waits twice as long as the one before, at most 5 s.
    query_processes : int
        Processes answering the fleet-wide JSON ops (``status``, ``top``,
        ``entity``) from the tables, beside the query thread that answers
        the rest; 0: the query thread answers them too, one at a time (as
        before issue 16; ``bench/query.py --fleet`` compares).
    curve : engine.net.security.CurveServer, optional
        CURVE on every endpoint: the server's keys and the client and admin
        keys it lets in (README, "Security").  None: no authentication.
    insecure : bool
        Without ``curve``, allow endpoints beyond loopback (a warning is
        logged at every start); otherwise they are refused.
    """

    def __init__(self, endpoints: dict | None = None, max_message_bytes: int = 64 << 20,
                 ack_timeout: float = 5.0, hwm: int = 1000, max_restarts: int = 5,
                 restart_window: float = 60.0, restart_backoff: float = 0.1,
                 query_processes: int = 1, curve=None, insecure: bool = False,
                 max_queued_bytes: int = 256 << 20) -> None:
        self.endpoints = {**endpoint_urls(), **(endpoints or {})}
        unknown = set(self.endpoints) - set(P.DEFAULT_PORTS)
        if unknown:
            raise EngineError(f"unknown endpoint(s) {sorted(unknown)}; "
                              f"expected {sorted(P.DEFAULT_PORTS)}")
        if max_message_bytes < P.HEADER.size:
            raise EngineError("max_message_bytes must hold at least a header")
        self.max_message_bytes = int(max_message_bytes)
        self.ack_timeout = float(ack_timeout)
        self.hwm = int(hwm)
        if int(max_queued_bytes) < 1:
            raise EngineError("max_queued_bytes must be >= 1")
        self.max_queued_bytes = int(max_queued_bytes)
        if int(max_restarts) < 0 or not restart_window > 0 or not restart_backoff >= 0:
            raise EngineError("max_restarts must be >= 0, restart_window > 0 and "
                              "restart_backoff >= 0")
        self.max_restarts = int(max_restarts)
        self.restart_window = float(restart_window)
        self.restart_backoff = float(restart_backoff)
        if isinstance(query_processes, bool) or not isinstance(query_processes, int) \
                or not 0 <= query_processes <= 16:
            raise EngineError("query_processes must be an integer in 0..16")
        self.query_processes = query_processes
        self.curve = curve
        self.insecure = bool(insecure)
        #: Endpoints beyond loopback (bound without CURVE only when insecure).
        self.exposed = security.check_exposure(self.endpoints, curve, self.insecure)


    @property
    def rcvhwm(self) -> int:
        """The receive high-water mark in messages: ``hwm``, lowered so that
        ``rcvhwm * max_message_bytes`` stays within ``max_queued_bytes``."""
        return min(self.hwm, max(1, self.max_queued_bytes // self.max_message_bytes))


class _ProducerState:
    """One producer's last sequence per shard, and the reply counts of its
    last messages (a duplicate is answered with the original's counts)."""

    __slots__ = ("last", "counts")

    def __init__(self, last: np.ndarray) -> None:
        self.last = last
        self.counts: dict = {}

    def remember(self, seq: int, accepted: int, rejected: int) -> None:
        self.counts[seq] = (accepted, rejected)
        if len(self.counts) > 8:
            del self.counts[min(self.counts)]


def shard_of(keys: np.ndarray, workers: int) -> np.ndarray:
    """The shard of each key: ``mix64(key) % workers``, as the router."""
    return (_table.mix64(np.ascontiguousarray(keys, np.uint64))
            % np.uint64(workers)).astype(np.intp)


@functools.lru_cache(maxsize=4096)
def _marker_keys(pid: int, workers: int) -> tuple[int, ...]:
    # Keys derived from the producer id, the first that lands in each shard.
    step = np.uint64(0x9E3779B97F4A7C15)
    cand = (np.uint64(pid) + np.arange(1, 64 * workers + 1, dtype=np.uint64) * step)
    shards = shard_of(cand, workers)
    keys = []
    for w in range(workers):
        # 0 marks an empty entry of the table's producer marks.
        hits = np.flatnonzero((shards == w) & (cand != 0))
        if not len(hits):   # pragma: no cover - 64 tries per shard
            raise EngineError(f"no marker key for shard {w} of producer {pid}")
        keys.append(int(cand[hits[0]]))
    return tuple(keys)


def marker_keys(pid: int, workers: int) -> np.ndarray:
    """The key of producer ``pid``'s marker row in each shard."""
    return np.array(_marker_keys(pid, workers), np.uint64)


def marker_events(pid: int, mark: int, shard: int, workers: int, ts: int) -> np.ndarray:
    """Producer ``pid``'s marker for ``shard``: the reserved metric, its
    flag, and ``mark`` (sequence * _PARTS + part) as the value, to which the
    worker raises the producer's mark in its table."""
    ev = np.zeros(1, EVENT_DTYPE)
    ev["key"] = _marker_keys(pid, workers)[shard]
    ev["metric"] = PRODUCER_METRIC
    ev["flags"] = EVENT_MARKER
    # The engine's oldest sane time: valid whatever ts range it was given
    # (a marker's time is never read).
    ev["ts"] = ts
    ev["value"] = float(mark)
    return ev


class _Unavailable(EngineError):
    """Part of a message could not be taken: a shard is degraded."""

    def __init__(self, accepted: int, handled: int, message: str) -> None:
        super().__init__(message)
        self.accepted, self.handled, self.message = accepted, handled, message


class _Watch:
    """One gateway thread's health.  Written by that thread alone (so no
    lock), read by ``stats()`` from any thread."""

    __slots__ = ("name", "state", "restarts", "recent", "error", "cause", "exc")

    def __init__(self, name: str) -> None:
        self.name = name
        #: starting, running, restarting, down or stopped.
        self.state = "starting"
        self.restarts = 0
        # Monotonic times of the restarts still inside the restart window.
        self.recent: collections.deque = collections.deque()
        #: The last failure: type, message, at (Unix time, seconds).
        self.error: dict | None = None
        #: Why the thread is not running, while it is not; else None.
        self.cause: str | None = None
        self.exc: BaseException | None = None

    def to_dict(self) -> dict:
        return {"state": self.state, "restarts": self.restarts,
                "last_error": None if self.error is None else dict(self.error)}


class Gateway:
    """ZeroMQ front end of an engine; see the module docstring.

    Use :meth:`engine.Engine.serve` to start one; :meth:`close` stops it
    (the engine's ``close`` does too).
    """

    #: Called by the ``reload`` query op: ``reload_hook()`` re-reads the
    #: server's rules file, ``reload_hook(rules)`` installs rules sent
    #: inline (a dict); either returns the new :class:`engine.health.rules.Rules`.
    #: ``ringflow serve`` sets it, so that client reloads and SIGHUP take
    #: turns.  ``None``: no rules file, inline rules go straight to
    #: :meth:`engine.Engine.reload_rules`.
    reload_hook = None

    #: Called as ``fault_hook(thread, cause, restarting)`` from a gateway
    #: thread that stopped on an error, once it has decided to restart
    #: (``restarting`` true) or to stay down; ``cause`` is the text
    #: ``stats()["cause"]`` shows.  ``ringflow serve`` sets it to report
    #: the failure and to wake its main loop.  It must not block.
    fault_hook = None

    #: Called as ``query_observer(path, seconds)`` by the query thread after
    #: each JSON query it answers (``path`` ``"local"``) or forwards to a
    #: query process (``"fleet"``, timed to the reply), for the latency
    #: histogram of :mod:`engine.observe.metrics`; None: nothing is timed.
    query_observer = None

    def __init__(self, engine, config: GatewayConfig | None = None) -> None:
        self.engine = engine
        self._pid = os.getpid()
        self.config = config or GatewayConfig()
        self.names = engine.names
        self._json_pull = P.JsonLinesDecoder(self.names)
        self._json_acked = P.JsonLinesDecoder(self.names)
        self._reader = engine._reader
        # The query ops that act on the engine rather than read it.
        self._control_ops = {op: getattr(self, f"_op_{op}") for op in _CONTROL_OPS}
        # Each thread counts in a dict of its own (no lock, no lost update);
        # stats() adds them up.
        self._tls = threading.local()
        self._all_counters: list[dict] = []
        # PULL and acked ingest each have a thread and a producer slot: an
        # acked message never waits behind fire-and-forget traffic, so
        # ack_timeout bounds its wait.
        # Idempotent producers: per producer id, the last sequence each
        # shard took (PROTOCOL.md), least recently seen first.
        self._producer_states: collections.OrderedDict = collections.OrderedDict()
        # Records of one part: with its marker, one publish of a ring (the
        # router publishes at most half a ring at once).
        self._part_records = max(1, engine.layout.ring_slots // 2 - 1)
        self._pull_producer = engine.producer()
        try:
            self._acked_producer = engine.producer()
        except EngineError:
            self._pull_producer.release()
            raise
        self._ctx = zmq.Context()
        # Queries get a context, and so a libzmq I/O thread, of their own: a
        # request must not queue behind megabytes of ingest on a shared one.
        self._query_ctx = zmq.Context()
        # ZAP handlers before any bind: without one libzmq lets in any key.
        self._auth = None
        if self.config.curve is not None:
            self._auth = security.Authenticators((self._ctx, self._query_ctx),
                                                 self.config.curve)
        elif self.config.exposed:
            security.log.warning(
                "insecure: %s bound without CURVE (--insecure): anyone who reaches them "
                "can ingest, read every series and replace the alert rules",
                ", ".join(self.config.exposed))
        self._closed = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watches: dict[str, _Watch] = {}
        self._start_errors: list[BaseException] = []
        self._down: GatewayDown | None = None
        self._staging = np.empty(_COALESCE_RECORDS, EVENT_DTYPE)
        self._pull_drain = None
        self._lookups = None
        # Started by the query loop's first run; their sockets are the
        # query thread's.
        self._qprocs: list[_QueryProcess] = []
        self._qp_seq = itertools.count(1)
        # seq -> perf_counter() at forwarding, only with a query_observer.
        self._qp_started: dict = {}
        self.alerts = None
        self.published = 0
        #: Alerts the publisher fell too far behind the engine's log to send.
        self.alerts_missed = 0
        #: Subscriptions the alert endpoint has received (XPUB).
        self.alert_subscriptions = 0
        # The publisher's place in the engine's alert log: from the alerts
        # after the gateway started.
        self._alert_position = engine._alerts.log.head - 1
        try:
            for name, target in (("pull", self._pull_loop), ("acked", self._acked_loop),
                                 ("query", self._query_loop), ("alerts", self._alert_loop)):
                ready = threading.Event()
                watch = self._watches[name] = _Watch(name)
                t = threading.Thread(target=self._run, args=(watch, target, ready),
                                     name=f"ringflow-gateway-{name}", daemon=True)
                t.start()
                ready.wait(10)
                self._threads.append(t)
                if self._start_errors:
                    raise self._start_errors[0]
        except BaseException:
            self.close()
            raise

    # --- plumbing ---------------------------------------------------------

    def _run(self, watch: _Watch, target, started: threading.Event) -> None:
        """Run one thread's loop until close(), restarting it after a failure."""

        def up() -> None:
            # Called by the loop once its socket is bound.
            watch.state, watch.cause, watch.exc = "running", None, None
            started.set()

        while True:
            try:
                target(up)
            except BaseException as exc:  # noqa: BLE001 - every failure is recorded
                if not started.is_set():
                    # Start-up: the constructor raises it (a port in use).
                    # Should the constructor have stopped waiting already,
                    # the gateway is down all the same: serve must see it.
                    watch.state, watch.exc = "down", exc
                    self._start_errors.append(exc)
                    if self._down is None:
                        self._down = GatewayDown(watch.name, exc, watch.restarts,
                                                 "it failed while starting")
                    started.set()
                    return
                try:
                    again = self._failed(watch, exc)
                except BaseException as inner:  # noqa: BLE001 - never die unrecorded
                    watch.state, watch.exc = "down", inner
                    if self._down is None:
                        self._down = GatewayDown(watch.name, inner, watch.restarts,
                                                 "recording its failure failed")
                    return
                if not again:
                    return
                continue
            watch.state = "stopped"
            return

    def _failed(self, watch: _Watch, exc: BaseException) -> bool:
        """Record why ``watch``'s loop stopped and decide what next; wait out
        the back-off.  Returns True to run the loop again."""
        cfg = self.config
        at = time.time()
        now = time.monotonic()
        watch.exc = exc
        watch.error = {"type": type(exc).__name__, "message": str(exc), "at": at}
        when = datetime.datetime.fromtimestamp(at, datetime.timezone.utc)
        what = (f"gateway thread {watch.name} failed at "
                f"{when.isoformat(timespec='milliseconds')}: {type(exc).__name__}: {exc}")
        if self._stop.is_set():
            watch.state, watch.cause = "stopped", what
            return False
        while watch.recent and now - watch.recent[0] > cfg.restart_window:
            watch.recent.popleft()
        why = None
        if isinstance(exc, (WorkerDied, EngineClosed)):
            # A fresh socket cannot bring a worker back.
            why = "the engine cannot go on"
        elif len(watch.recent) >= cfg.max_restarts:
            why = f"{cfg.max_restarts} restarts within {cfg.restart_window:g} s"
        if why is not None:
            watch.state, watch.cause = "down", f"{what}; not restarted ({why})"
            if self._down is None:
                self._down = GatewayDown(watch.name, exc, watch.restarts, why)
            self._tell(watch, restarting=False)
            return False
        # The exponent is capped: 2.0 ** 1024 overflows long before any cap applies.
        delay = min(cfg.restart_backoff * 2.0 ** min(len(watch.recent), 32), _BACKOFF_MAX)
        watch.state = "restarting"
        watch.cause = (f"{what}; restart {len(watch.recent) + 1} of {cfg.max_restarts} "
                       f"in {delay:.3g} s")
        self._tell(watch, restarting=True)
        if self._stop.wait(delay):
            watch.state = "stopped"
            return False
        watch.restarts += 1
        watch.recent.append(time.monotonic())
        watch.state = "starting"
        return True

    def _tell(self, watch: _Watch, restarting: bool) -> None:
        hook = self.fault_hook
        if hook is not None:
            try:
                hook(watch.name, watch.cause, restarting)
            except Exception:  # noqa: BLE001, S110 - a reporting hook must not stop the restart
                pass

    @property
    def healthy(self) -> bool:
        """False from the moment a gateway thread stops on an error until it
        runs again (see ``stats()["cause"]``), for good once it is down, and
        while a shard of the engine is not ok (a worker down, hung,
        recovering or degraded: ``stats()["engine_state"]``, docs/faults.md)."""
        return (not self._closed and self._down is None and len(self._watches) == 4
                and all(w.state == "running" for w in self._watches.values())
                and all(t.is_alive() for t in self._threads)
                and self.engine.state == "ok")

    @property
    def down(self) -> GatewayDown | None:
        """Why a gateway thread stopped for good (restarts exhausted, or the
        engine cannot go on), or None while every thread runs or restarts."""
        return self._down

    @property
    def _errors(self) -> list[BaseException]:
        """The failures of the threads that are not running now."""
        return [w.exc for w in self._watches.values()
                if w.exc is not None and w.state != "running"]

    def _bind_again(self, kind: int, url: str, ctx: zmq.Context | None = None) -> zmq.Socket:
        """:meth:`_bind`, retried briefly: after a restart the old listener
        may not have been released yet."""
        deadline = time.monotonic() + _REBIND_S
        while True:
            try:
                return self._bind(kind, url, ctx)
            except EngineError:
                if time.monotonic() >= deadline or self._stop.wait(0.02):
                    raise

    def _bind(self, kind: int, url: str, ctx: zmq.Context | None = None) -> zmq.Socket:
        sock = (ctx or self._ctx).socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, self.config.rcvhwm)
        # The protocol's limit: a larger message is dropped by libzmq from
        # its size prefix, before any allocation.  Under CURVE libzmq checks
        # the encrypted message, up to 33 bytes longer (box overhead and
        # nonce): the margin keeps a valid frame of the limit's size.
        margin = 64 if self.config.curve is not None else 0
        sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes + margin)
        if self.config.curve is not None:
            self.config.curve.configure(sock)
        try:
            sock.bind(url)
        except zmq.ZMQError as exc:
            sock.close()
            raise EngineError(f"cannot bind {url}: {exc}") from exc
        return sock

    @property
    def endpoints(self) -> dict:
        return dict(self.config.endpoints)

    def close(self) -> None:
        """Stop reading, finish what was read, close the sockets, give the
        producer slot back.  Safe to call twice.

        In a process forked from the gateway's it only marks this copy
        closed: the threads, sockets and producer slots are the parent's.
        """
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._pid:
            return
        self._stop.set()
        for t in self._threads:
            t.join(30)
        # After the query thread: nothing hands them work any more, and
        # none may read the tables once the engine lets them go.
        for qp in self._qprocs:
            qp.stop()
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()
        self._query_ctx.term()
        self._pull_producer.release()
        self._acked_producer.release()

    def _alert_loop(self, up) -> None:
        """Publish the engine's alert log, in order, on the alert endpoint.

        This thread keeps its own place in the log, so a slow network never
        holds the engine's alert thread (nor, through it, the workers).
        Should it fall more than the log's length behind, it publishes a
        MISSED notice with the numbers it could not send.  The socket is an
        XPUB: the subscriptions that arrive are counted, which tells a test
        or an operator that a subscriber is really listening."""
        log = self.engine._alerts.log
        url = self.config.endpoints["alerts"]
        sock = self._bind(zmq.XPUB, url) if self.alerts is None else \
            self._bind_again(zmq.XPUB, url)
        # A burst of status changes must not be cut at libzmq's default of
        # 1000 messages per slow subscriber.
        sock.setsockopt(zmq.SNDHWM, _ALERT_HWM)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.alerts = sock
        up()
        try:
            while not self._stop.is_set():
                while sock.poll(0, zmq.POLLIN):
                    if sock.recv()[:1] == b"\x01":
                        self.alert_subscriptions += 1
                with log.lock:
                    if log.head - 1 <= self._alert_position:
                        log.lock.wait(_POLL_MS / 1000)
                self._publish_from_log(sock, log)
            # What the engine logged before the gateway closed goes out too.
            self._publish_from_log(sock, log)
        finally:
            self.alerts = None
            sock.close()

    def _publish_from_log(self, sock: zmq.Socket, log) -> None:
        log_id = log.log_id
        while True:
            got = log.query(self._alert_position, _ALERT_BATCH)
            missed, items = got["missed"], got["alerts"]
            if missed:
                first = self._alert_position + 1
                sock.send_multipart([MISSED_TOPIC, json.dumps(
                    {"missed": missed, "from": first, "to": first + missed - 1,
                     "log": log_id}).encode()])
                self.alerts_missed += missed
            for alert in items:
                # Topic frame first, so that SUB sockets filter on it: a
                # series alert's new status, or ENGINE for a shard's state.
                # ``log`` names the numbering (a restarted engine without a
                # data dir starts a new one).
                sock.send_multipart([alert.topic.encode(),
                                     json.dumps({**alert.to_dict(), "log": log_id}).encode()])
            self.published += len(items)
            self._alert_position = got["next"]
            if len(items) < _ALERT_BATCH:
                return

    @property
    def _c(self) -> dict:
        """The calling thread's counters."""
        c = getattr(self._tls, "counters", None)
        if c is None:
            c = {"messages": 0, "accepted": 0, "invalid": 0,
                 "rejected": {reason: 0 for reason in P.REASONS},
                 "queries": 0, "query_errors": 0,
                 "duplicates": 0, "duplicate_records": 0}
            self._all_counters.append(c)
            self._tls.counters = c
        return c

    @property
    def counters(self) -> dict:
        """Every thread's counters added up."""
        total = {"messages": 0, "accepted": 0, "invalid": 0,
                 "rejected": {reason: 0 for reason in P.REASONS},
                 "queries": 0, "query_errors": 0,
                 "duplicates": 0, "duplicate_records": 0}
        for c in list(self._all_counters):
            for k, v in c.items():
                if k == "rejected":
                    for reason, n in v.items():
                        total["rejected"][reason] += n
                else:
                    total[k] += v
        return total

    def stats(self) -> dict:
        """The gateway's counters and health.

        Returns
        -------
        dict
            ``messages``, ``accepted``, ``invalid``, ``rejected`` (by
            reason), ``queries``, ``query_errors``, ``alerts_published``;
            ``healthy``; ``errors`` (the failures of threads not running
            now); ``cause`` (why the gateway is not healthy: which thread,
            when, what, and whether it restarts; None when healthy);
            ``restarts`` (all threads); ``threads``: per thread (``pull``,
            ``acked``, ``query``) its ``state``, ``restarts`` and
            ``last_error`` (``type``, ``message``, ``at``: Unix time);
            ``engine_state`` (:attr:`engine.Engine.state`).
        """
        c = self.counters
        watches = list(self._watches.values())
        causes = [w.cause for w in watches if w.cause is not None and w.state != "running"]
        engine_state = self.engine.state
        if engine_state != "ok":
            sup = self.engine._supervisor
            causes += [f"shard {r.index} {r.state}: {r.cause}" for r in sup.records
                       if r.state != "ok"]
        out = {**c, "rejected": dict(c["rejected"]), "healthy": self.healthy,
               "alerts_published": self.published,
               "alerts_missed": self.alerts_missed,
               "alert_subscriptions": self.alert_subscriptions,
               "errors": [repr(e) for e in self._errors],
               "cause": "; ".join(causes) or None,
               "restarts": sum(w.restarts for w in watches),
               "engine_state": engine_state,
               "threads": {w.name: w.to_dict() for w in watches}}
        if self._lookups is not None:
            out["queries"] += self._lookups.answered
            out["query_errors"] += self._lookups.failed
        drain = self._pull_drain
        if drain is not None:
            # Frames of the PULL socket are counted in C; the few handed back
            # to Python (JSON, large) were counted there once already.
            out["messages"] += drain.frames
            for reason, n in drain.rejected.items():
                out["rejected"][reason] += n
        return out

    # --- ingest -------------------------------------------------------------

    def _pull_loop(self, up) -> None:
        drain = self._pull_drain
        if drain is None:
            # Built before the bind, so that a failure here leaves no socket
            # open.  Kept across restarts: its counters, and records it read
            # before a failure, which are submitted first below.
            drain = self._pull_drain = _wire.Drain(
                self._staging, self.config.max_message_bytes, _DIRECT_RECORDS)
            pull = self._bind(zmq.PULL, self.config.endpoints["ingest"])
        else:
            pull = self._bind_again(zmq.PULL, self.config.endpoints["ingest"])
        up()
        try:
            self._submit_drained(drain)
            while not self._stop.is_set():
                if pull.poll(_POLL_MS):
                    self._drain_pull(pull)
        finally:
            pull.close()

    def _acked_loop(self, up) -> None:
        bind = self._bind if self._watches["acked"].restarts == 0 else self._bind_again
        acked = bind(zmq.ROUTER, self.config.endpoints["acked"])
        up()
        try:
            while not self._stop.is_set():
                if acked.poll(_POLL_MS):
                    self._serve_acked(acked)
        finally:
            acked.close()

    def _decode(self, frame, acked: bool = False):
        """Records of one ingest frame: ``(records, None, "", producer)``,
        or ``(None, reason, message, None)``.  ``producer``: ``(id,
        sequence)`` of a version-2 acked frame, else None."""
        try:
            producer, offset = None, P.HEADER.size
            if acked:
                frame, producer, offset = P.split_producer(frame)
            kind, count = P.parse_header(frame, self.config.max_message_bytes,
                                         producer=producer is not None)
            if kind == P.TYPE_EVENTS:
                return P.parse_events(frame, count, offset), None, "", producer
            if kind == P.TYPE_JSON:
                body = memoryview(frame)[offset:]
                # Each ingest thread has its decoder (name cache, buffer);
                # the records it returns are submitted before its next call.
                decoder = self._json_acked if acked else self._json_pull
                return decoder.decode(body), None, "", producer
            raise P.ProtocolError("bad_type", f"message type {kind} is not an ingest type")
        except P.ProtocolError as exc:
            self._c["rejected"][exc.reason] += 1
            return None, exc.reason, str(exc), None
        except Exception as exc:  # noqa: BLE001 - one message must never stop ingest
            self._c["rejected"]["bad_json"] += 1
            return None, "bad_json", f"undecodable message: {exc!r}", None

    def _submit(self, producer, events: np.ndarray, timeout: float | None,
                markers: bool = False) -> tuple[int, int, bool]:
        """Submit through one of the gateway's producers, waiting in slices so
        that a stop request is noticed.  Returns (accepted, handled, complete)."""
        accepted = handled = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while handled < len(events):
            try:
                accepted += producer._submit(events[handled:], 0.1, markers)
                handled = len(events)
            except WorkerDied as exc:
                # A shard given up on (degraded): nothing more can be taken.
                # A worker that merely died is replaced, and its rings fill
                # meanwhile (Backpressure below).
                accepted += exc.accepted
                handled += exc.handled
                raise _Unavailable(accepted, handled, str(exc)) from None
            except Backpressure as bp:
                accepted += bp.accepted
                handled += bp.handled
                if deadline is not None and time.monotonic() >= deadline:
                    return accepted, handled, False
                # On shutdown the workers keep draining, so finishing what
                # was read is bounded; a replaced worker drains on its return.
                self.engine._check()
        return accepted, handled, True

    def _count(self, accepted: int, handled: int) -> None:
        self._c["accepted"] += accepted
        self._c["invalid"] += handled - accepted
        self._c["rejected"]["invalid_record"] += handled - accepted

    def _drain_pull(self, pull: zmq.Socket) -> None:
        # engine._wire receives in C: binary frames are checked and their
        # records copied into the staging batch with no Python per frame.
        # JSON frames and large frames come back as zero-copy Frames.
        drain = self._pull_drain
        for _ in range(_COALESCE_ROUNDS):
            status = drain.drain(pull.underlying, _COALESCE_FRAMES)
            self._submit_drained(drain)
            if status == _wire.ERROR:
                raise EngineError(
                    f"receiving on the ingest socket failed: errno {drain.last_errno}")
            if status == _wire.DRAINED:
                return

    def _submit_drained(self, drain) -> None:
        """Submit what the drain holds: the staged batch, then the frame it
        handed back to Python (JSON, or a large binary frame)."""
        if drain.fill:
            self._submit_pull(drain.take_batch())
        frame = drain.take_pending()
        if frame is not None:
            records = self._decode(frame)[0]
            if records is not None and len(records):
                self._submit_pull(records)

    def _submit_pull(self, records: np.ndarray) -> None:
        try:
            self._count(*self._submit(self._pull_producer, records, None)[:2])
        except _Unavailable as exc:
            # Fire-and-forget has nobody to tell: the records a degraded
            # shard could not take are counted, and reading goes on.
            self._count(exc.accepted, exc.handled)
            self._c["rejected"]["unavailable"] += len(records) - exc.handled

    def _serve_acked(self, sock: zmq.Socket) -> None:
        # With a journal, a round's replies wait until its events are
        # journaled (applied, which the workers do only after the journal
        # write): one wait for up to _COALESCE_FRAMES messages, so the
        # journal's group commit serves the acked endpoint as well.
        durable = self.engine.config.data_dir is not None
        # Read once a round: while the journal cannot be written nothing is
        # taken (the sender resends, and nothing it resends is applied twice).
        failing = self.engine._journal_failure() if durable else None
        replies = []
        awaited = not durable
        try:
            for _ in range(_COALESCE_FRAMES):
                try:
                    parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self._c["messages"] += 1
                envelope, frame = parts[:-1], parts[-1]
                try:
                    reply = self._ack(frame, failing)
                except Exception as exc:
                    # A dead worker, or a fault of this thread: answer this
                    # sender, then stop (healthy turns false, stats() says
                    # why, and the thread restarts unless the engine is gone).
                    self._c["rejected"]["unavailable"] += 1
                    replies.append((envelope, {"ok": False, "reason": "unavailable",
                                               "error": str(exc)}))
                    raise
                replies.append((envelope, reply))
            if durable and any(r["ok"] for _, r in replies):
                self._await_journal(replies)
            awaited = True
        finally:
            if not awaited:
                # No ok for a round whose journal write was not seen (this
                # thread failed before or during the wait).
                self._withdraw_oks(replies, "the acked thread failed before the journal wait")
            for envelope, reply in replies:
                sock.send_multipart([*envelope, json.dumps(reply).encode()])

    def _await_journal(self, replies: list) -> None:
        """Hold the ``ok`` replies of a round until every event taken so
        far is journaled and applied; past ``ack_timeout`` (a failing disk,
        a worker being replaced) they become ``unavailable``: taken, to be
        applied once the shard can journal again, but not acknowledged."""
        kernel = self._acked_producer._kernel
        kernel.flush_begin()
        deadline = time.monotonic() + self.config.ack_timeout
        while True:
            status = kernel.flush_wait(_JOURNAL_WAIT_NS)
            if status == _STATUS_OK:
                return
            if self._stop.is_set() and self.engine._closing:
                break
            if time.monotonic() >= deadline:
                break
        why = self.engine._journal_failure() or f"not journaled within {self.config.ack_timeout:g}s"
        self._withdraw_oks(replies, why)

    def _withdraw_oks(self, replies: list, why: str) -> None:
        """Turn a round's ok replies into unavailable: taken, not known to
        be journaled."""
        for i, (envelope, reply) in enumerate(replies):
            if reply["ok"]:
                self._c["rejected"]["unavailable"] += 1
                replies[i] = (envelope, {
                    "ok": False, "reason": "unavailable", "accepted": reply["accepted"],
                    "handled": reply["accepted"] + reply["rejected"],
                    "error": f"journal: {why}; the records were taken and will be applied "
                             f"once they are journaled, but are not acknowledged"})

    def _ack(self, frame, failing: str | None = None) -> dict:
        """Decode and submit one acked message; returns its reply."""
        records, reason, message, producer = self._decode(frame.buffer, acked=True)
        if records is None:
            return {"ok": False, "reason": reason, "error": message}
        if failing is not None:
            self._c["rejected"]["unavailable"] += 1
            return {"ok": False, "reason": "unavailable", "accepted": 0, "handled": 0,
                    "error": f"journal: {failing}; nothing taken, resend later"}
        if producer is not None:
            return self._ack_idempotent(records, producer)
        try:
            accepted, handled, complete = self._submit(
                self._acked_producer, records, self.config.ack_timeout)
        except _Unavailable as exc:
            return self._unavailable(exc, len(records))
        self._count(accepted, handled)
        if not complete:
            return self._backpressure(accepted, handled, len(records), "")
        return {"ok": True, "accepted": accepted, "rejected": handled - accepted}

    def _unavailable(self, exc: _Unavailable, total: int) -> dict:
        self._count(exc.accepted, exc.handled)
        self._c["rejected"]["unavailable"] += 1
        return {"ok": False, "reason": "unavailable", "accepted": exc.accepted,
                "handled": exc.handled,
                "error": f"{exc.message}; {exc.handled} of {total} records taken"}

    def _backpressure(self, accepted: int, handled: int, total: int, rest: str) -> dict:
        self._c["rejected"]["backpressure"] += 1
        return {"ok": False, "reason": "backpressure", "accepted": accepted,
                "handled": handled,
                "error": f"rings full for {self.config.ack_timeout:g}s; "
                         f"{handled} of {total} records taken, resend the rest{rest}"}

    def _ack_idempotent(self, records: np.ndarray, producer: tuple[int, int]) -> dict:
        """An acked message of an idempotent producer (PROTOCOL.md), applied
        at most once however often it is sent.

        Each shard's share is cut into parts that fit one publish of a ring,
        and each part goes into the ring with a marker of the producer
        (sequence and part) in the same publish: the worker journals and
        applies a publish whole or not at all, so after any crash a shard
        holds a part together with its marker, or neither.  A retry skips
        the parts whose marker a shard holds."""
        pid, seq = producer
        state = self._producer_state(pid)
        if state is None:
            self._c["rejected"]["unavailable"] += 1
            return {"ok": False, "reason": "unavailable", "accepted": 0, "handled": 0,
                    "error": f"too many producers: a shard holds the marks of "
                             f"{PRODUCER_MARK_SLOTS // 2} producers, its most; known producers "
                             f"go on (reuse a producer id rather than draw a new one)"}
        workers = len(state.last)
        shards = shard_of(records["key"], workers)
        order = np.argsort(shards, kind="stable")
        bounds = np.searchsorted(shards[order], np.arange(workers + 1))
        piece = self._part_records
        accepted = handled = skipped = 0
        total = len(records)
        if bounds[-1] and int(np.diff(bounds).max()) > piece * _PARTS:
            self._c["rejected"]["too_large"] += 1
            return {"ok": False, "reason": "too_large",
                    "error": f"a message of an idempotent producer may carry at most "
                             f"{piece * _PARTS} records for one shard; split it"}
        for w in range(workers):
            mine = order[bounds[w]:bounds[w + 1]]
            parts = max(1, -(-len(mine) // piece))
            for part in range(parts):
                mark = seq * _PARTS + part
                chunk = mine[part * piece:(part + 1) * piece]
                if mark <= state.last[w]:
                    skipped += len(chunk)
                    continue
                events = np.concatenate([records[chunk], marker_events(
                    pid, mark, w, workers, int(self.engine.config.ts_min))])
                # Flags are reserved for clients: none of theirs passes as a
                # marker (an event of the reserved metric is then invalid).
                events["flags"][:-1] = 0
                try:
                    got, done, complete = self._submit(self._acked_producer, events,
                                                       self.config.ack_timeout, markers=True)
                except _Unavailable as exc:
                    # What this part's publish took is whole (or nothing).
                    exc.accepted, exc.handled = accepted, handled
                    return self._unavailable(exc, total)
                if not complete:
                    self._count(accepted, handled)
                    return self._backpressure(accepted, handled, total,
                                              ": send the message again, same sequence")
                state.last[w] = mark
                accepted += got - 1
                handled += done - 1
        self._count(accepted, handled)
        if skipped == total and accepted == handled == 0:
            # Taken before (a retry): answered, never applied again.
            self._c["duplicates"] += 1
            self._c["duplicate_records"] += total
            accepted, rejected = state.counts.get(seq, (0, 0))
            return {"ok": True, "accepted": accepted, "rejected": rejected, "duplicate": True}
        self._c["duplicate_records"] += skipped
        state.remember(seq, accepted, handled - accepted)
        return {"ok": True, "accepted": accepted, "rejected": handled - accepted,
                "duplicate": False}

    def _producer_state(self, pid: int) -> _ProducerState | None:
        """What the engine has taken from producer ``pid``: kept here once
        seen, read back from the tables' producer marks the first time
        (after a restart, those say what every shard holds)."""
        states = self._producer_states
        state = states.get(pid)
        if state is None:
            workers = self.engine.config.workers
            tables = self._reader.tables
            last = np.array(
                [tables[w].find_mark(int(k)) for w, k in enumerate(marker_keys(pid, workers))],
                np.int64)
            if not last.any() and any(t.mark_count >= PRODUCER_MARK_SLOTS // 2
                                      for t in tables):
                # A new producer whose marks could not be kept: refused,
                # never taken without the guarantee.
                return None
            state = _ProducerState(last)
            states[pid] = state
            if len(states) > _MAX_PRODUCERS:
                # The longest idle: read back from its rows if it returns.
                states.popitem(last=False)
        else:
            states.move_to_end(pid)
        return state

    # --- queries ------------------------------------------------------------

    def _query_loop(self, up) -> None:
        server = self._lookups
        if server is None:
            # Binary lookups are answered in C with the GIL released
            # (engine._wire.LookupServer); JSON requests come back here.
            # Built before the bind, so that a failure here leaves no socket
            # open; kept across restarts, with its count of answers.
            server = self._lookups = _wire.LookupServer(self._reader.header_addresses(),
                                                        self.config.max_message_bytes)
            for _ in range(self.config.query_processes):
                self._qprocs.append(_QueryProcess(self, self._query_ctx))
            sock = self._bind(zmq.ROUTER, self.config.endpoints["query"], self._query_ctx)
        else:
            sock = self._bind_again(zmq.ROUTER, self.config.endpoints["query"],
                                    self._query_ctx)
            # A request read by the failed run: its sender's connection
            # went with the old socket, so no reply could reach it.
            server.take_pending()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        for qp in self._qprocs:
            poller.register(qp.sock, zmq.POLLIN)
        up()
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(_POLL_MS))
                for qp in self._qprocs:
                    # The query processes' replies, sent on from here: only
                    # this thread uses the ROUTER.
                    if qp.sock in ready:
                        self._forward_replies(sock, qp)
                    if qp.exited():
                        self._replace(sock, qp)
                if sock not in ready:
                    continue
                for _ in range(_COALESCE_ROUNDS):
                    status = server.serve(sock.underlying, _COALESCE_FRAMES)
                    # The sender's CURVE key (ZAP User-Id), for the admin ops.
                    user = None if self.config.curve is None else \
                        server.pending_property(b"User-Id")
                    parts = server.take_pending()
                    if parts is not None:
                        self._dispatch(sock, parts, user)
                    if status == _wire.ERROR:
                        raise EngineError(
                            f"receiving on the query socket failed: errno {server.last_errno}")
                    if status == _wire.DRAINED:
                        break
        finally:
            sock.close()

    def _forward_replies(self, sock: zmq.Socket, qp: _QueryProcess) -> None:
        while True:
            try:
                seq, unavailable, *envelope, reply = qp.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            skipped = int.from_bytes(unavailable, "little")
            if skipped > qp.unavailable:
                self._reader.add_unavailable(skipped - qp.unavailable)
                qp.unavailable = skipped
            t0 = self._qp_started.pop(seq, None)
            if qp.inflight.pop(seq, None) is None:
                continue    # answered already, when its process was replaced
            if t0 is not None and self.query_observer is not None:
                self.query_observer("fleet", time.perf_counter() - t0)
            if reply.startswith(b'{"ok": false'):
                self._query_failed()
            sock.send_multipart([*envelope, reply])

    def _replace(self, sock: zmq.Socket, qp: _QueryProcess) -> None:
        """A query process exited: answer what it had in flight, start
        another (it gets every name again)."""
        code = qp.proc.returncode
        for seq, envelope in qp.inflight.items():
            self._qp_started.pop(seq, None)
            self._query_failed()
            sock.send_multipart([*envelope, json.dumps(
                {"ok": False, "reason": "unavailable",
                 "error": f"the query process exited (code {code}); ask again"}).encode()])
        qp.inflight.clear()
        # At most one start a second: a process that cannot start must not
        # make this thread a fork loop.
        if time.monotonic() - qp.spawned_at >= 1.0:
            qp.restarts += 1
            qp.spawn()

    def _dispatch(self, sock: zmq.Socket, parts: list, user: bytes | None = None) -> None:
        """Answer one JSON request here, or forward it to a query process
        when its op reads the fleet."""
        frame = parts[-1]
        request = self._slow_request(frame) if self._qprocs else None
        if request is None:
            self._reply(sock, parts, user)
            return
        self._c["queries"] += 1
        try:
            # Answered here when the tables cannot be trusted (a dead
            # worker, a closed engine), as ops.answer would.
            self._reader.check()
            if request.get("op") == "entity" and isinstance(request.get("entity"), str):
                # A name asked for is a name learnt, in the engine's registry.
                ops.entity_arg(self._reader, request)
        except EngineError as exc:
            self._query_failed()
            sock.send_multipart([*parts[:-1], _error_frame(ops.error_reply(exc), request)])
            return
        qp = min(self._qprocs, key=lambda q: len(q.inflight))
        if len(qp.inflight) >= _MAX_SLOW_QUEUED:
            self._query_failed()
            sock.send_multipart([*parts[:-1], _error_frame(
                {"ok": False, "reason": "busy",
                 "error": f"{_MAX_SLOW_QUEUED} fleet-wide queries are in flight; ask again"},
                request)])
            return
        seq = next(self._qp_seq).to_bytes(8, "little")
        qp.inflight[seq] = parts[:-1]
        if self.query_observer is not None:
            self._qp_started[seq] = time.perf_counter()
        qp.sock.send_multipart([seq, qp.names_delta(self.names), *parts])

    @staticmethod
    def _slow_request(frame) -> dict | None:
        """The request, when it is JSON for an op of the query process."""
        if frame[:2] == P.MAGIC:
            return None
        try:
            request = json.loads(frame)
        except (ValueError, RecursionError):
            return None
        if not isinstance(request, dict):
            return None
        op = request.get("op")
        return request if isinstance(op, str) and op in _SLOW_OPS else None

    def _reply(self, sock: zmq.Socket, parts: list, user: bytes | None = None) -> None:
        """Answer one JSON request (its envelope, then the request)."""
        envelope, frame = parts[:-1], parts[-1]
        observer = self.query_observer
        t0 = time.perf_counter() if observer is not None else 0.0
        try:
            reply = self.answer(frame, user)
        except Exception as exc:  # noqa: BLE001 - one query must not stop the rest
            self._c["query_errors"] += 1
            reply = json.dumps({"ok": False, "error": f"internal: {exc!r}"}).encode()
        if observer is not None:
            # Before the send: a client that has its reply sees it counted.
            observer("local", time.perf_counter() - t0)
        sock.send_multipart([*envelope, reply])

    def answer(self, frame: bytes, user: bytes | None = None) -> bytes:
        """The reply to one query frame: a binary lookup (parsed here), or a
        JSON request (:func:`engine.query.ops.answer`).  With CURVE on,
        ``user`` is the sender's key (ZAP User-Id): the admin-only ops
        (:data:`engine.net.security.ADMIN_OPS`) are refused unless it is
        an admin key."""
        self._c["queries"] += 1
        if frame[:2] == P.MAGIC:
            return self._answer_lookup(frame)
        curve = self.config.curve
        forbidden = () if curve is None or curve.is_admin(user) else security.ADMIN_OPS
        return ops.answer(frame, self._reader, control=self._control_ops,
                          on_error=self._query_failed, forbidden=forbidden)

    def _answer_lookup(self, frame) -> bytes:
        # Lookups the C server leaves to Python (larger than it takes, or
        # malformed), and any passed to answer() directly: rows, or a JSON error.
        try:
            kind, count = P.parse_header(frame, self.config.max_message_bytes)
            if kind != P.TYPE_LOOKUP:
                raise P.ProtocolError("bad_type", f"type {kind} is not a query type")
            keys, metrics = P.parse_lookup(frame, count)
            return P.pack_rows(self._reader.get_many(keys, metrics))
        except (P.ProtocolError, EngineError) as exc:
            self._query_failed()
            return json.dumps(ops.error_reply(exc)).encode()

    def _query_failed(self) -> None:
        self._c["query_errors"] += 1

    def series_json(self, row) -> dict:
        """One STATE_DTYPE row (a record, or the tuple ``tolist()`` gives) as
        JSON: names where known, non-finite numbers as null."""
        return self._reader.series_dict(row)

    # The query ops that are not reads: each returns the reply's payload.

    def _op_stats(self, request: dict) -> dict:
        return {"stats": {**self.engine.stats(), "gateway": self.stats()}}

    def _op_rules(self, request: dict) -> dict:
        rules = self.engine.rules
        return {"rules": rules.to_dict(), "describe": rules.describe()}

    def _op_reload(self, request: dict) -> dict:
        rules = request.get("rules")
        hook = self.reload_hook
        if rules is None:
            if hook is None:
                raise ValueError("this gateway has no rules file; send rules inline")
            new = hook()
        else:
            if isinstance(rules, str):
                from ..health.rules import tomllib

                # Parsed here: Rules.load would take a string naming a file
                # for that file's path, and a client must not make the
                # server read its files.
                try:
                    rules = tomllib.loads(rules)
                except tomllib.TOMLDecodeError as exc:
                    raise ValueError(f"rules are not valid TOML: {exc}") from None
            elif not isinstance(rules, dict):
                raise ValueError("rules must be TOML text or an object like "
                                 '{"defaults": {...}, "rule": [...]}')
            new = self.engine.reload_rules(rules) if hook is None else hook(rules)
        return {"rules": new.describe(), "count": len(new.rules)}

    def _op_alerts(self, request: dict) -> dict:
        since = request.get("since", 0)
        limit = request.get("limit", _ALERTS_OP_LIMIT)
        if (not isinstance(limit, int) or isinstance(limit, bool)
                or not 0 <= limit <= _ALERTS_OP_LIMIT):
            raise ValueError(f"limit must be an int in 0..{_ALERTS_OP_LIMIT}, got {limit!r}")
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            raise ValueError(f"since must be an alert number (int >= 0), got {since!r}")
        topics = request.get("topics")
        if topics is not None and (not isinstance(topics, list)
                                   or not all(isinstance(t, str) for t in topics)):
            raise ValueError("topics must be a list of topic names, e.g. [\"CRIT\", \"ENGINE\"]")
        got = self.engine.alerts_since(since, limit, topics)
        return {**got, "alerts": [a.to_dict() for a in got["alerts"]]}


def _error_frame(reply: dict, request: dict) -> bytes:
    if request.get("id") is not None:
        reply = {**reply, "id": request["id"]}
    try:
        return json.dumps(reply, allow_nan=False).encode()
    except (ValueError, TypeError):
        return json.dumps({"ok": False, "error": "id must be a finite JSON value"}).encode()


class _QueryProcess:
    """One query process (engine.query.process) and the query thread's
    socket to it: what is in flight there, and how many names it has."""

    def __init__(self, gateway: Gateway, ctx: zmq.Context) -> None:
        eng = gateway.engine
        self._dir = tempfile.mkdtemp(prefix="ringflow-query-")
        self.url = f"ipc://{self._dir}/q"
        self._spec = json.dumps({
            "url": self.url, "tables": [seg.name for seg in eng._table_segments],
            "window_ns": gateway._reader.window_ns, "views": list(gateway._reader.views),
            "recovered": gateway._reader.recovered, "parent": os.getpid()})
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        # Connected, not bound: requests queue until the process binds.
        self.sock.connect(self.url)
        #: seq -> the request's envelope, until its reply is sent on.
        self.inflight: dict[bytes, list] = {}
        self.restarts = 0
        self.proc: subprocess.Popen | None = None
        self.spawn()

    def spawn(self) -> None:
        # A fresh interpreter, as the workers: never a fork of this
        # threaded process, never a re-run of the embedding program.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.query.process", self._spec],
            stdin=subprocess.DEVNULL, close_fds=True)
        self.spawned_at = time.monotonic()
        # It starts with no names: all of them go with its first request.
        self.sent = dict.fromkeys(_NAME_KINDS, 0)
        # The rows its scans left out, as it last reported them.
        self.unavailable = 0

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def names_delta(self, names) -> bytes:
        """The names learnt since the last request to this process, pickled
        (b"" for none).  Names are only ever added, so the newest are the
        last ones of each table."""
        delta = {}
        for kind in _NAME_KINDS:
            table = names[kind]
            while True:
                have = len(table)
                new = have - self.sent[kind]
                items = list(itertools.islice(reversed(table.items()), new)) if new > 0 else []
                if len(table) == have:
                    break
            if items:
                delta[kind] = items
                self.sent[kind] = have
        return pickle.dumps(delta) if delta else b""

    def stop(self) -> None:
        """Stop the process and close the socket (after the query thread)."""
        self.sock.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(_QP_STOP_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.unlink(os.path.join(self._dir, "q"))
        except OSError:
            pass
        try:
            os.rmdir(self._dir)
        except OSError:
            pass


_NAME_KINDS = ("entities", "metrics")


# Ops answered by the gateway itself (engine.query.ops has the reads).
_CONTROL_OPS = ("stats", "rules", "reload", "alerts")
#: Every JSON op of the query endpoint; PROTOCOL.md documents each.
_QUERY_OPS = (*ops.OPS, *_CONTROL_OPS)
