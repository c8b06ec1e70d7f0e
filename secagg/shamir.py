"""Shamir t-of-n secret sharing over Z_P, P a product of eleven 48-bit primes, decoded in bulk.

Shamir, "How to share a secret" (CACM 1979); used for b_u and s_u^SK in Bonawitz et al.
(CCS 2017), section 4 (ShareKeys / Unmasking), where the server reconstructs one secret per
survivor and per dropped client in every round.

The ring. P = p_1 ... p_11, the eleven largest primes below 2^48 (:data:`PRIMES`, from
:mod:`secagg.field`; 2^527 < P < 2^528). By the Chinese remainder theorem Z_P is isomorphic
to GF(p_1) x ... x GF(p_11) and a polynomial over Z_P is the tuple of its reductions, so one
dealing over Z_P is eleven dealings, one per residue of the secret, over the fields GF(p_l),
with the same x-coordinates and independent coefficients. docs/architecture.md section 2 asks
for a sharing above 2^256; Z_P holds a whole secret of up to 64 bytes in one element.

Secrecy is Shamir's, component by component: every p_l exceeds 2^32, so the x-coordinates
(in [1, 2^32)) are distinct and nonzero in every GF(p_l); coefficients drawn uniformly from
Z_P are uniform and independent in every component; so in each field t - 1 shares are
uniform whatever the secret's residue, and, the components being independent, t - 1 shares
are uniform over Z_P^(t-1) whatever the secret: perfect secrecy, exactly as over one prime
field. Interpolation divides by differences of x-coordinates, below 2^32 in absolute value,
hence invertible in every component.

Why not one large prime field such as GF(2^521 - 1): an element of a 521-bit field can only be
interpolated with 521-bit arithmetic, in Python integers, one secret at a time (about 1 ms per
secret, so about 1 s per round for the server at n = 1000). The residues here are machine
words: :class:`ShareTable` parses many encoded shares at once and
:func:`decode_many` reconstructs every secret of a round in one batch of numpy operations
(:mod:`secagg.field`), one Lagrange weight vector per secret, for all eleven primes at once.

Encoding. A secret s of L bytes (1 <= L <= 64) is the integer ``0x01 || s`` (below 2^521 < P),
so its length survives reconstruction. A dealing draws a fresh 16-byte dealing id; a share is
``version (2) | dealing id | threshold (u32) | x (u32) | y`` with y written as its eleven
residues, 6 bytes each, y mod p_1 first (:data:`SHARE_BYTES` = 91), and decoding refuses a
residue that is not below its prime.

Reconstruction. N >= t shares (x_j, y_j) of one dealing are checked to lie on one polynomial
of degree < t by the dual-code test (F. J. MacWilliams and N. J. A. Sloane, "The Theory of
Error-Correcting Codes", 1977, ch. 10, generalised Reed-Solomon codes): with
v_j = 1 / prod_{m != j} (x_j - x_m), y is a codeword iff sum_j v_j y_j g(x_j) = 0 for every g
of degree < N - t. Each component is tested with two random g, drawn after the shares are
fixed, so an inconsistent component passes with probability about p_l^-2 < 2^-95. If
consistent, f(0) = sum_j y_j l_j(0) with the Lagrange basis over all N points,
l_j(0) = v_j prod_{m != j} (-x_m): the same weights.

:func:`combine` refuses N > t shares that are not on one polynomial; :func:`decode` corrects
them instead. In each component the N shares are a codeword of the Reed-Solomon code of length
N and dimension t, so up to e = floor((N - t) / 2) wrong shares can be corrected. Gao's
algorithm (S. Gao, "A new algorithm for decoding Reed-Solomon codes", in Communications,
Information and Network Security, Kluwer 2003, section 2) decodes one component whose test
failed; the shares wrong there are set aside, the rest are tested in every component, and
Gao's algorithm runs again in a component that still fails, until none does. Within e wrong
shares this ends with exactly the wrong shares named (see :func:`_corrected`), after one run
of Gao's algorithm for a forgery of the whole value; past e the shares are refused, unless
another codeword happens to lie within e of them (see :func:`decode`).
"""

from __future__ import annotations

import math
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import field as ff
from .encoding import require_bytes, require_uint
from .errors import (
    DuplicateShareError,
    EncodingError,
    ForeignShareError,
    InsufficientSharesError,
    SecAggTypeError,
    SecAggValueError,
    ShamirError,
    ShapeError,
    ThresholdError,
    UndecodableSharesError,
)
from .randomness import random_below, random_bytes

