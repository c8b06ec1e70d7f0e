"""Discrete noise over the integers: Skellam (default) and discrete Gaussian.

Sampling is by inversion of a 128-bit cumulative table: each sample takes two uniform 64-bit
words ``(hi, lo)`` from :class:`dp.randomness.CryptoRandom` (AES-256-CTR), read as one 128-bit
uniform u, and returns the least k with u < T_k, where T_k = round(2^128 * F(k)) and F is the
CDF of the distribution truncated to [-K, K].

The inversion is found through a guide table (Chen and Asau, "On generating random variates
from an empirical distribution", AIIE Transactions 6(2), 1974): the top g bits of the high word
split [0, 2^128) into 2^g equal buckets (g from 16 to 19, per table). A bucket that holds no
threshold maps every u in it to the same k, which the guide stores, so most samples cost one
shift and one table look-up. A bucket that holds one threshold compares u with it. A bucket
that holds two or more (in the tails, where thresholds crowd together) is split again on the
next SUB_BITS bits by a second-level guide of the same kind, whose crowded sub-buckets are
settled by binary search over the high words. A tie between u's high word and a threshold's
(probability below 2K 2^-64) is settled by binary search over the low words. Every route
returns exactly the least k with u < T_k: the guide changes the cost of finding k, never k, so
the statistical distance below holds unchanged.

The probabilities are computed in decimal arithmetic with 60 significant digits, not in
floating point:

* Skellam Sk(mu) = Pois(mu/2) - Pois(mu/2), variance mu (Agarwal, Kairouz, Liu NeurIPS 2021,
  section 3), pmf e^-mu I_|k|(mu). I_k(mu) is computed by Miller's backward recurrence
  I_{k-1} = I_{k+1} + (2k/mu) I_k (stable downwards), normalised by e^mu = I_0 + 2 sum I_k.
* Discrete Gaussian N_Z(0, sigma^2) (Canonne, Kamath, Steinke NeurIPS 2020, section 2):
  weights exp(-k^2 / 2 sigma^2) by the ratio recurrence w_{k+1} = w_k r_k, r_{k+1} = r_k q.

Statistical distance to the exact distribution, per sample (:attr:`NoiseTable.tv_bound`):
tail mass outside [-K, K] (a Chernoff bound, at most 2^-139) + (2K+1) * 2^-128 (rounding of the
thresholds) + (2K+1) * 10^-50 (decimal arithmetic), all relative to uniform words. For m
samples the distance is at most m times that; :func:`dp.accounting.fold_sampler_distance`
adds it to delta. No path here, or anywhere in :mod:`dp`, adds floating-point noise to a
released value.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from decimal import Context, Decimal, localcontext
from functools import lru_cache

import numpy as np

from .errors import ParameterError
from .randomness import CryptoRandom

MECHANISMS = ("skellam", "discrete-gaussian")
_PREC = 60
_TAIL_BITS = 140
_CHUNK = 1 << 16  # samples per cipher call: a chunk (1 MiB of words) stays in cache
_GUIDE_MIN_BITS = 16  # a 256 KiB guide (int32), indexed by a uint16 view of the words
_GUIDE_MAX_BITS = 19  # a 2 MiB guide (int32), for the largest tables
_TOP16 = 3 if sys.byteorder == "little" else 0  # the uint16 holding a word's top 16 bits
_SUB_BITS = 6  # a crowded first-level bucket is split into 2^SUB_BITS on the next bits
_GUIDE_SPILL_BITS = 5  # aim: at most 1/32 of the samples leave the one-look-up route
_MAX_SUPPORT = 4_000_000  # 2K+1 table entries; about 13 std deviations each side at var 2e10


def skellam_tail_bound(mu: float, m: float) -> float:
    """Chernoff bound on P(Z >= m) for Z ~ Sk(mu): exp(mu(cosh l - 1) - l m), sinh l = m/mu."""
    if m <= 0:
        return 1.0
    r = m / mu
    return math.exp(mu * (math.sqrt(1.0 + r * r) - 1.0) - m * math.asinh(r))


def dgauss_tail_bound(sigma2: float, m: float) -> float:
    """Bound on P(Z >= m) for Z ~ N_Z(0, sigma^2), m >= 1:
    sum_{k>=m} e^{-k^2/2s^2} <= e^{-m^2/2s^2} / (1 - e^{-m/s^2}), and the normaliser is >= 1."""
    if m <= 0:
        return 1.0
    return math.exp(-m * m / (2 * sigma2)) / -math.expm1(-m / sigma2)


def _cut(tail, scale: float) -> int:
    """Least K with tail(K + 1) <= 2^-(TAIL_BITS + 1), so both tails together are <= 2^-TAIL."""
    target = 2.0 ** -(_TAIL_BITS + 1)
    hi = max(8, int(4 * scale) + 8)
    while tail(hi + 1) > target:
        hi *= 2
    lo = 0
    while lo < hi:
        mid = (lo + hi) // 2
        if tail(mid + 1) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _skellam_half_pmf(mu: Decimal, k_cut: int) -> list[Decimal]:
    """e^-mu I_k(mu) for k = 0..k_cut by Miller's backward recurrence."""
    start = k_cut + int(12 * math.sqrt(float(mu))) + 60
    big = Decimal(10) ** 200
    shift = 0  # values are stored as (mantissa, shift): true value = mantissa * 10^(200 shift)
    vals: list[tuple[Decimal, int]] = [(Decimal(0), 0)] * (k_cut + 1)
    f_next, f = Decimal(0), Decimal(1)
    for k in range(start, 0, -1):
        f_prev = f_next + (2 * k / mu) * f
        f_next, f = f, f_prev
        if k - 1 <= k_cut:
            vals[k - 1] = (f, shift)
        if f > big:
            f, f_next, shift = f / big, f_next / big, shift + 1
    # vals[k] = I_k * c for one unknown c; normalise by I_0 + 2 sum_{k>=1} I_k = e^mu
    top = shift
    scaled = [m * big ** (s - top) if s != top else m for m, s in vals]
    # the terms beyond k_cut are below 2^-140 of the total and are left out of the sum
    total = scaled[0] + 2 * sum(scaled[1:])
    return [v / total for v in scaled]


