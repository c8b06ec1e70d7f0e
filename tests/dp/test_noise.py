"""Discrete noise tables and samplers (dp.noise) against independently computed distributions.

Exact values come from scipy.special.ive and from mpmath at 50 digits (Skellam: e^-mu I_k(mu);
discrete Gaussian: q^(k^2) / theta_3(0, q) with q = e^(-1/2 sigma^2)), never from the module's own
recurrences. Every statistical test draws from CryptoRandom(bytes(32)), so it is deterministic.
"""

from __future__ import annotations

import bisect
import functools
import math
import shutil
import struct
import subprocess

import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from scipy.special import ive

from dp import noise as noise_mod
from dp.errors import DPError, ParameterError
from dp.noise import MECHANISMS, NoiseTable, noise_table, sample_noise
from dp.randomness import CryptoRandom

SKELLAM_MUS = (0.3, 2.0, 17.5, 400.0, 36000.0)
DGAUSS_SIGMA2S = (0.5, 3.0, 250.0)
CASES = [("skellam", m) for m in SKELLAM_MUS] + [("discrete-gaussian", s) for s in DGAUSS_SIGMA2S]
IDS = [f"{m}-{p:g}" for m, p in CASES]

SEED = bytes(32)
GOF_SAMPLES = 200_000
# mpmath's besseli costs ~0.5 s per order near k = 2700 at mu = 36000, so there the 50-digit
# check is made at a few orders (centre, one sd, mid-tail) and at K+1; scipy covers every k.
MPMATH_SPARSE = {36000.0: (0, 1, 190, 1500)}

# First 8 Skellam(mu=30) samples from CryptoRandom(bytes(32)). Computed once by an independent
# route (test_known_answer_recomputed_with_openssl_and_mpmath): AES-256-CTR keystream of the
# zero key and zero IV from `openssl enc`, words (hi, lo) = little-endian uint64 pairs, and the
# least k with u / 2^128 < F(k) for the exact CDF F at 50 digits.
KAT_SKELLAM_30 = [1, 3, -1, -1, 0, -5, -4, -5]
# AES-256 of the all-zero block under the all-zero key (first keystream block, FIPS-197 style KAT)
AES256_ZERO_BLOCK = bytes.fromhex("dc95c078a2408989ad48a21492842087")


# ---------------------------------------------------------------------------- exact pmfs


def _mp_skellam(mu: float, k: int) -> mpmath.mpf:
    with mpmath.workdps(50):
        m = mpmath.mpf(mu)
        return mpmath.besseli(abs(k), m, maxterms=10**6) * mpmath.exp(-m)


def _mp_dgauss(sigma2: float, k: int) -> mpmath.mpf:
    with mpmath.workdps(50):
        q = mpmath.exp(-1 / (2 * mpmath.mpf(sigma2)))
        return q ** (k * k) / mpmath.jtheta(3, 0, q)


def _mp_pmf(mechanism: str, parameter: float, k: int) -> mpmath.mpf:
    return (_mp_skellam if mechanism == "skellam" else _mp_dgauss)(parameter, k)


def _float_pmf(mechanism: str, parameter: float, ks: np.ndarray) -> np.ndarray:
    """Exact pmf in float64 (scipy for Skellam, closed form for the discrete Gaussian)."""
    if mechanism == "skellam":
        return ive(np.abs(ks), parameter)
    k_all = np.arange(-int(40 * math.sqrt(parameter)) - 40, int(40 * math.sqrt(parameter)) + 41)
    z = float(np.sum(np.exp(-(k_all.astype(np.float64) ** 2) / (2 * parameter))))
    return np.exp(-(ks.astype(np.float64) ** 2) / (2 * parameter)) / z


@functools.cache
def _samples(mechanism: str, parameter: float) -> np.ndarray:
    return sample_noise(mechanism, parameter, GOF_SAMPLES, CryptoRandom(SEED))


