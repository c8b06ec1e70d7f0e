"""The cache-blocked rotation and fused rounding inside dp.encoding.encode and decode.

References: the Walsh-Hadamard matrix from scipy.linalg.hadamard, the butterfly transform and the
signs of dp.rotation (the rotation as first implemented), conditional_round (the rounding), and
dp.update.l2_norm (the norm check). encode must make the same decisions as conditional_round on
the same y and the same words of the generator, including retries and its error paths.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.linalg import hadamard

from dp import encoding as enc
from dp.encoding import EncodingPlan, conditional_round, decode, encode, to_ring
from dp.errors import ParameterError, UpdateError
from dp.randomness import CryptoRandom
from dp.rotation import fwht, rotate, rotation_signs, unrotate
from dp.update import l2_norm

SEED = bytes(range(32))


def _rng(i: int) -> CryptoRandom:
    return CryptoRandom(i.to_bytes(32, "little"))


def _unit(d: int, seed: int, radius: float = 1.0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(d)
    return x * (radius * (1 - 1e-15) / np.linalg.norm(x))


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 2^5 coordinates, so that small vectors take the whole-vector (top) levels."""
    monkeypatch.setattr(enc, "_BLOCK_BITS", 5)


@pytest.mark.parametrize("m", range(0, 12))
def test_transform_is_the_hadamard_matrix(m):
    n = 1 << m
    v = np.random.default_rng(m).standard_normal(n)
    want = hadamard(n).astype(np.float64) @ v
    np.testing.assert_allclose(enc._Hadamard(v.copy()).full(), want, rtol=0, atol=1e-12 * n)


@pytest.mark.parametrize("m", [0, 1, 5, 6, 9, 10, 11, 14])
def test_transform_with_top_levels_is_the_hadamard_matrix(small_blocks, m):
    n = 1 << m
    v = np.random.default_rng(m).standard_normal(n)
    h = enc._Hadamard(v.copy())
    assert h.block == min(n, 32)
    np.testing.assert_allclose(h.full(), fwht(v), rtol=0, atol=1e-12 * n)


def test_transform_at_a_million_matches_the_butterflies():
    v = np.random.default_rng(1).standard_normal(1 << 20)
    got = enc._Hadamard(v.copy()).full()
    np.testing.assert_allclose(got, fwht(v), rtol=0, atol=1e-9)


def test_transform_refuses_non_powers_of_two():
    with pytest.raises(ParameterError, match="power-of-two"):
        enc._Hadamard(np.zeros(12))


def test_levels_cover_the_bits_evenly():
    for low in (0, 3):
        for bits in range(0, 40):
            levels = enc._levels(low, bits)
            r = [h.shape[0].bit_length() - 1 for _, h in levels]
            assert sum(r) == bits and all(1 <= x <= enc._RADIX_BITS for x in r)
            assert not r or max(r) - min(r) <= 1
            assert [lo for lo, _ in levels] == [low + sum(r[:i]) for i in range(len(r))]


@pytest.mark.parametrize("m", [0, 1, 4, 7])
def test_scaled_transform(small_blocks, m):
    v = np.random.default_rng(m).standard_normal(1 << m)
    np.testing.assert_allclose(enc._Hadamard(v.copy(), 0.375).full(), 0.375 * fwht(v),
                               rtol=0, atol=1e-12 * (1 << m))


@pytest.mark.parametrize("n", [1, 7, 8, 1000, 4096])
def test_sign_bits_are_the_rotation_signs(n):
    np.testing.assert_array_equal(enc._sign_bits(SEED, n), rotation_signs(SEED, n) < 0)


@pytest.mark.parametrize("d", [1, 3, 100, 1000, 5000, 70_000, 1_000_000])
def test_rotation_matches_dp_rotation(d):
    x = _unit(d, d)
    n = 1 << (d - 1).bit_length()
    got = enc._rotation(x, SEED, 3.0, np.empty(n)).full()
    np.testing.assert_allclose(got, 3.0 * rotate(x, SEED), rtol=0, atol=1e-13)


