"""The compiled state-table kernels (engine._table) against the plain
Python / NumPy oracles in tests/reference.py, on random and adversarial
streams: per-series statistics, event-time rules, rejection of bad events,
a full table, the probe chains of the index, batch splitting, snapshots and
routed reads through a TableSet."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from engine import (
    ALERT_DTYPE,
    DEFAULT_TS_MAX,
    DEFAULT_TS_MIN,
    EVENT_DTYPE,
    STATE_DTYPE,
    _query,
    _table,
)
from engine.core.layout import EVENT_MARKER, PRODUCER_MARK_BYTES, PRODUCER_MARK_SLOTS
from engine.core.shm import Segment
from tests.reference import (
    admitted_mask_ref,
    aggregate_ref,
    mix64_np,
    sequential_moments_ref,
    series_state_ref,
    shard_ref,
    valid_mask,
)

U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1
#: The largest metric id a client may send (U32_MAX is PRODUCER_METRIC).
TOP_METRIC = U32_MAX - 1
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
EPS = sys.float_info.epsilon
T0 = 1_700_000_000 * 10**9          # an ordinary event time inside the default range
HALF_LIFE = 2.0                     # ns: event times here are a few ns apart
WINDOW = 10**9
WIDE_MAX = I64_MAX - 4 * WINDOW      # the kernels' widest event-time range

SETTINGS = _table.Settings(ts_min=0, ts_max=WIDE_MAX, window_ns=WINDOW, half_life_ns=HALF_LIFE)
NO_ALERTS = np.zeros(0, ALERT_DTYPE)

# The raw index entry, to check the probe chains behind the API.
INDEX_DTYPE = np.dtype([("key", "<u8"), ("metric", "<u4"), ("row1", "<u4")])
HEADER_DTYPE = np.dtype(
    [("magic", "<u8"), ("slots", "<u8"), ("mask", "<u8"), ("limit", "<u8"), ("used", "<u8")]
)
TABLE_MAGIC = 0x52465441424C4534

# No explain phase: it re-runs a failing example under a tracer for
# minutes; the shrunk example and the reproduce blob are enough.
FAST = settings(max_examples=100, deadline=None,
                phases=[p for p in Phase if p is not Phase.explain])
SPECIAL_KEYS = [0, 1, 2, 2**32, 2**63, U64_MAX - 1, U64_MAX, 0x9E3779B97F4A7C15]
SPECIAL_METRICS = [0, 1, 2, 2**31, U32_MAX - 1, U32_MAX]
EXTREME_VALUES = [
    0.0, -0.0, 1.0, -1.0, 1e300, -1e300, 5e-324, -5e-324,
    2.2250738585072014e-308, -2.2250738585072014e-308, 1e-300, 123456.789,
    sys.float_info.max, -sys.float_info.max, 0.9 * sys.float_info.max,
]
BAD_VALUES = [math.nan, -math.nan, math.inf, -math.inf]


# ----------------------------------------------------------------- helpers

def make_table(slots: int = 256, limit: int = 128):
    """A table in a zero-filled bytearray: (table, buffer)."""
    buf = bytearray(_table.table_bytes(slots, limit))
    _table.init_table(buf, slots, limit)
    return _table.Table(buf), buf


def make_events(keys, metrics, ts, values) -> np.ndarray:
    n = len(values)
    ev = np.zeros(n, EVENT_DTYPE)
    ev["key"] = np.asarray(keys, dtype=np.uint64)
    ev["metric"] = np.asarray(metrics, dtype=np.uint32)
    ev["ts"] = np.asarray(ts, dtype=np.int64)
    ev["value"] = np.asarray(values, dtype=np.float64)
    return ev


def apply(t, ev, ts_min=DEFAULT_TS_MIN, ts_max=DEFAULT_TS_MAX, half_life=HALF_LIFE):
    """Apply one batch (no rules); every event must be accounted for (no
    silent drop).  Returns (applied, invalid, full, stale)."""
    settings = _table.Settings(ts_min=ts_min, ts_max=ts_max, window_ns=WINDOW,
                               half_life_ns=half_life)
    counts = t.apply(np.ascontiguousarray(ev), settings, np.zeros(0, ALERT_DTYPE))[:4]
    applied, invalid, full, stale = counts
    assert applied + invalid + full == len(ev), counts
    assert stale <= applied
    return counts


def snapshot(t) -> np.ndarray:
    out = np.zeros(t.used, STATE_DTYPE)
    n = t.snapshot_into(out)
    assert n == len(out)
    return out


def find(t, key, metric):
    """The row of (key, metric), or None."""
    out = np.zeros(1, STATE_DTYPE)
    return out[0].copy() if t.find_into(key, metric, out) else None


def close(a: float, b: float, abs_tol: float, rel_tol: float = 1e-9) -> bool:
    """Equal within rounding; NaN only matches NaN and an infinity only the
    same infinity (an overflow must not go unnoticed, nor appear from
    nowhere)."""
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)


def values_by_series(ev: np.ndarray) -> dict:
    out: dict = {}
    for k, m, x in zip(ev["key"].tolist(), ev["metric"].tolist(), ev["value"].tolist()):
        out.setdefault((k, m), []).append(x)
    return out


def assert_rows_match(t, applied_events, ts_min, ts_max, half_life, sequential=False):
    """Every row of ``t`` equals the sequential oracle folded over
    ``applied_events``, in first-appearance order; find_into agrees.
    ``sequential`` takes sum, mean and var from a running fold instead of
    NumPy (for adversarial values, where pairwise sums and two-pass
    variance legitimately round or overflow differently)."""
    with np.errstate(over="ignore", invalid="ignore"):    # np.var of +-1e300
        ref = series_state_ref(applied_events, ts_min, ts_max, half_life)
    vals = values_by_series(applied_events[valid_mask(applied_events, ts_min, ts_max)])
    rows = snapshot(t)
    assert t.used == len(ref) == len(rows)
    assert [(int(r["key"]), int(r["metric"])) for r in rows] == list(ref)
    for r in rows:
        s = (int(r["key"]), int(r["metric"]))
        want = ref[s]
        xs = vals[s]
        for f in ("count", "last_ts", "first_ts", "stale"):
            assert int(r[f]) == want[f], (s, f, r[f], want[f])
        for f in ("min", "max", "last"):
            assert float(r[f]) == want[f], (s, f, r[f], want[f])
        assert r["version"] % 2 == 0 and r["version"] >= 2
        n, big = len(xs), max(abs(x) for x in xs)
        tol = 8 * n * EPS * big             # rounding of a running sum / mean
        if sequential:
            want = {**want, **sequential_moments_ref(xs)}
        assert close(r["sum"], want["sum"], tol), (s, r["sum"], want["sum"])
        assert close(r["mean"], want["mean"], tol), (s, r["mean"], want["mean"])
        var = float(r["m2"]) / int(r["count"])
        assert close(var, want["var"], tol * big), (s, var, want["var"])
        if math.isfinite(want["ewma"]):     # the oracle's own update may overflow
            assert close(r["ewma"], want["ewma"], tol, 1e-12), (s, r["ewma"], want["ewma"])
        # Finite readings keep mean and EWMA (weighted averages of them)
        # finite and between min and max; the variance may overflow, never NaN.
        assert not math.isnan(var), (s, var)
        for f in ("mean", "ewma"):
            v = float(r[f])
            assert math.isfinite(v), (s, f, v)
            assert float(r["min"]) - tol <= v <= float(r["max"]) + tol, (s, f, v)
        assert find(t, *s).tobytes() == r.tobytes()
    return ref


def check_index(t, buf) -> np.ndarray:
    """The raw index obeys linear probing: one entry per row, every entry
    reachable from its home slot through occupied slots only."""
    head = np.frombuffer(buf, HEADER_DTYPE, count=1)[0]
    slots, used = int(head["slots"]), int(head["used"])
    assert head["magic"] == TABLE_MAGIC and slots == t.slots and head["mask"] == slots - 1
    assert head["limit"] == t.limit and used == t.used
    index = np.frombuffer(buf, INDEX_DTYPE, count=slots, offset=_table.HEADER_BYTES).copy()
    occupied = index["row1"] != 0
    assert occupied.sum() == used
    assert sorted(index["row1"][occupied] - 1) == list(range(used))
    rows = snapshot(t)
    where = np.flatnonzero(occupied)
    homes = t.series_slots(index["key"][where], index["metric"][where])
    for s, home in zip(where.tolist(), homes.tolist()):
        e = index[s]
        r = rows[e["row1"] - 1]
        assert (r["key"], r["metric"]) == (e["key"], e["metric"])
        p = home
        while p != s:
            assert occupied[p], f"entry at slot {s} unreachable from home {home}"
            p = (p + 1) % slots
    return index


# -------------------------------------------------------------- strategies

keys_st = st.one_of(st.sampled_from(SPECIAL_KEYS), st.integers(0, U64_MAX))
metrics_st = st.one_of(st.sampled_from(SPECIAL_METRICS), st.integers(0, U32_MAX))
ordinary_values = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.integers(-1000, 1000).map(float),
)


@st.composite
def streams(draw, values=ordinary_values, max_series=8, max_size=120):
    """A stream over a small pool of series (so series repeat), with
    clustered times (duplicates, out of order) and some invalid events."""
    pool = draw(st.lists(st.tuples(keys_st, metrics_st), min_size=1, max_size=max_series,
                         unique=True))
    n = draw(st.integers(0, max_size))
    which = draw(st.lists(st.integers(0, len(pool) - 1), min_size=n, max_size=n))
    times = draw(st.lists(st.integers(T0 - 6, T0 + 6), min_size=n, max_size=n))
    value_st = st.one_of(values, st.sampled_from(BAD_VALUES))
    xs = draw(st.lists(value_st, min_size=n, max_size=n))
    return make_events([pool[i][0] for i in which], [pool[i][1] for i in which], times, xs)


half_lives = st.one_of(st.sampled_from([1.0, 2.0, 1e12]), st.floats(0.01, 1e6))


# ----------------------------------------------------- random vs reference

@FAST
@given(ev=streams(), half_life=half_lives)
def test_random_stream_matches_sequential_reference(ev, half_life):
    """Random streams (repeats, duplicate and out-of-order times, NaN/inf,
    times outside the range) give the oracle's rows and batch counters."""
    ts_min, ts_max = T0 - 4, T0 + 4
    t, buf = make_table()
    applied, invalid, full, stale = apply(t, ev, ts_min, ts_max, half_life)
    ok = valid_mask(ev, ts_min, ts_max)
    ref = assert_rows_match(t, ev, ts_min, ts_max, half_life)
    assert (applied, invalid, full) == (ok.sum(), (~ok).sum(), 0)
    assert stale == sum(s["stale"] for s in ref.values())
    check_index(t, buf)


