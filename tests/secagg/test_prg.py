"""Mask PRG: determinism, domain separation, chunking, range and seed checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from secagg import (
    MaskStream,
    Ring,
    SecAggTypeError,
    SecAggValueError,
    SeedError,
    expand,
    iter_chunks,
)

SEED = bytes(range(32))


@given(bits=st.integers(8, 64), n=st.integers(0, 3000), chunk=st.integers(1, 700),
       algorithm=st.sampled_from(["aes128-ctr", "chacha20"]))
def test_chunked_equals_whole(bits, n, chunk, algorithm):
    ring = Ring(bits)
    whole = expand(SEED, "p", n, ring, algorithm=algorithm)
    parts = [c.copy() for c in iter_chunks(SEED, "p", n, ring, chunk=chunk, algorithm=algorithm)]
    joined = np.concatenate(parts) if parts else np.empty(0, ring.dtype)
    assert np.array_equal(whole, joined)
    assert whole.dtype == ring.dtype
    assert int(whole.max(initial=0)) < ring.modulus


def test_deterministic_and_domain_separated():
    r = Ring(32)
    a = expand(SEED, "self-mask", 64, r)
    assert np.array_equal(a, expand(SEED, "self-mask", 64, r))
    assert not np.array_equal(a, expand(SEED, "pairwise-mask", 64, r))
    assert not np.array_equal(a, expand(bytes(32), "self-mask", 64, r))
    assert not np.array_equal(a, expand(SEED, "self-mask", 64, r, algorithm="chacha20"))


def test_narrow_ring_is_prefix_reduction_of_wide():
    """b-bit values are the low bits of the same keystream words (no rejection needed)."""
    wide = expand(SEED, "p", 100, Ring(32))
    narrow = expand(SEED, "p", 100, Ring(12))
    assert np.array_equal(narrow, wide & np.uint32(0xFFF))


def test_output_is_roughly_uniform():
    """A coarse sanity check, not a statistical test suite: byte histogram chi-square."""
    vals = expand(SEED, "p", 1 << 16, Ring(8)).astype(np.int64)
    counts = np.bincount(vals, minlength=256)
    expected = len(vals) / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert 150 < chi2 < 380  # 255 degrees of freedom; p outside ~1e-6 either side


@pytest.mark.parametrize("seed", [b"", bytes(16), bytes(31), bytes(33), bytes(4)])
def test_short_or_long_seed_refused(seed):
    with pytest.raises(SeedError, match="exactly 32 bytes"):
        expand(seed, "p", 4, Ring(32))


def test_bad_arguments():
    with pytest.raises(SecAggTypeError):
        expand("x" * 32, "p", 4, Ring(32))
    with pytest.raises(SecAggTypeError):
        expand(SEED, "", 4, Ring(32))
    with pytest.raises(SecAggValueError, match="unknown PRG algorithm"):
        expand(SEED, "p", 4, Ring(32), algorithm="rc4")
    with pytest.raises(SecAggValueError):
        expand(SEED, "p", -1, Ring(32))
    with pytest.raises(SecAggTypeError):
        expand(SEED, "p", 4, 32)
    stream = MaskStream(SEED, "p", Ring(32))
    with pytest.raises(SecAggValueError):
        stream.fill(np.empty(4, dtype=np.uint64))
    with pytest.raises(SecAggTypeError):
        stream.fill([0, 0])
    with pytest.raises(SecAggValueError):
        stream.read(-1)
    with pytest.raises(SecAggTypeError):
        stream.read(1.5)
    with pytest.raises(SecAggValueError):  # checked at the call, not at the first next()
        iter_chunks(SEED, "p", 10, Ring(32), chunk=0)
    from secagg import EncodingError

    with pytest.raises(EncodingError, match="UTF-8"):
        expand(SEED, "\ud800", 4, Ring(32))
