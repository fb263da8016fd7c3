"""The asyncio client of the ZeroMQ gateway (on ``zmq.asyncio``): the same
plans (:mod:`engine.net.plans`) as the blocking :class:`engine.net.client.Client`,
moved by coroutines."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import numpy as np
import zmq
import zmq.asyncio

from ..errors import GatewayTimeout
from . import protocol as P
from .plans import _NO_REPLY, _ClientBase, _Plan, _Step
from .subscriptions import AsyncAlertSubscription

__all__ = ["AsyncClient"]


class AsyncClient(_ClientBase):
    """asyncio client of a ringflow gateway (on ``zmq.asyncio``).

    Same parameters, methods and errors as :class:`engine.net.client.Client`
    (``Client`` below); every method is a coroutine, and concurrent requests
    of one client are serialised (one in flight per socket).  A request
    cancelled while it waits for its reply closes its socket, like a timeout.

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
                 hwm: int = 1000, linger: float = 5.0, max_frame_records: int = 65536,
                 curve_secret=None, curve_server=None) -> None:
        super().__init__(host, ports=ports, endpoints=endpoints, timeout=timeout, hwm=hwm,
                         linger=linger, max_frame_records=max_frame_records,
                         curve_secret=curve_secret, curve_server=curve_server)
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
            with self._request(step):
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

    async def _run(self, plan: _Plan):
        self._check()
        try:
            step = next(plan)
            while True:
                try:
                    answer = await self._exchange(step)
                except GatewayTimeout as exc:
                    # The plan decides: an acked frame is sent again.
                    step = plan.throw(exc)
                    continue
                step = plan.send(answer)
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
        if not ack:
            return await self._run(self._plan_send(events, ack))
        # One acked send at a time per client: its sequences stay in order.
        async with self._lock("producer"):
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
        if not ack:
            return await self._run(self._plan_send_json(records, ack))
        async with self._lock("producer"):
            return await self._run(self._plan_send_json(records, ack))

    async def send_json_body(self, body, count: int, ack: bool = False) -> int | None:
        """Send JSON lines encoded already as one frame; see
        :meth:`Client.send_json_body`.

        Parameters
        ----------
        body : bytes-like
            Whole UTF-8 JSON lines.
        count : int
            The records in ``body``.
        ack : bool
            Wait for the acked endpoint's reply.

        Returns
        -------
        int or None
            Records accepted with ``ack``, else ``None``.
        """
        if not ack:
            return await self._run(self._plan_send_json_body(body, count, ack))
        async with self._lock("producer"):
            return await self._run(self._plan_send_json_body(body, count, ack))

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
            Entities to list, 0..100000 (0: ``total`` and ``counts`` only).

        Returns
        -------
        dict
            ``total``, ``entities`` (worst first), ``counts`` (every series
            by status), ``series`` and ``recovered``.
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

    def alerts(self, statuses=None, timeout: float | None = None,
               since: int | None = None) -> AsyncAlertSubscription:
        """Follow the gateway's alerts: ``async for alert in client.alerts()``;
        see :meth:`Client.alerts`.

        Parameters
        ----------
        statuses : iterable of str, str or None
            Only alerts to these new statuses (``ENGINE`` and ``MISSED``
            come either way).
        timeout : float or None
            End an iteration after this many seconds without a message.
        since : int or None
            Start after the alert with this number (``seq``).

        Returns
        -------
        AsyncAlertSubscription
            Already connecting; close it to unsubscribe.
        """
        return AsyncAlertSubscription(self, statuses, timeout, since)

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