@FAST
@given(ev=streams(values=st.sampled_from(EXTREME_VALUES), max_size=60),
       half_life=half_lives,
       bounds=st.sampled_from([(T0 - 3, T0 + 3), (T0, T0), (0, WIDE_MAX),
                               (DEFAULT_TS_MIN, DEFAULT_TS_MAX)]),
       data=st.data())
def test_extreme_values_and_range_bounds_match_sequential_fold(ev, half_life, bounds, data):
    """+-DBL_MAX, 1e300, denormals, signed zeros next to NaN/inf, and times
    exactly at and just outside [ts_min, ts_max]: the rows equal a running
    fold (NumPy's pairwise sum and two-pass variance may differ
    legitimately here), and mean and EWMA stay finite."""
    ts_min, ts_max = bounds
    edges = [ts_min, ts_max, 0, WIDE_MAX, T0]
    edges += [v for b in (ts_min, ts_max) for v in (b - 1, b + 1) if 0 <= v <= WIDE_MAX]
    ev["ts"] = data.draw(st.lists(st.sampled_from(edges), min_size=len(ev), max_size=len(ev)))
    t, _ = make_table()
    applied, invalid, full, stale = apply(t, ev, ts_min, ts_max, half_life)
    ok = valid_mask(ev, ts_min, ts_max)
    assert (applied, invalid, full) == (ok.sum(), (~ok).sum(), 0)
    assert_rows_match(t, ev, ts_min, ts_max, half_life, sequential=True)


