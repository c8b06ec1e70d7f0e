"""Shamir t-of-n: reconstruction properties and every refusal."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secagg import (
    DuplicateShareError,
    EncodingError,
    ForeignShareError,
    InsufficientSharesError,
    SecAggTypeError,
    ShamirError,
    Share,
    ThresholdError,
    combine,
    split,
)
from secagg.shamir import MODULUS, PRIME, PRIMES, SHARE_BYTES, SHARE_VERSION


def test_ring_modulus_is_the_product_of_the_component_primes():
    """Z_P holds a whole 64-byte secret encoding (below 2^521) and fits the 66 bytes of a
    share; the primes themselves are checked in test_field.py and test_vectors.py."""
    assert PRIME == MODULUS == math.prod(PRIMES) and len(set(PRIMES)) == 11
    assert 1 << 527 < MODULUS < 1 << 528
    assert all(p > 1 << 32 for p in PRIMES)  # x-coordinates are distinct in every component


@given(secret=st.binary(min_size=1, max_size=64), n=st.integers(1, 12), data=st.data())
def test_any_t_of_n_in_any_order(secret, n, data):
    t = data.draw(st.integers(1, n))
    shares = split(secret, threshold=t, n=n)
    subset = data.draw(st.permutations(shares)).__getitem__(slice(0, data.draw(st.integers(t, n))))
    assert combine(subset) == secret


@given(secret=st.binary(min_size=1, max_size=64))
def test_fewer_than_t_shares_refused(secret):
    shares = split(secret, threshold=3, n=5)
    with pytest.raises(InsufficientSharesError):
        combine(shares[:2])


def _interpolate(points, at):
    total = 0
    for i, (xi, yi) in enumerate(points):
        num = den = 1
        for j, (xj, _) in enumerate(points):
            if j != i:
                num, den = num * (at - xj) % PRIME, den * (xi - xj) % PRIME
        total += yi * num * pow(den, -1, PRIME)
    return total % PRIME


@given(other=st.binary(min_size=32, max_size=32))
def test_t_minus_one_shares_are_consistent_with_any_secret(other):
    """Perfect secrecy: t-1 real shares plus one share forged for ``other`` reconstruct
    ``other``, so t-1 shares rule out no secret at all."""
    shares = split(b"k" * 32, threshold=3, n=5)
    known = shares[:2]
    pts = [(0, int.from_bytes(b"\x01" + other, "big"))] + [(s.x, s.y) for s in known]
    forged = Share(known[0].dealing_id, 3, 5, _interpolate(pts, 5))
    assert combine([*known, forged]) == other


def test_xs_coordinates_and_serialisation():
    shares = split(bytes(32), threshold=2, xs=[10, 4294967295, 7])
    assert [s.x for s in shares] == [10, 4294967295, 7]
    assert combine([shares[2], shares[1]]) == bytes(32)
    for s in shares:
        b = s.to_bytes()
        assert len(b) == SHARE_BYTES and Share.from_bytes(b) == s


@pytest.mark.parametrize("t,n", [(0, 5), (6, 5), (-1, 3)])
def test_threshold_outside_range(t, n):
    with pytest.raises(ThresholdError):
        split(b"s", threshold=t, n=n)


def test_duplicate_shares():
    shares = split(b"secret", threshold=2, n=3)
    with pytest.raises(DuplicateShareError):
        combine([shares[0], shares[0]])
    with pytest.raises(DuplicateShareError):
        split(b"s", threshold=1, xs=[1, 1])


def test_foreign_shares():
    a = split(b"secret", threshold=2, n=3)
    b = split(b"secret", threshold=2, n=3)
    with pytest.raises(ForeignShareError, match="different dealings"):
        combine([a[0], b[1]])
    forged = Share(a[2].dealing_id, a[2].threshold, a[2].x, (a[2].y + 1) % PRIME)
    with pytest.raises(ForeignShareError, match="not on the dealt polynomial"):
        combine([a[0], a[1], forged])


def test_bad_secrets_and_types():
    with pytest.raises(EncodingError):
        split(b"", threshold=1, n=1)
    with pytest.raises(EncodingError):
        split(bytes(65), threshold=1, n=1)
    with pytest.raises(SecAggTypeError):
        split("text", threshold=1, n=1)
    with pytest.raises(SecAggTypeError):
        split(b"s", threshold=1, n=2, xs=[1, 2])
    with pytest.raises(SecAggTypeError):
        combine([b"not a share"])
    with pytest.raises(EncodingError):
        split(b"s", threshold=1, xs=[0])


def test_strict_share_decoding():
    good = split(b"secret", threshold=1, n=1)[0].to_bytes()
    assert good[0] == SHARE_VERSION == 2
    residue = good[25:]
    for bad in (good[:-1], good + b"\0", b"\x01" + good[1:], b"\x03" + good[1:],
                good[:17] + (0).to_bytes(4, "big") + good[21:],  # threshold 0
                good[:21] + (0).to_bytes(4, "big") + good[25:],  # x 0
                good[:25] + PRIMES[0].to_bytes(6, "big") + residue[6:],  # residue = its prime
                good[:-6] + (PRIMES[-1] + 1).to_bytes(6, "big"),  # above its prime
                good[:25] + b"\xff" * 66):                        # every residue too big
        with pytest.raises(EncodingError):
            Share.from_bytes(bad)
    top = good[:25] + b"".join((p - 1).to_bytes(6, "big") for p in PRIMES)
    assert Share.from_bytes(top).y == MODULUS - 1  # the largest canonical value
    rnd = random.Random(7)
    for _ in range(200):
        blob = bytes(rnd.randrange(256) for _ in range(SHARE_BYTES))
        try:
            Share.from_bytes(blob)
        except EncodingError:
            pass


@pytest.mark.parametrize("value", [
    (1 << 520) + 5,                      # 0x01 prefix but 65 bytes follow: too long
    5,                                   # no 0x01 prefix
    1,                                   # prefix only, empty secret
    int.from_bytes(b"\x02" + bytes(32), "big"),
])
def test_reconstructed_value_must_be_a_secret_encoding(value):
    share = Share(bytes(16), 1, 1, value)  # t = 1: the share's y is the constant term
    with pytest.raises(ForeignShareError, match="not a valid secret encoding"):
        combine([share])


def test_longest_secret_roundtrips():
    secret = b"\xff" * 64
    assert combine(split(secret, threshold=2, n=3)[1:]) == secret


def test_caller_threshold_is_enforced():
    shares = split(b"secret", threshold=2, n=4)
    assert combine(shares[:2], threshold=2) == b"secret"
    with pytest.raises(ForeignShareError, match="threshold 2, expected 3"):
        combine(shares, threshold=3)
    with pytest.raises(SecAggTypeError):
        combine(None)
    with pytest.raises(SecAggTypeError):
        combine(b"bytes are not shares")


def test_share_repr_hides_the_value():
    share = split(b"secret", threshold=1, n=1)[0]
    assert str(share.y) not in repr(share) and "y=" not in repr(share)


def test_errors_share_a_base():
    for cls in (ThresholdError, InsufficientSharesError, DuplicateShareError, ForeignShareError):
        assert issubclass(cls, ShamirError) and issubclass(cls, ValueError)