@pytest.mark.parametrize("d", [33, 64, 65, 100, 511, 512, 513, 1000, 3000, 4096, 5000])
def test_rotation_with_padded_top_levels_matches_dp_rotation(small_blocks, d):
    """With 2^5-blocks the top levels read D x straight from x: rows wholly inside x, the row
    that x ends in, and rows of padding, for lengths on and off the row boundaries."""
    n = 1 << (d - 1).bit_length()
    for dtype in (np.float64, np.float32):
        x = _unit(d, d).astype(dtype)
        got = enc._rotation(x, SEED, 3.0, np.empty(n)).full()
        np.testing.assert_allclose(got, 3.0 * rotate(x.astype(np.float64), SEED), rtol=0,
                                   atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_norm_check_bounds_l2_norm(dtype):
    for seed in range(40):
        g = np.random.default_rng(seed)
        e = 200 if dtype == np.float64 else 30
        x = (g.standard_normal(int(g.integers(1, 3000))) * 10.0 ** g.integers(-e, e))
        x = x.astype(dtype)
        want = l2_norm(x)
        if not math.isfinite(want) or want == 0.0:
            continue
        got = enc._checked_norm(x, 1e300, np.empty(x.size))
        assert want <= got <= want * (1 + 2e-13)
    assert enc._checked_norm(np.zeros(5), 1.0, np.empty(5)) == 0.0


@given(d=st.integers(1, 5000), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([1.0, 1e-160, 1e-300, 1e150, 3.0]),
       shrink=st.sampled_from([1.0, 1 - 2.0**-45, 1 + 1e-12, 1 + 2e-12, 1 - 1e-12, 1.5]))
def test_norm_check_decides_as_l2_norm(d, seed, scale, shrink):
    """Vectors on, just inside and just outside the clip sphere, at scales where squares
    overflow or underflow: refused exactly when l2_norm(x) > C (1 + 1e-12)."""
    x = np.random.default_rng(seed).standard_normal(d)
    x *= scale / l2_norm(x)
    x *= shrink
    c = scale
    refused = l2_norm(x) > c * (1 + 1e-12)
    if refused:
        with pytest.raises(UpdateError, match="exceeds the clip norm"):
            enc._checked_norm(x, c, np.empty(d))
    else:
        assert enc._checked_norm(x, c, np.empty(d)) >= l2_norm(x)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_norm_check_refuses_non_finite(bad):
    x = np.ones(10)
    x[3] = bad
    with pytest.raises(UpdateError, match="NaN or infinite"):
        enc._checked_norm(x, 1.0, np.empty(10))


# ------------------------------------------------------------------------ encode's decisions


def _reference_encode(x: np.ndarray, plan: EncodingPlan, rng: CryptoRandom) -> np.ndarray:
    """conditional_round on the whole y = gamma U x from the same transform."""
    y = enc._rotation(x, SEED, plan.gamma, np.empty(plan.padded_dim)).full()
    return conditional_round(y, plan.norm2_bound, rng)


def _words_used(seed: int, rng: CryptoRandom, limit: int) -> int:
    """How many 64-bit words ``rng`` (made from ``seed``) has given out, up to ``limit``."""
    nxt = int(rng.uint64(1)[0])
    stream = _rng(seed).uint64(limit + 1).tolist()
    return stream.index(nxt)


@given(d=st.integers(1, 3000), seed=st.integers(0, 2**16), radius=st.floats(0, 1))
def test_encode_is_conditional_round_of_the_rotation(d, seed, radius):
    plan = EncodingPlan(dim=d, gamma=256.0, bits=32, clip_norm=1.0)
    x = _unit(d, seed, radius)
    np.testing.assert_array_equal(encode(x, plan, SEED, _rng(seed)),
                                  _reference_encode(x, plan, _rng(seed)))


def test_encode_with_top_levels_is_conditional_round_of_the_rotation(small_blocks):
    for d in (33, 100, 1000):
        plan = EncodingPlan(dim=d, gamma=64.0, bits=32, clip_norm=1.0)
        x = _unit(d, d)
        np.testing.assert_array_equal(encode(x, plan, SEED, _rng(d)),
                                      _reference_encode(x, plan, _rng(d)))


@pytest.mark.parametrize("dim", [1, 2, 16])
def test_encode_retries_like_conditional_round(dim):
    """A tight bound (beta = 0.9, large gamma C against D) rejects many first attempts: the
    retries draw the same words and reach the same vector as conditional_round."""
    plan = EncodingPlan(dim=dim, gamma=64.5, bits=32, clip_norm=1.0, beta=0.9)
    x = _unit(dim, 0)
    n = plan.padded_dim
    retried = 0
    for seed in range(60):
        r = _rng(seed)
        z = encode(x, plan, SEED, r)
        np.testing.assert_array_equal(z, _reference_encode(x, plan, _rng(seed)))
        assert int(z @ z) <= plan.norm2_bound
        used = _words_used(seed, r, n * 400)
        assert used % n == 0
        retried += used > n
    assert retried >= 5


def test_encode_agrees_with_the_first_implementation():
    """Against dp.rotation.rotate + conditional_round (the code encode replaced): the rotations
    differ in the last bits only, which moves a decision with probability about 1e-13 per
    coordinate, so on these inputs the encodings are identical."""
    for d, gamma in ((10, 2.0**12), (1000, 256.0), (70_000, 1024.0)):
        plan = EncodingPlan(dim=d, gamma=gamma, bits=32, clip_norm=1.0)
        x = _unit(d, d)
        old = conditional_round(rotate(x, SEED) * gamma, plan.norm2_bound, _rng(d))
        np.testing.assert_array_equal(encode(x, plan, SEED, _rng(d)), old)


def test_encode_large_scale_takes_the_checked_route():
    """gamma C beyond the fused route's bound: y is made whole and conditional_round checks
    it, so an oversized vector is refused as before and a fitting one is encoded the same."""
    x = _unit(4, 1)  # largest rotated coordinate about 0.8 ||x||
    plan = EncodingPlan(dim=4, gamma=2.0**31, bits=64, clip_norm=1.0)
    with pytest.raises(ParameterError, match="too large"):
        encode(x, plan, SEED, _rng(0))
    plan = EncodingPlan(dim=4, gamma=2.0**30, bits=64, clip_norm=1.0)  # (gamma C)^2 D = 2^62
    np.testing.assert_array_equal(encode(x, plan, SEED, _rng(0)),
                                  _reference_encode(x, plan, _rng(0)))


def test_decode_matches_the_first_implementation():
    for d in (5, 1000, 40_000):
        plan = EncodingPlan(dim=d, gamma=1024.0, bits=40, clip_norm=1.0)
        x = _unit(d, d)
        ring = to_ring(encode(x, plan, SEED, _rng(d)), plan.bits)
        y = enc.centred_lift(ring, plan.bits).astype(np.float64) / plan.gamma
        np.testing.assert_allclose(decode(ring, plan, SEED), unrotate(y, SEED, d), rtol=0,
                                   atol=1e-12)
        assert float(np.linalg.norm(decode(ring, plan, SEED) - x)) <= math.sqrt(
            plan.padded_dim) / plan.gamma


@pytest.mark.parametrize("bits", [8, 20, 31, 32, 33, 40, 63, 64])
def test_to_ring_matches_the_uint64_route(bits):
    z = np.random.default_rng(bits).integers(-(2**62), 2**62, 1000, dtype=np.int64)
    z[:4] = [0, -1, 2**63 - 1, -(2**63)]
    want = z.astype(np.uint64) & np.uint64((1 << bits) - 1) if bits < 64 else z.astype(np.uint64)
    got = to_ring(z, bits)
    assert got.dtype == (np.uint32 if bits <= 32 else np.uint64)
    np.testing.assert_array_equal(got.astype(np.uint64), want)


# ------------------------------------------------------------------------ the word source


def test_fill_uint64_continues_the_stream():
    a, b = CryptoRandom(SEED), CryptoRandom(SEED)
    want = a.uint64(300_000)
    buf = np.empty(150_000, dtype=np.uint64)
    got = [b.fill_uint64(buf).copy(), b.fill_uint64(buf[:7]).copy(), b.uint64(149_993)]
    np.testing.assert_array_equal(np.concatenate(got), want)
    assert b.fill_uint64(np.empty(0, dtype=np.uint64)).size == 0


@pytest.mark.parametrize("bad", [np.empty(4, np.int64), np.empty(8, np.uint64)[::2],
                                 np.empty(4, np.uint32)])
def test_fill_uint64_refuses_other_arrays(bad):
    with pytest.raises(ParameterError, match="fill_uint64"):
        CryptoRandom(SEED).fill_uint64(bad)
