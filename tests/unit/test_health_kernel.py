"""The health layer of the compiled state-table kernel (engine._table)
against docs/health.md and its plain-Python reference
(tests/health_reference.py): event-time windows with lateness, the sliding
views, the time-decayed EWMA, the quantile sketch, the rules state machine,
TTL (STALE), reload and the alert records.

Random streams (hypothesis) compare every row field and every alert with
the reference; scripted scenarios compare both the kernel and the reference
with alert sequences worked out by hand from the document."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import Phase, assume, given, settings
from hypothesis import strategies as st

from engine import _query, _table
from engine.core.layout import SKETCH_BUCKETS, SKETCH_FIRST
from engine.core.records import ALERT_DTYPE, EVENT_DTYPE, STATE_DTYPE
from engine.health.rules import RULE_DTYPE
from engine.query.readable import sketch_quantile
from tests.health_reference import (
    CRIT,
    FOLD_NONE,
    OK,
    S_EWMA,
    S_LAST,
    S_MEAN,
    S_P50,
    S_P95,
    S_P99,
    S_VAR,
    S_VIEW0,
    S_VIEW2,
    S_WIN_MEAN,
    STALE,
    STAT_TTL,
    WARN,
    HealthRef,
    bucket_bounds,
    bucket_estimate,
    bucket_index,
    f32,
    quantile_from_sketch,
    rule_record,
)

SEC = 10**9
T0 = 1_700_000_040 * SEC            # a window start for 60 s windows
TS_MIN, TS_MAX = 0, 2**62        # the kernel takes event times >= 0
K, M = 7, 3                         # the scenarios' entity and metric
N_STATS = 18

FAST = settings(max_examples=100, deadline=None,
                phases=[p for p in Phase if p is not Phase.explain])
FEW = settings(max_examples=40, deadline=None,
               phases=[p for p in Phase if p is not Phase.explain])


# ----------------------------------------------------------------- helpers

def events(rows) -> np.ndarray:
    """EVENT_DTYPE array from (key, metric, ts, value) tuples."""
    ev = np.zeros(len(rows), EVENT_DTYPE)
    for i, (k, m, t, x) in enumerate(rows):
        ev[i] = (k, t, m, 0, x)
    return ev


def series_events(ts_values, key=K, metric=M, t0=T0, unit=SEC) -> np.ndarray:
    """Events of one series from (offset, value) pairs, offsets in ``unit``."""
    ev = np.zeros(len(ts_values), EVENT_DTYPE)
    ev["key"], ev["metric"] = key, metric
    ev["ts"] = [t0 + int(o * unit) for o, _ in ts_values]
    ev["value"] = [x for _, x in ts_values]
    return ev


def compile_rules(rules) -> np.ndarray | None:
    """RULE_DTYPE array from :func:`rule_record` dicts (None stays None)."""
    if rules is None:
        return None
    out = np.zeros(len(rules), RULE_DTYPE)
    for i, r in enumerate(rules):
        for f, v in r.items():
            out[i][f] = v
    return out


def alert_tuples(arr) -> list[tuple]:
    """Alert records as (key, ts, metric, old, new, stat, rule, value)."""
    return [(int(a["key"]), int(a["ts"]), int(a["metric"]), int(a["old"]), int(a["new"]),
             int(a["stat"]), int(a["rule"]), float(a["value"])) for a in arr]


def same_float(a: float, b: float, rtol: float = 0.0, atol: float = 0.0) -> bool:
    """Equal (rtol=0) or close; NaN matches NaN, an infinity the same one."""
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b) or rtol == 0.0 and atol == 0.0:
        return a == b
    return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)


def stat_rtol(stat: int) -> float:
    """How closely an alert value must match the reference: exactly, but for
    the stats computed through pow/exp (the EWMA, the views)."""
    if stat == S_EWMA:
        return 1e-12
    if S_VIEW0 <= stat <= S_VIEW2:
        return 1e-6
    return 0.0


def masked(alert: tuple) -> tuple:
    """An alert without the fields docs/health.md leaves open: the stat and
    value of a rule-less transition other than TTL (back from STALE, or a
    reload that removed the rule)."""
    key, ts, metric, old, new, stat, rule, value = alert
    if rule == 0 and stat != STAT_TTL:
        return (key, ts, metric, old, new, None, rule, None)
    return alert


def assert_alerts_match(got: list, want: list, what: str = "") -> None:
    """Kernel alerts equal the reference's, in order."""
    assert len(got) == len(want), (what, got, want)
    for g, w in zip(got, want):
        g, w = masked(g), masked(w)
        assert g[:7] == w[:7], (what, g, w)
        if g[7] is not None:
            assert same_float(g[7], w[7], stat_rtol(w[5])), (what, g, w)


class Health:
    """One kernel table and the reference, driven together.

    Every call checks the batch counters and the alerts against the
    reference (``cap`` sizes the kernel's alert buffer; alerts past it must
    be dropped and counted) and returns the kernel's alerts; the reference's
    are in ``last_ref``."""

    def __init__(self, *, window_ns=60 * SEC, lateness_ns=0, half_life_ns=10 * SEC,
                 views=(1, 5, 15), ttl_ns=0, rules=None, ts_min=TS_MIN, ts_max=TS_MAX,
                 slots=4096, limit=1024):
        self.settings = _table.Settings(
            ts_min=ts_min, ts_max=ts_max, window_ns=window_ns, lateness_ns=lateness_ns,
            half_life_ns=half_life_ns, views=views, ttl_ns=ttl_ns, rules=compile_rules(rules))
        self.buf = bytearray(_table.table_bytes(slots, limit))
        _table.init_table(self.buf, slots, limit)
        self.table = _table.Table(self.buf)
        self.ref = HealthRef(window_ns, lateness_ns, half_life_ns, views, ttl_ns,
                             compile_rules(rules), ts_min, ts_max, limit)
        self.totals = np.zeros(7, np.int64)
        self.last_ref: list = []

    def _alerts(self, cap, call, want):
        buf = np.zeros(cap, ALERT_DTYPE)
        res = call(buf)
        written, dropped = res[-2], res[-1]
        assert written == min(cap, len(want)) and dropped == len(want) - written, (res, want)
        got = alert_tuples(buf[:written])
        assert_alerts_match(got, want[:written])
        assert not buf[written:].tobytes().strip(b"\0")
        self.last_ref = want
        return res, got

    def apply(self, ev, cap=4096):
        ev = np.ascontiguousarray(ev)
        want = self.ref.apply(ev)
        res, got = self._alerts(cap, lambda buf: self.table.apply(ev, self.settings, buf), want)
        c = self.ref.last_counts
        assert len(res) == 7
        assert tuple(res[:5]) == (c["applied"], c["invalid"], c["full"], c["stale"],
                                  c["late"]), (res, c)
        self.totals += res
        return got

    def sweep(self, now_ns, cap=4096):
        want = self.ref.sweep(now_ns)
        return self._alerts(cap, lambda buf: self.table.sweep(now_ns, self.settings, buf),
                            want)[1]

    def reload(self, rules, ttl_ns=0, lateness_ns=None, cap=4096):
        """New rules, default ttl and lateness (None: keep the lateness)."""
        if lateness_ns is None:
            lateness_ns = self.ref.L
        compiled = compile_rules(rules)
        want = self.ref.reload(compiled, ttl_ns, lateness_ns)
        self.settings.set_rules(compiled, ttl_ns, lateness_ns)
        return self._alerts(cap, lambda buf: self.table.reload(self.settings, buf), want)[1]

    def rows(self) -> np.ndarray:
        out = np.zeros(max(self.table.used, 1), STATE_DTYPE)
        n = self.table.snapshot_into(out)
        assert n == self.table.used
        return out[:n]

    def row(self, key=K, metric=M):
        for r in self.rows():
            if (int(r["key"]), int(r["metric"])) == (key, metric):
                return r
        raise KeyError((key, metric))

    def check(self):
        """Every row equals the reference's series."""
        rows = self.rows()
        assert [(int(r["key"]), int(r["metric"])) for r in rows] == list(self.ref.series)
        for r, s in zip(rows, self.ref.series.values()):
            assert_row_matches(r, s)
        return rows


