"""The ``status``, ``top`` and ``entity`` queries (engine.query.reader and
engine.query.ops) against a plain Python reference over random fleets.

The reference is the code these queries had before they were made to
scale: every row a dict, grouped, sorted, then cut.  The fleets are state
tables filled with random rows (``Table.load_rows``), shared out by shard
as a running engine shares them, with few distinct ``since`` values and
names so that ties are common."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import _table
from engine.core.records import STATE_DTYPE
from engine.query import ops
from engine.query.readable import STATUS_CODES, STATUS_NAMES, entity_dict, series_dict
from engine.query.reader import Reader

WINDOW = 10**9
VIEWS = (1, 5, 15)


# ----------------------------------------------------------------- fleets

def make_reader(rows: np.ndarray, workers: int, names: dict | None = None) -> Reader:
    """A reader over ``workers`` tables holding ``rows``, each row in the
    table of its key's shard (as the engine routes it)."""
    shard = _table.mix64(np.ascontiguousarray(rows["key"])) % np.uint64(workers)
    bufs = []
    for w in range(workers):
        part = np.ascontiguousarray(rows[shard == w])
        slots, limit = 256, 128
        while limit < 2 * len(part):
            slots, limit = slots * 2, limit * 2
        buf = bytearray(_table.table_bytes(slots, limit))
        _table.init_table(buf, slots, limit)
        assert _table.Table(buf).load_rows(part) == 0
        bufs.append(buf)
    names = names if names is not None else {"entities": {}, "metrics": {}}
    return Reader(bufs, names, window_ns=WINDOW, views=VIEWS)


@st.composite
def fleets(draw, max_rows: int = 60):
    """(rows, workers, names): distinct (key, metric) series with random
    statuses, sinces from a small set (0 among them), counts and sketches."""
    n = draw(st.integers(0, max_rows))
    n_keys = draw(st.integers(1, 12))
    keys = draw(st.lists(st.integers(1, 2**64 - 1), min_size=n_keys, max_size=n_keys,
                         unique=True))
    series = draw(st.lists(st.tuples(st.sampled_from(keys), st.integers(0, 5)),
                           min_size=n, max_size=n, unique=True))
    rows = np.zeros(len(series), STATE_DTYPE)
    sinces = [0, 5, 7, 1_700_000_000 * 10**9]
    for i, (key, metric) in enumerate(series):
        r = rows[i:i + 1]
        r["key"], r["metric"] = key, metric
        r["status"] = draw(st.integers(0, 3))
        r["status_since"] = draw(st.sampled_from(sinces))
        count = draw(st.integers(0, 50))
        r["count"] = count
        if count:
            r["last"] = draw(st.floats(-1e6, 1e6) | st.just(float("nan")))
            r["sum"] = r["mean"] = r["min"] = r["max"] = r["ewma"] = r["last"]
            r["last_ts"] = draw(st.integers(0, 2**40))
            r["first_ts"] = r["last_ts"] - draw(st.integers(0, 2**20))
            r["stale"] = draw(st.integers(0, 3))
            wc = draw(st.integers(0, count))
            r["win_count"] = wc
            if wc:
                r["win_min"], r["win_max"] = 0.5, 1000.0
                r["win_sum"] = 2.0 * wc
                r["sk_base"] = 4092
                # One used counter, inside the used range the kernel keeps
                # (sk_lo..sk_hi: the C decoder scans only that range).
                at = draw(st.integers(0, r["sketch"].shape[1] - 1))
                r["sketch"][0, at] = wc
                r["sk_lo"] = r["sk_hi"] = at
    workers = draw(st.integers(1, 3))
    named = draw(st.lists(st.sampled_from(keys), unique=True))
    # Few distinct names: ties by name then by table order.
    ent_names = {k: draw(st.sampled_from(["a", "b", "web-01"])) for k in named}
    return rows, workers, {"entities": ent_names, "metrics": {0: "cpu"}}


