"""Python clients of the ZeroMQ gateway (wire protocol v1, PROTOCOL.md).

:class:`Client` is blocking, :class:`AsyncClient` runs on asyncio
(``zmq.asyncio``); both speak the same frames through the same code: every
public method is written once as a *plan*, a generator that yields the
frames to send and receives the replies, and each class only moves bytes.

Sockets are created on first use (a client that only queries never opens an
ingest socket):

* ``ingest``: PUSH to the gateway's PULL endpoint, for fire-and-forget sends;
* ``acked``: DEALER to the acked ROUTER endpoint, one message in flight;
* ``query``: DEALER to the query ROUTER endpoint, one request in flight;
* ``alerts``: a SUB socket per :meth:`Client.alerts` subscription, to the
  gateway's PUB endpoint.

A request that times out raises :class:`engine.errors.GatewayTimeout` and
closes its DEALER (a new one is made for the next request), so a reply that
arrives late is never taken for the answer to a later request.  JSON
requests also carry an ``id`` that the gateway echoes and the client checks.

Each client owns its ZeroMQ context.  A client must not cross ``fork()``:
using one in a child process raises :class:`engine.errors.EngineError`
(create a new client in the child).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
import time
from collections.abc import Generator, Iterable

import numpy as np
import zmq
import zmq.asyncio

from ..core.records import EVENT_DTYPE, STATE_DTYPE, as_events, as_ids, entity_id, metric_id
from ..errors import (
    ConfigError,
    EngineError,
    GatewayTimeout,
    QueryError,
    Rejected,
)
from . import protocol as P

__all__ = ["Client", "AsyncClient", "AlertSubscription", "AsyncAlertSubscription"]

#: Socket type of each request endpoint (alerts get a SUB per subscription).
_SOCKET_TYPES = {"ingest": zmq.PUSH, "acked": zmq.DEALER, "query": zmq.DEALER}

#: Topics of the alert endpoint: the new status of an alert, and DROPPED.
ALERT_STATUSES = ("OK", "WARN", "STALE", "CRIT")
DROPPED = "DROPPED"

# What a step expects back.
_NO_REPLY, _RAW, _JSON = 0, 1, 2


class _Step:
    """One frame to send on one socket, and what to wait for."""

    __slots__ = ("role", "frame", "expect", "request_id")

    def __init__(self, role: str, frame: bytes, expect: int = _NO_REPLY,
                 request_id: int | None = None) -> None:
        self.role = role
        self.frame = frame
        self.expect = expect
        self.request_id = request_id


_Plan = Generator[_Step, object, object]


def _endpoints(host: str, ports: dict | None, endpoints: dict | None) -> dict:
    for what, given in (("ports", ports), ("endpoints", endpoints)):
        unknown = set(given or {}) - set(P.DEFAULT_PORTS)
        if unknown:
            raise ConfigError(f"unknown {what} key(s) {sorted(unknown)}; "
                              f"expected some of {sorted(P.DEFAULT_PORTS)}")
    if "://" not in host:
        host = f"tcp://{host}"
    merged = {**P.DEFAULT_PORTS, **(ports or {})}
    urls = {name: f"{host}:{int(port)}" for name, port in merged.items()}
    urls.update(endpoints or {})
    return urls


def _decode_json(reply: bytes, endpoint: str) -> dict:
    try:
        out = json.loads(reply)
    except ValueError:
        raise EngineError(f"{endpoint}: reply is not JSON: {bytes(reply[:80])!r}") from None
    if not isinstance(out, dict):
        raise EngineError(f"{endpoint}: reply is not a JSON object: {out!r}")
    return out


def _event_array(events) -> np.ndarray:
    if isinstance(events, np.ndarray) and events.dtype == EVENT_DTYPE and events.ndim == 1:
        events = np.ascontiguousarray(events)
    return as_events(events)


def _plain(value):
    """``json.dumps`` default: NumPy scalars and arrays as Python values."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _pack_json(records: list[dict]) -> bytes:
    try:
        return P.pack_json(records)
    except TypeError:
        # NumPy scalars (e.g. a value taken from an array): convert, retry.
        plain = [json.loads(json.dumps(r, default=_plain)) for r in records]
        return P.pack_json(plain)


def _names(values, what: str) -> list[str]:
    if isinstance(values, str):
        values = [values]
    values = list(values)
    if not all(isinstance(v, str) for v in values):
        raise TypeError(f"{what} must be names (str)")
    return values


def _alert_topics(statuses) -> list[bytes]:
    """SUB subscriptions for a status filter: every topic for ``None``,
    else the statuses and ``DROPPED`` (missed alerts concern every filter)."""
    if statuses is None:
        return [b""]
    if isinstance(statuses, str):
        statuses = statuses.split(",")
    wanted = []
    for status in statuses:
        name = status.strip().upper() if isinstance(status, str) else None
        if name not in ALERT_STATUSES:
            raise ValueError(f"unknown status {status!r}; statuses: {', '.join(ALERT_STATUSES)}")
        wanted.append(name.encode())
    if not wanted:
        raise ValueError("statuses must name at least one status, or be None for all")
    return [*dict.fromkeys(wanted), DROPPED.encode()]


def _alert_message(parts: list, endpoint: str) -> dict:
    """One PUB message (topic, JSON) as a dict with the topic as ``topic``."""
    if len(parts) != 2:
        raise EngineError(f"{endpoint}: an alert message has 2 frames, got {len(parts)}")
    topic, body = parts
    try:
        data = json.loads(body)
        name = bytes(topic).decode()
    except (ValueError, UnicodeDecodeError):
        raise EngineError(f"{endpoint}: undecodable alert message "
                          f"{bytes(topic)[:20]!r} {bytes(body)[:80]!r}") from None
    if not isinstance(data, dict):
        raise EngineError(f"{endpoint}: alert body is not a JSON object: {data!r}")
    return {"topic": name, **data}


