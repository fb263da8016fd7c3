"""The NumPy dtypes mirror the C structs byte for byte, and the control
segment layout keeps every shared word on its own cache line."""

import numpy as np
import pytest

import engine
from engine import _table
from engine.core.config import EngineConfig
from engine.core.layout import SKETCH_BUCKETS, SKETCH_FIRST, Layout, field_offset


def test_event_dtype_matches_the_c_struct():
    offsets = _table.event_offsets()
    assert engine.EVENT_DTYPE.itemsize == offsets.pop("itemsize") == 32
    for name, off in offsets.items():
        assert engine.EVENT_DTYPE.fields[name][1] == off, name


def test_state_dtype_matches_the_c_struct():
    """384 bytes per series with windows, views, status and the sketch
    (issue 16: quantiles over a 2**21 range), every field where the kernel
    puts it."""
    offsets = _table.row_offsets()
    assert engine.STATE_DTYPE.itemsize == _table.ROW_BYTES == 384
    assert set(offsets) == set(engine.STATE_DTYPE.names)
    for name, off in offsets.items():
        assert engine.STATE_DTYPE.fields[name][1] == off, name
    assert engine.STATE_DTYPE["sketch"].shape == (_table.SKETCH_SIZE,) == (SKETCH_BUCKETS,)
    # What every in-order event in the current window touches stays in the
    # first two cache lines, the line a window's first value counts in is
    # line 2 (prefetched with the row: ext/row.pxd), and what only late,
    # stale or rolling events and status changes touch comes after the
    # sketch: what a roll writes all in line 5.
    sketch_end = offsets["sketch"] + 2 * _table.SKETCH_SIZE
    assert field_offset("StateRow", "sketch") == offsets["sketch"]
    assert 128 <= offsets["sketch"] + 2 * SKETCH_FIRST < 192
    for name in ("version", "count", "sum", "min", "max", "last", "last_ts", "mean", "m2",
                 "ewma", "win_start", "win_count", "win_sum", "win_min", "win_max", "sk_base",
                 "status", "rule", "pending", "sk_shift", "sk_lo", "sk_hi", "fold_age"):
        assert offsets[name] + engine.STATE_DTYPE[name].itemsize <= 128, name
    for name in ("key", "metric", "first_ts", "stale", "late", "prev_count", "prev_sum",
                 "status_since", "pending_since", "view", "flags"):
        assert offsets[name] >= sketch_end, name
    for name in ("prev_count", "prev_sum", "prev_min", "prev_max", "view", "flags"):
        assert 320 <= offsets[name] < 384, name


def test_alert_and_rule_dtypes_match_the_c_structs():
    from engine.health.rules import RULE_DTYPE, RULES_HEADER_BYTES

    offsets = _table.alert_offsets()
    assert engine.ALERT_DTYPE.itemsize == offsets.pop("itemsize") == 32
    assert set(offsets) == set(engine.ALERT_DTYPE.names)
    for name, off in offsets.items():
        assert engine.ALERT_DTYPE.fields[name][1] == off, name
    offsets = _table.rule_offsets()
    assert RULE_DTYPE.itemsize == offsets.pop("itemsize") == 64
    assert RULES_HEADER_BYTES == offsets.pop("header") == _table.RULES_HEADER_BYTES
    for name, off in offsets.items():
        assert RULE_DTYPE.fields[name][1] == off, name


@pytest.mark.parametrize("workers,producers,slots", [(1, 1, 16), (2, 2, 1024), (7, 3, 4096)])
def test_layout_regions_do_not_overlap_and_are_aligned(workers, producers, slots):
    lay = Layout(workers, producers, slots, alert_slots=64)
    regions = [(0, 64)]
    for w in range(workers):
        regions.append((lay.worker_block(w), 256))
        regions.append((lay.alert_header(w), 192))
        regions.append((lay.alert_data(w), 64 * 32))
    for p in range(producers):
        regions.append((lay.producer_block(p), 128))
        for w in range(workers):
            regions.append((lay.ring_header(p, w), 192))
            regions.append((lay.ring_data(p, w), slots * 32))
    regions.sort()
    for (a, alen), (b, _) in zip(regions, regions[1:]):
        assert a + alen <= b
    assert all(off % 64 == 0 for off, _ in regions)
    assert regions[-1][0] + regions[-1][1] == lay.total_bytes


