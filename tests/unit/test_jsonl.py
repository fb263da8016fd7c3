"""The JSON-lines decoder (engine.net.protocol.JsonLinesDecoder, the C
walk in engine._jsonl): against the line-by-line reference path and the
binary path, bad input, names, and the line scan against a plain Python
reference."""

from __future__ import annotations

import json
import math
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine
from engine import _jsonl
from engine.core.records import EVENT_DTYPE, entity_id, metric_id
from engine.net import protocol as P

NOW = 1_700_000_000_000_000_000
T0 = 1_732_300_000_000_000_000


def body_of(records) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def decode(body, names=None, **kw):
    return P.JsonLinesDecoder(names, **kw).decode(body, now=NOW).copy()


def reference(body):
    return P._reference_lines(body, NOW)[0]


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal records, NaN values (invalid records) included."""
    return a.dtype == b.dtype and a.tobytes() == b.tobytes()


def outcome(fn, body):
    try:
        return "ok", fn(body)
    except P.ProtocolError as exc:
        return exc.reason, None


# --- strategies ---------------------------------------------------------------

names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
entities = st.one_of(names, st.integers(0, 2**64 - 1))
metrics = st.one_of(names, st.integers(0, 2**32 - 1))
values = st.floats(allow_nan=False, allow_infinity=False)
stamps = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1),
                   st.floats(-(2.0**63), 2.0**63, exclude_max=True, allow_nan=False))


@st.composite
def records(draw):
    rec = {"entity": draw(entities), "metric": draw(metrics), "value": draw(values)}
    ts = draw(stamps)
    if ts is not None:
        rec["ts"] = ts
    return rec


def expected(recs) -> np.ndarray:
    """What the protocol says the records are, computed here."""
    out = np.zeros(len(recs), EVENT_DTYPE)
    for i, r in enumerate(recs):
        e, m = r["entity"], r["metric"]
        ts = r.get("ts", NOW)
        out[i] = (entity_id(e) if isinstance(e, str) else e, round(ts),
                  metric_id(m) if isinstance(m, str) else m, 0, float(r["value"]))
    return out


# --- round trips ----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(records(), max_size=40))
def test_the_fast_path_the_reference_and_the_protocol_agree(recs):
    body = body_of(recs)
    with mock.patch.object(P, "_reference_lines", side_effect=AssertionError("fell back")):
        fast = decode(body)         # good lines never leave the fast path
    assert same(fast, reference(body))
    assert same(fast, expected(recs))


@settings(max_examples=100, deadline=None)
@given(st.lists(records(), min_size=1, max_size=40), st.data())
def test_json_lines_give_the_records_of_the_same_events_sent_as_binary(recs, data):
    """The binary path takes the records as they are: JSON lines of the
    same events must decode to exactly those bytes (so the same state)."""
    for r in recs:
        r["ts"] = data.draw(st.integers(T0, T0 + 10**12))
    ev = engine.make_events([r["entity"] for r in recs], [r["metric"] for r in recs],
                            np.array([r["ts"] for r in recs], np.int64),
                            np.array([r["value"] for r in recs], np.float64))
    binary = P.parse_events(P.pack_events(ev), len(ev))
    assert same(decode(body_of(recs)), binary)
    assert same(P.parse_json_lines(body_of(recs), now=NOW), binary)


line_parts = st.sampled_from([
    b'{"entity":"web-01","metric":"cpu","value":1.5}',
    b'{"entity": 7, "metric": 3, "value": -2, "ts": 1732300000000000000}',
    b'{"entity":"a","metric":"b","value":1,"ts":1.5e18}',
    b'{"entity":"a","metric":"b","value":1,"ts":1e300}',
    b'{"entity":"a","metric":"b","value":NaN}',
    b'{"entity":"a","metric":"b","value":Infinity}',
    b'{"entity":"a","metric":"b","value":1e400}',
    b'{"entity":"a","metric":"b","value":1' + b"0" * 400 + b"}",
    b'{"entity":"a","metric":"b","value":true}',
    b'{"entity":"a","metric":"b","value":null}',
    b'{"entity":"a","metric":"b","value":1,"ts":null}',
    b'{"entity":"a","metric":"b","value":1,"ts":9223372036854775808}',
    b'{"entity":"a","metric":"b","value":1,"ts":-9223372036854775808}',
    b'{"entity":18446744073709551616,"metric":"b","value":1}',
    b'{"entity":-1,"metric":"b","value":1}',
    b'{"entity":1.0,"metric":"b","value":1}',
    b'{"entity":"a","metric":4294967296,"value":1}',
    b'{"entity":"a","metric":"b"}',
    b'{"entity":"a","metric":"b","value":1,"x":2}',
    b'{"entity":"a","metric":"b","value":1,"value":2}',
    b'{"entity":"\\ud800","metric":"b","value":1}',
    b'{"entity":"\xe2\x80\xa8","metric":"b","value":1}',
    b'{"entity":"\xf0\x9f\x94\xa5 h\xc3\xb6st","metric":"\\u00e9","value":1}',
    b'{"entity":"\xc3(","metric":"b","value":1}',
    b'{"entity":"","metric":"b","value":1}',
    b'{"entity":"a","metric":"b","value":1}{"entity":"a","metric":"b","value":1}',
    b'{"entity":"a",', b'"metric":"b","value":1}', b'[1]', b'42', b'"x"', b'{', b'}',
    b'not json', b'', b'  ', b'\r', b'\t ', b'{"entity":"a\\"}","metric":"b","value":1}',
    b'{"entity":"a","metric":"b","value":1} ', b' {"entity":"a","metric":"b","value":1}\r',
])


@settings(max_examples=400, deadline=None)
@given(st.lists(line_parts, max_size=8), st.booleans())
def test_any_body_decodes_as_the_reference_does(parts, final_newline):
    """The fast path takes exactly what the reference takes, with the same
    records, and refuses the rest with the reference's reason."""
    body = b"\n".join(parts) + (b"\n" if final_newline else b"")
    got, want = outcome(decode, body), outcome(reference, body)
    assert got[0] == want[0], (body, got, want)
    if got[0] == "ok":
        assert same(got[1], want[1]), body


