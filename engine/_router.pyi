"""Stubs for the compiled module engine._router (ext/_router.pyx)."""

from collections.abc import Buffer

import numpy as np

COUNTER_NAMES: tuple[str, ...]
STATUS_BUSY: int

def shard_of(keys: np.ndarray, workers: int) -> np.ndarray: ...

class Producer:
    def __init__(
        self,
        buffer: Buffer,
        ring_offsets: list[int],
        block_offset: int,
        all_ring_offsets: list[int],
        ts_min: int,
        ts_max: int,
        wait_kind: int,
        chunk: int = 0,
    ) -> None: ...
    def release_buffer(self) -> None: ...
    def submit(self, events: np.ndarray, start: int, slice_ns: int,
               markers: bool = False) -> tuple[int, int, int]: ...
    def flush_begin(self) -> None: ...
    def flush_wait(self, slice_ns: int) -> int: ...