class _SubscriptionBase:
    """A SUB socket on the gateway's alert endpoint; see :class:`AlertSubscription`."""

    # Alerts come in bursts (a rack going silent turns every series of it
    # STALE at once); the gateway's PUB drops past its own high-water mark.
    _RCVHWM = 100_000

    def __init__(self, client: _ClientBase, statuses, timeout: float | None) -> None:
        client._check()
        if timeout is not None and not timeout > 0:
            raise ConfigError(f"timeout must be positive seconds or None, got {timeout!r}")
        self.timeout = None if timeout is None else float(timeout)
        self.topics = _alert_topics(statuses)
        self.endpoint = client.endpoints["alerts"]
        self.received = 0
        self._client = client
        self._connected = False
        sock = client._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, self._RCVHWM)
        for topic in self.topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        # Before connect(), so that the handshake cannot be missed.
        self._monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        sock.connect(self.endpoint)
        self._sock = sock
        client._subscribed(self)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run (or the client was closed)."""
        return self._sock is None

    def _handshake_seen(self) -> None:
        self._connected = True
        self._stop_monitor()

    def _stop_monitor(self) -> None:
        if self._monitor is not None:
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None

    def _close_socket(self) -> None:
        if self._sock is None:
            return
        self._stop_monitor()
        self._sock.close(linger=0)
        self._sock = None

    def close(self) -> None:
        """Unsubscribe and close the socket.  Safe to call twice."""
        if self._sock is not None and os.getpid() == self._client._pid:
            self._close_socket()
        self._sock = None
        self._client._unsubscribed(self)

    def _decode(self, parts: list) -> dict:
        self.received += 1
        return _alert_message(parts, self.endpoint)

    def __repr__(self) -> str:
        topics = ",".join(t.decode() for t in self.topics if t) or "all"
        state = "closed" if self.closed else "open"
        return f"<{type(self).__name__} {self.endpoint} topics={topics} {state}>"


class AlertSubscription(_SubscriptionBase):
    """Alerts from a gateway's PUB endpoint, as dicts; made by :meth:`Client.alerts`.

    Iterating yields one dict per message: the JSON the gateway published
    plus ``topic``, the first frame.  For an alert ``topic`` is the new
    status (``"OK"``, ``"WARN"``, ``"STALE"``, ``"CRIT"``) and the fields
    are ``entity``, ``metric``, ``entity_id``, ``metric_id``, ``old``,
    ``new``, ``stat``, ``value``, ``ts``, ``worker`` (PROTOCOL.md).  When
    the engine's workers dropped alerts (full alert rings) the gateway
    publishes ``{"topic": "DROPPED", "dropped": n, "total": t}``.

    The SUB socket connects when the subscription is made; like any ZeroMQ
    subscriber it sees only what is published once it is connected (see
    :meth:`wait_connected`).  Iteration blocks until the next message; with
    a ``timeout`` it ends when none came for that long (iterate again to go
    on).  It ends for good once :meth:`close` ran.

    Attributes
    ----------
    topics : list of bytes
        The SUB subscriptions (``[b""]``: everything).
    timeout : float or None
        Seconds of silence that end an iteration.
    received : int
        Messages received so far.
    """

    def __iter__(self) -> AlertSubscription:
        return self

    def __next__(self) -> dict:
        if self._sock is None:
            raise StopIteration
        self._client._check()
        ms = None if self.timeout is None else max(1, int(self.timeout * 1000))
        if not self._sock.poll(ms, zmq.POLLIN):
            raise StopIteration
        return self._decode(self._sock.recv_multipart())

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until the SUB socket has connected to the gateway.

        Alerts published before that are not delivered.  Once it returns
        True the subscriptions are on their way (ZeroMQ sends them right
        after the handshake); the gateway takes them with its next publish.

        Parameters
        ----------
        timeout : float or None
            Seconds to wait; ``None`` waits forever.

        Returns
        -------
        bool
            Whether the connection is up (False: none within ``timeout``).
        """
        if self._connected or self._sock is None:
            return self._connected
        ms = None if timeout is None else max(0, int(timeout * 1000))
        # The monitor listens for the handshake only: any event is it.
        if self._monitor.poll(ms, zmq.POLLIN):
            self._monitor.recv_multipart()
            self._handshake_seen()
        return self._connected

    def __enter__(self) -> AlertSubscription:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncAlertSubscription(_SubscriptionBase):
    """The asyncio form of :class:`AlertSubscription`, made by
    :meth:`AsyncClient.alerts`: ``async for alert in subscription``; the
    iteration ends after ``timeout`` seconds without a message."""

    def __aiter__(self) -> AsyncAlertSubscription:
        return self

    async def __anext__(self) -> dict:
        if self._sock is None:
            raise StopAsyncIteration
        self._client._check()
        try:
            parts = await asyncio.wait_for(self._sock.recv_multipart(), self.timeout)
        except asyncio.TimeoutError:
            raise StopAsyncIteration from None
        return self._decode(parts)

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until the SUB socket has connected; see
        :meth:`AlertSubscription.wait_connected`.

        Parameters
        ----------
        timeout : float or None
            Seconds to wait; ``None`` waits forever.

        Returns
        -------
        bool
        """
        if self._connected or self._sock is None:
            return self._connected
        try:
            await asyncio.wait_for(self._monitor.recv_multipart(), timeout)
        except asyncio.TimeoutError:
            return False
        self._handshake_seen()
        return True

    async def __aenter__(self) -> AsyncAlertSubscription:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()


class _ClientBase:
    """State and plans shared by :class:`Client` and :class:`AsyncClient`."""

    _context_class = zmq.Context

    def __init__(self, host: str = P.DEFAULT_HOST, *, ports: dict | None = None,
                 endpoints: dict | None = None, timeout: float | None = 10.0,
                 hwm: int = 1000, linger: float = 5.0,
                 max_frame_records: int = 65536) -> None:
        if timeout is not None and not timeout > 0:
            raise ConfigError(f"timeout must be positive seconds or None, got {timeout!r}")
        if not isinstance(hwm, int) or hwm < 0:
            raise ConfigError(f"hwm must be a non-negative integer, got {hwm!r}")
        if not linger >= 0:
            raise ConfigError(f"linger must be non-negative seconds, got {linger!r}")
        if not isinstance(max_frame_records, int) or max_frame_records < 1:
            raise ConfigError(f"max_frame_records must be a positive integer, "
                              f"got {max_frame_records!r}")
        self.endpoints = _endpoints(host, ports, endpoints)
        self.timeout = None if timeout is None else float(timeout)
        self.hwm = hwm
        self.linger = float(linger)
        self.max_frame_records = max_frame_records
        self._pid = os.getpid()
        self._closed = False
        self._ids = itertools.count(1)
        self._sockets: dict[str, zmq.Socket] = {}
        self._subscriptions: set[_SubscriptionBase] = set()
        self._subscriptions_lock = threading.Lock()
        self._ctx = self._context_class()

    # --- plumbing ---------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def _check(self) -> None:
        if os.getpid() != self._pid:
            raise EngineError(
                f"this {type(self).__name__} was created in process {self._pid} and cannot be "
                f"used in the forked process {os.getpid()}; create a new client in the child"
            )
        if self._closed:
            raise EngineError(f"this {type(self).__name__} is closed")

    def _socket(self, role: str) -> zmq.Socket:
        sock = self._sockets.get(role)
        if sock is None:
            sock = self._ctx.socket(_SOCKET_TYPES[role])
            # Bounded even if the context is destroyed without close():
            # queued fire-and-forget sends get `linger`, requests nothing.
            sock.setsockopt(zmq.LINGER, self._linger_ms(role))
            sock.setsockopt(zmq.SNDHWM, self.hwm)
            sock.setsockopt(zmq.RCVHWM, self.hwm)
            self._configure(sock)
            sock.connect(self.endpoints[role])
            self._sockets[role] = sock
        return sock

    def _configure(self, sock: zmq.Socket) -> None:
        """Extra socket options of one client class."""

    def _linger_ms(self, role: str) -> int:
        return int(self.linger * 1000) if role == "ingest" else 0

    def _subscribed(self, sub: _SubscriptionBase) -> None:
        with self._subscriptions_lock:
            self._subscriptions.add(sub)

    def _unsubscribed(self, sub: _SubscriptionBase) -> None:
        with self._subscriptions_lock:
            self._subscriptions.discard(sub)

    def _drop(self, role: str) -> None:
        """Close a socket whose state is unknown (a request that got no reply)."""
        sock = self._sockets.pop(role, None)
        if sock is not None:
            sock.close(linger=0)

    def _close_sockets(self) -> bool:
        """Mark closed and close every socket; False when there is nothing
        left to do (already closed, or a forked child that must not touch the
        parent's ZeroMQ state)."""
        if self._closed:
            return False
        self._closed = True
        if os.getpid() != self._pid:
            self._sockets.clear()
            return False
        for role, sock in self._sockets.items():
            sock.close(linger=self._linger_ms(role))
        self._sockets.clear()
        # Terminating the context waits for every socket, subscriptions too.
        with self._subscriptions_lock:
            subs, self._subscriptions = list(self._subscriptions), set()
        for sub in subs:
            sub._close_socket()
        return True

    def _timeout_error(self, role: str, sending: bool) -> GatewayTimeout:
        endpoint = self.endpoints[role]
        if sending:
            return GatewayTimeout(
                f"{endpoint}: could not queue a message for {self.timeout:g}s "
                f"(send high-water mark {self.hwm} reached; is the gateway running?)"
            )
        return GatewayTimeout(f"{endpoint}: no reply within {self.timeout:g}s")

    def _interpret(self, step: _Step, reply: bytes):
        """What a step's plan receives: bytes (raw) or a decoded JSON reply;
        None when the JSON reply is not the answer to this request."""
        if step.expect == _RAW:
            return reply
        decoded = _decode_json(reply, self.endpoints[step.role])
        if step.request_id is not None and decoded.get("id", step.request_id) != step.request_id:
            return None
        return decoded

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self.endpoints['query']} {state}>"

    # --- plans: one per public method ----------------------------------------

    def _plan_send(self, events: np.ndarray, ack: bool) -> _Plan:
        ev = _event_array(events)
        accepted = 0
        for start in range(0, len(ev), self.max_frame_records):
            chunk = ev[start:start + self.max_frame_records]
            frame = P.pack_events(chunk)
            if ack:
                reply = yield _Step("acked", frame, _JSON)
                accepted = self._acked(reply, accepted, start, len(chunk))
            else:
                yield _Step("ingest", frame)
        return accepted if ack else None

    def _plan_send_json(self, records: Iterable[dict], ack: bool) -> _Plan:
        if isinstance(records, dict):
            records = [records]
        records = list(records)
        if not all(isinstance(r, dict) for r in records):
            raise TypeError("records must be dicts with entity, metric, value and optionally ts")
        accepted = 0
        for start in range(0, len(records), self.max_frame_records):
            chunk = records[start:start + self.max_frame_records]
            frame = _pack_json(chunk)
            if ack:
                reply = yield _Step("acked", frame, _JSON)
                accepted = self._acked(reply, accepted, start, len(chunk))
            else:
                yield _Step("ingest", frame)
        return accepted if ack else None

    def _acked(self, reply: dict, accepted: int, start: int, size: int) -> int:
        if reply.get("ok"):
            return accepted + int(reply.get("accepted", 0))
        reason = reply.get("reason")
        taken = int(reply.get("accepted", 0))
        handled = start + int(reply.get("handled", 0))
        raise Rejected(
            f"{self.endpoints['acked']}: message of {size} records (from record {start}) "
            f"rejected ({reason}): {reply.get('error', '')}",
            reason=reason, accepted=accepted + taken, reply=reply, handled=handled,
        )

    def _plan_query(self, request: dict) -> _Plan:
        if not isinstance(request, dict):
            raise TypeError(f"a query is a dict, got {type(request).__name__}")
        request_id = next(self._ids)
        frame = json.dumps({**request, "id": request_id}, allow_nan=False,
                           default=_plain).encode()
        reply = yield _Step("query", frame, _JSON, request_id)
        if not reply.get("ok"):
            raise QueryError(str(reply.get("error", "query failed")), reply)
        reply.pop("id", None)
        return reply

    def _plan_get(self, entity, metric) -> _Plan:
        reply = yield from self._plan_query({"op": "get", "entity": entity, "metric": metric})
        return reply["series"]

    def _plan_entity(self, entity, summary: bool) -> _Plan:
        reply = yield from self._plan_query({"op": "entity", "entity": entity})
        if summary:
            return {k: v for k, v in reply.items() if k not in ("ok", "op")}
        return reply["series"]

    def _plan_status(self, min_status: str, limit: int) -> _Plan:
        reply = yield from self._plan_query(
            {"op": "status", "min_status": min_status, "limit": limit})
        return {k: v for k, v in reply.items() if k not in ("ok", "op")}

    def _plan_rules(self) -> _Plan:
        reply = yield from self._plan_query({"op": "rules"})
        return {k: v for k, v in reply.items() if k not in ("ok", "op")}

    def _plan_reload(self, rules) -> _Plan:
        request = {"op": "reload"}
        if isinstance(rules, os.PathLike):
            # Read here: the gateway may run on another machine, and it
            # never opens a file a client names.
            with open(rules, encoding="utf-8") as f:
                request["rules"] = f.read()
        elif isinstance(rules, (str, dict)):
            request["rules"] = rules
        elif rules is not None:
            raise TypeError("rules must be None, TOML text, a dict or a path (os.PathLike), "
                            f"got {type(rules).__name__}")
        reply = yield from self._plan_query(request)
        return {k: v for k, v in reply.items() if k not in ("ok", "op")}

    def _plan_top(self, field: str, k: int, order: str) -> _Plan:
        reply = yield from self._plan_query({"op": "top", "field": field, "k": k, "order": order})
        return reply["series"]

    def _plan_stats(self) -> _Plan:
        reply = yield from self._plan_query({"op": "stats"})
        return reply["stats"]

    def _plan_ping(self) -> _Plan:
        start = time.perf_counter()
        yield from self._plan_query({"op": "ping"})
        return time.perf_counter() - start

    def _plan_register_names(self, entities, metrics) -> _Plan:
        request = {"op": "names", "entities": _names(entities, "entities"),
                   "metrics": _names(metrics, "metrics")}
        reply = yield from self._plan_query(request)
        return int(reply["registered"])

    def _plan_lookup(self, keys, metrics) -> _Plan:
        k = np.ascontiguousarray(as_ids(keys, entity_id, np.uint64, "keys"))
        m = np.ascontiguousarray(as_ids(metrics, metric_id, np.uint32, "metrics"))
        if m.size == 1 and k.size != 1:
            m = np.full(k.size, m[0], np.uint32)
        if m.size != k.size:
            raise ValueError(f"{k.size} keys but {m.size} metrics")
        parts = []
        for start in range(0, k.size, self.max_frame_records):
            stop = start + self.max_frame_records
            reply = yield _Step("query", P.pack_lookup(k[start:stop], m[start:stop]), _RAW)
            if bytes(reply[:2]) != P.MAGIC:
                error = _decode_json(reply, self.endpoints["query"])
                raise QueryError(str(error.get("error", "lookup failed")), error)
            rows = P.parse_rows(reply)
            if len(rows) != min(stop, k.size) - start:
                raise EngineError(f"lookup of {min(stop, k.size) - start} series "
                                  f"answered with {len(rows)} rows")
            parts.append(rows)
        return np.concatenate(parts) if parts else np.empty(0, STATE_DTYPE)