def _dgauss_half_pmf(sigma2: Decimal, k_cut: int) -> list[Decimal]:
    w = [Decimal(1)]
    q = (-1 / sigma2).exp()
    r = (-1 / (2 * sigma2)).exp()
    for _ in range(k_cut):
        w.append(w[-1] * r)
        r *= q
    total = w[0] + 2 * sum(w[1:])
    return [v / total for v in w]


def _guide_bits(hi: np.ndarray) -> int:
    """g for a guide over thresholds with high words ``hi``: the least g in [GUIDE_MIN_BITS,
    GUIDE_MAX_BITS] whose buckets holding a threshold carry at most 2^-GUIDE_SPILL_BITS of the
    probability (each such bucket sends its samples down a slower route)."""
    for g in range(_GUIDE_MIN_BITS, _GUIDE_MAX_BITS):
        occupied = np.count_nonzero(np.diff(hi >> np.uint64(64 - g))) + 1 if hi.size else 0
        if occupied <= 1 << (g - _GUIDE_SPILL_BITS):
            return g
    return _GUIDE_MAX_BITS


def _buckets(hi: np.ndarray, start: np.ndarray, bits: int,
             shift: int) -> tuple[np.ndarray, np.ndarray]:
    """For buckets [start_j, start_j + 2^bits) of the value hi >> shift: (first, count), the
    index of the first threshold at or above each bucket and how many fall inside it."""
    top = (hi >> np.uint64(shift)).astype(np.uint64)
    lows = (start[:, None] + np.arange(1 << bits, dtype=np.uint64)).ravel()
    first = np.searchsorted(top, lows, side="left").astype(np.int64)
    count = np.searchsorted(top, lows, side="right").astype(np.int64) - first
    return first, count