def test_out_of_order_and_equal_times_by_hand():
    """Hand-worked event-time rules: older events count but are stale and
    never become last; an equal time replaces last (later arrival wins);
    EWMA follows in-order events only; first_ts is the minimum time."""
    ts = [10, 5, 10, 7, 12, 12, 3]
    t, _ = make_table(16, 8)
    applied, invalid, full, stale = apply(
        t, make_events([42] * 7, [7] * 7, [T0 + x for x in ts], [1, 2, 3, 4, 5, 6, 7]),
        half_life=2.0)
    assert (applied, invalid, full, stale) == (7, 0, 0, 3)
    r = find(t, 42, 7)
    assert (r["count"], r["sum"], r["min"], r["max"]) == (7, 28.0, 1.0, 7.0)
    assert (r["last"], r["last_ts"], r["first_ts"], r["stale"]) == (6.0, T0 + 12, T0 + 3, 3)
    # In order: 1 at 10; 3 at 10 (no time passed: no weight); 5 at 12, one
    # half-life later: (1 + 5) / 2; 6 at 12: no weight again.
    assert r["ewma"] == 3.0
    assert r["mean"] == 4.0 and math.isclose(r["m2"] / r["count"], 4.0, rel_tol=1e-12)


def test_invalid_events_are_rejected_and_create_no_series():
    """NaN, +-inf and out-of-range times are counted as invalid, never
    applied, and never create a row."""
    ev = make_events([1, 2, 3, 4, 5, 6], [1] * 6,
                     [T0, T0, T0, T0, DEFAULT_TS_MIN - 1, DEFAULT_TS_MAX + 1],
                     [math.nan, math.inf, -math.inf, -math.nan, 1.0, 2.0])
    t, _ = make_table(16, 8)
    assert apply(t, ev) == (0, 6, 0, 0)
    assert t.used == 0
    assert all(find(t, k, 1) is None for k in range(1, 7))
    # an empty range (ts_min > ts_max) rejects everything
    assert apply(t, make_events([1], [1], [T0], [1.0]), T0 + 1, T0) == (0, 1, 0, 0)
    assert apply(t, ev[:0]) == (0, 0, 0, 0)


def test_range_bounds_are_inclusive():
    """ts_min and ts_max themselves are accepted, one nanosecond beyond is not."""
    t, _ = make_table(16, 8)
    ev = make_events([9] * 4, [9] * 4, [T0 - 1, T0, T0 + 10, T0 + 11], [1.0, 2.0, 3.0, 4.0])
    assert apply(t, ev, T0, T0 + 10) == (2, 2, 0, 0)
    r = find(t, 9, 9)
    assert (r["count"], r["first_ts"], r["last_ts"], r["last"]) == (2, T0, T0 + 10, 3.0)


def test_widest_time_range():
    """With the widest range allowed (0 .. INT64_MAX - 4 windows), time 0 is
    an in-order first event (not confused with the 'no event yet' marker)
    and later stale."""
    t, _ = make_table(16, 8)
    ev = make_events([5] * 3, [5] * 3, [0, WIDE_MAX, 0], [1.0, 2.0, 3.0])
    assert apply(t, ev, 0, WIDE_MAX) == (3, 0, 0, 1)
    r = find(t, 5, 5)
    assert (r["last"], r["last_ts"], r["first_ts"], r["stale"]) == (2.0, WIDE_MAX, 0, 1)
    assert r["ewma"] == 2.0                  # ages of half-lives later: all weight on 2.0
    with pytest.raises(ValueError):
        apply(t, ev, -1, WIDE_MAX)
    with pytest.raises(ValueError):
        apply(t, ev, 0, WIDE_MAX + 1)


def test_near_max_finite_values_do_not_poison_the_mean():
    """Accepted (finite) readings must never turn a series' mean into NaN:
    +-0.9*DBL_MAX then 1.0 have an exactly representable mean of 1/3."""
    big = 0.9 * sys.float_info.max
    t, _ = make_table(16, 8)
    apply(t, make_events([1] * 3, [1] * 3, [T0] * 3, [big, -big, 1.0]))
    r = find(t, 1, 1)
    assert r["sum"] == 1.0
    assert math.isfinite(r["mean"]) and math.isclose(r["mean"], 1 / 3, rel_tol=1e-9)
    assert not math.isnan(r["m2"])