#: The share format's version byte (version 1, y in GF(2^521 - 1), is refused).
SHARE_VERSION = 2
#: P, the modulus of the sharing ring Z_P (composite: the product of :data:`PRIMES`). Share
#: values y are in [0, P), and arithmetic on them (as tests that forge shares do) is mod P.
MODULUS = ff.MODULUS
PRIME = MODULUS  # the historical name of the sharing modulus; Z_P is a ring, not a field
PRIMES = ff.PRIMES
MAX_SECRET_BYTES = 64
DEALING_ID_BYTES = 16
_Y_BYTES = ff.ELEMENT_BYTES  # eleven 6-byte residues
_HEADER = struct.Struct(">B16sII")  # version, dealing id, threshold, x
SHARE_BYTES = _HEADER.size + _Y_BYTES
MAX_X = (1 << 32) - 1
_ROW = np.dtype([("version", "u1"), ("dealing_id", "V16"), ("threshold", ">u4"),
                 ("x", ">u4"), ("y", "u1", (_Y_BYTES,))])
assert _ROW.itemsize == SHARE_BYTES
#: Elements (padded secrets x shares x shares) one numpy batch of :func:`decode_many` handles.
_BATCH_ELEMENTS = 1 << 20
_DRAWS = 2  # independent random checks per component


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
        if not 0 <= self.y < MODULUS:
            raise EncodingError("share value outside the ring")

    def to_bytes(self) -> bytes:
        """Fixed-length encoding: version | dealing id | threshold | x | y mod p_1 | ... |
        y mod p_11 (6 bytes each), big-endian, :data:`SHARE_BYTES` bytes."""
        return (_HEADER.pack(SHARE_VERSION, self.dealing_id, self.threshold, self.x)
                + ff.int_to_bytes(self.y))

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Strict decoding: exact length, known version, valid fields, every residue below its
        prime, else EncodingError."""
        data = require_bytes(data, "share", min_len=SHARE_BYTES, max_len=SHARE_BYTES)
        version, dealing_id, threshold, x = _HEADER.unpack_from(data)
        if version != SHARE_VERSION:
            raise EncodingError(f"unknown share version {version}")
        y = ff.bytes_to_int(data[_HEADER.size:])
        if y is None:
            raise EncodingError("malformed share: a residue is not below its prime")
        try:
            return cls(dealing_id, threshold, x, y)
        except (EncodingError, SecAggTypeError) as exc:
            raise EncodingError(f"malformed share: {exc}") from exc


class ShareTable:
    """Many encoded shares parsed at once, without a :class:`Share` object per share.

    Built by :meth:`from_bytes` (the concatenated encodings, checked as strictly as
    :meth:`Share.from_bytes` checks one), :meth:`from_shares` or :meth:`concat`. Columns are
    numpy arrays; the values y are kept as their residues and never shown in a repr.
    """

    __slots__ = ("_ids", "_res", "_t", "_x")

    def __init__(self, ids: np.ndarray, t: np.ndarray, x: np.ndarray, res: np.ndarray) -> None:
        """Internal: use :meth:`from_bytes`, :meth:`from_shares` or :meth:`concat`."""
        # one share per row: dealing id (M, 2) uint64, threshold and x (M,) int64; and the
        # residues of y, one prime per row: (11, M) int64
        self._ids, self._t, self._x, self._res = ids, t, x, res

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> ShareTable:
        """Parse the concatenation of :data:`SHARE_BYTES`-byte encodings. Raises
        SecAggTypeError for a non-bytes argument and EncodingError (naming the first bad share)
        for a length that is not a whole number of shares, an unknown version, a threshold or
        x-coordinate of 0, or a residue not below its prime."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SecAggTypeError(f"shares must be bytes, not {type(data).__name__}")
        if not isinstance(data, bytes):
            data = bytes(data)  # the table must not change under the caller's buffer
        if len(data) % SHARE_BYTES:
            raise EncodingError(f"{len(data)} bytes are not a whole number of "
                                f"{SHARE_BYTES}-byte shares")
        rows = np.frombuffer(data, dtype=_ROW)
        res = ff.unpack(rows["y"])
        t, x = rows["threshold"].astype(np.int64), rows["x"].astype(np.int64)
        if not ((rows["version"] == SHARE_VERSION).all() and t.all() and x.all()) or (
                ff.noncanonical(res) is not None):
            cls._refuse(rows, res)
        ids = np.ascontiguousarray(rows["dealing_id"]).view(np.uint64).reshape(-1, 2)
        return cls(ids, t, x, res)

    @staticmethod
    def _refuse(rows: np.ndarray, res: np.ndarray) -> None:
        bad_res = ff.noncanonical(res)
        for i, row in enumerate(rows):
            if row["version"] != SHARE_VERSION:
                why = f"unknown share version {int(row['version'])}"
            elif row["threshold"] == 0:
                why = "malformed share: threshold must be in [1, 2^32), got 0"
            elif row["x"] == 0:
                why = "malformed share: x-coordinate must be in [1, 2^32), got 0"
            elif bad_res is not None and bad_res[i]:
                why = "malformed share: a residue is not below its prime"
            else:
                continue
            raise EncodingError(f"share {i}: {why}")

    @classmethod
    def from_shares(cls, shares: Sequence[Share]) -> ShareTable:
        """The table of ``shares`` (each a :class:`Share`, else SecAggTypeError)."""
        for s in shares:
            if not isinstance(s, Share):
                raise SecAggTypeError(f"expected Share, got {type(s).__name__}")
        return cls.from_bytes(b"".join(s.to_bytes() for s in shares))

    @classmethod
    def concat(cls, tables: Sequence[ShareTable]) -> ShareTable:
        """One table with the rows of ``tables``, in order (no re-parsing)."""
        tables = list(tables)
        if not tables:
            return cls.from_bytes(b"")
        return cls(*(np.concatenate([getattr(t, a) for t in tables]) for a in ("_ids", "_t", "_x")),
                   np.concatenate([t._res for t in tables], axis=1))

    def __len__(self) -> int:
        return self._x.shape[0]

    def __repr__(self) -> str:  # the values are secret: never shown
        return f"ShareTable({len(self)} shares)"

    @property
    def x(self) -> np.ndarray:
        """(M,) int64 x-coordinates (read-only)."""
        return _readonly(self._x)

    @property
    def threshold(self) -> np.ndarray:
        """(M,) int64 thresholds (read-only)."""
        return _readonly(self._t)

    @property
    def dealing_ids(self) -> np.ndarray:
        """(M, 2) uint64: each row's dealing id as two words (equal ids, equal rows; read-only);
        :meth:`dealing_id` for the bytes."""
        return _readonly(self._ids)

    def dealing_id(self, i: int) -> bytes:
        """The dealing id of row ``i``."""
        return self._ids[i].tobytes()

    def take(self, rows: np.ndarray | Sequence[int]) -> ShareTable:
        """The table of the rows ``rows`` (indices or a boolean mask), in that order."""
        idx = np.asarray(rows)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return ShareTable(self._ids[idx], self._t[idx], self._x[idx], self._res[:, idx])

    def share(self, i: int) -> Share:
        """Row ``i`` as a :class:`Share`."""
        return Share(self.dealing_id(i), int(self._t[i]), int(self._x[i]),
                     ff.to_ints(self._res[:, i:i + 1])[0])


