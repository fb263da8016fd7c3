"""The alert log's file (engine.journal.alertlog) and the in-memory log
(engine.health.alerts.AlertLog): numbering, topics, reading from a number,
what is missed, rotation, a torn or damaged tail, and a restart."""

from __future__ import annotations

import numpy as np
import pytest

from engine.core.records import ALERT_DTYPE
from engine.health.alerts import AlertLog, EngineAlert
from engine.journal.alertlog import AlertLogFile


def records(n: int, new: int = 3, key0: int = 1) -> np.ndarray:
    r = np.zeros(n, ALERT_DTYPE)
    r["key"] = np.arange(key0, key0 + n)
    r["new"] = new
    r["ts"] = np.arange(n)
    r["value"] = 0.5
    return r


def test_alerts_are_numbered_per_log_and_per_topic():
    log = AlertLog(100)
    assert log.append(records(3, new=3), worker=0)[0] == 1
    assert log.append(records(2, new=1), worker=1)[0] == 4
    engine_alert = log.append_engine(EngineAlert(0, "ok", "down", "why", 1, 0, 5))
    assert (engine_alert.seq, engine_alert.topic_seq) == (6, 1)
    nxt, got = log.read(0, 100)
    assert nxt == 6 and [a.seq for a in got] == [1, 2, 3, 4, 5, 6]
    assert [a.topic_seq for a in got] == [1, 2, 3, 1, 2, 1]
    assert [a.worker for a in got[:5]] == [0, 0, 0, 1, 1]
    assert isinstance(got[5], EngineAlert)
    assert log.topic_heads() == {"OK": 0, "WARN": 2, "STALE": 0, "CRIT": 3, "ENGINE": 1}
    nxt, got = log.read(2, 100, topics=["WARN", "ENGINE"])
    assert nxt == 6 and [a.seq for a in got] == [4, 5, 6]
    nxt, got = log.read(0, 2)
    assert nxt == 2 and [a.seq for a in got] == [1, 2]


def test_a_reader_too_far_behind_is_told_how_many_it_missed():
    log = AlertLog(16)
    for k in range(5):
        log.append(records(10, key0=10 * k), worker=0)
    assert (log.head, log.first) == (51, 35)
    assert log.missed(0) == 34 and log.missed(40) == 0
    nxt, got = log.read(0, 100)
    assert [a.seq for a in got] == list(range(35, 51)) and nxt == 50
    # A batch larger than the log keeps its newest alerts.
    log.append(records(40), worker=1)
    assert [a.seq for a in log.read(0, 100)[1]] == list(range(75, 91))


def test_the_file_brings_the_log_back_after_a_restart(tmp_path):
    f = AlertLogFile(tmp_path, capacity=100)
    log = AlertLog(100, file=f)
    log.append(records(3), worker=0)
    log.append_engine(EngineAlert(1, "ok", "hung", "slow", 7, 2, 9))
    log.append(records(2, new=2), worker=1)
    log.close()
    again = AlertLog(100, file=AlertLogFile(tmp_path, capacity=100))
    assert again.head == 7
    got = again.read(0, 100)[1]
    assert [a.seq for a in got] == [1, 2, 3, 4, 5, 6]
    assert got[3] == EngineAlert(1, "ok", "hung", "slow", 7, 2, 9, seq=4, topic_seq=1)
    assert again.topic_heads()["CRIT"] == 3 and again.topic_heads()["STALE"] == 2
    # Numbering goes on where it stopped.
    assert again.append(records(1), worker=0)[0] == 7
    assert again.read(6, 10)[1][0].topic_seq == 4
    again.close()


