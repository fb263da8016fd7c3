"""The name registry (engine/core/names.py): bounds, the names log, its
torn tail and its compaction."""

from __future__ import annotations

from engine.core.names import LOG_NAME, NameRegistry


def test_names_are_bounded_in_count_and_length():
    reg = NameRegistry(max_names=3, max_name_bytes=8)
    assert reg["entities"].setdefault(1, "a") == "a"
    assert reg["entities"].setdefault(1, "other") == "a"        # learnt once
    reg["entities"].setdefault(2, "é" * 5)                      # 10 bytes
    reg["metrics"][3] = "cpu"
    reg["metrics"].update({4: "mem", 5: "disk"})
    assert dict(reg["entities"]) == {1: "a"} and dict(reg["metrics"]) == {3: "cpu", 4: "mem"}
    assert reg.stats() == {"known": 3, "entities": 1, "metrics": 2, "max_names": 3,
                           "dropped_full": 1, "dropped_long": 1, "log_errors": 0}


def test_the_log_replays_cuts_a_torn_line_and_compacts(tmp_path):
    reg = NameRegistry(100, 64)
    assert reg.open_log(tmp_path) == 0
    reg["entities"].setdefault(1, "web-01")
    reg["metrics"].setdefault(2, "cpu")
    names, covered = reg.copy_for_snapshot()
    reg["entities"].setdefault(3, "db-01")
    reg.close_log()
    log = tmp_path / LOG_NAME
    with open(log, "ab") as f:
        f.write(b'{"k": "e", "i": 4, "n": "cut')              # a crash inside a write
    again = NameRegistry(100, 64)
    assert again.open_log(tmp_path) == 3
    assert dict(again["entities"]) == {1: "web-01", 3: "db-01"}
    assert log.read_bytes().endswith(b"\n")                  # the torn line is gone
    # Compaction keeps only what came after the snapshot's copy.
    again.compact_log(covered)
    again.close_log()
    third = NameRegistry(100, 64)
    assert third.open_log(tmp_path) == 1 and dict(third["entities"]) == {3: "db-01"}
    third.close_log()
    assert names == {"entities": {1: "web-01"}, "metrics": {2: "cpu"}}