def _readonly(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


_HEAD_AT = (0, *range(17, 25))  # the version byte, then the threshold and x (big-endian)


def check_held(data: bytes, *, x: int, threshold: int) -> None:
    """Check the concatenated encodings ``data`` as the shares one holder returns: what
    :meth:`ShareTable.from_bytes` refuses, and any share whose x-coordinate is not ``x`` or
    whose threshold is not ``threshold``. Raises EncodingError naming the first bad share.

    Pure Python over the bytes, for the few dozen shares of one holder (one numpy call costs
    as much as checking several shares here): the header of every share is compared with the
    expected one, and the residues are parsed only if some 4 bytes of ``data`` are 0xff (a
    residue at or above a prime, all of which exceed 2^48 - 2^9, starts with four of them).
    """
    if len(data) % SHARE_BYTES:
        raise EncodingError(f"{len(data)} bytes are not a whole number of "
                            f"{SHARE_BYTES}-byte shares")
    count = len(data) // SHARE_BYTES
    expect = _HEADER.pack(SHARE_VERSION, bytes(16), threshold, x)
    # byte k of every share's header at once: strided slices of the bytes (C speed)
    if any([data[k::SHARE_BYTES] != bytes([expect[k]]) * count for k in _HEAD_AT]):
        for i, at in enumerate(range(0, len(data), SHARE_BYTES)):
            if data[at] != SHARE_VERSION:
                raise EncodingError(f"share {i}: unknown share version {data[at]}")
            if data[at + 17: at + 25] != expect[17:]:
                got_t, got_x = struct.unpack_from(">II", data, at + 17)
                raise EncodingError(f"share {i}: x-coordinate {got_x} and threshold {got_t}, "
                                    f"expected {x} and {threshold}")
    if b"\xff\xff\xff\xff" in data:
        for i, at in enumerate(range(0, len(data), SHARE_BYTES)):
            if ff.bytes_to_int(data[at + _HEADER.size: at + SHARE_BYTES]) is None:
                raise EncodingError(f"share {i}: malformed share: a residue is not below "
                                    "its prime")


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
    coeffs = [a0] + [int(c) % MODULUS for c in coefficients]
    shares = []
    for x in xs:
        y = 0
        for c in reversed(coeffs):  # Horner
            y = (y * x + c) % MODULUS
        shares.append(Share(dealing_id, t, x, y))
    return shares


def split(
    secret: bytes, *, threshold: int, n: int | None = None, xs: Sequence[int] | None = None
) -> list[Share]:
    """Share ``secret`` (1..64 bytes) so that any ``threshold`` shares reconstruct it.

    Give either ``n`` (x-coordinates 1..n) or ``xs`` (distinct x-coordinates in [1, 2^32),
    for example neighbour ids plus one). A threshold outside [1, n] raises
    :class:`ThresholdError`.

    The dealer's randomness (:mod:`secagg.randomness`): the dealing id first (purpose
    ``"dealing-id"``), then a_1, ..., a_{t-1} uniform in Z_P (``"coefficient"``).
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
    dealing_id = random_bytes(DEALING_ID_BYTES, "dealing-id")
    coefficients = [random_below(MODULUS, "coefficient") for _ in range(threshold - 1)]
    return _split_with_coefficients(secret, coefficients, xs, dealing_id)


@dataclass(frozen=True)
class Decoded:
    """What :func:`decode` returns: the secret and the x-coordinates of the shares it corrected.

    ``bad_x`` is sorted ascending and empty when all shares are on one polynomial.
    """

    secret: bytes = field(repr=False)  # secret material: kept out of logs and tracebacks
    bad_x: tuple[int, ...]


# -- batched reconstruction ------------------------------------------------------------------
def _check_table(xs: np.ndarray, top: int) -> np.ndarray:
    """table[l, draw, D, i] = G_D(xs[i]) mod p_l with G_D(x) = sum_{k=1..D} r_k x^k, for fresh
    uniform r in GF(p_l) (one sequence per prime and draw), D = 0..top: the test polynomials
    x g(x) of :func:`_solve`, truncated to each secret's N - t."""
    r = np.array([[[secrets.randbelow(p) for _ in range(top)] for _ in range(_DRAWS)]
                  for p in PRIMES], dtype=np.int64)
    powers = np.empty((ff.COUNT, top, xs.size), dtype=np.int64)
    power = np.broadcast_to(xs, (ff.COUNT, xs.size))  # x < 2^32 < p_l: reduced
    for deg in range(top):
        powers[:, deg] = power
        if deg + 1 < top:
            power = ff.mul_int(power, xs)
    terms = ff.mul(r[:, :, :, None], powers[:, None])  # (11, draws, k, x)
    table = np.zeros((ff.COUNT, _DRAWS, top + 1, xs.size), dtype=np.int64)
    table[:, :, 1:] = ff.reduce_rows(np.cumsum(terms, axis=2))  # below top 2^48 < 2^63
    return table


def _solve(xp: np.ndarray, valid: np.ndarray, yp: np.ndarray, d: np.ndarray,
           checks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate at 0 and run the dual-code test for a batch of B secrets, all components.

    ``xp`` (B, K): each secret's x-coordinates, ascending, padded at the end (``valid`` False)
    with 0; ``yp`` (11, B, K): the residues, 0 at padding; ``d`` (B,): N - t per secret;
    ``checks`` (11, draws, B, K): G_{d_b}(x_bj) from :func:`_check_table` (None if every d is
    0). Returns the residues of f(0) (11, B) and, for each component and secret, whether the
    test failed (11, B).

    With sorted x, prod_{m != j} (x_j - x_m) = (-1)^(N-1-j) prod_{m != j} |x_j - x_m|. Write
    u_j = 1 / (x_j prod_{m != j} |x_j - x_m|) and z_j = (-1)^j u_j y_j. Then
    f(0) = sum_j y_j v_j prod_{m != j} (-x_m) = (prod_m x_m) sum_j z_j, and the test
    sum_j v_j y_j g(x_j) = 0 is, up to the sign (-1)^(N-1), sum_j z_j G(x_j) = 0 with
    G(x) = x g(x) = sum_{k=1..N-t} r_k x^k. Padding contributes factors 1 (a padded j gets
    some nonzero weight, but y_j = 0 there).
    """
    b, k = xp.shape
    ones = np.where(valid, xp, 1)
    weights = np.empty((ff.COUNT, b, k), dtype=np.int64)
    step = max(1, _BATCH_ELEMENTS // (b * (k + 1)))  # bounds the memory of one large secret
    for j0 in range(0, k, step):
        j1 = min(j0 + step, k)
        # the factors of x_j prod_{m != j} |x_j - x_m| for j in [j0, j1), factor axis (m)
        # first: (K + 1, B, j1 - j0)
        factors = np.empty((k + 1, b, j1 - j0), dtype=np.int64)
        diff = factors[:k]
        np.subtract(xp.T[:, :, None], xp[None, :, j0:j1], out=diff)
        np.abs(diff, out=diff)
        np.copyto(diff, 1, where=~valid.T[:, :, None])
        diff[np.arange(j0, j1), :, np.arange(j1 - j0)] = 1
        factors[k] = ones[:, j0:j1]
        weights[:, :, j0:j1] = ff.exact_products(factors)
    u = ff.inverse(weights)  # (11, B, K)
    u[:, :, 1::2] = ff.negate(u[:, :, 1::2])
    z = ff.mul(u, yp)
    value = ff.mul(ff.exact_products(ones.T), ff.reduce_rows(z.sum(axis=2)))
    if checks is None:
        return value, np.zeros(value.shape, dtype=bool)
    check = ff.reduce_rows(ff.mul(z[:, None], checks).sum(axis=3))
    return value, check.any(axis=1) & (d > 0)


def _batches(order: list[int], sizes: list[int]) -> list[list[int]]:
    """Consecutive runs of ``order`` (sorted by size) whose padded work stays bounded."""
    out, run, top = [], [], 0
    for g in order:
        k = sizes[g]
        if run and (len(run) + 1) * max(top, k) ** 2 > _BATCH_ELEMENTS:
            out.append(run)
            run, top = [], 0
        run.append(g)
        top = max(top, k)
    if run:
        out.append(run)
    return out


@dataclass(frozen=True)
class _Sorted:
    """The rows of a table sorted by group, then x: each group's rows are contiguous."""

    x: np.ndarray  # (M,) x-coordinates, sorted within each group
    res: np.ndarray  # (11, M) residues, same order
    counts: list[int]  # rows per group
    starts: list[int]  # first sorted row of each group
    t: list[int]  # threshold of each group's first row (0 if empty)


def _sort_and_check(table: ShareTable, groups: np.ndarray, count: int, threshold: int | None,
                    results: list) -> tuple[_Sorted, list[int]]:
    """Sort the rows; fill ``results`` with the argument errors of :func:`combine` (empty,
    mixed dealings or thresholds, duplicate x, another threshold than the caller's, fewer
    than t), and return the groups left to solve."""
    x_all = table._x
    order = np.argsort(groups * (1 << 32) + x_all, kind="stable")  # x < 2^32
    gs, xs = groups[order], x_all[order]
    counts = np.bincount(groups, minlength=count)
    starts = np.zeros(count, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    first = starts[gs]
    ids, thr = table._ids[order], table._t[order]
    mixed = np.zeros(count, dtype=bool)
    mixed[gs[(ids != ids[first]).any(axis=1) | (thr != thr[first])]] = True
    dup_at = np.flatnonzero((gs[1:] == gs[:-1]) & (xs[1:] == xs[:-1]))
    dups: dict[int, int] = {}
    for g, x in zip(gs[dup_at].tolist(), xs[dup_at].tolist(), strict=True):
        dups.setdefault(g, x)
    t_of = np.zeros(count, dtype=np.int64)
    t_of[counts > 0] = thr[starts[counts > 0]]
    solvable = []
    for g, (n, t) in enumerate(zip(counts.tolist(), t_of.tolist(), strict=True)):
        if n == 0:
            results[g] = InsufficientSharesError("no shares given")
        elif mixed[g]:
            results[g] = ForeignShareError("shares come from different dealings")
        elif g in dups:
            results[g] = DuplicateShareError(f"two shares with x-coordinate {dups[g]}")
        elif threshold is not None and t != threshold:
            results[g] = ForeignShareError(f"shares were dealt with threshold {t}, "
                                           f"expected {threshold}")
        elif n < t:
            results[g] = InsufficientSharesError(f"{n} shares given, threshold is {t}")
        else:
            solvable.append(g)
    return _Sorted(xs, table._res[:, order], counts.tolist(), starts.tolist(),
                   t_of.tolist()), solvable


def _reconstruct(table: ShareTable, groups: np.ndarray, count: int, threshold: int | None,
                 *, correct: bool) -> list[Decoded | ShamirError]:
    """The secret of every group of rows of ``table`` (``groups[i]`` is row i's group, in
    [0, count)), or the error that group raises: the checks of :func:`combine` and
    :func:`decode`, then the batched test and interpolation, then (``correct``) Gao."""
    results: list = [None] * count
    srt, solvable = _sort_and_check(table, groups, count, threshold, results)
    sizes, ts, st = srt.counts, srt.t, srt.starts
    top = max((sizes[g] - ts[g] for g in solvable), default=0)
    if top > 0:  # the test polynomials, drawn now that every share is fixed
        distinct, where_x = np.unique(srt.x, return_inverse=True)
        tests = _check_table(distinct, top)
        tests = tests.reshape(ff.COUNT * _DRAWS, (top + 1) * distinct.size)
    for run in _batches(sorted(solvable, key=sizes.__getitem__), sizes):
        n = np.array([sizes[g] for g in run])
        k = int(n.max())
        valid = np.arange(k)[None, :] < n[:, None]
        idx = np.where(valid, np.array([st[g] for g in run])[:, None] + np.arange(k), 0)
        xp = np.where(valid, np.take(srt.x, idx), 0)
        yp = np.where(valid[None], np.take(srt.res, idx, axis=1), 0)
        d = n - np.array([ts[g] for g in run])
        checks = None
        if d.max() > 0:
            at = np.maximum(d, 0)[:, None] * distinct.size + np.take(where_x.reshape(-1), idx)
            checks = np.take(tests, at, axis=1).reshape((ff.COUNT, _DRAWS) + idx.shape)
        value, failed = _solve(xp, valid, yp, d, checks)
        for i, (g, v) in enumerate(zip(run, ff.to_ints(value), strict=True)):
            if not failed[:, i].any():
                results[g] = _decoded(v, ())
            elif not correct:
                results[g] = ForeignShareError("the shares are not on the dealt polynomial "
                                               "(one is forged or corrupted)")
            else:
                rows = slice(st[g], st[g] + sizes[g])
                points = list(zip(srt.x[rows].tolist(), ff.to_ints(srt.res[:, rows]),
                                  strict=True))
                results[g] = _corrected(points, ts[g], int(np.flatnonzero(failed[:, i])[0]))
    return results


def _decoded(value: int, bad: tuple[int, ...]) -> Decoded | ShamirError:
    try:
        return Decoded(_int_to_secret(value), bad)
    except ForeignShareError as exc:
        return exc


def _solve_one(points: Sequence[tuple[int, int]], t: int) -> tuple[int, list[int]]:
    """One secret in Python integers over Z_P: f(0) from all N points, and the components
    (indices into :data:`PRIMES`) where the dual-code test of the module docstring fails.

    v_j = 1 / prod_{m != j} (x_j - x_m) by one batch inversion mod P (every difference is a
    unit); f(0) = sum_j y_j v_j prod_{m != j} (-x_m); the test sum_j v_j y_j g(x_j) for
    :data:`_DRAWS` polynomials g of degree < N - t with fresh 64-bit coefficients, drawn after
    the shares are fixed (a 64-bit integer is uniform mod p_l < 2^48 up to a factor
    1 + 2^-15, so a component that fails passes one draw with probability about 2^-48).
    What :func:`_solve` does for a batch, for the few secrets handled one at a time (faster
    there than numpy).
    """
    xs = [x for x, _ in points]
    dens = []
    for i, xi in enumerate(xs):
        den = 1
        for j, xj in enumerate(xs):
            if j != i:  # exact small-integer products (|x| < 2^32), reduced once
                den *= xi - xj
        dens.append(den % MODULUS)
    everything = math.prod(-x for x in xs)
    nums = [everything // -x % MODULUS for x in xs]  # prod_{m != j} (-x_m), exactly
    v = _batch_inverse(dens, MODULUS)
    value = sum(y * n % MODULUS * w for (_, y), n, w in zip(points, nums, v, strict=True))
    extra = len(points) - t
    failing: set[int] = set()
    for _ in range(_DRAWS if extra > 0 else 0):
        g = [secrets.randbits(64) for _ in range(extra)]
        total = 0
        for (x, y), w in zip(points, v, strict=True):
            gx = 0
            for c in reversed(g):  # Horner with a small x: exact small integers
                gx = gx * x + c
            total += w * y % MODULUS * gx
        total %= MODULUS
        failing.update(i for i, p in enumerate(PRIMES) if total % p)
    return value % MODULUS, sorted(failing)


def _corrected(points: list[tuple[int, int]], t: int, component: int) -> Decoded | ShamirError:
    """Correct the N shares ``points`` (x ascending) of a secret whose test failed in
    ``component``: locate the wrong shares with Gao's decoder in one failing component, set
    them aside, test the rest in every component (:func:`_solve_one`), and repeat with a
    component that still fails, until none does.

    If at most e = floor((N - t) / 2) shares are wrong, each decoded component gives exactly
    its wrong positions, all among the wrong shares; and while a wrong share is left, the N - e
    or more remaining shares fail the test in one of its components (at least N - 2e >= t of
    them agree with the dealt polynomial there, so no other polynomial of degree < t passes
    through them all). So the loop ends with exactly the wrong shares set aside, after one run
    of Gao's decoder per component an error touches (one for a forgery of the whole value),
    and the secret interpolated from the rest. More than e positions, or a component Gao's
    decoder cannot decode, is refused.
    """
    n = len(points)
    radius = (n - t) // 2
    wrong: set[int] = set()
    decoded: set[int] = set()
    while True:
        p = PRIMES[component]
        residues = [(x, y % p) for x, y in points]
        f = _gao_decode(residues, t, p)
        decoded.add(component)
        if f is not None:
            wrong.update(x for x, y in residues if _poly_eval(f, x, p) != y)
        if f is None or len(wrong) > radius:
            break
        value, failing = _solve_one([pt for pt in points if pt[0] not in wrong], t)
        if not failing:
            return _decoded(value, tuple(sorted(wrong)))
        left = [c for c in failing if c not in decoded]
        if not left:  # a decoded component fails again: not within the radius
            break
        component = left[0]
    return UndecodableSharesError(
        f"{n} shares given with threshold {t}: more are wrong than can be corrected "
        f"(at most floor((N - t) / 2) = {radius})")


def decode_many(table: ShareTable, groups: np.ndarray | Sequence[int], *, threshold: int,
                count: int | None = None) -> list[Decoded | ShamirError]:
    """Reconstruct many secrets at once, correcting wrong shares: what :func:`decode` does,
    for every group of rows of ``table`` (``groups[i]`` in [0, count) names row i's secret;
    ``count`` defaults to max(groups) + 1).

    Returns, for each group in order, its :class:`Decoded` or the :class:`ShamirError`
    :func:`decode` would raise for it (fewer than t shares, mixed dealings or thresholds, a
    duplicate x-coordinate, a threshold other than ``threshold``, too many wrong shares, a
    value that is not a secret encoding), so that one bad secret does not hide the others.
    Every secret whose shares are consistent costs a share of one batch of numpy operations;
    only the others go through Gao's decoder, one at a time. Raises SecAggTypeError or
    SecAggValueError for bad arguments.
    """
    require_uint(threshold, "threshold", bits=32, minimum=1)
    if not isinstance(table, ShareTable):
        raise SecAggTypeError(f"table must be a ShareTable, not {type(table).__name__}")
    g = np.asarray(groups)
    if g.shape != (len(table),) or (g.size and g.dtype.kind not in "iu"):
        raise ShapeError(f"groups must be {len(table)} integers, one per row")
    g = g.astype(np.int64)
    if count is None:
        count = int(g.max()) + 1 if g.size else 0
    require_uint(count, "count")
    if g.size and (g.min() < 0 or g.max() >= count):
        raise SecAggValueError(f"group numbers must be in [0, {count})")
    return _reconstruct(table, g, count, threshold, correct=True)


def _one(shares: Sequence[Share], threshold: int | None, *, correct: bool) -> Decoded:
    """:func:`combine` and :func:`decode` for one secret: the argument checks (those of
    :func:`decode_many`, in the same order), then :func:`_solve_one` and, if the test fails
    and ``correct``, :func:`_corrected`."""
    if isinstance(shares, bytes | str) or not isinstance(shares, Sequence | set | frozenset):
        raise SecAggTypeError("shares must be a sequence of Share")
    shares = list(shares)
    if not shares:
        raise InsufficientSharesError("no shares given")
    for s in shares:
        if not isinstance(s, Share):
            raise SecAggTypeError(f"expected Share, got {type(s).__name__}")
    first = shares[0]
    if any(s.dealing_id != first.dealing_id or s.threshold != first.threshold for s in shares):
        raise ForeignShareError("shares come from different dealings")
    points = sorted((s.x, s.y) for s in shares)
    dup = next((a for (a, _), (b, _) in zip(points, points[1:], strict=False) if a == b), None)
    if dup is not None:
        raise DuplicateShareError(f"two shares with x-coordinate {dup}")
    t = first.threshold
    if threshold is not None and require_uint(threshold, "threshold", bits=32, minimum=1) != t:
        raise ForeignShareError(f"shares were dealt with threshold {t}, expected {threshold}")
    if len(shares) < t:
        raise InsufficientSharesError(f"{len(shares)} shares given, threshold is {t}")
    value, failing = _solve_one(points, t)
    if not failing:
        out = _decoded(value, ())
    elif not correct:
        raise ForeignShareError("the shares are not on the dealt polynomial (one is forged or "
                                "corrupted)")
    else:
        out = _corrected(points, t, failing[0])
    if isinstance(out, ShamirError):
        raise out
    return out


def combine(shares: Sequence[Share], *, threshold: int | None = None) -> bytes:
    """Reconstruct the secret from at least t shares of one dealing, in any order.

    ``threshold``: the t the caller expects (for example the round's configured t); shares
    claiming another threshold are refused, so a dealer cannot lower it behind the caller's
    back. Raises :class:`InsufficientSharesError` (fewer than t), :class:`DuplicateShareError`
    (an x-coordinate twice) or :class:`ForeignShareError` (shares of different dealings or
    thresholds, an extra share that is not on the polynomial, or a value that is not a
    secret encoding).
    """
    return _one(shares, threshold, correct=False).secret


def decode(shares: Sequence[Share], *, threshold: int) -> Decoded:
    """Reconstruct the secret from N >= t shares of one dealing, correcting wrong shares.

    The argument checks and their errors are those of :func:`combine`; ``threshold`` (the t
    the caller expects) is required here. If the N shares lie on one polynomial of degree < t
    (the randomised test of :func:`combine`), the secret is interpolated at the cost of
    :func:`combine`, and ``bad_x`` is empty. Otherwise Gao's algorithm corrects up to
    e = floor((N - t) / 2) wrong shares; ``bad_x`` names them. More wrong shares raise
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
    that is not a secret encoding raises :class:`ForeignShareError`. :func:`decode_many` does
    the same for many secrets at once.
    """
    require_uint(threshold, "threshold", bits=32, minimum=1)
    return _one(shares, threshold, correct=True)


# Robust reconstruction: Gao's decoding algorithm for Reed-Solomon codes (S. Gao, "A new
# algorithm for decoding Reed-Solomon codes", 2003, section 2), over one component field
# GF(p). A polynomial is the list of its coefficients, constant term first, without zero
# leading coefficients: the zero polynomial is [] and len(a) - 1 is the degree of a. Classical
# (quadratic) arithmetic: N is at most a few hundred here, where Gao's FFT-based variants
# would not pay off.
def _poly_trim(a: list[int]) -> list[int]:
    """Drop zero leading coefficients of ``a`` (in place) and return it."""
    while a and a[-1] == 0:
        a.pop()
    return a


def _poly_sub(a: Sequence[int], b: Sequence[int], p: int) -> list[int]:
    """a - b mod p."""
    if len(a) < len(b):
        a = list(a) + [0] * (len(b) - len(a))
    out = list(a)
    for i, c in enumerate(b):
        out[i] = (out[i] - c) % p
    return _poly_trim(out)


def _poly_mul(a: Sequence[int], b: Sequence[int], p: int) -> list[int]:
    """a * b mod p, schoolbook: O(deg a * deg b), one reduction per coefficient."""
    if not a or not b:
        return []
    out = [0] * (len(a) + len(b) - 1)
    for i, ai in enumerate(a):
        for j, bj in enumerate(b):
            out[i + j] += ai * bj
    return _poly_trim([c % p for c in out])


def _poly_divmod(a: Sequence[int], b: Sequence[int], p: int) -> tuple[list[int], list[int]]:
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
    inv_lead = pow(b[-1], -1, p)
    q = [0] * (len(a) - db)
    for k in range(len(q) - 1, -1, -1):
        c = rem[k + db] % p * inv_lead % p
        q[k] = c
        if c:
            for j in range(db):  # the leading term cancels by construction
                rem[k + j] -= c * b[j]
    return _poly_trim(q), _poly_trim([c % p for c in rem[:db]])


def _poly_eval(a: Sequence[int], x: int, p: int) -> int:
    """a(x) mod p (Horner)."""
    acc = 0
    for c in reversed(a):
        acc = (acc * x + c) % p
    return acc


def _poly_from_roots(xs: Sequence[int], p: int) -> list[int]:
    """g0 = prod_i (X - x_i): Gao (2003), section 2, step 0 (precomputation). O(N^2)."""
    g = [1]
    for x in xs:  # g <- g * (X - x), coefficients updated from the top down
        g.append(0)
        for k in range(len(g) - 1, 0, -1):
            g[k] = (g[k - 1] - x * g[k]) % p
        g[0] = -x * g[0] % p
    return g


def _batch_inverse(values: Sequence[int], p: int) -> list[int]:
    """Inverses mod p of nonzero ``values`` with one exponentiation (Montgomery's trick)."""
    prefix, acc = [], 1
    for v in values:
        prefix.append(acc)
        acc = acc * v % p
    inv = pow(acc, -1, p)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inv * prefix[i] % p
        inv = inv * values[i] % p
    return out


def _poly_interpolate(points: Sequence[tuple[int, int]], g0: Sequence[int], p: int
                      ) -> list[int]:
    """g1, the polynomial of degree < N through the N ``points``: Gao (2003), section 2, step 1.

    Lagrange form g1 = sum_i y_i w_i g0 / (X - x_i) with w_i = 1 / prod_{j!=i} (x_i - x_j):
    one batch inversion, and each g0 / (X - x_i) by synthetic division, so O(N^2) in all
    (Newton's divided differences would need O(N^2) inversions).
    """
    xs = [x for x, _ in points]
    denominators = []
    for i, xi in enumerate(xs):
        d = 1
        for j, xj in enumerate(xs):
            if j != i:
                d *= xi - xj
        denominators.append(d % p)
    weights = _batch_inverse(denominators, p)
    n = len(points)
    acc = [0] * n
    for (x, y), w in zip(points, weights, strict=True):
        c = y * w % p
        if not c:
            continue
        q = 1  # coefficients of g0 / (X - x), from X^(n-1) down to X^0
        for k in range(n - 1, -1, -1):
            acc[k] += c * q
            q = (g0[k] + x * q) % p
    return _poly_trim([c % p for c in acc])


def _partial_gcd(g0: list[int], g1: list[int], bound: int, p: int
                 ) -> tuple[list[int], list[int]]:
    """Gao (2003), section 2, step 2: the extended Euclidean algorithm on (g0, g1), stopped at
    the first remainder g with 2 deg g < ``bound`` (that is, deg g < (N + t) / 2).

    Returns (g, v) with u g0 + v g1 = g for some u (not computed: the decoder needs only v).
    """
    r_prev, r = g0, g1
    v_prev, v = [], [1]
    while 2 * (len(r) - 1) >= bound:
        q, rem = _poly_divmod(r_prev, r, p)
        r_prev, r = r, rem
        v_prev, v = v, _poly_sub(v_prev, _poly_mul(q, v, p), p)
    return r, v


def _gao_decode(points: Sequence[tuple[int, int]], t: int, p: int) -> list[int] | None:
    """The polynomial f over GF(p) of degree < t within floor((N - t) / 2) of the N
    ``points``, or None.

    Gao (2003), section 2, steps 0-3: g0 = prod (X - x_i); g1 interpolates the points; partial
    gcd (g, v) of (g0, g1) with deg g < (N + t) / 2; f = g / v if v divides g and deg f < t.
    When f is returned it disagrees with the points only at roots of v (v (g1 - f) = 0 mod
    g0), and deg v <= (N - t) / 2: so f is within the decoding radius. Conversely (Gao's
    correctness theorem, section 2), if a codeword is within the radius, f is that codeword.
    """
    g0 = _poly_from_roots([x for x, _ in points], p)
    g1 = _poly_interpolate(points, g0, p)
    g, v = _partial_gcd(g0, g1, len(points) + t, p)
    f, rem = _poly_divmod(g, v, p)
    if rem or len(f) > t:
        return None
    return f
