"""Stubs for the compiled module engine._worker (ext/_worker.pyx)."""

from collections.abc import Buffer

BLOCK_BYTES: int
CONTROL_OFFSET: int
COUNTERS_OFFSET: int
COUNTER_NAMES: tuple[str, ...]
STATUS_TIMEOUT: int
STATUS_STOPPED: int
ROW_PUT_BACK: int
INSERT_FINISHED: int

class WorkerLoop:
    def __init__(
        self,
        control_buffer: Buffer,
        table_buffer: Buffer,
        rules_buffer: Buffer,
        ring_offsets: list[int],
        block_offset: int,
        alert_ring_offset: int,
        settings: dict,
        wait_kind: int,
    ) -> None: ...
    repaired: int
    replayed: int
    def release_buffers(self) -> None: ...
    def crash_requested(self) -> int: ...
    def mark_ready(self, pid: int) -> None: ...
    def run(self, idle_ns: int) -> int: ...
