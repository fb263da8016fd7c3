"""The journal against real engines and real processes (issue 15,
docs/journal.md): a new engine on the data dir of one that closed, or whose
process was SIGKILLed, starts with exactly its state; a torn tail is cut and
counted; damage stops the start with the file and offset; a failing disk
holds events back instead of applying them unjournaled.

Signals go only to processes these tests started, by pid."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import engine
from engine.errors import ConfigError, EngineError, FlushTimeout
from engine.journal import wal
from engine.journal.recovery import shard_dir
from engine.journal.snapshot import list_snapshots
from tests.helpers import wait_for
from tests.integration.test_supervision import FAST, Ledger, batch, kill_worker, serving_again

pytestmark = pytest.mark.timeout(180)

RULES = {"rule": [{"metric": "cpu", "warn": 50, "crit": 90}]}
REPO = Path(__file__).resolve().parents[2]


def random_batches(seed: int, batches: int, now: int) -> list[np.ndarray]:
    """Batches of every size over 5,000 series: out-of-order event times
    across two minutes (late and stale events), readings crossing the WARN
    and CRIT thresholds, and 1% invalid events (time 0)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batches):
        n = int(rng.integers(1, 20_000))
        ev = np.zeros(n, engine.EVENT_DTYPE)
        ev["key"] = rng.integers(1, 5_000, n).astype(np.uint64)
        ev["metric"] = engine.metric_id("cpu")
        ev["ts"] = now - rng.integers(0, 120_000_000_000, n)
        ev["value"] = rng.integers(0, 100, n)
        ev["ts"][rng.random(n) < 0.01] = 0
        out.append(ev)
    return out


def rows(eng: engine.Engine) -> np.ndarray:
    return np.sort(eng.snapshot(), order=["key", "metric"])


def assert_same_rows(before: np.ndarray, after: np.ndarray) -> None:
    assert len(before) == len(after)
    for name in before.dtype.names:
        assert np.array_equal(before[name], after[name], equal_nan=True), name


def drop_snapshots(data_dir) -> int:
    """Delete a data dir's snapshots: the next start replays the whole
    journal, as after a crash before the first snapshot."""
    found = list_snapshots(data_dir)
    for path in found:
        path.unlink()
    return len(found)


def test_reopen_after_close_restores_every_row_exactly(tmp_path):
    cfg = dict(workers=2, data_dir=tmp_path, rules=RULES, ring_capacity=4096)
    with engine.Engine(**cfg) as eng:
        for ev in random_batches(15, 30, time.time_ns()):
            eng.submit(ev)
        eng.flush()
        before, stats = rows(eng), eng.stats()
        assert stats["journal"]["bytes"] > 32 * stats["applied"]
    # The journal alone (as if the engine had died before any snapshot).
    assert drop_snapshots(tmp_path) == 1
    with engine.Engine(**cfg) as eng:
        rec = eng.stats()["journal"]["recovered"]
        # Every event the workers took (invalid ones too: they were in the
        # spans) replayed; the rows bit for bit, versions included.
        assert rec["snapshot"] is None
        assert rec["events"] == stats["applied"] + stats["workers"][0]["invalid"] \
            + stats["workers"][1]["invalid"] + stats["rejected_table_full"]
        assert rec["torn_tails"] == 0
        assert_same_rows(before, rows(eng))
        assert eng.get(int(before["key"][0]), "cpu") is not None
    # The snapshot close() took: loaded, nothing left to replay.
    with engine.Engine(**cfg) as eng:
        rec = eng.stats()["journal"]["recovered"]
        assert rec["snapshot"]["series"] == len(before) and rec["events"] == 0
        assert_same_rows(before, rows(eng))
        # And the journal goes on: a further start sees both runs' events.
        ev = random_batches(16, 1, time.time_ns())[0]
        eng.submit(ev)
        eng.flush()
        before = rows(eng)
    with engine.Engine(**cfg) as eng:
        assert_same_rows(before, rows(eng))


