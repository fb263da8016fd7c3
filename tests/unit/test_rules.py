"""Health rules (docs/health.md): durations, loading, every validation error,
and the compiled records and segment image the kernels read."""

from __future__ import annotations

import dataclasses
import math
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from engine.core.durations import format_duration, parse_duration
from engine.core.records import metric_id
from engine.errors import ConfigError
from engine.health.rules import (
    MAX_RULES,
    RULE_DTYPE,
    RULE_FALLING,
    RULE_HAS_CRIT,
    RULE_HAS_WARN,
    RULE_WILDCARD,
    RULES_HEADER_BYTES,
    RULES_HEADER_DTYPE,
    RULES_SEGMENT_BYTES,
    STAT_NAMES,
    STAT_TTL,
    STATUS_NAMES,
    Rule,
    Rules,
    stat_code,
    stat_name,
)

S = 10**9

# --------------------------------------------------------------------------
# Durations


@pytest.mark.parametrize(
    "value,ns",
    [
        (0, 0),
        (30, 30 * S),
        (1.5, 1_500_000_000),
        (0.1, 100_000_000),
        ("0", 0),
        (" 0 ", 0),
        ("0.0", 0),
        ("250ms", 250_000_000),
        ("30s", 30 * S),
        ("5m", 300 * S),
        ("1h", 3600 * S),
        ("1d", 86400 * S),
        ("1.5s", 1_500_000_000),
        ("0.1s", 100_000_000),
        (".5s", 500_000_000),
        ("100us", 100_000),
        ("100µs", 100_000),
        ("100μs", 100_000),
        (np.int64(2), 2 * S),
        (np.float64(0.25), 250_000_000),
        ("10ns", 10),
        ("  30 s\t", 30 * S),
        ("2.5m", 150 * S),
        ("0ms", 0),
    ],
)
def test_parse_duration_valid(value, ns):
    got = parse_duration(value)
    assert got == ns
    assert type(got) is int


@pytest.mark.parametrize(
    "value,match",
    [
        (True, "must be a duration"),
        (False, "must be a duration"),
        (-1, "must not be negative"),
        (-0.5, "must not be negative"),
        ("-5s", "must not be negative"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ("5", "needs a unit"),
        ("1.5", "needs a unit"),
        ("5x", "unknown unit"),
        ("5M", "must be a duration|unknown unit"),
        ("abc", "must be a duration"),
        ("", "must be a duration"),
        ("5 s s", "must be a duration"),
        ("1e3s", "must be a duration|unknown unit"),
        ("1.5ns", "whole number of nanoseconds"),
        (None, "must be a duration"),
        ([1], "must be a duration"),
        (10**11, "too long"),
        ("200000d", "too long"),
    ],
)
def test_parse_duration_invalid(value, match):
    with pytest.raises(ConfigError, match=match) as info:
        parse_duration(value, "my.setting")
    # The message names the setting and the bad value.
    assert "my.setting" in str(info.value)
    if value != "":
        assert repr(value) in str(info.value)


def test_parse_duration_default_name():
    with pytest.raises(ConfigError, match=r"^duration .*'soon'"):
        parse_duration("soon")


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_format_duration_round_trips(ns):
    text = format_duration(ns)
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    "ns,text", [(0, "0s"), (60 * S, "1m"), (90 * S, "90s"), (1_500_000_000, "1500ms"), (7, "7ns")]
)
def test_format_duration_is_the_shortest_exact_spelling(ns, text):
    assert format_duration(ns) == text


# --------------------------------------------------------------------------
# Codes and layout


def test_status_names_in_severity_order():
    assert STATUS_NAMES == ("OK", "WARN", "STALE", "CRIT")


def test_stat_names_by_code():
    assert STAT_NAMES[0] == "last" and STAT_NAMES[1] == "ewma" and STAT_NAMES[6] == "count"
    assert STAT_NAMES[11] == "win_mean" and STAT_NAMES[14] == "p99"
    assert STAT_NAMES[15:] == ("view0", "view1", "view2")
    assert len(STAT_NAMES) == 18
    assert STAT_TTL == 255