def _chi_square_p(samples: np.ndarray, mechanism: str, parameter: float) -> float:
    """Chi-square p-value of integer samples against the exact pmf; bins of expected count >= 5,
    the two tails merged into their neighbouring bin when they are below 5."""
    n = samples.size
    width = int(60 * math.sqrt(parameter)) + 60
    ks = np.arange(-width, width + 1)
    p = _float_pmf(mechanism, parameter, ks)
    expected = n * p
    inside = np.nonzero(expected >= 5)[0]
    a, b = int(inside[0]), int(inside[-1])
    assert np.all(expected[a:b + 1] >= 5), "pmf should be unimodal"
    counts = np.bincount(np.clip(samples, -width, width) + width, minlength=ks.size)
    obs = counts[a:b + 1].astype(np.float64)
    exp = expected[a:b + 1].copy()
    left_o, left_e = counts[:a].sum(), n * float(np.sum(p[:a]))
    right_o, right_e = counts[b + 1:].sum(), n * float(np.sum(p[b + 1:]))
    if left_e >= 5:
        obs, exp = np.concatenate([[left_o], obs]), np.concatenate([[left_e], exp])
    else:
        obs[0] += left_o
        exp[0] += left_e
    if right_e >= 5:
        obs, exp = np.concatenate([obs, [right_o]]), np.concatenate([exp, [right_e]])
    else:
        obs[-1] += right_o
        exp[-1] += right_e
    assert obs.sum() == n
    exp *= n / exp.sum()  # the float pmf sums to 1 within ~1e-15
    assert obs.size >= 3
    return float(stats.chisquare(obs, exp).pvalue)


# ---------------------------------------------------------------------------- the tables


@pytest.mark.parametrize(("mechanism", "parameter"), CASES, ids=IDS)
def test_table_pmf_matches_scipy_and_mpmath(mechanism, parameter):
    table = noise_table(mechanism, parameter)
    ks = np.arange(-table.k, table.k + 1)
    pmf = table.pmf()
    assert pmf.shape == ks.shape
    assert pmf.dtype == np.float64
    assert table.hi.size == table.lo.size == 2 * table.k

    # scipy (Skellam) / closed form (discrete Gaussian), every k of the support
    assert np.max(np.abs(pmf - _float_pmf(mechanism, parameter, ks))) < 1e-15

    # mpmath at 50 digits: symmetric, so k >= 0 suffices
    sparse = MPMATH_SPARSE.get(parameter)
    check = sparse if sparse is not None else range(table.k + 1)
    for k in check:
        exact = float(_mp_pmf(mechanism, parameter, k))
        assert abs(pmf[table.k + k] - exact) < 1e-15, (k, pmf[table.k + k], exact)
        assert abs(pmf[table.k - k] - exact) < 1e-15, (-k, pmf[table.k - k], exact)


@pytest.mark.parametrize(("mechanism", "parameter"), CASES, ids=IDS)
def test_table_support_covers_all_mass_above_1e_40(mechanism, parameter):
    table = noise_table(mechanism, parameter)
    k1 = table.k + 1
    # both pmfs are symmetric and unimodal in |k|, so pmf(K+1) < 1e-40 covers every k outside
    assert float(_mp_pmf(mechanism, parameter, k1)) < 1e-40
    # and the whole mass outside [-K, K] is below 1e-40 as well (and below the stated bound)
    beyond = np.arange(k1, k1 + 40 * int(math.sqrt(parameter)) + 400)
    outside = 2 * float(np.sum(_float_pmf(mechanism, parameter, beyond)))
    assert outside < 1e-40
    assert outside <= 2.0**-140
    # the cut is not wastefully wide: K - m (m = sqrt(parameter)/2 + 4) would leave more than
    # 2^-140 outside
    m = math.ceil(math.sqrt(parameter) / 2) + 4
    shorter = 2 * float(np.sum(_float_pmf(mechanism, parameter,
                                          np.arange(table.k - m + 1, table.k + 1))))
    assert shorter > 2.0**-140


@pytest.mark.parametrize(("mechanism", "parameter"), [c for c in CASES if c[1] <= 400],
                         ids=[i for c, i in zip(CASES, IDS) if c[1] <= 400])
