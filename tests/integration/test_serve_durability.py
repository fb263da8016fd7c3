"""``ringflow serve`` with a data dir, SIGKILLed under acked ingest (issue
15): after each restart every acknowledged message is there exactly once,
and of the message in flight each series has its event or nothing.

The server runs as a subprocess this test started and is signalled by pid;
its orphaned workers drain their rings and exit, and the restarted server
waits for them (they hold the data dir's lock)."""

from __future__ import annotations

import json
import os
import random
import signal
import threading

import numpy as np
import pytest
import zmq

import engine
from engine.errors import EngineError
from engine.net import protocol as P
from tests.helpers import free_ports, wait_for
from tests.integration.test_cli import SMALL, Server, ports_arg, ringflow

pytestmark = pytest.mark.timeout(300)

SERIES = 64


def _message(key_base: int, i: int) -> np.ndarray:
    ev = np.zeros(SERIES, engine.EVENT_DTYPE)
    ev["key"] = np.arange(1, SERIES + 1, dtype=np.uint64) + key_base
    ev["metric"] = 7
    ev["ts"] = 1_700_000_000_000_000_000 + i
    ev["value"] = i % 5 + 1
    return ev


def _sum_of_first(c: int) -> float:
    return float((np.arange(1, c + 1) % 5 + 1).sum())


def _start(data_dir, fsync: str, ports: list[int]) -> Server:
    args = [a for a in SMALL if a not in ("--data-dir", "none")]
    srv = Server([*args, "--data-dir", str(data_dir), "--fsync", fsync], ports)
    srv.wait_ready(60)
    return srv


def _kill(srv: Server, workers_too: bool) -> None:
    """SIGKILL the server (our child, by pid), and with ``workers_too`` its
    workers (started by it, pids from its output) right after, as a kill
    of the whole service would; then remove its segments."""
    workers = srv.worker_pids() if workers_too else []
    os.kill(srv.pid, signal.SIGKILL)
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    srv.proc.wait(10)
    srv._reader.join(10)
    for name in engine.list_segments():
        if name.removeprefix("sm_").startswith(f"ringflow-{srv.pid}-"):  # sm_: the info record
            try:
                os.unlink(f"/dev/shm/{name}")
            except FileNotFoundError:
                pass


def _rows(ports: list[int]) -> dict[int, tuple[int, float]]:
    with engine.Client(ports=dict(zip(("ingest", "acked", "query", "alerts"), ports)),
                       timeout=10) as c:
        keys = np.array(sorted(_all_keys), np.uint64)
        rows = c.lookup(keys, np.full(len(keys), 7, np.uint32))
    return {int(k): (int(r["count"]), float(r["sum"])) for k, r in zip(keys, rows)}


_all_keys: set[int] = set()


def _resend(port: int, events: np.ndarray, producer: int, seq: int) -> dict:
    """One acked frame of ``producer`` with sequence ``seq``, raw."""
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://127.0.0.1:{port}")
        sock.send(P.pack_events(events, (producer, seq)))
        assert sock.poll(10_000), "no reply"
        return json.loads(sock.recv())
    finally:
        ctx.destroy(linger=0)


def run_rounds(tmp_path, fsync: str, rounds: int, seed: int) -> list[dict]:
    """Rounds of acked ingest, a SIGKILL, a restart; returns the sender's
    retries and duplicates of each round."""
    rng = random.Random(seed)
    retries: list[dict] = []
    ports = free_ports()
    urls = dict(zip(("ingest", "acked", "query", "alerts"), ports))
    known: dict[int, tuple[int, float]] = {}
    _all_keys.clear()
    srv = _start(tmp_path, fsync, ports)
    try:
        for round_ in range(rounds):
            key_base = 1000 * (round_ + 1)
            _all_keys.update(range(key_base + 1, key_base + SERIES + 1))
            state = {"acked": 0, "error": None, "retried": 0, "duplicates": 0}
            stop = threading.Event()

            def sender(key_base=key_base, state=state, stop=stop) -> None:
                # A producer as an application would run one: the message
                # in flight when the server dies gets no reply, and the
                # client sends it again, same sequence, until the restarted
                # server answers.
                try:
                    with engine.Client(ports=urls, timeout=2) as c:
                        c.ack_retries = 30
                        state["producer"] = c.producer_id
                        for i in range(1, 100_000):
                            if stop.is_set():
                                return
                            c.send(_message(key_base, i), ack=True)
                            state["acked"] = i
                            state["retried"], state["duplicates"] = c.retried, c.duplicates
                except EngineError as exc:
                    state["error"] = exc

            thread = threading.Thread(target=sender, daemon=True)
            thread.start()
            target = rng.randrange(20, 600)
            wait_for(lambda s=state, t=target, th=thread: s["acked"] >= t or not th.is_alive(),
                     60, "acked messages")
            assert thread.is_alive(), state
            # Odd rounds kill the workers too: then nothing but the journal
            # holds what was acked.
            _kill(srv, workers_too=round_ % 2 == 1)
            before = state["acked"]
            srv = _start(tmp_path, fsync, ports)
            assert "recovered" in srv.output, srv.output
            # The sender goes on against the restarted server, its message
            # in flight retried; then it stops between two messages.
            wait_for(lambda s=state, b=before, th=thread: s["acked"] >= b + 5
                     or not th.is_alive(), 60, "acks after the restart")
            stop.set()
            thread.join(30)
            assert not thread.is_alive() and state["error"] is None, state
            assert state["retried"] >= 1, state
            acked = state["acked"]
            retries.append(state)
            # A message acked before the kill, sent again under its
            # sequence: the restarted server knows it from the journal and
            # answers it as a duplicate, applying nothing.
            for seq in (before, acked):
                reply = _resend(urls["acked"], _message(key_base, seq), state["producer"], seq)
                assert reply["ok"] and reply["duplicate"], (seq, reply)
            if round_ == 0:
                # The restarted server says where its state came from.
                status = ringflow("status", "--ports", ports_arg(ports))
                assert status.returncode == 0, status.stderr
                assert "state recovered from the journal at" in status.stdout
                assert "every series is OK" not in status.stdout
                stats = ringflow("stats", "--ports", ports_arg(ports))
                assert f"journal: {tmp_path}, fsync={fsync}" in stats.stdout, stats.stdout
                assert "recovered" in stats.stdout
            got = _rows(ports)
            for key in range(key_base + 1, key_base + SERIES + 1):
                # Exactly once: the retried message too, in every shard.
                count, total = got[key]
                assert count == acked, (key, count, acked)
                assert total == _sum_of_first(count), (key, count, total)
            for key, was in known.items():
                assert got[key] == was, key
            known.update({k: got[k] for k in range(key_base + 1, key_base + SERIES + 1)})
    finally:
        srv.stop(signal.SIGTERM)
    return retries


@pytest.mark.parametrize("fsync", ["always", "interval"])
def test_sigkill_of_serve_loses_no_acked_message(tmp_path, fsync):
    run_rounds(tmp_path, fsync, 3, 15 if fsync == "always" else 16)


@pytest.mark.slow
@pytest.mark.parametrize("fsync", ["always", "interval"])
def test_sigkill_of_serve_ten_times(tmp_path, fsync):
    run_rounds(tmp_path, fsync, 10, 150 if fsync == "always" else 160)
