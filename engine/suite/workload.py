"""The seeded event stream every contender of the suite applies.

:func:`generate` builds a fleet of hosts x metrics whose activity is
Zipf-skewed (a few hot hosts send most events), with event time advancing
with the stream, some events slightly out of order, a few far late, and a
few incidents (one host's cpu ramping up for a span).  The same arguments
always give identical arrays.
"""

from __future__ import annotations

import numpy as np

from ..core.records import EVENT_DTYPE, entity_id, metric_id
from .base import Workload

__all__ = ["generate", "T0_NS", "STEP_NS", "host_name"]

#: Event time of the first event (2024-11-22T18:26:40Z), fixed so that the
#: stream does not depend on the wall clock.
T0_NS = 1_732_300_000_000_000_000

#: Event time between consecutive events of the stream (1 ms).
STEP_NS = 1_000_000


def host_name(i: int) -> str:
    """Name of host number ``i`` of the fleet (``"host-00017"``)."""
    return f"host-{i:05d}"


def _values(rng: np.random.Generator, name: str, host: np.ndarray, hosts: int) -> np.ndarray:
    """Realistic readings of metric ``name`` for events of hosts ``host``."""
    n = host.size
    if name == "cpu":  # fraction of a core busy: per-host base plus noise
        base = rng.uniform(0.05, 0.6, hosts)
        return np.clip(base[host] + rng.normal(0.0, 0.08, n), 0.0, 1.0)
    if name == "mem":  # fraction of memory used: steady per host
        base = rng.uniform(0.2, 0.85, hosts)
        return np.clip(base[host] + rng.normal(0.0, 0.02, n), 0.0, 1.0)
    if name == "disk":  # fraction of disk used: very steady
        base = rng.uniform(0.1, 0.95, hosts)
        return np.clip(base[host] + rng.normal(0.0, 0.005, n), 0.0, 1.0)
    if name == "latency_ms":  # request latency, log-normal around 5-40 ms
        base = rng.uniform(np.log(5.0), np.log(40.0), hosts)
        return np.exp(base[host] + rng.normal(0.0, 0.5, n))
    if name == "errors":  # errors per interval: mostly 0, sometimes a few
        rate = rng.gamma(0.5, 0.4, hosts)
        return rng.poisson(rate[host]).astype(np.float64)
    base = rng.uniform(10.0, 100.0, hosts)  # any other metric: a level plus noise
    return base[host] + rng.normal(0.0, 1.0, n)


def generate(
    events: int = 200_000,
    hosts: int = 1000,
    metrics: tuple[str, ...] = ("cpu", "mem", "disk", "latency_ms", "errors"),
    seed: int = 0,
    zipf: float = 1.1,
    out_of_order: float = 0.05,
    late: float = 0.01,
    incidents: int = 3,
    rate: float | None = None,
) -> Workload:
    """Generate one seeded workload.

    Parameters
    ----------
    events : int
        Number of events in the stream.
    hosts : int
        Size of the fleet; host ``i`` is named :func:`host_name(i) <host_name>`
        and keyed by ``entity_id`` of its name.
    metrics : tuple of str
        Metric names; each event picks one uniformly.  ``cpu``, ``mem``,
        ``disk``, ``latency_ms`` and ``errors`` get realistic values, any
        other name a level plus noise.
    seed : int
        Seed of the generator: the same arguments give identical arrays.
    zipf : float
        Exponent of the Zipf skew of host activity: the host of rank ``r``
        (ranks shuffled over the fleet) sends in proportion to ``r**-zipf``.
        0 makes every host equally active.
    out_of_order : float
        Fraction of events whose event time is moved back by 1-3 steps
        (:data:`STEP_NS` each): slightly out of order, may tie with another
        event of the same series.
    late : float
        Fraction of events moved back 1-30 s: far late.
    incidents : int
        Number of incidents: a host's cpu ramps up to about 0.98 over a span
        of about 5 % of the stream.
    rate : float or None
        Events per second a paced producer follows: ``created_ns[i] =
        i / rate * 1e9``.  ``None`` gives zeros (as fast as possible).

    Returns
    -------
    Workload
        ``events`` in stream order, ``created_ns``, ``seed`` and ``params``.

    Notes
    -----
    Event time advances by :data:`STEP_NS` per event from :data:`T0_NS`
    before the out-of-order and late shifts.
    """
    if events < 0 or hosts < 1 or not metrics:
        raise ValueError("need events >= 0, hosts >= 1 and at least one metric")
    if not (0.0 <= out_of_order <= 1.0 and 0.0 <= late <= 1.0):
        raise ValueError("out_of_order and late are fractions in [0, 1]")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive or None")
    rng = np.random.default_rng(seed)
    n = int(events)

    ranks = rng.permutation(hosts) + 1  # host i has Zipf rank ranks[i]
    weights = ranks.astype(np.float64) ** -float(zipf)
    weights /= weights.sum()
    host = rng.choice(hosts, size=n, p=weights)
    midx = rng.integers(0, len(metrics), n)

    ts = T0_NS + np.arange(n, dtype=np.int64) * STEP_NS
    ooo = rng.random(n) < out_of_order
    ts[ooo] -= rng.integers(1, 4, int(ooo.sum())) * STEP_NS
    lat = rng.random(n) < late
    ts[lat] -= rng.integers(1_000, 30_001, int(lat.sum())) * STEP_NS

    value = np.empty(n, np.float64)
    for j, name in enumerate(metrics):
        sel = midx == j
        value[sel] = _values(rng, name, host[sel], hosts)

    incident_list = []
    if "cpu" in metrics and n:
        cpu = metrics.index("cpu")
        span = max(1, n // 20)
        for _ in range(incidents):
            h = int(rng.choice(hosts, p=weights))
            start = int(rng.integers(0, max(1, n - span)))
            sel = np.flatnonzero((host == h) & (midx == cpu))
            sel = sel[(sel >= start) & (sel < start + span)]
            ramp = (sel - start) / span
            value[sel] = np.clip(value[sel] + ramp * (0.98 - value[sel]), 0.0, 1.0)
            incident_list.append({"host": host_name(h), "start": start, "span": span})

    keys = np.array([entity_id(host_name(i)) for i in range(hosts)], np.uint64)
    mids = np.array([metric_id(m) for m in metrics], np.uint32)
    out = np.zeros(n, EVENT_DTYPE)
    out["key"] = keys[host]
    out["ts"] = ts
    out["metric"] = mids[midx]
    out["value"] = value

    if rate is None:
        created = np.zeros(n, np.int64)
    else:
        created = (np.arange(n, dtype=np.float64) / rate * 1e9).astype(np.int64)

    params = {
        "events": n,
        "hosts": hosts,
        "metrics": list(metrics),
        "zipf": zipf,
        "out_of_order": out_of_order,
        "late": late,
        "incidents": incident_list,
        "rate": rate,
        "t0_ns": T0_NS,
        "step_ns": STEP_NS,
    }
    return Workload(events=out, created_ns=created, seed=seed, params=params)