class Client(_ClientBase):
    """Blocking client of a ringflow gateway.

    Parameters
    ----------
    host : str
        ``tcp://`` URL of the gateway's host, without port (a bare host name
        gets ``tcp://`` prepended).
    ports : dict, optional
        Ports overriding :data:`engine.net.protocol.DEFAULT_PORTS` (keys
        ``ingest``, ``acked``, ``query``, ``alerts``).
    endpoints : dict, optional
        Whole URLs overriding ``host`` and ``ports`` per endpoint, e.g.
        ``{"query": "ipc:///run/ringflow/query"}``.
    timeout : float or None
        Seconds to wait for a reply, or for room to queue a message; ``None``
        waits forever.  Past it :class:`engine.errors.GatewayTimeout` is raised.
    hwm : int
        ZeroMQ send and receive high-water marks, in messages.
    linger : float
        Seconds :meth:`close` gives fire-and-forget messages still queued to
        be delivered before they are dropped.
    max_frame_records : int
        Larger sends and lookups are split into frames of at most this many
        records (keep ``32 * max_frame_records + 8`` under the gateway's
        ``max_message_bytes``).

    Attributes
    ----------
    endpoints : dict
        The URLs used, by endpoint name.

    Notes
    -----
    Methods may be called from several threads: each socket is used by one
    thread at a time, and requests on one socket are serialised (one in
    flight).  A client must not be used after ``fork()``; make a new one in
    the child.

    Examples
    --------
    >>> from engine.net.client import Client
    >>> import engine
    >>> with Client() as c:                                    # doctest: +SKIP
    ...     c.send(engine.make_events(["web-01"], "cpu", None, [0.93]), ack=True)
    ...     c.get("web-01", "cpu")["last"]
    1
    0.93
    """

    _context_class = zmq.Context

    def __init__(self, host: str = P.DEFAULT_HOST, *, ports: dict | None = None,
                 endpoints: dict | None = None, timeout: float | None = 10.0,
                 hwm: int = 1000, linger: float = 5.0, max_frame_records: int = 65536) -> None:
        super().__init__(host, ports=ports, endpoints=endpoints, timeout=timeout, hwm=hwm,
                         linger=linger, max_frame_records=max_frame_records)
        self._locks = {role: threading.Lock() for role in _SOCKET_TYPES}

    def _configure(self, sock: zmq.Socket) -> None:
        sock.setsockopt(zmq.SNDTIMEO, -1 if self.timeout is None else int(self.timeout * 1000))

    def _exchange(self, step: _Step):
        with self._locks[step.role]:
            self._check()
            sock = self._socket(step.role)
            try:
                try:
                    sock.send(step.frame, copy=False)
                except zmq.Again:
                    raise self._timeout_error(step.role, sending=True) from None
                if step.expect == _NO_REPLY:
                    return None
                deadline = None if self.timeout is None else time.monotonic() + self.timeout
                while True:
                    if deadline is None:
                        ready = sock.poll(None, zmq.POLLIN)
                    else:
                        left = deadline - time.monotonic()
                        ready = left > 0 and sock.poll(max(1, int(left * 1000)), zmq.POLLIN)
                    if not ready:
                        raise self._timeout_error(step.role, sending=False)
                    answer = self._interpret(step, sock.recv())
                    if answer is not None:
                        return answer
            except BaseException:
                # Timeout, interrupt or a broken reply: the socket may still
                # get an answer to this request; never read it for another.
                if step.expect != _NO_REPLY:
                    self._drop(step.role)
                raise

    def _run(self, plan: _Plan):
        self._check()
        try:
            step = next(plan)
            while True:
                step = plan.send(self._exchange(step))
        except StopIteration as stop:
            return stop.value

    # --- ingest ---------------------------------------------------------------

    def send(self, events: np.ndarray, ack: bool = False) -> int | None:
        """Send events as binary frames (type 1).

        Parameters
        ----------
        events : numpy.ndarray
            1-d array of :data:`engine.EVENT_DTYPE` (see
            :func:`engine.make_events`); split into frames of at most
            ``max_frame_records`` records.
        ack : bool
            False: push to the fire-and-forget endpoint and return as soon as
            the frames are queued.  True: send each frame to the acked
            endpoint and wait for its reply before sending the next.

        Returns
        -------
        int or None
            With ``ack``, records accepted (invalid records -- NaN value,
            time out of range -- are counted by the gateway, not accepted);
            ``None`` without.

        Raises
        ------
        engine.errors.Rejected
            A frame was rejected (``reason``: one of
            :data:`engine.net.protocol.REASONS`); frames before it were accepted,
            none after it was sent.
        engine.errors.GatewayTimeout
            No reply within ``timeout``, or no room to queue a frame.
        engine.errors.InvalidEvents
            ``events`` is not an EVENT_DTYPE array.
        """
        return self._run(self._plan_send(events, ack))

    def send_json(self, records: list[dict], ack: bool = False) -> int | None:
        """Send records as JSON lines (type 2).

        Names travel as names, so the gateway learns them and shows them in
        query replies.

        Parameters
        ----------
        records : list of dict
            Each with ``entity`` (name or u64 id), ``metric`` (name or u32
            id), ``value`` (number) and optionally ``ts`` (integer ns; the
            gateway's clock when absent).  NumPy scalars are converted.
        ack : bool
            As for :meth:`send`.

        Returns
        -------
        int or None
            With ``ack``, records accepted; ``None`` without.

        Raises
        ------
        engine.errors.Rejected
            E.g. ``bad_field`` for an unknown or mistyped field.
        engine.errors.GatewayTimeout
            No reply within ``timeout``, or no room to queue a frame.
        """
        return self._run(self._plan_send_json(records, ack))

    # --- queries ----------------------------------------------------------------

    def get(self, entity: str | int, metric: str | int) -> dict | None:
        """State of one series (op ``get``).

        Parameters
        ----------
        entity : str or int
            Entity name or u64 id.
        metric : str or int
            Metric name or u32 id.

        Returns
        -------
        dict or None
            The series: ``entity``, ``entity_id``, ``metric``, ``metric_id``,
            ``count``, ``sum``, ``min``, ``max``, ``mean``, ``var``, ``ewma``,
            ``last``, ``last_ts``, ``first_ts``, ``stale``, ``late``,
            ``status``, ``since``, ``pending``, ``pending_since``,
            ``window`` and ``prev_window`` (``count``, ``sum``, ``min``,
            ``max``, ``mean``, ``start``, ``end``), ``quantiles`` (``p50``,
            ``p95``, ``p99`` of the current window) and ``views`` (e.g.
            ``view1``, ``view5``, ``view15``); see docs/health.md.  Names are
            ``None`` when the gateway does not know them, non-finite numbers
            and figures without a value yet are ``None``.  ``None`` for a
            series never seen.

        Raises
        ------
        engine.errors.QueryError
            The gateway refused the request.
        engine.errors.GatewayTimeout
            No reply within ``timeout``.
        """
        return self._run(self._plan_get(entity, metric))

    def entity(self, entity: str | int, *, summary: bool = False) -> list[dict] | dict:
        """Every series of one entity (op ``entity``).

        Parameters
        ----------
        entity : str or int
            Entity name or u64 id.
        summary : bool
            Also return the entity's status.

        Returns
        -------
        list of dict or dict
            Without ``summary``: the series as returned by :meth:`get`, worst
            status first (``[]`` for an entity never seen).  With it:
            ``entity``, ``entity_id``, ``status`` (the worst of its series),
            ``since`` (event time, ns, of the earliest change to that status
            among those series, or ``None``) and ``series``.
        """
        return self._run(self._plan_entity(entity, summary))

    def status(self, min_status: str = "WARN", limit: int = 100) -> dict:
        """Entities with a series at ``min_status`` or worse (op ``status``).

        Parameters
        ----------
        min_status : {"WARN", "OK", "STALE", "CRIT"}
            Severity order is OK < WARN < STALE < CRIT; ``"OK"`` lists every
            entity.
        limit : int
            Entities to list, 1..100000.

        Returns
        -------
        dict
            ``total``: entities at ``min_status`` or worse; ``entities``: at
            most ``limit`` of them, worst first (ties: the longest-standing
            first), each with ``entity``, ``entity_id``, ``status``,
            ``since`` and ``series`` (its series at ``min_status`` or worse,
            as returned by :meth:`get`).

        Raises
        ------
        engine.errors.QueryError
            A bad ``min_status`` or ``limit``.
        """
        return self._run(self._plan_status(min_status, limit))

    def rules(self) -> dict:
        """The health rules in force (op ``rules``).

        Returns
        -------
        dict
            ``rules``: ``{"defaults": {...}, "rule": [...]}``, the shape a
            rules file has (durations as strings); ``describe``: the same
            as text, one line per rule.
        """
        return self._run(self._plan_rules())

    def reload(self, rules=None) -> dict:
        """Replace the server's health rules (op ``reload``), keeping all state.

        Parameters
        ----------
        rules : None, str, dict or os.PathLike
            ``None``: the server re-reads its own rules file (``ringflow
            serve --rules FILE``).  A str is TOML text, a dict has the
            shape of a rules file, a path (``pathlib.Path``) names a local
            file that is read here and sent as text.

        Returns
        -------
        dict
            ``rules``: the new rules described, one line per rule;
            ``count``: how many.

        Raises
        ------
        engine.errors.QueryError
            Invalid rules (the old ones stay in force), or no rules file on
            the server for ``rules=None``.
        OSError
            A local file that cannot be read.
        """
        return self._run(self._plan_reload(rules))

    def alerts(self, statuses=None, timeout: float | None = None) -> AlertSubscription:
        """Follow the alerts the gateway publishes (its PUB endpoint).

        Parameters
        ----------
        statuses : iterable of str, str or None
            Only alerts to these new statuses, e.g. ``["CRIT", "WARN"]`` or
            ``"CRIT,WARN"`` (filtered by ZeroMQ, on the topic frame);
            ``None``: all.  ``DROPPED`` messages come either way.
        timeout : float or None
            End an iteration after this many seconds without a message;
            ``None`` waits forever.

        Returns
        -------
        AlertSubscription
            An iterator of dicts, already connecting; close it (or use it as
            a context manager) to unsubscribe.  :meth:`close` closes it too.

        Raises
        ------
        ValueError
            An unknown status.

        Examples
        --------
        >>> with Client() as c, c.alerts(["CRIT"], timeout=60) as feed:  # doctest: +SKIP
        ...     for alert in feed:
        ...         print(alert["entity"], alert["metric"], alert["old"], "->", alert["new"])
        web-17 disk OK -> CRIT
        """
        return AlertSubscription(self, statuses, timeout)

    def top(self, field: str = "last", k: int = 10, order: str = "desc") -> list[dict]:
        """The ``k`` series with the highest (or lowest) ``field`` (op ``top``).

        Parameters
        ----------
        field : str
            A series field: ``count``, ``sum``, ``min``, ``max``, ``mean``,
            ``var``, ``ewma``, ``last``, ``last_ts``, ``first_ts``, ``stale``.
        k : int
            Series to return, 1..100000.
        order : {"desc", "asc"}
            Highest first, or lowest first.  NaN sorts last either way.

        Returns
        -------
        list of dict
            Series as returned by :meth:`get`.
        """
        return self._run(self._plan_top(field, k, order))

    def stats(self) -> dict:
        """Counters of the engine and the gateway (op ``stats``).

        Returns
        -------
        dict
            :meth:`engine.Engine.stats` plus ``gateway``: messages, records
            accepted and invalid, rejected messages by reason, queries.
        """
        return self._run(self._plan_stats())

    def ping(self) -> float:
        """Round trip of one query (op ``ping``).

        Returns
        -------
        float
            Seconds from sending the request to decoding the reply.
        """
        return self._run(self._plan_ping())

    def register_names(self, entities: Iterable[str] = (), metrics: Iterable[str] = ()) -> int:
        """Tell the gateway names so that replies show them (op ``names``).

        Parameters
        ----------
        entities : iterable of str
            Entity names (hashed with :func:`engine.entity_id`).
        metrics : iterable of str
            Metric names (hashed with :func:`engine.metric_id`).

        Returns
        -------
        int
            The gateway's ``registered`` count: names now known under their
            id, counting names it already knew (a name whose id already
            belongs to another name does not count).
        """
        return self._run(self._plan_register_names(entities, metrics))

    def lookup(self, keys, metrics) -> np.ndarray:
        """Binary lookup of many series (type 3 request, type 4 reply).

        Parameters
        ----------
        keys : array_like of int or str
            Entity ids, or names (hashed with :func:`engine.entity_id`); a
            list may mix both.
        metrics : array_like of int or str
            Metric ids or names, one per key or one for all.

        Returns
        -------
        numpy.ndarray
            :data:`engine.STATE_DTYPE` rows in the order asked; a series never
            seen reads as zeros but for ``key`` and ``metric`` (``count == 0``).

        Raises
        ------
        engine.errors.QueryError
            The gateway refused the frame (its reply is then JSON).
        """
        return self._run(self._plan_lookup(keys, metrics))

    def query(self, request: dict) -> dict:
        """Send one raw JSON query and return the gateway's reply.

        Parameters
        ----------
        request : dict
            ``{"op": ..., ...}``; see PROTOCOL.md.  Its ``id``, if any, is
            replaced by the client's own request id.

        Returns
        -------
        dict
            The reply, with ``ok`` and ``op`` and without ``id``.

        Raises
        ------
        engine.errors.QueryError
            The reply had ``ok: false``; the message is its ``error``.
        engine.errors.GatewayTimeout
            No reply within ``timeout``.
        """
        return self._run(self._plan_query(request))

    # --- life cycle -------------------------------------------------------------

    def close(self) -> None:
        """Close the sockets, alert subscriptions included, and the context.

        Fire-and-forget messages still queued get ``linger`` seconds to be
        delivered; requests in flight are abandoned.  Do not close a client
        while another thread iterates one of its subscriptions.  Safe to
        call twice.
        """
        if self._close_sockets():
            self._ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient(_ClientBase):
    """asyncio client of a ringflow gateway (on ``zmq.asyncio``).

    Same parameters, methods and errors as :class:`Client`; every method is a
    coroutine, and concurrent requests of one client are serialised (one in
    flight per socket).  A request cancelled while it waits for its reply
    closes its socket, like a timeout.

    Parameters
    ----------
    host : str
        ``tcp://`` URL of the gateway's host, without port.
    ports : dict, optional
        Ports overriding :data:`engine.net.protocol.DEFAULT_PORTS`.
    endpoints : dict, optional
        Whole URLs overriding ``host`` and ``ports`` per endpoint.
    timeout : float or None
        Seconds to wait for a reply or for room to queue a message.
    hwm : int
        ZeroMQ send and receive high-water marks, in messages.
    linger : float
        Seconds :meth:`close` gives queued fire-and-forget messages.
    max_frame_records : int
        Larger sends and lookups are split into frames of at most this many
        records.

    Examples
    --------
    >>> async def main():                                      # doctest: +SKIP
    ...     async with AsyncClient() as c:
    ...         await c.send_json([{"entity": "web-01", "metric": "cpu", "value": 0.9}],
    ...                           ack=True)
    ...         return await c.get("web-01", "cpu")
    >>> asyncio.run(main())                                    # doctest: +SKIP
    """

    _context_class = zmq.asyncio.Context

    def __init__(self, host: str = P.DEFAULT_HOST, *, ports: dict | None = None,
                 endpoints: dict | None = None, timeout: float | None = 10.0,
                 hwm: int = 1000, linger: float = 5.0, max_frame_records: int = 65536) -> None:
        super().__init__(host, ports=ports, endpoints=endpoints, timeout=timeout, hwm=hwm,
                         linger=linger, max_frame_records=max_frame_records)
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, role: str) -> asyncio.Lock:
        lock = self._locks.get(role)
        if lock is None:
            lock = self._locks[role] = asyncio.Lock()
        return lock

    async def _exchange(self, step: _Step):
        async with self._lock(step.role):
            self._check()
            sock = self._socket(step.role)
            try:
                try:
                    await asyncio.wait_for(sock.send(step.frame, copy=False), self.timeout)
                except (zmq.Again, asyncio.TimeoutError):
                    raise self._timeout_error(step.role, sending=True) from None
                if step.expect == _NO_REPLY:
                    return None
                loop = asyncio.get_running_loop()
                deadline = None if self.timeout is None else loop.time() + self.timeout
                while True:
                    left = None if deadline is None else deadline - loop.time()
                    try:
                        if left is not None and left <= 0:
                            raise asyncio.TimeoutError
                        reply = await asyncio.wait_for(sock.recv(), left)
                    except asyncio.TimeoutError:
                        raise self._timeout_error(step.role, sending=False) from None
                    answer = self._interpret(step, reply)
                    if answer is not None:
                        return answer
            except BaseException:
                # Timeout, cancellation or a broken reply: never read this
                # request's answer for another one.
                if step.expect != _NO_REPLY:
                    self._drop(step.role)
                raise

    async def _run(self, plan: _Plan):
        self._check()
        try:
            step = next(plan)
            while True:
                step = plan.send(await self._exchange(step))
        except StopIteration as stop:
            return stop.value

    async def send(self, events: np.ndarray, ack: bool = False) -> int | None:
        """Send events as binary frames (type 1); see :meth:`Client.send`.

        Parameters
        ----------
        events : numpy.ndarray
            1-d array of :data:`engine.EVENT_DTYPE`.
        ack : bool
            Wait for the acked endpoint's reply to each frame.

        Returns
        -------
        int or None
            Records accepted with ``ack``, else ``None``.
        """
        return await self._run(self._plan_send(events, ack))

    async def send_json(self, records: list[dict], ack: bool = False) -> int | None:
        """Send records as JSON lines (type 2); see :meth:`Client.send_json`.

        Parameters
        ----------
        records : list of dict
            ``entity``, ``metric``, ``value`` and optionally ``ts``.
        ack : bool
            Wait for the acked endpoint's reply to each frame.

        Returns
        -------
        int or None
            Records accepted with ``ack``, else ``None``.
        """
        return await self._run(self._plan_send_json(records, ack))

    async def get(self, entity: str | int, metric: str | int) -> dict | None:
        """State of one series; see :meth:`Client.get`.

        Parameters
        ----------
        entity : str or int
            Entity name or id.
        metric : str or int
            Metric name or id.

        Returns
        -------
        dict or None
            The series, or ``None`` for a series never seen.
        """
        return await self._run(self._plan_get(entity, metric))

    async def entity(self, entity: str | int, *, summary: bool = False) -> list[dict] | dict:
        """Every series of one entity; see :meth:`Client.entity`.

        Parameters
        ----------
        entity : str or int
            Entity name or id.
        summary : bool
            Return ``entity``, ``entity_id``, ``status``, ``since`` and
            ``series`` instead of the series alone.

        Returns
        -------
        list of dict or dict
        """
        return await self._run(self._plan_entity(entity, summary))

    async def status(self, min_status: str = "WARN", limit: int = 100) -> dict:
        """Entities with a series at ``min_status`` or worse; see :meth:`Client.status`.

        Parameters
        ----------
        min_status : {"WARN", "OK", "STALE", "CRIT"}
        limit : int
            Entities to list.

        Returns
        -------
        dict
            ``total`` and ``entities``, worst first.
        """
        return await self._run(self._plan_status(min_status, limit))

    async def rules(self) -> dict:
        """The health rules in force; see :meth:`Client.rules`.

        Returns
        -------
        dict
            ``rules`` and ``describe``.
        """
        return await self._run(self._plan_rules())

    async def reload(self, rules=None) -> dict:
        """Replace the server's health rules; see :meth:`Client.reload`.

        Parameters
        ----------
        rules : None, str, dict or os.PathLike
            ``None``: the server re-reads its rules file.

        Returns
        -------
        dict
            ``rules`` (described) and ``count``.
        """
        return await self._run(self._plan_reload(rules))

    def alerts(self, statuses=None, timeout: float | None = None) -> AsyncAlertSubscription:
        """Follow the gateway's alerts: ``async for alert in client.alerts()``;
        see :meth:`Client.alerts`.

        Parameters
        ----------
        statuses : iterable of str, str or None
            Only alerts to these new statuses (``DROPPED`` comes either way).
        timeout : float or None
            End an iteration after this many seconds without a message.

        Returns
        -------
        AsyncAlertSubscription
            Already connecting; close it to unsubscribe.
        """
        return AsyncAlertSubscription(self, statuses, timeout)

    async def top(self, field: str = "last", k: int = 10, order: str = "desc") -> list[dict]:
        """The ``k`` series with the highest or lowest ``field``; see :meth:`Client.top`.

        Parameters
        ----------
        field : str
            A series field.
        k : int
            Series to return.
        order : {"desc", "asc"}

        Returns
        -------
        list of dict
        """
        return await self._run(self._plan_top(field, k, order))

    async def stats(self) -> dict:
        """Counters of the engine and the gateway; see :meth:`Client.stats`.

        Returns
        -------
        dict
        """
        return await self._run(self._plan_stats())

    async def ping(self) -> float:
        """Round trip of one query, in seconds; see :meth:`Client.ping`.

        Returns
        -------
        float
        """
        return await self._run(self._plan_ping())

    async def register_names(self, entities: Iterable[str] = (),
                             metrics: Iterable[str] = ()) -> int:
        """Tell the gateway names; see :meth:`Client.register_names`.

        Parameters
        ----------
        entities : iterable of str
        metrics : iterable of str

        Returns
        -------
        int
            The gateway's ``registered`` count.
        """
        return await self._run(self._plan_register_names(entities, metrics))

    async def lookup(self, keys, metrics) -> np.ndarray:
        """Binary lookup of many series; see :meth:`Client.lookup`.

        Parameters
        ----------
        keys : array_like of int or str
        metrics : array_like of int or str

        Returns
        -------
        numpy.ndarray
            :data:`engine.STATE_DTYPE` rows in the order asked.
        """
        return await self._run(self._plan_lookup(keys, metrics))

    async def query(self, request: dict) -> dict:
        """Send one raw JSON query; see :meth:`Client.query`.

        Parameters
        ----------
        request : dict
            ``{"op": ..., ...}``.

        Returns
        -------
        dict
            The reply, without ``id``.
        """
        return await self._run(self._plan_query(request))

    async def close(self) -> None:
        """Close the sockets, then the context (in a thread, so that the
        ``linger`` given to queued fire-and-forget messages does not block
        the event loop).  Safe to call twice."""
        if self._close_sockets():
            await asyncio.get_running_loop().run_in_executor(None, self._ctx.term)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
