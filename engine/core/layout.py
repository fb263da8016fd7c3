"""The byte layout of an engine's control segment: where every ring,
doorbell, control word and counter lives."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Layout"]

RING_HEADER_BYTES = 192
WORKER_BLOCK_BYTES = 256
PRODUCER_BLOCK_BYTES = 128
EVENT_BYTES = 32
CONTROL_HEADER_BYTES = 64
ROW_BYTES = 256
INDEX_ENTRY_BYTES = 16
TABLE_HEADER_BYTES = 128



@dataclass(frozen=True)
class Layout:
    """Byte offsets inside the control segment of one engine.

    A header line (the alert doorbells), worker blocks (doorbell, control
    words, counters), then producer blocks (doorbell, counters), then one
    header per event ring and one per alert ring, then the ring records,
    page-aligned.  Ring ``(p, w)`` carries producer ``p``'s events to worker
    ``w``; alert ring ``w`` carries worker ``w``'s status changes to the
    engine.
    """

    workers: int
    producers: int
    ring_slots: int
    alert_slots: int = 4096

    #: The engine's alert thread sleeps on this doorbell, shared by every
    #: alert ring.
    ALERT_CONSUMER_BELL = 8
    #: Workers never wait for room in an alert ring (they count a drop),
    #: so its producer doorbell is one nobody sleeps on.
    ALERT_PRODUCER_BELL = 16

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

    def alert_header(self, w: int) -> int:
        return self.ring_header(self.producers, 0) + w * RING_HEADER_BYTES

    @property
    def data_base(self) -> int:
        end = self.alert_header(self.workers)
        return (end + 4095) // 4096 * 4096

    def ring_data(self, p: int, w: int) -> int:
        return self.data_base + self.ring_index(p, w) * self.ring_slots * EVENT_BYTES

    def alert_data(self, w: int) -> int:
        return self.ring_data(self.producers, 0) + w * self.alert_slots * EVENT_BYTES

    @property
    def total_bytes(self) -> int:
        return self.alert_data(self.workers)

    def rings_of_worker(self, w: int) -> list[int]:
        return [self.ring_header(p, w) for p in range(self.producers)]

    def rings_of_producer(self, p: int) -> list[int]:
        return [self.ring_header(p, w) for w in range(self.workers)]

    def all_rings(self) -> list[int]:
        return [self.ring_header(p, w) for p in range(self.producers) for w in range(self.workers)]
