"""Bulk parsing (secagg.ShareTable) and batched reconstruction (secagg.decode_many): the same
answers as the per-secret decode, an independent Lagrange check over Z_P, secrecy of t - 1
shares in the ring, wrong shares named through Gao's decoder, and every refusal."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_shamir import _interpolate  # the independent Lagrange check of test_shamir

import secagg.shamir as shamir
from secagg import (
    Decoded,
    DuplicateShareError,
    EncodingError,
    ForeignShareError,
    InsufficientSharesError,
    SecAggTypeError,
    SecAggValueError,
    ShamirError,
    ShapeError,
    Share,
    ShareTable,
    UndecodableSharesError,
    decode,
    decode_many,
    split,
)
from secagg.field import PRIMES
from secagg.hazmat import shamir_split_with_coefficients
from secagg.shamir import MODULUS, SHARE_BYTES, check_held


def _forge(share: Share, y: int) -> Share:
    assert y != share.y
    return Share(share.dealing_id, share.threshold, share.x, y)


def _one_residue_off(share: Share, component: int) -> Share:
    """``share`` changed in one component field only: y + e_l, e_l the CRT idempotent of p_l
    (1 mod p_l, 0 mod every other prime)."""
    p = PRIMES[component]
    e = (MODULUS // p) * pow(MODULUS // p, -1, p) % MODULUS
    return _forge(share, (share.y + e) % MODULUS)


def _outcome(shares, t):
    try:
        return decode(shares, threshold=t)
    except ShamirError as exc:
        return exc


def _same(a, b) -> bool:
    if isinstance(a, Exception) or isinstance(b, Exception):
        return type(a) is type(b) and str(a) == str(b)
    return a == b


def _batch(groups_of_shares):
    shares = [s for g in groups_of_shares for s in g]
    groups = np.array([i for i, g in enumerate(groups_of_shares) for _ in g], dtype=np.int64)
    return ShareTable.from_shares(shares), groups


def _mixed_round(seed: int, count: int = 40):
    """Groups of every kind: honest (with and without extra shares), forged within and past
    the radius, one component off, too few, a duplicate, another dealing, big x."""
    rnd = random.Random(seed)
    groups, ts = [], []
    for i in range(count):
        t = rnd.randint(1, 7)
        n = t + rnd.randint(0, 8)
        xs = rnd.sample(range(1, 1 << 32), n) if i % 3 == 0 else rnd.sample(range(1, 200), n)
        shares = split(rnd.randbytes(rnd.randint(1, 64)), threshold=t, xs=xs)
        radius = (n - t) // 2
        kind = i % 8
        if kind == 1 and radius:
            for j in rnd.sample(range(n), rnd.randint(1, radius)):
                shares[j] = _forge(shares[j], rnd.randrange(MODULUS))
        elif kind == 2:
            for j in rnd.sample(range(n), min(n, radius + 1)):
                shares[j] = _forge(shares[j], (shares[j].y + 1) % MODULUS)
        elif kind == 3 and radius:
            shares[0] = _one_residue_off(shares[0], rnd.randrange(len(PRIMES)))
        elif kind == 4:
            shares = shares[: t - 1]
        elif kind == 5:
            shares = [*shares, shares[0]]
        elif kind == 6:
            shares = [*shares, split(b"other", threshold=t, n=t)[0]]
        rnd.shuffle(shares)
        groups.append(shares)
        ts.append(t)
    return groups, ts


@pytest.mark.parametrize("seed", range(4))
def test_batched_equals_per_secret(seed):
    groups, ts = _mixed_round(seed)
    # decode_many takes one caller threshold: batch the groups by threshold
    for t in set(ts):
        chosen = [g for g, tt in zip(groups, ts, strict=True) if tt == t]
        table, idx = _batch(chosen)
        got = decode_many(table, idx, threshold=t, count=len(chosen))
        want = [_outcome(g, t) for g in chosen]
        assert all(_same(a, b) for a, b in zip(got, want, strict=True))


@settings(max_examples=25, deadline=None)
@given(data=st.data(), count=st.integers(1, 12), t=st.integers(1, 6))
def test_any_t_or_more_shares_reconstruct_in_a_batch(data, count, t):
    groups, secrets_ = [], []
    for _ in range(count):
        n = t + data.draw(st.integers(0, 6))
        xs = data.draw(st.lists(st.integers(1, (1 << 32) - 1), min_size=n, max_size=n,
                                unique=True))
        secret = data.draw(st.binary(min_size=1, max_size=64))
        shares = split(secret, threshold=t, xs=xs)
        keep = data.draw(st.integers(t, n))
        groups.append(data.draw(st.permutations(shares))[:keep])
        secrets_.append(secret)
    table, idx = _batch(groups)
    got = decode_many(table, idx, threshold=t)
    assert got == [Decoded(s, ()) for s in secrets_]
    # independently: Lagrange over Z_P with Python integers, from the first t shares
    for g, s in zip(groups, secrets_, strict=True):
        assert _interpolate([(sh.x, sh.y) for sh in g[:t]], 0) == int.from_bytes(b"\x01" + s,
                                                                                 "big")


def test_wrong_shares_are_named_through_the_fallback_and_only_there(monkeypatch):
    """Honest groups never reach Gao's decoder; each forged group does, once per component
    field, and its forgers are named, including a forgery in a single component."""
    calls = []
    real = shamir._gao_decode

    def counting(points, t, p):
        calls.append(p)
        return real(points, t, p)

    monkeypatch.setattr(shamir, "_gao_decode", counting)
    rnd = random.Random(5)
    groups, want = [], []
    for i in range(30):
        shares = split(rnd.randbytes(32), threshold=5, xs=rnd.sample(range(1, 1000), 13))
        bad = []
        if i % 10 == 3:
            for j in (1, 4, 7):
                shares[j] = _forge(shares[j], rnd.randrange(MODULUS))
                bad.append(shares[j].x)
        if i % 10 == 7:
            shares[2] = _one_residue_off(shares[2], 10)
            bad.append(shares[2].x)
        groups.append(shares)
        want.append(tuple(sorted(bad)))
    table, idx = _batch(groups)
    got = decode_many(table, idx, threshold=5)
    assert [g.bad_x for g in got] == want
    assert len(calls) == 6  # one run per forged group: each forgery spans its components


def test_forgeries_in_different_components_are_all_found(monkeypatch):
    """Wrong shares each off in other component fields: one run of Gao's decoder per
    component an error touches, and every wrong share named."""
    calls = []
    real = shamir._gao_decode
    monkeypatch.setattr(shamir, "_gao_decode",
                        lambda points, t, p: calls.append(p) or real(points, t, p))
    rnd = random.Random(8)
    shares = split(rnd.randbytes(32), threshold=5, xs=rnd.sample(range(1, 1 << 32), 14))
    shares[1] = _one_residue_off(shares[1], 2)
    shares[4] = _one_residue_off(shares[4], 9)
    shares[6] = _one_residue_off(_one_residue_off(shares[6], 9), 0)
    shares[9] = _forge(shares[9], rnd.randrange(MODULUS))
    got = decode(shares, threshold=5)
    assert got.bad_x == tuple(sorted(shares[i].x for i in (1, 4, 6, 9)))
    assert 1 <= len(calls) <= 3  # components 0, 2 and 9 at most (9 catches 4, 6 and 9)
    five = [*shares, ]
    five[11] = _one_residue_off(five[11], 5)  # one more: past the radius (14 - 5) // 2 = 4
    with pytest.raises(UndecodableSharesError):
        decode(five, threshold=5)


def test_honest_batches_never_call_the_error_decoder(monkeypatch):
    def refuse(*_):
        raise AssertionError("the error decoder ran on honest shares")

    monkeypatch.setattr(shamir, "_gao_decode", refuse)
    rnd = random.Random(3)
    groups = [split(rnd.randbytes(32), threshold=19, xs=rnd.sample(range(1, 1001), 36))
              for _ in range(50)]
    table, idx = _batch(groups)
    assert all(d.bad_x == () for d in decode_many(table, idx, threshold=19))


def test_past_the_radius_is_undecodable_in_a_batch():
    shares = split(b"k" * 32, threshold=3, n=7)
    for j in range(3):  # radius 2
        shares[j] = _forge(shares[j], (shares[j].y + 7) % MODULUS)
    table, idx = _batch([shares, split(b"fine", threshold=3, n=4)])
    got = decode_many(table, idx, threshold=3)
    assert isinstance(got[0], UndecodableSharesError)
    assert got[1] == Decoded(b"fine", ())


def test_argument_errors_per_group():
    a = split(b"secret", threshold=2, n=5)
    b = split(b"secret", threshold=2, n=5)
    c = split(b"other", threshold=3, n=5)
    table, idx = _batch([[*a[:3], b[3]], [a[0], a[1], a[0]], c, a[:1], a[1:4]])
    got = decode_many(table, idx, threshold=2, count=6)
    assert isinstance(got[0], ForeignShareError) and "different dealings" in str(got[0])
    assert isinstance(got[1], DuplicateShareError)
    assert isinstance(got[2], ForeignShareError) and "threshold 3, expected 2" in str(got[2])
    assert isinstance(got[3], InsufficientSharesError)
    assert got[4] == Decoded(b"secret", ())
    assert isinstance(got[5], InsufficientSharesError) and "no shares" in str(got[5])


def test_bad_arguments_raise_typed_errors():
    shares = split(b"secret", threshold=2, n=3)
    table = ShareTable.from_shares(shares)
    with pytest.raises(ShapeError):
        decode_many(table, [0, 0], threshold=2)
    with pytest.raises(ShapeError):
        decode_many(table, np.zeros(3), threshold=2)  # floats are not group numbers
    with pytest.raises(SecAggValueError):
        decode_many(table, [0, 1, 2], threshold=2, count=2)
    with pytest.raises(SecAggValueError):
        decode_many(table, [0, -1, 0], threshold=2)
    with pytest.raises(SecAggTypeError):
        decode_many(table, [0, 0, 0], threshold=2.0)
    with pytest.raises(SecAggTypeError):
        decode_many(shares, [0, 0, 0], threshold=2)
    with pytest.raises(SecAggTypeError):
        ShareTable.from_shares([shares[0], b"not a share"])
    assert decode_many(ShareTable.from_bytes(b""), [], threshold=2) == []


def test_table_parsing_is_as_strict_as_one_share():
    shares = split(b"secret", threshold=2, n=4)
    blob = b"".join(s.to_bytes() for s in shares)
    table = ShareTable.from_bytes(blob)
    assert [table.share(i) for i in range(len(table))] == shares
    assert ShareTable.from_bytes(bytearray(blob)).share(3) == shares[3]
    assert "ShareTable(4 shares)" == repr(table) and str(shares[0].y) not in repr(table)
    assert table.x.tolist() == [1, 2, 3, 4] and table.threshold.tolist() == [2] * 4
    with pytest.raises(ValueError):
        table.x[0] = 5  # columns are read-only views
    at = 2 * SHARE_BYTES  # the third share
    for bad, why in ((blob[:-1], "whole number"), (blob[:at] + b"\x01" + blob[at + 1:], "version"),
                     (blob[:at + 17] + bytes(4) + blob[at + 21:], "threshold"),
                     (blob[:at + 21] + bytes(4) + blob[at + 25:], "x-coordinate"),
                     (blob[:at + 25] + PRIMES[0].to_bytes(6, "big") + blob[at + 31:], "residue")):
        with pytest.raises(EncodingError, match=why):
            ShareTable.from_bytes(bad)
        if why != "whole number":
            with pytest.raises(EncodingError, match="share 2"):
                ShareTable.from_bytes(bad)
    with pytest.raises(SecAggTypeError):
        ShareTable.from_bytes("text")


def test_tables_take_and_concat():
    a = split(b"a", threshold=2, n=3)
    b = split(b"b", threshold=2, n=3)
    ta, tb = ShareTable.from_shares(a), ShareTable.from_shares(b)
    both = ShareTable.concat([ta, tb])
    assert [both.share(i) for i in range(6)] == a + b
    picked = both.take([5, 0])
    assert [picked.share(0), picked.share(1)] == [b[2], a[0]]
    assert len(both.take(np.array([True, False] * 3))) == 3
    assert both.dealing_id(4) == b[0].dealing_id
    assert len(ShareTable.concat([])) == 0


def test_check_held():
    shares = split(b"secret", threshold=3, xs=[7, 8, 9])
    one = shares[1].to_bytes()
    held = one * 4
    check_held(held, x=8, threshold=3)
    check_held(b"", x=8, threshold=3)
    with pytest.raises(EncodingError, match="x-coordinate 8 and threshold 3, expected 9 and 3"):
        check_held(held, x=9, threshold=3)
    with pytest.raises(EncodingError, match="expected 8 and 4"):
        check_held(held, x=8, threshold=4)
    with pytest.raises(EncodingError, match="share 2: unknown share version 1"):
        check_held(one * 2 + b"\x01" + one[1:], x=8, threshold=3)
    with pytest.raises(EncodingError, match="share 1: malformed share: a residue"):
        check_held(one + one[:25] + b"\xff" * 66, x=8, threshold=3)
    with pytest.raises(EncodingError, match="whole number"):
        check_held(one[:-1], x=8, threshold=3)


@settings(max_examples=30)
@given(t=st.integers(2, 8), data=st.data())
def test_t_minus_one_shares_fit_every_secret_exactly_once(t, data):
    """Perfect secrecy in Z_P, structurally: for t - 1 x-coordinates, any values they hold and
    any secret, exactly one dealing polynomial produces them. Existence: the coefficients are
    solved for and the hazmat dealer, given them, deals exactly those values. Uniqueness: the
    Vandermonde determinant of the x-coordinates and 0 is a unit mod P (a product of
    differences below 2^32, every prime above it), so the linear map from coefficients to the
    t - 1 shares is a bijection of Z_P^(t-1) whatever the secret."""
    xs = data.draw(st.lists(st.integers(1, (1 << 32) - 1), min_size=t, max_size=t,
                            unique=True))  # t - 1 known holders, and one more
    values = data.draw(st.lists(st.integers(0, MODULUS - 1), min_size=t - 1, max_size=t - 1))
    secret = data.draw(st.binary(min_size=1, max_size=64))
    points = [(0, int.from_bytes(b"\x01" + secret, "big")), *zip(xs, values, strict=False)]
    coefficients = _coefficients(points)
    assert coefficients[0] == points[0][1]
    dealt = shamir_split_with_coefficients(secret, coefficients=coefficients[1:], xs=xs,
                                           dealing_id=bytes(16))
    assert [s.y for s in dealt[:-1]] == values
    xs = xs[:-1]
    nodes = [0, *xs]
    det = math.prod(b - a for i, a in enumerate(nodes) for b in nodes[i + 1:])
    assert math.gcd(det, MODULUS) == 1


def _coefficients(points):
    """The coefficients, constant first, of the polynomial of degree < len(points) through
    ``points``, over Z_P (Lagrange basis expanded with Python integers)."""
    n = len(points)
    out = [0] * n
    for i, (xi, yi) in enumerate(points):
        basis, den = [1], 1
        for j, (xj, _) in enumerate(points):
            if j != i:
                basis = [(-xj * c0 + c1) % MODULUS
                         for c0, c1 in zip([*basis, 0], [0, *basis], strict=True)]
                den = den * (xi - xj) % MODULUS
        scale = yi * pow(den, -1, MODULUS) % MODULUS
        out = [(o + scale * b) % MODULUS for o, b in zip(out, basis, strict=True)]
    return out
