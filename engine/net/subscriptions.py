"""Alert subscriptions: a SUB socket on the gateway's alert endpoint, as
:class:`AlertSubscription` (blocking, made by :meth:`engine.net.client.Client.alerts`)
and :class:`AsyncAlertSubscription` (asyncio, made by
:meth:`engine.net.aio.AsyncClient.alerts`).

Every alert carries ``seq``, its number in the engine's alert log, and
``topic_seq``, its number among the alerts of its topic.  A subscription
that sees a number skipped (a message dropped by ZeroMQ past a high-water
mark, a subscription not yet live when the alert went out, a reconnect)
asks the query endpoint for what it missed (op ``alerts``) and delivers it
in order before going on; what the engine's log no longer holds is reported
as a ``MISSED`` message with the count, never silently skipped."""

from __future__ import annotations

import collections
import json
import os
from typing import TYPE_CHECKING

import zmq

from ..errors import ConfigError, EngineError
from . import security

if TYPE_CHECKING:
    from .plans import _ClientBase

__all__ = ["ALERT_STATUSES", "MISSED", "ENGINE", "AlertSubscription",
           "AsyncAlertSubscription"]

#: Topics of the alert endpoint: the new status of an alert, ENGINE (a
#: shard's state changed: docs/faults.md), and MISSED (alerts that could
#: not be delivered: how many, and their numbers).
ALERT_STATUSES = ("OK", "WARN", "STALE", "CRIT")
MISSED = "MISSED"
ENGINE = "ENGINE"
# Alerts asked for per ``alerts`` query while filling a gap.
_FILL_LIMIT = 100_000


def _alert_topics(statuses) -> list[bytes]:
    """SUB subscriptions for a status filter: every topic for ``None``,
    else the statuses, ``MISSED`` and ``ENGINE`` (missed alerts, and a
    shard whose series cannot be current, concern every filter)."""
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
    return [*dict.fromkeys(wanted), MISSED.encode(), ENGINE.encode()]


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