# --- bad input ------------------------------------------------------------------


@pytest.mark.parametrize("body, reason, where", [
    (b'{"entity":"a","metric":"b","value":1}\n{"entity":"a","metric":"b","value":\n',
     "bad_json", "line 2"),
    (b'{"entity":"a","metric":"b","value":1}\n\n{"entity":"a","metric":"b"}\n',
     "bad_field", "line 3: missing field 'value'"),
    (b'{"entity":"a","metric":"b","value":1,"color":"red"}', "bad_field", "unknown field"),
    (b'{"entity":"a","metric":"b","value":"1"}', "bad_field", "value must be a number"),
    (b'{"entity":18446744073709551616,"metric":"b","value":1}', "bad_field", "u64 id"),
    (b'{"entity":"a","metric":4294967296,"value":1}', "bad_field", "u32 id"),
    (b'{"entity":"a","metric":"b","value":1,"ts":9223372036854775808}', "bad_field", "ts"),
    (b'{"entity":"a","metric":"b","value":1,"ts":"now"}', "bad_field", "ts"),
    (b'{"entity":"\\udfff","metric":"b","value":1}', "bad_field", "not valid Unicode"),
    (b'{"entity":"\xff","metric":"b","value":1}', "bad_utf8", "UTF-8"),
    (b'{"entity":"a","metric":"b","value":1}{"entity":"a","metric":"b","value":1}',
     "bad_json", "line 1"),
    (b'{"entity":"a",\n"metric":"b","value":1}', "bad_json", "line 1"),
    (b'[1, 2]', "bad_json", "not a JSON object"),
])
def test_a_bad_line_rejects_the_message_and_names_its_line(body, reason, where):
    names = {"entities": {}, "metrics": {}}
    with pytest.raises(P.ProtocolError) as info:
        decode(body, names)
    assert info.value.reason == reason and where in str(info.value)
    # A refused message teaches no names.
    assert names == {"entities": {}, "metrics": {}}


