"""The query process: answers the gateway's fleet-wide JSON ops (``status``,
``top``, ``entity``) from the engine's state tables, attached read-only by
their segments' names, so that a long scan never holds the gateway's GIL
and a ping, a ``get`` or a binary lookup never waits behind one.

The gateway starts it as a fresh interpreter (``python -m
engine.query.process SPEC``, as the workers: never a fork of a threaded
process, never a re-run of the embedding program) and talks to it over one
ZeroMQ DEALER pair on an ``ipc://`` path the process binds.  A request is
``[seq, names, *envelope, frame]``: ``names`` carries the names the engine
learnt since the last request (pickled ``{"entities": [(id, name), ...],
"metrics": [...]}``, or empty), since the replies show names and the
engine's registry lives in the gateway's process.  The reply is ``[seq,
unavailable, *envelope, reply]``, ``unavailable`` the rows its scans left
out so far (u64, little-endian), which the gateway adds to the engine's
``rows_unavailable``.  The process holds no state of its own: if it dies,
the gateway answers what it had in flight with an error and starts another.

README ("Queries that scale") has the measurements that chose a process
over query threads.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys

__all__ = ["main", "NAMES_KINDS"]

#: The name tables a request's names frame may extend.
NAMES_KINDS = ("entities", "metrics")
# How often an idle process checks that its gateway is still there (ms).
_IDLE_MS = 200


def main(spec: dict) -> int:
    """Attach the tables, bind the request socket, answer until told to stop
    (an empty message), or until the gateway's process is gone.

    Parameters
    ----------
    spec : dict
        ``url`` (the ipc endpoint to bind), ``tables`` (segment names in
        worker order), ``window_ns``, ``views``, ``recovered`` (what the
        engine's start replayed, or None) and ``parent`` (the gateway's pid).
    """
    # The gateway coordinates shutdown (SIGTERM, or its going away); a
    # Ctrl-C or a SIGHUP (`ringflow serve` re-reads its rules) sent to the
    # terminal's process group is not for this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    import zmq

    from ..core.shm import Segment
    from . import ops
    from .reader import Reader

    segs = [Segment.attach(name) for name in spec["tables"]]
    names: dict = {kind: {} for kind in NAMES_KINDS}
    reader = Reader([s.buf for s in segs], names, window_ns=spec["window_ns"],
                    views=spec["views"])
    reader.recovered = spec.get("recovered")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(spec["url"])
    parent = spec["parent"]
    try:
        while True:
            if not sock.poll(_IDLE_MS):
                if os.getppid() != parent:
                    return 0
                continue
            parts = sock.recv_multipart()
            if len(parts) < 3:
                return 0
            seq, delta, envelope, frame = parts[0], parts[1], parts[2:-1], parts[-1]
            if delta:
                for kind, items in pickle.loads(delta).items():
                    if kind in names:
                        names[kind].update(items)
            try:
                reply = ops.answer(frame, reader)
            except Exception as exc:  # noqa: BLE001 - one query must not stop the rest
                reply = json.dumps({"ok": False, "error": f"internal: {exc!r}"}).encode()
            # The rows its scans left out so far, for the engine's stats.
            sock.send_multipart([seq, reader.unavailable.to_bytes(8, "little"), *envelope,
                                 reply])
    finally:
        sock.close()
        ctx.term()
        reader.close()
        for s in segs:
            s.close()


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