def test_thresholds_are_the_rounded_128_bit_cdf(mechanism, parameter):
    """T_k = round(2^128 F(k)) up to the stated error: |T_k / 2^128 - F(k)| <= 2^-128 + 2^-140."""
    table = noise_table(mechanism, parameter)
    t = [(int(h) << 64) | int(lo) for h, lo in zip(table.hi.tolist(), table.lo.tolist())]
    assert t == sorted(t)
    with mpmath.workdps(60):
        half = [_mp_pmf(mechanism, parameter, k) for k in range(table.k + 1)]
        cdf = mpmath.mpf(0)  # the table's CDF starts at -K (mass below -K is <= 2^-141)
        scale = mpmath.mpf(2) ** 128
        tol = mpmath.mpf(2) ** -128 + mpmath.mpf(2) ** -139
        for i, k in enumerate(range(-table.k, table.k)):
            cdf += half[abs(k)]
            assert abs(mpmath.mpf(t[i]) / scale - cdf) <= tol, (k, t[i])


@pytest.mark.parametrize(("mechanism", "parameter"), CASES, ids=IDS)
def test_tv_bound_is_tiny_and_covers_the_truncation(mechanism, parameter):
    table = noise_table(mechanism, parameter)
    assert 0 < table.tv_bound < 1e-30
    # at least the rounding of 2K thresholds and the tail mass it claims to account for
    assert table.tv_bound >= (2 * table.k + 1) * 2.0**-128


def test_tables_are_cached_and_symmetric():
    a = noise_table("skellam", 17.5)
    assert noise_table("skellam", 17.5) is a
    pmf = a.pmf()
    np.testing.assert_allclose(pmf, pmf[::-1], rtol=0, atol=1e-17)
    assert a.parameter == 17.5
    assert a.mechanism == "skellam" and a.parameter == 17.5


# ---------------------------------------------------------------------------- sampling


@pytest.mark.parametrize(("mechanism", "parameter"), CASES, ids=IDS)
def test_goodness_of_fit_chi_square(mechanism, parameter):
    samples = _samples(mechanism, parameter)
    assert samples.dtype == np.int64 and samples.shape == (GOF_SAMPLES,)
    table = noise_table(mechanism, parameter)
    assert np.all(np.abs(samples) <= table.k)
    p = _chi_square_p(samples, mechanism, parameter)
    assert p > 1e-4, p


@pytest.mark.parametrize(("mechanism", "parameter"), CASES, ids=IDS)
def test_mean_and_variance_within_five_standard_errors(mechanism, parameter):
    samples = _samples(mechanism, parameter).astype(np.float64)
    n = samples.size
    width = int(60 * math.sqrt(parameter)) + 60
    ks = np.arange(-width, width + 1).astype(np.float64)
    p = _float_pmf(mechanism, parameter, ks.astype(np.int64))
    var = float(np.sum(p * ks**2))
    m4 = float(np.sum(p * ks**4))
    if mechanism == "skellam":
        assert var == pytest.approx(parameter, rel=1e-12)
        assert m4 == pytest.approx(parameter + 3 * parameter**2, rel=1e-10)
    mean_se = math.sqrt(var / n)
    var_se = math.sqrt((m4 - var**2) / n)
    assert abs(samples.mean()) < 5 * mean_se
    assert abs(samples.var() - var) < 5 * var_se


@pytest.mark.parametrize("mu", [0.3, 17.5])
def test_skellam_closure_sum_of_ten(mu):
    """Sk(mu) is closed under sums: a sum of 10 independent samples is Sk(10 mu), variance 10 mu."""
    n_terms, n = 10, 60_000
    s = sample_noise("skellam", mu, n_terms * n, CryptoRandom(SEED)).reshape(n, n_terms)
    sums = s.sum(axis=1)
    target = n_terms * mu
    var_se = math.sqrt((target + 2 * target**2) / n)  # fourth cumulant of Sk(m) is m
    assert abs(sums.astype(np.float64).var() - target) < 5 * var_se
    assert abs(sums.mean()) < 5 * math.sqrt(target / n)
    assert _chi_square_p(sums, "skellam", target) > 1e-4


def test_chi_square_helper_rejects_a_wrong_distribution():
    """The goodness-of-fit machinery has power: Sk(17.5) samples are not Sk(19)."""
    assert _chi_square_p(_samples("skellam", 17.5), "skellam", 19.0) < 1e-4
    assert _chi_square_p(_samples("discrete-gaussian", 3.0), "skellam", 3.0) < 1e-4