@pytest.mark.parametrize("half_life", [1e-3, 1.0, 1e12])
def test_near_max_finite_values_keep_the_ewma_finite(half_life):
    """The EWMA is a weighted average of finite readings, so it must stay
    finite (and within [min, max]) even when ``x - ewma`` overflows:
    +-0.9*DBL_MAX in order."""
    big = 0.9 * sys.float_info.max
    t, _ = make_table(16, 8)
    apply(t, make_events([1, 1], [1, 1], [T0, T0 + 1], [big, -big]), half_life=half_life)
    r = find(t, 1, 1)
    assert math.isfinite(r["ewma"]) and -big <= r["ewma"] <= big, r["ewma"]
    a = 2.0 ** (-1.0 / half_life)
    assert math.isclose(r["ewma"], big * (2 * a - 1), rel_tol=1e-12, abs_tol=1e-12 * big)


# --------------------------------------------------------- adversarial keys

def test_one_hot_key_long_out_of_order_stream():
    """20 000 events of one series at the extreme key and metric (the
    largest a client may use: U32_MAX is the producer markers'), in random
    order with many duplicate times, in one batch."""
    rng = np.random.default_rng(1)
    n = 20_000
    ev = make_events([U64_MAX] * n, [TOP_METRIC] * n, T0 + rng.integers(0, 500, n),
                     rng.normal(50.0, 10.0, n))
    t, buf = make_table(16, 8)
    applied, invalid, full, stale = apply(t, ev, half_life=100.0)
    ref = assert_rows_match(t, ev, DEFAULT_TS_MIN, DEFAULT_TS_MAX, 100.0)
    assert (applied, invalid, full) == (n, 0, 0)
    assert stale == ref[(U64_MAX, TOP_METRIC)]["stale"] > 0
    check_index(t, buf)


def test_all_keys_distinct_up_to_the_limit():
    """Exactly ``limit`` distinct series, each seen once then once more in
    reverse order: every one gets its own row, nothing is refused."""
    rng = np.random.default_rng(2)
    limit = 2048
    keys = np.unique(rng.integers(0, 2**63, 3 * limit, dtype=np.uint64) * np.uint64(2))
    keys = rng.permutation(keys)[:limit]
    ev1 = make_events(keys, keys % np.uint64(5), T0 + np.arange(limit), rng.random(limit))
    ev2 = ev1[::-1].copy()
    ev2["ts"] += limit
    t, buf = make_table(2 * limit, limit)
    assert apply(t, ev1)[:3] == (limit, 0, 0)
    assert apply(t, ev2) == (limit, 0, 0, 0)
    assert t.used == limit
    assert_rows_match(t, np.concatenate([ev1, ev2]), DEFAULT_TS_MIN, DEFAULT_TS_MAX, HALF_LIFE)
    check_index(t, buf)


def test_extreme_keys_and_metrics_including_the_all_zero_entry():
    """Key 0 / metric 0 looks exactly like an empty index entry; it and the
    maximal ids are distinct series, and absent neighbours are not found."""
    t, _ = make_table(16, 8)
    assert find(t, 0, 0) is None            # an empty table has no (0, 0) series
    pairs = [(0, 0), (0, TOP_METRIC), (U64_MAX, 0), (U64_MAX, TOP_METRIC)]
    ev = make_events([k for k, _ in pairs], [m for _, m in pairs], [T0] * 4, [1.0, 2.0, 3.0, 4.0])
    assert apply(t, ev) == (4, 0, 0, 0)
    for (k, m), x in zip(pairs, [1.0, 2.0, 3.0, 4.0]):
        r = find(t, k, m)
        assert r is not None and (r["key"], r["metric"], r["count"], r["last"]) == (k, m, 1, x)
    for k, m in [(0, 1), (1, 0), (U64_MAX - 1, TOP_METRIC), (U64_MAX, TOP_METRIC - 1)]:
        assert find(t, k, m) is None


def test_the_reserved_metric_is_a_producer_marker_or_invalid():
    """U32_MAX is the producer markers' metric: a client's event with it is
    invalid; a marker (flags EVENT_MARKER) raises its producer's mark beside
    the rows (never lowers it), creates no row and counts as no event."""
    t, _ = make_table(16, 8)
    ev = make_events([7, 7, 7, 9], [U32_MAX] * 4, [T0] * 4, [5.0, 6.0, 4.0, 1.0])
    ev["flags"][1:] = EVENT_MARKER
    settings = _table.Settings(ts_min=0, ts_max=WIDE_MAX, window_ns=WINDOW,
                               half_life_ns=HALF_LIFE, ttl_ns=1)
    alerts = np.zeros(16, ALERT_DTYPE)
    assert t.apply(ev, settings, alerts)[:3] == (0, 1, 0)
    assert t.used == 0 and find(t, 7, U32_MAX) is None
    assert (t.find_mark(7), t.find_mark(9), t.find_mark(8)) == (6, 1, 0)
    assert sorted(map(tuple, t.marks().tolist())) == [(7, 6), (9, 1)]
    # A replay applies markers again: harmless, a mark only rises.
    assert t.apply(ev, settings, alerts)[:3] == (0, 1, 0) and t.find_mark(7) == 6
    t2, _ = make_table(16, 8)
    assert t2.load_marks(t.marks()) == 0 and t2.find_mark(7) == 6


def colliding_series(slots: int, homes: dict, metric: int = 3):
    """Series (key, metric) whose home slot is each of ``homes``' keys, as
    many as its value says; found by scanning sequential keys."""
    keys = np.arange(1, 400 * slots, dtype=np.uint64)
    mets = np.full(len(keys), metric, np.uint32)
    home = _table.series_slots(keys, mets, np.uint64(slots - 1))
    out = []
    for h, count in homes.items():
        picked = keys[home == h][:count]
        assert len(picked) == count
        out += [(int(k), metric) for k in picked]
    return out