@pytest.mark.parametrize(
    "views,names", [((1, 5, 15), ("view1", "view5", "view15")),
                    ((2, 10, 30), ("view2", "view10", "view30"))]
)
def test_stat_name_and_code_round_trip(views, names):
    for code in range(15):
        assert stat_name(code, views) == STAT_NAMES[code]
    assert tuple(stat_name(c, views) for c in (15, 16, 17)) == names
    assert stat_name(STAT_TTL, views) == "ttl"
    for code in (*range(18), STAT_TTL):
        assert stat_code(stat_name(code, views), views) == code


def test_stat_name_default_views():
    assert stat_name(16) == "view5"
    assert stat_code("view15") == 17


@pytest.mark.parametrize("name,views", [("view0", (1, 5, 15)), ("view5", (2, 10, 30)),
                                        ("p90", (1, 5, 15)), ("", (1, 5, 15))])
def test_stat_code_unknown_lists_valid_names(name, views):
    with pytest.raises(ConfigError, match=r"unknown stat .*valid stats: last, ewma.*") as info:
        stat_code(name, views)
    msg = str(info.value)
    for v in views:
        assert f"view{v}" in msg


@pytest.mark.parametrize("code", [18, 100, -1, 254, 256, "0", 1.0])
def test_stat_name_unknown_code(code):
    with pytest.raises(ValueError):
        stat_name(code)


@pytest.mark.parametrize("views", [(1, 5), (1, 5, 5), (0, 5, 15), (1, 5, 15, 60), (1.0, 5, 15),
                                   (True, 5, 15), None])
def test_bad_views(views):
    with pytest.raises(ConfigError, match="views"):
        stat_code("last", views)


def test_rule_dtype_layout():
    assert RULE_DTYPE.itemsize == 64
    assert RULE_DTYPE.isnative or RULE_DTYPE.byteorder in "<|="
    expected = [
        ("metric", 0, "<u4"), ("stat", 4, "u1"), ("flags", 5, "u1"), ("_pad0", 6, "<u2"),
        ("warn", 8, "<f8"), ("crit", 16, "<f8"), ("clear", 24, "<f8"), ("for_ns", 32, "<i8"),
        ("ttl_ns", 40, "<i8"), ("_pad1", 48, None),
    ]
    assert list(RULE_DTYPE.names) == [name for name, _, _ in expected]
    for name, offset, typ in expected:
        dt, off = RULE_DTYPE.fields[name][:2]
        assert off == offset, name
        if typ is not None:
            assert dt == np.dtype(typ), name
    assert RULE_DTYPE.fields["_pad1"][0] == np.dtype(("<u8", (2,)))
    assert (RULE_WILDCARD, RULE_HAS_WARN, RULE_HAS_CRIT, RULE_FALLING) == (1, 2, 4, 8)


def test_segment_sizes():
    assert MAX_RULES == 255
    assert RULES_HEADER_BYTES == RULES_HEADER_DTYPE.itemsize == 64
    assert RULES_SEGMENT_BYTES == 64 + 255 * 64


# --------------------------------------------------------------------------
# Loading

TOML = """
[defaults]
ttl = "60s"
lateness = "10s"

[[rule]]
metric = "cpu"
stat = "ewma"
warn = 0.80
crit = 0.95
clear = 0.70
for = "30s"
ttl = "2m"

[[rule]]
metric = "disk_free"
warn = 10
crit = 5

[[rule]]
metric = "*"
crit = 1e6
"""

DICT = {
    "defaults": {"ttl": 60, "lateness": "10s"},
    "rule": [
        {"metric": "cpu", "stat": "ewma", "warn": 0.8, "crit": 0.95, "clear": 0.7,
         "for": "30s", "ttl": "2m"},
        {"metric": "disk_free", "warn": 10, "crit": 5},
        {"metric": "*", "crit": 1_000_000},
    ],
}

EXPECTED = Rules(
    ttl_ns=60 * S,
    lateness_ns=10 * S,
    rules=(
        Rule("cpu", "ewma", warn=0.8, crit=0.95, clear=0.7, for_ns=30 * S, ttl_ns=120 * S),
        Rule("disk_free", "last", warn=10.0, crit=5.0),
        Rule("*", crit=1e6),
    ),
)


def test_load_dict():
    assert Rules.load(DICT) == EXPECTED


