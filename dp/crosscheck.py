"""An independent accountant: dp_accounting's RdpAccountant, taught the two discrete events,
and a second Gaussian-DP bound.

``secagg budget verify`` recomputes every epsilon in a ledger with this accountant rather than
with :class:`dp.accounting.RdpAccountant`, which wrote the ledger. Composition and the
RDP-to-(epsilon, delta) conversion are dp_accounting's own code (``RdpAccountant.compose``,
``get_epsilon``); Gaussian and zCDP events are dp_accounting's alone. The Skellam and
distributed discrete Gaussian RDP curves (not in dp_accounting) are a second, vectorised
implementation of the formulas cited in :mod:`dp.accounting`, written separately and tested
against the first.

The Gaussian-DP bound (:mod:`dp.gdp` gives the argument) is recomputed a second way: the
Skellam pmf by Miller's backward recurrence for the Bessel functions (not scipy's Bessel
function, which :mod:`dp.gdp` uses), its tail sums and steps written separately, and the
(epsilon, delta) conversion of the composed mu by dp_accounting's own
``GaussianPrivacyLoss.get_delta_for_epsilon`` (the Gaussian mechanism with sensitivity 1 and
standard deviation 1/mu is exactly mu-GDP), searched by bisection.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from dp_accounting.pld import privacy_loss_mechanism as _plm
from dp_accounting.rdp import rdp_privacy_accountant as _rdp
from scipy import stats

from . import gdp as _gdp
from .accounting import MAX_DDG_CLIENTS, ORDERS
from .errors import AccountingError
from .events import (
    ComposedDpEvent,
    DistributedDiscreteGaussianDpEvent,
    DpEvent,
    GaussianDpEvent,
    NoOpDpEvent,
    SelfComposedDpEvent,
    SkellamDpEvent,
)


def _skellam_curve(orders: np.ndarray, e: SkellamDpEvent) -> np.ndarray:
    d1, d2sq, mu = e.l1_sensitivity, e.l2_sensitivity**2, e.variance
    lead = orders * d2sq / (2.0 * mu)
    small = ((2.0 * orders - 1.0) * d2sq + 6.0 * d1) / (4.0 * mu**2)
    return lead + np.minimum(small, 1.5 * d1 / mu)


def _ddg_curve(orders: np.ndarray, e: DistributedDiscreteGaussianDpEvent) -> np.ndarray:
    k = np.arange(1, e.clients, dtype=np.float64)
    tau = 10.0 * np.sum(np.exp(-2.0 * np.pi**2 * e.local_variance * k / (k + 1.0)))
    central = np.sqrt(e.clients * e.local_variance)
    a2, a1 = e.l2_sensitivity / central, e.l1_sensitivity / central
    first = orders / 2.0 * a2**2 + tau * e.dim
    second = orders / 2.0 * (a2**2 + 2.0 * a1 * tau + tau**2 * e.dim)
    third = orders / 2.0 * (a2 + np.sqrt(e.dim) * tau) ** 2
    return np.minimum(np.minimum(first, second), third)


def _skellam_pmf(variance: float, top: int) -> np.ndarray:
    """p(0..top) of Sk(variance), e^-V I_m(V), by Miller's backward recurrence
    I_{m-1}(V) = I_{m+1}(V) + (2m / V) I_m(V) (stable downward for I), started past ``top``
    and normalised by p(0) + 2 sum_{m>0} p(m) = 1: no Bessel library function involved."""
    start = top + math.ceil(8 * math.sqrt(variance)) + 64
    vals = np.empty(start + 2)
    vals[start + 1], vals[start] = 0.0, 1e-290
    two_over_v = 2.0 / variance
    nxt, cur = 0.0, 1e-290
    for m in range(start, 0, -1):
        nxt, cur = cur, nxt + m * two_over_v * cur
        vals[m - 1] = cur
        if cur > 1e250:  # rescale what is computed so far (the ratios are what matter)
            vals[m - 1 :] *= 1e-250
            nxt, cur = nxt * 1e-250, cur * 1e-250
    total = math.fsum([vals[0], 2 * math.fsum(vals[1:].tolist())])
    return vals[: top + 1] / total


@lru_cache(maxsize=256)
def _slope(variance: float) -> tuple[float, float]:
    """(s, eta) for Sk(variance), recomputed independently (see :mod:`dp.gdp`)."""
    if not (_gdp.MIN_VARIANCE <= variance <= _gdp.MAX_VARIANCE):  # also NaN
        raise AccountingError("no GDP certificate for this variance")
    sd = math.sqrt(variance)
    r = math.ceil(_gdp.TAIL_SIGMAS * sd)
    pmf = _skellam_pmf(variance, r + math.ceil(6 * sd) + 64)
    # P(Z > m) for m = 0..R: the sum of pmf[m+1:], smallest terms first
    above = np.cumsum(pmf[::-1].astype(np.longdouble))[::-1]  # above[m] = P(Z >= m)
    surv = above[1 : r + 2].astype(np.float64)
    x = stats.norm.isf(surv)  # Phi^-1(F(m)), m = 0..R
    centre = 2 * stats.norm.ppf(0.5 + pmf[0] / 2)
    rho = surv[-1] / (pmf[r] + surv[-1])  # rho / (1 - rho) = S(R) / p(R)
    if not rho <= pmf[r] / pmf[r - 1]:
        raise AccountingError("the Skellam tail is not log-concave in floating point")
    tail_step = stats.norm.isf(surv[-1] * rho) - x[-1]
    s = max(centre, float(np.max(x[1:] - x[:-1])), tail_step) * (1 + _gdp.MARGIN)
    return float(s), float(2 * surv[-1])


def _mu2(event: DpEvent) -> tuple[float, float]:
    try:
        with np.errstate(all="ignore"):
            return _mu2_tree(event)
    except (OverflowError, ZeroDivisionError):
        return math.inf, 0.0


def _mu2_tree(event: DpEvent) -> tuple[float, float]:
    if isinstance(event, NoOpDpEvent):
        return 0.0, 0.0
    if isinstance(event, GaussianDpEvent):
        z = event.noise_multiplier
        return (z ** -2.0 if z > 0 else math.inf), 0.0
    if isinstance(event, SkellamDpEvent):
        s, eta = _slope(float(event.variance))
        moved = max(1.0, float(math.floor(min(event.l1_sensitivity, 1e300))))
        return (s * event.l2_sensitivity) ** 2, eta * moved
    if isinstance(event, SelfComposedDpEvent):
        m, t = _mu2_tree(event.event)
        return event.count * m, event.count * t
    if isinstance(event, ComposedDpEvent):
        parts = [_mu2_tree(e) for e in event.events]
        return sum(m for m, _ in parts), sum(t for _, t in parts)
    raise AccountingError(f"no GDP bound for {type(event).__name__}")


def gdp_epsilon(mu: float, eta: float, delta: float) -> float:
    """The least epsilon in [0, 256] with delta(epsilon) + (1 + e^epsilon) eta <= delta for the
    Gaussian mechanism of dp_accounting at standard deviation 1/mu (+inf when none)."""
    if mu == 0:
        return 0.0
    if not math.isfinite(mu):
        return math.inf
    loss = _plm.GaussianPrivacyLoss(standard_deviation=1 / mu, sensitivity=1)

    def ok(eps: float) -> bool:
        return loss.get_delta_for_epsilon(eps) + (1 + math.exp(eps)) * eta <= delta

    if ok(0.0):
        return 0.0
    hi = 1.0
    while not ok(hi):  # the first power of two that suffices
        if hi >= _gdp.MAX_EPSILON:
            return math.inf
        hi *= 2
    lo = hi / 2 if hi > 1 else 0.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
        if hi - lo <= 1e-12 * hi:
            break
    return hi


class LibraryAccountant(_rdp.RdpAccountant):
    """dp_accounting's RdpAccountant at the integer orders, plus the two discrete events; and,
    while every event has one (``gdp=True``), the second Gaussian-DP bound. ``get_epsilon`` is
    the smaller of the two, as :class:`dp.accounting.RdpAccountant` reports it."""

    def __init__(self, *, gdp: bool = True) -> None:
        super().__init__(orders=list(ORDERS))
        self._gdp_sum: tuple[float, float] | None = (0.0, 0.0) if gdp else None

    def compose(self, event: DpEvent, count: int = 1):
        out = super().compose(event, count)  # raises before any state changes
        if self._gdp_sum is not None:
            try:
                m, t = _mu2(event)
            except AccountingError:
                self._gdp_sum = None
            else:
                self._gdp_sum = (self._gdp_sum[0] + count * m, self._gdp_sum[1] + count * t)
        return out

    def get_epsilon(self, target_delta: float) -> float:
        eps = super().get_epsilon(target_delta)
        if self._gdp_sum is not None:
            eps = min(eps, gdp_epsilon(math.sqrt(self._gdp_sum[0]), self._gdp_sum[1],
                                       target_delta))
        return eps

    def _maybe_compose(self, event: DpEvent, count: int, do_compose: bool):
        if isinstance(event, SkellamDpEvent):
            if event.variance <= 0:
                return _rdp.CompositionErrorDetails(invalid_event=event,
                                                    error_message="variance must be > 0")
            if do_compose:
                self._rdp += count * _skellam_curve(self._orders.astype(np.float64), event)
            return None
        if isinstance(event, DistributedDiscreteGaussianDpEvent):
            if event.local_variance <= 0 or not 1 <= event.clients <= MAX_DDG_CLIENTS:
                return _rdp.CompositionErrorDetails(invalid_event=event,
                                                    error_message="bad parameters")
            if do_compose:
                self._rdp += count * _ddg_curve(self._orders.astype(np.float64), event)
            return None
        return super()._maybe_compose(event, count, do_compose)


def library_epsilon(events: list[DpEvent], delta: float, *, gdp: bool = True) -> float:
    """Epsilon of the composition of ``events`` by the independent accountant."""
    acc = LibraryAccountant(gdp=gdp)
    for e in events:
        acc.compose(e)
    return float(acc.get_epsilon(delta))