def test_sampling_is_deterministic_under_a_seed_and_fresh_otherwise():
    a = sample_noise("skellam", 30.0, 1000, CryptoRandom(SEED))
    b = sample_noise("skellam", 30.0, 1000, CryptoRandom(SEED))
    c = sample_noise("skellam", 30.0, 1000, CryptoRandom(bytes(31) + b"\x01"))
    d = sample_noise("skellam", 30.0, 1000)  # os.urandom seed
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, d)
    assert sample_noise("skellam", 30.0, 0, CryptoRandom(SEED)).shape == (0,)


def test_chunking_does_not_change_the_stream(monkeypatch):
    ref = sample_noise("skellam", 30.0, 50, CryptoRandom(SEED))
    monkeypatch.setattr(noise_mod, "_CHUNK", 7)
    np.testing.assert_array_equal(sample_noise("skellam", 30.0, 50, CryptoRandom(SEED)), ref)
    rng = CryptoRandom(SEED)
    parts = [noise_table("skellam", 30.0).sample(m, rng) for m in (3, 20, 27)]
    np.testing.assert_array_equal(np.concatenate(parts), ref)


# ---------------------------------------------------------------------------- ties on the high word


class _ScriptedRandom(CryptoRandom):
    """Returns preset uint64 words, in order (a CryptoRandom with a scripted stream)."""

    def __init__(self, words) -> None:
        super().__init__(SEED)
        self._words = np.array(words, dtype=np.uint64)
        self._pos = 0

    def fill_uint64(self, out: np.ndarray) -> np.ndarray:
        n = out.size
        words = self._words[self._pos:self._pos + n]
        assert words.size == n, "sampler asked for more words than scripted"
        self._pos += n
        out[...] = words
        return out


def _hand_table() -> NoiseTable:
    # K = 2: thresholds T_0..T_3 = (5,10), (5,10), (5,20), (7,0)   (hi, lo)
    hi = np.array([5, 5, 5, 7], dtype=np.uint64)
    lo = np.array([10, 10, 20, 0], dtype=np.uint64)
    return NoiseTable("skellam", 1.0, 2, hi, lo, 0.0)


@pytest.mark.parametrize(("hi", "lo", "expected"), [
    (5, 9, -2),          # tie on hi, lo < T_0.lo: u < T_0
    (5, 0, -2),
    (5, 10, 0),          # lo == T_0.lo == T_1.lo: u >= T_0, T_1; u < T_2
    (5, 11, 0),
    (5, 19, 0),          # lo < T_2.lo
    (5, 20, 1),          # lo == T_2.lo: u >= T_2
    (5, 2**64 - 1, 1),
    (4, 2**64 - 1, -2),  # no tie
    (6, 0, 1),
    (7, 0, 2),           # tie with the last threshold, lo equal
    (2**64 - 1, 2**64 - 1, 2),
    (0, 0, -2),
])
def test_tie_on_high_word_settled_by_low_word(hi, lo, expected):
    out = _hand_table().sample(1, _ScriptedRandom([hi, lo]))
    assert out.tolist() == [expected]


def test_ties_against_128_bit_reference_on_a_real_table():
    """Words that tie every threshold's high word, with lo just below, equal and just above T_lo,
    sampled in one batch and compared with bisect on the exact 128-bit thresholds."""
    table = noise_table("skellam", 30.0)
    t = [(int(h) << 64) | int(lo) for h, lo in zip(table.hi.tolist(), table.lo.tolist())]
    words, us = [], []
    for h, lo in zip(table.hi.tolist(), table.lo.tolist()):
        for delta in (-1, 0, 1):
            lo2 = int(lo) + delta
            if 0 <= lo2 < 2**64:
                words += [h, lo2]
                us.append((int(h) << 64) | lo2)
    rng = np.random.default_rng(7)
    for _ in range(200):  # plus random words, mostly without ties
        h, lo = (int(v) for v in rng.integers(0, 2**64, size=2, dtype=np.uint64))
        words += [h, lo]
        us.append((h << 64) | lo)
    got = table.sample(len(us), _ScriptedRandom(words))
    want = [bisect.bisect_right(t, u) - table.k for u in us]
    assert got.tolist() == want
    # the tie cases really did land on both sides of thresholds
    assert len(set(want)) > 20