def test_load_toml_string():
    assert Rules.load(TOML) == EXPECTED


def test_load_one_line_toml_string():
    rules = Rules.load('rule = [{metric = "cpu", warn = 1}]')
    assert rules.rules == (Rule("cpu", warn=1.0),)


def test_load_file_str_and_path(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(TOML)
    assert Rules.load(str(path)) == EXPECTED
    assert Rules.load(path) == EXPECTED


def test_load_file_without_toml_suffix(tmp_path):
    path = tmp_path / "health.conf"
    path.write_text(TOML)
    assert Rules.load(str(path)) == EXPECTED


def test_rules_alias():
    d = dict(DICT)
    d["rules"] = d.pop("rule")
    assert Rules.load(d) == EXPECTED


def test_load_none_and_rules():
    empty = Rules.load(None)
    assert empty == Rules() and empty.rules == () and empty.ttl_ns == 0
    assert empty.lateness_ns is None
    assert Rules.load(EXPECTED) is EXPECTED
    assert Rules.load({}) == Rules()


def test_stat_defaults_to_last():
    assert Rules.load({"rule": [{"metric": "m", "warn": 1}]}).rules[0].stat == "last"


def test_rules_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        EXPECTED.ttl_ns = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        EXPECTED.rules[0].warn = 0.1  # type: ignore[misc]


@pytest.mark.parametrize("source,match", [
    ("missing/rules.toml", "rules file not found"),
    (Path("/nonexistent/rules.toml"), "rules file not found"),
    (Path("/nonexistent/rules"), "rules file not found"),
    ("cpu", "neither an existing file nor a TOML string"),
    ("[[rule]\nmetric = 1", "not valid TOML"),
    (5, "must be a TOML file path, a TOML string or a dict"),
    (b"rule = []", "must be a TOML file path, a TOML string or a dict"),
])
def test_load_bad_sources(source, match):
    with pytest.raises(ConfigError, match=match):
        Rules.load(source)


def test_load_bad_toml_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[defaults\n")
    with pytest.raises(ConfigError, match=r"bad\.toml.*not valid TOML"):
        Rules.load(path)


def test_load_directory(tmp_path):
    with pytest.raises(ConfigError, match="cannot read rules file"):
        Rules.load(tmp_path)


# --------------------------------------------------------------------------
# Validation


def _one(**rule):
    return {"rule": [rule]}


@pytest.mark.parametrize(
    "source,match",
    [
        ({"defaults": {"ttl": "1m", "tll": "1m"}}, r"defaults: unknown key.*'tll'"),
        ({"defaults": {"ttl": "soon"}}, r"defaults\.ttl .*'soon'"),
        ({"defaults": {"lateness": -1}}, r"defaults\.lateness must not be negative"),
        ({"defaults": 5}, "defaults must be a table"),
        ({"rule": [], "extra": 1}, r"unknown key.*'extra'"),
        ({"rule": [], "rules": []}, "either 'rule' or 'rules'"),
        ({"rule": {"metric": "cpu", "warn": 1}}, r"list of tables \(\[\[rule\]\]"),
        ({"rule": ["cpu"]}, r"rule 1: must be a table"),
        (_one(metric="cpu", warn=1, crti=2), r"rule 1 \(metric 'cpu'\): unknown key.*'crti'"),
        (_one(warn=1), r"rule 1: no metric"),
        (_one(metric="", warn=1), r"rule 1 \(metric ''\): metric must be a non-empty string"),
        (_one(metric=5, warn=1), r"rule 1: metric must be a non-empty string"),
        (_one(metric="cpu", stat="median", warn=1),
         r"rule 1 \(metric 'cpu'\): unknown stat 'median'; a rule can watch: last, ewma, .*"
         r"p99, view1, view5, view15"),
        (_one(metric="cpu", stat="view0", warn=1), r"unknown stat 'view0'"),
        (_one(metric="cpu", stat="ttl", warn=1), r"unknown stat 'ttl'"),
        (_one(metric="cpu"), r"rule 1 \(metric 'cpu'\): a rule needs warn or crit"),
        (_one(metric="cpu", clear=1), r"needs warn or crit"),
        (_one(metric="cpu", warn=float("nan")), r"warn must be finite"),
        (_one(metric="cpu", crit=float("inf")), r"crit must be finite"),
        (_one(metric="cpu", warn=1, clear=float("-inf")), r"clear must be finite"),
        (_one(metric="cpu", warn="high"), r"warn must be a number, got 'high'"),
        (_one(metric="cpu", crit=True), r"crit must be a number, got True"),
        (_one(metric="cpu", warn=2, crit=2), r"warn and crit are equal \(2\)"),
        (_one(metric="cpu", warn=1, crit=2, direction="falling"),
         r"direction is 'falling' but warn \(1\) < crit \(2\) makes the rule rising"),
        (_one(metric="disk", warn=2, crit=1, direction="rising"),
         r"direction is 'rising' but warn \(2\) > crit \(1\) makes the rule falling"),
        (_one(metric="cpu", warn=1, direction="down"), r"direction must be 'rising' or 'falling'"),
        (_one(metric="cpu", warn=1, crit=2, clear=1.5), r"clear \(1.5\) must be <= warn \(1\)"),
        (_one(metric="cpu", crit=2, clear=3), r"clear \(3\) must be <= crit \(2\)"),
        (_one(metric="disk", warn=2, crit=1, clear=1.5), r"clear \(1.5\) must be >= warn \(2\)"),
        (_one(metric="disk", crit=1, clear=0.5, direction="falling"),
         r"clear \(0.5\) must be >= crit \(1\) for a falling rule"),
        (_one(metric="cpu", warn=1, **{"for": "-1s"}), r"rule 1 \(metric 'cpu'\): for must not"),
        (_one(metric="cpu", warn=1, **{"for": "ever"}), r"for must be a duration.*'ever'"),
        (_one(metric="cpu", warn=1, ttl="5"), r"ttl '5' needs a unit"),
        ({"rule": [{"metric": "a", "warn": 1}, {"metric": "cpu", "warn": 1},
                   {"metric": "cpu", "crit": 2}]},
         r"rule 3 \(metric 'cpu'\): metric 'cpu' already has rule 2; one rule per metric"),
        ({"rule": [{"metric": "*", "warn": 1}, {"metric": "*", "crit": 2}]},
         r"rule 2 \(metric '\*'\): metric '\*' already has rule 1"),
        ({"rule": [{"metric": f"m{i}", "warn": 1} for i in range(MAX_RULES + 1)]},
         r"256 rules; at most 255"),
    ],
)
def test_validation_errors(source, match):
    with pytest.raises(ConfigError, match=match):
        Rules.load(source)


def test_rule_number_is_one_based_and_names_the_metric():
    source = {"rule": [{"metric": "a", "warn": 1}, {"metric": "b", "warn": 1, "crit": 1}]}
    with pytest.raises(ConfigError, match=r"^rule 2 \(metric 'b'\): warn and crit are equal"):
        Rules.load(source)


def test_validation_errors_in_toml():
    with pytest.raises(ConfigError, match=r"rule 1 \(metric 'cpu'\): unknown stat 'avg'"):
        Rules.load('[[rule]]\nmetric = "cpu"\nstat = "avg"\nwarn = 1\n')


def test_max_rules_is_allowed():
    rules = Rules.load({"rule": [{"metric": f"m{i}", "warn": 1} for i in range(MAX_RULES)]})
    assert len(rules.rules) == MAX_RULES
    assert len(rules.encode()) == RULES_SEGMENT_BYTES


def test_metric_id_collision_is_an_error():
    # Birthday search for two names with one 32-bit id (~80k names).
    seen: dict[int, str] = {}
    i = 0
    while True:
        name = f"m{i}"
        mid = metric_id(name)
        if mid in seen:
            a, b = seen[mid], name
            break
        seen[mid] = name
        i += 1
    with pytest.raises(ConfigError, match=rf"metrics '{a}' and '{b}' have the same id {mid}"):
        Rules.load({"rule": [{"metric": a, "warn": 1}, {"metric": b, "warn": 1}]})


def test_direction_stated_and_inferred():
    r = Rules.load({"rule": [
        {"metric": "a", "warn": 1, "crit": 2},
        {"metric": "b", "warn": 2, "crit": 1},
        {"metric": "c", "warn": 2},
        {"metric": "d", "crit": 2, "direction": "falling"},
        {"metric": "e", "warn": 1, "crit": 2, "direction": "rising"},
        {"metric": "f", "warn": 2, "crit": 1, "direction": "falling"},
    ]}).rules
    assert [x.direction for x in r] == ["rising", "falling", "rising", "falling", "rising",
                                        "falling"]
    assert [x.falling for x in r] == [False, True, False, True, False, True]


def test_clear_defaults_and_edges():
    r = Rules.load({"rule": [
        {"metric": "a", "warn": 1, "crit": 2},
        {"metric": "b", "crit": 2},
        {"metric": "c", "warn": 1, "clear": 1},
        {"metric": "d", "warn": 5, "crit": 1, "clear": 5},
    ]}).rules
    assert [x.clear for x in r] == [None, None, 1.0, 5.0]
    assert [x.effective_clear for x in r] == [1.0, 2.0, 1.0, 5.0]


def test_check_window():
    rules = Rules.load({"defaults": {"lateness": "10s"}})
    rules.check_window(10 * S)
    rules.check_window(60 * S)
    with pytest.raises(ConfigError, match=r"lateness \(10s\) must not exceed the window \(5s\)"):
        rules.check_window(5 * S)


def test_lateness_is_not_checked_against_a_window_on_load():
    assert Rules.load({"defaults": {"lateness": "1d"}}).lateness_ns == 86400 * S


def test_direct_construction_validates():
    with pytest.raises(ConfigError, match="needs warn or crit"):
        Rule("cpu")
    with pytest.raises(ConfigError, match="for must be an integer number of nanoseconds"):
        Rule("cpu", warn=1, for_ns=-1)
    with pytest.raises(ConfigError, match="already has rule 1"):
        Rules(rules=(Rule("cpu", warn=1), Rule("cpu", crit=1)))
    with pytest.raises(ConfigError, match="not a Rule"):
        Rules(rules=({"metric": "cpu", "warn": 1},))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="defaults.ttl"):
        Rules(ttl_ns=-1)


# --------------------------------------------------------------------------
# compile / encode


def _compile_one(rule, **defaults):
    return Rules.load({"defaults": defaults, "rule": [rule]}).compile()[0]


def test_compile_rising():
    rec = _compile_one({"metric": "cpu", "stat": "ewma", "warn": 0.8, "crit": 0.95, "clear": 0.7,
                        "for": "30s", "ttl": "2m"}, ttl="1m")
    assert rec["metric"] == metric_id("cpu")
    assert rec["stat"] == 1
    assert rec["flags"] == RULE_HAS_WARN | RULE_HAS_CRIT
    assert (rec["warn"], rec["crit"], rec["clear"]) == (0.8, 0.95, 0.7)
    assert rec["for_ns"] == 30 * S
    assert rec["ttl_ns"] == 120 * S
    assert rec["_pad0"] == 0 and list(rec["_pad1"]) == [0, 0]


def test_compile_falling_is_negated():
    rec = _compile_one({"metric": "disk_free", "stat": "min", "warn": 10, "crit": 5,
                        "clear": 15})
    assert rec["metric"] == metric_id("disk_free")
    assert rec["stat"] == 3
    assert rec["flags"] == RULE_HAS_WARN | RULE_HAS_CRIT | RULE_FALLING
    assert (rec["warn"], rec["crit"], rec["clear"]) == (-10.0, -5.0, -15.0)
    # Evaluated as rising over -v: stored warn < crit and clear <= warn.
    assert rec["clear"] <= rec["warn"] < rec["crit"]


def test_compile_warn_only():
    rec = _compile_one({"metric": "load", "stat": "view5", "warn": 4})
    assert rec["stat"] == 16
    assert rec["flags"] == RULE_HAS_WARN
    assert rec["warn"] == 4.0
    assert rec["crit"] == math.inf
    assert rec["clear"] == 4.0


def test_compile_crit_only():
    rec = _compile_one({"metric": "errors", "stat": "win_sum", "crit": 100, "clear": 50})
    assert rec["stat"] == 8
    assert rec["flags"] == RULE_HAS_CRIT
    assert (rec["warn"], rec["crit"], rec["clear"]) == (100.0, 100.0, 50.0)


def test_compile_falling_warn_only_never_reaches_crit():
    rec = _compile_one({"metric": "disk_free", "warn": 10, "direction": "falling"})
    assert rec["flags"] == RULE_HAS_WARN | RULE_FALLING
    assert rec["warn"] == -10.0
    assert rec["crit"] == math.inf  # +inf in the negated space too
    assert rec["clear"] == -10.0


def test_compile_falling_crit_only():
    rec = _compile_one({"metric": "disk_free", "crit": 2, "clear": 3, "direction": "falling"})
    assert rec["flags"] == RULE_HAS_CRIT | RULE_FALLING
    assert (rec["warn"], rec["crit"], rec["clear"]) == (-2.0, -2.0, -3.0)


def test_compile_wildcard():
    rec = _compile_one({"metric": "*", "stat": "p99", "warn": 1, "crit": 2})
    assert rec["metric"] == 0
    assert rec["stat"] == 14
    assert rec["flags"] == RULE_WILDCARD | RULE_HAS_WARN | RULE_HAS_CRIT


def test_compile_ttl_inheritance():
    rules = Rules.load({"defaults": {"ttl": "1m"}, "rule": [
        {"metric": "a", "warn": 1},
        {"metric": "b", "warn": 1, "ttl": "5s"},
        {"metric": "c", "warn": 1, "ttl": 0},
    ]})
    assert list(rules.compile()["ttl_ns"]) == [60 * S, 5 * S, 0]
    assert list(Rules(rules=rules.rules).compile()["ttl_ns"]) == [0, 5 * S, 0]


def test_compile_order_and_dtype():
    arr = Rules.load(DICT).compile()
    assert arr.dtype == RULE_DTYPE
    assert arr.flags.c_contiguous
    assert list(arr["metric"]) == [metric_id("cpu"), metric_id("disk_free"), 0]
    assert Rules().compile().shape == (0,)


def test_compile_with_custom_views():
    rules = Rules.load(_one(metric="cpu", stat="view10", warn=1), views=(2, 10, 30))
    assert rules.compile(views=(2, 10, 30))[0]["stat"] == 16
    with pytest.raises(ConfigError, match=r"rule 1 \(metric 'cpu'\): unknown stat 'view10'"):
        rules.compile()
    with pytest.raises(ConfigError, match="unknown stat 'view5'"):
        Rules.load(_one(metric="cpu", stat="view5", warn=1), views=(2, 10, 30))


def test_encode():
    rules = Rules.load(DICT)
    image = rules.encode()
    assert len(image) == RULES_HEADER_BYTES + 3 * 64
    generation, count, ttl, lateness = struct.unpack_from("<QQqq", image)
    assert (generation, count, ttl, lateness) == (0, 3, 60 * S, 10 * S)
    assert image[32:64] == bytes(32)
    assert image[64:] == rules.compile().tobytes()
    header = np.frombuffer(image[:64], RULES_HEADER_DTYPE)[0]
    assert header["count"] == 3 and header["lateness_ns"] == 10 * S
    back = np.frombuffer(image, RULE_DTYPE, offset=64)
    assert np.array_equal(back, rules.compile())


def test_encode_empty():
    image = Rules.load({"defaults": {"ttl": "30s"}}).encode()
    assert len(image) == 64
    assert struct.unpack_from("<QQqq", image) == (0, 0, 30 * S, -1)


def test_metric_names():
    assert Rules.load(DICT).metric_names() == {
        metric_id("cpu"): "cpu", metric_id("disk_free"): "disk_free"
    }
    assert Rules().metric_names() == {}


def test_to_dict_round_trips():
    rules = Rules.load({"defaults": {"ttl": "90s", "lateness": "250ms"}, "rule": [
        *DICT["rule"],
        {"metric": "free", "warn": 10, "direction": "falling", "for": 1.5},
    ]})
    d = rules.to_dict()
    assert d["defaults"] == {"ttl": "90s", "lateness": "250ms"}
    assert d["rule"][3] == {"metric": "free", "stat": "last", "warn": 10.0,
                            "direction": "falling", "for": "1500ms"}
    assert Rules.load(d) == rules
    assert Rules.load(EXPECTED.to_dict()) == EXPECTED


def test_describe_and_repr():
    rules = Rules.load(DICT)
    lines = rules.describe().splitlines()
    assert lines[0] == "defaults: ttl 1m, lateness 10s"
    assert len(lines) == 4
    assert lines[1] == ("rule 1: cpu ewma (rising): WARN >= 0.8, CRIT >= 0.95, OK below 0.7, "
                        "for 30s, ttl 2m")
    assert lines[2] == ("rule 2: disk_free last (falling): WARN <= 10, CRIT <= 5, OK above 10, "
                        "ttl 1m (default)")
    assert lines[3].startswith("rule 3: * last (rising): CRIT >= 1000000")
    assert str(rules) == rules.describe()
    assert repr(rules) == "Rules(ttl='1m', lateness='10s', 3 rules: cpu, disk_free, *)"
    assert Rules().describe() == "defaults: ttl never, lateness engine's\nno rules"


# --------------------------------------------------------------------------
# Property: compiled thresholds read back to the inputs

_finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)
_gap = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)
_RULE_STATS = [n for n in STAT_NAMES if not n.startswith("view")] + ["view1", "view5", "view15"]