def test_always_and_never_journal_as_interval_does(tmp_path):
    now = time.time_ns()
    for policy in ("always", "never"):
        cfg = dict(workers=2, data_dir=tmp_path / policy, fsync=policy)
        with engine.Engine(**cfg) as eng:
            for ev in random_batches(3, 5, now):
                eng.submit(ev)
            eng.flush()
            before = rows(eng)
            journal = eng.stats()["journal"]
            assert journal["fsync"] == policy and journal["lag"] == 0
            if policy == "never":
                assert journal["synced_ns"] == 0          # never synced by ringflow
            else:
                assert 0 < journal["synced_ns"] <= time.time_ns()
        with engine.Engine(**cfg) as eng:
            assert_same_rows(before, rows(eng))


def test_without_data_dir_nothing_is_journaled():
    with engine.Engine(workers=1) as eng:
        assert eng.stats()["journal"] is None and eng.recovery is None


# --- a SIGKILL of the embedding process --------------------------------

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import engine

    keys = np.arange(1, 65, dtype=np.uint64) + int(sys.argv[2])
    with engine.Engine(workers=2, data_dir=sys.argv[1], ring_capacity=1024) as eng:
        for i in range(1, 1_000_000):
            ev = np.zeros(64, engine.EVENT_DTYPE)
            ev["key"] = keys
            ev["metric"] = 7
            ev["ts"] = 1_700_000_000_000_000_000 + i
            ev["value"] = i % 5 + 1
            eng.submit(ev)
            eng.flush()
            print(i, flush=True)
""")


def _sum_of_first(c: int) -> float:
    """The sum of a series' values after batches 1..c of CHILD."""
    return float((np.arange(1, c + 1) % 5 + 1).sum())


def _remove_segments_of(pid: int) -> None:
    """The /dev/shm segments of a SIGKILLed engine (process pid, which
    this test started): nobody else will unlink them."""
    for name in engine.list_segments():
        if name.removeprefix("sm_").startswith(f"ringflow-{pid}-"):  # sm_: the info record
            try:
                os.unlink(f"/dev/shm/{name}")
            except FileNotFoundError:
                pass


def test_sigkill_of_the_embedding_process_loses_no_flushed_event(tmp_path):
    """Four rounds: an engine in a child process submits and flushes one
    batch at a time (an event for each of 64 series of its own) and reports
    each flush; it is SIGKILLed after a random number of them.  A new engine
    on the data dir holds every flushed batch exactly once and of the one in
    flight, per series, the event or nothing; and every earlier round's
    series exactly as the round after it found them."""
    rng = random.Random(15)
    known: dict[int, tuple[int, float]] = {}
    for round_ in range(4):
        key_base = 1000 * (round_ + 1)
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), str(key_base)],
                                stdout=subprocess.PIPE, text=True, cwd=REPO)
        try:
            target = rng.randrange(20, 1500)
            flushed = 0
            while flushed < target:
                line = proc.stdout.readline()
                assert line, f"the child exited early (rc {proc.poll()})"
                flushed = int(line)
            os.kill(proc.pid, signal.SIGKILL)
            # What it printed before it died was flushed too.
            for line in proc.stdout:
                flushed = int(line)
        finally:
            proc.kill()
            proc.wait(10)
            proc.stdout.close()
            _remove_segments_of(proc.pid)
        # The new engine waits for the orphaned workers to drain and exit:
        # they hold the data dir's lock with it.
        with engine.Engine(workers=2, data_dir=tmp_path, start_timeout=20) as eng:
            snap = eng.snapshot()
            got = {int(k): (int(c), float(s))
                   for k, c, s in zip(snap["key"], snap["count"], snap["sum"])}
        mine = {k: v for k, v in got.items() if key_base < k <= key_base + 64}
        assert len(mine) == 64
        for key, (count, total) in mine.items():
            assert count in (flushed, flushed + 1), (key, count, flushed)
            assert total == _sum_of_first(count), (key, count, total)
        for key, was in known.items():
            assert got[key] == was, key
        known.update(mine)


# --- what a crash or a bad disk leaves in the journal -------------------

def _journal_of(tmp_path, events_per_batch=(3000, 2000, 1000)) -> tuple[dict, np.ndarray]:
    """A closed engine's data dir with a few batches on one worker; returns
    its config and the rows it had."""
    cfg = dict(workers=1, data_dir=tmp_path)
    with engine.Engine(**cfg) as eng:
        now = time.time_ns()
        for seed, n in enumerate(events_per_batch):
            ev = batch(random.Random(seed), n, now + 10_000 * seed)
            eng.submit(ev)
            eng.flush()
        return cfg, rows(eng)