class _Gaps:
    """The bookkeeping of one subscription's place in the alert log: which
    numbers it has, whether a message shows a gap, and what a fill brought.
    The sync and asyncio subscriptions run the queries; this decides."""

    def __init__(self, topics: list[bytes]) -> None:
        self.all = topics == [b""]
        self.topics = None if self.all else [t.decode() for t in topics
                                             if t.decode() != MISSED]
        #: The highest alert number delivered or skipped (None: not known
        #: yet, the first alert sets it).
        self.last: int | None = None
        self.topic_last: dict[str, int] = {}
        self.missed = 0
        self.filled = 0
        #: The alert log the numbers are of (None: not known yet).
        self.log: str | None = None
        #: Times the engine's log changed under this subscription (a
        #: restart without a data dir): numbering started over.
        self.restarts = 0
        #: Logs given up for a newer one: their messages still queued in
        #: the socket are skipped, never taken for the new log's numbers.
        self.retired: set[str] = set()

    def current(self, msg: dict | None) -> bool:
        """Whether a message belongs to the log now followed."""
        return msg is None or msg.get("log") not in self.retired

    def baseline(self, reply: dict) -> None:
        """Start from the log's newest alert (an ``alerts`` reply)."""
        self.last = int(reply["head"])
        self.topic_last = {t: int(n) for t, n in reply["topic_heads"].items()}
        self.log = reply.get("log")

    def same_log(self, log_id) -> bool:
        """Check a message's or reply's log id; on a new log (the engine
        restarted and numbers from 1 again) start over from its first
        alert and return False."""
        if not isinstance(log_id, str) or log_id == self.log or log_id in self.retired:
            # (An old log's straggler is skipped: see current().)
            return True
        if self.log is None:
            self.log = log_id
            return True
        self.retired.add(self.log)
        self.log = log_id
        self.restarts += 1
        self.last = 0
        # Every topic numbers from 1 in the new log too.
        self.topic_last = {t: 0 for t in self.topic_last}
        return False

    def seen(self, msg: dict) -> str:
        """``"dup"`` (already delivered), ``"gap"`` (numbers before it are
        missing: fill first) or ``"ok"``."""
        seq = msg.get("seq")
        if not isinstance(seq, int):
            return "ok"
        self.same_log(msg.get("log"))
        if not self.current(msg):
            return "dup"
        if self.last is None:
            return "ok"
        if seq <= self.last:
            return "dup"
        if self.all:
            return "gap" if seq > self.last + 1 else "ok"
        known = self.topic_last.get(msg["topic"])
        tseq = msg.get("topic_seq")
        if known is not None and isinstance(tseq, int) and tseq > known + 1:
            return "gap"
        return "ok"

    def take(self, msg: dict) -> None:
        """Record a delivered alert."""
        seq = msg.get("seq")
        if isinstance(seq, int):
            self.last = seq if self.last is None else max(self.last, seq)
            tseq = msg.get("topic_seq")
            if isinstance(tseq, int):
                self.topic_last[msg["topic"]] = max(self.topic_last.get(msg["topic"], 0), tseq)

    def missed_notice(self, msg: dict) -> bool:
        """The gateway's MISSED notice: those numbers are gone for good.
        Returns whether to deliver it.

        With a topic filter the notice is not passed on: it counts the
        alerts of every topic.  The next alert of a wanted topic then
        shows the gap in its ``topic_seq``, and :meth:`finish` reports
        the exact count of that topic's loss."""
        self.same_log(msg.get("log"))
        if not self.current(msg):
            return False
        to = msg.get("to")
        if isinstance(to, int):
            self.last = to if self.last is None else max(self.last, to)
        if not self.all:
            return False
        self.missed += int(msg.get("missed", 0))
        return True

    def request(self, trigger: dict | None) -> dict:
        """The next ``alerts`` query of a fill: up to the alert before
        ``trigger``, or to the newest (``trigger`` None)."""
        since = self.last or 0
        limit = _FILL_LIMIT
        if trigger is not None:
            limit = max(1, min(_FILL_LIMIT, trigger["seq"] - 1 - since))
        req = {"op": "alerts", "since": since, "limit": limit}
        if self.topics is not None:
            req["topics"] = self.topics
        return req

    def page(self, reply: dict, trigger: dict | None) -> tuple[list[dict], bool]:
        """What one ``alerts`` reply brings, as messages to deliver (a
        MISSED message first where the log no longer held some), and
        whether to ask again."""
        out = []
        if not self.same_log(reply.get("log")):
            # The engine restarted between the trigger and this reply (or
            # since the last fill): ask again, from the new log's start.
            return out, True
        since = self.last or 0
        end = None if trigger is None else trigger["seq"] - 1
        gone = int(reply.get("missed", 0))
        if end is not None:
            gone = min(gone, end - since)
        if gone > 0:
            if self.all:
                # (With a topic filter, finish() counts its topic's loss.)
                out.append({"topic": MISSED, "missed": gone, "from": since + 1,
                            "to": since + gone})
                self.missed += gone
            self.last = since + gone
        log_id = reply.get("log")
        for a in reply.get("alerts", []):
            if end is not None and a["seq"] > end:
                break
            # As published: with the log's id.
            msg = {"topic": _topic(a), **a, "log": log_id}
            self.take(msg)
            out.append(msg)
            self.filled += 1
        nxt = int(reply.get("next", 0))
        self.last = max(self.last or 0, nxt if end is None else min(nxt, end))
        more = (len(reply.get("alerts", [])) > 0 and nxt < (end if end is not None
                                                              else int(reply.get("head", 0))))
        return out, more

    def finish(self, trigger: dict | None) -> list[dict]:
        """After a fill up to ``trigger``: with a topic filter, the alerts
        of its topic that the log no longer held (their numbers among all
        alerts are unknown; the count is exact)."""
        out = []
        if trigger is None or not isinstance(trigger.get("seq"), int):
            return out
        if not self.all:
            topic = trigger["topic"]
            known = self.topic_last.get(topic)
            tseq = trigger.get("topic_seq")
            if known is not None and isinstance(tseq, int) and tseq > known + 1:
                lost = tseq - known - 1
                out.append({"topic": MISSED, "missed": lost, "topics": [topic]})
                self.missed += lost
        self.last = max(self.last or 0, trigger["seq"] - 1)
        return out