@st.composite
def rule_dicts(draw, metric=None):
    falling = draw(st.booleans())
    kind = draw(st.sampled_from(["both", "warn", "crit"]))
    lo = draw(_finite)
    hi = lo + draw(_gap)
    assume(hi > lo)
    warn, crit = (hi, lo) if falling else (lo, hi)
    d = {"metric": metric if metric is not None else draw(st.text(min_size=1, max_size=12)),
         "stat": draw(st.sampled_from(_RULE_STATS))}
    if kind != "crit":
        d["warn"] = warn
    if kind != "warn":
        d["crit"] = crit
    if kind != "both" or draw(st.booleans()):
        d["direction"] = "falling" if falling else "rising"
    level = d.get("warn", d.get("crit"))
    if draw(st.booleans()):
        margin = draw(st.floats(min_value=0, max_value=1e6))
        d["clear"] = level + margin if falling else level - margin
    if draw(st.booleans()):
        d["for"] = draw(st.integers(min_value=0, max_value=10**6))
    if draw(st.booleans()):
        d["ttl"] = draw(st.integers(min_value=0, max_value=10**6))
    return d


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=8, unique=True).flatmap(
    lambda ids: st.tuples(*[rule_dicts(metric=f"m{i}") for i in ids])))
def test_compiled_thresholds_read_back(dicts):
    rules = Rules.load({"defaults": {"ttl": "7s"}, "rule": list(dicts)})
    arr = rules.compile()
    assert len(arr) == len(dicts)
    for d, rec in zip(dicts, arr):
        falling = bool(rec["flags"] & RULE_FALLING)
        assert falling == (d.get("direction") == "falling" or
                           ("warn" in d and "crit" in d and d["warn"] > d["crit"]))
        sign = -1.0 if falling else 1.0
        assert bool(rec["flags"] & RULE_HAS_WARN) == ("warn" in d)
        assert bool(rec["flags"] & RULE_HAS_CRIT) == ("crit" in d)
        level = d.get("warn", d.get("crit"))
        assert sign * rec["warn"] == level
        if "crit" in d:
            assert sign * rec["crit"] == d["crit"]
        else:
            assert rec["crit"] == math.inf
        assert sign * rec["clear"] == d.get("clear", level)
        # In the stored space every rule is rising.
        assert rec["clear"] <= rec["warn"] <= rec["crit"]
        assert rec["stat"] == stat_code(d["stat"])
        assert rec["metric"] == metric_id(d["metric"])
        assert rec["for_ns"] == d.get("for", 0) * S
        assert rec["ttl_ns"] == d.get("ttl", 7) * S
    assert Rules.load(rules.to_dict()) == rules


@given(rule_dicts())
def test_random_rule_round_trips_through_toml_ready_dict(d):
    rules = Rules.load({"rule": [d]})
    assert Rules.load(rules.to_dict()) == rules
    assert re.match(r"rule 1: ", rules.describe().splitlines()[1])