@FAST
@given(data=st.data())
def test_colliding_home_slots_wrap_around_the_index(data):
    """A table filled to its limit with series that share home slots, most
    of them the last slot so probe chains wrap to slot 0: every series keeps
    its own row, absent colliding series are not found, and one more new
    series is refused."""
    slots, limit = 64, 32
    series = colliding_series(slots, {slots - 1: 20, 0: 6, 1: 6})
    absent = colliding_series(slots, {slots - 1: 30}, metric=4)
    order = data.draw(st.permutations(range(len(series))))
    repeats = data.draw(st.lists(st.integers(0, len(series) - 1), max_size=60))
    which = list(order) + repeats
    ev = make_events([series[i][0] for i in which], [series[i][1] for i in which],
                     [T0 + j for j in range(len(which))],
                     data.draw(st.lists(ordinary_values, min_size=len(which),
                                        max_size=len(which))))
    t, buf = make_table(slots, limit)
    assert apply(t, ev)[:3] == (len(ev), 0, 0)
    assert_rows_match(t, ev, DEFAULT_TS_MIN, DEFAULT_TS_MAX, HALF_LIFE)
    index = check_index(t, buf)
    homes = t.series_slots(np.ascontiguousarray(index["key"]),
                           np.ascontiguousarray(index["metric"]))
    wrapped = (index["row1"] != 0) & (homes == slots - 1) & (np.arange(slots) < slots - 1)
    assert wrapped.any()                    # the wrap-around path was exercised
    assert all(find(t, k, m) is None for k, m in absent)
    extra = make_events([absent[0][0]], [absent[0][1]], [T0], [1.0])
    assert apply(t, extra) == (0, 0, 1, 0)
    assert t.used == limit


def test_series_slots_function_and_method_agree():
    """Table.series_slots is the module function with the table's mask, and
    home slots stay inside the index."""
    t, _ = make_table(128, 64)
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 2**64, 1000, dtype=np.uint64)
    mets = rng.integers(0, 2**32, 1000, dtype=np.uint32)
    got = t.series_slots(keys, mets)
    assert np.array_equal(got, _table.series_slots(keys, mets, np.uint64(127)))
    assert got.max() < 128 and len(np.unique(got)) > 100


def test_series_created_inside_the_prefetch_window():
    """A new series seen again 1..80 events later in the same batch (the
    kernel looks rows up 12 and 24 events ahead) must land in one row."""
    gaps = list(range(1, 81))
    ev_list = []
    for g in gaps:
        ev_list.append((1000 + g, g, 0.0))
        ev_list += [(5000 + g * 100 + j, 0, 1.0) for j in range(g - 1)]
        ev_list.append((1000 + g, g, 2.0))
    k, m, x = zip(*ev_list)
    ev = make_events(k, m, T0 + np.arange(len(k)), x)
    limit = 4096
    t, buf = make_table(2 * limit, limit)
    assert apply(t, ev)[:3] == (len(ev), 0, 0)
    for g in gaps:
        r = find(t, 1000 + g, g)
        assert (r["count"], r["sum"], r["last"]) == (2, 2.0, 2.0), g
    assert_rows_match(t, ev, DEFAULT_TS_MIN, DEFAULT_TS_MAX, HALF_LIFE)
    check_index(t, buf)


# -------------------------------------------------------------- full table

@FAST
@given(ev=streams(max_series=12, max_size=80), limit=st.integers(1, 8),
       cuts=st.lists(st.integers(0, 80), max_size=3))
def test_full_table_refuses_exactly_the_new_series(ev, limit, cuts):
    """Past ``limit`` series, every valid event of a new series is counted in
    ``full`` (exactly), existing series keep updating, invalid events never
    take a row, and refused series are not findable; across any batching."""
    ts_min, ts_max = T0 - 4, T0 + 4
    t, buf = make_table(16, limit)
    admitted = admitted_mask_ref(ev, ts_min, ts_max, limit)
    ok = valid_mask(ev, ts_min, ts_max)
    totals = np.zeros(4, np.int64)
    bounds = [0, *sorted(c for c in cuts if c <= len(ev)), len(ev)]
    for a, b in zip(bounds, bounds[1:]):
        totals += apply(t, ev[a:b], ts_min, ts_max)
    assert totals[0] == admitted.sum()
    assert totals[1] == (~ok).sum()
    assert totals[2] == (ok & ~admitted).sum()
    assert t.used == min(limit, len(set(zip(ev["key"][ok].tolist(), ev["metric"][ok].tolist()))))
    assert_rows_match(t, ev[admitted], ts_min, ts_max, HALF_LIFE)
    for k, m in zip(ev["key"][ok & ~admitted].tolist(), ev["metric"][ok & ~admitted].tolist()):
        assert find(t, k, m) is None
    check_index(t, buf)


def test_full_table_across_batches_by_hand():
    """Limit 2: a third series is refused in the same batch and in later
    ones while the two admitted series still update."""
    t, buf = make_table(4, 2)
    assert apply(t, make_events([1, 2, 3, 3], [0] * 4, [T0] * 4, [1.0] * 4)) == (2, 0, 2, 0)
    later = make_events([3, 1, 4, 2, 3], [0] * 5, [T0 + 1] * 5, [5.0] * 5)
    assert apply(t, later) == (2, 0, 3, 0)
    assert t.used == 2 and find(t, 3, 0) is None and find(t, 4, 0) is None
    assert find(t, 1, 0)["count"] == 2 and find(t, 2, 0)["last"] == 5.0
    assert apply(t, make_events([9], [0], [T0], [math.nan])) == (0, 1, 0, 0)
    check_index(t, buf)


# ------------------------------------------------------------ batch splits