def _topic(alert: dict) -> str:
    return alert.get("topic") or alert["new"]


class _SubscriptionBase:
    """A SUB socket on the gateway's alert endpoint; see :class:`AlertSubscription`."""

    # Alerts come in bursts (a rack going silent turns every series of it
    # STALE at once); the gateway's PUB drops past its own high-water mark.
    _RCVHWM = 100_000

    def __init__(self, client: _ClientBase, statuses, timeout: float | None,
                 since: int | None = None) -> None:
        client._check()
        if timeout is not None and not timeout > 0:
            raise ConfigError(f"timeout must be positive seconds or None, got {timeout!r}")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool)
                                  or since < 0):
            raise ConfigError(f"since must be an alert number (int >= 0), got {since!r}")
        self.timeout = None if timeout is None else float(timeout)
        self.topics = _alert_topics(statuses)
        self.endpoint = client.endpoints["alerts"]
        self.received = 0
        self.fill_errors = 0
        self._gaps = _Gaps(self.topics)
        self._ready: collections.deque = collections.deque()
        # With a starting number, the first step is a fill from it.
        self._catch_up = since is not None
        if since is not None:
            self._gaps.last = since
        self._client = client
        self._connected = False
        sock = client._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, self._RCVHWM)
        security.configure_client(sock, client._curve)
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

    @property
    def missed(self) -> int:
        """Alerts this subscription could not get (the engine's log no
        longer held them); each was also reported by a MISSED message."""
        return self._gaps.missed

    @property
    def filled(self) -> int:
        """Alerts fetched from the query endpoint to fill gaps."""
        return self._gaps.filled

    @property
    def position(self) -> int | None:
        """The number of the last alert delivered (or reported missed)."""
        return self._gaps.last

    def _route(self, msg: dict) -> str:
        """What to do with a received message: ``"deliver"``, ``"skip"``
        (a duplicate of a filled alert) or ``"fill"`` (fill first)."""
        if msg.get("topic") == MISSED:
            return "deliver" if self._gaps.missed_notice(msg) else "skip"
        kind = self._gaps.seen(msg)
        if kind == "dup":
            return "skip"
        return "fill" if kind == "gap" else "deliver"

    def __repr__(self) -> str:
        topics = ",".join(t.decode() for t in self.topics if t) or "all"
        state = "closed" if self.closed else "open"
        return f"<{type(self).__name__} {self.endpoint} topics={topics} {state}>"


