"""engine.query.readable: the Python sketch decoder agrees with the
reference (tests/health_reference.py), also when a window's counters add up
to more than a u16 holds."""

from __future__ import annotations

import numpy as np
import pytest

from engine.core.records import STATE_DTYPE
from engine.query.readable import QUANTILES, merge_sketches, merged_quantile, series_dict
from tests.health_reference import quantile_from_sketch


def _row(sketch: list[int], base: int = 4092) -> np.ndarray:
    rows = np.zeros(1, STATE_DTYPE)
    rows["count"] = rows["win_count"] = sum(sketch)
    rows["sk_base"] = base
    rows["sketch"][0, :len(sketch)] = sketch
    rows["win_min"], rows["win_max"] = 0.1, 1e9
    return rows


@pytest.mark.parametrize("sketch", [[3, 1, 0, 2], [40000, 30000, 100], [65535] * 22])
def test_row_and_merged_quantiles_match_the_reference(sketch):
    rows = _row(sketch)
    got = series_dict(rows[0])["quantiles"]
    merged = merge_sketches(rows)
    for label, q in QUANTILES:
        want = quantile_from_sketch(rows["sketch"][0], 4092, 0.1, 1e9, q)
        assert got[label] == want, label
        assert merged_quantile(merged, q) == want, label
