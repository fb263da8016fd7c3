"""``ringflow bench`` end to end (issue #5): the runner with fake contenders
(a right one, a wrong one, a crashing and a hanging one) and the CLI with
whatever real contenders exist."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.suite.base import Contender, RunResult, Workload
from engine.suite.runner import run_suite

ROOT = Path(__file__).resolve().parents[2]
HAS_MPL = importlib.util.find_spec("matplotlib") is not None


def _apply(workload: Workload, honest_order: bool) -> tuple[dict, np.ndarray, int, float]:
    t0 = time.perf_counter_ns()
    state: dict = {}
    stale = 0
    lat = np.empty(workload.n, np.int64)
    for i, (key, ts, metric, _flags, value) in enumerate(workload.events.tolist()):
        s = state.get((key, metric))
        if s is None:
            state[(key, metric)] = [1, value, value, value, value, ts]
        else:
            s[0] += 1
            s[1] += value
            s[2] = min(s[2], value)
            s[3] = max(s[3], value)
            if ts >= s[5]:
                s[4], s[5] = value, ts
            elif not honest_order:  # the bug under test: the older event wins
                s[4], s[5] = value, ts
                stale += 1
        lat[i] = time.perf_counter_ns() - t0 - int(workload.created_ns[i])
    seconds = (time.perf_counter_ns() - t0) / 1e9
    return {k: tuple(v) for k, v in state.items()}, np.maximum(lat, 1), stale, seconds


class RightDict(Contender):
    name = "single"
    description = "fake: one dict, one thread"
    tuning = "none"
    workers = 1
    single_threaded = True

    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        state, lat, stale, seconds = _apply(workload, True)
        return RunResult(self.name, seconds, state, lat, stale, producers=producers,
                         notes=f"{self.workers} workers")


class LastWriterWins(Contender):
    name = "last_writer_wins"
    description = "fake: lets an older event overwrite last"

    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        state, lat, stale, seconds = _apply(workload, False)
        return RunResult(self.name, seconds / 2, state, lat, stale, producers=producers)


class Boom(Contender):
    name = "boom"

    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        raise RuntimeError("boom on purpose")


class Crash(Contender):
    name = "crash"

    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        os._exit(3)


class Hang(Contender):
    name = "hang"

    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        time.sleep(60)
        raise AssertionError("unreachable")


@pytest.mark.timeout(180)
def test_runner_quick_end_to_end(tmp_path):
    out = tmp_path / "bench"
    results = run_suite(out_dir=out, quick=True, events=2000, seed=3, progress=False,
                        contenders={"single": RightDict(), "last_writer_wins": LastWriterWins()},
                        scaling_contenders=("single",), workers=[1, 2],
                        scaling_events=3000, scaling_repeats=2, repeats=3, contended=3)
    data = json.loads((out / "results.json").read_text())
    assert data["errors"] == [], data["errors"]
    host = data["host"]
    for k in ("cores", "cpu_model", "python", "numpy", "libzmq", "pyzmq", "platform"):
        assert host.get(k), k
    assert "git_commit" in host
    assert data["settings"]["events"] == 2000 and data["settings"]["seed"] == 3

    runs = {r["name"]: r for r in data["contenders"]["runs"]}
    assert runs["single"]["correct"], runs["single"]["mismatch_examples"]
    assert runs["single"]["status"] == "ok"
    assert runs["single"]["x_baseline"] == pytest.approx(1.0)
    wrong = runs["last_writer_wins"]
    assert not wrong["correct"] and wrong["status"] == "WRONG" and wrong["mismatches"] > 0
    assert wrong["stale_overwrites"] > 0
    # still WRONG whatever its speed, and its ratio is computed
    assert wrong["x_baseline"] == pytest.approx(
        wrong["events_per_s"] / runs["single"]["events_per_s"])
    assert wrong["x_baseline"] > 0
    for r in runs.values():
        assert r["p50_ms"] is not None and r["p99_ms"] >= r["p50_ms"]
        assert r["peak_rss_bytes"] > 0 and r["cpu_seconds"] >= 0
        assert r["events"] == 2000
    # the row is the median of the repeats
    rates = runs["single"]["repeat_events_per_s"]
    assert len(rates) == 3 and runs["single"]["events_per_s"] == sorted(rates)[1]
    # the baseline is one thread: only the others run contended
    contended = {r["name"]: r for r in data["contenders"]["contended"]}
    assert set(contended) == {"last_writer_wins"}
    assert contended["last_writer_wins"]["producers"] == 3
    assert len(contended["last_writer_wins"]["repeat_stale_overwrites"]) == 3
    hl = data["headline"]
    assert hl["stale_overwrites"]["last_writer_wins"] == max(
        wrong["repeat_stale_overwrites"] + contended["last_writer_wins"]["repeat_stale_overwrites"])
    assert hl["single_events_per_s"] == runs["single"]["events_per_s"]
    assert hl["ringflow_events_per_s"] is None and hl["x_single"] is None

    prod = data["producers"]
    assert prod["levels"] == [1, 4]
    assert set(prod["results"]) == {"single", "last_writer_wins"}
    assert prod["results"]["last_writer_wins"]["wrong"]

    sc = data["scaling"]["results"]["single"]
    assert [r["workers"] for r in sc] == [1, 2]
    assert sc[0]["efficiency"] == pytest.approx(1.0)
    assert len(sc[1]["repeat_events_per_s"]) == 2 and data["scaling"]["events"] == 3000

    report = (out / "report.md").read_text()
    assert "## Contenders" in report and "WRONG" in report and "x baseline" in report
    assert "## Producers" in report and "## Scaling" in report
    assert "## Targets" in report and "### Contended: 3 producers" in report
    if HAS_MPL:
        for png in ("throughput.png", "latency.png", "producers_p99.png", "scaling.png"):
            assert (out / png).stat().st_size > 1000, png
    else:
        assert "matplotlib is not installed" in report
    assert results["contenders"]["runs"][0]["name"] == "single"


@pytest.mark.timeout(180)
def test_runner_records_crashes_and_timeouts(tmp_path):
    t0 = time.monotonic()
    results = run_suite(out_dir=tmp_path, quick=True, events=500, only="contenders",
                        progress=False, timeout=3,
                        contenders={"single": RightDict(), "boom": Boom(), "crash": Crash(),
                                    "hang": Hang()})
    assert time.monotonic() - t0 < 60
    runs = {r["name"]: r for r in results["contenders"]["runs"]}
    assert runs["single"]["correct"]
    assert "boom on purpose" in runs["boom"]["error"] and runs["boom"]["status"] == "error"
    assert "crashed" in runs["crash"]["error"]
    assert "timeout" in runs["hang"]["error"]
    assert len(results["errors"]) == 3  # a design that failed alone is not run contended
    assert results["contenders"]["contended"] == []
    assert "ERROR" in (tmp_path / "report.md").read_text()


@pytest.mark.timeout(180)
def test_cli_bench_quick(tmp_path):
    out = tmp_path / "tmp"
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "bench", "--quick", "--events", "2000",
         "--only", "contenders", "--out", str(out), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    data = json.loads((out / "results.json").read_text())
    # 0 when every run completed (WRONG ones are findings); 1 when a contender
    # raised, crashed or timed out -- the others' contenders may be mid-work.
    assert proc.returncode == (1 if data["errors"] else 0), proc.stdout + proc.stderr
    assert str(out) in proc.stdout
    assert data["settings"]["sections"] == ["contenders"]
    assert data["host"]["cores"] == os.cpu_count()
    assert (out / "report.md").stat().st_size > 0
    if data["contenders"]["runs"]:
        assert "contenders, 1 producer" in proc.stdout
        assert "contenders, 2 producers" in proc.stdout
    if data["headline"]["x_single"] is not None:
        # a 2000-event run is too short to judge the targets
        assert "targets (issue #5)" in proc.stdout and "n/a (quick run)" in proc.stdout
        assert "MISSED" not in proc.stdout


def test_memo_check_computes_each_answer_once():
    from engine.suite.oracle import check, final_state
    from engine.suite.runner import _MemoCheck
    from engine.suite.workload import generate

    calls = []

    def counted(wl):
        calls.append(wl)
        return final_state(wl)

    memo = _MemoCheck(check, counted)
    wl = generate(events=500, hosts=10, seed=1)
    memo.prepare(wl)
    memo.prepare(wl)
    right = final_state(wl)
    assert memo(right, wl) == [] and len(calls) == 1
    wrong = dict(right)
    wrong.pop(next(iter(wrong)))
    assert memo(wrong, wl) and len(calls) == 1
    # a workload never prepared is checked the slow way, still correctly
    other = generate(events=500, hosts=10, seed=2)
    assert memo(right, other) != [] and memo(final_state(other), other) == []
    assert len(calls) == 1


def test_cli_bench_usage_errors():
    from engine.cli.main import build_parser

    p = build_parser()
    args = p.parse_args(["bench", "--only", "scaling", "--workers", "1,2,4,8,16"])
    assert args.only == ["scaling"] and args.workers == [1, 2, 4, 8, 16]
    for bad in (["bench", "--only", "nope"], ["bench", "--workers", "0,2"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)


def _results_for_targets(**settings):
    from engine.suite.runner import FULL_EVENTS, SECTIONS

    def row(name, rate, correct=(True, True, True), producers=1):
        return {"name": name, "producers": producers, "events_per_s": rate,
                "correct": all(correct), "repeat_correct": list(correct),
                "stale_overwrites": 0, "repeat_stale_overwrites": [0] * len(correct)}

    c = {"runs": [row("single", 1e6), row("global_lock", 1e6),
                  row("global_lock_per_event", 0.3e6), row("ringflow", 35e6)],
         "contended": [row("ringflow", 36e6, producers=4)]}
    from engine.suite.runner import _headline

    s = {"quick": False, "sections": list(SECTIONS), "events": FULL_EVENTS,
         "full_events": FULL_EVENTS, **settings}
    return {"settings": s, "contenders": c, "headline": _headline(c, "single"),
            "duration_s": 250.0}


def test_targets_are_judged_only_on_a_full_run():
    from engine.suite.report import target_rows

    rows = target_rows(_results_for_targets())
    assert [r[2] for r in rows] == ["MET", "MISSED", "MET", "MET", "counted", "MET"]
    assert [r[1] for r in rows[:3]] == ["36.0x", "36.0x", "120.0x"]  # best producer count
    for settings, why in (({"quick": True}, "n/a (quick run)"),
                          ({"sections": ["contenders"]}, "n/a (partial run)"),
                          ({"events": 2000}, "n/a (2,000 events)")):
        rows = target_rows(_results_for_targets(**settings))
        assert [r[2] for r in rows] == [why] * 4 + ["counted", why], settings


def test_ringflow_stale_target_rests_on_the_oracle():
    from engine.suite.report import target_rows

    res = _results_for_targets()
    res["contenders"]["contended"][0]["repeat_correct"] = [True, False, True]
    row = next(r for r in target_rows(res) if r[0].startswith("ringflow: zero stale"))
    assert row[1] == "a wrong state in 6 run(s)" and row[2] == "MISSED"


def test_headline_takes_the_most_stale_overwrites_of_any_run():
    res = _results_for_targets()
    opt = {"name": "optimistic", "producers": 4, "events_per_s": 5e5, "correct": False,
           "repeat_correct": [True, False, True], "stale_overwrites": 3,
           "repeat_stale_overwrites": [3, 9, 5]}
    from engine.suite.runner import _headline

    c = res["contenders"]
    c["contended"].append(opt)
    c["runs"].append({**opt, "producers": 1, "correct": True, "stale_overwrites": 0,
                      "repeat_correct": [True] * 3, "repeat_stale_overwrites": [0, 0, 0]})
    hl = _headline(c, "single")
    assert hl["stale_overwrites"]["optimistic"] == 9
    assert hl["stale_overwrites"]["ringflow"] == 0