class AlertSubscription(_SubscriptionBase):
    """Alerts from a gateway's alert endpoint, as dicts; made by :meth:`Client.alerts`.

    Iterating yields one dict per alert: the JSON the gateway published
    plus ``topic``, the first frame.  For an alert ``topic`` is the new
    status (``"OK"``, ``"WARN"``, ``"STALE"``, ``"CRIT"``) and the fields
    are ``entity``, ``metric``, ``entity_id``, ``metric_id``, ``old``,
    ``new``, ``stat``, ``value``, ``ts``, ``worker``, ``seq`` and
    ``topic_seq`` (PROTOCOL.md); ``ENGINE`` messages are shard state
    changes.

    Alerts come in the engine's order, each once.  When a number is
    skipped (ZeroMQ dropped a message past its high-water mark, the
    subscription was not live yet, the connection broke for a while) the
    subscription asks the query endpoint for the missing ones and yields
    them first.  Alerts the engine's log no longer holds (more than its
    ``alert_log`` behind) are reported by a ``{"topic": "MISSED",
    "missed": n, ...}`` message and counted in :attr:`missed`.

    The SUB socket connects when the subscription is made.  Iteration
    blocks until the next message; with a ``timeout`` it ends when none
    came for that long (after one last look in the log; iterate again to go
    on).  It ends for good once :meth:`close` ran.

    Attributes
    ----------
    topics : list of bytes
        The SUB subscriptions (``[b""]``: everything).
    timeout : float or None
        Seconds of silence that end an iteration.
    received : int
        Messages received so far on the SUB socket.
    fill_errors : int
        Fills that failed (the query endpoint did not answer).
    """

    def __init__(self, client, statuses, timeout: float | None,
                 since: int | None = None) -> None:
        super().__init__(client, statuses, timeout, since)
        if since is None:
            # From the newest alert now: one skipped after this (a slow
            # subscription, a dropped message) is filled from the log.
            try:
                self._gaps.baseline(client.query({"op": "alerts", "limit": 0}))
            except EngineError:
                # A gateway that does not answer: gaps are filled from the
                # first alert on, once the query endpoint answers.
                self.fill_errors += 1

    def __iter__(self) -> AlertSubscription:
        return self

    def __next__(self) -> dict:
        if self._sock is None:
            raise StopIteration
        self._client._check()
        ms = None if self.timeout is None else max(1, int(self.timeout * 1000))
        while not self._ready:
            if self._catch_up:
                self._catch_up = False
                self._fill(None)
                continue
            if not self._sock.poll(ms, zmq.POLLIN):
                # Silence: what was published but never reached this
                # socket (a subscription not yet live) is in the log.
                if self._gaps.last is not None:
                    self._fill(None)
                if self._ready:
                    break
                raise StopIteration
            msg = self._decode(self._sock.recv_multipart())
            route = self._route(msg)
            if route == "skip":
                continue
            if route == "fill":
                self._fill(msg)
            if self._gaps.current(msg):
                self._gaps.take(msg)
                self._ready.append(msg)
        return self._ready.popleft()

    def _fill(self, trigger: dict | None) -> None:
        gaps = self._gaps
        try:
            for _ in range(1 << 20):
                # A trigger of a log given up meanwhile (the engine
                # restarted): fill the new log to its newest instead.
                trigger = trigger if gaps.current(trigger) else None
                got, more = gaps.page(self._client.query(gaps.request(trigger)), trigger)
                self._ready.extend(got)
                if not more:
                    break
        except EngineError:
            self.fill_errors += 1
        self._ready.extend(gaps.finish(trigger if gaps.current(trigger) else None))

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
    iteration ends after ``timeout`` seconds without a message.  Gaps are
    filled as in :class:`AlertSubscription`, counted from the first alert
    received (or from ``since``)."""

    def __aiter__(self) -> AsyncAlertSubscription:
        return self

    async def __anext__(self) -> dict:
        if self._sock is None:
            raise StopAsyncIteration
        self._client._check()
        import asyncio  # here: a blocking client's process never loads it

        while not self._ready:
            if self._catch_up:
                self._catch_up = False
                await self._fill(None)
                continue
            try:
                parts = await asyncio.wait_for(self._sock.recv_multipart(), self.timeout)
            except asyncio.TimeoutError:
                if self._gaps.last is not None:
                    await self._fill(None)
                if self._ready:
                    break
                raise StopAsyncIteration from None
            msg = self._decode(parts)
            route = self._route(msg)
            if route == "skip":
                continue
            if route == "fill":
                await self._fill(msg)
            if self._gaps.current(msg):
                self._gaps.take(msg)
                self._ready.append(msg)
        return self._ready.popleft()

    async def _fill(self, trigger: dict | None) -> None:
        gaps = self._gaps
        try:
            for _ in range(1 << 20):
                trigger = trigger if gaps.current(trigger) else None   # as in the sync one
                got, more = gaps.page(await self._client.query(gaps.request(trigger)), trigger)
                self._ready.extend(got)
                if not more:
                    break
        except EngineError:
            self.fill_errors += 1
        self._ready.extend(gaps.finish(trigger if gaps.current(trigger) else None))

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
        import asyncio

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