@pytest.mark.parametrize("damage", ["torn", "crc"])
def test_a_damaged_tail_is_cut_and_the_rest_kept(tmp_path, damage):
    log = AlertLog(100, file=AlertLogFile(tmp_path, capacity=100))
    log.append(records(3), worker=0)
    log.append(records(4), worker=0)
    log.close()
    path = tmp_path / "alerts" / "alerts.log"
    data = bytearray(path.read_bytes())
    if damage == "torn":
        data = data[:-5]
    else:
        data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    again = AlertLog(100, file=AlertLogFile(tmp_path, capacity=100))
    assert again.head == 4 and [a.seq for a in again.read(0, 100)[1]] == [1, 2, 3]
    assert again.append(records(1), worker=0)[0] == 4
    again.close()
    third = AlertLog(100, file=AlertLogFile(tmp_path, capacity=100))
    assert [a.seq for a in third.read(0, 100)[1]] == [1, 2, 3, 4]
    third.close()


def test_the_file_rotates_and_two_files_cover_the_log(tmp_path):
    log = AlertLog(10, file=AlertLogFile(tmp_path, capacity=10))
    for k in range(7):
        log.append(records(4, key0=4 * k), worker=0)
    log.close()
    files = sorted(p.name for p in (tmp_path / "alerts").iterdir())
    assert files == ["alerts.log", "alerts.log.1", "id"]
    size = sum(p.stat().st_size for p in (tmp_path / "alerts").iterdir() if p.name != "id")
    assert size < 3 * 10 * (ALERT_DTYPE.itemsize + 8) + 400
    again = AlertLog(10, file=AlertLogFile(tmp_path, capacity=10))
    assert again.head == 29
    assert [a.seq for a in again.read(0, 100)[1]] == list(range(19, 29))
    again.close()


def test_each_log_has_an_id_and_a_data_dir_keeps_it(tmp_path):
    # Numbers are comparable only within one log: an engine without a data
    # dir numbers from 1 again at each start, under a new id.
    assert AlertLog(10).log_id != AlertLog(10).log_id
    log = AlertLog(10, file=AlertLogFile(tmp_path, capacity=10))
    log.append(records(2), worker=0)
    log.close()
    again = AlertLog(10, file=AlertLogFile(tmp_path, capacity=10))
    assert again.log_id == log.log_id and again.head == 3
    assert again.query(0, 10)["log"] == log.log_id
    again.close()


def test_a_failed_write_cuts_the_file_back_and_retires_the_id(tmp_path, monkeypatch):
    import engine.journal.alertlog as alertlog

    f = AlertLogFile(tmp_path, capacity=100)
    log = AlertLog(100, file=f)
    log.append(records(2), worker=0)
    size = (tmp_path / "alerts" / "alerts.log").stat().st_size
    real_write = alertlog.os.write

    def short_write(fd, data):
        real_write(fd, data[:7])          # a torn frame, then the disk fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(alertlog.os, "write", short_write)
    seq, _ = log.append(records(3), worker=0)
    monkeypatch.setattr(alertlog.os, "write", real_write)
    # The running engine still serves the alerts; the file is cut back to
    # its last whole frame and written no more; the error is counted.
    assert seq == 3 and [a.seq for a in log.read(0, 10)[1]] == [1, 2, 3, 4, 5]
    assert (tmp_path / "alerts" / "alerts.log").stat().st_size == size
    assert log.file_errors == 1 and "No space" in f.error
    log.append(records(1), worker=0)
    assert log.file_errors == 2
    log.close()
    # Numbers 3.. will be given again after a restart: under a new id.
    again = AlertLog(100, file=AlertLogFile(tmp_path, capacity=100))
    assert again.head == 3 and again.log_id != log.log_id
    again.close()


def test_a_gap_in_what_a_start_reads_back_is_never_served_as_alerts(tmp_path):
    f = AlertLogFile(tmp_path, capacity=100)
    f.open()
    f.append_batch(1, 0, records(3), np.arange(1, 4, dtype=np.uint64))
    # Numbers 4..9 never reached the file (say, a write failed).
    f.append_batch(10, 1, records(2, new=2), np.arange(1, 3, dtype=np.uint64))
    f.close()
    log = AlertLog(100, file=AlertLogFile(tmp_path, capacity=100))
    assert log.head == 12 and log.first == 10
    got = log.query(0, 100)
    assert [a.seq for a in got["alerts"]] == [10, 11]
    assert got["missed"] == 9 and got["head"] == 11
    log.close()
