"""Stubs for the compiled module engine._wire (ext/_wire.pyx)."""

import numpy as np

DRAINED: int
PENDING: int
LIMIT: int
ERROR: int
REASON_NAMES: tuple[str, ...]

def bind_libzmq() -> None: ...

class Frame:
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int) -> memoryview: ...

class Drain:
    fill: int
    frames: int
    last_errno: int
    def __init__(
        self, staging: np.ndarray, max_message_bytes: int, direct_records: int
    ) -> None: ...
    @property
    def rejected(self) -> dict[str, int]: ...
    def take_batch(self) -> np.ndarray: ...
    def take_pending(self) -> Frame | None: ...
    def drain(self, socket: int, max_frames: int) -> int: ...

def send_copies(socket: int, frame: bytes, count: int) -> int: ...