def test_table_sizing_keeps_the_index_at_most_a_quarter_full():
    cfg = EngineConfig(table_capacity=100_000)
    assert cfg.table_slots >= 4 * cfg.table_capacity
    assert cfg.table_slots & (cfg.table_slots - 1) == 0
    assert cfg.table_bytes() == _table.table_bytes(cfg.table_slots, cfg.table_capacity)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("workers", 0, "workers"),
        ("workers", 2.5, "workers"),
        ("ring_capacity", 8, "ring_capacity"),
        ("table_capacity", 0, "table_capacity"),
        ("wait", "nap", "wait"),
        ("window", 0, "window"),
        ("window", "1 minute", "window"),
        ("half_life", -1, "half_life"),
        ("lateness", "2m", "lateness"),
        ("views", (1, 5), "views"),
        ("alert_capacity", 2, "alert_capacity"),
        ("tick", "10us", "tick"),
        ("rules", "[[rule]]\nmetric = 'cpu'\n", "warn"),
        ("rules", "/no/such/rules.toml", "not found"),
        ("ts_min", engine.DEFAULT_TS_MAX, "ts_min"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_error(field, value, match):
    with pytest.raises(engine.errors.ConfigError, match=match):
        EngineConfig(**{field: value})


def test_names_hash_as_the_design_says():
    import hashlib

    digest = hashlib.blake2b(b"web-01", digest_size=8).digest()
    assert engine.entity_id("web-01") == int.from_bytes(digest, "little")
    assert engine.metric_id("cpu") == int.from_bytes(
        hashlib.blake2b(b"cpu", digest_size=4).digest(), "little"
    )
    assert engine.entity_id("web-01") != engine.entity_id("web-02")


def test_make_events_accepts_names_ids_and_broadcasts():
    ev = engine.make_events(["a", "b"], "cpu", [10, 20], [1.0, 2.0])
    assert ev.dtype == engine.EVENT_DTYPE
    assert list(ev["key"]) == [engine.entity_id("a"), engine.entity_id("b")]
    assert set(ev["metric"]) == {engine.metric_id("cpu")}
    assert list(ev["ts"]) == [10, 20]
    ev = engine.make_events(np.array([1, 2, 3], np.uint64), 7, None, [1, 2, 3])
    assert (ev["ts"] > engine.DEFAULT_TS_MIN).all()
    with pytest.raises(engine.errors.InvalidEvents, match="keys has 2"):
        engine.make_events([1, 2], 1, None, [1.0, 2.0, 3.0])
    with pytest.raises(engine.errors.InvalidEvents, match="u64 ids"):
        engine.make_events([-1], 1, None, [1.0])
    with pytest.raises(engine.errors.InvalidEvents, match="ts must be integer"):
        engine.make_events([1], 1, [1.5], [1.0])


def test_ids_and_names_mix_in_one_sequence():
    ev = engine.make_events([7, "web-01", 2**64 - 1], ["cpu", 3, 2**32 - 1], None, [1, 2, 3])
    assert ev["key"].tolist() == [7, engine.entity_id("web-01"), 2**64 - 1]
    assert ev["metric"].tolist() == [engine.metric_id("cpu"), 3, 2**32 - 1]
    with pytest.raises(engine.errors.InvalidEvents, match="u32 ids"):
        engine.make_events([1], [2**32], None, [1.0])
    with pytest.raises(engine.errors.InvalidEvents, match="32 bits"):
        engine.make_events([1], np.array([2**32], np.uint64), None, [1.0])


def test_status_codes_mirror_the_kernels():
    """engine.errors maps the kernels' codes without importing them: the two
    lists must agree."""
    from engine import _ring, _router, _worker, errors

    assert (_ring.STATUS_OK, _ring.STATUS_TIMEOUT) == (errors.STATUS_OK, errors.STATUS_TIMEOUT)
    assert _worker.STATUS_STOPPED == errors.STATUS_STOPPED
    assert _router.STATUS_BUSY == errors.STATUS_BUSY
