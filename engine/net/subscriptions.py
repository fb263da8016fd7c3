"""Alert subscriptions: a SUB socket on the gateway's PUB endpoint, as
:class:`AlertSubscription` (blocking, made by :meth:`engine.net.client.Client.alerts`)
and :class:`AsyncAlertSubscription` (asyncio, made by
:meth:`engine.net.aio.AsyncClient.alerts`)."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import zmq

from ..errors import ConfigError, EngineError

if TYPE_CHECKING:
    from .plans import _ClientBase

__all__ = ["ALERT_STATUSES", "DROPPED", "ENGINE", "AlertSubscription",
           "AsyncAlertSubscription"]

#: Topics of the alert endpoint: the new status of an alert, DROPPED, and
#: ENGINE (a shard's state changed: docs/faults.md).
ALERT_STATUSES = ("OK", "WARN", "STALE", "CRIT")
DROPPED = "DROPPED"
ENGINE = "ENGINE"


def _alert_topics(statuses) -> list[bytes]:
    """SUB subscriptions for a status filter: every topic for ``None``,
    else the statuses, ``DROPPED`` and ``ENGINE`` (missed alerts, and a
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
    return [*dict.fromkeys(wanted), DROPPED.encode(), ENGINE.encode()]


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
        import asyncio  # here: a blocking client's process never loads it

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