@given(st.integers(0, 2**128 - 1), st.none() | st.integers(0, 47))
def test_sampler_is_the_exact_inverse_cdf(u, snap):
    table = noise_table("discrete-gaussian", 3.0)
    assert table.hi.size == 48
    t = [(int(h) << 64) | int(lo) for h, lo in zip(table.hi.tolist(), table.lo.tolist())]
    if snap is not None:  # force a tie: u takes the high word of threshold `snap`
        u = (int(table.hi[snap]) << 64) | (u & (2**64 - 1))
    got = table.sample(1, _ScriptedRandom([u >> 64, u & (2**64 - 1)]))
    assert got.tolist() == [bisect.bisect_right(t, u) - table.k]


# ---------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize("mechanism", ["laplace", "Skellam", "gaussian", "", None])
def test_unknown_mechanism(mechanism):
    with pytest.raises(ParameterError, match="mechanism"):
        noise_table(mechanism, 1.0)
    with pytest.raises(ValueError):
        sample_noise(mechanism, 1.0, 3, CryptoRandom(SEED))


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("parameter", [0, 0.0, -1.0, -1e-300, math.nan, math.inf, -math.inf,
                                       True, "1.0", None, np.float64("nan")])
def test_bad_parameter(mechanism, parameter):
    with pytest.raises(ParameterError, match="noise variance") as info:
        noise_table(mechanism, parameter)
    assert isinstance(info.value, ValueError) and isinstance(info.value, DPError)


@pytest.mark.parametrize("n", [-1, -(2**40), True, False, 1.0, 2.5, "3", None])
def test_bad_sample_count(n):
    table = noise_table("skellam", 2.0)
    with pytest.raises(ParameterError, match="sample count") as info:
        table.sample(n, CryptoRandom(SEED))
    assert isinstance(info.value, ValueError)
    with pytest.raises(ParameterError):
        sample_noise("discrete-gaussian", 2.0, n, CryptoRandom(SEED))


def test_table_too_large_is_refused():
    with pytest.raises(ParameterError, match="limit"):
        noise_table("skellam", 1e12)


def test_parameter_types_accepted():
    assert noise_table("skellam", 2) is noise_table("skellam", 2.0)
    assert noise_table("skellam", np.float64(2.0)).k == noise_table("skellam", 2.0).k


# ---------------------------------------------------------------------------- known answers


def test_crypto_random_first_block_is_aes256_of_zero():
    assert CryptoRandom(SEED).bytes(16) == AES256_ZERO_BLOCK
    words = CryptoRandom(SEED).uint64(2)
    assert words.dtype == np.uint64
    assert words.tolist() == list(struct.unpack("<QQ", AES256_ZERO_BLOCK))


def test_known_answer_skellam_30():
    assert sample_noise("skellam", 30.0, 8, CryptoRandom(SEED)).tolist() == KAT_SKELLAM_30


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_known_answer_recomputed_with_openssl_and_mpmath():
    """The route that produced KAT_SKELLAM_30, re-run: openssl keystream + exact CDF inversion."""
    keystream = subprocess.run(
        ["openssl", "enc", "-aes-256-ctr", "-K", "00" * 32, "-iv", "00" * 16, "-nosalt"],
        input=bytes(16 * 8), capture_output=True, check=True, timeout=30).stdout
    assert len(keystream) == 128
    with mpmath.workdps(50):
        mu = mpmath.mpf(30)
        # F(k) for k >= -150; the mass below -150 is < 1e-200
        ks = range(-150, 151)
        pmf = [mpmath.besseli(abs(k), mu) * mpmath.exp(-mu) for k in ks]
        cdf, acc = [], mpmath.mpf(0)
        for v in pmf:
            acc += v
            cdf.append(acc)
        assert abs(cdf[-1] - 1) < mpmath.mpf(10) ** -40
        out = []
        for i in range(8):
            hi, lo = struct.unpack("<QQ", keystream[16 * i:16 * i + 16])
            u = mpmath.mpf((hi << 64) | lo) / mpmath.mpf(2) ** 128
            j = next(i for i, f in enumerate(cdf) if u < f)
            # far from a boundary, so the table's 2^-128 rounding cannot matter
            assert min(abs(u - cdf[j]), abs(u - cdf[j - 1])) > mpmath.mpf(10) ** -30
            out.append(ks[j])
    assert out == KAT_SKELLAM_30
    assert sample_noise("skellam", 30.0, 8, CryptoRandom(SEED)).tolist() == out