@FAST
@given(ev=streams(max_size=300, max_series=40), half_life=half_lives,
       cuts=st.lists(st.integers(0, 300), max_size=8))
def test_batch_splitting_is_invisible(ev, half_life, cuts):
    """One batch or the same stream cut anywhere gives byte-identical tables
    (index, rows, header) and the same summed counters; streams up to 300
    events cross the kernel's 12/24/64-event pipeline windows."""
    ts_min, ts_max = T0 - 5, T0 + 5
    t1, buf1 = make_table(128, 64)
    t2, buf2 = make_table(128, 64)
    whole = np.array(apply(t1, ev, ts_min, ts_max, half_life))
    parts = np.zeros(4, np.int64)
    bounds = [0, *sorted(c for c in cuts if c <= len(ev)), len(ev)]
    for a, b in zip(bounds, bounds[1:]):
        parts += apply(t2, ev[a:b], ts_min, ts_max, half_life)
    assert np.array_equal(whole, parts)
    assert bytes(buf1) == bytes(buf2)


def test_large_stream_in_chunks_matches_vectorised_oracle():
    """60 000 events over 1 500 series, 5% invalid, applied in uneven
    chunks, against the vectorised aggregate oracle."""
    rng = np.random.default_rng(4)
    n, nseries = 60_000, 1500
    keys = rng.integers(0, 2**64, nseries, dtype=np.uint64)
    pick = rng.integers(0, nseries, n)
    ev = make_events(keys[pick], (keys[pick] % np.uint64(3)).astype(np.uint32),
                     T0 + rng.integers(-10**6, 10**6, n), rng.normal(0.0, 100.0, n))
    bad = rng.random(n) < 0.05
    ev["value"][bad & (rng.random(n) < 0.5)] = np.nan
    ev["ts"][bad] -= 10**18
    t, _ = make_table(4096, 2048)
    total = np.zeros(4, np.int64)
    cut = np.sort(rng.integers(0, n, 40))
    for a, b in zip([0, *cut], [*cut, n]):
        total += apply(t, ev[a:b])
    ok = valid_mask(ev, DEFAULT_TS_MIN, DEFAULT_TS_MAX)
    assert tuple(total[:3]) == (ok.sum(), (~ok).sum(), 0)
    want = aggregate_ref(ev, DEFAULT_TS_MIN, DEFAULT_TS_MAX)
    got = snapshot(t)
    got = got[np.lexsort((got["metric"], got["key"]))]
    assert len(got) == len(want)
    for f in ("key", "metric", "count", "min", "max", "last", "last_ts", "first_ts"):
        assert np.array_equal(got[f], want[f]), f
    assert np.allclose(got["sum"], want["sum"], rtol=1e-9, atol=1e-9)
    assert np.allclose(got["mean"], want["mean"], rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- snapshot

@FAST
@given(ev=streams(max_series=20, max_size=100))
def test_snapshot_has_every_series_once_and_reports_room_needed(ev):
    """snapshot_into writes each series exactly once (first-appearance
    order), returns -used without writing when ``out`` is too small, and
    accepts an ``out`` larger than needed."""
    t, _ = make_table(64, 32)
    apply(t, ev)
    used = t.used
    ref = series_state_ref(ev, DEFAULT_TS_MIN, DEFAULT_TS_MAX, HALF_LIFE)
    big = np.zeros(used + 3, STATE_DTYPE)
    assert t.snapshot_into(big) == used
    assert [(int(r["key"]), int(r["metric"])) for r in big[:used]] == list(ref)
    assert not big[used:].tobytes().strip(b"\0")
    if used:
        small = np.zeros(used - 1, STATE_DTYPE)
        small.view(np.uint8)[:] = 0xAB
        assert t.snapshot_into(small) == -used
        assert set(small.view(np.uint8).tolist()) <= {0xAB}
    else:
        assert t.snapshot_into(np.zeros(0, STATE_DTYPE)) == 0


def test_snapshot_refuses_a_wrong_dtype():
    """An ``out`` whose items are not 128-byte rows is refused."""
    t, _ = make_table(16, 8)
    apply(t, make_events([1], [1], [T0], [1.0]))
    with pytest.raises(ValueError):
        t.snapshot_into(np.zeros(64, np.float64))


# ------------------------------------------------------- TableSet routing

def routed_tables(workers: int, ev: np.ndarray):
    """One table per worker, each fed the events of its shard."""
    tables = []
    shard = shard_ref(ev["key"], workers)
    for w in range(workers):
        t, _ = make_table(256, 128)
        apply(t, ev[shard == w])
        tables.append(t)
    return tables


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_tableset_reads_route_by_shard_and_zero_unknown_rows(workers):
    """get_many_into finds every known series in its shard's table, returns
    how many it found, and gives unknown series a zero row carrying only
    their key and metric; TableSet.find_into agrees."""
    rng = np.random.default_rng(10 + workers)
    keys = np.concatenate([np.array([0, U64_MAX], np.uint64),
                           rng.integers(0, 2**64, 58, dtype=np.uint64)])
    mets = rng.integers(0, 4, 60).astype(np.uint32)
    pick = rng.integers(0, 60, 400)
    ev = make_events(keys[pick], mets[pick], T0 + rng.integers(0, 100, 400), rng.random(400))
    tables = routed_tables(workers, ev)
    ts = _query.TableSet(tables)
    known = np.unique(ev[["key", "metric"]])
    unknown_k = np.concatenate([known["key"][:10], rng.integers(0, 2**64, 10, dtype=np.uint64)])
    unknown_m = np.concatenate([known["metric"][:10] + np.uint32(100),
                                np.zeros(10, np.uint32)]).astype(np.uint32)
    qk = np.ascontiguousarray(np.concatenate([known["key"], unknown_k]))
    qm = np.ascontiguousarray(np.concatenate([known["metric"], unknown_m]).astype(np.uint32))
    order = rng.permutation(len(qk))
    qk, qm = qk[order].copy(), qm[order].copy()
    out = np.zeros(len(qk), STATE_DTYPE)
    out.view(np.uint8)[:] = 0xCD
    assert ts.get_many_into(qk, qm, out) == len(known)
    shard = shard_ref(qk, workers)
    is_known = np.isin(order, np.arange(len(known)))
    for i in range(len(qk)):
        one = np.zeros(1, STATE_DTYPE)
        if is_known[i]:
            r = find(tables[shard[i]], int(qk[i]), int(qm[i]))
            assert r is not None and out[i].tobytes() == r.tobytes()
            assert ts.find_into(int(qk[i]), int(qm[i]), one) and one[0] == r
        else:
            zero = np.zeros(1, STATE_DTYPE)[0]
            zero["key"], zero["metric"] = qk[i], qm[i]
            assert out[i].tobytes() == zero.tobytes()
            assert not ts.find_into(int(qk[i]), int(qm[i]), one)
    assert ts.get_many_into(qk[:0], qm[:0], out[:0]) == 0


def test_tableset_looks_only_in_the_shard_table():
    """A series stored in the wrong worker's table is invisible to the
    TableSet (it routes by mix64(key) % workers, it does not search); the
    key is one whose plain ``key % 2`` would pick the other table."""
    cand = np.arange(1, 100, dtype=np.uint64)
    key = int(cand[(mix64_np(cand) % np.uint64(2)) != cand % np.uint64(2)][0])
    right = int(mix64_np(np.array([key], np.uint64))[0] % 2)
    tables = [make_table(16, 8)[0] for _ in range(2)]
    apply(tables[1 - right], make_events([key], [1], [T0], [1.0]))
    ts = _query.TableSet(tables)
    out = np.zeros(1, STATE_DTYPE)
    assert not ts.find_into(key, 1, out)
    assert ts.get_many_into(np.array([key], np.uint64), np.array([1], np.uint32), out) == 0
    apply(tables[right], make_events([key], [1], [T0], [2.0]))
    assert ts.find_into(key, 1, out) and out[0]["last"] == 2.0


def test_tableset_argument_checks():
    """Mismatched lengths, too small an ``out`` and an empty set are refused."""
    t, _ = make_table(16, 8)
    ts = _query.TableSet([t])
    k, m = np.arange(3, dtype=np.uint64), np.zeros(3, np.uint32)
    with pytest.raises(ValueError):
        ts.get_many_into(k, m[:2], np.zeros(3, STATE_DTYPE))
    with pytest.raises(ValueError):
        ts.get_many_into(k, m, np.zeros(2, STATE_DTYPE))
    with pytest.raises(ValueError):
        ts.find_into(1, 1, np.zeros(0, STATE_DTYPE))
    with pytest.raises(ValueError):
        _query.TableSet([])
    with pytest.raises(TypeError):
        _query.TableSet([object()])


# --------------------------------------------- output-array memory safety
# Each bad ``out`` below is a view inside a larger array, so that a kernel
# that writes a whole row regardless stays in bounds and the test can fail
# cleanly instead of corrupting the heap.

def _filled_table():
    t, _ = make_table(16, 8)
    apply(t, make_events([1, 2, 3], [1, 1, 1], [T0] * 3, [1.0, 2.0, 3.0]))
    return t


def test_table_find_into_refuses_an_out_without_room_for_a_row():
    """Table.find_into must check ``out`` like TableSet.find_into does: a
    zero-length array (here a view in the middle of another) gets no row."""
    t = _filled_table()
    base = np.zeros(2, STATE_DTYPE)
    with pytest.raises(ValueError):
        t.find_into(1, 1, base[1:1])
    assert not base.tobytes().strip(b"\0")


def test_table_find_into_refuses_a_wrong_dtype():
    """Table.find_into must refuse an ``out`` that is not STATE_DTYPE."""
    t = _filled_table()
    with pytest.raises(ValueError):
        t.find_into(1, 1, np.zeros(16, np.float64))


def test_get_many_into_refuses_a_wrong_dtype():
    """get_many_into must refuse an ``out`` whose items are not rows."""
    ts = _query.TableSet([_filled_table()])
    with pytest.raises(ValueError):
        ts.get_many_into(np.array([1, 2], np.uint64), np.array([1, 1], np.uint32),
                         np.zeros(32, np.float64))


def test_snapshot_into_a_strided_view_is_refused_or_correct():
    """snapshot_into on a non-contiguous ``out`` must raise or fill the
    view's own rows; writing contiguously from its start is wrong."""
    t = _filled_table()
    base = np.zeros(6, STATE_DTYPE)
    out = base[::2]
    try:
        n = t.snapshot_into(out)
    except ValueError:
        return
    assert n == 3 and out["key"].tolist() == [1, 2, 3]


def test_get_many_into_a_strided_view_is_refused_or_correct():
    """get_many_into on a non-contiguous ``out`` must raise or fill the
    view's own rows."""
    ts = _query.TableSet([_filled_table()])
    base = np.zeros(6, STATE_DTYPE)
    out = base[::2]
    try:
        ts.get_many_into(np.array([1, 2, 3], np.uint64), np.ones(3, np.uint32), out)
    except ValueError:
        return
    assert out["key"].tolist() == [1, 2, 3]


# ------------------------------------------------- construction and closing

@pytest.mark.parametrize("slots,limit", [(0, 1), (3, 1), (12, 4), (16, 0), (16, 9), (2, 2)])
def test_init_table_rejects_bad_geometry(slots, limit):
    """Index size must be a power of two and limit in 1..slots//2."""
    buf = bytearray(_table.table_bytes(max(slots, 1), max(limit, 1)) + 4096)
    with pytest.raises(ValueError):
        _table.init_table(buf, slots, limit)


def test_init_table_rejects_a_small_buffer_and_table_needs_magic():
    """init_table refuses a buffer one byte short; Table refuses a buffer
    without a table in it (zeroed, or shorter than a header)."""
    size = _table.table_bytes(16, 8)
    with pytest.raises(ValueError):
        _table.init_table(bytearray(size - 1), 16, 8)
    with pytest.raises(ValueError):
        _table.Table(bytearray(size))
    with pytest.raises(ValueError):
        _table.Table(bytearray(8))
    assert size == (_table.HEADER_BYTES + 16 * _table.INDEX_ENTRY_BYTES + 8 * _table.ROW_BYTES
                    + PRODUCER_MARK_SLOTS * PRODUCER_MARK_BYTES)
    # A table whose header names more than its buffer holds is refused too.
    buf = bytearray(size)
    _table.init_table(buf, 16, 8)
    with pytest.raises(ValueError):
        _table.Table(buf[:-1])


def test_minimal_table_of_one_series():
    """slots=2, limit=1: one series is kept, every other is refused."""
    t, buf = make_table(2, 1)
    ev = make_events([7, 8, 7, 9], [0] * 4, [T0, T0, T0 + 1, T0], [1.0, 2.0, 3.0, 4.0])
    assert apply(t, ev) == (2, 0, 2, 0)
    assert (t.slots, t.limit, t.used) == (2, 1, 1)
    assert find(t, 7, 0)["last"] == 3.0 and find(t, 8, 0) is None
    check_index(t, buf)


def test_released_table_refuses_every_call():
    """After release_buffer every method, and a TableSet over it, raises
    instead of touching freed memory."""
    t, _ = make_table(16, 8)
    ts = _query.TableSet([t])
    t.release_buffer()
    t.release_buffer()                      # idempotent
    one = np.zeros(1, STATE_DTYPE)
    calls = [
        lambda: t.used, lambda: t.slots, lambda: t.limit,
        lambda: t.apply(make_events([1], [1], [T0], [1.0]), SETTINGS, NO_ALERTS),
        lambda: t.sweep(T0, SETTINGS, NO_ALERTS), lambda: t.reload(SETTINGS, NO_ALERTS),
        lambda: t.select_status_into(0, np.zeros(4, STATE_DTYPE)),
        lambda: t.find_into(1, 1, one), lambda: t.snapshot_into(np.zeros(4, STATE_DTYPE)),
        lambda: ts.find_into(1, 1, one),
        lambda: ts.get_many_into(np.ones(1, np.uint64), np.ones(1, np.uint32), one),
        lambda: _query.TableSet([t]).find_into(1, 1, one),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()


def test_apply_refuses_non_event_arrays():
    """apply needs a C-contiguous array of 32-byte records."""
    t, _ = make_table(16, 8)
    ev = make_events([1, 2], [1, 1], [T0, T0], [1.0, 2.0])
    with pytest.raises(ValueError):
        t.apply(np.zeros(8, np.float64), SETTINGS, NO_ALERTS)
    with pytest.raises(ValueError):
        t.apply(np.concatenate([ev, ev])[::2], SETTINGS, NO_ALERTS)
    with pytest.raises(ValueError, match="ALERT_DTYPE"):
        t.apply(ev, SETTINGS, np.zeros(4, EVENT_DTYPE)[:0].view(np.uint8))
    with pytest.raises(TypeError):
        t.apply(ev, None, NO_ALERTS)
    assert t.used == 0


# ----------------------------------------------------------- shared memory

@pytest.fixture
def shm_table():
    """A table in a /dev/shm segment: (segment, table); released, closed
    and unlinked afterwards whatever the test did."""
    seg = Segment.create(_table.table_bytes(64, 32), "test")
    t = None
    try:
        _table.init_table(seg.buf, 64, 32)
        t = _table.Table(seg.buf)
        yield seg, t
    finally:
        if t is not None:
            t.release_buffer()
        seg.close()
        seg.unlink()


def test_table_in_shared_memory_reads_through_a_second_mapping(shm_table):
    """Rows written through one mapping of the segment are read, identical,
    through an independent mapping (as a query process would)."""
    seg, t = shm_table
    rng = np.random.default_rng(5)
    ev = make_events(rng.integers(0, 20, 300).astype(np.uint64), np.ones(300, np.uint32),
                     T0 + rng.integers(0, 50, 300), rng.random(300))
    apply(t, ev)
    other = Segment.attach(seg.name)
    reader = None
    try:
        reader = _table.Table(other.buf)
        assert (reader.slots, reader.limit, reader.used) == (64, 32, t.used)
        assert snapshot(reader).tobytes() == snapshot(t).tobytes()
        apply(t, make_events([99], [1], [T0], [7.0]))
        assert find(reader, 99, 1)["last"] == 7.0
        assert_rows_match(reader, np.concatenate([ev, make_events([99], [1], [T0], [7.0])]),
                          DEFAULT_TS_MIN, DEFAULT_TS_MAX, HALF_LIFE)
    finally:
        if reader is not None:
            reader.release_buffer()
        other.close()


def test_uninitialised_shared_memory_is_not_a_table():
    """A fresh (zero) segment has no magic and is refused by Table."""
    seg = Segment.create(_table.table_bytes(16, 8), "test")
    try:
        with pytest.raises(ValueError):
            _table.Table(seg.buf)
    finally:
        seg.close()
        seg.unlink()