def _guides(hi: np.ndarray, k: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The two levels of the guide (Chen and Asau 1974) as int32 codes, with N = 2K thresholds
    and L_j the number of thresholds below bucket j (so T_i < u for i < L_j and all u in it):

    * code <= K: the bucket holds no threshold; every u in it gives the sample ``code``;
    * K < code <= K + N: it holds one threshold, T_first with first = code - K - 1;
    * code > K + N: it holds two or more. On the first level, code - K - N - 1 numbers its cell
      of 2^SUB_BITS sub-buckets on the next bits in the second level; on the second level, the
      sample is found by binary search.
    """
    n = hi.size
    first, count = _buckets(hi, np.zeros(1, dtype=np.uint64), bits, 64 - bits)
    deep = np.flatnonzero(count > 1)
    level1 = np.where(count == 0, first - k, k + 1 + first)
    level1[deep] = k + n + 1 + np.arange(deep.size)
    shift = 64 - bits - _SUB_BITS
    first2, count2 = _buckets(hi, deep.astype(np.uint64) << np.uint64(_SUB_BITS), _SUB_BITS,
                              shift)
    level2 = np.where(count2 == 0, first2 - k, np.where(count2 == 1, k + 1 + first2, k + n + 1))
    return level1.astype(np.int32), level2.astype(np.int32)


@dataclass(frozen=True)
class NoiseTable:
    """An inversion table for one symmetric distribution on [-K, K], with its guide table."""

    mechanism: str
    parameter: float  # Skellam: variance mu; discrete Gaussian: sigma^2
    k: int  # support is [-K, K]
    hi: np.ndarray  # high words of T_0..T_{2K-1}, uint64, non-decreasing
    lo: np.ndarray  # low words
    tv_bound: float  # statistical distance of one sample from the exact distribution
    guide_bits: int = field(init=False, repr=False, compare=False)
    guide: np.ndarray = field(init=False, repr=False, compare=False)  # int32, 2^guide_bits
    # int32, 2^SUB_BITS entries per crowded first-level bucket: 3 % of the guide's size at
    # variance 1, 58 % at 1e8, about half the size of hi and lo at the largest tables
    sub_guide: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bits = _guide_bits(self.hi)
        level1, level2 = _guides(self.hi, self.k, bits)
        object.__setattr__(self, "guide_bits", bits)
        object.__setattr__(self, "guide", level1)
        object.__setattr__(self, "sub_guide", level2)

    def sample(self, n: int, rng: CryptoRandom) -> np.ndarray:
        """n independent samples as int64: the least k with u < T_k for each 128-bit u read
        from ``rng`` as (hi, lo) word pairs, in order. Raises ParameterError for a bad n."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ParameterError(f"sample count must be a non-negative int, got {n!r}")
        out = np.empty(n, dtype=np.int64)
        # A chunk's words are written into the part of ``out`` that its samples and the next
        # chunk's will overwrite (the last chunks use scratch): one buffer stays in cache.
        out_words = out.view(np.uint64)
        size = min(n, _CHUNK)
        codes = np.empty(size, dtype=np.int32)
        top16 = self.guide_bits == 16  # the top 16 bits of each high word are a uint16 already
        cell_buf = None if top16 else np.empty(size, dtype=np.uint64)
        shift = np.uint64(64 - self.guide_bits)
        for start in range(0, n, _CHUNK):
            m = min(_CHUNK, n - start)
            stop = start + 2 * m
            words = rng.fill_uint64(out_words[start:stop] if stop <= n
                                    else np.empty(2 * m, dtype=np.uint64))
            hi = words[0::2]
            code = codes[:m]
            if top16:
                cell = words.view(np.uint16)[_TOP16::8]
            else:
                cell = np.right_shift(hi, shift, out=cell_buf[:m]).view(np.int64)
            np.take(self.guide, cell, out=code, mode="clip")
            spill = np.flatnonzero(code > self.k)
            if spill.size:
                code[spill] = self._settle(code[spill], hi[spill], words[1::2], spill)
            out[start:start + m] = code  # after the last read of this chunk's words
        return out

    def _settle(self, code: np.ndarray, hi: np.ndarray, lo: np.ndarray,
                pos: np.ndarray) -> np.ndarray:
        """Samples whose bucket holds thresholds: guide codes ``code`` (see :func:`_guides`),
        high words ``hi``, and their low words at ``lo[pos]``."""
        k, n = self.k, self.hi.size
        code = code.astype(np.int64)
        deep = np.flatnonzero(code > k + n)
        if deep.size:  # the second level, on the next SUB_BITS bits of the high word
            cell = (code[deep] - (k + n + 1)) << _SUB_BITS
            cell |= ((hi[deep] >> np.uint64(64 - self.guide_bits - _SUB_BITS))
                     & np.uint64((1 << _SUB_BITS) - 1)).view(np.int64)
            code[deep] = self.sub_guide[cell]
        first = code - (k + 1)
        t_hi = np.take(self.hi, first, mode="clip")
        out = first - k
        out += hi > t_hi  # u >= T_first, unless the high words tie
        slow = hi == t_hi  # a tie: settled on the low word
        if deep.size:
            sub = code[deep]
            done = sub <= k  # a sub-bucket without thresholds
            out[deep[done]] = sub[done]
            slow[deep[sub > k + n]] = True  # a sub-bucket with two or more
        slow = np.flatnonzero(slow)
        if slow.size:
            out[slow] = self._search(hi[slow], lo[pos[slow]]) - k
        return out

    def _search(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """The number of thresholds T_i <= u, by binary search over the high words; a tie with
        thresholds' high word (probability below 2K 2^-64) is settled by binary search over
        the low words of that run of equal high words."""
        idx = np.searchsorted(self.hi, hi, side="right")
        prev = np.maximum(idx - 1, 0)
        for i in np.flatnonzero((idx > 0) & (self.hi[prev] == hi)).tolist():
            start = int(np.searchsorted(self.hi, hi[i], side="left"))
            idx[i] = start + int(np.searchsorted(self.lo[start:idx[i]], lo[i], side="right"))
        return idx.astype(np.int64)

    def pmf(self) -> np.ndarray:
        """The table's own probabilities of -K..K (float64; for tests and goodness of fit)."""
        t = [(int(h) << 64) | int(lo_) for h, lo_ in zip(self.hi.tolist(), self.lo.tolist(),
                                                          strict=True)]
        edges = [0, *t, 1 << 128]
        return np.array([(b - a) / 2.0**128 for a, b in zip(edges, edges[1:], strict=False)])


def _check_positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating) or not (
        math.isfinite(value) and value > 0
    ):
        raise ParameterError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


@lru_cache(maxsize=16)
def _table(mechanism: str, parameter: float) -> NoiseTable:
    if mechanism == "skellam":
        k = _cut(lambda m: skellam_tail_bound(parameter, m), math.sqrt(parameter))
    else:
        k = _cut(lambda m: dgauss_tail_bound(parameter, m), math.sqrt(parameter))
    if 2 * k + 1 > _MAX_SUPPORT:
        raise ParameterError(f"{mechanism} with parameter {parameter:g} needs a table of "
                             f"{2 * k + 1} entries (limit {_MAX_SUPPORT}); use a smaller scale")
    with localcontext(Context(prec=_PREC)):
        p = Decimal(parameter)  # exact binary value of the float
        half = _skellam_half_pmf(p, k) if mechanism == "skellam" else _dgauss_half_pmf(p, k)
        full = half[:0:-1] + half  # -K..K
        scale = Decimal(2) ** 128
        acc = Decimal(0)
        thresholds = []
        for v in full[:-1]:
            acc += v
            thresholds.append(min(int((acc * scale).to_integral_value()), (1 << 128) - 1))
    mask = (1 << 64) - 1
    hi = np.array([t >> 64 for t in thresholds], dtype=np.uint64)
    lo = np.array([t & mask for t in thresholds], dtype=np.uint64)
    n = 2 * k + 1
    tv = 2.0**-_TAIL_BITS + n * 2.0**-128 + n * 1e-50
    return NoiseTable(mechanism, parameter, k, hi, lo, tv)


def noise_table(mechanism: str, parameter: float) -> NoiseTable:
    """The (cached) table for ``mechanism`` in MECHANISMS with variance-like ``parameter``:
    mu for Skellam, sigma^2 for the discrete Gaussian."""
    if mechanism not in MECHANISMS:
        raise ParameterError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")
    return _table(mechanism, _check_positive(parameter, "noise variance"))


def sample_noise(mechanism: str, parameter: float, n: int,
                 rng: CryptoRandom | None = None) -> np.ndarray:
    """n samples of Skellam(mu = parameter) or N_Z(0, sigma^2 = parameter), as int64."""
    return noise_table(mechanism, parameter).sample(n, rng if rng is not None else CryptoRandom())
