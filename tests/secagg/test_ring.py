"""Ring Z_{2^b}: properties against Python integers, and validation errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from secagg import Ring, RingError, SecAggError, SecAggTypeError, ShapeError


@st.composite
def ring_and_vectors(draw, count=2):
    bits = draw(st.integers(8, 64))
    d = draw(st.integers(0, 20))
    vecs = [draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=d, max_size=d))
            for _ in range(count)]
    return Ring(bits), vecs


@given(ring_and_vectors())
def test_add_sub_neg_equal_integer_arithmetic(rv):
    ring, (a, b) = rv
    m = ring.modulus
    A, B = np.array(a, dtype=ring.dtype), np.array(b, dtype=ring.dtype)
    assert [int(v) for v in ring.add(A, B)] == [(x + y) % m for x, y in zip(a, b)]
    assert [int(v) for v in ring.sub(A, B)] == [(x - y) % m for x, y in zip(a, b)]
    assert [int(v) for v in ring.neg(A)] == [(-x) % m for x in a]


@given(ring_and_vectors(count=1))
def test_centred_lift_and_back(rv):
    ring, (a,) = rv
    A = np.array(a, dtype=ring.dtype)
    c = ring.centred(A)
    half = 1 << (ring.bits - 1)
    assert c.dtype == np.int64
    assert [int(v) for v in c] == [x - ring.modulus if x >= half else x for x in a]
    assert np.array_equal(ring.from_signed(c), A)


@pytest.mark.parametrize("bits", [8, 31, 32, 33, 63, 64])
def test_centred_lift_edges(bits):
    ring = Ring(bits)
    half, m = 1 << (bits - 1), 1 << bits
    vals = [0, 1, half - 1, half, half + 1, m - 1]
    got = ring.centred(np.array(vals, dtype=ring.dtype)).tolist()
    assert got == [0, 1, half - 1, -half, -half + 1, -1]
    assert ring.from_signed(np.array(got, dtype=np.int64)).tolist() == vals


@pytest.mark.parametrize("bits,dtype", [(8, np.uint32), (32, np.uint32), (33, np.uint64),
                                        (64, np.uint64)])
def test_storage_dtype(bits, dtype):
    assert Ring(bits).dtype == dtype


@pytest.mark.parametrize("bits", [0, 7, 65, 128, -1])
def test_bit_width_out_of_range(bits):
    with pytest.raises(RingError, match="outside"):
        Ring(bits)


@pytest.mark.parametrize("bits", [32.0, "32", None, True])
def test_bit_width_wrong_type(bits):
    with pytest.raises(SecAggTypeError):
        Ring(bits)


def test_validate_refuses_bad_vectors():
    r = Ring(16)
    with pytest.raises(SecAggTypeError, match="numpy array"):
        r.validate([1, 2, 3])
    with pytest.raises(SecAggTypeError, match="float"):
        r.validate(np.zeros(3, dtype=np.float64))
    with pytest.raises(SecAggTypeError, match="bool"):
        r.validate(np.zeros(3, dtype=bool))
    with pytest.raises(ShapeError, match="1-D"):
        r.validate(np.zeros((2, 2), dtype=np.uint32))
    with pytest.raises(ShapeError, match="length 3, expected 4"):
        r.validate(np.zeros(3, dtype=np.uint32), length=4)
    with pytest.raises(RingError, match=r"vector\[1\] = 65536"):
        r.validate(np.array([0, 1 << 16], dtype=np.uint32))
    with pytest.raises(RingError, match="negative"):
        r.validate(np.array([0, -1], dtype=np.int64))
    # errors are also the builtin kinds and the package base
    with pytest.raises(ValueError):
        r.validate(np.array([1 << 20], dtype=np.uint64))
    with pytest.raises(SecAggError):
        r.validate(np.array([1 << 20], dtype=np.uint64))


def test_zeros_and_from_signed_refusals():
    r = Ring(32)
    with pytest.raises(ShapeError):
        r.zeros(-1)
    with pytest.raises(SecAggTypeError):
        r.zeros(2.5)
    with pytest.raises(ShapeError):
        r.from_signed(np.zeros((2, 2), dtype=np.int64))


def test_validate_converts_in_range_integers():
    r = Ring(40)
    out = r.validate(np.array([0, 5, (1 << 40) - 1], dtype=np.int64))
    assert out.dtype == np.uint64 and out.tolist() == [0, 5, (1 << 40) - 1]
    a = np.array([1, 2], dtype=np.uint64)
    assert r.validate(a) is a