def assert_row_matches(r, s) -> None:
    """A kernel row equals a reference series, field by field (docs'
    table): exactly, but the EWMA (pow: rtol 1e-12) and the float32 views
    (1e-6); fields the doc leaves undefined (an empty window's min/max and
    sum, the views before the first fold, pending_since with nothing
    pending, status_since before the first change) are not compared."""
    who = (s.key, s.metric)
    assert int(r["flags"]) & 1 == 1 and int(r["version"]) % 2 == 0, who
    assert bool(int(r["flags"]) & 2) == s.prev_folded, (who, "flags", r["flags"])
    for f in ("count", "last_ts", "first_ts", "stale", "late", "win_start", "win_count",
              "prev_count", "fold_age", "sk_base", "sk_shift", "sk_lo", "sk_hi", "status",
              "pending", "rule"):
        assert int(r[f]) == getattr(s, f), (who, f, r[f], getattr(s, f))
    assert [int(c) for c in r["sketch"]] == s.sketch, (who, "sketch", r["sketch"], s.sketch)
    for f in ("sum", "min", "max", "last", "mean", "m2", "win_sum", "win_min", "win_max"):
        assert same_float(r[f], getattr(s, f)), (who, f, r[f], getattr(s, f))
    if s.prev_count:
        for f in ("prev_sum", "prev_min", "prev_max"):
            assert same_float(r[f], getattr(s, f)), (who, f, r[f], getattr(s, f))
    scale = max(abs(s.min), abs(s.max))
    assert same_float(r["ewma"], s.ewma, 1e-12, 1e-12 * scale), (who, "ewma", r["ewma"], s.ewma)
    if s.folded:
        for j in range(3):
            assert same_float(r["view"][j], s.view[j], 1e-6, 1e-6 * scale), (
                who, "view", j, r["view"], s.view)
    if s.pending:
        assert int(r["pending_since"]) == s.pending_since, (who, r["pending_since"])
    if s.status_since is not None:
        assert int(r["status_since"]) == s.status_since, (who, r["status_since"])


def expect(got: list, ref: list, want: list) -> None:
    """A scripted step: the reference and the kernel both raise exactly the
    alerts worked out by hand."""
    want = [masked(a) for a in want]
    assert [masked(a) for a in ref] == want, ("reference", ref, want)
    assert [masked(a) for a in got] == want, ("kernel", got, want)


def step(h: Health, ev, want, cap=4096):
    expect(h.apply(ev, cap), h.last_ref, want)


# -------------------------------------------------------------- strategies

values_st = st.one_of(
    st.integers(-20, 20).map(float),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 1e-3, 7.25]),
)
BAD_VALUES = [math.nan, math.inf, -math.inf]


@st.composite
def timelines(draw, n, W, base):
    """``n`` event times for windows of width ``W`` starting near ``base``,
    in one of several orders: in order, shuffled, jittered back by up to
    two windows, or in order with some events far in the past."""
    gaps = draw(st.lists(st.one_of(st.integers(0, 3 * W), st.integers(0, 40 * W),
                                   st.just(0)), min_size=n, max_size=n))
    ts = (base + np.cumsum(np.array(gaps, dtype=np.int64))).tolist() if n else []
    mode = draw(st.sampled_from(["sorted", "shuffled", "jitter", "late"]))
    if mode == "shuffled":
        ts = draw(st.permutations(ts))
    elif mode == "jitter":
        lags = draw(st.lists(st.integers(0, 2 * W), min_size=n, max_size=n))
        ts = [t - lag for t, lag in zip(ts, lags)]
    elif mode == "late":
        back = draw(st.lists(st.one_of(st.just(0), st.integers(W, 5 * W)), min_size=n,
                             max_size=n))
        ts = [t - b for t, b in zip(ts, back)]
    return list(ts)


