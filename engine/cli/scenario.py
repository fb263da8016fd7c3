"""A deterministic incident scenario for a fleet of servers: the story the
demo tells and the input of the end-to-end health tests.

A fleet of ``hosts`` servers reports five metrics (:data:`METRICS`) every
``interval`` of event time.  The script runs :data:`STEPS` sampling steps;
step ``k`` is read at event time ``start + k * interval``.  Four hosts have
a role (:attr:`Scenario.roles`); the others are calm:

* ``web-0001`` (**cpu**): cpu climbs to 90 % then 100 % and falls back
  through 72 % (between the rule's clear and warn levels) to 30 %: its EWMA
  goes OK -> WARN -> CRIT, back to WARN by hysteresis, then OK.  Its mem
  blips over the thresholds for less than the rule's ``for``: no alert.
  Two of its later readings arrive at the edge of the lateness: one just
  in time for the previous window, one just too late.
* ``web-0002`` (**disk**): free disk space falls from 42 % to 2 % (a falling
  rule: WARN, then CRIT), and a partial clean-up brings it to 12-13 %, inside
  the hysteresis band: CRIT -> WARN, where it stays.
* ``web-0003`` (**latency**): latency readings spike for one window, so the
  window's p99 goes WARN then CRIT, and back to OK when the next window
  starts; its errors burst pushes the window's error count to WARN.  Its
  agent also holds back readings: two are delivered within the lateness (to
  the previous window), two beyond it (late: no window takes them).
* ``web-0004`` (**silent**): stops reporting after step 5 and comes back at
  step 40: every series goes STALE (the TTL) and back to OK.

Noise on top: calm hosts' readings are sometimes delivered out of order
(within the lateness), very late (beyond it) or twice; the scripted series
get a few hand-placed ones, at points where the contract says they change
nothing (a stale event never changes a status; a late one no window).

The rules that go with it (:meth:`Scenario.rules_toml`) and the engine
settings (:meth:`Scenario.engine_settings`) are scaled to the interval: a
window is 10 intervals, the lateness 3, ``for`` 2, the TTL 12, the EWMA
half-life 1.  Event times are anchored at a ``start`` the caller gives (for
example ``time.time_ns()``), so that the TTL, which runs on the wall clock,
sees the silence.  For window-exact results, :meth:`Scenario.align` the
start to a window boundary (windows are aligned to the epoch).

Examples
--------
>>> import time
>>> from engine import Engine
>>> from engine.cli.scenario import Scenario
>>> sc = Scenario(hosts=20, interval="100ms")
>>> with Engine(rules=sc.rules_toml(), **sc.engine_settings()) as eng:   # doctest: +SKIP
...     start = sc.align(time.time_ns())
...     for step, due, events in sc.batches(start):
...         eng.submit(events)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..core.durations import format_duration, parse_duration
from ..core.records import EVENT_DTYPE, entity_id, metric_id

__all__ = [
    "METRICS",
    "STEPS",
    "WINDOW_STEPS",
    "LATENESS_STEPS",
    "FOR_STEPS",
    "TTL_STEPS",
    "MIN_HOSTS",
    "CALM",
    "SCRIPTED_ALERTS",
    "Incident",
    "Scenario",
    "Background",
]

#: Metrics every host reports, in this order.
METRICS = ("cpu", "mem", "disk_free", "latency_ms", "errors")
#: Sampling steps of the script.
STEPS = 50
#: Rule and engine durations, in sampling intervals.
WINDOW_STEPS = 10
LATENESS_STEPS = 3
FOR_STEPS = 2
TTL_STEPS = 12
HALF_LIFE_STEPS = 1
#: A reading held back this many steps is late for certain (window + lateness + 1).
LATE_DELAY = WINDOW_STEPS + LATENESS_STEPS + 1
#: The four scripted hosts and at least one calm one.
MIN_HOSTS = 5

#: Range of each metric's readings on a calm host: uniform in ``[lo, hi)``;
#: errors are 0 or 1 (one in five).  Far from every threshold of the rules.
CALM = {
    "cpu": (0.20, 0.60),
    "mem": (0.40, 0.70),
    "disk_free": (0.35, 0.65),
    "latency_ms": (5.0, 20.0),
    "errors": (0.0, 1.0),
}

_RULES = """\
# Rules of the ringflow incident scenario (engine/scenario.py), scaled to a
# sampling interval of {interval}: windows of {window} (engine setting).
[defaults]
ttl = "{ttl}"
lateness = "{lateness}"

