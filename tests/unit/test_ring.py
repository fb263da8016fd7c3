"""SPSC ring: layout checks, wrap-around in one process, and checksummed
streams across real processes for every wait strategy."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from engine import EVENT_DTYPE, _ring
from engine.core.shm import Segment

PEER = os.path.join(os.path.dirname(os.path.dirname(__file__)), "ring_peer.py")


def make_ring(capacity: int, wait: str = "block"):
    """A standalone ring: header, producer doorbell, consumer doorbell, data."""
    data = 4096
    seg = Segment.create(data + capacity * 32, "ringtest")
    _ring.init_header(seg.buf, 0, capacity, data, 192, 256)
    return seg


def close(seg, *rings):
    for r in rings:
        r.release_buffer()
    seg.close()
    seg.unlink()


def events(keys) -> np.ndarray:
    ev = np.zeros(len(keys), EVENT_DTYPE)
    ev["key"] = keys
    ev["value"] = np.asarray(keys, dtype=np.float64) * 0.5
    return ev


def test_capacity_must_be_power_of_two():
    buf = bytearray(8192)
    with pytest.raises(ValueError, match="power of two"):
        _ring.init_header(buf, 0, 100, 1024, 192, 256)
    with pytest.raises(ValueError, match="does not fit"):
        _ring.init_header(buf, 0, 1024, 1024, 192, 256)


def test_attach_refuses_a_buffer_without_a_ring():
    with pytest.raises(ValueError, match="magic"):
        _ring.Ring(bytearray(8192), 0)


def test_unknown_wait_strategy_is_refused():
    buf = bytearray(8192)
    _ring.init_header(buf, 0, 64, 4096, 192, 256)
    with pytest.raises(ValueError, match="wait strategy"):
        _ring.Ring(buf, 0, wait="nap")


def test_wraps_and_keeps_order_in_one_process():
    buf = bytearray(4096 + 16 * 32)
    _ring.init_header(buf, 0, 16, 4096, 192, 256)
    prod, cons = _ring.Ring(buf, 0), _ring.Ring(buf, 0)
    expected = 0
    for size in [5, 7, 16, 3, 11, 16, 1, 9] * 5:
        assert prod.publish(events(np.arange(expected, expected + size))) == size
        count, first, ksum, _vsum, ordered = cons.consume_checksum()
        assert (count, first, ordered) == (size, expected, True)
        assert ksum == sum(range(expected, expected + size))
        expected += size
    assert prod.published == cons.consumed == expected


def test_publish_times_out_when_full_and_keeps_what_fit():
    buf = bytearray(4096 + 8 * 32)
    _ring.init_header(buf, 0, 8, 4096, 192, 256)
    ring = _ring.Ring(buf, 0)
    t0 = time.monotonic()
    assert ring.publish(events(np.arange(12)), timeout=0.05) == 8
    assert time.monotonic() - t0 >= 0.04
    assert ring.readable() == 8
    with pytest.raises(ValueError, match="cannot release 9"):
        ring.release(9)
    ring.release(8)
    assert ring.readable() == 0


def test_wait_readable_times_out_on_an_empty_ring():
    buf = bytearray(4096 + 8 * 32)
    _ring.init_header(buf, 0, 8, 4096, 192, 256)
    ring = _ring.Ring(buf, 0)
    t0 = time.monotonic()
    assert ring.wait_readable(timeout=0.03) == 0
    assert 0.02 <= time.monotonic() - t0 < 1.0


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "wait,count,capacity,max_batch",
    [
        ("block", 10_000_000, 1024, 700),
        ("spin", 10_000_000, 1024, 700),
        ("sleep", 1_000_000, 256, 200),
        ("yield", 1_000_000, 256, 200),
    ],
)
def test_checksummed_stream_across_processes(wait, count, capacity, max_batch):
    """A producer process publishes `count` consecutive keys through a small
    ring (it wraps count / capacity times); this process checks that every
    record arrives once, in order, with the right checksum."""
    seg = make_ring(capacity, wait)
    ring = _ring.Ring(seg.buf, 0, wait=wait)
    peer = subprocess.Popen(
        [sys.executable, PEER, seg.name, "0", str(count), str(max_batch), wait, "7"]
    )
    try:
        got = key_sum = 0
        value_sum = 0.0
        biggest = 0
        while got < count:
            n, first, ksum, vsum, ordered = ring.consume_checksum(timeout=10.0)
            assert n > 0, f"stalled after {got} records"
            assert ordered and first == got
            got += n
            key_sum += ksum
            value_sum += vsum
            biggest = max(biggest, n)
        assert peer.wait(30) == 0
        assert got == count
        assert key_sum == (count * (count - 1) // 2) % 2**64
        assert value_sum == pytest.approx(count * (count - 1) / 4, rel=1e-12)
        assert biggest <= capacity
        assert ring.published == ring.consumed == count
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait()
        close(seg, ring)
