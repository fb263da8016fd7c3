"""Engine settings and the byte layout of an engine's control segment."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .records import DEFAULT_TS_MAX, DEFAULT_TS_MIN

__all__ = ["EngineConfig", "Layout", "WAIT_STRATEGIES"]

#: Wait strategies, from lowest latency and highest idle CPU to the reverse.
WAIT_STRATEGIES = ("spin", "yield", "sleep", "block")
_WAIT_CODES = {name: code for code, name in enumerate(WAIT_STRATEGIES)}

RING_HEADER_BYTES = 192
WORKER_BLOCK_BYTES = 256
PRODUCER_BLOCK_BYTES = 128
EVENT_BYTES = 32
CONTROL_HEADER_BYTES = 64
ROW_BYTES = 128
INDEX_ENTRY_BYTES = 16
TABLE_HEADER_BYTES = 128


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@dataclass(frozen=True)
class EngineConfig:
    """Settings of an :class:`engine.Engine`.

    Parameters
    ----------
    workers : int
        Worker processes, each owning one shard of the series.
    producers : int
        Producer slots: one ring per (producer, worker) pair keeps every ring
        single-producer.  Slot 0 is the embedding process's ``submit``; the
        others are handed out by :meth:`engine.Engine.producer` (the network
        gateway takes two: one for PULL ingest, one for acked ingest).
    ring_capacity : int
        Records per ring, rounded up to a power of two.
    table_capacity : int
        Series each worker can hold; a new series past it is refused and
        counted (never a silent drop, never a resize under readers).
    wait : {"block", "sleep", "yield", "spin"}
        What an idle worker and a producer facing a full ring do.  ``block``
        (the default) parks on a futex and costs nothing while idle.
    ewma_alpha : float
        Weight of each in-order reading in the exponentially weighted mean.
    ts_min, ts_max : int
        Sane range of event times (ns since the epoch); events outside it are
        rejected and counted.
    start_timeout : float
        Seconds to wait for the workers to come up.
    """

    workers: int = 2
    producers: int = 3
    ring_capacity: int = 1 << 16
    table_capacity: int = 1 << 18
    wait: str = "block"
    ewma_alpha: float = 0.1
    ts_min: int = DEFAULT_TS_MIN
    ts_max: int = DEFAULT_TS_MAX
    start_timeout: float = 60.0

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(isinstance(self.workers, int) and 1 <= self.workers <= 256,
             f"workers must be an integer in 1..256, got {self.workers!r}")
        need(isinstance(self.producers, int) and 1 <= self.producers <= 64,
             f"producers must be an integer in 1..64, got {self.producers!r}")
        need(isinstance(self.ring_capacity, int) and 16 <= self.ring_capacity <= 1 << 26,
             f"ring_capacity must be in 16..2**26 records, got {self.ring_capacity!r}")
        need(isinstance(self.table_capacity, int) and 1 <= self.table_capacity <= 1 << 28,
             f"table_capacity must be in 1..2**28 series, got {self.table_capacity!r}")
        need(self.wait in _WAIT_CODES,
             f"wait must be one of {', '.join(WAIT_STRATEGIES)}; got {self.wait!r}")
        need(0.0 < float(self.ewma_alpha) <= 1.0,
             f"ewma_alpha must be in (0, 1], got {self.ewma_alpha!r}")
        need(int(self.ts_min) < int(self.ts_max), "ts_min must be below ts_max")
        need(self.start_timeout > 0, "start_timeout must be positive")

    @property
    def wait_code(self) -> int:
        return _WAIT_CODES[self.wait]

    @property
    def ring_slots(self) -> int:
        return _pow2_at_least(self.ring_capacity)

    @property
    def table_slots(self) -> int:
        """Index entries per table: at most a quarter full, so that nearly
        every lookup ends at its home slot (a second probe is a branch the
        CPU cannot predict; bench/kernel.py measured 85 -> 116 M events/s
        at 1k series going from half to a quarter full)."""
        return _pow2_at_least(4 * self.table_capacity)

    def table_bytes(self) -> int:
        return (TABLE_HEADER_BYTES + self.table_slots * INDEX_ENTRY_BYTES
                + self.table_capacity * ROW_BYTES)


@dataclass(frozen=True)
class Layout:
    """Byte offsets inside the control segment of one engine.

    Worker blocks (doorbell, control words, counters), then producer blocks
    (doorbell, counters), then one header per ring, then the ring records,
    page-aligned.  Ring ``(p, w)`` carries producer ``p``'s events to worker
    ``w``.
    """

    workers: int
    producers: int
    ring_slots: int

    @property
    def worker_base(self) -> int:
        return CONTROL_HEADER_BYTES

    def worker_block(self, w: int) -> int:
        return self.worker_base + w * WORKER_BLOCK_BYTES

    @property
    def producer_base(self) -> int:
        return self.worker_block(self.workers)

    def producer_block(self, p: int) -> int:
        return self.producer_base + p * PRODUCER_BLOCK_BYTES

    @property
    def ring_header_base(self) -> int:
        return self.producer_block(self.producers)

    def ring_index(self, p: int, w: int) -> int:
        return p * self.workers + w

    def ring_header(self, p: int, w: int) -> int:
        return self.ring_header_base + self.ring_index(p, w) * RING_HEADER_BYTES

    @property
    def data_base(self) -> int:
        end = self.ring_header(self.producers, 0)
        return (end + 4095) // 4096 * 4096

    def ring_data(self, p: int, w: int) -> int:
        return self.data_base + self.ring_index(p, w) * self.ring_slots * EVENT_BYTES

    @property
    def total_bytes(self) -> int:
        return self.ring_data(self.producers, 0)

    def rings_of_worker(self, w: int) -> list[int]:
        return [self.ring_header(p, w) for p in range(self.producers)]

    def rings_of_producer(self, p: int) -> list[int]:
        return [self.ring_header(p, w) for w in range(self.workers)]

    def all_rings(self) -> list[int]:
        return [self.ring_header(p, w) for p in range(self.producers) for w in range(self.workers)]
