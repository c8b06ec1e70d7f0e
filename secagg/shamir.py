"""Shamir t-of-n secret sharing over the prime field GF(2^521 - 1).

Shamir, "How to share a secret" (CACM 1979); used for b_u and s_u^SK in Bonawitz et al.
(CCS 2017), section 4 (ShareKeys / Unmasking). docs/architecture.md section 2 asks for p > 2^256; we
use the Mersenne prime p = 2^521 - 1 (prime: Robinson 1952, checked by the Lucas-Lehmer test in
``tests/secagg/test_shamir.py``), so one field element holds a whole secret of up to 64 bytes.

A secret s of L bytes (1 <= L <= 64) is embedded as the integer ``0x01 || s`` (at most 2^520,
below p), so its length survives reconstruction. A dealing draws a fresh 16-byte dealing id;
each :class:`Share` carries the dealing id, the threshold and its x-coordinate, so that
shares of different dealings cannot be mixed silently. When more than t shares are combined,
every extra share is checked against the interpolated polynomial.

:func:`combine` refuses N > t shares that are not on one polynomial; :func:`decode` corrects
them instead. The N shares of a dealing are a codeword of the Reed-Solomon code of length N
and dimension t, so up to floor((N - t) / 2) wrong shares can be corrected, here with Gao's
algorithm (S. Gao, "A new algorithm for decoding Reed-Solomon codes", in Communications,
Information and Network Security, Kluwer 2003, section 2), and the wrong shares are named.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from .encoding import VERSION, require_bytes, require_uint
from .errors import (
    DuplicateShareError,
    EncodingError,
    ForeignShareError,
    InsufficientSharesError,
    SecAggTypeError,
    ThresholdError,
    UndecodableSharesError,
)

PRIME = (1 << 521) - 1
MAX_SECRET_BYTES = 64
DEALING_ID_BYTES = 16
_Y_BYTES = 66  # ceil(521 / 8)
_HEADER = struct.Struct(">B16sII")  # version, dealing id, threshold, x
SHARE_BYTES = _HEADER.size + _Y_BYTES
MAX_X = (1 << 32) - 1


@dataclass(frozen=True)
class Share:
    """One share: the point (x, y) of the dealing ``dealing_id`` with threshold ``threshold``."""

    dealing_id: bytes
    threshold: int
    x: int
    y: int = field(repr=False)  # secret material: kept out of logs and tracebacks

    def __post_init__(self) -> None:
        require_bytes(self.dealing_id, "dealing_id", min_len=16, max_len=16)
        require_uint(self.threshold, "threshold", bits=32, minimum=1)
        require_uint(self.x, "x-coordinate", bits=32, minimum=1)
        if isinstance(self.y, bool) or not isinstance(self.y, int):
            raise SecAggTypeError("y must be an int")
        if not 0 <= self.y < PRIME:
            raise EncodingError("share value outside the field")

    def to_bytes(self) -> bytes:
        """Fixed-length encoding: version | dealing id | threshold | x | y (66 bytes, big-end.)."""
        return _HEADER.pack(VERSION, self.dealing_id, self.threshold, self.x) + self.y.to_bytes(
            _Y_BYTES, "big"
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Strict decoding: exact length, known version, valid fields, else EncodingError."""
        data = require_bytes(data, "share", min_len=SHARE_BYTES, max_len=SHARE_BYTES)
        version, dealing_id, threshold, x = _HEADER.unpack_from(data)
        if version != VERSION:
            raise EncodingError(f"unknown share version {version}")
        y = int.from_bytes(data[_HEADER.size :], "big")
        try:
            return cls(dealing_id, threshold, x, y)
        except (EncodingError, SecAggTypeError) as exc:
            raise EncodingError(f"malformed share: {exc}") from exc


def _secret_to_int(secret: bytes) -> int:
    secret = require_bytes(secret, "secret", min_len=1, max_len=MAX_SECRET_BYTES)
    return int.from_bytes(b"\x01" + secret, "big")


