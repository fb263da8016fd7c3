"""Stubs for the compiled module engine._jsonl (ext/_jsonl.pyx)."""

from collections.abc import Buffer, Callable

import numpy as np

def count_lines(body: Buffer) -> int: ...
def fill(
    items: list,
    out: np.ndarray,
    entity_cache: dict,
    metric_cache: dict,
    new_entities: list,
    new_metrics: list,
    entity_hasher: Callable[[str], int],
    metric_hasher: Callable[[str], int],
    now: int,
    max_cached: int,
    strict: bool = ...,
) -> int: ...
