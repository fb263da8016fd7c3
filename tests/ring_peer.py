"""The far end of a cross-process ring test, run as its own process:

    python ring_peer.py SEGMENT OFFSET COUNT MAX_BATCH WAIT SEED

Publishes COUNT records whose keys are 0, 1, 2, ... and whose values are
key / 2, in batches of random sizes up to MAX_BATCH."""

import sys

import numpy as np

from engine import EVENT_DTYPE, _ring
from engine.core.shm import Segment


def main() -> None:
    name, offset, count, max_batch, wait, seed = sys.argv[1:]
    offset, count, max_batch, seed = int(offset), int(count), int(max_batch), int(seed)
    seg = Segment.attach(name)
    ring = _ring.Ring(seg.buf, offset, wait=wait)
    rng = np.random.default_rng(seed)
    chunk = np.zeros(1 << 20, EVENT_DTYPE)
    sent = 0
    try:
        while sent < count:
            n = min(len(chunk), count - sent)
            keys = np.arange(sent, sent + n, dtype=np.uint64)
            chunk["key"][:n] = keys
            chunk["value"][:n] = keys * 0.5
            pos = 0
            while pos < n:
                k = min(int(rng.integers(1, max_batch + 1)), n - pos)
                assert ring.publish(chunk[pos:pos + k]) == k
                pos += k
            sent += n
    finally:
        ring.release_buffer()
        seg.close()


if __name__ == "__main__":
    main()
