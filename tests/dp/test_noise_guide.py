"""The guide-table sampler (dp.noise.NoiseTable.sample) against plain inversion.

The sampler must be exactly the same function of each 128-bit uniform u = (hi, lo) as inversion
of the threshold table, the least k with u < T_k (so the table's TV bound per sample holds as
stated). Two references are kept here: ``bisect_right`` on the thresholds as 128-bit Python
integers (the definition), and the vectorised inversion the sampler used before its guide table
(``searchsorted`` over the high words, ties settled on the low word). Words are drawn uniformly
and also placed at and next to every threshold, on ties of the high word, and on the edges of the
first- and second-level guide buckets, for real tables and for synthetic ones whose thresholds
crowd into few buckets (so every route of the sampler is taken).
"""

from __future__ import annotations

import bisect

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dp import noise as noise_mod
from dp.noise import NoiseTable, noise_table
from dp.randomness import CryptoRandom

M64 = (1 << 64) - 1
M128 = (1 << 128) - 1
REAL = [("skellam", 1.0), ("skellam", 30.0), ("skellam", 1e4), ("discrete-gaussian", 3.0),
        ("discrete-gaussian", 250.0), ("skellam", 1e6)]


class _ScriptedRandom(CryptoRandom):
    """A CryptoRandom that returns preset uint64 words, in order."""

    def __init__(self, words) -> None:
        super().__init__(bytes(32))
        self._words = np.array(words, dtype=np.uint64)
        self._pos = 0

    def fill_uint64(self, out: np.ndarray) -> np.ndarray:
        n = out.size
        words = self._words[self._pos:self._pos + n]
        assert words.size == n, "sampler asked for more words than scripted"
        self._pos += n
        out[...] = words
        return out


def _thresholds(table: NoiseTable) -> list[int]:
    return [(int(h) << 64) | int(lo) for h, lo in zip(table.hi.tolist(), table.lo.tolist())]


def _bisect_reference(table: NoiseTable, us: list[int]) -> list[int]:
    t = _thresholds(table)
    return [bisect.bisect_right(t, u) - table.k for u in us]


