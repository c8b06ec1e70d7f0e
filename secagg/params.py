"""Choosing the SecAgg+ degree k and Shamir threshold t (Bell et al., CCS 2020).

Bell, Bonawitz, Gascon, Lepoint, Raykova, "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead", CCS 2020, sections 3-4: with a k-regular random graph, security
and correctness hold except with small probability over the graph. We use the Harary graph
over a uniformly shuffled ring (:mod:`secagg.graph`) and bound three bad events with a union
bound over the n clients, for a cohort of n clients of which at most A = ceil(gamma * n) are
corrupted and at most D = ceil(delta * n) drop out:

1. disconnection (security): the honest survivors' subgraph is disconnected, which would let
   the server learn partial sums. A circulant H(k, n) is disconnected only by two disjoint runs
   of k/2 consecutive removed nodes; there are at most n(n - k - 1)/2 such pairs of runs.
   Semi-honest: dropouts do not depend on the graph, so a given pair (k positions) is all
   corrupted-or-dropped with probability C(A+D, k) / C(n, k). Malicious server: it sees the
   public ordering and may choose which D clients "drop", so a pair can be emptied whenever its
   corrupted count is at least k - D: probability P[H(n, A, k) >= k - D], which forces k > D.
2. exposure (security): an honest client has too many corrupted neighbours. Its neighbours are
   a uniform k-subset of the other n - 1 clients, so their corrupted count X follows the
   hypergeometric law H(n - 1, A, k). Semi-honest: need X < t. Malicious server: the server
   can ask some honest neighbours for shares of b_u and others for shares of s_u^SK, so we need
   2t > k + X (Bell et al. section 4). For the complete graph this is 2t > n - 1 + A, the rule
   of the original SecAgg when a client holds no share of its own secrets.
3. failure (correctness): a surviving client has fewer than t surviving neighbours. Their count
   Y follows H(n - 1, n - D - 1, k).

The malicious-mode bounds hold only if the server cannot declare more than D clients dropped:
the protocol must make clients refuse to unmask when fewer than n - D survive.

Targets: P[1] + P[2] <= 2^-sigma (2^-(sigma+1) each) and P[3] <= 2^-eta, with sigma = 40 and
eta = 20 by default. All probabilities are computed exactly with integer binomials; no
floating-point rounding can move a bound in the insecure direction. For the complete graph
(k = n - 1) X = A and Y = n - D - 1 deterministically, so the same formulas give the
worst-case rules of the original SecAgg. Rates are read as exact decimals (0.1 means 1/10).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from .errors import GraphParameterError, SecAggTypeError

MODES = ("semi-honest", "malicious")
SECURITY_BITS = 40
FAILURE_BITS = 20
MAX_CLIENTS = 100_000
MAX_TARGET_BITS = 256


def _rate(value: object, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float | Fraction):
        raise SecAggTypeError(f"{name} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise GraphParameterError(f"{name} must be finite, got {value}")
    r = Fraction(str(value)) if isinstance(value, float) else Fraction(value)
    if not 0 <= r < 1:
        raise GraphParameterError(f"{name} must be in [0, 1), got {value}")
    return r


def _target_bits(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SecAggTypeError(f"{name} must be an int")
    if not 1 <= value <= MAX_TARGET_BITS:
        raise GraphParameterError(f"{name} must be in [1, {MAX_TARGET_BITS}], got {value}")
    return value


def _hyper_pmf_numerators(population: int, marked: int, draws: int) -> list[int]:
    """C(marked, j) * C(population - marked, draws - j) for j = 0..draws (denominator C(N, k)).

    Exact integers by the recurrence p(j+1) = p(j) (K - j)(k - j) / ((j + 1)(M - k + j + 1)),
    M = N - K; every division is exact because both sides are integers.
    """
    rest = population - marked
    out = [0] * (draws + 1)
    j = max(0, draws - rest)
    if j > min(draws, marked):
        return out
    p = math.comb(marked, j) * math.comb(rest, draws - j)
    while j <= min(draws, marked):
        out[j] = p
        p = p * (marked - j) * (draws - j) // ((j + 1) * (rest - draws + j + 1))
        j += 1
    return out


def _log2_ratio(num: int, den: int) -> float:
    return -math.inf if num == 0 else math.log2(num) - math.log2(den)


@dataclass(frozen=True)
class Analysis:
    """The three bad-event bounds for (n, k, t), as exact-derived log2 probabilities."""

    n: int
    k: int
    t: int
    mode: str
    corrupted: int
    dropped: int
    log2_disconnect: float
    log2_exposure: float
    log2_failure: float

    def secure(self, security_bits: int = SECURITY_BITS) -> bool:
        lim = -(security_bits + 1)
        return self.log2_disconnect <= lim and self.log2_exposure <= lim

    def correct(self, failure_bits: int = FAILURE_BITS) -> bool:
        return self.log2_failure <= -failure_bits


@dataclass(frozen=True)
class GraphParameters:
    """The chosen degree ``k`` (n - 1 for the complete graph) and threshold ``t``."""

    n: int
    k: int
    t: int
    complete: bool
    mode: str
    dropout_rate: float
    corrupt_rate: float
    analysis: Analysis


class _Cohort:
    """Exact bad-event probabilities for one (n, rates, mode)."""

    def __init__(self, n: int, dropout_rate: object, corrupt_rate: object, mode: str) -> None:
        if isinstance(n, bool) or not isinstance(n, int):
            raise SecAggTypeError("n must be an int")
        if not 3 <= n <= MAX_CLIENTS:
            raise GraphParameterError(f"cohort size {n} outside [3, {MAX_CLIENTS}]")
        if mode not in MODES:
            raise GraphParameterError(f"unknown mode {mode!r}; choose one of {MODES}")
        self.n, self.mode = n, mode
        self.A = math.ceil(_rate(corrupt_rate, "corrupt_rate") * n)
        self.D = math.ceil(_rate(dropout_rate, "dropout_rate") * n)
        if self.A + self.D >= n:
            raise GraphParameterError("corrupted plus dropped clients leave no honest survivor")

    def disconnect(self, k: int) -> tuple[int, int]:
        """(numerator, denominator) bounding P[honest survivors' subgraph disconnected]."""
        n, A, D = self.n, self.A, self.D
        pairs = n * (n - k - 1)  # twice the number of pairs of disjoint k/2-runs
        if k >= n - 1:
            return 0, 1
        if self.mode == "semi-honest":
            return (0, 1) if A + D < k else (pairs * math.comb(A + D, k), 2 * math.comb(n, k))
        # Malicious: the server drops up to D clients of its choice after seeing the ordering.
        need = k - D  # corrupted clients the two runs must already hold
        if need <= 0:
            return 1, 1
        tail = sum(_hyper_pmf_numerators(n, A, k)[need:])
        return pairs * tail, 2 * math.comb(n, k)

    def exposure_tail(self, k: int) -> tuple[list[int], int]:
        """Suffix sums S[a] = n * C(n-1,k) * P[X >= a] numerators, and the denominator."""
        pmf = _hyper_pmf_numerators(self.n - 1, self.A, k)
        suffix = [0] * (k + 2)
        for a in range(k, -1, -1):
            suffix[a] = suffix[a + 1] + pmf[a]
        return [self.n * s for s in suffix], math.comb(self.n - 1, k)

    def failure_head(self, k: int) -> tuple[list[int], int]:
        """Prefix sums P[t] = n * C(n-1,k) * P[Y < t] numerators, and the denominator."""
        pmf = _hyper_pmf_numerators(self.n - 1, self.n - self.D - 1, k)
        prefix = [0] * (k + 2)
        for t in range(1, k + 2):
            prefix[t] = prefix[t - 1] + pmf[t - 1]
        return [self.n * p for p in prefix], math.comb(self.n - 1, k)

    def exposure_index(self, k: int, t: int) -> int:
        """The corrupted-neighbour count whose tail decides security for threshold t."""
        return t if self.mode == "semi-honest" else max(0, 2 * t - k)

    def analyse(self, k: int, t: int) -> Analysis:
        dn, dd = self.disconnect(k)
        tails, tden = self.exposure_tail(k)
        heads, hden = self.failure_head(k)
        a = self.exposure_index(k, t)
        exposure = tails[a] if a <= k else 0
        failure = heads[min(t, k + 1)]
        return Analysis(
            self.n,
            k,
            t,
            self.mode,
            self.A,
            self.D,
            _log2_ratio(dn, dd),
            _log2_ratio(exposure, tden),
            _log2_ratio(failure, hden),
        )

    def threshold_range(self, k: int, security_bits: int, failure_bits: int) -> tuple[int, int]:
        """(t_lo, t_hi): the smallest secure and the largest correct threshold for degree k."""
        tails, tden = self.exposure_tail(k)
        # smallest a0 with n * P[X >= a0] <= 2^-(sigma+1), exactly: S[a0] * 2^(sigma+1) <= den
        a0 = next(a for a in range(k + 2) if tails[a] << (security_bits + 1) <= tden)
        t_lo = a0 if self.mode == "semi-honest" else -(-(k + a0) // 2)
        t_lo = max(t_lo, 2)
        heads, hden = self.failure_head(k)
        t_hi = max((t for t in range(1, k + 1) if heads[t] << failure_bits <= hden), default=0)
        return t_lo, t_hi


def find_parameters(
    n: int,
    *,
    dropout_rate: float,
    corrupt_rate: float,
    mode: str = "semi-honest",
    complete: bool = False,
    security_bits: int = SECURITY_BITS,
    failure_bits: int = FAILURE_BITS,
) -> GraphParameters:
    """The smallest even degree k (and the smallest secure t) meeting both targets.

    Falls back to the complete graph when no sparse degree works (small cohorts), or uses it
    directly when ``complete=True``. Raises :class:`GraphParameterError` when even the complete
    graph cannot meet the targets (too many dropouts or corrupted clients for n).
    """
    if not isinstance(complete, bool):
        raise SecAggTypeError("complete must be a bool")
    security_bits = _target_bits(security_bits, "security_bits")
    failure_bits = _target_bits(failure_bits, "failure_bits")
    cohort = _Cohort(n, dropout_rate, corrupt_rate, mode)
    limit = Fraction(1, 2 ** (security_bits + 1))
    # Malicious mode needs k > D (see disconnect); smaller degrees cannot pass.
    first = 2 if mode == "semi-honest" else max(2, cohort.D + 1 + (cohort.D + 1) % 2)
    candidates = [] if complete else list(range(first, n - 1, 2))
    for k in candidates + [n - 1]:
        dn, dd = cohort.disconnect(k)
        if dn and Fraction(dn, dd) >= limit:
            continue
        t_lo, t_hi = cohort.threshold_range(k, security_bits, failure_bits)
        if t_lo <= t_hi:
            return GraphParameters(
                n,
                k,
                t_lo,
                k == n - 1,
                mode,
                float(dropout_rate),
                float(corrupt_rate),
                cohort.analyse(k, t_lo),
            )
    raise GraphParameterError(
        f"no (k, t) meets 2^-{security_bits} security and 2^-{failure_bits} failure for "
        f"n={n}, dropout_rate={dropout_rate}, corrupt_rate={corrupt_rate}, mode={mode}"
    )


def analyse_parameters(
    n: int, k: int, t: int, *, dropout_rate: float, corrupt_rate: float, mode: str = "semi-honest"
) -> Analysis:
    """The bad-event bounds of a given (n, k, t), e.g. to check a hand-picked configuration."""
    cohort = _Cohort(n, dropout_rate, corrupt_rate, mode)
    if isinstance(k, bool) or not isinstance(k, int) or not (2 <= k <= n - 1):
        raise GraphParameterError(f"k must be in [2, n - 1], got {k}")
    if k < n - 1 and k % 2:
        raise GraphParameterError(f"a Harary degree must be even, got {k}")
    if isinstance(t, bool) or not isinstance(t, int) or not (1 <= t <= k):
        raise GraphParameterError(f"threshold must be in [1, k], got {t}")
    return cohort.analyse(k, t)
