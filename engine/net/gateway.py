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
  moves frames.

Small frames are coalesced: every frame already waiting on the PULL socket
is received by :mod:`engine._wire` in C, without blocking and without a
Python object per frame, and their records are submitted as one batch.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import zmq

from .. import _wire
from ..core.records import EVENT_DTYPE
from ..errors import Backpressure, EngineError
from ..query import ops
from . import protocol as P

__all__ = ["Gateway", "GatewayConfig", "endpoint_urls"]

_POLL_MS = 100
# Frames read without blocking before the batch is submitted.
_COALESCE_FRAMES = 1024
_COALESCE_ROUNDS = 64
_COALESCE_RECORDS = 65536
# Frames at least this large skip the staging copy.
_DIRECT_RECORDS = 1024
_ALERT_HWM = 100_000


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
        Larger messages are rejected (``too_large``, with a reply on the acked
        endpoint).  libzmq drops peers that send more than 4x this.
    ack_timeout : float
        Seconds an acked message may wait for room in the rings before it is
        answered with ``backpressure`` (the records taken so far are kept).
    hwm : int
        ZeroMQ receive high-water mark, in messages, of the ingest sockets.
    """

    def __init__(self, endpoints: dict | None = None, max_message_bytes: int = 64 << 20,
                 ack_timeout: float = 5.0, hwm: int = 1000) -> None:
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

    def __init__(self, engine, config: GatewayConfig | None = None) -> None:
        self.engine = engine
        self.config = config or GatewayConfig()
        self.names = engine.names
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
        self._closed = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._staging = np.empty(_COALESCE_RECORDS, EVENT_DTYPE)
        self._pull_drain = None
        self._lookups = None
        self.alerts = None
        self.published = 0
        try:
            for name, target in (("pull", self._pull_loop), ("acked", self._acked_loop),
                                 ("query", self._query_loop)):
                ready = threading.Event()
                t = threading.Thread(target=self._run, args=(target, ready),
                                     name=f"ringflow-gateway-{name}", daemon=True)
                t.start()
                ready.wait(10)
                self._threads.append(t)
                if self._errors:
                    raise self._errors[0]
            self.alerts = self._ctx.socket(zmq.PUB)
            self.alerts.setsockopt(zmq.LINGER, 0)
            # A burst of status changes must not be cut at libzmq's default
            # 1000 messages per slow subscriber.
            self.alerts.setsockopt(zmq.SNDHWM, _ALERT_HWM)
            self.alerts.bind(self.config.endpoints["alerts"])
            # From here on only the engine's alert thread uses the PUB socket.
            engine._alerts.add_callback(self._publish)
            engine._alerts.add_drop_callback(self._publish_dropped)
        except BaseException:
            self.close()
            raise

    # --- plumbing ---------------------------------------------------------

    def _run(self, target, ready: threading.Event) -> None:
        try:
            target(ready)
        except BaseException as exc:  # surfaced by start-up, stats() and healthy
            self._errors.append(exc)
            ready.set()

    @property
    def healthy(self) -> bool:
        """False once a gateway thread has stopped on an error (see ``stats()``)."""
        return not self._errors and all(t.is_alive() for t in self._threads)

    def _bind(self, kind: int, url: str, ctx: zmq.Context | None = None) -> zmq.Socket:
        sock = (ctx or self._ctx).socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, self.config.hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, 4 * self.config.max_message_bytes)
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
        producer slot back.  Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for t in self._threads:
            t.join(30)
        if self.alerts is not None:
            # Returns only once the alert thread is out of _publish.
            self.engine.remove_alert_callback(self._publish)
            self.engine.remove_alert_callback(self._publish_dropped)
            self.alerts.close()
            self.alerts = None
        self._ctx.term()
        self._query_ctx.term()
        self._pull_producer.release()
        self._acked_producer.release()

    def _publish(self, alert) -> None:
        # Topic frame first, so that SUB sockets filter on the new status.
        self.alerts.send_multipart(
            [alert.new.encode(), json.dumps(alert.to_dict()).encode()], copy=True)
        self.published += 1

    def _publish_dropped(self, new: int, total: int) -> None:
        self.alerts.send_multipart(
            [b"DROPPED", json.dumps({"dropped": new, "total": total}).encode()])

    @property
    def _c(self) -> dict:
        """The calling thread's counters."""
        c = getattr(self._tls, "counters", None)
        if c is None:
            c = {"messages": 0, "accepted": 0, "invalid": 0,
                 "rejected": {reason: 0 for reason in P.REASONS},
                 "queries": 0, "query_errors": 0}
            self._all_counters.append(c)
            self._tls.counters = c
        return c

    @property
    def counters(self) -> dict:
        """Every thread's counters added up."""
        total = {"messages": 0, "accepted": 0, "invalid": 0,
                 "rejected": {reason: 0 for reason in P.REASONS},
                 "queries": 0, "query_errors": 0}
        for c in list(self._all_counters):
            for k, v in c.items():
                if k == "rejected":
                    for reason, n in v.items():
                        total["rejected"][reason] += n
                else:
                    total[k] += v
        return total

    def stats(self) -> dict:
        """The gateway's counters: messages, records accepted and invalid,
        rejected messages by reason, queries."""
        c = self.counters
        out = {**c, "rejected": dict(c["rejected"]), "healthy": self.healthy,
               "alerts_published": self.published,
               "errors": [repr(e) for e in self._errors]}
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

    def _pull_loop(self, ready: threading.Event) -> None:
        pull = self._bind(zmq.PULL, self.config.endpoints["ingest"])
        self._pull_drain = _wire.Drain(self._staging, self.config.max_message_bytes,
                                       _DIRECT_RECORDS)
        ready.set()
        try:
            while not self._stop.is_set():
                if pull.poll(_POLL_MS):
                    self._drain_pull(pull)
        finally:
            pull.close()

    def _acked_loop(self, ready: threading.Event) -> None:
        acked = self._bind(zmq.ROUTER, self.config.endpoints["acked"])
        ready.set()
        try:
            while not self._stop.is_set():
                if acked.poll(_POLL_MS):
                    self._serve_acked(acked)
        finally:
            acked.close()

    def _decode(self, frame) -> tuple[np.ndarray | None, str | None, str]:
        """Records of one ingest frame, or (None, reason, message)."""
        try:
            kind, count = P.parse_header(frame, self.config.max_message_bytes)
            if kind == P.TYPE_EVENTS:
                return P.parse_events(frame, count), None, ""
            if kind == P.TYPE_JSON:
                body = memoryview(frame)[P.HEADER.size:]
                return P.parse_json_lines(body, self.names), None, ""
            raise P.ProtocolError("bad_type", f"message type {kind} is not an ingest type")
        except P.ProtocolError as exc:
            self._c["rejected"][exc.reason] += 1
            return None, exc.reason, str(exc)
        except Exception as exc:  # noqa: BLE001 - one message must never stop ingest
            self._c["rejected"]["bad_json"] += 1
            return None, "bad_json", f"undecodable message: {exc!r}"

    def _submit(self, producer, events: np.ndarray,
                timeout: float | None) -> tuple[int, int, bool]:
        """Submit through one of the gateway's producers, waiting in slices so
        that a stop request is noticed.  Returns (accepted, handled, complete)."""
        accepted = handled = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while handled < len(events):
            try:
                accepted += producer.submit(events[handled:], timeout=0.1)
                handled = len(events)
            except Backpressure as bp:
                accepted += bp.accepted
                handled += bp.handled
                if deadline is not None and time.monotonic() >= deadline:
                    return accepted, handled, False
                # On shutdown the workers keep draining, so finishing what
                # was read is bounded; only a dead worker ends it early.
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
            if drain.fill:
                self._count(*self._submit(self._pull_producer, drain.take_batch(), None)[:2])
            frame = drain.take_pending()
            if frame is not None:
                records, _reason, _msg = self._decode(frame)
                if records is not None and len(records):
                    self._count(*self._submit(self._pull_producer, records, None)[:2])
            if status == _wire.ERROR:
                raise EngineError(
                    f"receiving on the ingest socket failed: errno {drain.last_errno}")
            if status == _wire.DRAINED:
                return

    def _serve_acked(self, sock: zmq.Socket) -> None:
        for _ in range(_COALESCE_FRAMES):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._c["messages"] += 1
            envelope, frame = parts[:-1], parts[-1]
            records, reason, message = self._decode(frame.buffer)
            if records is None:
                reply = {"ok": False, "reason": reason, "error": message}
            else:
                try:
                    accepted, handled, complete = self._submit(
                        self._acked_producer, records, self.config.ack_timeout)
                except EngineError as exc:
                    # A dead worker: answer this sender, then stop (healthy
                    # turns false and stats() says why).
                    self._c["rejected"]["unavailable"] += 1
                    reply = {"ok": False, "reason": "unavailable", "error": str(exc)}
                    sock.send_multipart([*envelope, json.dumps(reply).encode()])
                    raise
                self._count(accepted, handled)
                reply = {"ok": True, "accepted": accepted, "rejected": handled - accepted}
                if not complete:
                    self._c["rejected"]["backpressure"] += 1
                    reply = {"ok": False, "reason": "backpressure", "accepted": accepted,
                             "handled": handled,
                             "error": f"rings full for {self.config.ack_timeout:g}s; "
                                      f"{handled} of {len(records)} records taken, resend the rest"}
            sock.send_multipart([*envelope, json.dumps(reply).encode()])

    # --- queries ------------------------------------------------------------

    def _query_loop(self, ready: threading.Event) -> None:
        sock = self._bind(zmq.ROUTER, self.config.endpoints["query"], self._query_ctx)
        # Binary lookups are answered in C with the GIL released
        # (engine._wire.LookupServer); JSON requests come back here.
        server = _wire.LookupServer(self._reader.header_addresses(),
                                    self.config.max_message_bytes)
        self._lookups = server
        ready.set()
        try:
            while not self._stop.is_set():
                if not sock.poll(_POLL_MS):
                    continue
                for _ in range(_COALESCE_ROUNDS):
                    status = server.serve(sock.underlying, _COALESCE_FRAMES)
                    parts = server.take_pending()
                    if parts is not None:
                        envelope, frame = parts[:-1], parts[-1]
                        try:
                            reply = self.answer(frame)
                        except Exception as exc:  # noqa: BLE001 - one query must not stop the rest
                            self._c["query_errors"] += 1
                            reply = json.dumps({"ok": False,
                                                "error": f"internal: {exc!r}"}).encode()
                        sock.send_multipart([*envelope, reply])
                    if status == _wire.ERROR:
                        raise EngineError(
                            f"receiving on the query socket failed: errno {server.last_errno}")
                    if status == _wire.DRAINED:
                        break
        finally:
            sock.close()

    def answer(self, frame: bytes) -> bytes:
        """The reply to one query frame (JSON request or binary lookup); see
        :func:`engine.query.ops.answer`."""
        self._c["queries"] += 1
        return ops.answer(frame, self._reader, max_message_bytes=self.config.max_message_bytes,
                          control=self._control_ops, on_error=self._query_failed)

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


# Ops answered by the gateway itself (engine.query.ops has the reads).
_CONTROL_OPS = ("stats", "rules", "reload")
#: Every JSON op of the query endpoint; PROTOCOL.md documents each.
_QUERY_OPS = (*ops.OPS, *_CONTROL_OPS)
