"""Robust Shamir reconstruction (secagg.shamir.decode): correction up to floor((N - t) / 2)
wrong shares with Gao's algorithm, naming them, and every refusal."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_shamir import _interpolate  # the independent Lagrange check of test_shamir

import secagg.shamir as shamir
from secagg import (
    Decoded,
    DuplicateShareError,
    ForeignShareError,
    InsufficientSharesError,
    SecAggTypeError,
    ShamirError,
    Share,
    UndecodableSharesError,
    combine,
    decode,
    split,
)
from secagg.shamir import PRIME, PRIMES

SIZES = [(5, 2), (7, 3), (10, 4), (16, 6), (30, 10), (3, 1), (8, 1), (9, 7), (100, 34)]


def _forge(share: Share, y: int) -> Share:
    """``share`` with the value ``y`` (which must differ from the real one)."""
    assert y != share.y
    return Share(share.dealing_id, share.threshold, share.x, y)


def _forged_value(share: Share, rnd: random.Random, kind: str) -> int:
    if kind == "plus_one":
        return (share.y + 1) % PRIME
    y = rnd.randrange(PRIME)
    return y if y != share.y else (y + 1) % PRIME


@pytest.mark.parametrize("n,t", SIZES + [(4, 4), (1, 1)])
def test_honest_shares_decode_with_no_bad_x(n, t):
    rnd = random.Random(n * 1000 + t)
    secret = rnd.randbytes(rnd.randint(1, 64))
    shares = split(secret, threshold=t, xs=rnd.sample(range(1, 1 << 32), n))
    rnd.shuffle(shares)
    assert decode(shares, threshold=t) == Decoded(secret, ())
    assert decode(shares[:t], threshold=t) == Decoded(secret, ())


def test_honest_input_takes_the_fast_path(monkeypatch):
    """On consistent shares decode costs what combine costs: the error decoder never runs."""
    def refuse(*_):
        raise AssertionError("the error decoder ran on honest shares")

    monkeypatch.setattr(shamir, "_gao_decode", refuse)
    shares = split(b"secret", threshold=14, n=40)
    assert decode(shares, threshold=14) == Decoded(b"secret", ())


@pytest.mark.parametrize("kind", ["random", "plus_one"])
@pytest.mark.parametrize("where", ["random", "first", "last"])
@pytest.mark.parametrize("n,t", SIZES)
def test_forged_shares_up_to_the_decoding_radius_are_corrected_and_named(n, t, where, kind):
    rnd = random.Random(f"{n}/{t}/{where}/{kind}")
    radius = (n - t) // 2
    for _ in range(3):
        secret = rnd.randbytes(rnd.randint(1, 64))
        shares = split(secret, threshold=t, n=n)
        positions = {"random": rnd.sample(range(n), radius), "first": range(radius),
                     "last": range(n - radius, n)}[where]
        for i in positions:
            shares[i] = _forge(shares[i], _forged_value(shares[i], rnd, kind))
        forged_x = tuple(sorted(shares[i].x for i in positions))
        if where == "random":
            rnd.shuffle(shares)
        decoded = decode(shares, threshold=t)
        assert decoded.secret == secret
        assert decoded.bad_x == forged_x
        if radius:
            with pytest.raises(ForeignShareError, match="not on the dealt polynomial"):
                combine(shares, threshold=t)  # combine still refuses what decode corrects


@pytest.mark.parametrize("n,t", SIZES + [(4, 3), (2, 1)])
def test_one_forgery_past_the_radius_refuses(n, t):
    """floor((N - t) / 2) + 1 random forgeries: refused, never a wrong secret."""
    rnd = random.Random(f"past/{n}/{t}")
    radius = (n - t) // 2
    for _ in range(3):
        shares = split(rnd.randbytes(32), threshold=t, n=n)
        for i in rnd.sample(range(n), radius + 1):
            shares[i] = _forge(shares[i], _forged_value(shares[i], rnd, "random"))
        rnd.shuffle(shares)
        with pytest.raises(UndecodableSharesError) as info:
            decode(shares, threshold=t)
        message = str(info.value)
        assert f"{n} shares" in message and f"threshold {t}" in message
        assert f"floor((N - t) / 2) = {radius}" in message


@given(secret=st.binary(min_size=1, max_size=64), t=st.integers(1, 8),
       extra=st.integers(0, 12), data=st.data())
def test_any_forgeries_within_the_radius_are_corrected(secret, t, extra, data):
    n = t + extra
    xs = data.draw(st.lists(st.integers(1, (1 << 32) - 1), min_size=n, max_size=n, unique=True))
    shares = split(secret, threshold=t, xs=xs)
    count = data.draw(st.integers(0, extra // 2))
    positions = data.draw(st.lists(st.integers(0, n - 1), min_size=count, max_size=count,
                                   unique=True))
    for i in positions:
        delta = data.draw(st.integers(1, PRIME - 1))
        shares[i] = _forge(shares[i], (shares[i].y + delta) % PRIME)
    decoded = decode(data.draw(st.permutations(shares)), threshold=t)
    assert decoded.secret == secret
    assert decoded.bad_x == tuple(sorted(xs[i] for i in positions))


def test_n_equal_t_cannot_detect_a_forgery():
    """N = t: no redundancy (radius 0), so a forged share goes unnoticed and decode returns
    the secret of the interpolated polynomial, exactly like combine."""
    shares = split(b"k" * 32, threshold=3, n=5)
    known = shares[:2]
    other = b"o" * 32
    pts = [(0, int.from_bytes(b"\x01" + other, "big"))] + [(s.x, s.y) for s in known]
    forged = _forge(shares[2], _interpolate(pts, shares[2].x))
    assert decode([*known, forged], threshold=3) == Decoded(other, ())
    assert combine([*known, forged], threshold=3) == other
    # one more honest share makes the forgery detectable, but N - t = 1 cannot correct it
    with pytest.raises(UndecodableSharesError):
        decode([*known, forged, shares[3]], threshold=3)
    # and two more correct it
    assert decode([*known, forged, *shares[3:]], threshold=3) == Decoded(b"k" * 32, (3,))


def test_decoded_value_must_be_a_secret_encoding():
    """t = 1 (a repetition code): the majority value 5 wins, but it is no secret encoding."""
    shares = [Share(bytes(16), 1, x, y) for x, y in ((1, 5), (2, 5), (3, 6))]
    with pytest.raises(ForeignShareError, match="not a valid secret encoding") as info:
        decode(shares, threshold=1)
    assert not isinstance(info.value, UndecodableSharesError)
    value = int.from_bytes(b"\x01abc", "big")
    shares = [Share(bytes(16), 1, x, y) for x, y in ((1, value), (2, 6), (3, value))]
    assert decode(shares, threshold=1) == Decoded(b"abc", (2,))


def test_argument_errors_are_those_of_combine():
    a = split(b"secret", threshold=2, n=5)
    b = split(b"secret", threshold=2, n=5)
    with pytest.raises(ForeignShareError, match="different dealings") as info:
        decode([*a[:3], b[3]], threshold=2)
    assert not isinstance(info.value, UndecodableSharesError)
    with pytest.raises(DuplicateShareError):
        decode([a[0], a[1], a[0]], threshold=2)
    with pytest.raises(ForeignShareError, match="threshold 2, expected 3"):
        decode(a, threshold=3)
    with pytest.raises(InsufficientSharesError):
        decode(a[:1], threshold=2)
    with pytest.raises(InsufficientSharesError):
        decode([], threshold=2)
    with pytest.raises(SecAggTypeError):
        decode([b"not a share"], threshold=2)
    with pytest.raises(SecAggTypeError):
        decode(b"bytes are not shares", threshold=2)
    for bad in (None, True, 2.0):
        with pytest.raises(SecAggTypeError):
            decode(a, threshold=bad)
    with pytest.raises(TypeError):
        decode(a)  # the caller's threshold is required


def test_error_type_and_result():
    assert issubclass(UndecodableSharesError, ForeignShareError)
    assert issubclass(UndecodableSharesError, ShamirError)
    assert issubclass(UndecodableSharesError, ValueError)
    decoded = decode(split(b"secret", threshold=2, n=3), threshold=2)
    assert "secret" not in repr(decoded) and "bad_x=()" in repr(decoded)
    with pytest.raises(AttributeError):
        decoded.bad_x = (1,)


@given(a=st.lists(st.integers(0, PRIMES[0] - 1), max_size=12),
       b=st.lists(st.integers(0, PRIMES[0] - 1), min_size=1, max_size=8),
       p=st.sampled_from(PRIMES))
def test_polynomial_division(a, b, p):
    a, b = shamir._poly_trim([c % p for c in a]), shamir._poly_trim([c % p for c in b])
    if not b:
        b = [1]
    q, r = shamir._poly_divmod(a, b, p)
    assert len(r) < len(b)
    assert shamir._poly_sub(a, shamir._poly_mul(q, b, p), p) == r


@given(points=st.lists(st.tuples(st.integers(1, (1 << 32) - 1), st.integers(0, PRIMES[0] - 1)),
                       min_size=1, max_size=12, unique_by=lambda p: p[0]),
       p=st.sampled_from(PRIMES))
def test_interpolation_through_every_point(points, p):
    points = [(x, y % p) for x, y in points]
    g0 = shamir._poly_from_roots([x for x, _ in points], p)
    assert len(g0) == len(points) + 1 and all(shamir._poly_eval(g0, x, p) == 0
                                              for x, _ in points)
    g1 = shamir._poly_interpolate(points, g0, p)
    assert len(g1) <= len(points)
    assert all(shamir._poly_eval(g1, x, p) == y for x, y in points)


def test_colluding_forgers_past_the_radius_can_steer_the_result():
    """The limit stated in decode's docstring, pinned: N = 7, t = 3 (radius 2). Three colluding
    forgers who know two honest shares put their shares on a polynomial through those two and
    a secret of their choice; decode then names the other two honest shares as the bad ones."""
    shares = split(b"k" * 32, threshold=3, n=7)
    known, others, forgers = shares[:2], shares[2:4], shares[4:]
    pts = [(0, int.from_bytes(b"\x01" + b"o" * 32, "big"))] + [(s.x, s.y) for s in known]
    forged = [_forge(s, _interpolate(pts, s.x)) for s in forgers]
    assert decode([*known, *others, *forged], threshold=3) == Decoded(
        b"o" * 32, tuple(s.x for s in others))
