"""Ingest throughput through the ZeroMQ gateway, by events per frame.

An engine with 2 workers and 100k series serves its gateway
(``Engine.serve``) on free TCP ports of 127.0.0.1.  A sender in another
process (multiprocessing, spawn) connects a PUSH socket to the gateway's
PULL endpoint and sends binary frames (``engine.net.protocol.pack_events``) of
1, 64 or 4096 events.  The rate is taken on the engine's side: this process
polls ``Engine.stats()["applied"]`` (every ms) and times from the first
applied event of a repeat to the last one.  Median of the repeats, after an
untimed warm-up round that also sizes the repeats (``--seconds`` each).

Two senders, each measured in the same run:

* ``send_copies``: ``engine._wire.send_copies`` sends a frame N times from C
  (the load generator: it measures the gateway, not the sender's Python);
* ``pyzmq loop``: a plain Python ``for`` loop of ``socket.send(frame)``.

Also the acked endpoint (DEALER -> ROUTER; the sender keeps ``--window``
messages outstanding and sends one more per reply) at 4096 events per frame.

With ``--jsonl`` (``--json PATH`` is every benchmark's report file), JSON
lines as well, in the same run: type-2 frames of ``--jsonl-batch`` lines
(names for entity and metric, integer ts, as a collector writes them) from
the same sender beside the binary rows (ratio: JSON lines/s / binary
events/s at 4096 events per frame); the gateway's decoder alone
(``JsonLinesDecoder.decode`` in this process, and the line-by-line
reference path it falls back to); and ``ringflow send FILE.jsonl`` in a
subprocess against the same gateway (lines/s applied, and as the command
reports it).  Target: >= 1 M lines/s for each.

Baselines, same run: ``Engine.submit`` + ``flush`` in this process (the
embedded engine, batches of 4096: gateway / embedded ratio) and the
pure-Python dict-of-series fold (``common.python_fold``).

Targets: >= 40 M events/s with 4096 events per frame; >= 1 M events/s with
one event per message (both with the send_copies sender).

    python bench/gateway.py                  # 1, 64, 4096 events per frame; acked windows 1, 16
    python bench/gateway.py --quick
    python bench/gateway.py --batches 1,16,256,4096 --window 4,64 --repeats 7
    python bench/gateway.py --jsonl --batches 4096 --no-python-sender --window 16
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil
import zmq

import engine
from engine import _wire
from engine.net import protocol as P

try:
    import common as C
except ImportError:  # pragma: no cover
    from bench import common as C

TARGET_RATES = {4096: 40e6, 1: 1e6}
ENDPOINT_NAMES = ("ingest", "acked", "query", "alerts")
#: Distinct events a sender cycles through (8 MB at 32 bytes each).
DISTINCT_EVENTS = 1 << 18
#: Frames per send_copies call: about 256 events' worth, at least one frame.
COPIES_EVENTS = 256
STALL_S = 10.0


# --- helpers shared with query.py ------------------------------------------------


def free_endpoints(host: str = "127.0.0.1") -> dict:
    """Gateway endpoints on four free loopback ports (the defaults, 7710-7713,
    may be taken by a running server)."""
    return {name: f"tcp://{host}:{port}"
            for name, port in zip(ENDPOINT_NAMES, C.free_ports(len(ENDPOINT_NAMES)))}


def replay_events(n: int, series: int, seed: int, newest: int,
                  late_fraction: float = 0.01) -> np.ndarray:
    """``n`` events over ``series`` series for a sender that replays them.

    A sender that sends the same frames over and over cannot move event
    times forward, so a replayed ``gen_events`` stream would be almost all
    stale events (a cheaper path through the kernel).  Here every event
    carries the same, newest time (an event as new as the series' last one
    is not stale) except ``late_fraction`` of them, moved back by up to
    10 ms: on every replay those, and only those, are stale, as in the
    other benchmarks' streams.  ``newest`` must be past every event time
    the engine has seen.
    """
    ev = C.gen_events(n, series, seed, late_fraction=0.0)
    rng = np.random.default_rng(seed + 1)
    ts = np.full(n, newest, np.int64)
    late = rng.random(n) < late_fraction
    ts[late] -= rng.integers(1, 10_000_000, int(late.sum()))
    ev["ts"] = ts
    return ev


def stop_process(proc, conn=None, timeout: float = 10.0) -> None:
    """Ask a helper process to stop, then make sure it is gone."""
    if conn is not None:
        try:
            conn.send(("stop",))
        except (OSError, EOFError, BrokenPipeError):
            pass
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join(5)
    if conn is not None:
        conn.close()


def check_children(con=None) -> list[int]:
    """Child processes of this one still alive (should be none after a run)."""
    left = []
    for proc in psutil.Process().children(recursive=True):
        try:
            # multiprocessing's resource tracker lives as long as this process.
            if proc.is_running() and "resource_tracker" not in " ".join(proc.cmdline()):
                left.append(proc.pid)
        except psutil.Error:
            pass
    if left and con is not None:
        con.print(f"[red]warning: child processes left behind: {left}[/]")
    return left


# --- the sender process ---------------------------------------------------------------


def _sender_main(conn, endpoints: dict, nice: int = 0) -> None:
    """A load generator in its own process, driven by commands on ``conn``."""
    if nice:
        os.nice(nice)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(endpoints["ingest"])
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(endpoints["acked"])
    frames: list[bytes] = []
    copies = 1
    try:
        conn.send(("ready",))
        while True:
            cmd = conn.recv()
            op = cmd[0]
            if op == "stop":
                return
            if op == "load":
                events, batch = cmd[1], cmd[2]
                frames = [P.pack_events(events[i:i + batch])
                          for i in range(0, len(events) - batch + 1, batch)]
                copies = max(1, COPIES_EVENTS // batch)
                conn.send(("loaded", len(frames)))
            elif op == "load_json":
                # Bodies of JSON lines, the same number of lines each.
                frames = [P.pack_json_body(body) for body in cmd[1]]
                copies = 1
                conn.send(("loaded", len(frames)))
            elif op == "c":
                conn.send(_send_c(push, frames, copies, cmd[1]))
            elif op == "py":
                conn.send(_send_py(push, frames, cmd[1]))
            elif op == "acked":
                conn.send(_send_acked(dealer, frames, cmd[1], cmd[2]))
            elif op == "blast":
                conn.send(_blast(push, frames, copies, conn, cmd[1] if len(cmd) > 1 else None))
    finally:
        push.close(linger=1000)
        dealer.close(linger=0)
        ctx.term()


def _send_c(sock, frames: list[bytes], copies: int, n: int) -> dict:
    """``n`` frames with send_copies: each frame ``copies`` times in a row,
    cycling through the distinct frames."""
    send_copies, addr = _wire.send_copies, sock.underlying
    sent = 0
    t0 = time.perf_counter()
    while sent < n:
        for f in frames:
            k = min(copies, n - sent)
            got = send_copies(addr, f, k)
            sent += got
            if got < k or sent >= n:
                break
        else:
            continue
        break
    return {"sent": sent, "seconds": time.perf_counter() - t0}


def _send_py(sock, frames: list[bytes], n: int) -> dict:
    """``n`` frames from a plain Python loop of ``socket.send``."""
    send = sock.send
    sent = 0
    t0 = time.perf_counter()
    while sent < n:
        chunk = frames[:n - sent]
        for f in chunk:
            send(f)
        sent += len(chunk)
    return {"sent": sent, "seconds": time.perf_counter() - t0}


def _blast(sock, frames: list[bytes], copies: int, conn, rate: float | None = None) -> dict:
    """Send frames with send_copies as fast as they go (or at ``rate``
    frames/s) until a message arrives on ``conn`` (which is consumed: it
    means stop)."""
    send_copies, addr = _wire.send_copies, sock.underlying
    sent = 0
    t0 = time.perf_counter()
    while not conn.poll():
        if rate is not None:
            ahead = sent / rate - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(min(ahead, 0.01))
                continue
        for f in frames[(sent // copies) % len(frames):][:8]:
            sent += send_copies(addr, f, copies)
    conn.recv()
    return {"sent": sent, "seconds": time.perf_counter() - t0}


def _send_acked(sock, frames: list[bytes], window: int, n: int) -> dict:
    """``n`` frames on the acked endpoint with at most ``window`` unanswered."""
    send_copies, addr = _wire.send_copies, sock.underlying
    nf = len(frames)
    sent = replies = accepted = errors = 0
    t0 = time.perf_counter()
    while sent < min(window, n):
        sent += send_copies(addr, frames[sent % nf], 1)
    while replies < n:
        got = [sock.recv()]
        while True:
            try:
                got.append(sock.recv(zmq.NOBLOCK))
            except zmq.Again:
                break
        for msg in got:
            reply = json.loads(msg)
            if reply.get("ok"):
                accepted += reply["accepted"]
            else:
                errors += 1
                accepted += reply.get("accepted", 0)
        replies += len(got)
        for _ in range(min(len(got), n - sent)):
            sent += send_copies(addr, frames[sent % nf], 1)
    return {"sent": sent, "replies": replies, "accepted": accepted, "errors": errors,
            "seconds": time.perf_counter() - t0}


class Sender:
    """The sender process and its command pipe."""

    def __init__(self, endpoints: dict, nice: int = 0) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_sender_main, args=(child, endpoints, nice), daemon=True,
                                name="ringflow-bench-sender")
        self.proc.start()
        child.close()
        if not self.conn.poll(60):
            raise RuntimeError("the sender process did not start")
        self.conn.recv()

    def load(self, events: np.ndarray, batch: int) -> int:
        self.conn.send(("load", events, batch))
        return self.conn.recv()[1]

    def blast(self, rate: float | None = None) -> None:
        """Start sending the loaded frames as fast as they go, or at
        ``rate`` frames/s (see pause)."""
        self.conn.send(("blast", rate))

    def pause(self) -> dict:
        """Stop a blast; returns frames sent and seconds."""
        self.conn.send(("pause",))
        if not self.conn.poll(STALL_S):
            raise RuntimeError("the sender did not stop")
        return self.conn.recv()

    def close(self) -> None:
        stop_process(self.proc, self.conn)


# --- measurements ------------------------------------------------------------------


def measure(eng, sender: Sender, cmd: tuple, events: int) -> dict:
    """Send ``cmd`` to the sender and time ``events`` applied events, from
    the first one seen applied to the last (polling ``Engine.stats``)."""
    pids = [sender.proc.pid]
    me = psutil.Process()
    base = eng.stats()["applied"]
    target = base + events
    cpu_w0, cpu_s0 = C.cpu_seconds(eng.pids), C.cpu_seconds(pids)
    cpu_p0 = sum(me.cpu_times()[:2])
    wall0 = time.perf_counter()
    sender.conn.send(cmd)
    t_first = a_first = t_last = None
    last, last_change = base, wall0
    while True:
        a = eng.stats()["applied"]
        now = time.perf_counter()
        if a != last:
            last, last_change = a, now
            if t_first is None:
                t_first, a_first = now, a
        if a >= target:
            t_last = now
            break
        if now - last_change > STALL_S:
            break
        time.sleep(0.001)
    wall = time.perf_counter() - wall0
    cpu = {"gateway_cpu_cores": (sum(me.cpu_times()[:2]) - cpu_p0) / wall,
           "worker_cpu_cores": (C.cpu_seconds(eng.pids) - cpu_w0) / wall,
           "sender_cpu_cores": (C.cpu_seconds(pids) - cpu_s0) / wall}
    if not sender.conn.poll(STALL_S):
        raise RuntimeError(f"the sender did not finish {cmd[0]!r}; applied {last - base} "
                           f"of {events} events")
    side = sender.conn.recv()
    if t_last is None or t_last <= t_first:
        rate = float("nan")
    else:
        rate = (target - a_first) / (t_last - t_first)
    return {"events_per_s": rate, "applied": last - base, "complete": t_last is not None,
            "sender": side, **cpu}


def run_modes(eng, sender: Sender, modes: list[tuple[str, int]], batch: int,
              nframes_distinct: int, seconds: float, repeats: int) -> list[dict]:
    """Each ``(mode, window)`` gets an untimed warm-up round (which also sizes
    its repeats to about ``seconds``), then the timed repeats, interleaved
    mode by mode so that a burst of load from elsewhere on the machine falls
    on all of them alike."""

    def cmd(mode, window, n):
        # JSON frames go out with the same send_copies loop as binary ones.
        return ("acked", window, n) if mode == "acked" else ("c" if mode == "json" else mode, n)

    sizes = []
    for mode, window in modes:
        warm_frames = max(1, min(4_000_000, max(100_000, batch * 16_384)) // batch)
        if mode == "acked":
            warm_frames = max(warm_frames // 4, 4 * window)
        warm = measure(eng, sender, cmd(mode, window, warm_frames), warm_frames * batch)
        rate0 = warm["events_per_s"] if warm["events_per_s"] == warm["events_per_s"] else 1e5
        sizes.append(max(16, int(rate0 * seconds / batch)))
    runs: list[list[dict]] = [[] for _ in modes]
    for _ in range(repeats):
        for i, (mode, window) in enumerate(modes):
            runs[i].append(measure(eng, sender, cmd(mode, window, sizes[i]), sizes[i] * batch))
    out = []
    for (mode, window), nframes, rs in zip(modes, sizes, runs):
        rates = [r["events_per_s"] for r in rs]
        sides = [r["sender"] for r in rs]
        row = {
            "mode": mode, "batch": batch, "window": window or None,
            "frames_per_repeat": nframes, "events_per_repeat": nframes * batch,
            "distinct_frames": nframes_distinct, "repeats": repeats,
            "events_per_s": C.median(rates), "rates": rates,
            "messages_per_s": C.median(rates) / batch,
            "sender_events_per_s": C.median([s["sent"] * batch / s["seconds"] for s in sides]),
            "counts_ok": all(r["complete"] and r["applied"] == nframes * batch for r in rs)
            and all(s["sent"] == nframes for s in sides),
        }
        for k in ("gateway_cpu_cores", "worker_cpu_cores", "sender_cpu_cores"):
            row[k] = C.median([r[k] for r in rs])
        if mode == "acked":
            row["ack_errors"] = sum(s["errors"] for s in sides)
            row["acked_events_per_s"] = C.median([s["accepted"] / s["seconds"] for s in sides])
            row["counts_ok"] = row["counts_ok"] and row["ack_errors"] == 0 and all(
                s["accepted"] == nframes * batch for s in sides)
        out.append(row)
    return out


def embedded_rate(eng, ev: np.ndarray, batch: int, repeats: int) -> dict:
    """``Engine.submit`` + ``flush`` of ``ev`` in batches, in this process."""
    views = [ev[i:i + batch] for i in range(0, len(ev), batch)]
    submit = eng.submit

    def run():
        for v in views:
            submit(v)
        eng.flush()

    secs = C.time_repeats(run, repeats, warmup=1, setup=lambda: C.advance_time(ev))
    rates = [len(ev) / s for s in secs]
    return {"batch": batch, "events": len(ev), "repeats": repeats,
            "events_per_s": C.median(rates), "rates": rates}


# --- JSON lines -----------------------------------------------------------------------


def json_bodies(ev: np.ndarray, lines: int) -> tuple[list[bytes], int]:
    """The events of ``ev`` as JSON-lines bodies of ``lines`` lines each,
    as a collector writes them: entity and metric as names, integer ts.
    The entity names (``host-N``) are other series than the binary
    stream's random ids; the metric names hash to the stream's metric ids.
    Returns the bodies and the number of distinct entity names."""
    keys, metrics = ev["key"], ev["metric"]
    hosts, host_of = np.unique(keys, return_inverse=True)
    mnames = {engine.metric_id(n): n for n in ("cpu", "mem", "disk", "net_in", "net_out",
                                                "latency_ms", "errors", "load")}
    text = [f'{{"entity":"host-{h}","metric":"{mnames[int(m)]}","ts":{t},"value":{v!r}}}\n'
            for h, m, t, v in zip(host_of.tolist(), metrics.tolist(), ev["ts"].tolist(),
                                  ev["value"].tolist())]
    bodies = ["".join(text[i:i + lines]).encode()
              for i in range(0, len(text) - lines + 1, lines)]
    return bodies, len(hosts)


def decode_alone(bodies: list[bytes], repeats: int, reference_lines: int) -> dict:
    """Lines/s of the gateway's decoder on ``bodies`` in this process
    (names registered into a fresh registry), and of the line-by-line
    reference path on the first ``reference_lines`` lines."""
    names = {"entities": {}, "metrics": {}}
    dec = P.JsonLinesDecoder(names)
    lines = sum(P._jsonl.count_lines(b) for b in bodies)

    def run():
        for b in bodies:
            dec.decode(b)

    secs = C.time_repeats(run, repeats, warmup=1)
    ref_bodies, n = [], 0
    for b in bodies:
        if n >= reference_lines:
            break
        ref_bodies.append(b)
        n += P._jsonl.count_lines(b)
    ref = C.time_repeats(lambda: [P._reference_lines(b, 0) for b in ref_bodies], 3, warmup=0)
    return {"lines": lines, "lines_per_s": C.median([lines / x for x in secs]),
            "rates": [lines / x for x in secs],
            "reference_lines_per_s": C.median([n / x for x in ref])}


def send_command(eng, endpoints: dict, bodies: list[bytes], copies: int, repeats: int) -> dict:
    """``ringflow send FILE`` (fire-and-forget) in a subprocess, ``repeats``
    times: lines/s from the first applied line to the last, and the rate
    the command prints."""
    ports = ",".join(endpoints[n].rsplit(":", 1)[1] for n in ENDPOINT_NAMES)
    lines = copies * sum(P._jsonl.count_lines(b) for b in bodies)
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as f:
        for _ in range(copies):
            for b in bodies:
                f.write(b)
        path = f.name
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(engine.__file__))}
    applied, printed = [], []
    try:
        for _ in range(repeats + 1):            # the first is a warm-up
            base = eng.stats()["applied"]
            proc = subprocess.Popen([sys.executable, "-m", "engine", "send", path, "--ports",
                                     ports], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=env)
            t_first = t_last = None
            last, last_change = base, time.perf_counter()
            while True:
                a = eng.stats()["applied"]
                now = time.perf_counter()
                if a != last:
                    last, last_change = a, now
                    if t_first is None:
                        t_first, a_first = now, a
                if a >= base + lines:
                    t_last = now
                    break
                if now - last_change > STALL_S:
                    break
                time.sleep(0.001)
            out, err = proc.communicate(timeout=60)
            if proc.returncode != 0 or t_last is None:
                raise RuntimeError(f"ringflow send failed ({proc.returncode}, applied "
                                   f"{last - base} of {lines}): {out}{err}")
            applied.append((base + lines - a_first) / (t_last - t_first))
            m = re.search(r"\(([\d,]+) events/s\)", out)
            printed.append(float(m.group(1).replace(",", "")) if m else float("nan"))
    finally:
        os.unlink(path)
    return {"lines": lines, "lines_per_s": C.median(applied[1:]), "rates": applied[1:],
            "printed_lines_per_s": C.median(printed[1:])}


# --- main ----------------------------------------------------------------------------


def curve_rounds(series: int, events: int, batches: list[int], rounds: int, seed: int,
                 workers: int) -> dict:
    """Acked ingest through a real client with CURVE off and on, same run.

    Each round starts one engine per setting (off, then on: alternating
    within a round, so both see the same noise), and times ``events`` events
    sent as acked frames of each batch size by :class:`engine.net.client.Client`
    (one frame in flight: the handshake, encryption and decryption of every
    frame are on the path).  Returns per batch the median events/s of each
    setting and their ratio."""

    from engine.net.client import Client
    from engine.net.security import CurveServer, create_keys

    tmp = tempfile.mkdtemp(prefix="ringflow-curve-bench-")
    server_sec = create_keys(os.path.join(tmp, "server"), "server")[1]
    client_pub, client_sec = create_keys(os.path.join(tmp, "clients"), "bench")
    server_pub = os.path.join(tmp, "server", "server.key")
    curve = CurveServer.from_files(server_sec, os.path.join(tmp, "clients"))
    ev = C.gen_events(events, series, seed)
    rates: dict = {b: {"off": [], "on": []} for b in batches}
    for _ in range(rounds):
        for mode in ("off", "on"):
            with engine.Engine(workers=workers, table_capacity=series) as eng:
                urls = free_endpoints()
                eng.serve(urls, curve=curve if mode == "on" else None)
                keys = {"curve_secret": client_sec, "curve_server": server_pub} \
                    if mode == "on" else {}
                with Client(endpoints=urls, timeout=30.0, max_frame_records=max(batches),
                            **keys) as c:
                    c.ping()
                    for b in batches:
                        C.advance_time(ev)
                        t0 = time.perf_counter()
                        for i in range(0, len(ev), b):
                            c.send(ev[i:i + b], ack=True)
                        rates[b][mode].append(len(ev) / (time.perf_counter() - t0))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return {b: {"off": C.median(r["off"]), "on": C.median(r["on"]),
                "ratio": C.median(r["on"]) / C.median(r["off"]), "rounds": rounds}
            for b, r in rates.items()}


def curve_main(argv: list[str]) -> dict:
    """``bench/gateway.py --curve``: CURVE on against off, same run."""
    p = argparse.ArgumentParser(description="CURVE on against off, acked ingest")
    p.add_argument("--curve", action="store_true")
    p.add_argument("--batches", type=C.parse_int_list, default=[64, 4096])
    p.add_argument("--events", type=C.parse_count, default=200_000)
    p.add_argument("--series", type=C.parse_count, default=10_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)
    out = curve_rounds(args.series, args.events, args.batches, args.rounds, args.seed,
                       args.workers)
    print(f"acked ingest, {args.events:,} events per batch size, {args.rounds} rounds "
          f"(medians), {args.workers} workers")
    print(f"{'batch':>6} {'CURVE off ev/s':>15} {'CURVE on ev/s':>15} {'on/off':>7}")
    for b, r in out.items():
        print(f"{b:>6} {r['off']:>15,.0f} {r['on']:>15,.0f} {r['ratio']:>7.2f}")
    return out


def main(argv: list[str] | None = None) -> C.Report:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--batches", type=C.parse_int_list, default=[1, 64, 4096],
                   help="events per frame (default 1,64,4096)")
    p.add_argument("--series", type=C.parse_count, default=100_000,
                   help="distinct series (default 100k)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--window", type=C.parse_int_list, default=None,
                   help="acked endpoint: messages outstanding, comma-separated "
                        "(default 1,16; quick 16)")
    p.add_argument("--acked-batch", type=int, default=4096,
                   help="events per frame on the acked endpoint (default 4096)")
    p.add_argument("--seconds", type=float, default=None,
                   help="approximate length of one timed repeat (default 0.8, quick 0.3)")
    p.add_argument("--no-python-sender", action="store_true",
                   help="skip the pyzmq Python-loop sender rows")
    p.add_argument("--wait", default="block", choices=engine.WAIT_STRATEGIES,
                   help="wait strategy of the engine (default block)")
    p.add_argument("--jsonl", action="store_true",
                   help="also JSON lines: through the gateway, its decoder alone, and "
                        "`ringflow send FILE` (same run)")
    p.add_argument("--jsonl-batch", type=int, default=4096,
                   help="JSON lines per frame (default 4096, as `ringflow send`)")
    C.add_common_args(p)
    args = p.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 5)
    seconds = args.seconds or (0.3 if args.quick else 0.8)
    windows = args.window or ([16] if args.quick else [1, 16])
    bevents = args.baseline_events or (30_000 if args.quick else 150_000)
    con = C.console()
    C.print_header(con, "gateway ingest: sender process -> ZeroMQ -> gateway -> workers", args)
    rep = C.Report("gateway", vars(args))

    base = C.measure_python_baseline(args.series, bevents, 3, args.seed)
    rep.baseline = {"kind": "pure-Python dict-of-series fold", **base.as_dict()}
    emb_events = C.gen_events(1_000_000 if args.quick else 4_000_000, args.series, args.seed)

    rows: list[dict] = []
    endpoints = free_endpoints()
    sender = None
    t_start = time.perf_counter()
    # JSON lines name their hosts: other series than the binary stream's.
    capacity = 2 * args.series if args.jsonl else args.series
    jrows: dict = {}
    with engine.Engine(workers=args.workers, table_capacity=capacity, wait=args.wait) as eng:
        start_s = time.perf_counter() - t_start
        eng.submit(C.all_series_once(args.series))
        eng.flush()
        C.wait_applied(eng, args.series)
        embedded = embedded_rate(eng, emb_events, 4096, repeats)
        # The replayed stream comes after everything the engine has seen.
        stream = replay_events(DISTINCT_EVENTS, args.series, args.seed,
                               int(emb_events["ts"].max()) + 10**9)
        del emb_events
        bodies = []
        if args.jsonl:
            bodies, _ = json_bodies(stream, args.jsonl_batch)
            jrows["decode"] = decode_alone(bodies, repeats, 20_000)
            # The named series once, old, so that no timed run creates rows.
            named = np.concatenate([P.parse_json_lines(b) for b in bodies])
            named["ts"] = C.TS0 - 10**9
            eng.submit(named)
            eng.flush()
            del named
        gc.collect()
        eng.serve(endpoints=endpoints)
        try:
            sender = Sender(endpoints)
            modes = [("c", 0)] if args.no_python_sender else [("c", 0), ("py", 0)]
            for batch in args.batches:
                n = DISTINCT_EVENTS if batch > 1 else 4096
                nfr = sender.load(stream[:n - n % batch], batch)
                rows += run_modes(eng, sender, modes, batch, nfr, seconds, repeats)
            nfr = sender.load(stream, args.acked_batch)
            rows += run_modes(eng, sender, [("acked", w) for w in windows], args.acked_batch,
                              nfr, seconds, repeats)
            if args.jsonl:
                sender.conn.send(("load_json", bodies))
                nfr = sender.conn.recv()[1]
                rows += run_modes(eng, sender, [("json", 0)], args.jsonl_batch, nfr, seconds,
                                  repeats)
                jrows["send"] = send_command(eng, endpoints, bodies, 4, repeats)
        finally:
            if sender is not None:
                sender.close()
        gw = eng.gateway.stats()
        st = eng.stats()
    rep.baseline["embedded"] = embedded
    rep.notes.append(f"engine start-up {start_s:.2f} s; gateway counters at the end: "
                     f"messages {gw['messages']:,}, accepted {gw['accepted']:,}, "
                     f"invalid {gw['invalid']:,}, rejected "
                     f"{sum(gw['rejected'].values()):,}; engine stale {st['stale']:,}, "
                     f"table full {st['rejected_table_full']:,}")

    from rich.table import Table

    label = {"c": "send_copies (C)", "py": "pyzmq loop", "acked": "acked DEALER",
             "json": "JSON lines, send_copies (C)"}
    t = Table(title=f"events/s through the gateway (first to last applied), {args.workers} "
                    f"workers, {args.series:,} series, wait={args.wait}, median of {repeats}")
    for col in ("events/frame", "sender", "M ev/s", "k msg/s", "vs embedded", "vs pure Python",
                "sender-side M ev/s", "gateway proc CPU", "workers CPU", "sender CPU", "counts"):
        t.add_column(col, justify="right")
    for r in rows:
        r["ratio_vs_embedded"] = r["events_per_s"] / embedded["events_per_s"]
        r["ratio_vs_python"] = r["events_per_s"] / base.rate
        r["python_events_per_s"] = base.rate
        r["embedded_events_per_s"] = embedded["events_per_s"]
        who = label[r["mode"]] + (f", window {r['window']}" if r["window"] else "")
        rep.rows.append(C.Result(f"gateway/{r['mode']}/{r['batch']}"
                                 + (f"/w{r['window']}" if r["window"] else ""),
                                 {"mode": r["mode"], "batch": r["batch"],
                                  "window": r["window"]}, r))
        t.add_row(f"{r['batch']:,}", who, f"{r['events_per_s'] / 1e6:,.2f}",
                  f"{r['messages_per_s'] / 1e3:,.1f}", C.fmt_ratio(r["ratio_vs_embedded"]),
                  C.fmt_ratio(r["ratio_vs_python"]), f"{r['sender_events_per_s'] / 1e6:,.2f}",
                  f"{r['gateway_cpu_cores']:.2f}", f"{r['worker_cpu_cores']:.2f}",
                  f"{r['sender_cpu_cores']:.2f}", "ok" if r["counts_ok"] else "[red]BAD[/]")
    t.add_row("4,096", "Engine.submit (in process)", f"{embedded['events_per_s'] / 1e6:,.2f}",
              "-", "1.0x", C.fmt_ratio(embedded["events_per_s"] / base.rate), "-", "-", "-",
              "-", "-", style="dim")
    t.add_row("-", "pure-Python fold", f"{base.rate / 1e6:,.2f}", "-",
              C.fmt_ratio(base.rate / embedded["events_per_s"]), "1.0x", "-", "-", "-", "-",
              "-", style="dim")
    con.print(t)
    con.print(f"[dim]M ev/s: applied events (Engine.stats) from the first applied to the last, "
              f"sender in another process; sender-side: frames sent / time in the sender "
              f"(ZeroMQ queues up to its high-water marks, so it can run ahead). send_copies "
              f"sends each frame up to {COPIES_EVENTS} events' worth of times in a row from C, "
              f"cycling through {DISTINCT_EVENTS:,} distinct events (4,096 one-event frames); "
              f"every replayed event carries the stream's newest time except 1% late ones. "
              f"acked: replies parsed in the sender; window = messages outstanding. "
              f"embedded: Engine.submit + flush of {embedded['events']:,} events in batches "
              f"of 4,096 in this process, same engine. CPU: CPU time / wall time "
              f"({psutil.cpu_count()} cores); gateway proc = this process (gateway threads "
              f"and the stats poll).[/]")

    if args.jsonl:
        binary = next((r for r in rows if r["mode"] == "c" and r["batch"] == 4096), None)
        jr = next(r for r in rows if r["mode"] == "json")
        dec, snd = jrows["decode"], jrows["send"]
        vs = (lambda x: f" ({x / binary['events_per_s']:.3f}x binary at 4096/frame)") \
            if binary else (lambda x: "")
        rep.target(f"JSON lines through the gateway, {args.jsonl_batch} lines/frame, PUSH",
                   ">= 1 M lines/s", f"{jr['events_per_s'] / 1e6:,.2f} M lines/s"
                   + vs(jr["events_per_s"]), jr["events_per_s"] >= 1e6 and jr["counts_ok"])
        rep.target("JSON lines, gateway decoder alone (one core)", ">= 1 M lines/s",
                   f"{dec['lines_per_s'] / 1e6:,.2f} M lines/s ("
                   f"{dec['lines_per_s'] / dec['reference_lines_per_s']:.1f}x the line-by-line "
                   f"reference path, {dec['reference_lines_per_s'] / 1e3:,.0f} k lines/s)",
                   dec["lines_per_s"] >= 1e6)
        rep.target(f"ringflow send FILE.jsonl ({snd['lines']:,} lines)", ">= 1 M lines/s",
                   f"{snd['lines_per_s'] / 1e6:,.2f} M lines/s applied"
                   + vs(snd["lines_per_s"])
                   + f"; the command printed {snd['printed_lines_per_s'] / 1e6:,.2f} M/s",
                   snd["lines_per_s"] >= 1e6)
        rep.notes.append(f"JSON lines: decoder rates {[round(x) for x in dec['rates']]}, "
                         f"send rates {[round(x) for x in snd['rates']]}")
    for batch, goal in TARGET_RATES.items():
        r = next((r for r in rows if r["mode"] == "c" and r["batch"] == batch), None)
        if r is None:
            continue
        rep.target(f"{batch} event{'s' if batch > 1 else ''} per frame, PUSH, send_copies",
                   f">= {goal / 1e6:g} M ev/s", f"{r['events_per_s'] / 1e6:,.2f} M ev/s",
                   r["events_per_s"] >= goal and r["counts_ok"])
    for r in rows:
        if r["mode"] == "acked":
            rep.target(f"acked, {r['batch']} per frame, window {r['window']}", "(reported)",
                       f"{r['events_per_s'] / 1e6:,.2f} M ev/s", None)
    r = next((r for r in rows if r["mode"] == "c" and r["batch"] == 4096), None)
    if r is not None:
        rep.target("gateway / embedded at 4096", "(reported)",
                   f"{r['ratio_vs_embedded']:.2f}x", None)
    if psutil.cpu_count() and args.workers + 2 > psutil.cpu_count():
        rep.notes.append(f"{psutil.cpu_count()} cores: {args.workers} workers, the gateway's "
                         "ingest thread and the sender process oversubscribe the machine")
    rep.finish(con, args.json)
    check_children(con)
    return rep


if __name__ == "__main__":
    if "--curve" in sys.argv[1:]:
        curve_main(sys.argv[1:])
    else:
        main()