# ----------------------------------------------------------------- reference

def ref_snapshot(reader: Reader) -> np.ndarray:
    parts = []
    for t in reader.tables:
        out = np.empty(t.used, STATE_DTYPE)
        assert t.snapshot_into(out) == t.used
        parts.append(out)
    return np.concatenate(parts)


def ref_dict(reader: Reader, values) -> dict:
    # The Python sketch decoder, not the C one the reader uses.
    return series_dict(values, reader.names, window_ns=reader.window_ns, views=reader.views)


def ref_status(reader: Reader, min_status: str) -> list[dict]:
    level = STATUS_CODES[min_status]
    by_key: dict[int, list] = {}
    for values in ref_snapshot(reader).tolist():
        d = ref_dict(reader, values)
        if STATUS_CODES[d["status"]] >= level:
            by_key.setdefault(d["entity_id"], []).append(d)
    entities = [entity_dict(k, rows, reader.names) for k, rows in by_key.items()]
    entities.sort(key=lambda e: (-STATUS_CODES[e["status"]], e["since"] or 0,
                                 e["entity"] or ""))
    return entities


def ref_top(reader: Reader, field: str, k: int, order: str) -> list[dict]:
    snap = ref_snapshot(reader)
    values = snap[field].astype(np.float64)
    values = np.where(np.isnan(values), -np.inf if order == "desc" else np.inf, values)
    idx = np.argsort(-values if order == "desc" else values, kind="stable")[:k]
    return [ref_dict(reader, v) for v in snap[idx].tolist()]


def ref_entity(reader: Reader, key: int) -> dict:
    at = STATE_DTYPE.names.index("key")
    rows = [ref_dict(reader, v) for v in ref_snapshot(reader).tolist() if v[at] == key]
    return entity_dict(key, rows, reader.names)


