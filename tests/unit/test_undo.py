"""Exactly-once in the kernels (docs/faults.md): a span applied again with
the same ordinals changes nothing already applied; the undo slot puts back
any row left mid-write, byte for byte; row versions only move forward.

The oracle is the same kernel applying the same events once, on a fresh
table: a fault (a kill after any prefix of a span, or inside the write of
any event) followed by repair and replay must end in the same bytes, but
for the version words.  Random and adversarial streams exercise the rare
paths that write a row's last lines (first, late and stale events, window
rolls, status changes) or more than one sketch counter (a new window, the sketch's
range moving up or down), which must save them first."""

from __future__ import annotations

import numpy as np
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from engine import ALERT_DTYPE, EVENT_DTYPE, STATE_DTYPE, _table, _worker
from engine.core.layout import (
    PRODUCER_MARK_BYTES,
    PRODUCER_MARK_SLOTS,
    VERSION_APPLIED,
    VERSION_REPAIRED,
    VERSION_STEP,
    VERSION_WRITING,
    field_offset,
)
from engine.core.records import metric_id
from engine.health.rules import Rules

SEC = 10**9
T0 = 1_700_000_000 * SEC
SLOTS, LIMIT = 256, 64
ROW = STATE_DTYPE.itemsize
HOT = 128  # lines 0-1 of a row: saved before every write
IDS = field_offset("StateRow", "key")        # line 4's tail, saved before a rare write
COLD = field_offset("StateRow", "prev_sum")  # line 5, likewise
SKETCH = field_offset("StateRow", "sketch")
NO_COUNTER = 0xFFFF
FAST = settings(max_examples=150, deadline=None,
                phases=[p for p in Phase if p is not Phase.explain])

RULES = Rules.load({
    "defaults": {"ttl": "30s"},
    "rule": [
        {"metric": "m0", "stat": "last", "warn": 0.5, "crit": 0.9, "for": "2s"},
        {"metric": "*", "stat": "win_max", "warn": 10.0, "crit": 100.0, "clear": 5.0},
    ],
})
M0 = metric_id("m0")


def settings_() -> _table.Settings:
    return _table.Settings(ts_min=0, ts_max=2**62, window_ns=10 * SEC, lateness_ns=4 * SEC,
                           half_life_ns=5 * SEC, ttl_ns=30 * SEC, rules=RULES.compile())


def fresh() -> tuple[_table.Table, bytearray]:
    buf = bytearray(_table.table_bytes(SLOTS, LIMIT))
    _table.init_table(buf, SLOTS, LIMIT)
    return _table.Table(buf), buf


def rows_of(buf: bytearray) -> np.ndarray:
    """The table's rows (a view: header | index | rows | producer marks)."""
    start = len(buf) - LIMIT * ROW - PRODUCER_MARK_SLOTS * PRODUCER_MARK_BYTES
    return np.frombuffer(buf, STATE_DTYPE, LIMIT, start)


def without_versions(buf: bytearray) -> np.ndarray:
    rows = rows_of(buf).copy()
    rows["version"] = 0
    return rows


def header_used(buf: bytearray) -> int:
    return int(np.frombuffer(buf, "<u8", 1, field_offset("TableHeader", "used"))[0])


# Events of few series (so rows are written again and again), event times
# that go forward, backward (stale), across windows (rolls) and far back
# (late), and values that cross the rules' thresholds both ways.
event_lists = st.lists(
    st.tuples(st.integers(0, 5), st.sampled_from([M0, 7, 9]),
              st.integers(-20, 60), st.sampled_from([0.0, 0.2, 0.6, 0.95, 7.0, 50.0, 500.0,
                                                     -1.0, float("nan"), 1e-30, 1e30])),
    min_size=1, max_size=80)


def to_events(items) -> np.ndarray:
    ev = np.zeros(len(items), EVENT_DTYPE)
    for i, (k, m, t, x) in enumerate(items):
        ev[i] = (k + 1, T0 + t * SEC, m, 0, x)
    return ev


@FAST
@given(event_lists, st.data())
def test_a_span_replayed_after_any_prefix_is_applied_once(items, data):
    """Kill after the first k events of a span, then replay the whole span
    with the same ordinals: the same rows and alerts as applying it once."""
    ev = to_events(items)
    k = data.draw(st.integers(0, len(ev)))
    once, once_buf = fresh()
    alerts_once = np.zeros(4096, ALERT_DTYPE)
    got_once = once.apply(ev, settings_(), alerts_once, base=1)

    table, buf = fresh()
    alerts = np.zeros(4096, ALERT_DTYPE)
    s = settings_()
    first = table.apply(ev[:k], s, alerts, base=1)
    rest = np.zeros(4096, ALERT_DTYPE)
    again = table.apply(ev, s, rest, base=1)

    assert (without_versions(buf) == without_versions(once_buf)).all()
    assert header_used(buf) == header_used(once_buf)
    # Every event counted once as applied (the replay counts skipped ones),
    # and the status changes split between the two passes, none twice.
    assert again[0] == got_once[0]
    n_first, n_again = first[5], again[5]
    assert n_first + n_again == got_once[5]
    both = np.concatenate([alerts[:n_first], rest[:n_again]])
    assert (both == alerts_once[:got_once[5]]).all()