[[rule]]
metric = "cpu"
stat = "ewma"
warn = 0.80
crit = 0.95
clear = 0.70
for = "{for_}"

[[rule]]
metric = "mem"
stat = "last"
warn = 0.90
crit = 0.97
for = "{for_}"

[[rule]]
metric = "disk_free"
stat = "last"
warn = 0.10
crit = 0.05
clear = 0.15

[[rule]]
metric = "latency_ms"
stat = "p99"
warn = 50.0
crit = 100.0

[[rule]]
metric = "errors"
stat = "win_sum"
warn = 20.0
crit = 50.0
"""

# Role -> host name.
_ROLES = {"cpu": "web-0001", "disk": "web-0002", "latency": "web-0003", "silent": "web-0004"}
_SILENT_FROM, _SILENT_UNTIL = 6, 40  # web-0004 reads nothing in [6, 40)

_DISK_FILL = (0.36, 0.30, 0.24, 0.18, 0.13, 0.08, 0.06, 0.04, 0.03, 0.02, 0.02, 0.02, 0.02,
              0.02)  # steps 30..43
_LATENCY_SPIKE = (10.0, 11.0, 70.0, 70.0, 180.0, 180.0, 400.0, 400.0, 400.0, 400.0)  # 20..29


def _cpu(step: int) -> float:
    if step < 4:
        return 0.30
    if step < 8:
        return 0.90
    if step < 12:
        return 1.00
    if step < 17:
        return 0.72
    return 0.30


def _disk_free(step: int) -> float:
    if step < 30:
        return 0.42
    if step < 44:
        return _DISK_FILL[step - 30]
    return 0.12 if step == 44 else 0.13


def _latency(step: int) -> float:
    return _LATENCY_SPIKE[step - 20] if 20 <= step < 30 else 12.0


def _errors(step: int) -> float:
    return 6.0 if 22 <= step < 26 else 0.0


#: Scripted series: (role, metric) -> reading of a step, or None (calm).
_SCRIPT = {
    ("cpu", "cpu"): _cpu,
    ("cpu", "mem"): lambda k: {2: 0.99, 3: 0.95}.get(k),
    ("disk", "disk_free"): _disk_free,
    ("latency", "latency_ms"): _latency,
    ("latency", "errors"): _errors,
}

#: Hand-placed noise on scripted series: (role, metric, step) -> the steps at
#: which the reading is delivered (after that step's own readings when it is
#: not its own step; right after itself when it is).
_SCRIPT_NOISE = {
    ("cpu", "cpu", 9): (9, 9),         # duplicate, in order (same time as the watermark)
    ("cpu", "cpu", 10): (10, 12),      # duplicate, two steps late (same window)
    ("cpu", "cpu", 18): (22,),         # previous window, still open (22 < 20 + 3)
    ("cpu", "cpu", 19): (23,),         # previous window, just closed (23 = 20 + 3): late
    ("disk", "disk_free", 33): (38,),  # an OK-looking reading arrives while CRIT: stale
    ("disk", "disk_free", 36): (37,),  # swapped with the next reading
    ("disk", "disk_free", 44): (44, 46),
    ("latency", "latency_ms", 23): (23, 23),
    ("latency", "latency_ms", 26): (34,),  # beyond the lateness: late, no window
    ("latency", "latency_ms", 27): (34,),
    ("latency", "latency_ms", 28): (31,),  # within it: the previous window
    ("latency", "latency_ms", 29): (31,),
}

#: The status changes the script makes, and the only ones: (role, metric,
#: old, new, step).  ``step`` is the reading that decides the change (its
#: event time is the alert's), or for STALE the step at which the TTL passes
#: (the last reading's plus the TTL).  Derived by hand in
#: tests/integration/test_health_e2e.py, which checks them against the
#: reference model of docs/health.md; the mem blip makes none (``for``).
SCRIPTED_ALERTS = (
    ("cpu", "cpu", "OK", "WARN", 8),
    ("cpu", "cpu", "WARN", "CRIT", 11),
    ("cpu", "cpu", "CRIT", "WARN", 12),
    ("cpu", "cpu", "WARN", "OK", 17),
    ("latency", "latency_ms", "OK", "WARN", 23),
    ("latency", "latency_ms", "WARN", "CRIT", 25),
    ("latency", "errors", "OK", "WARN", 25),
    ("latency", "latency_ms", "CRIT", "OK", 30),
    ("latency", "errors", "WARN", "OK", 30),
    ("disk", "disk_free", "OK", "WARN", 35),
    ("disk", "disk_free", "WARN", "CRIT", 37),
    ("disk", "disk_free", "CRIT", "WARN", 44),
    *(("silent", m, "OK", "STALE", _SILENT_FROM - 1 + TTL_STEPS) for m in METRICS),
    *(("silent", m, "STALE", "OK", _SILENT_UNTIL) for m in METRICS),
)

# Random noise on calm hosts: share of readings per kind.
_REORDER, _LATE, _DUPLICATE = 0.02, 0.01, 0.02


@dataclass(frozen=True)
class Incident:
    """One scripted incident, for display.

    Attributes
    ----------
    host : str
        The host it happens on.
    metrics : tuple of str
        The metrics involved.
    begin, end : int
        First and last step of the incident (inclusive).
    description : str
        What happens, in a few words.
    """

    host: str
    metrics: tuple
    begin: int
    end: int
    description: str


class Scenario:
    """The incident scenario for a fleet of ``hosts`` servers.

    Parameters
    ----------
    hosts : int
        Fleet size, at least :data:`MIN_HOSTS`; hosts are named
        ``web-0000``, ``web-0001``, ...
    interval : float or str
        Event time between two readings of a series: seconds, or a duration
        string (``"100ms"``).  Every rule duration scales with it.
    seed : int
        Seed of the calm readings and of their noise.
    noise : float
        Scale of the calm hosts' random noise (0: none).  The scripted
        series' hand-placed noise is always there.

    Attributes
    ----------
    hosts : list of str
        Host names, in order.
    roles : dict
        ``{"cpu": "web-0001", "disk": "web-0002", "latency": "web-0003",
        "silent": "web-0004"}``.
    scripted_hosts : tuple of str
        The hosts that have a role.
    calm_hosts : list of str
        The others.
    interval_ns : int
        The sampling interval, ns.
    incidents : tuple of Incident
        The scripted incidents, for display.
    """

    def __init__(self, hosts: int = 20, interval: float | str = "1s", seed: int = 0,
                 noise: float = 1.0) -> None:
        if not isinstance(hosts, int) or hosts < MIN_HOSTS:
            raise ValueError(f"a scenario needs at least {MIN_HOSTS} hosts, got {hosts!r}")
        self.interval_ns = parse_duration(interval, "interval")
        if self.interval_ns < 4_000_000:
            raise ValueError("interval must be at least 4ms (the TTL check ticks every interval/4)")
        if seed < 0:
            raise ValueError("seed must not be negative")
        self.seed = int(seed)
        self.noise = float(noise)
        self.hosts = [f"web-{i:04d}" for i in range(hosts)]
        self.roles = dict(_ROLES)
        self.scripted_hosts = tuple(_ROLES.values())
        self.calm_hosts = [h for h in self.hosts if h not in self.scripted_hosts]
        self._index = {h: i for i, h in enumerate(self.hosts)}
        self._role_of = {self._index[h]: r for r, h in _ROLES.items()}
        self._keys = np.array([entity_id(h) for h in self.hosts], np.uint64)
        self._metric_ids = np.array([metric_id(m) for m in METRICS], np.uint32)
        self._names = {"entities": dict(zip(self._keys.tolist(), self.hosts)),
                       "metrics": dict(zip(self._metric_ids.tolist(), METRICS))}
        r = self.roles
        self.incidents = (
            Incident(r["cpu"], ("mem",), 2, 3, "mem blips over crit for less than `for`: no alert"),
            Incident(r["cpu"], ("cpu",), 4, 17, "cpu 90% then 100%, back through 72% to 30%"),
            Incident(r["silent"], METRICS, _SILENT_FROM, _SILENT_UNTIL,
                     "goes silent, comes back"),
            Incident(r["latency"], ("latency_ms", "errors"), 20, 30,
                     "latency spike (p99), errors burst; readings held back"),
            Incident(r["disk"], ("disk_free",), 30, 44, "disk fills to 2% free, cleaned to 12%"),
        )
        # Per instance (the seed and hosts differ): the fate of each step.
        self._calm_cache = lru_cache(maxsize=4 * STEPS)(self._calm_step)

    # --- settings ---------------------------------------------------------

    def _dur(self, steps: int) -> str:
        return format_duration(steps * self.interval_ns)

    def rules_toml(self) -> str:
        """The rules of the scenario, as TOML text (``Engine(rules=...)``).

        Returns
        -------
        str
            ``[defaults]`` ttl (12 intervals) and lateness (3), and one rule
            per metric: cpu EWMA (warn 0.80, crit 0.95, clear 0.70, for 2
            intervals), mem last (0.90/0.97, for 2), disk_free last falling
            (0.10/0.05, clear 0.15), latency_ms p99 (50/100), errors win_sum
            (20/50).
        """
        return _RULES.format(interval=format_duration(self.interval_ns),
                             window=self._dur(WINDOW_STEPS), ttl=self._dur(TTL_STEPS),
                             lateness=self._dur(LATENESS_STEPS), for_=self._dur(FOR_STEPS))

    def engine_settings(self) -> dict:
        """Engine settings that go with the rules.

        Returns
        -------
        dict
            ``window`` (10 intervals), ``half_life`` (1 interval) and
            ``tick`` (a quarter interval), as duration strings: keyword
            arguments of :class:`engine.Engine` / fields of
            :class:`engine.EngineConfig`.
        """
        return {"window": self._dur(WINDOW_STEPS),
                "half_life": self._dur(HALF_LIFE_STEPS),
                "tick": format_duration(max(1_000_000, self.interval_ns // 4))}

    @property
    def window_ns(self) -> int:
        """Width of the engine's windows, ns."""
        return WINDOW_STEPS * self.interval_ns

    @property
    def ttl_ns(self) -> int:
        """The rules' TTL, ns."""
        return TTL_STEPS * self.interval_ns

    def align(self, t_ns: int) -> int:
        """The first window boundary at or after ``t_ns``: a start at which
        step ``10 * j`` opens window ``j`` (windows are aligned to the
        epoch, so that window-based stats come out the same every run)."""
        w = self.window_ns
        return -(-int(t_ns) // w) * w

    def time_of(self, step: int, start: int) -> int:
        """Event time of step ``step`` for a scenario anchored at ``start``."""
        return int(start) + int(step) * self.interval_ns

    @property
    def names(self) -> dict:
        """``{"entities": {id: name}, "metrics": {id: name}}`` of the fleet."""
        return self._names

    def scripted_alerts(self, begin: int = 0, end: int | None = None) -> list[tuple]:
        """The status changes the script makes (:data:`SCRIPTED_ALERTS`)
        whose step is in ``[begin, end)``.

        Parameters
        ----------
        begin, end : int, optional
            Steps; default: every change, the whole script.

        Returns
        -------
        list of tuple
            ``(host, metric, old, new, step)``, by step.
        """
        end = STEPS if end is None else end
        return sorted(((self.roles[role], metric, old, new, step)
                       for role, metric, old, new, step in SCRIPTED_ALERTS
                       if begin <= step < end), key=lambda a: (a[4], a[0], a[1]))

    # --- the script -------------------------------------------------------

    def _calm_step(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Calm readings of every host at one step, the noise kind of each
        (0 none, 1 reorder, 2 late, 3 duplicate) and its delay in steps."""
        rng = np.random.default_rng((self.seed, 0x5CE7, step))
        n, m = len(self.hosts), len(METRICS)
        values = np.empty((n, m))
        for j, name in enumerate(METRICS):
            lo, hi = CALM[name]
            if name == "errors":
                values[:, j] = (rng.random(n) < 0.2).astype(np.float64)
            else:
                values[:, j] = rng.uniform(lo, hi, n)
        u = rng.random((n, m))
        delay = rng.integers(0, 4, (n, m))
        kind = np.zeros((n, m), np.int8)
        if self.noise > 0:
            s = self.noise
            kind[u < s * (_REORDER + _LATE + _DUPLICATE)] = 3
            kind[u < s * (_REORDER + _LATE)] = 2
            kind[u < s * _REORDER] = 1
            # Only where every copy still falls inside the script.
            kind[(kind == 2) & (step > STEPS - 1 - LATE_DELAY)] = 0
            kind[(kind != 2) & (step > STEPS - 1 - 3)] = 0
            for i in self._role_of:
                kind[i] = 0
        return values, kind, delay

    def reading(self, host: str | int, metric: str | int, step: int) -> float | None:
        """The value host ``host`` reads for ``metric`` at step ``step``
        (``None``: no reading, the host is silent).  Defined for every step
        ``>= 0``; after the script every series keeps its final behaviour."""
        h = host if isinstance(host, int) else self._index[host]
        m = metric if isinstance(metric, int) else METRICS.index(metric)
        role = self._role_of.get(h)
        if role == "silent" and _SILENT_FROM <= step < _SILENT_UNTIL:
            return None
        script = _SCRIPT.get((role, METRICS[m]))
        if script is not None:
            v = script(step)
            if v is not None:
                return float(v)
        values, _, _ = self._calm_cache(int(step))
        return float(values[h, m])

    def _fate(self, h: int, m: int, step: int) -> tuple:
        """The steps at which the reading (h, m, step) is delivered."""
        role = self._role_of.get(h)
        if role is not None:
            return _SCRIPT_NOISE.get((role, METRICS[m], step), (step,))
        if step < 0 or step >= STEPS:
            return (step,)
        _, kind, delay = self._calm_cache(step)
        k, d = int(kind[h, m]), int(delay[h, m])
        if k == 1:
            return (step + 1 + d % 2,)
        if k == 2:
            return (step + LATE_DELAY,)
        if k == 3:
            return (step, step + d)
        return (step,)

    def _host_indices(self, hosts) -> list[int]:
        if hosts is None:
            return list(range(len(self.hosts)))
        if isinstance(hosts, str):
            hosts = [hosts]
        return sorted(self._index[h] if isinstance(h, str) else int(h) for h in hosts)

    def deliveries(self, step: int, hosts: Iterable[str] | None = None) -> list[tuple]:
        """What the fleet delivers at step ``step``, in delivery order.

        First the readings of the step (host by host, metric by metric; a
        duplicate delivered at once follows its original), then readings
        held back from earlier steps, oldest first.

        Parameters
        ----------
        step : int
            ``>= 0``.
        hosts : iterable of str, optional
            Only these hosts (default: the whole fleet).

        Returns
        -------
        list of tuple
            ``(host, metric, reading_step, value)``.
        """
        out = []
        idx = self._host_indices(hosts)
        for h in idx:
            for m in range(len(METRICS)):
                v = self.reading(h, m, step)
                if v is None:
                    continue
                for _ in range(self._fate(h, m, step).count(step)):
                    out.append((self.hosts[h], METRICS[m], step, v))
        for k in range(max(0, step - LATE_DELAY), step):
            for h in idx:
                for m in range(len(METRICS)):
                    fate = self._fate(h, m, k)
                    if fate == (k,) or step not in fate:
                        continue
                    v = self.reading(h, m, k)
                    if v is None:
                        continue
                    for _ in range(fate.count(step)):
                        out.append((self.hosts[h], METRICS[m], k, v))
        return out

    def delivery(self, step: int, start: int, *, fmt: str = "events",
                 hosts: Iterable[str] | None = None):
        """The batch delivered at step ``step``, stamped for ``start``.

        Parameters
        ----------
        step : int
            ``>= 0``; its batch is due at ``start + step * interval``.
        start : int
            Event time of step 0, ns since the epoch.
        fmt : {"events", "records", "json"}
            ``"events"``: an :data:`engine.EVENT_DTYPE` array
            (``Engine.submit``, ``Client.send``); ``"records"``: a list of
            dicts ``{"entity", "metric", "ts", "value"}`` (``Client.send_json``);
            ``"json"``: the same as JSON-lines bytes (the body of a type-2
            gateway frame, see :func:`engine.net.protocol.pack_json`).
        hosts : iterable of str, optional
            Only these hosts.
        """
        rows = self.deliveries(step, hosts)
        iv = self.interval_ns
        if fmt == "events":
            ev = np.zeros(len(rows), EVENT_DTYPE)
            if rows:
                hosts_, metrics_, steps_, values_ = zip(*rows)
                ev["key"] = self._keys[[self._index[h] for h in hosts_]]
                ev["metric"] = self._metric_ids[[METRICS.index(m) for m in metrics_]]
                ev["ts"] = int(start) + np.array(steps_, np.int64) * iv
                ev["value"] = values_
            return ev
        records = [{"entity": h, "metric": m, "ts": int(start) + k * iv, "value": v}
                   for h, m, k, v in rows]
        if fmt == "records":
            return records
        if fmt == "json":
            return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
        raise ValueError(f"fmt must be 'events', 'records' or 'json', got {fmt!r}")

    def batches(self, start: int, begin: int | None = None, end: int | None = None, *,
                fmt: str = "events", hosts: Iterable[str] | None = None
                ) -> Iterator[tuple[int, int, object]]:
        """The script's batches due in an event-time window.

        Parameters
        ----------
        start : int
            Event time of step 0, ns since the epoch (e.g. ``time.time_ns()``,
            or :meth:`align` of it).
        begin, end : int, optional
            Yield the batches due in ``[begin, end)`` (ns since the epoch);
            default: the whole script, steps ``0 .. STEPS - 1``.
        fmt : {"events", "records", "json"}
            See :meth:`delivery`.
        hosts : iterable of str, optional
            Only these hosts.

        Yields
        ------
        step : int
        due : int
            When the batch is due, ns (``start + step * interval``).
        batch : numpy.ndarray, list of dict or bytes
            Empty batches are skipped.
        """
        iv = self.interval_ns
        first = 0 if begin is None else max(0, -(-(int(begin) - int(start)) // iv))
        stop = STEPS if end is None else max(0, -(-(int(end) - int(start)) // iv))
        hosts = None if hosts is None else list(hosts)
        for step in range(first, stop):
            batch = self.delivery(step, start, fmt=fmt, hosts=hosts)
            if len(batch):
                yield step, self.time_of(step, start), batch

    def to_records(self, events: np.ndarray) -> list[dict]:
        """EVENT_DTYPE records of this fleet as dicts with names
        (``Client.send_json``)."""
        ents, mets = self._names["entities"], self._names["metrics"]
        return [{"entity": ents[k], "metric": mets[m], "ts": t, "value": v}
                for k, t, m, _f, v in events.tolist()]

    def __repr__(self) -> str:
        return (f"Scenario(hosts={len(self.hosts)}, "
                f"interval={format_duration(self.interval_ns)!r}, seed={self.seed})")


class Background:
    """Calm readings of a scenario's calm hosts, as fast as they can be
    submitted (the demo's load).

    Batches come from a pool made once, so that producing load costs far
    less than applying it; each batch gets fresh event times: it spans one
    millisecond from the later of the previous batch's end and the wall
    clock.  The pool's in-order readings cycle through the calm series (at
    most ``pool * batch`` of them a cycle), so a series reads again within a
    cycle of the pool and never falls silent for the TTL.  Errors read 0
    (the rule sums them per window, and a background series gets thousands
    of readings a window); the other readings stay in their calm ranges, so
    the rules never fire.

    A share ``late`` of a batch's readings are copies, at the end of the
    batch, of readings of the same batch moved up to five windows into the
    past: stale (older than their series' newest) and, beyond the
    lateness, late.  A copy always follows its series' in-order reading, so
    no series is ever created, or kept, by a reading older than the TTL: an
    old reading never makes a background series STALE (the demo's alerts
    are the script's only).

    Parameters
    ----------
    scenario : Scenario
    batch : int
        Readings per batch.
    pool : int
        Batches in the pool.
    late : float
        Share of a batch's readings that are copies from the past.
    seed : int, optional
        Default: the scenario's.
    """

    def __init__(self, scenario: Scenario, batch: int = 16384, pool: int = 16,
                 late: float = 0.01, seed: int | None = None) -> None:
        self._time = time.time_ns
        if not scenario.calm_hosts:
            raise ValueError("the scenario has no calm hosts")
        if batch < 1 or pool < 1 or not 0 <= late < 1:
            raise ValueError("batch and pool must be positive and late in [0, 1)")
        rng = np.random.default_rng((scenario.seed if seed is None else seed, 0xB6))
        keys = np.array([entity_id(h) for h in scenario.calm_hosts], np.uint64)
        mids = np.array([metric_id(m) for m in METRICS], np.uint32)
        nseries = len(keys) * len(mids)
        order = rng.permutation(nseries)
        lo = np.array([CALM[m][0] for m in METRICS])
        hi = np.array([CALM[m][1] for m in METRICS])
        errors = METRICS.index("errors")
        copies = int(batch * late)
        fresh = batch - copies
        self.batch = batch
        self.span = 1_000_000
        self.pool, self.offsets = [], []
        for p in range(pool):
            at = (p * fresh + np.arange(fresh)) % nseries
            s = order[at]
            h, m = s // len(mids), s % len(mids)
            ev = np.zeros(batch, EVENT_DTYPE)
            ev["key"][:fresh] = keys[h]
            ev["metric"][:fresh] = mids[m]
            ev["value"][:fresh] = np.where(m == errors, 0.0, rng.uniform(lo[m], hi[m]))
            offsets = np.empty(batch, np.int64)
            offsets[:fresh] = np.arange(fresh, dtype=np.int64) * self.span // fresh
            # The copies: readings of this batch, moved into the past; they
            # come after every in-order reading of the batch.
            of = rng.integers(0, fresh, copies)
            ev[fresh:] = ev[of]
            offsets[fresh:] = offsets[of] - rng.integers(1, 5 * scenario.window_ns, copies)
            self.pool.append(ev)
            self.offsets.append(offsets)
        self.clock = self._time()
        self.i = 0

    def next(self) -> np.ndarray:
        """The next batch, stamped after the previous one (or now, if later).
        The array is reused: submit it before asking for the next."""
        k = self.i % len(self.pool)
        ev = self.pool[k]
        self.i += 1
        self.clock = max(self.clock + self.span, self._time())
        np.add(self.offsets[k], self.clock, out=ev["ts"])
        return ev
