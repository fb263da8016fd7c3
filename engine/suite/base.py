"""What every contender of the benchmark suite implements, and what it
returns.

A contender applies one :class:`Workload` (a seeded stream of events) to
per-series state with its own design (a dict behind a lock, asyncio actors,
worker processes, ringflow, ...), and returns the final state of every
series plus its measurements.  The oracle (:mod:`engine.suite.oracle`) then
says whether that final state is right; a wrong contender is reported as
wrong whatever its speed.

State per series, compared by the oracle: ``count``, ``sum``, ``min``,
``max``, ``last`` and ``last_ts``, where ``last`` is the value of the event
with the largest ``ts`` (ties: the one later in the stream) and an older
event never replaces it.  A contender that lets an older event overwrite a
newer ``last`` counts a *stale overwrite* (it must count them honestly: the
suite reports them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Workload", "RunResult", "Contender", "STATE_FIELDS"]

#: The per-series fields every contender returns, in this order.
STATE_FIELDS = ("count", "sum", "min", "max", "last", "last_ts")


@dataclass
class Workload:
    """One seeded stream of events for every contender.

    Attributes
    ----------
    events : numpy.ndarray
        ``engine.EVENT_DTYPE`` records in stream (arrival) order.
    created_ns : numpy.ndarray
        int64, one per event: when the event is due to be created, in ns
        relative to the start of the run (a contender adds its own start
        time); latency is measured from creation to applied.  All zeros
        means "as fast as possible" (throughput runs).
    seed : int
    params : dict
        The generator's settings (hosts, metrics, zipf, out-of-order and
        late fractions, incidents), recorded in results.json.
    """

    events: np.ndarray
    created_ns: np.ndarray
    seed: int
    params: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.events)


@dataclass
class RunResult:
    """What a contender measured.

    Attributes
    ----------
    name : str
        The contender's name.
    seconds : float
        Wall time from the first event submitted to the last one applied.
    state : dict
        ``{(key, metric): (count, sum, min, max, last, last_ts)}``.
    latencies_ns : numpy.ndarray
        int64 creation-to-applied latencies of a sample of events (may be
        empty when the contender cannot observe "applied" per event).
    stale_overwrites : int
        How often an event older than a series' ``last_ts`` replaced ``last``.
    peak_rss_bytes : int
        Peak resident memory of the contender's processes (sum over them).
    cpu_seconds : float
        User + system CPU of the contender's processes during the run.
    producers : int
        Concurrent producers/clients used.
    notes : str
        How it was tuned, or anything a reader must know.
    """

    name: str
    seconds: float
    state: dict
    latencies_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    stale_overwrites: int = 0
    peak_rss_bytes: int = 0
    cpu_seconds: float = 0.0
    producers: int = 1
    notes: str = ""

    @property
    def events_per_s(self) -> float:
        total = sum(s[0] for s in self.state.values())
        return total / self.seconds if self.seconds > 0 else float("nan")


class Contender(ABC):
    """One design under test.

    Subclasses set ``name`` (short, unique: it is a CLI and JSON key),
    ``description`` (one line for the report) and ``tuning`` (how it was made
    as good as its design allows: no strawmen).  ``single_threaded`` is true
    for a design that is one thread whatever the producers: the suite then
    runs it with 1 producer only.
    """

    name: str = ""
    description: str = ""
    tuning: str = ""
    single_threaded: bool = False

    @abstractmethod
    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        """Apply the whole workload with ``producers`` concurrent producers
        (threads, tasks, processes or clients, as the design has them) and
        return the final state and measurements.  Must clean up everything
        it started (threads, processes, sockets, segments) before returning,
        also on error."""
