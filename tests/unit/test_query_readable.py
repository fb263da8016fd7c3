"""engine.query.readable: the Python sketch decoder agrees with the
reference (tests/health_reference.py) and with the kernel's own decoder,
also when a window's counters add up to more than a u16 holds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import _query
from engine.core.layout import SKETCH_BUCKETS
from engine.core.records import STATE_DTYPE
from engine.query.readable import (
    QUANTILES,
    merge_sketches,
    merged_quantile,
    series_dict,
    sketch_quantile,
)
from tests.health_reference import quantile_from_sketch


def _row(sketch: list[int], base: int = 4092) -> np.ndarray:
    rows = np.zeros(1, STATE_DTYPE)
    rows["count"] = rows["win_count"] = sum(sketch)
    rows["sk_base"] = base
    rows["sketch"][0, :len(sketch)] = sketch
    _mark_used(rows, sketch)
    rows["win_min"], rows["win_max"] = 0.1, 1e9
    return rows


def _mark_used(rows: np.ndarray, counts) -> None:
    """sk_lo and sk_hi as a table's row has them: the lowest and highest
    non-zero counters (0, 0 when none is)."""
    used = [i for i, c in enumerate(counts) if c]
    rows["sk_lo"], rows["sk_hi"] = (used[0], used[-1]) if used else (0, 0)


@pytest.mark.parametrize("sketch", [[3, 1, 0, 2], [40000, 30000, 100], [65535] * 22,
                                    [0] * 40 + [7, 0, 1] + [0] * 40 + [2]])
def test_row_and_merged_quantiles_match_the_reference(sketch):
    rows = _row(sketch)
    got = series_dict(rows[0])["quantiles"]
    merged = merge_sketches(rows)
    for label, q in QUANTILES:
        want = quantile_from_sketch(rows["sketch"][0], 4092, 0.1, 1e9, q)
        assert got[label] == want, label
        assert merged_quantile(merged, q) == want, label


@settings(max_examples=300, deadline=None)
@given(
    counts=st.lists(st.integers(0, 65535) | st.just(0), min_size=SKETCH_BUCKETS,
                    max_size=SKETCH_BUCKETS),
    base=st.integers(-2000, 6000),
    shift=st.integers(0, 3),
    bounds=st.tuples(st.floats(-1e12, 1e12), st.floats(-1e12, 1e12)),
    q=st.sampled_from([0.0, 0.01, 0.5, 0.95, 0.99, 1.0]),
)
def test_the_python_decoder_agrees_with_the_kernels(counts, base, shift, bounds, q):
    """engine.query.readable decodes a row's sketch as the rules do: the
    kernel's own sketch_quantile (engine._query.sketch_quantile_row) is
    the reference, on random counters, bases, halvings and bounds."""
    rows = np.zeros(1, STATE_DTYPE)
    lo, hi = min(bounds), max(bounds)
    rows["sketch"][0] = counts
    _mark_used(rows, counts)
    rows["sk_base"], rows["sk_shift"] = base, shift
    rows["win_count"] = rows["count"] = max(1, sum(counts))
    rows["win_min"], rows["win_max"] = lo, hi
    want = _query.sketch_quantile_row(rows[0], q)
    got = sketch_quantile(base, rows["sketch"][0], int(rows["win_count"][0]), lo, hi, q)
    if math.isnan(want):
        assert got is None
    else:
        assert got == want