@FAST
@given(event_lists, st.data())
def test_the_undo_slot_restores_any_row_byte_for_byte(items, data):
    """After each event the undo slot holds what the written row was
    before: lines 0-1 always, line 5 and line 4's tail whenever the event
    changed them,
    the sketch's used counters (every other one is zero) whenever the event
    changed more than one, else the one counter it changed; put back as
    table_repair does, they give the row before, byte for byte."""
    ev = to_events(items)
    table, buf = fresh()
    s = settings_()
    sink = np.zeros(4096, ALERT_DTYPE)
    for i in range(len(ev)):
        before = rows_of(buf).copy()
        used_before = header_used(buf)
        table.apply(ev[i:i + 1], s, sink, base=i + 1)
        row, cold, image, sketch, sk_pos, sk_old, ids = s.undo_slot()
        after = rows_of(buf)
        if not np.isfinite(ev["value"][i]):
            continue
        if row >= LIMIT or row >= used_before:
            # A new series: its row was added under its own versions and
            # invisible until whole; nothing to undo.
            continue
        old = before[row].tobytes()
        put_back = bytearray(after[row].tobytes())
        put_back[8:HOT] = image[8:HOT]
        if cold:
            put_back[COLD:] = image[COLD:]
        if ids:
            put_back[IDS:COLD] = image[IDS:COLD]
        restored = np.frombuffer(bytes(put_back), STATE_DTYPE)[0]
        counters = put_back[SKETCH:IDS]
        if sketch:
            lo, hi = int(restored["sk_lo"]), int(restored["sk_hi"])
            counters[:] = bytes(len(counters))
            counters[2 * lo:2 * hi + 2] = image[SKETCH + 2 * lo:SKETCH + 2 * hi + 2]
        elif sk_pos != NO_COUNTER:
            counters[2 * sk_pos:2 * sk_pos + 2] = int(sk_old).to_bytes(2, "little")
        put_back[SKETCH:IDS] = counters
        assert bytes(put_back[8:]) == old[8:], (i, "written without being saved")


@FAST
@given(event_lists, st.data())
def test_a_row_torn_by_a_kill_is_repaired_and_replayed(items, data):
    """A kill inside event j's write leaves its row with any mix of old and
    new bytes and an odd version: repair puts it back, the replay applies
    it, and the table ends as if nothing had happened."""
    ev = to_events(items)
    j = data.draw(st.integers(0, len(ev) - 1))
    once, once_buf = fresh()
    once.apply(ev, settings_(), np.zeros(4096, ALERT_DTYPE), base=1)

    table, buf = fresh()
    s = settings_()
    table.apply(ev[:j], s, np.zeros(4096, ALERT_DTYPE), base=1)
    before = rows_of(buf).copy()
    used_before = header_used(buf)
    table.apply(ev[j:j + 1], s, np.zeros(4096, ALERT_DTYPE), base=1 + j)
    row = s.undo_slot()[0]
    written = np.isfinite(ev["value"][j]) and row < used_before
    if written:
        # Tear it: each byte old or new at random, version odd (writing).
        rows = rows_of(buf)
        old, new = before[row].tobytes(), rows[row].tobytes()
        mask = data.draw(st.lists(st.booleans(), min_size=ROW, max_size=ROW))
        torn = bytes(o if m else n for o, n, m in zip(old, new, mask))
        rows[row] = np.frombuffer(torn, STATE_DTYPE)[0]
        rows[row]["version"] = (1 + j) * VERSION_STEP + VERSION_WRITING
    found, head = table.repair(s)
    if written:
        assert found & _worker.ROW_PUT_BACK
        repaired = rows_of(buf)[row]
        assert int(repaired["version"]) == (1 + j) * VERSION_STEP + VERSION_REPAIRED
        assert repaired.tobytes()[8:] == before[row].tobytes()[8:]
        assert head >= 0
    else:
        assert not found & _worker.ROW_PUT_BACK
    table.apply(ev, s, np.zeros(4096, ALERT_DTYPE), base=1)
    assert (without_versions(buf) == without_versions(once_buf)).all()


def test_versions_only_move_forward_and_name_the_last_event():
    """Each write leaves a version above the row's last, ending in the
    applied phase of its event's ordinal."""
    table, buf = fresh()
    s = settings_()
    ev = to_events([(0, 7, t, 1.0) for t in range(10)])
    last = 0
    for i in range(len(ev)):
        table.apply(ev[i:i + 1], s, np.zeros(16, ALERT_DTYPE))
        v = int(rows_of(buf)[0]["version"])
        assert v > last and v % VERSION_STEP == VERSION_APPLIED
        last = v
    # A sweep and a reload stamp rows with fresh ordinals, above all others.
    table.sweep(T0 + 10**6 * SEC, s, np.zeros(16, ALERT_DTYPE))
    assert int(rows_of(buf)[0]["version"]) > last


def test_a_half_added_row_is_finished_or_dropped():
    """Killed between publishing a new series' index entry and counting its
    row: repair counts it.  Killed inside its initialisation: repair makes
    the invisible row's version even, and the replay makes the row again."""
    table, buf = fresh()
    s = settings_()
    ev = to_events([(0, 7, 0, 1.0), (1, 7, 0, 2.0)])
    table.apply(ev, s, np.zeros(16, ALERT_DTYPE), base=1)
    used_at = field_offset("TableHeader", "used")
    # Un-count the second row: as if killed just before `used` was stored.
    np.frombuffer(buf, "<u8", 1, used_at)[0] = 1
    found, _ = table.repair(s)
    assert found & _worker.INSERT_FINISHED and header_used(buf) == 2

    table2, buf2 = fresh()
    table2.apply(ev[:1], s, np.zeros(16, ALERT_DTYPE), base=1)
    rows = rows_of(buf2)
    rows[1]["version"] = 2 * VERSION_STEP + 1      # inside row_init of ordinal 2
    rows[1]["count"] = 12345                       # half-written garbage
    found, _ = table2.repair(s)
    assert found == 0 and int(rows[1]["version"]) % 2 == 0
    table2.apply(ev, s, np.zeros(16, ALERT_DTYPE), base=1)
    assert header_used(buf2) == 2 and int(rows_of(buf2)[1]["count"]) == 1
