"""Encoding a clipped update into Z_{2^b}, and decoding the cohort's sum.

Client (Kairouz, Liu, Steinke ICML 2021, Algorithm 1; Agarwal, Kairouz, Liu NeurIPS 2021,
Algorithm 1): rotate (:mod:`dp.rotation`), scale by gamma, conditional randomized rounding,
add discrete noise (:mod:`dp.noise`), wrap into Z_{2^b}. Server: centred lift of the sum, divide
by gamma, inverse rotation.

The rotation U = H D / sqrt(D_pad) is the one :mod:`dp.rotation` defines (same signs from the
same seed), computed here by a cache-blocked Walsh-Hadamard transform (:class:`_Hadamard`),
and the first rounding attempt runs block by block on its output while the block is in cache.
Client and server use the same transform; it agrees with :func:`dp.rotation.rotate` to a few
units in the last place, and rounding makes the same decisions as :func:`conditional_round`
on the same y and the same words.

Here ``gamma`` is the scale factor (the papers' 1/gamma granularity): encoded = round(gamma x).

Conditional randomized rounding (Kairouz et al., section 4.1 and Theorem 2): round every
coordinate up with probability equal to its fractional part, and retry until the squared norm
is at most B^2 with
    B^2 = min( c^2 + D/4 + sqrt(2 ln(1/beta)) (c + sqrt(D)/2),  (c + sqrt(D))^2 ),  c = gamma C.
A single attempt fails with probability at most beta. After rounding every vector has integer
L2 norm <= B, so the integer sensitivities are Delta_2 = B and Delta_1 = min(B^2, sqrt(D) B)
(an integer vector has ||v||_1 <= ||v||_2^2). These are what :mod:`dp.accounting` uses.

Modular wrap (:func:`wrap_probability`): a coordinate of the aggregate wraps if it leaves
[-2^(b-1), 2^(b-1)). It is the sum of the rotated signal (sub-Gaussian, proxy (n c)^2 / D for n
vectors of norm <= c), the rounding errors (|sum| < n), and the noise (Chernoff for Skellam,
sub-Gaussian for the discrete Gaussian). A union bound over D coordinates gives the stated
probability. The signal bound assumes the rotation seed is independent of the inputs; a client
that crafts its input against the public seed can only spoil the round's utility, not privacy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import ParameterError, UpdateError
from .noise import MECHANISMS, skellam_tail_bound
from .randomness import CryptoRandom
from .rotation import padded_dim

DEFAULT_BETA = math.exp(-0.5)
MAX_ROUNDING_ATTEMPTS = 1000
_BLOCK_BITS = 16  # 2^16 float64 (512 KiB): a block and its scratch stay in one core's L2 cache
_RADIX_BITS = 4  # Hadamard levels per matrix product (H_16: 32 flops per coordinate)
_GEMM_MACS = 1 << 18  # multiply-adds per BLAS call: OpenBLAS's threshold for a second thread,
# which on a core shared with other work makes the product much slower, not faster


def rounded_norm_bound(scaled_clip: float, padded: int, beta: float) -> float:
    """B: the norm bound that conditional randomized rounding enforces (Kairouz et al. Thm 2)."""
    c, dd = scaled_clip, float(padded)
    b1 = (c + math.sqrt(dd)) ** 2
    if beta == 0:
        return math.sqrt(b1)
    b2 = c * c + dd / 4 + math.sqrt(2 * math.log(1 / beta)) * (c + math.sqrt(dd) / 2)
    return math.sqrt(min(b1, b2))


@dataclass(frozen=True)
class EncodingPlan:
    """Everything a client and the server must agree on to encode and decode a round."""

    dim: int  # length of the vector that is rotated (update size, +1 when weighted)
    gamma: float  # scale factor
    bits: int
    clip_norm: float  # L2 bound of the vector that is rotated
    beta: float = DEFAULT_BETA

    def __post_init__(self) -> None:
        padded_dim(self.dim)
        for name in ("gamma", "clip_norm"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, int | float) and math.isfinite(v)
                                            and v > 0):
                raise ParameterError(f"{name} must be a finite positive number, got {v!r}")
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not (
            8 <= self.bits <= 64
        ):
            raise ParameterError(f"bits must be an int in [8, 64], got {self.bits!r}")
        if not (isinstance(self.beta, float | int) and 0 < self.beta < 1):
            raise ParameterError(f"beta must be in (0, 1), got {self.beta!r}")

    @property
    def padded_dim(self) -> int:
        return padded_dim(self.dim)

    @property
    def norm2_bound(self) -> int:
        """floor(B^2): the largest squared L2 norm an encoded vector may have."""
        b = rounded_norm_bound(self.gamma * self.clip_norm, self.padded_dim, self.beta)
        return math.floor(b * b)

    @property
    def l2_sensitivity(self) -> float:
        return math.sqrt(self.norm2_bound)

    @property
    def l1_sensitivity(self) -> float:
        b2 = self.norm2_bound
        return float(min(b2, math.sqrt(self.padded_dim) * math.sqrt(b2)))

    @property
    def inflation(self) -> float:
        """B / (gamma C): how much rounding enlarges the sensitivity."""
        return self.l2_sensitivity / (self.gamma * self.clip_norm)

    def to_dict(self) -> dict:
        return {"dim": self.dim, "padded_dim": self.padded_dim, "gamma": self.gamma,
                "bits": self.bits, "clip_norm": self.clip_norm, "beta": self.beta,
                "l2_sensitivity": self.l2_sensitivity, "l1_sensitivity": self.l1_sensitivity}


def _sylvester(bits: int) -> np.ndarray:
    """The Walsh-Hadamard matrix of order 2^bits (Sylvester's construction), float64."""
    h = np.ones((1, 1))
    for _ in range(bits):
        h = np.block([[h, h], [h, -h]])
    return h


_H = tuple(_sylvester(r) for r in range(_RADIX_BITS + 1))


def _stage(a: np.ndarray, b: np.ndarray, low: int, h: np.ndarray) -> None:
    """b = the Hadamard levels of index bits [low, low + r) applied to a (both of length 2^m):
    h (H_{2^r}, possibly scaled) multiplies axis 1 of a viewed as (rows, 2^r, 2^low)."""
    w, c = h.shape[0], 1 << low
    rows = a.shape[0] // (w * c)
    span = max(1, _GEMM_MACS // (w * w))  # extent of one product, kept below the BLAS threshold
    if c == 1:
        k = min(rows, span)
        np.matmul(a.reshape(rows // k, k, w), h, out=b.reshape(rows // k, k, w))
    elif c <= span:
        np.matmul(h, a.reshape(rows, w, c), out=b.reshape(rows, w, c))
    else:
        shape = (rows, w, c // span, span)
        np.matmul(h, a.reshape(shape).transpose(0, 2, 1, 3),
                  out=b.reshape(shape).transpose(0, 2, 1, 3))


def _levels(low: int, bits: int) -> list[tuple[int, np.ndarray]]:
    """Index bits [low, low + bits) as (lowest bit, Sylvester matrix) products of at most
    RADIX_BITS levels each, split evenly."""
    count = -(-bits // _RADIX_BITS)
    out = []
    for i in range(count):
        r = bits // count + (i < bits % count)
        out.append((low, _H[r]))
        low += r
    return out


def _padded_stage(x: np.ndarray, signs: np.ndarray, low: int, h: np.ndarray,
                  out: np.ndarray) -> None:
    """out = :func:`_stage` of D x zero-padded to len(out), where D = diag(signs) (int8 +-1),
    without writing D x out first: each (2^r, span) input block of the product is assembled in
    cache from the rows of x that it covers. Needs 2^low >= span (the blocked case)."""
    d, n, w, c = x.shape[0], out.shape[0], h.shape[0], 1 << low
    span = min(c, max(1, _GEMM_MACS // (w * w)))
    o = out.reshape(n // (w * c), w, c)
    buf = np.empty((w, span))
    for g in range(o.shape[0]):
        g0 = g * w * c
        if g0 >= d:
            o[g] = 0.0
            continue
        full = min(w, (d - g0) // c)  # rows of this group lying wholly inside x
        xf, sf = x[g0:g0 + full * c].reshape(full, c), signs[g0:g0 + full * c].reshape(full, c)
        part = g0 + full * c  # the row that x ends in, if any
        plen = d - part if full < w else 0
        for j in range(0, c, span):
            np.multiply(xf[:, j:j + span], sf[:, j:j + span], out=buf[:full])
            r = full
            if plen > j:
                k = min(span, plen - j)
                np.multiply(x[part + j:part + j + k], signs[part + j:part + j + k],
                            out=buf[r, :k])
                buf[r, k:] = 0.0
                r += 1
            buf[r:] = 0.0
            np.matmul(h, buf, out=o[g, :, j:j + span])


class _Hadamard:
    """The Walsh-Hadamard transform ``scale`` H_{2^m} v in cache-sized pieces.

    H_{2^m} is the Kronecker product of m copies of H_2, one per index bit, and the factors
    commute, so the levels can be taken in any grouping and order (the fast Walsh-Hadamard
    transform; Fino and Algazi, IEEE Trans. Computers 25(11), 1976). The levels of the index
    bits above BLOCK_BITS go first, over the whole vector; then each contiguous block of
    2^BLOCK_BITS coordinates, which stays in the L2 cache, gets the levels of the low bits. Each
    group of up to RADIX_BITS levels is one matrix product with H_16 or a smaller Sylvester
    matrix, the first of them scaled by ``scale``. Exact in real arithmetic; in floating point
    each coordinate carries an error of order m 2^-53 ||scale v||_1.

    With ``x`` and ``signs`` the transformed vector is D x zero-padded to len(v) (D = diag of
    the int8 signs), and v only receives intermediate results; otherwise it is v, which is
    overwritten. ``src`` holds the vector after the top levels: the blocks are read from it.
    """

    def __init__(self, v: np.ndarray, scale: float = 1.0, *, x: np.ndarray | None = None,
                 signs: np.ndarray | None = None) -> None:
        n = v.shape[0]
        if n < 1 or n & (n - 1):
            raise ParameterError(f"Hadamard transform needs a power-of-two length, got {n}")
        m = n.bit_length() - 1
        kb = min(m, _BLOCK_BITS)
        self.n, self.block = n, 1 << kb
        top, self._low = _levels(kb, m - kb), _levels(0, kb)
        first = top or self._low
        if first:
            first[0] = (first[0][0], scale * first[0][1])
        self._p, self._q = np.empty(self.block), np.empty(self.block)
        if x is not None and not top:
            np.multiply(x, signs, out=v[:x.shape[0]])  # exact: the signs are +-1
            v[x.shape[0]:] = 0.0
        if not first:  # n = 1
            v *= scale
        self.src = v
        if top:
            (low, h), spare = top[0], None
            if x is not None:
                _padded_stage(x, signs, low, h, v)
            else:
                spare = np.empty(n)
                _stage(v, spare, low, h)
                self.src, spare = spare, v
            for low, h in top[1:]:
                if spare is None:
                    spare = np.empty(n)
                _stage(self.src, spare, low, h)
                self.src, spare = spare, self.src

    def block_at(self, start: int) -> tuple[np.ndarray, np.ndarray]:
        """(the transform on coordinates [start, start + 2^kb), a free buffer of that size):
        two scratch buffers that the next call overwrites. The block of ``src`` has been read
        in full when this returns."""
        a, b = self.src[start:start + self.block], self._p
        if not self._low:
            np.copyto(b, a)
            return b, self._q
        for low, h in self._low:
            _stage(a, b, low, h)
            a, b = b, self._q if b is self._p else self._p
        return a, b

    def full(self) -> np.ndarray:
        """The transform as a new array."""
        out = np.empty(self.n)
        for start in range(0, self.n, self.block):
            out[start:start + self.block] = self.block_at(start)[0]
        return out


def _sign_bits(seed: bytes, n: int) -> np.ndarray:
    """The diagonal of :func:`dp.rotation.rotation_signs` as booleans (True where it is -1)."""
    raw = np.frombuffer(CryptoRandom(seed).bytes((n + 7) // 8), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little")[:n].view(np.bool_)


def _rotation(x: np.ndarray, seed: bytes, scale: float, v: np.ndarray) -> _Hadamard:
    """The transform of scale * U x (U = H D / sqrt(D_pad), :mod:`dp.rotation`) with D_pad the
    length of the work buffer ``v``, which it keeps."""
    signs = 1 - 2 * _sign_bits(seed, x.shape[0]).view(np.int8)
    return _Hadamard(v, scale / math.sqrt(v.shape[0]), x=x, signs=signs)


def _rounding_attempts(y: np.ndarray, norm2_bound: int, rng: CryptoRandom,
                       attempts: int) -> np.ndarray:
    """Up to ``attempts`` attempts of :func:`conditional_round`, without its int64 check."""
    lo = np.floor(y)
    frac = y - lo
    base = lo.astype(np.int64)
    for _ in range(attempts):
        z = base + (rng.uniform(y.size) < frac)
        if int(np.dot(z, z)) <= norm2_bound:
            return z
    raise ParameterError(f"conditional rounding failed {MAX_ROUNDING_ATTEMPTS} times: the "
                         "input exceeds the plan's clip norm")


def _check_int64_norms(top: float, size: int) -> None:
    """Refuse values whose squared norms could leave int64 (|z_i| < top, ``size`` of them)."""
    if top * top * size >= 2.0**62:
        raise ParameterError("scaled vector too large for exact int64 norms; lower gamma")


def conditional_round(y: np.ndarray, norm2_bound: int, rng: CryptoRandom) -> np.ndarray:
    """Unbiased randomized rounding to int64, repeated until ||z||^2 <= norm2_bound.

    Coordinate i rounds up when the i-th uniform of the attempt, (w_i >> 11) 2^-53 for the
    attempt's i-th word w_i of ``rng``, is below its fractional part. Raises ParameterError when
    the values are too large for exact int64 norms or when MAX_ROUNDING_ATTEMPTS attempts fail.
    """
    lo = np.floor(y)
    _check_int64_norms(float(max(np.max(lo), -np.min(lo))) + 1 if y.size else 0.0, y.size)
    return _rounding_attempts(y, norm2_bound, rng, MAX_ROUNDING_ATTEMPTS)


def _round_first_attempt(h: _Hadamard, norm2_bound: int, rng: CryptoRandom,
                         out: np.ndarray) -> bool:
    """The first attempt of :func:`conditional_round` on the transform y of ``h``, block by
    block while each block of y is in the cache: the same words of ``rng``, the same decisions.
    Writes z to ``out`` and tells whether ||z||^2 <= norm2_bound."""
    words = np.empty(h.block, dtype=np.uint64)
    up = np.empty(h.block, dtype=np.bool_)
    norm2 = 0
    for start in range(0, h.n, h.block):
        y, spare = h.block_at(start)
        lo = np.floor(y, out=spare)
        frac = np.subtract(y, lo, out=y)
        np.right_shift(rng.fill_uint64(words), np.uint64(11), out=words)
        u = np.multiply(words, 2.0**-53, out=words.view(np.float64))  # exact: words < 2^53
        np.add(lo, np.less(u, frac, out=up), out=lo)  # lo + 1 where the coordinate rounds up
        z = out[start:start + h.block]
        np.copyto(z, lo, casting="unsafe")
        norm2 += int(np.dot(z, z))
    return norm2 <= norm2_bound


def _checked_norm(x: np.ndarray, clip_norm: float, scratch: np.ndarray) -> float:
    """An upper bound on ||x||_2 (within 1e-13 relative); raises UpdateError, as a check of
    :func:`dp.update.l2_norm` against the clip norm would, for non-finite entries or a norm
    above clip_norm (1 + 1e-12). ``scratch``: float64 of x's length.

    For float64 x whose sum of squares s is a normal number the bound is sqrt(s) (1 + 1e-13):
    pairwise summation of n non-negative terms errs by at most about (20 + log2 n) 2^-53 of s,
    and l2_norm by as little, so a bound below the limit certifies that l2_norm is below it too.
    Otherwise (overflow, underflow, NaN or infinities, float32) l2_norm's own steps decide.
    """
    limit = clip_norm * (1 + 1e-12)
    if x.dtype == np.float64:
        with np.errstate(over="ignore", invalid="ignore"):
            s = float(np.sum(np.square(x, out=scratch)))
        if 2.0**-900 <= s < math.inf and math.sqrt(s) * (1 + 1e-13) <= limit:
            return math.sqrt(s) * (1 + 1e-13)
    top = float(max(np.max(x), -np.min(x)))  # max |x_i|; NaN propagates
    if not math.isfinite(top):
        raise UpdateError("vector has NaN or infinite values")
    if top == 0.0:
        return 0.0
    scaled = np.divide(x, top, out=scratch) if x.dtype == np.float64 else x / top
    norm = top * float(np.sqrt(np.sum(np.square(scaled, out=scaled))))
    if norm > limit:
        raise UpdateError(f"vector norm {norm:.6g} exceeds the clip norm {clip_norm:.6g}; "
                          "clip it first")
    return norm


def encode(x: np.ndarray, plan: EncodingPlan, rotation_seed: bytes,
           rng: CryptoRandom | None = None) -> np.ndarray:
    """The integer vector (int64, length D_pad) of an already clipped x; noise not yet added.

    Conditional randomized rounding (:func:`conditional_round`) of y = gamma U x. Raises
    UpdateError for a wrong shape or dtype, non-finite entries or a norm above the clip norm,
    and ParameterError when rounding cannot meet the norm bound or gamma is too large.
    """
    x = np.asarray(x)
    if x.ndim != 1 or x.shape[0] != plan.dim or x.dtype.kind != "f":
        raise UpdateError(f"encode takes a float vector of length {plan.dim}, got "
                          f"{x.dtype} {x.shape}")
    n, bound = plan.padded_dim, plan.norm2_bound
    work = np.empty(n)
    norm = _checked_norm(x, plan.clip_norm, work[:plan.dim])
    rng = rng if rng is not None else CryptoRandom()
    h = _rotation(x, rotation_seed, plan.gamma, work)
    # |floor(y_i)| + 1 <= |y_i| + 2 and |y_i| <= ||y|| = gamma ||x|| up to rounding (far below
    # 0.1 %), so this settles the int64 check of conditional_round before y exists; otherwise
    # y is made whole and checked.
    if (plan.gamma * norm * 1.001 + 2) ** 2 * n < 2.0**62:
        z = h.src.view(np.int64)  # each block of src is read before its z is written
        if _round_first_attempt(h, bound, rng, z):
            return z
        y = _rotation(x, rotation_seed, plan.gamma, np.empty(n)).full()  # the same y again
        return _rounding_attempts(y, bound, rng, MAX_ROUNDING_ATTEMPTS - 1)
    return conditional_round(h.full(), bound, rng)


def to_ring(z: np.ndarray, bits: int) -> np.ndarray:
    """Wrap signed int64 values into Z_{2^b} (uint32 for b <= 32, else uint64)."""
    if bits <= 32:
        u = z.astype(np.uint32)  # integer conversion to unsigned: exact modulo 2^32
        if bits < 32:
            u &= np.uint32((1 << bits) - 1)
        return u
    u = z.astype(np.uint64)  # two's complement: exact modulo 2^64
    if bits < 64:
        u &= np.uint64((1 << bits) - 1)
    return u


def centred_lift(s: np.ndarray, bits: int) -> np.ndarray:
    """Ring elements to signed int64 in [-2^(b-1), 2^(b-1))."""
    u = np.asarray(s).astype(np.uint64)
    if bits < 64:
        shift = np.uint64(64 - bits)
        return (u << shift).view(np.int64) >> np.int64(64 - bits)
    return u.view(np.int64)


def decode(ring_sum: np.ndarray, plan: EncodingPlan, rotation_seed: bytes) -> np.ndarray:
    """The (noisy) sum of the cohort's clipped vectors, length plan.dim, from their ring sum."""
    s = np.asarray(ring_sum)
    if s.ndim != 1 or s.shape[0] != plan.padded_dim or s.dtype.kind != "u":
        raise UpdateError(f"aggregate must be an unsigned vector of length {plan.padded_dim}")
    y = centred_lift(s, plan.bits).astype(np.float64) / plan.gamma
    n = plan.padded_dim
    v = _Hadamard(y, 1.0 / math.sqrt(n)).full()  # U^T y = D H y / sqrt(D_pad): H = H^T
    d = plan.dim
    return np.multiply(v[:d], 1 - 2 * _sign_bits(rotation_seed, d).view(np.int8))


def wrap_probability(*, clients: int, plan_gamma: float, clip_norm: float, padded: int,
                     bits: int, mechanism: str, local_variance: float) -> float:
    """Union bound on P(some coordinate of the aggregate wraps) for up to ``clients`` vectors.

    ``local_variance`` is each client's noise variance in scaled units (Skellam mu, or the
    discrete Gaussian's sigma^2). See the module docstring for the three terms.
    """
    if mechanism not in MECHANISMS:
        raise ParameterError(f"mechanism must be one of {MECHANISMS}")
    room = 2.0 ** (bits - 1) - 1 - clients  # rounding errors take at most n
    if room <= 0:
        return 1.0
    c = clients * plan_gamma * clip_norm
    total_var = clients * local_variance

    def bound(f: float) -> float:
        a, m = f * room, (1 - f) * room
        signal = 2 * math.exp(-a * a * padded / (2 * c * c)) if c > 0 else 0.0
        if total_var <= 0:
            noise = 0.0
        elif mechanism == "skellam":
            noise = 2 * skellam_tail_bound(total_var, m)
        else:
            noise = 2 * math.exp(-m * m / (2 * total_var))
        return padded * (signal + noise)

    return min(1.0, *(bound(i / 400) for i in range(1, 400)))


def choose_encoding(*, clients: int, clip_norm: float, dim: int, noise_multiplier: float,
                    min_clients: int, mechanism: str = "skellam", bits: int | None = None,
                    wrap_bound: float = 2.0**-30, max_inflation: float = 0.05,
                    beta: float = DEFAULT_BETA) -> tuple[EncodingPlan, float]:
    """Pick gamma and b for a cohort: returns (plan, per-client noise variance in scaled units).

    gamma is the smallest power of two for which rounding inflates the sensitivity by at most
    ``max_inflation`` (B <= (1 + max_inflation) gamma C); the central noise has standard
    deviation ``noise_multiplier`` * B and is split over ``min_clients`` (n_min) clients; b is
    the smallest width in [8, 64] whose wrap probability, with all ``clients`` surviving, is
    at most ``wrap_bound`` (or the given ``bits``, checked).
    """
    for name, v in (("clients", clients), ("min_clients", min_clients), ("dim", dim)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ParameterError(f"{name} must be a positive int, got {v!r}")
    if min_clients > clients:
        raise ParameterError(f"min_clients {min_clients} exceeds the cohort size {clients}")
    if not (isinstance(noise_multiplier, int | float) and math.isfinite(noise_multiplier)
            and noise_multiplier > 0):
        raise ParameterError(f"noise multiplier must be positive and finite, got "
                             f"{noise_multiplier!r}")
    if not (0 < wrap_bound < 1) or not (0 < max_inflation):
        raise ParameterError("wrap_bound must be in (0, 1) and max_inflation positive")
    padded = padded_dim(dim)
    gamma = 2.0**-20
    while True:
        b = rounded_norm_bound(gamma * clip_norm, padded, beta)
        if b <= (1 + max_inflation) * gamma * clip_norm:
            break
        gamma *= 2
        if gamma > 2.0**40:
            raise ParameterError("no scale meets max_inflation")
    probe = EncodingPlan(dim, gamma, 64, clip_norm, beta)
    local = (noise_multiplier * probe.l2_sensitivity) ** 2 / min_clients
    widths = [bits] if bits is not None else list(range(8, 65))
    for w in widths:
        p = wrap_probability(clients=clients, plan_gamma=gamma, clip_norm=clip_norm,
                             padded=padded, bits=w, mechanism=mechanism, local_variance=local)
        if p <= wrap_bound:
            return EncodingPlan(dim, gamma, w, clip_norm, beta), local
    what = (f"b = {bits} bits is too few: it does not keep" if bits is not None
            else "no b <= 64 keeps")
    raise ParameterError(
        f"{what} the wrap probability below {wrap_bound:g} at gamma = {gamma:g} (raise bits, "
        "lower the noise or allow more inflation)")
