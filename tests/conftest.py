"""Suite-wide guards: after every test, no worker process and no shared-memory
segment of ours may be left behind."""

from __future__ import annotations

import os
import time

import psutil
import pytest
from hypothesis import HealthCheck, settings

import engine

settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("ci")


def _our_workers() -> list[psutil.Process]:
    me = psutil.Process(os.getpid())
    found = []
    for child in me.children(recursive=True):
        try:
            if "engine.core.workermain" in " ".join(child.cmdline()):
                found.append(child)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return found


def _our_segments() -> set[str]:
    # Segment names carry the creator's pid: other ringflow users of this
    # machine (a benchmark running beside the tests) are not our leaks.
    return {n for n in engine.list_segments()
            if n.removeprefix("sm_").startswith(f"ringflow-{os.getpid()}-")}


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail a test that leaves a worker process or a /dev/shm segment."""
    before = _our_segments()
    yield
    deadline = time.monotonic() + 5
    while _our_workers() and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = _our_workers()
    leaked = sorted(_our_segments() - before)
    for p in workers:
        p.kill()
    assert not workers, f"worker processes left running: {[p.pid for p in workers]}"
    assert not leaked, f"shared-memory segments left behind: {leaked}"
