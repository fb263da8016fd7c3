"""What :class:`engine.net.client.Client` and :class:`engine.net.aio.AsyncClient`
share: their state, socket plumbing and *plans*.

Every public method of the clients is written once here, as a plan: a
generator that yields :class:`_Step` (a frame to send on one socket and what
reply to wait for) and receives the replies.  The blocking client and the
asyncio one differ only in how they move the bytes (their ``_exchange``), so
both speak the same frames through the same code.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import threading
import time
from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING

import numpy as np
import zmq

from ..core.records import EVENT_DTYPE, STATE_DTYPE, as_events, series_ids
from ..errors import (
    ConfigError,
    EngineError,
    GatewayTimeout,
    QueryError,
    Rejected,
)
from . import protocol as P
from . import security

if TYPE_CHECKING:
    from .subscriptions import _SubscriptionBase

#: Socket type of each request endpoint (alerts get a SUB per subscription).
_SOCKET_TYPES = {"ingest": zmq.PUSH, "acked": zmq.DEALER, "query": zmq.DEALER}


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


def _pack_json(records: list[dict], producer=None) -> bytes:
    try:
        return P.pack_json(records, producer)
    except TypeError:
        # NumPy scalars (e.g. a value taken from an array): convert, retry.
        plain = [json.loads(json.dumps(r, default=_plain)) for r in records]
        return P.pack_json(plain, producer)


def _names(values, what: str) -> list[str]:
    if isinstance(values, str):
        values = [values]
    values = list(values)
    if not all(isinstance(v, str) for v in values):
        raise TypeError(f"{what} must be names (str)")
    return values



class _ClientBase:
    """State and plans shared by :class:`Client` and :class:`AsyncClient`."""

    _context_class = zmq.Context
    #: How often an acked frame that got no reply within ``timeout`` is
    #: sent again (under the same producer sequence, so never applied twice)
    #: before :class:`engine.errors.GatewayTimeout` is raised.
    ack_retries = 3
    #: How often an acked frame answered ``backpressure`` is sent again, same
    #: sequence (each answer took the gateway's ``ack_timeout``), before
    #: :class:`engine.errors.Rejected` is raised.
    backpressure_retries = 24

    def __init__(self, host: str = P.DEFAULT_HOST, *, ports: dict | None = None,
                 endpoints: dict | None = None, timeout: float | None = 10.0,
                 hwm: int = 1000, linger: float = 5.0,
                 max_frame_records: int = 65536, curve_secret=None,
                 curve_server=None) -> None:
        # CURVE keys (engine.net.security): loaded once, used by every socket.
        self._curve = security.client_keys(curve_secret, curve_server)
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
        # Idempotent producer (PROTOCOL.md): every acked frame carries this
        # id and the next sequence number, and a frame that got no reply is
        # sent again under the same number, which the gateway applies once.
        self.producer_id = secrets.randbits(64) | 1
        self._sequence = itertools.count(1)
        #: Acked frames sent again after a timeout, and retries the gateway
        #: answered as duplicates (taken before).
        self.retried = 0
        self.duplicates = 0
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
            security.configure_client(sock, self._curve)
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

    @contextlib.contextmanager
    def _request(self, step: _Step):
        """Around one exchange: a request that did not get its answer
        (timeout, interrupt, cancellation, a broken reply) closes its
        socket, which may still receive that answer later; never read it
        for another request."""
        try:
            yield
        except BaseException:
            if step.expect != _NO_REPLY:
                self._drop(step.role)
            raise

    def _timeout_error(self, role: str, sending: bool) -> GatewayTimeout:
        endpoint = self.endpoints[role]
        if sending:
            return GatewayTimeout(
                f"{endpoint}: could not queue a message for {self.timeout:g}s "
                f"(send high-water mark {self.hwm} reached; is the gateway running?)"
            )
        return GatewayTimeout(f"{endpoint}: no reply within {self.timeout:g}s" + self._curve_hint()
                              + "; a message over the server's max_message_bytes is dropped "
                              "with its connection, unanswered")

    def _curve_hint(self) -> str:
        # A failed CURVE handshake is silent: the client only sees no reply.
        if self._curve is None:
            return ("; if the server uses CURVE, give curve_secret and curve_server "
                    "(--curve-secret, --curve-server)")
        return ("; with CURVE a key the server does not allow (not in its --curve-clients "
                "or --curve-admins) or a wrong server key gets no answer at all")

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
        return (yield from self._plan_frames(ev, P.pack_events, ack))

    def _plan_send_json(self, records: Iterable[dict], ack: bool) -> _Plan:
        if isinstance(records, dict):
            records = [records]
        records = list(records)
        if not all(isinstance(r, dict) for r in records):
            raise TypeError("records must be dicts with entity, metric, value and optionally ts")
        return (yield from self._plan_frames(records, _pack_json, ack))

    def _plan_send_json_body(self, body, count: int, ack: bool) -> _Plan:
        if count < 0:
            raise ValueError(f"count must be the body's number of records, got {count}")
        return (yield from self._plan_frames(
            [bytes(body)], lambda chunk, producer=None: P.pack_json_body(chunk[0], producer),
            ack, size=count))

    def _plan_frames(self, records, pack, ack: bool, size: int | None = None) -> _Plan:
        """Ingest ``records`` (events or JSON dicts) in frames that ``pack``
        makes of at most ``max_frame_records`` each; ``size``: the records
        of a frame that ``pack`` makes of one item (a ready JSON body)."""
        accepted = 0
        step = 1 if size is not None else self.max_frame_records
        for start in range(0, len(records), step):
            chunk = records[start:start + step]
            if ack:
                frame = pack(chunk, (self.producer_id, next(self._sequence)))
                timeouts = busy = 0
                while True:
                    try:
                        reply = yield _Step("acked", frame, _JSON)
                    except GatewayTimeout:
                        # No reply: the frame may or may not have been
                        # taken.  The same frame again, on a new socket
                        # (the old one was dropped), is applied at most once.
                        if timeouts == self.ack_retries:
                            raise
                        timeouts += 1
                        self.retried += 1
                        continue
                    if reply.get("reason") == "backpressure" and busy < self.backpressure_retries:
                        # Parts of it were taken: the same frame again takes
                        # the rest (the gateway skips what it holds).
                        busy += 1
                        self.retried += 1
                        continue
                    break
                accepted = self._acked(reply, accepted, start,
                                       len(chunk) if size is None else size, producer=True)
            else:
                yield _Step("ingest", pack(chunk))
        return accepted if ack else None

    def _acked(self, reply: dict, accepted: int, start: int, size: int,
               producer: bool = False) -> int:
        if reply.get("ok") and reply.get("duplicate"):
            # A retry of a frame taken before: its records count as sent.
            self.duplicates += 1
            return accepted + int(reply.get("accepted", 0))
        if reply.get("ok"):
            return accepted + int(reply.get("accepted", 0))
        reason = reply.get("reason")
        taken = int(reply.get("accepted", 0))
        handled = start + int(reply.get("handled", 0))
        if producer and reason == "backpressure":
            # A producer's frame is taken shard by shard, not as a prefix:
            # nothing of it counts as handled (what was taken is applied;
            # the same frame sent again would take the rest exactly).
            handled = start
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
        k, m = series_ids(keys, metrics)
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
