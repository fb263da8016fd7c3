"""The pieces around worker faults that need no process (docs/faults.md):
ENGINE alerts and how they are shown and subscribed to, how an exit is
described, the supervision settings' validation, and WorkerDied's message."""

from __future__ import annotations

import json
import signal

import pytest

from engine.cli import render
from engine.core.config import EngineConfig
from engine.errors import ConfigError, WorkerDied
from engine.health.alerts import ENGINE_TOPIC, Alert, EngineAlert
from engine.net.subscriptions import _alert_topics
from engine.supervise.supervisor import describe_exit


def test_an_engine_alert_has_its_own_topic_and_json():
    a = EngineAlert(1, "ok", "down", "worker 1 (pid 42) was killed by signal 9 (SIGKILL)",
                    42, 0, 1_700_000_000_000_000_000)
    assert a.topic == ENGINE_TOPIC == "ENGINE"
    d = json.loads(json.dumps(a.to_dict()))
    assert d == {"topic": "ENGINE", "worker": 1, "old": "ok", "new": "down",
                 "cause": a.cause, "pid": 42, "restarts": 0, "ts": a.ts, "seq": 0,
                 "topic_seq": 0}
    assert str(a) == f"ENGINE worker 1: ok -> down ({a.cause})"
    series = Alert("web-1", "cpu", 1, 2, "OK", "CRIT", "last", 0.9, 0, 0)
    assert series.topic == "CRIT"


def test_ringflow_alerts_prints_an_engine_line():
    line = render.engine_alert_line({"topic": "ENGINE", "worker": 0, "old": "hung",
                                     "new": "down", "cause": "no progress; killed",
                                     "ts": 1_700_000_000_000_000_000})
    assert line.endswith("ENGINE worker 0: hung -> down (no progress; killed)")
    assert line.startswith(render.local_time(1_700_000_000_000_000_000))


def test_every_status_filter_also_hears_engine_and_missed():
    assert _alert_topics(None) == [b""]
    assert _alert_topics("CRIT") == [b"CRIT", b"MISSED", b"ENGINE"]
    assert _alert_topics(["warn", "CRIT"]) == [b"WARN", b"CRIT", b"MISSED", b"ENGINE"]


def test_exits_are_described_for_people():
    assert describe_exit(-signal.SIGKILL) == "was killed by signal 9 (SIGKILL)"
    assert describe_exit(70) == "exited with code 70"
    assert describe_exit(None) == "is still running"
    assert "unknown" in describe_exit(-200)


def test_supervision_settings_are_checked():
    cfg = EngineConfig(worker_timeout="3s", max_restarts=2, stable_after="0.5s",
                       restart_backoff=0)
    assert cfg.worker_timeout_ns == 3 * 10**9 and cfg.stable_after_ns == 5 * 10**8
    with pytest.raises(ConfigError, match="must exceed the tick"):
        EngineConfig(worker_timeout="200ms")            # tick is 250 ms
    with pytest.raises(ConfigError, match="max_restarts"):
        EngineConfig(max_restarts=-1)
    with pytest.raises(ConfigError, match="restart_backoff"):
        EngineConfig(restart_backoff=-1)


def test_worker_died_says_why_the_engine_cannot_go_on():
    exc = WorkerDied(1, 70, 42, cause="worker 1 exited with code 70; not restarted",
                     accepted=5, handled=6)
    assert str(exc) == "shard 1 is degraded: worker 1 exited with code 70; not restarted"
    assert (exc.worker, exc.exitcode, exc.pid, exc.accepted, exc.handled) == (1, 70, 42, 5, 6)
    assert "killed by signal 9" in str(WorkerDied(0, -9, 7))
