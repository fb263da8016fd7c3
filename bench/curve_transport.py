"""What CURVE costs ZeroMQ alone: request/reply exchanges of acked-ingest
sized frames (DEALER -> ROUTER, a 32-byte reply), with CURVE off and on in
alternating rounds, no engine behind the socket.  Set beside
``bench/gateway.py --curve`` (the same exchanges through the gateway) it
tells the encryption's share of the gateway's CURVE cost.

    python bench/curve_transport.py --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator


def _round(ctx: zmq.Context, keys, frame: bytes, window: int, seconds: float) -> float:
    server = ctx.socket(zmq.ROUTER)
    client = ctx.socket(zmq.DEALER)
    for s in (server, client):
        s.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        (spub, ssec), (cpub, csec) = keys
        server.curve_publickey, server.curve_secretkey, server.curve_server = spub, ssec, True
        client.curve_publickey, client.curve_secretkey, client.curve_serverkey = cpub, csec, spub
    port = server.bind_to_random_port("tcp://127.0.0.1")
    client.connect(f"tcp://127.0.0.1:{port}")
    stop = threading.Event()

    def serve():
        poller = zmq.Poller()
        poller.register(server, zmq.POLLIN)
        while not stop.is_set():
            if poller.poll(50):
                ident, _ = server.recv_multipart(copy=False)
                server.send_multipart([ident, b"x" * 32])

    t = threading.Thread(target=serve)
    t.start()
    client.send(frame)          # the handshake, outside the timing
    client.recv()
    done, inflight = 0, 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        while inflight < window:
            client.send(frame, copy=False)
            inflight += 1
        client.recv()
        inflight -= 1
        done += 1
    while inflight:
        client.recv()
        inflight -= 1
        done += 1
    elapsed = time.perf_counter() - t0
    stop.set()
    t.join()
    server.close()
    client.close()
    return done * len(frame) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--frame-events", type=int, default=4096,
                    help="events per frame (32 bytes each, plus a 16-byte header)")
    ap.add_argument("--window", type=int, default=16, help="frames in flight")
    args = ap.parse_args()
    frame = bytes(16 + 32 * args.frame_events)
    ctx = zmq.Context()
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
    keys = (zmq.curve_keypair(), zmq.curve_keypair())
    off, on = [], []
    try:
        for r in range(args.rounds):
            order = (None, keys) if r % 2 == 0 else (keys, None)
            for k in order:
                rate = _round(ctx, k, frame, args.window, args.seconds)
                (off if k is None else on).append(rate)
            print(f"round {r}: off {off[-1] / 1e6:.0f} MB/s, on {on[-1] / 1e6:.0f} MB/s")
    finally:
        auth.stop()
        ctx.term()
    mo, mn = statistics.median(off), statistics.median(on)
    ev = 32
    print(f"median: CURVE off {mo / 1e6:.0f} MB/s ({mo / ev / 1e6:.1f} M events/s), "
          f"on {mn / 1e6:.0f} MB/s ({mn / ev / 1e6:.1f} M events/s): on/off {mn / mo:.2f}; "
          f"{args.frame_events} events a frame, {args.window} in flight, {args.rounds} rounds")


if __name__ == "__main__":
    main()