def test_nan_and_infinite_values_are_kept_as_invalid_records():
    body = (b'{"entity":"a","metric":"b","value":NaN}\n'
            b'{"entity":"a","metric":"b","value":-Infinity}\n'
            b'{"entity":"a","metric":"b","value":1e400}\n'
            b'{"entity":"a","metric":"b","value":2.5}\n')
    out = decode(body)
    assert math.isnan(out["value"][0]) and out["value"][1] == -math.inf
    assert out["value"][2] == math.inf and out["value"][3] == 2.5


def test_a_float_ts_is_rounded_to_the_nearest_nanosecond_ties_to_even():
    lines = [1.5e18, 1732300000123456.5, 1732300000123457.5, -2.5, 0.49, 2.0**63 - 1024,
             -(2.0**63)]
    out = decode(body_of([{"entity": "a", "metric": "b", "value": 1.0, "ts": t}
                          for t in lines]))
    assert out["ts"].tolist() == [1_500_000_000_000_000_000, 1732300000123456,
                                  1732300000123458, -2, 0, 2**63 - 1024, -(2**63)]
    assert not np.isnan(out["value"]).any()


@pytest.mark.parametrize("ts", [b"1e19", b"9.3e18", b"-9.3e18", b"1e300", b"NaN", b"Infinity",
                                b"-Infinity"])
def test_a_float_ts_that_is_not_finite_or_past_i64_makes_an_invalid_record(ts):
    body = b'{"entity":"a","metric":"b","value":1,"ts":' + ts + b'}\n' \
           b'{"entity":"a","metric":"b","value":2}\n'
    out = decode(body)
    assert math.isnan(out["value"][0]) and out["ts"][0] == 0
    assert out["value"][1] == 2.0 and out["ts"][1] == NOW


def test_blank_lines_crlf_and_no_final_newline():
    body = (b'\n  \r\n{"entity":"a","metric":"b","value":1}\r\n\t\n'
            b'{"entity":"c","metric":"d","value":2}')
    out = decode(body)
    assert out["key"].tolist() == [entity_id("a"), entity_id("c")]
    assert decode(b"").size == 0 and decode(b"\n\n").size == 0


def test_unicode_names_are_hashed_as_utf8_and_registered_once_per_message():
    names = {"entities": {}, "metrics": {}}
    ent = ["h\u00f6st-\U0001f525", "a\u2028b", "\u0645\u062b\u0627\u0644"]
    body = body_of([{"entity": e, "metric": "\u00b5s", "value": 1.0} for e in ent * 3])
    out = decode(body, names)
    assert out["key"].tolist() == [entity_id(e) for e in ent * 3]
    assert names == {"entities": {entity_id(e): e for e in ent},
                     "metrics": {metric_id("\u00b5s"): "\u00b5s"}}


def test_names_are_registered_through_the_registry_in_one_batch_and_only_once():
    class Table(dict):
        calls = 0

        def setdefault(self, ident, name):
            Table.calls += 1
            return super().setdefault(ident, name)

    names = {"entities": Table(), "metrics": Table()}
    dec = P.JsonLinesDecoder(names)
    body = body_of([{"entity": f"h{i % 10}", "metric": "cpu", "value": 1.0}
                    for i in range(100)])
    dec.decode(body)
    dec.decode(body)
    assert Table.calls == 11 and len(names["entities"]) == 10
    # A name first seen in a refused message is registered when it comes
    # again in a good one (the cache forgets it).
    bad = body_of([{"entity": "new", "metric": "cpu", "value": 1.0},
                   {"entity": "x", "metric": 2**40, "value": 1.0}])
    with pytest.raises(P.ProtocolError):
        dec.decode(bad)
    dec.decode(body_of([{"entity": "new", "metric": "cpu", "value": 1.0}]))
    assert names["entities"][entity_id("new")] == "new"


