"""Shamir t-of-n secret sharing over the prime field GF(2^521 - 1).

Shamir, "How to share a secret" (CACM 1979); used for b_u and s_u^SK in Bonawitz et al.
(CCS 2017), section 4 (ShareKeys / Unmasking). DESIGN.md section 3 asks for p > 2^256; we use
the Mersenne prime p = 2^521 - 1 (prime: Robinson 1952, checked by the Lucas-Lehmer test in
``tests/secagg/test_shamir.py``), so one field element holds a whole secret of up to 64 bytes.

A secret s of L bytes (1 <= L <= 64) is embedded as the integer ``0x01 || s`` (at most 2^520,
below p), so its length survives reconstruction. A dealing draws a fresh 16-byte dealing id;
each :class:`Share` carries the dealing id, the threshold and its x-coordinate, so that
shares of different dealings cannot be mixed silently. When more than t shares are combined,
every extra share is checked against the interpolated polynomial.
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


def combine(shares: Sequence[Share], *, threshold: int | None = None) -> bytes:
    """Reconstruct the secret from at least t shares of one dealing, in any order.

    ``threshold``: the t the caller expects (for example the round's configured t); shares
    claiming another threshold are refused, so a dealer cannot lower it behind the caller's
    back. Raises :class:`InsufficientSharesError` (fewer than t), :class:`DuplicateShareError`
    (an x-coordinate twice) or :class:`ForeignShareError` (shares of different dealings or
    thresholds, an extra share that is not on the polynomial, or a value that is not a
    secret encoding).
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
    if not _on_one_polynomial(points, t):
        raise ForeignShareError("the shares are not on the dealt polynomial (one is forged "
                                "or corrupted)")
    return _int_to_secret(_value_at_zero(points[:t]))