def _searchsorted_reference(table: NoiseTable, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The inversion as the sampler computed it before the guide table."""
    idx = np.searchsorted(table.hi, hi, side="right")
    prev = np.maximum(idx - 1, 0)
    for i in np.nonzero((idx > 0) & (table.hi[prev] == hi))[0].tolist():
        j = int(idx[i])
        while j > 0 and table.hi[j - 1] == hi[i] and table.lo[j - 1] > lo[i]:
            j -= 1
        idx[i] = j
    return idx.astype(np.int64) - table.k


def _check(table: NoiseTable, us: list[int]) -> None:
    us = [u & M128 for u in us]
    words = [w for u in us for w in (u >> 64, u & M64)]
    got = table.sample(len(us), _ScriptedRandom(words)).tolist()
    assert got == _bisect_reference(table, us)
    hi = np.array([u >> 64 for u in us], dtype=np.uint64)
    lo = np.array([u & M64 for u in us], dtype=np.uint64)
    assert got == _searchsorted_reference(table, hi, lo).tolist()


def _adversarial(table: NoiseTable, picks: list[tuple[int, int, int]]) -> list[int]:
    """Words at and next to thresholds, on high-word ties, and on guide bucket edges."""
    t = _thresholds(table)
    g, s = table.guide_bits, noise_mod._SUB_BITS
    us = []
    for i, d, r in picks:
        ti = t[i % len(t)]
        us += [ti + d, ((ti >> 64) << 64) | (r & M64)]  # near T_i; a tie on its high word
        for width in (128 - g, 128 - g - s):  # edges of the first- and second-level buckets
            edge = (ti >> width) << width
            us += [edge + d, edge + (1 << width) + d]
    return us


@pytest.fixture(scope="module", params=REAL, ids=[f"{m}-{p:g}" for m, p in REAL])
def real_table(request):
    return noise_table(*request.param)


_picks = st.lists(st.tuples(st.integers(0, 2**22), st.integers(-2, 2), st.integers(0, M64)),
                  min_size=1, max_size=40)


@given(picks=_picks, extra=st.lists(st.integers(0, M128), max_size=40))
def test_sampler_equals_inversion_on_real_tables(real_table, picks, extra):
    _check(real_table, _adversarial(real_table, picks) + extra)


def test_every_threshold_and_its_neighbours_on_real_tables(real_table):
    t = _thresholds(real_table)
    if len(t) > 10_000:  # the old inversion walks runs of tied high words one step at a time
        t = t[:200] + t[len(t) // 2 - 2000:len(t) // 2 + 2000] + t[-200:]
    _check(real_table, [ti + d for ti in t for d in (-1, 0, 1)])


@st.composite
def _crowded_table(draw):
    """A table of 2K sorted thresholds grouped around a few centres at mixed spreads, so that
    buckets hold zero, one, two or many thresholds and high words tie."""
    k = draw(st.integers(1, 60))
    centres = draw(st.lists(st.integers(0, M128), min_size=1, max_size=4))
    spreads = draw(st.lists(st.sampled_from([0, 1, 8, 64, 65, 100, 108, 112, 116, 120, 128]),
                            min_size=1, max_size=4))
    t = []
    for _ in range(2 * k):
        c = draw(st.sampled_from(centres))
        e = draw(st.sampled_from(spreads))
        t.append((c + draw(st.integers(0, (1 << e) - 1))) & M128)
    t.sort()
    hi = np.array([v >> 64 for v in t], dtype=np.uint64)
    lo = np.array([v & M64 for v in t], dtype=np.uint64)
    return NoiseTable("skellam", 1.0, k, hi, lo, 0.0)


@given(table=_crowded_table(), picks=_picks, extra=st.lists(st.integers(0, M128), max_size=20))
def test_sampler_equals_inversion_on_crowded_tables(table, picks, extra):
    _check(table, _adversarial(table, picks) + extra)


@given(table=_crowded_table(), picks=_picks, chunk=st.integers(1, 9))
def test_chunking_does_not_change_the_samples(table, picks, chunk):
    saved = noise_mod._CHUNK
    noise_mod._CHUNK = chunk
    try:
        _check(table, _adversarial(table, picks))
    finally:
        noise_mod._CHUNK = saved


def test_uniform_words_on_a_large_table_take_every_route():
    """Skellam(1e6): most samples resolve in the guide alone, and the one-threshold compare,
    the second level and the binary search all occur; all agree with inversion."""
    table = noise_table("skellam", 1e6)
    words = CryptoRandom(bytes(32)).uint64(2 * 200_000)
    hi, lo = words[0::2], words[1::2]
    got = table.sample(hi.size, _ScriptedRandom(words))
    np.testing.assert_array_equal(got, _searchsorted_reference(table, hi, lo))
    codes = table.guide[(hi >> np.uint64(64 - table.guide_bits)).astype(np.int64)]
    k, n = table.k, 2 * table.k
    assert np.mean(codes <= k) > 0.95
    assert np.any((codes > k) & (codes <= k + n))
    assert np.any(codes > k + n)


def test_guide_codes_are_what_they_claim():
    """Every first-level bucket: a code <= K is the sample at both ends of the bucket; a code for
    one threshold names the only threshold whose top bits are the bucket's."""
    table = noise_table("skellam", 1e4)
    g, k, n = table.guide_bits, table.k, 2 * table.k
    top = (table.hi >> np.uint64(64 - g)).astype(np.int64)
    j = np.arange(1 << g)
    below = np.searchsorted(top, j, side="left")
    inside = np.searchsorted(top, j, side="right") - below
    codes = table.guide.astype(np.int64)
    np.testing.assert_array_equal(codes[inside == 0], (below - k)[inside == 0])
    one = inside == 1
    np.testing.assert_array_equal(codes[one] - (k + 1), below[one])
    assert np.all(codes[inside > 1] > k + n)
    assert table.guide.dtype == np.int32 and table.sub_guide.dtype == np.int32