def _last_segment(tmp_path) -> Path:
    return sorted(shard_dir(tmp_path, 0).glob("*.wal"))[-1]


def test_a_torn_tail_is_cut_counted_and_the_rest_recovered(tmp_path):
    cfg, _ = _journal_of(tmp_path)
    drop_snapshots(tmp_path)
    seg = _last_segment(tmp_path)
    # A crash inside the last write: its frame cut short.
    os.truncate(seg, seg.stat().st_size - 100)
    with engine.Engine(**cfg) as eng:
        rec = eng.stats()["journal"]["recovered"]
        assert rec["torn_tails"] == 1 and rec["events"] == 5000
        torn = rec["shards"][0]["torn"]
        assert torn["path"] == str(seg) and torn["bytes"] == 1000 * 32 + 24 - 100
        assert eng.stats()["applied"] == 0 and sum(rows(eng)["count"]) == 5000
    # Cut for good: the next start finds a whole journal.
    with engine.Engine(**cfg) as eng:
        assert eng.recovery.torn_tails == 0 and sum(rows(eng)["count"]) == 5000


def test_damage_in_the_middle_stops_the_start_until_repaired(tmp_path):
    cfg, _ = _journal_of(tmp_path)
    drop_snapshots(tmp_path)
    seg = _last_segment(tmp_path)
    first_frame = wal.SEGMENT_HEADER.size
    data = bytearray(seg.read_bytes())
    data[first_frame + wal.FRAME.size + 100] ^= 0x10     # a bit flip in the first batch
    seg.write_bytes(bytes(data))
    with pytest.raises(wal.JournalCorrupt) as info:
        engine.Engine(**cfg)
    assert str(seg) in str(info.value) and f"byte {first_frame}" in str(info.value)
    assert info.value.offset == first_frame
    out = subprocess.run([sys.executable, "-m", "engine", "repair", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    with engine.Engine(**cfg) as eng:
        assert sum(rows(eng)["count"]) == 0 and eng.recovery.events == 0


def test_a_data_dir_serves_one_engine_with_its_worker_count(tmp_path):
    with engine.Engine(workers=1, data_dir=tmp_path):
        with pytest.raises(EngineError, match="in use by another engine"):
            engine.Engine(workers=1, data_dir=tmp_path, start_timeout=1)
    with pytest.raises(ConfigError, match="written by an engine of 1 workers"):
        engine.Engine(workers=2, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="fsync must be one of"):
        engine.Engine(workers=1, data_dir=tmp_path, fsync="sometimes")


def test_worker_kills_under_a_journal_leave_it_exactly_once(tmp_path):
    """Workers SIGKILLed while they journal and apply: a replacement
    journals again a span its predecessor died before recording as
    journaled, the duplicate frame is skipped on replay, and a new engine
    on the data dir holds every accepted event once."""
    rng = random.Random(1515)
    ledger = Ledger()
    cfg = dict(workers=2, data_dir=tmp_path, ring_capacity=8192, **FAST)
    with engine.Engine(**cfg) as eng:
        now = time.time_ns()
        for k in range(6):
            restarts = eng.stats()["workers"][k % 2]["restarts"]
            for _ in range(rng.randrange(5, 40)):
                ev = batch(rng, rng.choice([1, 7, 500, 4096, 20_000]), now)
                now += len(ev)
                eng.submit(ev)
                ledger.add(ev)
            kill_worker(eng, k % 2)
            wait_for(lambda w=k % 2, b=restarts: serving_again(eng, w, b + 1), 20,
                     "worker replaced")
        eng.flush()
        ledger.check(eng)
    with engine.Engine(**cfg) as eng:
        ledger.check(eng)


def test_a_failing_disk_holds_events_back_and_ingest_resumes(tmp_path):
    """A journal write that fails (injected: RLIMIT_FSIZE on the worker,
    so its next write gets EFBIG) is counted and shown; the events wait in
    their rings, unapplied (flush times out); once writes succeed again
    they are journaled and applied, and a restart holds them all."""
    ledger = Ledger()
    cfg = dict(workers=1, data_dir=tmp_path)
    with engine.Engine(**cfg) as eng:
        now = time.time_ns()
        ev = batch(random.Random(0), 1000, now)
        eng.submit(ev)
        ledger.add(ev)
        eng.flush()
        pid = eng.pids[0]
        size = _last_segment(tmp_path).stat().st_size
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
        try:
            ev = batch(random.Random(1), 1000, now + 1000)
            eng.submit(ev)
            ledger.add(ev)
            with pytest.raises(FlushTimeout):
                eng.flush(timeout=0.3)
            journal = wait_for(lambda: (j := eng.stats()["journal"])["failing"] and j, 10,
                               "the journal failing")
            assert journal["errors"] >= 1 and journal["error"] == os.strerror(27)   # EFBIG
            assert eng.stats()["applied"] == 1000
            # Reads go on meanwhile.
            assert eng.get(int(ev["key"][0]), int(ev["metric"][0])) is not None
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE,
                             (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        eng.flush(timeout=10)
        assert eng.stats()["journal"]["failing"] == 0
        ledger.check(eng)
    with engine.Engine(**cfg) as eng:
        ledger.check(eng)


# --- snapshots ------------------------------------------------------------

def test_periodic_snapshots_bound_the_journal_and_restore_exactly(tmp_path):
    """Snapshots every 100 ms while small segments roll: older segments are
    deleted (the data dir stays bounded), two snapshots are kept, and a new
    engine holds exactly the state."""
    ledger = Ledger()
    cfg = dict(workers=2, data_dir=tmp_path, segment_bytes=1 << 16,
               snapshot_interval="100ms")
    rng = random.Random(7)
    with engine.Engine(**cfg) as eng:
        now = time.time_ns()
        for _ in range(3):
            for _ in range(40):
                ev = batch(rng, 4096, now)
                now += len(ev)
                eng.submit(ev)
                ledger.add(ev)
            eng.flush()
            taken = eng.stats()["journal"]["snapshot"]
            wait_for(lambda t=taken: eng.stats()["journal"]["snapshot"] not in (None, t),
                     10, "a snapshot")
        journal = eng.stats()["journal"]
        assert journal["snapshot_error"] is None
        # 480 k events = 15 MiB of journal in 64 KiB segments: most are gone.
        segments = sum(len(list(shard_dir(tmp_path, w).glob("*.wal"))) for w in range(2))
        assert segments < 120, segments
        assert len(list_snapshots(tmp_path)) == 2
        ledger.check(eng)
    with engine.Engine(**cfg) as eng:
        ledger.check(eng)


def test_a_damaged_newest_snapshot_falls_back_to_the_one_before(tmp_path):
    ledger = Ledger()
    cfg = dict(workers=2, data_dir=tmp_path, snapshot_interval=None)
    rng = random.Random(8)
    now = time.time_ns()
    for _ in range(2):
        with engine.Engine(**cfg) as eng:
            for _ in range(10):
                ev = batch(rng, 2000, now)
                now += len(ev)
                eng.submit(ev)
                ledger.add(ev)
            eng.flush()
    older, newest = list_snapshots(tmp_path)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x01
    newest.write_bytes(bytes(data))
    with engine.Engine(**cfg) as eng:
        rec = eng.stats()["journal"]["recovered"]
        assert rec["snapshot"]["path"] == str(older)
        assert len(rec["snapshots_skipped"]) == 1 and "checksum" in rec["snapshots_skipped"][0]
        assert rec["events"] == 20_000          # the second run, from the journal
        ledger.check(eng)


SNAPSHOT_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import engine

    keys = np.arange(1, 65, dtype=np.uint64) + int(sys.argv[2])
    with engine.Engine(workers=2, data_dir=sys.argv[1], ring_capacity=1024,
                       snapshot_interval="100ms") as eng:
        # 100 k more series make each snapshot take a while to write.
        bulk = np.zeros(100_000, engine.EVENT_DTYPE)
        bulk["key"] = np.arange(100_000, dtype=np.uint64) + 10_000_000 + int(sys.argv[2]) * 1000
        bulk["metric"] = 8
        bulk["ts"] = 1_700_000_000_000_000_000
        eng.submit(bulk)
        eng.flush()
        for i in range(1, 1_000_000):
            ev = np.zeros(64, engine.EVENT_DTYPE)
            ev["key"] = keys
            ev["metric"] = 7
            ev["ts"] = 1_700_000_000_000_000_000 + i
            ev["value"] = i % 5 + 1
            eng.submit(ev)
            eng.flush()
            print(i, flush=True)
""")


def _writing(data_dir: Path, share: float) -> bool:
    """A snapshot's temporary file holds at least ``share`` of the size of
    the newest snapshot now."""
    try:
        done = list_snapshots(data_dir)
        at = share * done[-1].stat().st_size if done else 0
    except FileNotFoundError:      # pruned under us: look again
        return False
    for tmp in data_dir.glob(".snapshot-*.tmp"):
        try:
            if tmp.stat().st_size >= at:
                return True
        except FileNotFoundError:
            pass
    return False


def test_sigkill_during_a_snapshot_write_uses_the_previous_one(tmp_path):
    """Three rounds: the engine in a child is SIGKILLed while a snapshot is
    being written (its temporary file exists), after a random further
    delay.  The next start never loads the torn file, and holds every
    flushed batch exactly once."""
    rng = random.Random(1515)
    known: dict = {}
    for round_ in range(3):
        key_base = 1000 * (round_ + 1)
        proc = subprocess.Popen([sys.executable, "-c", SNAPSHOT_CHILD, str(tmp_path),
                                 str(key_base)],
                                stdout=subprocess.PIPE, text=True, cwd=REPO)
        flushed = [0]

        def read(proc=proc, flushed=flushed) -> None:
            for line in proc.stdout:
                flushed[0] = int(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            wait_for(lambda f=flushed: f[0] >= 20, 60, "the child flushing")
            # A snapshot after the first one, killed once its temporary
            # file holds a random share of what the last one took: a
            # random point of the write (or of its fsync).
            wait_for(lambda r=round_: len(list_snapshots(tmp_path)) >= 1 + (r > 0), 60,
                     "a first snapshot")
            share = rng.random()
            wait_for(lambda s=share: _writing(tmp_path, s), 60, "a snapshot being written",
                     every=0.0002)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(10)
            reader.join(10)
            proc.stdout.close()
            _remove_segments_of(proc.pid)
        with engine.Engine(workers=2, data_dir=tmp_path, start_timeout=20) as eng:
            rec = eng.recovery
            # The torn file was never loaded, and is gone.
            assert rec.snapshot is not None and ".tmp" not in rec.snapshot["path"]
            assert any("interrupted write" in s for s in rec.snapshots_skipped)
            assert not list(tmp_path.glob(".snapshot-*.tmp"))
            snap = eng.snapshot()
            got = {int(k): (int(c), float(s)) for k, c, s, m in
                   zip(snap["key"], snap["count"], snap["sum"], snap["metric"]) if m == 7}
        mine = {k: v for k, v in got.items() if key_base < k <= key_base + 64}
        assert len(mine) == 64
        for key, (count, total) in mine.items():
            assert count in (flushed[0], flushed[0] + 1), (key, count, flushed[0])
            assert total == _sum_of_first(count), (key, count, total)
        for key, was in known.items():
            assert got[key] == was, key
        known.update(mine)


# --- names ----------------------------------------------------------------

def test_names_survive_a_close_and_a_sigkill_and_stay_bounded(tmp_path):
    cfg = dict(workers=1, data_dir=tmp_path, max_names=50, max_name_bytes=16)
    with engine.Engine(**cfg) as eng:
        eng.register_names(entities=["web-01", "db-01"], metrics=["cpu"])
        eng.register_names(entities=["x" * 17])                       # too long
        eng.register_names(entities=[f"host-{i}" for i in range(100)])  # past max_names
        names = eng.stats()["names"]
        assert names["known"] == 50 and names["dropped_long"] == 1
        assert names["dropped_full"] == 100 - (50 - 3)
        known = {k: dict(v) for k, v in eng.names.items()}
    with engine.Engine(**cfg) as eng:
        # From the snapshot close() took.
        assert {k: dict(v) for k, v in eng.names.items()} == known
        assert eng.recovery.snapshot is not None
    # Learnt after the last snapshot, then SIGKILL: from the names log.
    child = textwrap.dedent("""
        import os, signal, sys
        import engine
        eng = engine.Engine(workers=1, data_dir=sys.argv[1], max_names=60,
                            max_name_bytes=16, snapshot_interval=None)
        eng.register_names(entities=["late-01"])
        print("registered", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait(10)
        _remove_segments_of(proc.pid)
    assert "registered" in out and proc.returncode == -signal.SIGKILL
    with engine.Engine(**{**cfg, "max_names": 60}, start_timeout=20) as eng:
        late = engine.entity_id("late-01")
        assert late not in known["entities"]
        assert eng.names["entities"][late] == "late-01"
        assert eng.recovery.names == 1


def test_acked_ingest_says_unavailable_while_the_journal_fails(tmp_path):
    """Served, with a journal: while a worker's journal writes fail, acked
    messages are answered unavailable with the reason and nothing of them
    is taken; queries go on; once writes succeed, acks are ok again and a
    restart holds exactly what was acked ok."""
    import zmq

    from engine.net import protocol as P
    from tests.helpers import served_engine

    acked_ok = Ledger()
    with served_engine({"data_dir": tmp_path, "workers": 1}, ack_timeout=1.0) as (eng, urls, ctx):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(urls["acked"])

        def ask(ev) -> dict:
            sock.send(P.pack_events(ev))
            assert sock.poll(20_000), "no reply"
            return json.loads(sock.recv())

        now = time.time_ns()
        ev = batch(random.Random(0), 500, now)
        assert ask(ev)["ok"]
        acked_ok.add(ev)
        pid = eng.pids[0]
        size = _last_segment(tmp_path).stat().st_size
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
        try:
            # The first message is taken, and waits: its round is answered
            # unavailable once ack_timeout passes (taken, not acked).
            ev = batch(random.Random(1), 500, now + 500)
            first = ask(ev)
            assert not first["ok"] and first["reason"] == "unavailable"
            assert "journal" in first["error"] and first["handled"] == 500, first
            pending = ev
            # From then on the failure is known: nothing is taken at all.
            later = ask(batch(random.Random(2), 500, now + 1000))
            assert later["reason"] == "unavailable" and later["handled"] == 0, later
            assert "File too large" in later["error"], later
            with engine.Client(ports={k: int(v.rsplit(":", 1)[1]) for k, v in urls.items()},
                               timeout=10) as c:
                assert c.ping() >= 0           # queries go on
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE,
                             (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        wait_for(lambda: eng.stats()["journal"]["failing"] == 0, 10, "the journal writing again")
        ev = batch(random.Random(3), 500, now + 1500)
        assert ask(ev)["ok"]
        acked_ok.add(ev)
        eng.flush()
        # The message taken while the disk failed was applied once it could
        # be journaled (it was answered unavailable: taken, not acked).
        acked_ok.add(pending)
        acked_ok.check(eng)
        sock.close()
    with engine.Engine(workers=1, data_dir=tmp_path) as eng:
        acked_ok.check(eng)


def test_alert_numbers_and_the_alert_log_survive_a_restart(tmp_path):
    """With a data dir the alert log is on disk: after a restart the alerts
    of the previous run are still there under the same numbers, a consumer
    asks for them by number, and new alerts go on from the last one."""
    rules = {"rule": [{"metric": "cpu", "crit": 2.0, "clear": 0.5}]}
    ts = 1_732_300_000_000_000_000
    flips = engine.make_events([7] * 6, "cpu", ts + np.arange(6), [3.0, 0.0] * 3)
    with engine.Engine(workers=2, rules=rules, data_dir=tmp_path) as eng:
        eng.submit(flips)
        eng.flush()
        wait_for(lambda: eng.stats()["alert_log"]["head"] == 6, 10, "six alerts logged")
        before = [(a.seq, a.new, a.ts) for a in eng.alerts_since(0)["alerts"]]
    assert [s for s, _, _ in before] == [1, 2, 3, 4, 5, 6]
    with engine.Engine(workers=2, rules=rules, data_dir=tmp_path) as eng:
        got = eng.alerts_since(2)
        assert [(a.seq, a.new, a.ts) for a in got["alerts"]] == before[2:]
        assert got["topic_heads"]["CRIT"] == 3 and got["missed"] == 0
        with eng.alerts(timeout=10) as stream:
            eng.submit(engine.make_events([7], "cpu", [ts + 10], [3.0]))
            eng.flush()
            a = next(stream)
        assert (a.seq, a.topic_seq, a.old, a.new) == (7, 4, "OK", "CRIT")
