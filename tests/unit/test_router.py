"""The key mixer (engine._table.mix64) and the shard function
(engine._router.shard_of) against the references in tests/reference.py,
known SplitMix64 outputs, and a uniformity bound on structured keys."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from engine import _router, _table
from tests.reference import mix64_np, mix64_ref, shard_ref

U64_MAX = 2**64 - 1
EDGE_KEYS = [0, 1, 2, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, U64_MAX - 1, U64_MAX]
WORKERS = [1, 2, 3, 7, 64, 256]
# No explain phase: it re-runs a failing example under a tracer for
# minutes; the shrunk example and the reproduce blob are enough.
FAST = settings(max_examples=200, deadline=None,
                phases=[p for p in Phase if p is not Phase.explain])

key_arrays = hnp.arrays(
    np.uint64, st.integers(0, 300),
    elements=st.one_of(st.sampled_from(EDGE_KEYS), st.integers(0, U64_MAX)),
)


# ------------------------------------------------------------------ mix64

def test_mix64_known_splitmix64_outputs():
    """The first outputs of SplitMix64 seeded with 0 (state advanced by the
    golden gamma, then finalised): pins the constants and shifts
    independently of tests/reference.py."""
    gamma = 0x9E3779B97F4A7C15
    states = np.array([(gamma * i) & U64_MAX for i in range(1, 5)], np.uint64)
    want = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F, 0xF88BB8A8724C81EC]
    assert _table.mix64(states).tolist() == want
    assert [mix64_ref(int(s)) for s in states] == want


@FAST
@given(keys=key_arrays)
def test_mix64_matches_python_and_numpy_references(keys):
    """Element by element equal to the Python-int and the NumPy reference,
    uint64 out, same length, input untouched."""
    before = keys.copy()
    got = _table.mix64(keys)
    assert got.dtype == np.uint64 and got.shape == keys.shape
    assert np.array_equal(got, mix64_np(keys))
    assert got.tolist() == [mix64_ref(int(k)) for k in keys]
    assert np.array_equal(keys, before)


def test_mix64_is_a_bijection_on_a_sample():
    """Distinct keys stay distinct (the finaliser is invertible), so no two
    hosts share a hash by construction."""
    keys = np.concatenate([np.arange(200_000, dtype=np.uint64),
                           np.arange(200_000, dtype=np.uint64) << np.uint64(32),
                           np.array(EDGE_KEYS, np.uint64)])
    keys = np.unique(keys)
    assert len(np.unique(_table.mix64(keys))) == len(keys)


def test_mix64_avalanche_on_single_bit_flips():
    """Flipping one input bit flips about half of the output bits, for
    every input bit position (an identity or a plain multiply would not)."""
    rng = np.random.default_rng(7)
    base = rng.integers(0, 2**64, 2000, dtype=np.uint64)
    h0 = _table.mix64(base)
    for bit in range(64):
        h1 = _table.mix64(base ^ np.uint64(1 << bit))
        diff = np.unpackbits((h0 ^ h1).view(np.uint8)).mean() * 64
        assert 30.0 < diff < 34.0, (bit, diff)


def test_mix64_refuses_other_dtypes():
    """Only uint64 arrays are hashed; a silently reinterpreted int32 or
    float array would shard keys differently from the gateway."""
    for bad in (np.arange(4, dtype=np.int32), np.arange(4, dtype=np.float64)):
        with pytest.raises(ValueError):
            _table.mix64(bad)
    assert _table.mix64(np.zeros(0, np.uint64)).shape == (0,)


# --------------------------------------------------------------- shard_of

@FAST
@given(keys=key_arrays,
       workers=st.one_of(st.sampled_from(WORKERS), st.integers(1, 1000),
                         st.sampled_from([2**31, 2**32 - 1])))
def test_shard_of_matches_reference(keys, workers):
    """shard_of(keys, w) == mix64(key) % w as uint32, every shard below w,
    the same shard TableSet reads from."""
    got = _router.shard_of(keys, workers)
    assert got.dtype == np.uint32 and got.shape == keys.shape
    assert np.array_equal(got, shard_ref(keys, workers))
    assert (got.astype(np.uint64) < workers).all()
    assert np.array_equal(got.astype(np.uint64), _table.mix64(keys) % np.uint64(workers))


@pytest.mark.parametrize("workers", WORKERS)
def test_shard_of_edge_keys(workers):
    """Keys 0 and 2**64-1 and the other edges, for the usual worker counts;
    one worker takes everything."""
    keys = np.array(EDGE_KEYS, np.uint64)
    got = _router.shard_of(keys, workers)
    assert got.tolist() == [mix64_ref(k) % workers for k in EDGE_KEYS]
    if workers == 1:
        assert not got.any()


def test_shard_of_refuses_zero_workers_and_other_dtypes():
    """No division by zero, no reinterpreted keys."""
    keys = np.arange(4, dtype=np.uint64)
    with pytest.raises(ValueError):
        _router.shard_of(keys, 0)
    with pytest.raises(OverflowError):
        _router.shard_of(keys, -1)
    with pytest.raises(ValueError):
        _router.shard_of(np.arange(4, dtype=np.int64), 2)
    with pytest.raises(ValueError):
        _router.shard_of(np.arange(8, dtype=np.uint64)[::2], 2)
    assert _router.shard_of(np.zeros(0, np.uint64), 3).shape == (0,)


# -------------------------------------------------------------- uniformity

def chi2_bound(df: int, z: float = 5.0) -> float:
    """Wilson-Hilferty upper quantile of chi-square(df) at about 5 sigma
    (p ~ 3e-7): a fair hash exceeds it essentially never."""
    c = 2.0 / (9.0 * df)
    return df * (1.0 - c + z * math.sqrt(c)) ** 3


def chi2(shards: np.ndarray, workers: int) -> float:
    counts = np.bincount(shards, minlength=workers).astype(np.float64)
    expect = len(shards) / workers
    return float(((counts - expect) ** 2 / expect).sum())


STRUCTURED = [
    ("sequential", lambda n: np.arange(n, dtype=np.uint64)),
    ("even", lambda n: np.arange(n, dtype=np.uint64) * np.uint64(2)),
    ("multiples of 256", lambda n: np.arange(n, dtype=np.uint64) * np.uint64(256)),
    ("high word only", lambda n: np.arange(n, dtype=np.uint64) << np.uint64(32)),
    ("top bits only", lambda n: np.arange(n, dtype=np.uint64) << np.uint64(48)),
]


@pytest.mark.parametrize("workers", [2, 3, 7, 256])
@pytest.mark.parametrize("name,make", STRUCTURED, ids=[s[0] for s in STRUCTURED])
def test_shards_of_structured_keys_are_uniform(name, make, workers):
    """Sequential, strided and high-bit-only key sets spread evenly over the
    workers (chi-square below its 5-sigma quantile)."""
    keys = make(65_536)
    stat = chi2(_router.shard_of(keys, workers), workers)
    assert stat < chi2_bound(workers - 1), (name, workers, stat)


def test_uniformity_check_rejects_weak_mixers():
    """The bound above is not a tautology: identity (key % w) and a plain
    multiplicative hash fail it on even keys with 2 workers and on
    multiples of 256 with 256 workers, while mix64 passes."""
    n = 65_536
    even = np.arange(n, dtype=np.uint64) * np.uint64(2)
    m256 = np.arange(n, dtype=np.uint64) * np.uint64(256)
    with np.errstate(over="ignore"):
        mult = even * np.uint64(0x9E3779B97F4A7C15)     # Fibonacci hash, low bits
    for keys, w, weak in [(even, 2, even), (m256, 256, m256), (even, 2, mult)]:
        assert chi2((weak % np.uint64(w)).astype(np.intp), w) > chi2_bound(w - 1)
        assert chi2(_router.shard_of(keys, w), w) < chi2_bound(w - 1)


def test_consecutive_keys_are_not_correlated():
    """Neighbouring sequential keys land on the same of 2 workers about half
    of the time (identity alternates, never the same)."""
    shards = _router.shard_of(np.arange(100_000, dtype=np.uint64), 2)
    same = float((shards[1:] == shards[:-1]).mean())
    assert abs(same - 0.5) < 5 * 0.5 / math.sqrt(len(shards))