@st.composite
def health_streams(draw, max_series=5, max_size=150, values=values_st, bad=True):
    """(settings kwargs, events): a random window/lateness/half-life/views
    configuration and a stream over a few series with repeats, duplicates
    (same series, time and value), stale and late events, some invalid."""
    W = draw(st.sampled_from([1, 2, 3, 7, 10, 60, 1000]))
    L = draw(st.one_of(st.just(0), st.just(W), st.integers(0, W)))
    hl = draw(st.sampled_from([1, 5, 60, 10**6]))
    views = draw(st.sampled_from([(1, 5, 15), (1, 2, 3), (2, 7, 60), (3, 1, 40)]))
    base = draw(st.sampled_from([T0, 0, 37 * W, 10**12 + 3]))
    nseries = draw(st.integers(1, max_series))
    n = draw(st.integers(0, max_size))
    ts = draw(timelines(n, W, base))
    which = draw(st.lists(st.integers(0, nseries - 1), min_size=n, max_size=n))
    vals = draw(st.lists(values, min_size=n, max_size=n))
    rows = [(10 + w, w % 2, t, x) for w, t, x in zip(which, ts, vals)]
    if n:
        dups = draw(st.lists(st.integers(0, n - 1), max_size=n // 4))
        for i in sorted(dups, reverse=True):
            rows.insert(i + 1, rows[i])
        if bad:
            for i in draw(st.lists(st.integers(0, len(rows) - 1), max_size=3)):
                k, m, t, x = rows[i]
                rows[i] = (k, m, t, draw(st.sampled_from(BAD_VALUES)))
    cfg = dict(window_ns=W, lateness_ns=L, half_life_ns=hl, views=views,
               ts_min=max(base - 2**40, 0), ts_max=2**62)
    return cfg, events(rows)


def cut(n: int, cuts) -> list[tuple[int, int]]:
    bounds = [0, *sorted(c for c in cuts if c <= n), n]
    return list(zip(bounds, bounds[1:]))


# ------------------------------------------------------- the row's layout

ROW_LAYOUT = [          # docs/health.md, "The state row"
    ("version", 0, "<u8"), ("count", 8, "<u8"), ("sum", 16, "<f8"), ("min", 24, "<f8"),
    ("max", 32, "<f8"), ("last", 40, "<f8"), ("last_ts", 48, "<i8"), ("ewma", 56, "<f8"),
    ("mean", 64, "<f8"), ("m2", 72, "<f8"), ("win_start", 80, "<i8"), ("win_sum", 88, "<f8"),
    ("win_min", 96, "<f8"), ("win_max", 104, "<f8"), ("win_count", 112, "<u4"),
    ("sk_base", 116, "<i2"), ("status", 118, "u1"), ("rule", 119, "u1"), ("pending", 120, "u1"),
    ("sk_shift", 121, "u1"), ("sk_lo", 122, "u1"), ("sk_hi", 123, "u1"),
    ("fold_age", 124, "<u2"), ("sketch", 126, ("<u2", (85,))),
    ("key", 296, "<u8"), ("first_ts", 304, "<i8"), ("pending_since", 312, "<i8"),
    ("prev_sum", 320, "<f8"), ("prev_min", 328, "<f8"), ("prev_max", 336, "<f8"),
    ("status_since", 344, "<i8"), ("metric", 352, "<u4"), ("stale", 356, "<u4"),
    ("late", 360, "<u4"), ("prev_count", 364, "<u4"), ("view", 368, ("<f4", (3,))),
    ("flags", 380, "<u4"),
]


def test_state_and_alert_dtypes_are_the_documented_records():
    """STATE_DTYPE is the doc's 384-byte row and ALERT_DTYPE its 32-byte
    alert record, field for field and offset for offset."""
    assert STATE_DTYPE.itemsize == 384
    assert sorted(STATE_DTYPE.names) == sorted(f for f, _, _ in ROW_LAYOUT)
    got = {name: (STATE_DTYPE.fields[name][1], STATE_DTYPE.fields[name][0]) for name, _, _ in
           ROW_LAYOUT}
    assert got == {name: (off, np.dtype(dt)) for name, off, dt in ROW_LAYOUT}
    alert = [("key", 0, "<u8"), ("ts", 8, "<i8"), ("metric", 16, "<u4"), ("old", 20, "u1"),
             ("new", 21, "u1"), ("stat", 22, "u1"), ("rule", 23, "u1"), ("value", 24, "<f8")]
    assert ALERT_DTYPE.itemsize == 32 and list(ALERT_DTYPE.names) == [f for f, _, _ in alert]
    for name, off, dt in alert:
        assert ALERT_DTYPE.fields[name] == (np.dtype(dt), off), name
    assert RULE_DTYPE.itemsize == 64


# ------------------------------------------- (a) windows, views, EWMA, stats

def test_windows_views_and_ewma_by_hand():
    """One series, W = 10 ns, L = 5 ns, views (1, 2, 4), half-life 10 ns,
    worked through by hand: a roll with an empty previous window, a stale
    event into the still-open previous window, a late one, the previous
    window folded the moment the watermark passes its end plus L (not at
    the next roll), a two-window roll folding the current window, and a
    fold two windows after the last one."""
    h = Health(window_ns=10, lateness_ns=5, half_life_ns=10, views=(1, 2, 4))
    d = [math.exp(-1.0 / n) for n in (1, 2, 4)]
    seq = [(3, 1.0), (7, 3.0), (12, 10.0), (9, 5.0)]
    h.apply(series_events(seq, unit=1))
    r = h.check()[0]
    assert (r["win_start"], r["win_count"], r["prev_count"], r["prev_sum"]) == (T0 + 10, 1, 3, 9.0)
    assert r["fold_age"] == FOLD_NONE                    # watermark 12 < 10 + L: still open
    h.apply(series_events([(16, 20.0)], unit=1))         # 16 >= 15: window 0 is final
    r = h.check()[0]
    assert r["fold_age"] == 1 and list(r["view"]) == [3.0, 3.0, 3.0]
    seq = [(8, 100.0), (25, 30.0), (47, 40.0), (55, 50.0), (41, 60.0), (61, 0.0), (66, 7.0)]
    for t, x in seq:           # one event per batch: batching must not matter either
        h.apply(series_events([(t, x)], unit=1))
    r = h.check()[0]
    assert (r["win_start"], r["win_count"], r["win_sum"]) == (T0 + 60, 2, 7.0)
    assert (r["prev_count"], r["prev_sum"], r["prev_min"], r["prev_max"]) == (1, 50.0, 50.0, 50.0)
    assert (r["stale"], r["late"], r["fold_age"], r["count"]) == (3, 2, 1, 12)
    assert (r["last"], r["last_ts"], r["first_ts"]) == (7.0, T0 + 66, T0 + 3)
    # Folds: window 0 (1, 3 and the stale 5: mean 3) at 16; window 10 (mean
    # 15) at 25, one window later; window 20 (mean 30) at the two-window
    # roll to 40; window 40 (mean 40) at 55, two windows after window 20;
    # window 50 (mean 50) at 66.
    for j in range(3):
        v = f32(3.0)
        v = f32(d[j] * v + (1 - d[j]) * 15.0)
        v = f32(d[j] * v + (1 - d[j]) * 30.0)
        v = f32(d[j] ** 2 * v + (1 - d[j] ** 2) * 40.0)
        v = f32(d[j] * v + (1 - d[j]) * 50.0)
        assert math.isclose(r["view"][j], v, rel_tol=1e-6), (j, r["view"][j], v)
    assert 45.0 < r["view"][0] < 46.0
    # EWMA over the in-order events 3, 7, 12, 16, 25, 47, 55, 61, 66.
    e, wm = 1.0, 3
    for t, x in [(7, 3.0), (12, 10.0), (16, 20.0), (25, 30.0), (47, 40.0), (55, 50.0),
                 (61, 0.0), (66, 7.0)]:
        a = 2.0 ** (-(t - wm) / 10)
        e, wm = a * e + (1 - a) * x, t
    assert math.isclose(r["ewma"], e, rel_tol=1e-12)


def test_duplicate_event_leaves_the_ewma_and_takes_the_windows():
    """An event at the watermark (dt = 0) leaves the EWMA unchanged but is
    in order: it becomes ``last`` and counts in the current window."""
    h = Health(window_ns=10 * SEC)
    h.apply(series_events([(0, 1.0), (5, 3.0), (5, 3.0), (5, 8.0)]))
    r = h.check()[0]
    a = 2.0 ** -0.5
    assert math.isclose(r["ewma"], a * 1.0 + (1 - a) * 3.0, rel_tol=1e-12)
    assert (r["last"], r["win_count"], r["win_sum"], r["stale"]) == (8.0, 4, 15.0, 0)


def test_window_starts_at_zero_and_range_bounds():
    """Window starts are multiples of W from time 0; ts_min and ts_max are
    valid, one nanosecond beyond is not."""
    h = Health(window_ns=10, ts_min=0, ts_max=100)
    h.apply(events([(K, M, -1, 1.0), (K, M, 0, 2.0), (K, M, 9, 3.0), (K, M, 101, 4.0)]))
    r = h.check()[0]
    assert (r["win_start"], r["win_count"], r["count"], r["first_ts"]) == (0, 2, 2, 0)
    h.apply(events([(K, M, 100, 5.0), (K, M, 95, 6.0)]))
    r = h.check()[0]
    assert (r["win_start"], r["win_count"], r["prev_count"], r["late"]) == (100, 1, 0, 1)
    assert tuple(h.totals[:5]) == (4, 2, 0, 1, 1)


def test_late_event_into_the_previous_window_of_a_new_series_is_folded():
    """A new series' previous window takes a late event while it is open
    (L = 8 ns); the roll three windows on folds it first (the first fold),
    then the current window one window after it."""
    h = Health(window_ns=10, lateness_ns=8, views=(1, 2, 3))
    h.apply(series_events([(17, 2.0), (5, 8.0)], unit=1))
    assert (h.row()["prev_count"], h.row()["fold_age"]) == (1, FOLD_NONE)
    h.apply(series_events([(48, 1.0)], unit=1))
    r = h.check()[0]
    for j, n in enumerate((1, 2, 3)):
        d = math.exp(-1.0 / n)
        assert math.isclose(r["view"][j], f32(d * 8.0 + (1 - d) * 2.0), rel_tol=1e-6)
    assert (r["fold_age"], r["prev_count"]) == (3, 0)


def test_empty_windows_between_events():
    """With L = 0 a window is folded as soon as the watermark leaves it; a
    roll of k >= 2 windows folds the current window too and leaves an empty
    previous window; fold_age counts the windows since the last fold."""
    h = Health(window_ns=10, views=(1, 2, 3))
    h.apply(series_events([(1, 2.0)], unit=1))
    assert h.row()["fold_age"] == FOLD_NONE
    h.apply(series_events([(11, 4.0)], unit=1))          # window 0 final: first fold
    r = h.check()[0]
    assert (r["fold_age"], r["prev_count"], r["view"][0]) == (1, 1, 2.0)
    h.apply(series_events([(45, 8.0)], unit=1))          # k = 3: window 10 folded, g = 1
    r = h.check()[0]
    assert (r["fold_age"], r["prev_count"], r["win_start"]) == (3, 0, T0 + 40)
    d = math.exp(-1.0)
    assert math.isclose(r["view"][0], f32(d * 2.0 + (1 - d) * 4.0), rel_tol=1e-6)
    h.apply(series_events([(95, 1.0)], unit=1))          # k = 5, window 40 folded (g = 3)
    r = h.check()[0]
    v = f32(d ** 3 * f32(d * 2.0 + (1 - d) * 4.0) + (1 - d ** 3) * 8.0)
    assert r["fold_age"] == 5 and math.isclose(r["view"][0], v, rel_tol=1e-6)


def test_fold_age_saturates_at_65534():
    """fold_age saturates at 65534 (65535 means no fold yet): 99 996 windows
    after the last fold it is 65534, and the next fold gives the old views
    the weight d ** g = 0 (g = 65533), leaving the new window's mean."""
    h = Health(window_ns=10, views=(1, 2, 3))
    h.apply(series_events([(1, 2.0), (11, 4.0), (45, 8.0)], unit=1))
    h.apply(series_events([(10**6 + 5, 1.0)], unit=1))
    assert h.check()[0]["fold_age"] == 65534
    h.apply(series_events([(10**6 + 15, 3.0)], unit=1))
    r = h.check()[0]
    assert list(r["view"]) == [1.0, 1.0, 1.0] and r["fold_age"] == 1


@FAST
@given(data=health_streams(), cuts=st.lists(st.integers(0, 200), max_size=6))
def test_random_streams_match_reference(data, cuts):
    """Every field of every row (windows, views, EWMA, lifetime stats,
    stale/late counters, last/last_ts, sketch) equals the reference on
    random streams in order, shuffled, jittered, with late events and
    duplicates, under random W, L, half-life and views; the batch counters
    add up; and cutting the stream into batches anywhere gives the same
    table byte for byte (but the seqlock words)."""
    cfg, ev = data
    h = Health(**cfg)
    for a, b in cut(len(ev), cuts):
        h.apply(ev[a:b])
    h.check()
    applied, invalid, full = (int(x) for x in h.totals[:3])
    assert applied + invalid + full == len(ev) and full == 0
    whole = Health(**cfg)
    whole.apply(ev)
    r1, r2 = h.rows(), whole.rows()
    r1["version"] = r2["version"] = 0
    assert r1.tobytes() == r2.tobytes()


@FEW
@given(data=health_streams(max_series=1, max_size=200, bad=False))
def test_every_stat_value_matches_reference(data):
    """The value of each of the 18 stats, read through the kernel's own rule
    evaluation: a reload to a wildcard rule that always fires on that stat
    (crit = -inf) turns every series CRIT with the stat's value in the
    alert; a reload to no rule returns it to OK."""
    cfg, ev = data
    h = Health(**cfg)
    h.apply(ev)
    for code in range(N_STATS):
        h.reload([rule_record(stat=code, crit=-math.inf, wildcard=True)], 0, cfg["lateness_ns"])
        h.reload(None, 0, cfg["lateness_ns"])
    h.check()


def test_many_series_in_uneven_batches():
    """600 series, 30 000 events in and out of order with late ones, in 25
    uneven batches: rows and counters equal the reference."""
    rng = np.random.default_rng(7)
    n, nseries, W = 30_000, 600, 50
    s = rng.integers(0, nseries, n)
    ts = T0 + np.sort(rng.integers(0, 200 * W, n)) - rng.choice([0, 0, 0, 7, 60, 400], n)
    vals = np.round(rng.normal(10.0, 5.0, n), 2)
    ev = events(list(zip((s * 7919).tolist(), (s % 3).tolist(), ts.tolist(), vals.tolist())))
    h = Health(window_ns=W, lateness_ns=20, half_life_ns=100, views=(1, 5, 15))
    for a, b in cut(n, rng.integers(0, n, 24).tolist()):
        h.apply(ev[a:b])
    h.check()
    assert h.totals[3] > 1000 and h.totals[4] > 100      # stale and late both exercised


# ------------------------------------------------------------ (b) quantiles

def test_bucket_index_and_bounds():
    """The doc's bucket layout, independently of the reference's bit code:
    four buckets per power of two, zero/negative/subnormal in bucket 0."""
    for e in range(-1022, 1024, 37):
        for j in range(4):
            x = math.ldexp(1.0 + j / 4.0, e)
            i = 4 * (e + 1023) + j
            assert bucket_index(x) == i
            assert bucket_index(math.nextafter(x, math.inf)) == i
            lo, hi = bucket_bounds(i)
            assert lo == x and (hi == math.ldexp(1.0 + (j + 1) / 4.0, e) or math.isinf(hi))
    for x in (0.0, -0.0, -1.0, -1e300, 5e-324, 2.225073858507201e-308):
        assert bucket_index(x) == 0


@pytest.mark.parametrize("values,base,counts", [
    # 2621440 (bucket 4177) moves the range up by 18: 1 and 1.3 (at 17 and
    # 18) collapse into sketch[0], 3 (at 23) moves to 5; 0.001 is far below
    # and is counted in sketch[0] too.
    ([1.0, 1.3, 3.0, 2621440.0, 0.001], 4093, {0: 3, 5: 1, 84: 1}),
    # 3.0 moves the range down by 3, then 1.0 by 6 (the top stays in range).
    ([100.0, 3.0, 1.0], 4092, {0: 1, 6: 1, 26: 1}),
    # the first value sits in sketch[17]
    ([1.0, 1.0, 1.1], 4092 - 17, {17: 3}),
    # zero, negatives and subnormals: bucket 0 (base -17), then 1.0 far above
    ([0.0, -5.0, 5e-324, 1.0], 4092 - 84, {0: 3, 84: 1}),
    # 1e-5 is further below 100 than the range reaches: the range moves
    # down by 67 (100 lands in the top bucket) and 1e-5 goes into sketch[0].
    ([100.0, 1e-5], 4034, {0: 1, 84: 1}),
])
def test_sketch_placement_by_hand(values, base, counts):
    """Placement, collapsing up and moving down, worked out by hand."""
    assert (SKETCH_BUCKETS, SKETCH_FIRST) == (85, 17)
    h = Health(window_ns=60 * SEC)
    h.apply(series_events([(i, x) for i, x in enumerate(values)]))
    r = h.check()[0]
    want = [counts.get(p, 0) for p in range(SKETCH_BUCKETS)]
    assert (int(r["sk_base"]), [int(c) for c in r["sketch"]], int(r["sk_shift"])) == (
        base, want, 0)
    assert (int(r["sk_lo"]), int(r["sk_hi"])) == (min(counts), max(counts))


def test_sketch_quantiles_by_hand():
    """p50/p99 of the first hand-worked sketch: rank floor(q (n - 1)), the
    bucket's harmonic-mean estimate, clamped to [win_min, win_max]."""
    sk = [3, 1] + [0] * 19 + [1]
    assert quantile_from_sketch(sk, 4097, 0.001, 100.0, 0.5) == 2 * 2.5 * 3.0 / 5.5
    assert quantile_from_sketch(sk, 4097, 0.001, 100.0, 0.99) == 2 * 3.0 * 3.5 / 6.5
    assert quantile_from_sketch(sk, 4097, 0.001, 2.6, 0.5) == 2.6            # clamped
    assert quantile_from_sketch([0] * 21 + [5], 4097, 3.0, 3.0, 0.5) == 3.0
    assert math.isnan(quantile_from_sketch([0] * 22, 0, 1.0, 1.0, 0.5))
    assert bucket_estimate(4092) == 2 * 1.0 * 1.25 / 2.25


def test_quantiles_of_zeros_and_negatives():
    """Zero, negative and subnormal values share bucket 0, whose estimate is
    0 (DOC GAP: the doc's bounds formula means nothing there; so for the
    indices below 4 a range may start at), clamped to [win_min, win_max]:
    p50 of (0, -1, 1e-307) is 0, of (-3, -1) it is -1.  With 5.0 in the
    window bucket 0 collapses into bucket 4017 = [2**-18 * 1.25, 2**-18 * 1.5):
    p50 5.2e-06, the price of values outside the bound's conditions."""
    for xs, want in (([0.0, -1.0, 1e-307], 0.0), ([-3.0, -1.0], -1.0),
                     ([0.0, 5e-324, -2.0], 0.0),
                     ([0.0, -1.0, 5.0], bucket_estimate(bucket_index(5.0) - 84))):
        h = Health(window_ns=60 * SEC)
        h.apply(series_events([(0, x) for x in xs]))
        h.check()
        assert probe_quantiles(h)[(K, M, S_P50)] == want, xs


def probe_quantiles(h: Health, lateness_ns=0) -> dict:
    """p50, p95, p99 of every series as the kernel's rule evaluation sees
    them (see test_every_stat_value_matches_reference); checked against the
    reference on the way."""
    out: dict = {}
    for code in (S_P50, S_P95, S_P99, S_WIN_MEAN):
        alerts = h.reload([rule_record(stat=code, crit=-math.inf, wildcard=True)], 0,
                          lateness_ns)
        for a in alerts:
            out[(a[0], a[2], code)] = a[7]
        h.reload(None, 0, lateness_ns)
    return out


def window_values(ev: np.ndarray, W: int, key: int, metric: int, win_start: int) -> list:
    sel = (ev["key"] == key) & (ev["metric"] == metric) & (ev["ts"] // W * W == win_start)
    sel &= np.isfinite(ev["value"])
    return ev["value"][sel].tolist()


log_values = st.builds(lambda m, e: m * 10.0 ** e, st.floats(1.0, 10.0), st.integers(-300, 299))


#: The sketch's bound (docs/health.md, "The quantile sketch"): quantile q of
#: a window whose counters never passed 65535 (any window of at most 65,535
#: values) is within 1/9 of x = np.quantile(window, q, method="lower"), the
#: value of rank floor(q (n - 1)), whenever x is a positive normal double
#: and x >= win_max / 2**21.  So p50, p95 and p99 of every window of
#: positive values whose max/min is below 2**21 (2.1e6: 10 us to 10 s is
#: 1e6) are.  The 1e-12 is the rounding of the estimate's own arithmetic.
BOUND = 1 / 9 + 1e-12
RANGE = 2.0 ** 21

#: Positive values anywhere in the double range, leaving room for a
#: million-fold span above.
low_values = st.builds(lambda m, e: m * 10.0 ** e, st.floats(1.0, 10.0), st.integers(-300, 290))


def window_shapes(max_span: float):
    """A window's values, relative to its minimum: (min, span, the points
    in [0, 1] of log(value / min) / log(span)) under several shapes: spread
    log-uniformly, one spike above a flat level, a spike below, two tight
    clusters at the ends, and a slow drift; with both ends present."""
    point = st.floats(0.0, 1.0)
    return st.tuples(
        low_values,
        st.one_of(st.floats(1.0, max_span), st.sampled_from([max_span, 1e6, 2.0 ** 20])).filter(
            lambda x: x <= max_span),
        st.one_of(
            st.lists(point, min_size=0, max_size=300),
            st.builds(lambda n, k: [0.0] * n + [1.0] * k, st.integers(1, 300), st.integers(1, 3)),
            st.builds(lambda n, k: [1.0] * n + [0.0] * k, st.integers(1, 300), st.integers(1, 3)),
            st.lists(st.sampled_from([0.0, 0.001, 0.999, 1.0]), min_size=1, max_size=300),
            st.builds(lambda n: [i / n for i in range(n)], st.integers(1, 300)),
        ),
        st.sampled_from(["as-drawn", "rising", "falling", "zigzag", "max-first"]))


def spread_window(x0: float, span: float, points: list, order: str) -> list:
    xs = [x0] + [x0 * span ** f for f in points] + [x0 * span]
    if order == "max-first":
        xs = [xs[-1]] + xs[:-1]
    elif order != "as-drawn":
        xs.sort(reverse=order == "falling")
        if order == "zigzag":
            xs = xs[::2] + xs[1::2][::-1]
    return xs


def assert_quantiles_within_bound(xs: list, h: Health, only_in_range=False) -> list:
    """The kernel's p50/p95/p99 of the one window in ``h`` (its rule
    evaluation, and engine._query's decoder of the row), the reference's
    from the same counters, and engine.query.readable's: all equal, and
    within BOUND of np.quantile(method="lower").  Returns the ranks' true
    values that the bound covered."""
    r = h.check()[0]
    assert int(r["sk_shift"]) == 0
    probed = probe_quantiles(h)
    top = max(xs)
    covered = []
    for q, code in ((0.5, S_P50), (0.95, S_P95), (0.99, S_P99)):
        true = float(np.quantile(np.array(xs), q, method="lower"))
        assert true == sorted(xs)[math.floor(q * (len(xs) - 1))]
        est = probed[(K, M, code)]
        assert est == _query.sketch_quantile_row(r, q)
        assert est == quantile_from_sketch(r["sketch"], r["sk_base"], r["win_min"], r["win_max"], q)
        assert est == sketch_quantile(int(r["sk_base"]), r["sketch"], int(r["win_count"]),
                                      float(r["win_min"]), float(r["win_max"]), q)
        if true >= top / RANGE:
            assert abs(est - true) <= BOUND * true, (q, true, est)
            covered.append(true)
        else:
            assert only_in_range, (q, true, est)
    return covered


@FAST
@given(shape=window_shapes(1e6))
def test_quantiles_within_a_ninth_over_a_million_fold_span(shape):
    """Issue 16: any window of positive values spanning up to 1e6 (10 us to
    10 s of latency), wherever it lies between 1e-300 and 1e296, in any
    order: p50, p95 and p99 are within 1/9 of the exact quantiles; the
    sketch kept every value in its own bucket."""
    xs = spread_window(*shape)
    h = Health(window_ns=60 * SEC)
    h.apply(series_events([(0, x) for x in xs]))
    r = h.check()[0]
    assert r["sketch"][0] == 0 or bucket_index(min(xs)) == int(r["sk_base"])
    assert sum(int(c) for c in r["sketch"]) == len(xs)
    assert_quantiles_within_bound(xs, h)


@FAST
@given(shape=window_shapes(RANGE * (1 - 2.0 ** -40)))
def test_quantiles_within_a_ninth_up_to_the_sketch_range(shape):
    """The bound's edge: spans up to just under 2**21 keep the bound."""
    xs = spread_window(*shape)
    h = Health(window_ns=60 * SEC)
    h.apply(series_events([(0, x) for x in xs]))
    assert len(assert_quantiles_within_bound(xs, h)) == 3


@FAST
@given(shape=window_shapes(1e12))
def test_quantiles_within_a_ninth_above_max_over_2_pow_21(shape):
    """Spans past 2**21: values more than 2**21 below the window's maximum
    collapse into the lowest bucket (an over-estimate), but every quantile
    whose exact value is at least max / 2**21 (p99 of one low spike, the
    quantiles above a dip) is still within 1/9."""
    xs = spread_window(*shape)
    h = Health(window_ns=60 * SEC)
    h.apply(series_events([(0, x) for x in xs]))
    assert_quantiles_within_bound(xs, h, only_in_range=True)


@pytest.mark.parametrize("spike_first", [False, True])
def test_one_spike_in_a_window_of_half_second_readings(spike_first):
    """Issue 16's case: 99 readings of 0.5 and one of 50 gave p50 = p95 =
    p99 = 1.364 (173% off) on the 22-bucket sketch.  Rank floor(q (n - 1))
    (np.quantile's "lower") makes all three 0.5 (rank 98 of 0..99 for p99):
    the estimate is 0.5's bucket's, 0.5556, within 1/9.  With a second
    spike, p99 (rank 98) is 50, and the estimate is clamped to the max."""
    for spikes, want in ((1, (0.5, 0.5, 0.5)), (2, (0.5, 0.5, 50.0))):
        xs = [0.5] * (100 - spikes)
        xs = [50.0] * spikes + xs if spike_first else xs + [50.0] * spikes
        h = Health(window_ns=60 * SEC)
        h.apply(series_events([(0, x) for x in xs]))
        assert_quantiles_within_bound(xs, h)
        probed = probe_quantiles(h)
        got = tuple(probed[(K, M, code)] for code in (S_P50, S_P95, S_P99))
        assert [float(np.quantile(xs, q, method="lower")) for q in (0.5, 0.95, 0.99)] == list(want)
        assert got == tuple(50.0 if w == 50.0 else 2 * 0.5 * 0.625 / 1.125 for w in want), got


def test_a_window_past_the_range_loses_only_its_lowest_values():
    """Outside the bound's conditions, by hand: 50 readings of 1.0 and 50 of
    1e7 (a 1e7 span).  1.0 is more than 2**21 below the max and collapses:
    p50 (rank 49, true 1.0) reads 1e7 / 2**21's bucket, 4.9; p95 and p99
    (1e7) keep the bound."""
    xs = [1.0] * 50 + [1e7] * 50
    h = Health(window_ns=60 * SEC)
    h.apply(series_events([(0, x) for x in xs]))
    assert assert_quantiles_within_bound(xs, h, only_in_range=True) == [1e7, 1e7]
    p50 = probe_quantiles(h)[(K, M, S_P50)]
    assert p50 == bucket_estimate(bucket_index(1e7) - 84) and 4 < p50 < 6


wide_values = st.one_of(
    log_values, log_values.map(lambda x: -x), st.sampled_from(
        [0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
         -1.7976931348623157e308, 1.0, 1e-300, 1e300]),
    st.floats(allow_nan=False, allow_infinity=False))


@FAST
@given(data=health_streams(max_series=3, max_size=150, values=wide_values, bad=False))
def test_sketch_matches_reference_on_adversarial_values(data):
    """Values across the whole double range (1e-300..1e300, +-DBL_MAX,
    zeros, negatives, subnormals): the sketch fields equal the reference
    exactly, and so do the kernel's quantile estimates."""
    cfg, ev = data
    h = Health(**cfg)
    h.apply(ev)
    h.check()
    probe_quantiles(h, cfg["lateness_ns"])


def test_sketch_rising_then_falling_across_the_range():
    """One window of 1e-300 ... 1e300 ... 1e-300 (every tenth power of
    ten): the range follows the top, everything below collapses into
    sketch[0]; kernel equals reference, and p99 (inside the top 85
    buckets) is within 1/9."""
    xs = [10.0 ** e for e in range(-300, 301, 10)] + [10.0 ** e for e in range(300, -301, -10)]
    xs += [1e300 * (1 + i / 100) for i in range(200)]
    h = Health(window_ns=60 * SEC)
    h.apply(series_events([(0, x) for x in xs]))
    r = h.check()[0]
    assert int(r["sk_base"]) + SKETCH_BUCKETS - 1 == bucket_index(max(xs))
    est = probe_quantiles(h)[(K, M, S_P99)]
    true = sorted(xs)[math.floor(0.99 * (len(xs) - 1))]
    assert abs(est - true) <= true / 9, (est, true)


@pytest.mark.parametrize("n,spread", [(65_536, 1), (70_000, 1), (200_003, 3)])
def test_sketch_counters_halve_past_65535(n, spread):
    """More than 65535 values in one bucket halve every counter (rounding
    up) and count the halvings in sk_shift; kernel equals reference."""
    xs = (1.0 + (np.arange(n) % spread) * 0.26).tolist()
    h = Health(window_ns=60 * SEC)
    h.apply(series_events([(0, x) for x in xs]))
    r = h.check()[0]
    assert int(r["sk_shift"]) >= 1 and max(int(c) for c in r["sketch"]) <= 65535
    assert r["win_count"] == n
    probe_quantiles(h)


def test_sketch_halving_count_by_hand():
    """65536 equal values: at the 65536th the counter would pass 65535, so
    every counter is halved (65535 -> 32768, sk_shift 1) and then counts
    the value (32769); one more gives 32770."""
    h = Health(window_ns=60 * SEC)
    h.apply(series_events([(0, 1.0)] * 65_536))
    r = h.check()[0]
    assert (int(r["sketch"][SKETCH_FIRST]), int(r["sk_shift"])) == (32769, 1)
    h.apply(series_events([(0, 1.0)]))
    assert int(h.check()[0]["sketch"][SKETCH_FIRST]) == 32770


def test_sketch_collapse_of_more_than_twice_65535():
    """Three full buckets (65535 each, no halving yet) collapse into
    sketch[0] when a value far above arrives: 196605 counts must be halved
    twice (98303, then 49152) to fit a u16 counter; sk_shift 2."""
    xs = [1.0] * 65_535 + [1.3] * 65_535 + [1.6] * 65_535 + [1e30]
    h = Health(window_ns=60 * SEC)
    h.apply(series_events([(0, x) for x in xs]))
    r = h.check()[0]
    assert (int(r["sketch"][0]), int(r["sketch"][84]), int(r["sk_shift"])) == (49152, 1, 2)
    assert (int(r["sk_lo"]), int(r["sk_hi"])) == (0, 84)


def test_sketch_is_per_window_and_stale_events_in_the_current_window_count():
    """A new window starts a fresh sketch (placement at sketch[17],
    sk_shift 0); a stale event of the current window is counted, one of the
    previous window is not."""
    h = Health(window_ns=10 * SEC, lateness_ns=10 * SEC)
    h.apply(series_events([(1, 1.0)] * 70_000))
    assert h.row()["sk_shift"] == 1
    h.apply(series_events([(15, 8.0), (12, 8.0), (9, 100.0)]))
    r = h.check()[0]
    assert (int(r["sk_base"]), int(r["sk_shift"]), int(r["sketch"][SKETCH_FIRST])) == (
        bucket_index(8.0) - SKETCH_FIRST, 0, 2)
    # Only the new window's counter is left: the old one's were cleared.
    assert sum(int(c) for c in r["sketch"]) == 2
    assert (r["win_count"], r["prev_count"]) == (2, 70_001)


# ------------------------------------------------- (c) rules, by hand

def rules_one(**kw):
    return [rule_record(M, kw.pop("stat", S_LAST), **kw)]


def A(ts, old, new, value, stat=S_LAST, rule=1, key=K, metric=M):
    """An expected alert, ts in seconds after T0."""
    return (key, T0 + int(ts * SEC), metric, old, new, stat, rule, value)


def test_hysteresis_warn_crit_clear():
    """warn 0.8, crit 0.95, clear 0.7 on ``last``: 0.85 WARN; 0.75 stays
    WARN (above clear); 0.65 OK; 0.97 CRIT; 0.9 back to WARN at once; 0.72
    and 0.7 (= clear) stay WARN; 0.69 OK; 0.8 (= warn) WARN, 0.95 (= crit)
    CRIT."""
    h = Health(rules=rules_one(warn=0.8, crit=0.95, clear=0.7))
    vals = [0.5, 0.85, 0.75, 0.65, 0.97, 0.9, 0.72, 0.7, 0.69, 0.8, 0.95]
    step(h, series_events([(i + 1, x) for i, x in enumerate(vals)]), [
        A(2, OK, WARN, 0.85), A(4, WARN, OK, 0.65), A(5, OK, CRIT, 0.97),
        A(6, CRIT, WARN, 0.9), A(9, WARN, OK, 0.69), A(10, OK, WARN, 0.8),
        A(11, WARN, CRIT, 0.95)])
    r = h.check()[0]
    assert (r["status"], r["status_since"], r["pending"], r["rule"]) == (CRIT, T0 + 11 * SEC, 0, 1)


def test_crit_only_and_warn_only_rules():
    """Without warn a rule goes OK <-> CRIT and its hysteresis holds CRIT;
    without crit it never goes past WARN (clear defaults to the level)."""
    h = Health(rules=rules_one(crit=0.95, clear=0.7))
    step(h, series_events([(1, 0.9), (2, 0.96), (3, 0.8), (4, 0.69)]),
         [A(2, OK, CRIT, 0.96), A(4, CRIT, OK, 0.69)])
    h = Health(rules=rules_one(warn=0.8))
    step(h, series_events([(1, 0.9), (2, 1e9), (3, 0.8), (4, 0.79)]),
         [A(1, OK, WARN, 0.9), A(4, WARN, OK, 0.79)])
    h.check()


def test_for_holds_in_event_time():
    """for = 10 s: WARN is committed by the event 10 s after the first one
    above warn (event time, the whole stream in one call)."""
    h = Health(rules=rules_one(warn=0.8, crit=0.95, **{"for_ns": 10 * SEC}))
    step(h, series_events([(0, 0.9), (5, 0.9)]), [])
    r = h.check()[0]
    assert (r["status"], r["pending"], r["pending_since"]) == (OK, WARN, T0)
    step(h, series_events([(9.5, 0.9), (10, 0.9)]), [A(10, OK, WARN, 0.9)])
    assert (h.row()["pending"], h.row()["status_since"]) == (0, T0 + 10 * SEC)


def test_for_is_reset_by_a_dip():
    """A value below warn cancels the pending escalation; the next one
    above starts a new ``for``."""
    h = Health(rules=rules_one(warn=0.8, crit=0.95, **{"for_ns": 10 * SEC}))
    step(h, series_events([(0, 0.9), (5, 0.5), (8, 0.9), (15, 0.9)]), [])
    assert (h.row()["pending"], h.row()["pending_since"]) == (WARN, T0 + 8 * SEC)
    step(h, series_events([(18, 0.9)]), [A(18, OK, WARN, 0.9)])


def test_for_commits_the_least_severe_level_held_then_escalates_separately():
    """CRIT pending since 0, a WARN-level value at 4 s lowers the pending
    level to WARN (keeping its start), so at 10 s WARN is committed (with
    the deciding value 0.97); CRIT then needs its own 10 s from the next
    event (11 s -> 21 s); a drop below clear is OK at once."""
    h = Health(rules=rules_one(warn=0.8, crit=0.95, **{"for_ns": 10 * SEC}))
    step(h, series_events([(0, 0.97), (4, 0.85), (10, 0.97)]), [A(10, OK, WARN, 0.97)])
    step(h, series_events([(11, 0.97), (20, 0.97)]), [])
    assert (h.row()["pending"], h.row()["pending_since"]) == (CRIT, T0 + 11 * SEC)
    step(h, series_events([(21, 0.97), (22, 0.5)]),
         [A(21, WARN, CRIT, 0.97), A(22, CRIT, OK, 0.5)])
    h.check()


def test_falling_rule():
    """Free disk: warn 20, crit 10, clear 25 (falling, stored negated); the
    alerts carry the stat's own value, not the negated one."""
    h = Health(rules=rules_one(warn=20.0, crit=10.0, clear=25.0, falling=True))
    step(h, series_events([(1, 50.0), (2, 15.0), (3, 22.0), (4, 5.0), (5, 30.0)]),
         [A(2, OK, WARN, 15.0), A(4, WARN, CRIT, 5.0), A(5, CRIT, OK, 30.0)])
    h.check()


@pytest.mark.parametrize("wild_first", [False, True])
def test_wildcard_rule_covers_metrics_without_their_own(wild_first):
    """A metric's own rule wins wherever it is in the array, metric id 0
    included (the wildcard's stored metric); every other metric gets the
    wildcard; ``rule`` is 1 + the index of the rule in the array."""
    own = rule_record(M, S_LAST, warn=10.0, crit=20.0)
    own0 = rule_record(0, S_LAST, warn=1000.0, crit=2000.0)
    wild = rule_record(stat=S_LAST, warn=100.0, crit=200.0, wildcard=True)
    rules = [wild, own, own0] if wild_first else [own, own0, wild]
    r_own, r_own0, r_wild = (2, 3, 1) if wild_first else (1, 2, 3)
    h = Health(rules=rules)
    ev = events([(K, M, T0 + SEC, 15.0), (K, 4, T0 + 2 * SEC, 15.0), (8, 0, T0 + 3 * SEC, 150.0),
                 (K, 4, T0 + 4 * SEC, 250.0), (8, 0, T0 + 5 * SEC, 1500.0)])
    step(h, ev, [A(1, OK, WARN, 15.0, rule=r_own),
                 A(4, OK, CRIT, 250.0, rule=r_wild, metric=4),
                 A(5, OK, WARN, 1500.0, rule=r_own0, key=8, metric=0)])
    assert [int(r["rule"]) for r in h.check()] == [r_own, r_wild, r_own0]


def test_stale_events_never_change_status_or_last():
    """Out-of-order events count in the aggregates (the mean here) but are
    not evaluated and never become ``last``."""
    h = Health(rules=rules_one(warn=0.8, crit=0.95))
    step(h, series_events([(10, 0.5), (5, 0.99)]), [])
    r = h.check()[0]
    assert (r["last"], r["status"], r["stale"]) == (0.5, OK, 1)
    step(h, series_events([(10, 0.99), (9, 0.1)]), [A(10, OK, CRIT, 0.99)])
    r = h.check()[0]
    assert (r["last"], r["status"], r["stale"]) == (0.99, CRIT, 2)
    h = Health(rules=rules_one(stat=S_MEAN, crit=10.0))
    step(h, series_events([(10, 1.0), (5, 100.0)]), [])
    step(h, series_events([(11, 1.0)]), [A(11, OK, CRIT, 34.0, stat=S_MEAN)])


def test_view_stat_has_no_value_before_the_first_fold():
    """A rule on a view that always fires once it has a value: nothing
    until a window is folded, then the view (the mean of the folded window)
    decides.  With L = 0 window 0 is folded by the first event of window 10;
    with L = W only once the watermark reaches 20."""
    h = Health(window_ns=10 * SEC, rules=rules_one(stat=S_VIEW0, crit=-1e300))
    step(h, series_events([(1, 4.0), (2, 6.0)]), [])
    step(h, series_events([(12, 100.0)]), [A(12, OK, CRIT, 5.0, stat=S_VIEW0)])
    h = Health(window_ns=10 * SEC, lateness_ns=10 * SEC,
               rules=rules_one(stat=S_VIEW0, crit=-1e300))
    step(h, series_events([(1, 4.0), (2, 6.0), (12, 100.0), (19, 1.0)]), [])
    step(h, series_events([(20, 2.0)]), [A(20, OK, CRIT, 5.0, stat=S_VIEW0)])
    h.check()
    # No value leaves a WARN/CRIT status alone too: CRIT on ``last``, then a
    # reload to a view rule before any fold keeps CRIT.
    h = Health(window_ns=10 * SEC, rules=rules_one(crit=0.5))
    step(h, series_events([(1, 0.9)]), [A(1, OK, CRIT, 0.9)])
    expect(h.reload(rules_one(stat=S_VIEW0, warn=1e300)), h.last_ref, [])
    assert h.check()[0]["status"] == CRIT


def test_an_overflowed_stat_is_not_judged():
    """A stat that overflowed (the variance of +-1e300: m2 = inf) leaves the
    status alone, like one with no value (DOC GAP: the doc names only "no
    value yet"; this pins the kernel's choice); a finite one decides."""
    h = Health(rules=rules_one(stat=S_VAR, crit=1.0))
    step(h, series_events([(0, 1e300), (1, -1e300)]), [])
    assert math.isinf(h.row()["m2"]) and h.row()["status"] == OK
    h = Health(rules=rules_one(stat=S_VAR, crit=1.0))
    step(h, series_events([(0, 1.0), (1, -1.0)]), [A(1, OK, CRIT, 1.0, stat=S_VAR)])


def test_ttl_sweep_and_return_from_stale():
    """Rule ttl 30 s (default 20 s for rule-less series, a rule with ttl 0
    never): STALE strictly after ttl, at event time last_ts + ttl, stat 255,
    value the TTL in seconds, rule-less series included; only once; a stale event does
    not leave STALE; the next in-order event does, at once (no ``for``, no
    hysteresis)."""
    rules = [rule_record(M, S_LAST, warn=0.8, crit=0.95, for_ns=5 * SEC, ttl_ns=30 * SEC),
             rule_record(5, S_LAST, warn=0.8, ttl_ns=0)]
    h = Health(rules=rules, ttl_ns=20 * SEC)
    ev = events([(K, M, T0, 0.85), (K, 99, T0, 1.0), (K, 5, T0, 0.1),
                 (K, M, T0 + 5 * SEC, 0.85)])
    step(h, ev, [A(5, OK, WARN, 0.85)])
    expect(h.sweep(T0 + 20 * SEC), h.last_ref, [])
    expect(h.sweep(T0 + 20 * SEC + 1), h.last_ref,
           [(K, T0 + 20 * SEC, 99, OK, STALE, STAT_TTL, 0, 20.0)])
    expect(h.sweep(T0 + 35 * SEC), h.last_ref, [])
    expect(h.sweep(T0 + 35 * SEC + 1), h.last_ref,
           [A(35, WARN, STALE, 30.0, stat=STAT_TTL)])
    assert (h.row()["status"], h.row()["status_since"]) == (STALE, T0 + 35 * SEC)
    expect(h.sweep(T0 + 1000 * SEC), h.last_ref, [])
    step(h, series_events([(1, 0.99)]), [])
    assert (h.row()["status"], h.row()["last"]) == (STALE, 0.85)
    step(h, series_events([(50, 0.97), (51, 0.5)]),
         [A(50, STALE, CRIT, 0.97), A(51, CRIT, OK, 0.5)])
    step(h, events([(K, 99, T0 + 60 * SEC, 2.0)]),
         [(K, T0 + 60 * SEC, 99, STALE, OK, None, 0, None)])
    h.check()


def test_ttl_clears_a_pending_escalation():
    """Going STALE drops a pending level; back from STALE the raw level is
    committed at once."""
    h = Health(rules=rules_one(warn=0.8, crit=0.95, **{"for_ns": 60 * SEC, "ttl_ns": 10 * SEC}))
    step(h, series_events([(0, 0.9)]), [])
    assert h.row()["pending"] == WARN
    expect(h.sweep(T0 + 11 * SEC), h.last_ref, [A(10, OK, STALE, 10.0, stat=STAT_TTL)])
    assert h.row()["pending"] == 0
    step(h, series_events([(20, 0.9)]), [A(20, STALE, WARN, 0.9)])


def test_reload_rethresholds_and_keeps_state():
    """Raising warn above the value clears at once (at the watermark);
    lowering it back raises WARN; removing the rule returns to OK; a ``for``
    after a reload only sets pending; windows and statistics are untouched."""
    rules_a = rules_one(warn=0.8, crit=0.95)
    h = Health(rules=rules_a)
    step(h, series_events([(1, 0.9)]), [A(1, OK, WARN, 0.9)])
    before = h.rows().copy()
    expect(h.reload(rules_one(warn=0.92, crit=0.95)), h.last_ref, [A(1, WARN, OK, 0.9)])
    expect(h.reload(rules_a), h.last_ref, [A(1, OK, WARN, 0.9)])
    expect(h.reload(None), h.last_ref, [(K, T0 + SEC, M, WARN, OK, None, 0, None)])
    assert h.row()["rule"] == 0
    expect(h.reload(rules_one(warn=0.8, crit=0.95, **{"for_ns": 10 * SEC})), h.last_ref, [])
    r = h.check()[0]
    assert (r["status"], r["pending"], r["pending_since"], r["rule"]) == (OK, WARN, T0 + SEC, 1)
    after = h.rows()
    keep = [f for f in STATE_DTYPE.names if f not in (
        "version", "status", "status_since", "pending", "pending_since", "rule")]
    for f in keep:
        assert after[f].tobytes() == before[f].tobytes(), f
    step(h, series_events([(5, 0.9)]), [])
    step(h, series_events([(11, 0.9)]), [A(11, OK, WARN, 0.9)])


def test_reload_restarts_a_pending_escalation():
    """CRIT pending since 0, lowered to WARN at 4 s (for = 10 s); a reload
    (same rules) clears pending and re-evaluates at the watermark, so WARN
    is pending since 4 s and commits at 14 s, not 10 s."""
    rules = rules_one(warn=0.8, crit=0.95, **{"for_ns": 10 * SEC})
    h = Health(rules=rules)
    step(h, series_events([(0, 0.97), (4, 0.9)]), [])
    assert (h.row()["pending"], h.row()["pending_since"]) == (WARN, T0)
    expect(h.reload(rules), h.last_ref, [])
    assert (h.row()["pending"], h.row()["pending_since"]) == (WARN, T0 + 4 * SEC)
    step(h, series_events([(10, 0.9)]), [])
    step(h, series_events([(14, 0.9)]), [A(14, OK, WARN, 0.9)])


def test_reload_resolves_rules_again():
    """A metric that had no rule picks up a new wildcard rule at reload and
    is evaluated at once; a rule's own ttl replaces the default."""
    h = Health(ttl_ns=0)
    h.apply(events([(K, 4, T0, 50.0), (K, M, T0 + SEC, 1.0)]))
    wild = rule_record(stat=S_LAST, warn=10.0, wildcard=True, ttl_ns=5 * SEC)
    expect(h.reload([wild], 0), h.last_ref, [A(0, OK, WARN, 50.0, metric=4)])
    assert [int(r["rule"]) for r in h.check()] == [1, 1]
    expect(h.sweep(T0 + 6 * SEC + 1), h.last_ref,
           [A(5, WARN, STALE, 5.0, stat=STAT_TTL, metric=4),
            A(6, OK, STALE, 5.0, stat=STAT_TTL)])


def test_reload_raising_the_lateness_keeps_an_open_window_open():
    """W = 60 s, L = 10 s: window 0 is open until the watermark reaches 70 s.
    A reload to L = 60 s (before that) keeps it open until 120 s, so an
    event of window 0 after watermark 75 s still gets in; with the old
    lateness it would have been late."""
    h = Health(window_ns=60 * SEC, lateness_ns=10 * SEC)
    h.apply(series_events([(30, 1.0), (61, 2.0), (59, 3.0), (65, 4.0)]))
    assert (h.row()["late"], h.row()["prev_count"], h.row()["fold_age"]) == (0, 2, FOLD_NONE)
    h.reload(None, 0, 60 * SEC)
    h.apply(series_events([(75, 5.0), (58, 6.0)]))
    r = h.check()[0]
    assert (r["late"], r["prev_count"], r["prev_sum"], r["fold_age"]) == (0, 3, 10.0, FOLD_NONE)
    h.apply(series_events([(120, 7.0)]))              # roll: window 0 folded (mean 10/3)
    r = h.check()[0]
    assert (r["fold_age"], r["view"][0]) == (2, f32(10.0 / 3.0))


def test_reload_lowering_the_lateness_folds_the_now_final_window():
    """W = 10 ns, L = 10 ns: window 0 is still open at watermark 12.  A
    reload to L = 0 makes it final, so it is folded then (views 1.0), and
    the roll at 25 folds window 10 one window after it: window 0 is not
    lost from the views."""
    h = Health(window_ns=10, lateness_ns=10, views=(1, 2, 3))
    h.apply(series_events([(1, 1.0), (12, 2.0)], unit=1))
    assert h.row()["fold_age"] == FOLD_NONE
    h.reload(None, 0, 0)
    r = h.check()[0]
    assert (r["fold_age"], list(r["view"])) == (1, [1.0, 1.0, 1.0])
    h.apply(series_events([(25, 3.0)], unit=1))
    r = h.check()[0]
    for j, n in enumerate((1, 2, 3)):
        d = math.exp(-1.0 / n)
        assert math.isclose(r["view"][j], f32(d * 1.0 + (1 - d) * 2.0), rel_tol=1e-6), j


def test_reload_raising_the_lateness_does_not_reopen_a_final_window():
    """W = 10 ns, L = 0: window 0 is final and folded at watermark 12 (views
    1.0).  After a reload to L = 10 ns an event of window 0 is late (docs,
    step 5: a window once final stays final, and is never folded twice);
    the roll at 25 folds nothing."""
    h = Health(window_ns=10, lateness_ns=0, views=(1, 2, 3))
    h.apply(series_events([(1, 1.0), (12, 2.0)], unit=1))
    assert (h.row()["fold_age"], list(h.row()["view"])) == (1, [1.0, 1.0, 1.0])
    h.reload(None, 0, 10)
    h.apply(series_events([(5, 3.0), (25, 4.0)], unit=1))
    r = h.check()[0]
    assert (r["fold_age"], list(r["view"]), r["late"], r["prev_count"]) == (
        2, [1.0, 1.0, 1.0], 1, 1)


def test_reload_leaves_stale_series_stale():
    """DOC GAP made explicit: a reload does not bring a STALE series back (no
    event arrived); it leaves STALE with its next in-order event."""
    h = Health(rules=rules_one(warn=0.8, **{"ttl_ns": 10 * SEC}))
    h.apply(series_events([(0, 0.9)]))
    expect(h.sweep(T0 + 11 * SEC), h.last_ref, [A(10, WARN, STALE, 10.0, stat=STAT_TTL)])
    expect(h.reload(rules_one(warn=0.5, **{"ttl_ns": 10 * SEC})), h.last_ref, [])
    assert h.row()["status"] == STALE
    step(h, series_events([(20, 0.1)]), [A(20, STALE, OK, 0.1)])


def test_alert_buffer_overflow_is_counted_and_status_is_right():
    """Five series cross crit in one batch with room for two alerts: the
    first two are written, three dropped and counted, and every row is
    CRIT; the same for a sweep with room for one and for no room at all."""
    h = Health(rules=[rule_record(stat=S_LAST, crit=1.0, ttl_ns=SEC, wildcard=True)])
    ev = events([(k, M, T0 + k, 5.0) for k in range(1, 6)])
    got = h.apply(ev, cap=2)
    assert got == [(k, T0 + k, M, OK, CRIT, S_LAST, 1, 5.0) for k in (1, 2)]
    assert tuple(h.totals[5:]) == (2, 3)
    assert [int(r["status"]) for r in h.check()] == [CRIT] * 5
    got = h.sweep(T0 + 10 * SEC, cap=1)
    assert got == [(1, T0 + 1 + SEC, M, CRIT, STALE, STAT_TTL, 1, 1.0)]
    assert [int(r["status"]) for r in h.check()] == [STALE] * 5
    assert h.apply(events([(k, M, T0 + 20 * SEC, 0.0) for k in range(1, 6)]), cap=0) == []
    assert [int(r["status"]) for r in h.check()] == [OK] * 5
    assert h.reload([rule_record(stat=S_LAST, crit=-1.0, wildcard=True)], cap=0) == []
    assert [int(r["status"]) for r in h.check()] == [CRIT] * 5


def test_full_table_series_raise_no_alerts():
    """A series refused by a full table is not evaluated (no alert)."""
    h = Health(rules=[rule_record(stat=S_LAST, crit=1.0, wildcard=True)], slots=8, limit=2)
    got = h.apply(events([(k, M, T0, 5.0) for k in range(1, 5)]))
    assert [a[0] for a in got] == [1, 2] and h.totals[2] == 2


# ------------------------------------------ (d) random rules and streams

@st.composite
def random_rule(draw, metric, wildcard=False):
    stat = draw(st.integers(0, N_STATS - 1))
    big = stat in (5, 6, 7, 8)                      # var, count, win_count, win_sum
    lo, hi = (-20.0, 60.0) if big else (-2.0, 12.0)
    thr = st.one_of(st.integers(int(lo), int(hi)).map(float), st.floats(lo, hi))
    a, b, c = sorted(draw(st.lists(thr, min_size=3, max_size=3)))
    assume(a < b < c)
    falling = draw(st.booleans())
    # rising: clear <= warn < crit; falling: clear >= warn > crit
    clear, warn, crit = (c, b, a) if falling else (a, b, c)
    clear = draw(st.sampled_from([None, clear]))
    kind = draw(st.sampled_from(["both", "warn", "crit"]))
    if kind == "warn":
        crit = None
    elif kind == "crit":
        warn = None
    return rule_record(metric, stat, warn=warn, crit=crit, clear=clear, falling=falling,
                       wildcard=wildcard,
                       for_ns=draw(st.sampled_from([0, 0, 1, 5, 20])),
                       ttl_ns=draw(st.sampled_from([0, 3, 30, 200])))


@st.composite
def random_rules(draw):
    metrics = draw(st.lists(st.integers(0, 2), unique=True, max_size=2))
    rules = [draw(random_rule(m)) for m in metrics]
    if draw(st.booleans()):
        rules.insert(draw(st.integers(0, len(rules))), draw(random_rule(0, wildcard=True)))
    return rules or None


rule_values = st.one_of(st.integers(-2, 12).map(float), st.floats(-2.0, 12.0),
                        st.sampled_from([0.0, 10.0]))


@st.composite
def scripts(draw, new_lateness=False):
    """Settings, initial rules and a list of operations: batches of events
    (a few series, times mostly increasing with stale/late ones), TTL sweeps
    and reloads with new rules, ttl and lateness."""
    W = draw(st.sampled_from([5, 10]))
    cfg = dict(window_ns=W, lateness_ns=W if new_lateness else draw(st.integers(0, W)),
               half_life_ns=draw(st.sampled_from([3, 10, 40])),
               views=draw(st.sampled_from([(1, 5, 15), (1, 2, 3)])),
               ttl_ns=draw(st.sampled_from([0, 4, 50])), rules=draw(random_rules()),
               ts_min=0, ts_max=2**40)
    t = 1000
    ops = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["apply", "apply", "apply", "sweep", "reload"]))
        if kind == "apply":
            rows = []
            for _ in range(draw(st.integers(1, 25))):
                t += draw(st.sampled_from([0, 1, 1, 2, 3, 7, 15]))
                back = draw(st.sampled_from([0, 0, 0, 0, 1, 4, 12, 30]))
                rows.append((draw(st.sampled_from([1, 2])), draw(st.integers(0, 3)), t - back,
                             draw(rule_values)))
            ops.append(("apply", events(rows)))
        elif kind == "sweep":
            ops.append(("sweep", t + draw(st.integers(0, 60))))
        else:
            ops.append(("reload", draw(random_rules()), draw(st.sampled_from([0, 4, 50])),
                        draw(st.integers(0, W)) if new_lateness else cfg["lateness_ns"]))
    return cfg, ops


def run_script(script):
    cfg, ops = script
    h = Health(**cfg)
    for op in ops:
        if op[0] == "apply":
            h.apply(op[1])
        elif op[0] == "sweep":
            h.sweep(op[1])
        else:
            h.reload(op[1], op[2], op[3])
        h.check()


@settings(max_examples=300, deadline=None,
          phases=[p for p in Phase if p is not Phase.explain])
@given(script=scripts())
def test_random_rules_and_streams_alert_like_the_reference(script):
    """Random rules on every stat (rising, falling, warn-only, crit-only,
    wildcard, ``for``, ttl) over random streams with sweeps and reloads
    (new rules and ttl) in between: the kernel raises exactly the
    reference's alerts, in the same order, and ends with the same rows
    (status, pending, rule and all)."""
    run_script(script)


@settings(max_examples=200, deadline=None,
          phases=[p for p in Phase if p is not Phase.explain])
@given(script=scripts(new_lateness=True))
def test_random_reloads_that_change_the_lateness(script):
    """As above, with reloads that also change the lateness: a previous
    window that a lower lateness makes final is folded at once (docs: "when
    it can no longer change"), not lost; a higher one keeps an open window
    open longer but never reopens a final one."""
    run_script(script)