def test_the_name_cache_is_bounded():
    dec = P.JsonLinesDecoder(max_cached=8)
    for i in range(5):
        out = dec.decode(body_of([{"entity": f"h{i}-{j}", "metric": "m", "value": 1.0}
                                  for j in range(20)]))
        assert out["key"].tolist() == [entity_id(f"h{i}-{j}") for j in range(20)]
        assert len(dec._filler.entity_ids) <= 8


def test_strict_refuses_empty_names():
    body = b'{"entity":"","metric":"b","value":1}\n'
    assert decode(body)["key"][0] == entity_id("")
    with pytest.raises(P.ProtocolError, match="empty name"):
        decode(body, strict=True)


def test_the_decoder_reuses_its_buffer_and_parse_json_lines_copies():
    dec = P.JsonLinesDecoder()
    a = dec.decode(body_of([{"entity": "a", "metric": "b", "value": 1.0}]))
    b = dec.decode(body_of([{"entity": "c", "metric": "d", "value": 2.0}]))
    assert np.shares_memory(a, b)
    c = P.parse_json_lines(body_of([{"entity": "a", "metric": "b", "value": 1.0}]))
    assert c.flags.owndata or c.base is not None and not np.shares_memory(c, a)


def test_the_filler_refuses_a_type_without_slots():
    class Plain:
        pass

    with pytest.raises(TypeError):
        _jsonl.Filler(Plain, entity_id, metric_id, 16)


# --- the line scan ----------------------------------------------------------------


def scan_reference(body: bytes) -> int:
    """count_lines in plain Python: non-blank lines, each one balanced
    ``{...}`` (strings and escapes respected) and nothing else, or -1."""
    lines = 0
    for raw in body.split(b"\n"):
        text = raw.strip(b" \t\r")
        if not text:
            continue
        if text[:1] != b"{":
            return -1
        depth, in_string, escaped, end = 0, False, False, None
        for i, c in enumerate(text):
            if in_string:
                if escaped:
                    escaped = False
                elif c == 92:
                    escaped = True
                elif c == 34:
                    in_string = False
                continue
            if c == 34:
                in_string = True
            elif c in (123, 91):
                depth += 1
            elif c in (125, 93):
                depth -= 1
                if depth == 0:
                    end = i
                    break
        if end is None:
            return -1
        if text[end + 1:]:          # anything after the object on its line
            return -1
        lines += 1
    return lines


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from([b"{", b"}", b"[", b"]", b'"', b"\\", b"\n", b" ", b"\r",
                                 b"a", b":", b","]), max_size=30))
def test_count_lines_matches_its_reference(parts):
    body = b"".join(parts)
    assert _jsonl.count_lines(body) == scan_reference(body), body


def test_count_lines_on_typical_bodies():
    assert _jsonl.count_lines(b"") == 0
    assert _jsonl.count_lines(b'{"a":"}\\"{"}\n\n{"b":[1,{}]}') == 2
    assert _jsonl.count_lines(b'{"a":1}{"b":2}\n') == -1
    assert _jsonl.count_lines(b'{"a":\n1}\n') == -1
    assert _jsonl.count_lines(b'{"a":"x\\\ny"}') == -1


def test_check_only_refuses_what_the_strict_decoder_refuses_without_hashing():
    names = {"entities": {}, "metrics": {}}
    dec = P.JsonLinesDecoder(names, strict=True, check_only=True)
    out = dec.decode(b'{"entity":"a","metric":7,"value":1,"ts":1.5e18}\n')
    assert (out["key"][0], out["metric"][0], out["ts"][0]) == (0, 7, 1_500_000_000_000_000_000)
    assert names == {"entities": {}, "metrics": {}} and not dec._filler.entity_ids
    for bad in (b'{"entity":"","metric":"b","value":1}',
                b'{"entity":"a","metric":4294967296,"value":1}'):
        with pytest.raises(P.ProtocolError):
            dec.decode(bad)
