"""secagg.field: the eleven component primes of the Shamir ring and their batched arithmetic,
checked against plain Python integers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import field as ff


def _small_primes(limit: int = 1 << 24) -> np.ndarray:
    sieve = np.ones(limit, dtype=bool)
    sieve[:2] = False
    for i in range(2, math.isqrt(limit) + 1):
        if sieve[i]:
            sieve[i * i::i] = False
    return np.flatnonzero(sieve).astype(np.int64)


def test_the_primes_are_prime_distinct_above_2_32_and_their_product_holds_a_secret():
    small = _small_primes()  # every prime below 2^24 > sqrt(2^48): trial division is a proof
    for p in ff.PRIMES:
        assert 1 << 32 < p < 1 << 48
        assert not (p % small == 0).any()
    assert len(set(ff.PRIMES)) == ff.COUNT == 11
    assert ff.MODULUS == math.prod(ff.PRIMES)
    assert 1 << 521 < ff.MODULUS < 1 << (8 * ff.ELEMENT_BYTES)  # 0x01 || 64 bytes fits


def _rows(values_per_prime):
    return np.array(values_per_prime, dtype=np.int64)


residues = st.lists(st.integers(0, (1 << 64) - 1), min_size=1, max_size=40)


def _reduced(raw: list[int]) -> np.ndarray:
    return _rows([[v % p for v in raw] for p in ff.PRIMES])


@settings(max_examples=60)
@given(a=residues, b=residues)
def test_mul_is_exact(a, b):
    n = min(len(a), len(b))
    ra, rb = _reduced(a[:n]), _reduced(b[:n])
    got = ff.mul(ra, rb)
    for row, p in enumerate(ff.PRIMES):
        assert got[row].tolist() == [x * y % p for x, y in zip(ra[row].tolist(), rb[row].tolist(),
                                                               strict=True)]


@pytest.mark.parametrize("n", [1, 100, 5000])  # the one-pass path and the row-by-row path
def test_mul_at_the_edges_of_the_field(n):
    top = _rows([[p - 1 - (i % 3) for i in range(n)] for p in ff.PRIMES])
    got = ff.mul(top, top)
    for row, p in enumerate(ff.PRIMES):
        assert got[row].tolist() == [(p - 1 - (i % 3)) ** 2 % p for i in range(n)]
    # unreduced inputs below 2^48 are allowed (the bound of the module docstring)
    big = np.full((1, n), (1 << 48) - 1, dtype=np.int64)
    got = ff.mul(big, big)
    assert all(got[row].tolist() == [((1 << 48) - 1) ** 2 % p] * n
               for row, p in enumerate(ff.PRIMES))


@settings(max_examples=40)
@given(a=residues, v=st.lists(st.integers(0, (1 << 48) - 1), min_size=1, max_size=40))
def test_mul_int_is_exact(a, v):
    n = min(len(a), len(v))
    ra = _reduced(a[:n])
    got = ff.mul_int(ra, np.array(v[:n], dtype=np.int64))
    for row, p in enumerate(ff.PRIMES):
        assert got[row].tolist() == [x * y % p for x, y in zip(ra[row].tolist(), v[:n],
                                                               strict=True)]


@settings(max_examples=40)
@given(v=st.lists(st.integers(0, (1 << 63) - 1), min_size=1, max_size=40))
def test_reduce_is_exact(v):
    got = ff.reduce(np.array(v, dtype=np.int64))
    for row, p in enumerate(ff.PRIMES):
        assert got[row].tolist() == [x % p for x in v]


@settings(max_examples=40)
@given(f=st.lists(st.lists(st.integers(1, (1 << 32) - 1), min_size=3, max_size=3),
                  min_size=1, max_size=20))
def test_exact_products(f):
    factors = np.array(f, dtype=np.int64)  # (n factors, 3)
    got = ff.exact_products(factors)
    for row, p in enumerate(ff.PRIMES):
        assert got[row].tolist() == [math.prod(col) % p for col in zip(*f, strict=True)]


@pytest.mark.parametrize("top", [3, 1000, (1 << 32) - 1])
def test_exact_products_for_every_group_size(top):
    rnd = np.random.default_rng(top)
    factors = rnd.integers(1, top + 1, size=(37, 200), dtype=np.int64)
    got = ff.exact_products(factors)
    for row, p in enumerate(ff.PRIMES):
        assert got[row].tolist() == [math.prod(int(x) for x in factors[:, i]) % p
                                     for i in range(200)]


@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000, 5001])
def test_inverse(n):
    rnd = np.random.default_rng(n)
    a = _rows([[int(v) % (p - 1) + 1 for v in rnd.integers(0, 1 << 62, size=n)]
               for p in ff.PRIMES])
    inv = ff.inverse(a.reshape(ff.COUNT, 1, n))
    assert inv.shape == (ff.COUNT, 1, n)
    assert (ff.mul(inv.reshape(ff.COUNT, n), a) == 1).all()
    a[3, n // 2] = 0
    with pytest.raises(ZeroDivisionError):
        ff.inverse(a)


def test_negate():
    a = _rows([[0, 1, p - 1] for p in ff.PRIMES])
    got = ff.negate(a)
    assert got.tolist() == [[0, p - 1, 1] for p in ff.PRIMES]


@settings(max_examples=40)
@given(values=st.lists(st.integers(0, ff.MODULUS - 1), min_size=1, max_size=30))
def test_element_bytes_residues_and_back(values):
    raw = b"".join(ff.int_to_bytes(v) for v in values)
    assert len(raw) == ff.ELEMENT_BYTES * len(values)
    res = ff.unpack(np.frombuffer(raw, dtype=np.uint8).reshape(-1, ff.ELEMENT_BYTES))
    assert res.tolist() == ff.from_ints(values).tolist()
    assert ff.to_ints(res) == values
    assert ff.noncanonical(res) is None
    assert [ff.bytes_to_int(ff.int_to_bytes(v)) for v in values] == values


def test_noncanonical_residues_are_found():
    good = ff.int_to_bytes(12345)
    bad = ff.int_to_bytes(0)[:6 * 4] + ff.PRIMES[4].to_bytes(6, "big") + good[6 * 5:]
    assert ff.bytes_to_int(bad) is None
    res = ff.unpack(np.frombuffer(good + bad + good, dtype=np.uint8).reshape(3, -1))
    assert ff.noncanonical(res).tolist() == [False, True, False]
    edge = b"".join((p - 1).to_bytes(6, "big") for p in ff.PRIMES)
    assert ff.bytes_to_int(edge) == ff.MODULUS - 1