def _int_to_secret(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    if not 2 <= len(raw) <= MAX_SECRET_BYTES + 1 or raw[0] != 1:
        raise ForeignShareError("reconstructed value is not a valid secret encoding")
    return raw[1:]


def _check_xs(xs: Sequence[int]) -> list[int]:
    out = [require_uint(x, "x-coordinate", bits=32, minimum=1) for x in xs]
    if len(set(out)) != len(out):
        raise DuplicateShareError("x-coordinates must be distinct")
    return out


def _split_with_coefficients(
    secret: bytes, coefficients: Sequence[int], xs: Sequence[int], dealing_id: bytes
) -> list[Share]:
    """Deterministic dealing with explicit coefficients a_1..a_{t-1}. Hazmat: see secagg.hazmat."""
    a0 = _secret_to_int(secret)
    xs = _check_xs(xs)
    t = len(coefficients) + 1
    if not 1 <= t <= len(xs):
        raise ThresholdError(f"threshold {t} outside [1, {len(xs)}]")
    coeffs = [a0] + [int(c) % PRIME for c in coefficients]
    shares = []
    for x in xs:
        y = 0
        for c in reversed(coeffs):  # Horner
            y = (y * x + c) % PRIME
        shares.append(Share(dealing_id, t, x, y))
    return shares


def split(
    secret: bytes, *, threshold: int, n: int | None = None, xs: Sequence[int] | None = None
) -> list[Share]:
    """Share ``secret`` (1..64 bytes) so that any ``threshold`` shares reconstruct it.

    Give either ``n`` (x-coordinates 1..n) or ``xs`` (distinct x-coordinates in [1, 2^32),
    for example neighbour ids plus one). A threshold outside [1, n] raises
    :class:`ThresholdError`.
    """
    if (n is None) == (xs is None):
        raise SecAggTypeError("give exactly one of n or xs")
    if n is not None:
        require_uint(n, "n", bits=32, minimum=1)
        xs = range(1, n + 1)
    assert xs is not None
    xs = _check_xs(xs)
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise SecAggTypeError("threshold must be an int")
    if not 1 <= threshold <= len(xs):
        raise ThresholdError(f"threshold {threshold} outside [1, {len(xs)}]")
    coefficients = [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return _split_with_coefficients(secret, coefficients, xs, secrets.token_bytes(DEALING_ID_BYTES))


def _batch_inverse(values: Sequence[int]) -> list[int]:
    """Inverses mod p of nonzero ``values`` with one exponentiation (Montgomery's trick)."""
    prefix, acc = [], 1
    for v in values:
        prefix.append(acc)
        acc = acc * v % PRIME
    inv = pow(acc, -1, PRIME)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inv * prefix[i] % PRIME
        inv = inv * values[i] % PRIME
    return out


def _products(xs: Sequence[int], at: int | None) -> list[int]:
    """prod_{j != i} (x_i - x_j) if ``at`` is None, else prod_{j != i} (at - x_j), for each i.

    Exact small-integer products (x < 2^32), reduced mod p once at the end.
    """
    out = []
    for i, xi in enumerate(xs):
        base = xi if at is None else at
        d = 1
        for j, xj in enumerate(xs):
            if j != i:
                d *= base - xj
        out.append(d % PRIME)
    return out


def _value_at_zero(points: Sequence[tuple[int, int]]) -> int:
    """f(0) for the polynomial of degree < len(points) through ``points`` (Lagrange):
    f(0) = sum_i y_i prod_{j!=i} (0 - x_j) / prod_{j!=i} (x_i - x_j), one batch inversion."""
    xs = [x for x, _ in points]
    nums = _products(xs, 0)
    invs = _batch_inverse(_products(xs, None))
    return sum(y * n % PRIME * iv for (_, y), n, iv in zip(points, nums, invs, strict=True)) % PRIME


def _on_one_polynomial(points: Sequence[tuple[int, int]], t: int) -> bool:
    """Do all ``points`` (distinct x) lie on one polynomial of degree < t?

    Dual-code test (MacWilliams and Sloane, ch. 10, generalised Reed-Solomon codes): with
    v_i = 1 / prod_{j!=i} (x_i - x_j), the shares y form a codeword of the degree-< t
    Reed-Solomon code iff sum_i v_i y_i g(x_i) = 0 for every g of degree < N - t. We test one
    g with fresh random 64-bit coefficients, drawn after the shares are fixed: an inconsistent
    set passes with probability at most 2^-64. Cost O(N^2) small-integer products and one
    inversion, instead of evaluating the interpolated polynomial at each extra share.
    """
    extra = len(points) - t
    if extra <= 0:
        return True
    xs = [x for x, _ in points]
    v = _batch_inverse(_products(xs, None))
    g = [secrets.randbits(64) for _ in range(extra)]
    total = 0
    for (x, y), vi in zip(points, v, strict=True):
        gx = 0
        for c in reversed(g):  # Horner with a small x: exact small integers
            gx = gx * x + c
        total += vi * y % PRIME * gx
    return total % PRIME == 0


def _checked_points(
    shares: Sequence[Share], threshold: int | None
) -> tuple[list[tuple[int, int]], int]:
    """The argument checks of :func:`combine` and :func:`decode`: the points (x, y) and t.

    At least t shares of one dealing and one threshold (``threshold``, if given), distinct
    x-coordinates; else SecAggTypeError, InsufficientSharesError, ForeignShareError or
    DuplicateShareError.
    """
    if isinstance(shares, bytes | str) or not isinstance(shares, Sequence | set | frozenset):
        raise SecAggTypeError("shares must be a sequence of Share")
    shares = list(shares)
    if not shares:
        raise InsufficientSharesError("no shares given")
    for s in shares:
        if not isinstance(s, Share):
            raise SecAggTypeError(f"expected Share, got {type(s).__name__}")
    first = shares[0]
    for s in shares[1:]:
        if s.dealing_id != first.dealing_id or s.threshold != first.threshold:
            raise ForeignShareError("shares come from different dealings")
    seen: set[int] = set()
    for s in shares:
        if s.x in seen:
            raise DuplicateShareError(f"two shares with x-coordinate {s.x}")
        seen.add(s.x)
    t = first.threshold
    if threshold is not None and require_uint(threshold, "threshold", bits=32, minimum=1) != t:
        raise ForeignShareError(f"shares were dealt with threshold {t}, expected {threshold}")
    if len(shares) < t:
        raise InsufficientSharesError(f"{len(shares)} shares given, threshold is {t}")
    points = [(s.x, s.y) for s in shares]
    return points, t


def combine(shares: Sequence[Share], *, threshold: int | None = None) -> bytes:
    """Reconstruct the secret from at least t shares of one dealing, in any order.

    ``threshold``: the t the caller expects (for example the round's configured t); shares
    claiming another threshold are refused, so a dealer cannot lower it behind the caller's
    back. Raises :class:`InsufficientSharesError` (fewer than t), :class:`DuplicateShareError`
    (an x-coordinate twice) or :class:`ForeignShareError` (shares of different dealings or
    thresholds, an extra share that is not on the polynomial, or a value that is not a
    secret encoding).
    """
    points, t = _checked_points(shares, threshold)
    if not _on_one_polynomial(points, t):
        raise ForeignShareError("the shares are not on the dealt polynomial (one is forged "
                                "or corrupted)")
    return _int_to_secret(_value_at_zero(points[:t]))


# Robust reconstruction: Gao's decoding algorithm for Reed-Solomon codes (S. Gao, "A new
# algorithm for decoding Reed-Solomon codes", 2003, section 2). A polynomial over GF(p) is the
# list of its coefficients, constant term first, without zero leading coefficients: the zero
# polynomial is [] and len(a) - 1 is the degree of a. Classical (quadratic) arithmetic: N is at
# most a few hundred here, where Gao's FFT-based variants would not pay off.


@dataclass(frozen=True)
class Decoded:
    """What :func:`decode` returns: the secret and the x-coordinates of the shares it corrected.

    ``bad_x`` is sorted ascending and empty when all shares are on one polynomial.
    """

    secret: bytes = field(repr=False)  # secret material: kept out of logs and tracebacks
    bad_x: tuple[int, ...]


def _poly_trim(a: list[int]) -> list[int]:
    """Drop zero leading coefficients of ``a`` (in place) and return it."""
    while a and a[-1] == 0:
        a.pop()
    return a


def _poly_sub(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """a - b mod p."""
    if len(a) < len(b):
        a = list(a) + [0] * (len(b) - len(a))
    out = list(a)
    for i, c in enumerate(b):
        out[i] = (out[i] - c) % PRIME
    return _poly_trim(out)


def _poly_mul(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """a * b mod p, schoolbook: O(deg a * deg b), one reduction per coefficient."""
    if not a or not b:
        return []
    out = [0] * (len(a) + len(b) - 1)
    for i, ai in enumerate(a):
        for j, bj in enumerate(b):
            out[i + j] += ai * bj
    return _poly_trim([c % PRIME for c in out])


def _poly_divmod(a: Sequence[int], b: Sequence[int]) -> tuple[list[int], list[int]]:
    """Long division over GF(p): (q, r) with a = q b + r and deg r < deg b (b nonzero).

    Gao (2003), section 2, steps 2 (each partial-gcd step) and 3 (the final division). Cost
    O((deg a - deg b + 1) * deg b) and one inversion, of the leading coefficient of b.
    """
    if not b:
        raise ZeroDivisionError("polynomial division by zero")
    db = len(b) - 1
    if len(a) <= db:
        return [], _poly_trim(list(a))
    rem = list(a)
    inv_lead = pow(b[-1], -1, PRIME)
    q = [0] * (len(a) - db)
    for k in range(len(q) - 1, -1, -1):
        c = rem[k + db] % PRIME * inv_lead % PRIME
        q[k] = c
        if c:
            for j in range(db):  # the leading term cancels by construction
                rem[k + j] -= c * b[j]
    return _poly_trim(q), _poly_trim([c % PRIME for c in rem[:db]])


def _poly_eval(a: Sequence[int], x: int) -> int:
    """a(x) mod p (Horner)."""
    acc = 0
    for c in reversed(a):
        acc = (acc * x + c) % PRIME
    return acc


def _poly_from_roots(xs: Sequence[int]) -> list[int]:
    """g0 = prod_i (X - x_i): Gao (2003), section 2, step 0 (precomputation). O(N^2)."""
    g = [1]
    for x in xs:  # g <- g * (X - x), coefficients updated from the top down
        g.append(0)
        for k in range(len(g) - 1, 0, -1):
            g[k] = (g[k - 1] - x * g[k]) % PRIME
        g[0] = -x * g[0] % PRIME
    return g


def _poly_interpolate(points: Sequence[tuple[int, int]], g0: Sequence[int]) -> list[int]:
    """g1, the polynomial of degree < N through the N ``points``: Gao (2003), section 2, step 1.

    Lagrange form g1 = sum_i y_i w_i g0 / (X - x_i) with w_i = 1 / prod_{j!=i} (x_i - x_j):
    one batch inversion, and each g0 / (X - x_i) by synthetic division, so O(N^2) in all
    (Newton's divided differences would need O(N^2) inversions).
    """
    xs = [x for x, _ in points]
    weights = _batch_inverse(_products(xs, None))
    n = len(points)
    acc = [0] * n
    for (x, y), w in zip(points, weights, strict=True):
        c = y * w % PRIME
        if not c:
            continue
        q = 1  # coefficients of g0 / (X - x), from X^(n-1) down to X^0
        for k in range(n - 1, -1, -1):
            acc[k] += c * q
            q = (g0[k] + x * q) % PRIME
    return _poly_trim([c % PRIME for c in acc])


def _partial_gcd(g0: list[int], g1: list[int], bound: int) -> tuple[list[int], list[int]]:
    """Gao (2003), section 2, step 2: the extended Euclidean algorithm on (g0, g1), stopped at
    the first remainder g with 2 deg g < ``bound`` (that is, deg g < (N + t) / 2).

    Returns (g, v) with u g0 + v g1 = g for some u (not computed: the decoder needs only v).
    """
    r_prev, r = g0, g1
    v_prev, v = [], [1]
    while 2 * (len(r) - 1) >= bound:
        q, rem = _poly_divmod(r_prev, r)
        r_prev, r = r, rem
        v_prev, v = v, _poly_sub(v_prev, _poly_mul(q, v))
    return r, v


def _gao_decode(points: Sequence[tuple[int, int]], t: int) -> list[int] | None:
    """The polynomial f of degree < t within floor((N - t) / 2) of the N ``points``, or None.

    Gao (2003), section 2, steps 0-3: g0 = prod (X - x_i); g1 interpolates the points; partial
    gcd (g, v) of (g0, g1) with deg g < (N + t) / 2; f = g / v if v divides g and deg f < t.
    When f is returned it disagrees with the points only at roots of v (v (g1 - f) = 0 mod
    g0), and deg v <= (N - t) / 2: so f is within the decoding radius. Conversely (Gao's
    correctness theorem, section 2), if a codeword is within the radius, f is that codeword.
    """
    g0 = _poly_from_roots([x for x, _ in points])
    g1 = _poly_interpolate(points, g0)
    g, v = _partial_gcd(g0, g1, len(points) + t)
    f, rem = _poly_divmod(g, v)
    if rem or len(f) > t:
        return None
    return f


def decode(shares: Sequence[Share], *, threshold: int) -> Decoded:
    """Reconstruct the secret from N >= t shares of one dealing, correcting wrong shares.

    The argument checks and their errors are those of :func:`combine`; ``threshold`` (the t
    the caller expects) is required here. If the N shares lie on one polynomial of degree < t
    (the randomised test of :func:`combine`), the secret is interpolated from t of them, at
    the cost of :func:`combine`, and ``bad_x`` is empty. Otherwise Gao's algorithm corrects up
    to e = floor((N - t) / 2) wrong shares; ``bad_x`` names them. More wrong shares raise
    :class:`UndecodableSharesError` (a :class:`ForeignShareError`). Past e wrong shares the
    decoder may instead find another polynomial of degree < t within e of the shares and
    return its secret: random or independent forgeries get there with negligible
    probability, but colluding forgers can aim for it without knowing any honest share: they
    add to their own shares a polynomial of degree < t that vanishes at the x-coordinates of
    the honest holders (public), which takes N - t + 1 forgers to move every share onto the
    new polynomial, and fewer (with knowledge of t - 1 honest shares: e + 1 if N - t is even,
    e + 2 if odd) to land within e of it. So a decoded value says nothing about who dealt it
    unless it is checked against something the dealer fixed (a commitment, a public key).

    N = t gives e = 0 and no redundancy: a forged share cannot be detected, and the secret of
    the interpolated polynomial is returned (as :func:`combine` does). A reconstructed value
    that is not a secret encoding raises :class:`ForeignShareError`.
    """
    require_uint(threshold, "threshold", bits=32, minimum=1)
    points, t = _checked_points(shares, threshold)
    if _on_one_polynomial(points, t):
        return Decoded(_int_to_secret(_value_at_zero(points[:t])), ())
    n = len(points)
    radius = (n - t) // 2
    f = _gao_decode(points, t)
    bad = None if f is None else sorted(x for x, y in points if _poly_eval(f, x) != y)
    if bad is None or len(bad) > radius:  # the second cannot happen (see _gao_decode)
        raise UndecodableSharesError(
            f"{n} shares given with threshold {t}: more are wrong than can be corrected "
            f"(at most floor((N - t) / 2) = {radius})"
        )
    return Decoded(_int_to_secret(f[0] if f else 0), tuple(bad))
