"""Batched arithmetic in eleven word-size prime fields: the components of the sharing ring.

Shamir sharing (Shamir, "How to share a secret", CACM 1979) in :mod:`secagg.shamir` works in
the ring Z_P with P = p_1 * ... * p_11, the product of the eleven largest primes below 2^48
(:data:`PRIMES`; 2^527 < P < 2^528). By the Chinese remainder theorem Z_P is isomorphic to
GF(p_1) x ... x GF(p_11), so one sharing over Z_P is eleven independent sharings over the
fields GF(p_l) with the same x-coordinates, and everything the server does with shares
(Lagrange interpolation, the consistency test, Reed-Solomon decoding) can be done one prime
at a time, on machine words, for many secrets at once. This module is that arithmetic.

Layout: an int64 array whose axis 0 has length 11 holds, in row l, elements of GF(p_l) in
[0, p_l). A large operation loops over the eleven rows with the prime as a scalar (numpy's
loops over a broadcast per-row constant are several times slower than its scalar loops, and
one row stays in cache); a small one is a single pass with the primes spread out as an array
(there the cost is numpy's per-call overhead).

Exact products (the floating-point quotient method of word-size prime field libraries:
J.-G. Dumas, P. Giorgi and C. Pernet, "Dense linear algebra over word-size prime fields: the
FFLAS and FFPACK packages", ACM TOMS 35(3), 2008; V. Shoup's NTL MulMod). For
0 <= a, b < 2^48 and a prime p in (2^48 - 2^9, 2^48), with float64 rounding to nearest (unit
roundoff u = 2^-53):

* q' = fl(fl(fl(a) fl(b)) fl(1 / p)) satisfies |q' - ab / p| <= (ab / p) 3.01 u < 0.1,
  because ab / p < 2^48 (1 + 2^-39) (a and b are exact in float64);
* so q = trunc(q' - 1/4) is floor(ab / p) or floor(ab / p) - 1 (0 when ab / p < 1/4);
* so r = ab - q p, computed in int64 with wrap-around, is exact: its true value lies in
  [0, 2p), below 2^49; subtracting p and adding it back where the result is negative (the
  sign bit as a mask) gives ab mod p.

No product needs more than 64 bits, which numpy has (it has no 128-bit integers). The same
argument reduces any 0 <= v < 2^63 (there |q' - v / p| < 2^-30).

A residue is written in 6 bytes (p_l < 2^48), so an element of Z_P, as its eleven residues,
takes 66 bytes: :func:`unpack` reads many at once with one reshape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: The eleven largest primes below 2^48 (2^48 - c for the c listed), each above 2^32 (so the
#: x-coordinates 1..2^32 - 1 are distinct and nonzero in every component field) and distinct
#: (so Z_P is the product of the fields). Primality is checked in ``tests/secagg/test_field.py``
#: by trial division by every prime below 2^24.
PRIMES: tuple[int, ...] = tuple((1 << 48) - c for c in (59, 65, 89, 93, 147, 165, 189, 233,
                                                          243, 257, 317))
#: P, the modulus of the sharing ring.
MODULUS = math.prod(PRIMES)
COUNT = len(PRIMES)
#: Bytes of one residue, and of one element of Z_P written as its residues.
RESIDUE_BYTES = 6
ELEMENT_BYTES = COUNT * RESIDUE_BYTES

_INV = tuple(1.0 / p for p in PRIMES)
# CRT idempotents: e_l = 1 mod p_l, 0 mod p_m (m != l); then y = sum_l (y mod p_l) e_l mod P.
_IDEMPOTENTS = tuple((MODULUS // p) * pow(MODULUS // p, -1, p) % MODULUS for p in PRIMES)
_P_COL = np.array(PRIMES, dtype=np.int64).reshape(COUNT, 1)
#: Below this many elements an operation is one pass over the whole array with the primes
#: spread out as an array; above it, one pass per prime with the prime a scalar (rows stay in
#: cache, and numpy's loops over a broadcast int64 column are slow).
_SMALL = 1 << 15
#: The product tree of :func:`inverse` stops at this width; Python's pow inverts the rest.
_TREE_TOP = 64


def _primes_like(shape: tuple[int, ...]) -> np.ndarray:
    """A contiguous int64 array of ``shape`` (axis 0 the primes) holding p_l in row l."""
    return np.broadcast_to(_P_COL.reshape((COUNT,) + (1,) * (len(shape) - 1)), shape).copy()


def _fix(o: np.ndarray, p: int | np.ndarray) -> None:
    """o in [0, 2p) -> o mod p, in place (the sign bit of o - p selects where to add p)."""
    o -= p
    o += (o >> 63) & p


def _mul_rows(ar: np.ndarray, br: np.ndarray, p, inv, o: np.ndarray, *,
              bf: np.ndarray | None = None) -> None:
    """o = ar * br mod p (the module docstring's method); bf: br as float64 if known."""
    q = np.multiply(ar, br if bf is None else bf, dtype=np.float64)
    q *= inv
    q -= 0.25
    np.multiply(ar, br, out=o)
    o -= q.astype(np.int64) * p
    _fix(o, p)


def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a * b mod p_l in row l: a, b int64 in [0, 2^48) (reduced or not) with axis 0 the primes
    (length 11, or 1 for the same integer under every prime), broadcastable."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    shape = (COUNT,) + np.broadcast_shapes(a.shape[1:], b.shape[1:])
    if math.prod(shape) <= _SMALL:
        pc = _primes_like(shape)
        out = np.empty(shape, dtype=np.int64)
        _mul_rows(np.broadcast_to(a, shape), b, pc, 1.0 / pc, out)
        return out
    out = np.empty(shape, dtype=np.int64)
    for row, p, inv in zip(range(COUNT), PRIMES, _INV, strict=True):
        _mul_rows(a[row % a.shape[0]], b[row % b.shape[0]], p, inv, out[row])
    return out


def mul_int(a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """a * v mod p_l in row l, where ``v`` (int64 in [0, 2^48), no prime axis) is the same
    integer for every prime: a has axis 0 the primes, the rest broadcastable with v.

    The bound of the module docstring holds for any a, v < 2^48 (reduced or not): ab / p is
    then below 2^48 (1 + 2^-39) and the quotient estimate is still within 0.1.
    """
    a, v = np.asarray(a, dtype=np.int64), np.asarray(v, dtype=np.int64)
    shape = (COUNT,) + np.broadcast_shapes(a.shape[1:], v.shape)
    if math.prod(shape) <= _SMALL:
        return mul(a, v[None])
    vf = v.astype(np.float64)
    out = np.empty(shape, dtype=np.int64)
    for row, p, inv in zip(range(COUNT), PRIMES, _INV, strict=True):
        _mul_rows(a[row % a.shape[0]], v, p, inv, out[row], bf=vf)
    return out


def reduce_rows(v: np.ndarray) -> np.ndarray:
    """Row l of ``v`` (int64 in [0, 2^63), axis 0 the primes, length 11 or 1) mod p_l."""
    v = np.asarray(v, dtype=np.int64)
    shape = (COUNT,) + v.shape[1:]
    out = np.empty(shape, dtype=np.int64)
    if math.prod(shape) <= _SMALL:
        pc = _primes_like(shape)
        q = v / pc
        q -= 0.25
        np.multiply(q.astype(np.int64), pc, out=out)
        np.subtract(v, out, out=out)
        _fix(out, pc)
        return out
    for row, p, inv in zip(range(COUNT), PRIMES, _INV, strict=True):
        vr, o = v[row % v.shape[0]], out[row]
        q = vr * inv
        q -= 0.25
        np.multiply(q.astype(np.int64), p, out=o)
        np.subtract(vr, o, out=o)
        _fix(o, p)
    return out


def reduce(v: np.ndarray) -> np.ndarray:
    """v mod p_l for every prime: ``v`` int64 in [0, 2^63) of any shape, the result of shape
    (11,) + v.shape."""
    return reduce_rows(np.asarray(v, dtype=np.int64)[None])


def negate(a: np.ndarray) -> np.ndarray:
    """-a mod p_l in row l (0 stays 0)."""
    a = np.asarray(a, dtype=np.int64)
    out = _primes_like(a.shape)
    out -= a
    out[a == 0] = 0
    return out


def inverse(a: np.ndarray) -> np.ndarray:
    """1 / a mod p_l in row l, for every element of ``a`` (axis 0 the primes).

    Montgomery's simultaneous inversion (P. L. Montgomery, "Speeding the Pollard and elliptic
    curve methods of factorization", Math. Comp. 48, 1987, section 10.3.1) over a product
    tree: about three products per element, and Python's modular inverse for the few
    products left at the top of the tree. Raises ZeroDivisionError if an element is 0.
    """
    a = np.asarray(a, dtype=np.int64)
    flat = a.reshape(COUNT, -1)
    if flat.shape[1] == 0:
        return a.copy()
    levels = [flat]
    while levels[-1].shape[1] > _TREE_TOP:
        top = levels[-1]
        if top.shape[1] % 2:
            top = np.concatenate([top, np.ones((COUNT, 1), dtype=np.int64)], axis=1)
            levels[-1] = top
        levels.append(mul(top[:, 0::2], top[:, 1::2]))
    roots = levels[-1].tolist()
    try:
        inv = np.array([[pow(r, -1, p) for r in row] for row, p in
                        zip(roots, PRIMES, strict=True)], dtype=np.int64)
    except ValueError:
        raise ZeroDivisionError("inverse of zero in a component field") from None
    for below in reversed(levels[:-1]):
        half = below.shape[1] // 2  # the level above, before it was padded
        out = np.empty_like(below)
        out[:, 0::2] = mul(inv[:, :half], below[:, 1::2])
        out[:, 1::2] = mul(inv[:, :half], below[:, 0::2])
        inv = out
    return inv[:, : flat.shape[1]].reshape(a.shape)


def _mul_lazy(acc: np.ndarray, v: np.ndarray, vf: np.ndarray) -> np.ndarray:
    """acc * v mod p_l in row l, left in [0, 2p_l) (not fully reduced): acc < 2^49 (so a
    previous lazy result), v < 2^47 (no prime axis). Then acc v < 2^96, the quotient estimate
    is within (acc v / p) 3.01 u < 0.1 of acc v / p, and the module docstring's argument gives
    a remainder in [0, 2p) without the final correction."""
    shape = (COUNT,) + np.broadcast_shapes(acc.shape[1:], v.shape)
    if math.prod(shape) <= _SMALL:
        pc = _primes_like(shape)
        wide = np.broadcast_to(acc, shape)
        q = wide * vf
        q /= pc
        q -= 0.25
        out = wide * v
        out -= q.astype(np.int64) * pc
        return out
    out = np.empty(shape, dtype=np.int64)
    for row, p, inv in zip(range(COUNT), PRIMES, _INV, strict=True):
        ar, o = acc[row % acc.shape[0]], out[row]
        q = ar * vf
        q *= inv
        q -= 0.25
        np.multiply(ar, v, out=o)
        o -= q.astype(np.int64) * p
    return out


def exact_products(factors: np.ndarray) -> np.ndarray:
    """prod over axis 0 of ``factors`` (int64 in [1, 2^32)), mod every prime.

    Groups of g factors of at most b bits (g b <= 47) are multiplied exactly in int64 first,
    then folded in with lazily reduced modular products (:func:`_mul_lazy`), so a product of
    n factors costs about n b / 47 modular products per prime. Returns shape
    (11,) + factors.shape[1:]. (The factor axis comes first so that each factor is a
    contiguous slice.)
    """
    ft = np.asarray(factors, dtype=np.int64)
    n = ft.shape[0]
    shape = ft.shape[1:]
    if n == 0:
        return np.ones((COUNT,) + shape, dtype=np.int64)
    bits = max(int(ft.max()).bit_length(), 1)
    g = max(47 // bits, 1)
    groups = []
    for i in range(0, n, g):
        acc = ft[i].copy()
        for j in range(i + 1, min(i + g, n)):
            acc *= ft[j]  # exact: at most g * bits <= 47 bits
        groups.append(acc)
    acc = np.broadcast_to(groups[0], (1,) + shape)  # below 2^47 < 2p: a valid lazy value
    for grp in groups[1:]:
        acc = _mul_lazy(acc, grp, grp.astype(np.float64))
    out = np.empty((COUNT,) + shape, dtype=np.int64)
    for row, p in enumerate(PRIMES):
        out[row] = acc[row % acc.shape[0]]
        _fix(out[row], p)
    return out


def from_ints(values: Sequence[int]) -> np.ndarray:
    """(11, M) residues of the Python integers ``values`` (any size, any sign)."""
    return np.array([[v % p for v in values] for p in PRIMES], dtype=np.int64).reshape(
        COUNT, len(values))


def to_ints(res: np.ndarray) -> list[int]:
    """The elements of Z_P (in [0, P)) with residues ``res`` (11, M): Chinese remaindering."""
    return [sum(r * e for r, e in zip(col, _IDEMPOTENTS, strict=True)) % MODULUS
            for col in np.asarray(res).T.tolist()]


def int_to_bytes(value: int) -> bytes:
    """An element of Z_P as its eleven residues, 6 bytes each, big-endian, p_1 first."""
    return b"".join((value % p).to_bytes(RESIDUE_BYTES, "big") for p in PRIMES)


def bytes_to_int(data: bytes) -> int | None:
    """The element of Z_P written by :func:`int_to_bytes`, or None if a residue is not
    below its prime (a non-canonical encoding). ``data`` must be 66 bytes."""
    total = 0
    for i, (p, e) in enumerate(zip(PRIMES, _IDEMPOTENTS, strict=True)):
        r = int.from_bytes(data[RESIDUE_BYTES * i: RESIDUE_BYTES * (i + 1)], "big")
        if r >= p:
            return None
        total += r * e
    return total % MODULUS


def unpack(raw: np.ndarray) -> np.ndarray:
    """(11, M) int64 residues from ``raw``, (M, 66) uint8 rows written by
    :func:`int_to_bytes` (one element per row; the result has one prime per row). Values are
    not checked against their primes (see :func:`noncanonical`)."""
    m = raw.shape[0]
    wide = np.zeros((COUNT, m, 8), dtype=np.uint8)  # little-endian words, built byte-reversed
    wide[:, :, :RESIDUE_BYTES] = raw.reshape(m, COUNT, RESIDUE_BYTES).transpose(1, 0, 2)[
        :, :, ::-1]
    return wide.view("<i8").reshape(COUNT, m)


_MIN_PRIME = min(PRIMES)


def noncanonical(res: np.ndarray) -> np.ndarray | None:
    """None if every residue in ``res`` (11, M) is below its prime, else the (M,) bool mask
    of the columns with a residue that is not."""
    if res.size == 0 or int(res.max()) < _MIN_PRIME:
        return None
    bad = (res >= _P_COL).any(axis=0)
    return bad if bad.any() else None


__all__ = ["COUNT", "ELEMENT_BYTES", "MODULUS", "PRIMES", "RESIDUE_BYTES", "bytes_to_int",
           "exact_products", "from_ints", "int_to_bytes", "inverse", "mul",
           "mul_int", "negate", "noncanonical", "reduce", "reduce_rows", "to_ints", "unpack"]
