"""Python clients of the ZeroMQ gateway (wire protocol v1, PROTOCOL.md).

:class:`Client` is blocking, :class:`engine.net.aio.AsyncClient` runs on
asyncio (``zmq.asyncio``); both speak the same frames through the same code:
every public method is written once as a *plan* (:mod:`engine.net.plans`), a
generator that yields the frames to send and receives the replies, and each
class only moves bytes.  Alert subscriptions are in
:mod:`engine.net.subscriptions`.

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

import threading
import time
from collections.abc import Iterable

import numpy as np
import zmq

from ..errors import GatewayTimeout
from . import protocol as P
from .plans import _NO_REPLY, _SOCKET_TYPES, _ClientBase, _Plan, _Step
from .subscriptions import AlertSubscription

__all__ = ["Client"]


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
    curve_secret, curve_server : str, os.PathLike or bytes, optional
        CURVE (README, "Security"): this client's secret key (a
        ``NAME.key_secret`` file or the key) and the server's public key (its
        ``.key`` file or the key).  Both or neither; every socket of this
        client, alert subscriptions too, then authenticates with them.

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
                 hwm: int = 1000, linger: float = 5.0, max_frame_records: int = 65536,
                 curve_secret=None, curve_server=None) -> None:
        super().__init__(host, ports=ports, endpoints=endpoints, timeout=timeout, hwm=hwm,
                         linger=linger, max_frame_records=max_frame_records,
                         curve_secret=curve_secret, curve_server=curve_server)
        self._locks = {role: threading.Lock() for role in _SOCKET_TYPES}
        self._producer_lock = threading.Lock()

    def _configure(self, sock: zmq.Socket) -> None:
        sock.setsockopt(zmq.SNDTIMEO, -1 if self.timeout is None else int(self.timeout * 1000))

    def _exchange(self, step: _Step):
        with self._locks[step.role]:
            self._check()
            sock = self._socket(step.role)
            with self._request(step):
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

    def _run(self, plan: _Plan):
        self._check()
        try:
            step = next(plan)
            while True:
                try:
                    answer = self._exchange(step)
                except GatewayTimeout as exc:
                    # The plan decides: an acked frame is sent again.
                    step = plan.throw(exc)
                    continue
                step = plan.send(answer)
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
        if not ack:
            return self._run(self._plan_send(events, ack))
        # One acked send at a time per client: its sequence numbers reach
        # the gateway in order, retries included (a later sequence first
        # would make the gateway take an earlier one for a duplicate).
        with self._producer_lock:
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
        if not ack:
            return self._run(self._plan_send_json(records, ack))
        with self._producer_lock:
            return self._run(self._plan_send_json(records, ack))

    def send_json_body(self, body, count: int, ack: bool = False) -> int | None:
        """Send JSON lines encoded already (whole lines, e.g. read from a
        file) as one type-2 frame, without decoding them here.

        Parameters
        ----------
        body : bytes-like
            UTF-8 JSON lines, each ending in ``\\n`` (the last may not).
        count : int
            The records in ``body`` (for the counts of a rejection).
        ack : bool
            As for :meth:`send`.

        Returns
        -------
        int or None
            With ``ack``, records accepted; ``None`` without.

        Raises
        ------
        engine.errors.Rejected
            The gateway refused the message (``bad_json``, ``bad_field``, ...).
        engine.errors.GatewayTimeout
            No reply within ``timeout``, or no room to queue the frame.
        """
        if not ack:
            return self._run(self._plan_send_json_body(body, count, ack))
        with self._producer_lock:
            return self._run(self._plan_send_json_body(body, count, ack))

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
            Entities to list, 0..100000 (0: ``total`` and ``counts`` only).
            The server cuts the list: what is not returned is never built.

        Returns
        -------
        dict
            ``total``: entities at ``min_status`` or worse; ``counts``: every
            series the engine knows counted by status (``OK``, ``WARN``,
            ``STALE``, ``CRIT``), whatever ``min_status`` and ``limit``;
            ``entities``: at most ``limit`` of them, worst first (ties: the
            longest-standing first, then by name), each with ``entity``, ``entity_id``, ``status``,
            ``since`` and ``series`` (its series at ``min_status`` or worse,
            as returned by :meth:`get`); ``series``: how many series the
            engine knows; ``recovered``: ``None``, or what its start
            replayed from its journal (``events``, ``frames``, ``seconds``,
            ``at_ns``).

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

    def alerts(self, statuses=None, timeout: float | None = None,
               since: int | None = None) -> AlertSubscription:
        """Follow the alerts the gateway publishes (its alert endpoint),
        filling any gap from the engine's alert log.

        Parameters
        ----------
        statuses : iterable of str, str or None
            Only alerts to these new statuses, e.g. ``["CRIT", "WARN"]`` or
            ``"CRIT,WARN"`` (filtered by ZeroMQ, on the topic frame);
            ``None``: all.  ``ENGINE`` and ``MISSED`` messages come either
            way.
        timeout : float or None
            End an iteration after this many seconds without a message;
            ``None`` waits forever.
        since : int or None
            Start after the alert with this number (``seq``): what a
            consumer that stopped asks for when it comes back.  ``None``:
            from the next alert.

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
        return AlertSubscription(self, statuses, timeout, since)

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
