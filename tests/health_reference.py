"""Plain-Python reference of the health layer (docs/health.md).

Written from the document alone, independently of the compiled kernel
(``ext/row.pxd`` and its neighbours): per-series lifetime statistics, the event-time EWMA,
tumbling windows with lateness, the three sliding views, the 85-bucket
quantile sketch, the rules state machine, TTL (STALE) and reload.  It is
meant to be obvious, not fast: one event at a time, Python numbers, the
doc's formulas evaluated in float64 in the doc's order.

Where the document leaves a choice open, the choice made here is written
down next to the code (``DOC GAP``) so that a disagreement with the kernel
can be told apart from a kernel bug.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from engine.core.layout import EVENT_MARKER, PRODUCER_METRIC, SKETCH_BUCKETS, SKETCH_FIRST

# --------------------------------------------------------------- constants

OK, WARN, STALE, CRIT = 0, 1, 2, 3
STATUS_NAMES = ("OK", "WARN", "STALE", "CRIT")

RULE_WILDCARD, RULE_HAS_WARN, RULE_HAS_CRIT, RULE_FALLING = 1, 2, 4, 8

# Stat codes (docs/health.md, "Stats"; views are 15..17).
(S_LAST, S_EWMA, S_MEAN, S_MIN, S_MAX, S_VAR, S_COUNT, S_WIN_COUNT, S_WIN_SUM,
 S_WIN_MIN, S_WIN_MAX, S_WIN_MEAN, S_P50, S_P95, S_P99, S_VIEW0, S_VIEW1,
 S_VIEW2) = range(18)
STAT_TTL = 255
QUANTILE_OF_STAT = {S_P50: 0.5, S_P95: 0.95, S_P99: 0.99}

# SKETCH_BUCKETS (85) counters; the first value of a window lands in
# sketch[SKETCH_FIRST] (17).
COUNTER_MAX = 65535
FOLD_NONE = 65535              # fold_age: no window folded yet
FOLD_CAP = 65534               # fold_age saturates here (docs, step 7)

# DOC GAP: an alert that leaves STALE (or leaves WARN/CRIT at a reload that
# removed the rule) for a series *without* a rule has no stat that decided.
# The reference reports stat 0 ("last") and the series' last value.
NO_RULE_STAT = S_LAST

#: (key, ts, metric, old, new, stat, rule, value): the alert record's fields.
Alert = tuple


# ------------------------------------------------------------------ sketch

def bucket_index(x: float) -> int:
    """Sketch bucket of ``x``: ``4 * biased_exponent + top_two_mantissa_bits``
    for a positive normal double; 0 for zero, negative and subnormal values."""
    x = float(x)
    if not x > 0.0:                       # zero, negative (and NaN)
        return 0
    bits = int(np.float64(x).view(np.uint64))
    e = (bits >> 52) & 0x7FF
    if e == 0:                            # subnormal
        return 0
    return 4 * e + ((bits >> 50) & 3)


def _ldexp(m: float, e: int) -> float:
    """``m * 2**e`` that overflows to inf instead of raising."""
    try:
        return math.ldexp(m, e)
    except OverflowError:
        return math.inf


def bucket_bounds(i: int) -> tuple[float, float]:
    """``[2**e (1 + j/4), 2**e (1 + (j+1)/4))`` of bucket ``i = 4E + J``,
    ``e = E - 1023`` (Python's floor ``//`` and ``%`` for the indices below 0
    that a sketch range may start at)."""
    e, j = i // 4 - 1023, i % 4
    return _ldexp(1.0 + j / 4.0, e), _ldexp(1.0 + (j + 1) / 4.0, e)


def bucket_estimate(i: int) -> float:
    """The doc's estimate ``2 * lo * hi / (lo + hi)`` of bucket ``i``.

    Evaluated on the mantissa parts ``l, h`` (``lo = l * 2**e``,
    ``hi = h * 2**e``) and scaled by ``2**e`` afterwards: scaling by a
    power of two is exact, so this is the doc's formula bit for bit
    wherever the literal one neither overflows nor underflows (|e| < ~510),
    and it keeps the doc's 1/9 relative-error promise over the whole double
    range, where ``2 * lo * hi`` itself would overflow (values above ~1e154)
    or underflow (below ~1e-154).

    Bucket 0 (zero, negative and subnormal values) and the indices below 4
    that a range may cover are estimated as 0 (docs: "0 for buckets below
    index 4")."""
    if i < 4:
        return 0.0
    e, j = i // 4 - 1023, i % 4
    lo, hi = 1.0 + j / 4.0, 1.0 + (j + 1) / 4.0
    return _ldexp(2.0 * lo * hi / (lo + hi), e)


def quantile_from_sketch(sketch: Iterable[int], sk_base: int, win_min: float,
                         win_max: float, q: float) -> float:
    """Quantile ``q`` of a window from its sketch: rank ``floor(q * (n - 1))``
    over the (possibly halved) counts, the first bucket whose cumulative
    count exceeds it, that bucket's estimate clamped to
    ``[win_min, win_max]``; NaN for an empty sketch."""
    counts = [int(c) for c in sketch]
    n = sum(counts)
    if n == 0:
        return math.nan
    r = math.floor(q * float(n - 1))
    cum, p = 0, 0
    while cum + counts[p] <= r:
        cum += counts[p]
        p += 1
    est = bucket_estimate(int(sk_base) + p)
    win_min, win_max = float(win_min), float(win_max)
    if est < win_min:
        est = win_min
    if est > win_max:
        est = win_max
    return est


def sketch_quantile(s, q: float) -> float:
    """Quantile ``q`` of the current window of ``s`` (a :class:`SeriesRef`
    or a state row with the same field names); NaN when the window is empty."""
    if isinstance(s, SeriesRef):
        fields = s.win_count, s.sketch, s.sk_base, s.win_min, s.win_max
    else:
        fields = s["win_count"], s["sketch"], s["sk_base"], s["win_min"], s["win_max"]
    if int(fields[0]) == 0:
        return math.nan
    return quantile_from_sketch(*fields[1:], q)


def _halve(counts: list[int]) -> None:
    for i, c in enumerate(counts):
        counts[i] = (c + 1) >> 1


class Sketch:
    """The current window's sketch: ``base`` (sk_base), ``shift`` (sk_shift)
    and SKETCH_BUCKETS u16 ``counts``; ``lo`` and ``hi`` (sk_lo, sk_hi) are
    the lowest and highest non-zero counters (0 and 0 when none is)."""

    __slots__ = ("base", "shift", "counts")

    def __init__(self) -> None:
        self.base = 0
        self.shift = 0
        self.counts = [0] * SKETCH_BUCKETS

    @property
    def lo(self) -> int:
        return next((p for p, c in enumerate(self.counts) if c), 0)

    @property
    def hi(self) -> int:
        return max((p for p, c in enumerate(self.counts) if c), default=0)

    def _count(self, pos: int) -> None:
        """Count one value in ``pos``.  "A counter that would pass 65535
        halves every counter (rounding up)": a counter at 65535 halves them
        all (it becomes 32768), then takes the value (32769).  DOC GAP: the
        order (halve, then add) is not spelled out."""
        if self.counts[pos] == COUNTER_MAX:
            _halve(self.counts)
            self.shift += 1
        self.counts[pos] += 1

    def _collapse_into_first(self, low: int) -> None:
        """``sketch[0]`` takes ``low`` collapsed counts (it is 0 before):
        while that would pass 65535, every counter and ``low`` are halved
        (rounding up), as often as needed."""
        while low > COUNTER_MAX:
            _halve(self.counts)
            low = (low + 1) >> 1
            self.shift += 1
        self.counts[0] = low

    def add(self, x: float, first: bool) -> None:
        """Count ``x``; ``first``: the window was empty (fresh placement)."""
        i = bucket_index(x)
        if first:
            self.base = i - SKETCH_FIRST
            self.shift = 0
            self.counts = [0] * SKETCH_BUCKETS
        pos = i - self.base
        if pos >= SKETCH_BUCKETS:
            # Above the range: move it up just far enough (the value lands in
            # the top bucket); the buckets falling off the bottom are added
            # into sketch[0] ("collapsing lowest").
            up = pos - (SKETCH_BUCKETS - 1)
            old = self.counts
            if up >= SKETCH_BUCKETS:
                low, kept = sum(old), []
            else:
                low, kept = sum(old[: up + 1]), old[up + 1:]
            self.counts = [0] + kept + [0] * (SKETCH_BUCKETS - 1 - len(kept))
            self.base += up
            self._collapse_into_first(low)
            pos = SKETCH_BUCKETS - 1
        elif pos < 0:
            # Below the range: move it down as far as the highest non-empty
            # bucket allows (it must stay in the range); what still falls
            # below goes into sketch[0].
            top = max(p for p, c in enumerate(self.counts) if c)   # non-empty: not first
            new_base = max(i, self.base + top - (SKETCH_BUCKETS - 1))
            down = self.base - new_base
            if down:
                self.counts = [0] * down + self.counts[: SKETCH_BUCKETS - down]
                self.base = new_base
            pos = max(i - self.base, 0)
        self._count(pos)


# ------------------------------------------------------------------ series

class SeriesRef:
    """Every field of one state row (docs/health.md, "The state row").

    Integers are Python ints, floats Python floats; the three views are kept
    as ``np.float32`` exactly as the row stores them (each fold starts from
    the stored float32).  Fields the doc leaves undefined are ``None``:
    ``status_since`` before the first status change, ``pending_since`` while
    nothing is pending; an empty window's min/max are +inf/-inf here and not
    part of the contract."""

    def __init__(self, key: int, metric: int) -> None:
        self.key, self.metric = key, metric
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.last = 0.0
        self.last_ts = None
        self.first_ts = None
        self.mean = 0.0
        self.m2 = 0.0
        self.ewma = 0.0
        self.stale = 0
        self.late = 0
        self.status_since = None
        self.pending_since = None
        self.win_start = None
        self.win_count, self.win_sum, self.win_min, self.win_max = 0, 0.0, math.inf, -math.inf
        self.prev_count, self.prev_sum, self.prev_min, self.prev_max = 0, 0.0, math.inf, -math.inf
        self.view32 = [np.float32(0.0)] * 3
        self.folded = False                # any window folded into the views yet
        self.prev_folded = False           # the previous window is final and folded
        self.fold_age = FOLD_NONE
        self.sk = Sketch()
        self.status = OK
        self.pending = 0
        self.rule = 0

    # read-side names matching the row
    @property
    def view(self) -> list[float]:
        """The views as the row holds them (float32 values as floats)."""
        return [float(v) for v in self.view32]

    @property
    def sk_base(self) -> int:
        return self.sk.base

    @property
    def sk_shift(self) -> int:
        return self.sk.shift

    @property
    def sketch(self) -> list[int]:
        return list(self.sk.counts)

    @property
    def sk_lo(self) -> int:
        return self.sk.lo

    @property
    def sk_hi(self) -> int:
        return self.sk.hi

    @property
    def var(self) -> float:
        return self.m2 / self.count if self.count else math.nan

    @property
    def win_mean(self) -> float:
        return self.win_sum / self.win_count if self.win_count else math.nan

    @property
    def prev_mean(self) -> float:
        return self.prev_sum / self.prev_count if self.prev_count else math.nan

    def quantile(self, q: float) -> float:
        return sketch_quantile(self, q)

    def __repr__(self) -> str:
        return (f"SeriesRef(key={self.key}, metric={self.metric}, count={self.count}, "
                f"last={self.last}, last_ts={self.last_ts}, status={self.status}, "
                f"pending={self.pending}, rule={self.rule})")


# ------------------------------------------------------------------- rules

def _rules_list(rules) -> list[dict]:
    if rules is None:
        return []
    out = []
    for r in np.asarray(rules).tolist() if isinstance(rules, np.ndarray) else rules:
        if isinstance(r, dict):
            out.append(dict(r))
            continue
        metric, stat, flags, _pad0, warn, crit, clear, for_ns, ttl_ns, _pad1 = r
        out.append(dict(metric=int(metric), stat=int(stat), flags=int(flags), warn=float(warn),
                        crit=float(crit), clear=float(clear), for_ns=int(for_ns),
                        ttl_ns=int(ttl_ns)))
    return out


def resolve_rule(rules: list[dict], metric: int) -> int:
    """``1 + index`` of the rule of ``metric``: the (first) non-wildcard rule
    naming it, else the (first) wildcard rule, else 0; always 0 for the
    producer markers' metric."""
    if metric == PRODUCER_METRIC:
        return 0
    for i, r in enumerate(rules):
        if not r["flags"] & RULE_WILDCARD and r["metric"] == metric:
            return i + 1
    for i, r in enumerate(rules):
        if r["flags"] & RULE_WILDCARD:
            return i + 1
    return 0


# ------------------------------------------------------------------ engine

class HealthRef:
    """A whole state table: events in arrival order, TTL sweeps, reloads.

    Parameters mirror ``engine._table.Settings``: ``window_ns`` (W),
    ``lateness_ns`` (L, 0 <= L <= W), ``half_life_ns``, ``views`` (three
    horizons in windows), ``ttl_ns`` (default TTL, 0: never), ``rules`` (a
    RULE_DTYPE array or None), ``ts_min``/``ts_max`` (valid event times,
    inclusive) and ``limit`` (series the table admits; None: no limit).
    """

    def __init__(self, window_ns: int, lateness_ns: int = 0, half_life_ns: int = 10**10,
                 views=(1, 5, 15), ttl_ns: int = 0, rules=None,
                 ts_min: int = -(2**63), ts_max: int = 2**63 - 1, limit: int | None = None):
        assert window_ns > 0 and 0 <= lateness_ns <= window_ns and half_life_ns > 0
        self.W = int(window_ns)
        self.L = int(lateness_ns)
        self.half_life = int(half_life_ns)
        self.views = tuple(int(n) for n in views)
        self.decay = [math.exp(-1.0 / n) for n in self.views]
        self.ttl_ns = int(ttl_ns)
        self.rules = _rules_list(rules)
        self.ts_min, self.ts_max = int(ts_min), int(ts_max)
        self.limit = limit
        self.series: dict[tuple[int, int], SeriesRef] = {}
        self.counters = dict(applied=0, invalid=0, full=0, stale=0, late=0)

    # ---------------------------------------------------------- events

    def apply(self, events) -> list[Alert]:
        """Apply ``events`` (EVENT_DTYPE array, or (key, ts, metric, flags,
        value) tuples) in order; returns the alerts they raise, in order.
        The per-call counts are in :attr:`last_counts`."""
        before = dict(self.counters)
        alerts: list[Alert] = []
        rows = events.tolist() if isinstance(events, np.ndarray) else events
        for key, ts, metric, flags, x in rows:
            if int(metric) == PRODUCER_METRIC:
                # A producer marker raises a mark beside the rows (and is
                # counted nowhere); anything else with the metric is invalid.
                if not (int(flags) == EVENT_MARKER and math.isfinite(float(x))
                        and self.ts_min <= int(ts) <= self.ts_max and int(key)):
                    self.counters["invalid"] += 1
                continue
            self._event(int(key), int(ts), int(metric), float(x), alerts)
        self.last_counts = {k: self.counters[k] - before[k] for k in self.counters}
        return alerts

    def _event(self, key: int, ts: int, metric: int, x: float, alerts: list) -> None:
        if not (math.isfinite(x) and self.ts_min <= ts <= self.ts_max):
            self.counters["invalid"] += 1
            return
        s = self.series.get((key, metric))
        new = s is None
        if new:
            if self.limit is not None and len(self.series) >= self.limit:
                self.counters["full"] += 1
                return
            s = self.series[(key, metric)] = SeriesRef(key, metric)
            s.rule = resolve_rule(self.rules, metric)
        self.counters["applied"] += 1

        # 1. lifetime aggregates (every valid event)
        s.count += 1
        s.sum += x
        if new or x < s.min:
            s.min = x
        if new or x > s.max:
            s.max = x
        inv = 1.0 / float(s.count)
        delta = x - s.mean
        s.mean += x * inv - s.mean * inv
        s.m2 += delta * (x - s.mean)
        if new or ts < s.first_ts:
            s.first_ts = ts

        # 2./3. in order (last, last_ts, EWMA) or stale
        wm = s.last_ts
        in_order = new or ts >= wm
        if in_order:
            if new:
                s.ewma = x
            else:
                a = 2.0 ** (float(-(ts - wm)) / float(self.half_life))
                s.ewma = a * s.ewma + (1.0 - a) * x
            s.last = x
            s.last_ts = ts
        else:
            s.stale += 1
            self.counters["stale"] += 1

        # 4. windows
        W = self.W
        start = (ts // W) * W
        if new:
            s.win_start = start
            self._into_current(s, x)
        elif start > s.win_start:
            self._roll(s, start)
            self._into_current(s, x)
        elif start == s.win_start:
            self._into_current(s, x)
        elif start == s.win_start - W and s.win_start + self.L > wm and not s.prev_folded:
            # (``not prev_folded`` only matters after a reload raised the
            # lateness: a window once final stays final, docs step 5.)
            s.prev_count += 1
            s.prev_sum += x
            if x < s.prev_min or s.prev_count == 1:
                s.prev_min = x
            if x > s.prev_max or s.prev_count == 1:
                s.prev_max = x
        else:
            s.late += 1
            self.counters["late"] += 1

        # rules: after the event is fully applied (so window stats include it)
        if in_order:
            self._close_prev(s)
            self._evaluate(s, ts, alerts)

    def _into_current(self, s: SeriesRef, x: float) -> None:
        first = s.win_count == 0
        s.win_count += 1
        s.win_sum += x
        if first or x < s.win_min:
            s.win_min = x
        if first or x > s.win_max:
            s.win_max = x
        s.sk.add(x, first)

    def _fold(self, s: SeriesRef, count: int, total: float, before: int) -> None:
        """Fold a finished window (``count`` events summing to ``total``,
        ``before`` windows before the current one) into the three float32
        views; an empty window is not folded.

        ``fold_age`` (windows from the last folded window to the current
        one, 65535: none yet, saturating at 65534) is the only memory of the
        last fold, as in the row: the window is ``g = fold_age - before``
        windows after it."""
        if count == 0:
            return
        m = total / count
        for j in range(3):
            if s.fold_age == FOLD_NONE:
                v = m
            else:
                dg = self.decay[j] ** (s.fold_age - before)
                v = dg * float(s.view32[j]) + (1.0 - dg) * m
            with np.errstate(over="ignore"):
                s.view32[j] = np.float32(v)
        s.fold_age = before
        s.folded = True

    def _close_prev(self, s: SeriesRef) -> None:
        """Fold the previous window as soon as it is final: when the
        watermark reaches its end plus the lateness (docs, step 5)."""
        if not s.prev_folded and s.last_ts >= s.win_start + self.L:
            self._fold(s, s.prev_count, s.prev_sum, 1)
            s.prev_folded = True

    def _roll(self, s: SeriesRef, new_start: int) -> None:
        k = (new_start - s.win_start) // self.W
        # Oldest first: the previous window (final now, if not folded yet),
        # then for k >= 2 the current one (no window follows it any more).
        if not s.prev_folded:
            self._fold(s, s.prev_count, s.prev_sum, 1)
        if k == 1:
            s.prev_count, s.prev_sum = s.win_count, s.win_sum
            s.prev_min, s.prev_max = s.win_min, s.win_max
            s.prev_folded = False
        else:
            self._fold(s, s.win_count, s.win_sum, 0)
            s.prev_count, s.prev_sum, s.prev_min, s.prev_max = 0, 0.0, math.inf, -math.inf
            s.prev_folded = False         # empty, but open to late events until final
        if s.fold_age != FOLD_NONE:
            s.fold_age = min(FOLD_CAP, s.fold_age + k)
        s.win_start = new_start
        s.win_count, s.win_sum, s.win_min, s.win_max = 0, 0.0, math.inf, -math.inf
        s.sk = Sketch()

    # ----------------------------------------------------------- stats

    def stat_value(self, s: SeriesRef, code: int) -> float:
        """The value of stat ``code`` for ``s``; NaN when it has none yet."""
        if code == S_LAST:
            return s.last
        if code == S_EWMA:
            return s.ewma
        if code == S_MEAN:
            return s.mean
        if code == S_MIN:
            return s.min
        if code == S_MAX:
            return s.max
        if code == S_VAR:
            return s.var
        if code == S_COUNT:
            return float(s.count)
        if code == S_WIN_COUNT:
            return float(s.win_count)
        if s.win_count == 0 and code in (S_WIN_SUM, S_WIN_MIN, S_WIN_MAX):
            return math.nan
        if code == S_WIN_SUM:
            return s.win_sum
        if code == S_WIN_MIN:
            return s.win_min
        if code == S_WIN_MAX:
            return s.win_max
        if code == S_WIN_MEAN:
            return s.win_mean
        if code in QUANTILE_OF_STAT:
            return s.quantile(QUANTILE_OF_STAT[code])
        if S_VIEW0 <= code <= S_VIEW2:
            return float(s.view32[code - S_VIEW0]) if s.folded else math.nan
        raise ValueError(f"unknown stat code {code}")

    # ----------------------------------------------------------- rules

    def _commit(self, s: SeriesRef, new: int, ts: int, stat: int, value: float,
                alerts: list) -> None:
        if new != s.status:
            alerts.append((s.key, ts, s.metric, s.status, new, stat, s.rule, value))
            s.status = new
            s.status_since = ts
        s.pending = 0
        s.pending_since = None

    def _evaluate(self, s: SeriesRef, ts: int, alerts: list) -> None:
        """The doc's evaluation of ``s`` at event time ``ts``."""
        if s.rule == 0:
            # No rule: only STALE -> OK (docs: "and back to OK").
            if s.status != OK:
                self._commit(s, OK, ts, NO_RULE_STAT, s.last, alerts)
            return
        r = self.rules[s.rule - 1]
        v = self.stat_value(s, r["stat"])
        if not math.isfinite(v):
            # No value yet (NaN: an empty window, views before the first
            # fold): the status is left alone, and so is pending.  DOC GAP:
            # an overflowed stat (+-inf: a variance, a window sum or mean of
            # readings near DBL_MAX) is not judged either.
            return
        w = -v if r["flags"] & RULE_FALLING else v
        raw = CRIT if w >= r["crit"] else WARN if w >= r["warn"] else OK
        target = raw
        if raw == OK and s.status in (WARN, CRIT) and w >= r["clear"]:
            target = WARN if r["flags"] & RULE_HAS_WARN else CRIT
        if s.status == STALE:
            self._commit(s, raw, ts, r["stat"], v, alerts)
        elif target > s.status:
            if s.pending == 0:
                s.pending, s.pending_since = target, ts
            elif target < s.pending:
                s.pending = target
            if ts - s.pending_since >= r["for_ns"]:
                self._commit(s, s.pending, ts, r["stat"], v, alerts)
        elif target == s.status:
            s.pending = 0
            s.pending_since = None
        else:
            self._commit(s, target, ts, r["stat"], v, alerts)

    def ttl_of(self, s: SeriesRef) -> int:
        """The series' TTL: its rule's (the compiled ``ttl_ns`` already holds
        the default when the rule has none) or the default; 0: never."""
        if s.metric == PRODUCER_METRIC:
            return 0
        return self.rules[s.rule - 1]["ttl_ns"] if s.rule else self.ttl_ns

    def sweep(self, now_ns: int) -> list[Alert]:
        """TTL check at wall-clock time ``now_ns``, series in table order."""
        alerts: list[Alert] = []
        for s in self.series.values():
            ttl = self.ttl_of(s)
            if ttl > 0 and s.status != STALE and now_ns - s.last_ts > ttl:
                self._commit(s, STALE, s.last_ts + ttl, STAT_TTL, ttl / 1e9, alerts)
        return alerts

    def reload(self, rules, ttl_ns: int, lateness_ns: int) -> list[Alert]:
        """New rules and defaults: every series' rule is re-resolved, its
        pending level cleared, and it is re-evaluated at its watermark.

        A lateness lowered to ``last_ts - win_start`` or below makes the
        previous window final at once: it is folded here.  A raised lateness
        keeps a previous window open longer if it is not final yet, but a
        final (folded) window stays final (docs, step 5).

        DOC GAP: a STALE series stays STALE (no event arrived; the doc's
        STALE branch of the evaluation is "back from silence").  A series
        left without a rule that was WARN or CRIT returns to OK."""
        self.rules = _rules_list(rules)
        self.ttl_ns = int(ttl_ns)
        assert 0 <= lateness_ns <= self.W
        self.L = int(lateness_ns)
        alerts: list[Alert] = []
        for s in self.series.values():
            # A lower lateness may make the previous window final now.
            self._close_prev(s)
            s.rule = resolve_rule(self.rules, s.metric)
            s.pending = 0
            s.pending_since = None
            if s.status != STALE:
                self._evaluate(s, s.last_ts, alerts)
        return alerts

    # --------------------------------------------------------- helpers

    def row(self, key: int, metric: int) -> SeriesRef:
        return self.series[(key, metric)]


def rule_record(metric: int = 0, stat: int = S_LAST, *, warn: float | None = None,
                crit: float | None = None, clear: float | None = None, for_ns: int = 0,
                ttl_ns: int = 0, falling: bool = False, wildcard: bool = False) -> dict:
    """One compiled rule as a dict with RULE_DTYPE's fields, from thresholds
    in the user's direction (compiled as ``engine.health.rules`` documents it:
    falling thresholds negated, a missing warn holds crit, a missing crit
    +inf, clear defaults to warn, else crit)."""
    assert warn is not None or crit is not None
    sign = -1.0 if falling else 1.0
    flags = ((RULE_WILDCARD if wildcard else 0) | (RULE_HAS_WARN if warn is not None else 0)
             | (RULE_HAS_CRIT if crit is not None else 0) | (RULE_FALLING if falling else 0))
    if clear is None:
        clear = warn if warn is not None else crit
    level = warn if warn is not None else crit
    return dict(metric=0 if wildcard else metric, stat=stat, flags=flags, warn=sign * level,
                crit=sign * crit if crit is not None else math.inf, clear=sign * clear,
                for_ns=for_ns, ttl_ns=ttl_ns)


def f32(x: float) -> float:
    """``x`` rounded to float32 (as the row stores views)."""
    with np.errstate(over="ignore"):
        return float(np.float32(x))
