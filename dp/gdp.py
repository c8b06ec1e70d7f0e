"""Gaussian differential privacy for the Skellam mechanism: a certificate that is as tight as
the central Gaussian's privacy loss distribution, and its exact (epsilon, delta) conversion.

Framework (Dong, Roth, Su, "Gaussian Differential Privacy", JRSS-B 2022):
* a pair of output distributions (P, Q) is mu-GDP when its trade-off function T(P, Q) (the
  least type II error of a test of P against Q at each type I error) is at least
  G_mu(a) = Phi(Phi^-1(1 - a) - mu) (section 2.4);
* mu_i-GDP mechanisms compose, adaptively, to sqrt(sum mu_i^2)-GDP (Corollary 3.3, via the
  monotonicity of the tensor product of trade-off functions, Theorem 3.2); coordinates with
  independent noise are such a composition;
* mu-GDP holds iff (epsilon, delta(epsilon))-DP holds for every epsilon, with
  delta(epsilon) = Phi(-epsilon/mu + mu/2) - e^epsilon Phi(-epsilon/mu - mu/2) (Corollary 2.13).
The Gaussian mechanism with L2 sensitivity D and standard deviation s is exactly (D/s)-GDP;
its privacy loss distribution, which dp_accounting's PLD accountant discretises, is the same.

The certificate (:func:`skellam_slope`). Let Z ~ Sk(V) be the aggregate Skellam noise of one
coordinate (variance V, pmf p(z) = e^-V I_|z|(V)), F its distribution function and
g(z) = Phi^-1(F(z)). p is log-concave (a convolution of two Poisson pmfs, each log-concave;
Hoggar, J. Comb. Theory B 1974), so for an integer shift k > 0 the likelihood ratio of
(Z, Z + k) is monotone and the Neyman-Pearson tests are thresholds: the vertices of T are
(P(Z >= c), P(Z < c - k)) over integers c. T is their piecewise-linear interpolation and G_mu is
convex, so T >= G_mu iff it holds at every vertex, i.e. iff g(z) - g(z - k) <= mu for all z.
With s = max_z [g(z) - g(z - 1)], every shift k is therefore (s k)-GDP, and a vector shift
Delta (any integer vector with ||Delta||_2 <= D_2) is (s D_2)-GDP by composition over the
coordinates. The same argument holds with P and Q swapped (p is symmetric).

The maximum is computed on |z| <= R, R = ceil(30 sqrt(V)). Beyond R the noise is replaced, for
the analysis only, by a geometric tail p'(R + j) = p(R) rho^j of the same mass S(R) = P(Z > R)
(and its mirror image). rho <= p(R) / p(R - 1), so p' stays log-concave; ln(1 / S'(z)) is
linear in z and Phi^-1 of e^-a is concave in a, so on that tail the steps g'(z) - g'(z - 1)
decrease and the first, at R + 1, is their maximum; it enters s. P' is within total variation
2 S(R) of P (and Q' of Q), so by the triangle inequality for the hockey-stick divergence the
real pair satisfies delta(epsilon) + (1 + e^epsilon) eta with eta = 2 S(R) for each coordinate
the shift moves: at most l1_sensitivity of them (an integer vector has at most ||Delta||_1
nonzero coordinates). S(R) is about 4e-44 at V = 1 and below 1e-190 for V >= 100; it is
carried, not dropped.

Floating point: tail sums are accumulated in extended precision from the far tail inward,
and s is enlarged by a relative margin of 1e-6, far above the rounding error of the steps for
V <= MAX_VARIANCE. Above MAX_VARIANCE, and for V < MIN_VARIANCE, no certificate is given and
:mod:`dp.accounting` uses Renyi DP alone.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import special

from .errors import AccountingError
from .events import (
    ComposedDpEvent,
    DpEvent,
    GaussianDpEvent,
    NonPrivateDpEvent,
    NoOpDpEvent,
    SelfComposedDpEvent,
    SkellamDpEvent,
)

TAIL_SIGMAS = 30.0  # R = ceil(30 sqrt(V)): S(R) ~ 1e-197, still a normal float64
MARGIN = 1e-6  # relative enlargement of s, far above the rounding error of its steps
MIN_VARIANCE = 1.0
MAX_VARIANCE = 1e9  # R ~ 1e6 points (and the limit of scipy's ive); beyond, Renyi DP alone
MAX_EPSILON = 256.0  # gdp_epsilon searches [0, 256]


@lru_cache(maxsize=256)
def skellam_slope(variance: float) -> tuple[float, float]:
    """(s, eta): Sk(variance) with integer shift k is within eta of (s k)-GDP (module
    docstring); raises AccountingError when no certificate is computed for this variance."""
    v = float(variance)
    if not (MIN_VARIANCE <= v <= MAX_VARIANCE):  # also NaN
        raise AccountingError(f"no GDP certificate for Skellam variance {variance!r} (outside "
                              f"[{MIN_VARIANCE:g}, {MAX_VARIANCE:g}])")
    sigma = math.sqrt(v)
    r = math.ceil(TAIL_SIGMAS * sigma)
    m = np.arange(0, r + 1, dtype=np.float64)
    p = special.ive(m, v)  # p(m) = e^-V I_m(V), m = 0..R
    beyond = special.ive(np.arange(r + 1, r + 1 + math.ceil(6 * sigma) + 64, dtype=np.float64),
                         v)  # the mass past R that a float64 still holds
    if not (np.all(np.isfinite(p)) and p[-1] > 0 and beyond[0] > 0):
        raise AccountingError(f"Skellam pmf underflows at variance {variance!r}")
    s_r = float(np.sum(beyond[::-1].astype(np.longdouble)))
    # S(m) = P(Z > m) = sum_{j > m} p(j), from the far tail inward in extended precision
    tail = np.cumsum(p[:0:-1].astype(np.longdouble))[::-1] + np.longdouble(s_r)  # m = 0..R-1
    surv = np.append(tail, np.longdouble(s_r)).astype(np.float64)  # m = 0..R
    g = -special.ndtri(surv)  # g(m) = Phi^-1(F(m)), m >= 0
    steps = np.empty(r + 1)
    steps[0] = 2.0 * special.ndtri(0.5 + 0.5 * p[0])  # g(0) - g(-1) = 2 g(0), by symmetry
    steps[1:] = np.diff(g)
    # the geometric tail past R: rho / (1 - rho) = S(R) / p(R)
    ratio = s_r / float(p[-1])
    rho = ratio / (1.0 + ratio)
    if not rho <= float(p[-1] / p[-2]):
        raise AccountingError("the Skellam tail is not log-concave in floating point")
    first_tail_step = float(-special.ndtri(s_r * rho) - g[-1])
    s = max(float(steps.max()), first_tail_step) * (1.0 + MARGIN)
    if not (math.isfinite(s) and s > 0):
        raise AccountingError(f"no GDP certificate for Skellam variance {variance!r}")
    return s, 2.0 * s_r


def event_mu(event: DpEvent) -> tuple[float, float]:
    """(mu, eta) of an event tree: sqrt of the sum of mu_i^2, and the sum of the etas.

    Gaussian events (noise multiplier z, sensitivity 1) are exactly (1/z)-GDP; Skellam events
    are certified by :func:`skellam_slope`; no-op events are 0-GDP. Raises AccountingError for
    any other event (zCDP, the distributed discrete Gaussian: Renyi DP only). A value beyond
    float range is +inf (no bound), never an arithmetic exception."""
    with np.errstate(all="ignore"):
        mu2, eta = _mu2(event)
    return math.sqrt(mu2), eta


def _mu2(event: DpEvent) -> tuple[float, float]:  # noqa: PLR0911 - one case per event type
    if isinstance(event, NoOpDpEvent):
        return 0.0, 0.0
    if isinstance(event, NonPrivateDpEvent):
        return math.inf, 0.0
    if isinstance(event, GaussianDpEvent):
        return _square_or_inf(1.0, event.noise_multiplier), 0.0
    if isinstance(event, SkellamDpEvent):
        s, eta = skellam_slope(event.variance)
        moved = max(1.0, float(math.floor(min(event.l1_sensitivity, 1e300))))
        return _square_or_inf(s * event.l2_sensitivity, 1.0), eta * moved
    if isinstance(event, SelfComposedDpEvent):
        mu2, eta = _mu2(event.event)
        return event.count * mu2, event.count * eta
    if isinstance(event, ComposedDpEvent):
        total, eta = 0.0, 0.0
        for e in event.events:
            m, t = _mu2(e)
            total, eta = total + m, eta + t
        return total, eta
    raise AccountingError(f"no GDP bound for {type(event).__name__}")


def _square_or_inf(a: float, b: float) -> float:
    """(a / b)^2, +inf where it overflows or b is not positive."""
    try:
        return (a / b) ** 2 if b > 0 else math.inf
    except ArithmeticError:
        return math.inf


def gdp_delta(mu: float, epsilon: float) -> float:
    """delta(epsilon) of mu-GDP (Dong, Roth, Su Corollary 2.13)."""
    if mu == 0:
        return 0.0
    if not math.isfinite(mu):
        return 1.0
    a, b = -epsilon / mu + mu / 2, -epsilon / mu - mu / 2
    # Phi(a) - e^eps Phi(b), with the second term in logs (e^eps overflows first)
    second = math.exp(min(700.0, epsilon + float(special.log_ndtr(b))))
    return max(0.0, float(special.ndtr(a)) - second)


def gdp_epsilon(mu: float, eta: float, delta: float) -> float:
    """The least epsilon >= 0 with delta_mu(epsilon) + (1 + e^epsilon) eta <= delta (to 1e-12
    relative; +inf when none)."""
    if not (0 < delta < 1):
        raise AccountingError(f"delta must be in (0, 1), got {delta!r}")

    def over(eps: float) -> bool:
        return gdp_delta(mu, eps) + (1 + math.exp(min(eps, 700.0))) * eta > delta

    if not math.isfinite(mu):
        return math.inf
    if not over(0.0):
        return 0.0
    lo, hi = 0.0, 1.0
    while over(hi):
        if hi >= MAX_EPSILON:  # (1 + e^eps) eta stays negligible below this
            return math.inf
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-12 * hi:
        mid = (lo + hi) / 2
        if over(mid):
            lo = mid
        else:
            hi = mid
    return hi