def same(a, b) -> bool:
    """Equal as JSON (NaN-free: the dicts hold None for non-finite)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# ----------------------------------------------------------------- properties

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet=fleets(), min_status=st.sampled_from(STATUS_NAMES),
       limit=st.none() | st.integers(0, 70))
def test_status_matches_the_reference(fleet, min_status, limit):
    rows, workers, names = fleet
    reader = make_reader(rows, workers, names)
    want = ref_status(reader, min_status)
    page = reader.status_page(min_status, limit)
    assert page["total"] == len(want)
    cut = want if limit is None else want[:limit]
    assert same(page["entities"], cut)
    counts = np.bincount(rows["status"], minlength=len(STATUS_NAMES))
    assert page["counts"] == {name: int(counts[c]) for c, name in enumerate(STATUS_NAMES)}
    assert sum(page["counts"].values()) == len(rows)
    assert reader.unavailable == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet=fleets(), field=st.sampled_from(ops.TOP_FIELDS), k=st.integers(1, 70),
       order=st.sampled_from(["asc", "desc"]))
def test_top_matches_the_reference(fleet, field, k, order):
    rows, workers, names = fleet
    reader = make_reader(rows, workers, names)
    assert same(reader.top(field, k, order), ref_top(reader, field, k, order))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet=fleets(), data=st.data())
def test_entity_matches_the_reference(fleet, data):
    rows, workers, names = fleet
    reader = make_reader(rows, workers, names)
    known = sorted(set(rows["key"].tolist()))
    key = data.draw(st.sampled_from(known) if known else st.just(12345))
    assert same(reader.entity(key), ref_entity(reader, key))


def test_empty_fleet():
    reader = make_reader(np.zeros(0, STATE_DTYPE), 2)
    page = reader.status_page("OK", 10)
    assert page == {"total": 0, "entities": [], "counts": dict.fromkeys(STATUS_NAMES, 0)}
    assert reader.top("last", 5) == []
    assert reader.entity(7) == {"entity": None, "entity_id": 7, "status": "OK",
                                "since": None, "series": []}


def test_unknown_entity_is_ok_and_empty_among_others():
    rows = np.zeros(3, STATE_DTYPE)
    rows["key"], rows["metric"], rows["status"] = [1, 2, 3], [0, 0, 0], [3, 2, 1]
    reader = make_reader(rows, 2)
    got = reader.entity(99)
    assert got["series"] == [] and got["status"] == "OK"


def test_ties_break_by_since_then_name_then_table_order():
    """Four entities CRIT since the same instant: named ones by name after
    the unnamed (``""``), unnamed ones in the order the tables hold them."""
    rows = np.zeros(5, STATE_DTYPE)
    rows["key"] = [10, 11, 12, 13, 14]
    rows["status"] = [3, 3, 3, 3, 3]
    rows["status_since"] = [5, 5, 5, 5, 4]
    names = {"entities": {10: "b", 11: "a"}, "metrics": {}}
    reader = make_reader(rows, 1, names)
    got = [e["entity_id"] for e in reader.status_page("WARN", 10)["entities"]]
    assert got == [14, 12, 13, 11, 10]
    assert [e["entity_id"] for e in reader.status_page("WARN", 2)["entities"]] == [14, 12]


def test_many_ties_use_the_name_ranks(monkeypatch):
    """More tied candidates than the Python sort takes: the cached name
    ranks give the same order."""
    import engine.query.reader as reader_mod

    rng = np.random.default_rng(5)
    n = 300
    rows = np.zeros(n, STATE_DTYPE)
    rows["key"] = rng.permutation(n).astype(np.uint64) * np.uint64(2**40 + 7) + np.uint64(1)
    rows["status"] = 2
    rows["status_since"] = 1_000
    keys = rows["key"].tolist()
    names = {"entities": {k: f"host-{rng.integers(50):02d}" for k in keys[::2]},
             "metrics": {}}
    reader = make_reader(rows, 2, names)
    want = [e["entity_id"] for e in ref_status(reader, "WARN")][:40]
    monkeypatch.setattr(reader_mod, "_PY_NAME_SORT", 8)
    got = [e["entity_id"] for e in reader.status_page("WARN", 40)["entities"]]
    assert got == want
    # A name learnt later moves its entity.
    names["entities"][keys[1]] = "aaa"
    want = [e["entity_id"] for e in ref_status(reader, "WARN")][:40]
    assert [e["entity_id"] for e in reader.status_page("WARN", 40)["entities"]] == want


def test_since_outside_the_packed_range_keeps_the_order():
    rows = np.zeros(4, STATE_DTYPE)
    rows["key"] = [1, 2, 3, 4]
    rows["status"] = [2, 2, 2, 1]
    rows["status_since"] = [-5, 2**63 - 1, 0, -10]
    reader = make_reader(rows, 1)
    want = [e["entity_id"] for e in ref_status(reader, "WARN")]
    assert [e["entity_id"] for e in reader.status_page("WARN", 4)["entities"]] == want


def test_status_op_reply_keeps_its_fields_and_adds_counts():
    rows = np.zeros(4, STATE_DTYPE)
    rows["key"], rows["metric"], rows["status"] = [1, 1, 2, 3], [0, 1, 0, 0], [3, 0, 1, 0]
    reader = make_reader(rows, 2)
    reply = json.loads(ops.answer(b'{"op": "status", "limit": 1}', reader))
    assert reply["ok"] and reply["total"] == 2 and len(reply["entities"]) == 1
    assert reply["entities"][0]["entity_id"] == 1
    assert reply["series"] == 4 and reply["recovered"] is None
    assert reply["counts"] == {"OK": 2, "WARN": 1, "STALE": 0, "CRIT": 1}
    counts_only = json.loads(ops.answer(b'{"op": "status", "limit": 0}', reader))
    assert counts_only["entities"] == [] and counts_only["total"] == 2
    bad = json.loads(ops.answer(b'{"op": "status", "limit": -1}', reader))
    assert not bad["ok"]
