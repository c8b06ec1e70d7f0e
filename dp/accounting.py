"""Renyi-DP and Gaussian-DP accounting for the events of :mod:`dp.events`, (epsilon, delta)
conversion, and planning.

Two sound bounds are kept for every composition and the smaller epsilon is reported: the
Renyi-DP curve below, and, when every event has one, the Gaussian-DP parameter of
:mod:`dp.gdp` (Gaussian events exactly; Skellam events by a numerical certificate as tight as
the Gaussian's privacy loss distribution). The distributed discrete Gaussian and zCDP events
have Renyi-DP bounds only.

Stateful accountant after dp_accounting's ``PrivacyAccountant``: ``supports(event)`` is checked
before any state changes; ``compose`` adds the event's RDP curve at every order; ``epsilon``
converts. Orders are the integers 2..256 and a few larger ones: the Skellam bound holds for
integer orders only (Agarwal et al. NeurIPS 2021, Theorem 3.5).

RDP of one event at order a:
* Gaussian, noise multiplier z (Mironov CSF 2017, Proposition 7): a / (2 z^2).
* zCDP (rho, xi) (Bun, Steinke TCC 2016): xi + rho a.
* Skellam (Agarwal et al. Theorem 3.5), aggregate variance mu, sensitivities D1, D2:
  a D2^2 / (2 mu) + min( ((2a - 1) D2^2 + 6 D1) / (4 mu^2),  3 D1 / (2 mu) ).
* Distributed discrete Gaussian (Kairouz et al. ICML 2021, Theorem 1 via Proposition 14):
  with s = sqrt(n) sigma, e2 = D2/s, e1 = D1/s, tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2
  k/(k+1)): min( a e2^2/2 + tau D,  a (e2^2 + 2 e1 tau + tau^2 D)/2,  a (e2 + sqrt(D) tau)^2/2 ).

Conversion to (epsilon, delta) (Balle et al. AISTATS 2020, Theorem 21; Canonne, Kamath,
Steinke 2020, Proposition 12): epsilon = min_a [ r_a + log(1 - 1/a) - log(delta a) / (a - 1) ].

The noise sampler's statistical distance tau_total (:mod:`dp.noise`) is folded into delta by
:func:`fold_sampler_distance`: if the real mechanism is within tau of the ideal one on every
input, an (eps, delta) guarantee of the ideal one gives (eps, delta + (1 + e^eps) tau).

Floating point: an event far beyond any budget (a noise multiplier of 1e-300, a variance whose
square underflows) has an RDP that no float holds. Such a value is +inf at that order -- a
float overflow, a division by an underflowed zero, or a NaN never escapes as an exception and
never counts as a bound -- which can only raise epsilon, so the budget filter refuses it.

No amplification by subsampling is applied to the aggregate events: the server chooses the
cohort, so a server that picks who takes part defeats any sampling argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from .errors import AccountingError, ParameterError
from .events import (
    ComposedDpEvent,
    DistributedDiscreteGaussianDpEvent,
    DpEvent,
    GaussianDpEvent,
    NonPrivateDpEvent,
    NoOpDpEvent,
    SelfComposedDpEvent,
    SkellamDpEvent,
    ZCDpEvent,
)
from .gdp import event_mu, gdp_epsilon

ORDERS: tuple[int, ...] = (*range(2, 257), 320, 384, 448, 512, 640, 768, 1024, 1536, 2048,
                           4096, 8192)
#: Renyi DP and, where every event has one, the Gaussian-DP bound of :mod:`dp.gdp`; the smaller
#: epsilon of the two (both are sound bounds on the same composition).
ACCOUNTANT_NAME = "secagg-rdp-gdp/1"
#: Renyi DP alone: how ledgers opened under this name are recomputed.
RDP_ONLY_NAME = "secagg-rdp/1"
ACCOUNTANTS = (ACCOUNTANT_NAME, RDP_ONLY_NAME)


def skellam_rdp(order: int, l1: float, l2: float, mu: float) -> float:
    """Agarwal et al. Theorem 3.5 at one integer order."""
    a = order
    return a * l2 * l2 / (2 * mu) + min(((2 * a - 1) * l2 * l2 + 6 * l1) / (4 * mu * mu),
                                        3 * l1 / (2 * mu))


MAX_DDG_CLIENTS = 10_000_000


@lru_cache(maxsize=64)
def ddg_tau(local_variance: float, clients: int) -> float:
    """Kairouz et al. tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k+1))."""
    if clients > MAX_DDG_CLIENTS:
        raise AccountingError(f"more than {MAX_DDG_CLIENTS} clients in one event")
    k = np.arange(1, clients, dtype=np.float64)
    return 10 * math.fsum(np.exp(-2 * math.pi**2 * local_variance * k / (k + 1)).tolist())


def ddg_rdp(order: int, e: DistributedDiscreteGaussianDpEvent) -> float:
    s = math.sqrt(e.clients * e.local_variance)
    e1, e2 = e.l1_sensitivity / s, e.l2_sensitivity / s
    tau, dim, a = ddg_tau(e.local_variance, e.clients), e.dim, order
    return min(a * e2 * e2 / 2 + tau * dim,
               a * (e2 * e2 + 2 * e1 * tau + tau * tau * dim) / 2,
               a * (e2 + math.sqrt(dim) * tau) ** 2 / 2)


def _positive(v: float) -> bool:
    return math.isfinite(v) and v > 0


def _check(event: DpEvent) -> str | None:  # noqa: PLR0911 - one case per event type
    """None if supported, else the reason."""
    if isinstance(event, NoOpDpEvent | NonPrivateDpEvent):
        return None
    if isinstance(event, GaussianDpEvent):
        return None if event.noise_multiplier >= 0 else "negative noise multiplier"
    if isinstance(event, ZCDpEvent):
        return None if event.rho >= 0 and event.xi >= 0 else "negative rho or xi"
    if isinstance(event, SkellamDpEvent):
        ok = _positive(event.variance) and event.l1_sensitivity >= 0 and (
            event.l2_sensitivity >= 0)
        return None if ok else "Skellam needs positive variance and sensitivities >= 0"
    if isinstance(event, DistributedDiscreteGaussianDpEvent):
        ok = (_positive(event.local_variance) and 1 <= event.clients <= MAX_DDG_CLIENTS
              and event.dim >= 1)
        return None if ok else "distributed discrete Gaussian parameters out of range"
    if isinstance(event, SelfComposedDpEvent):
        return _check(event.event) if event.count >= 0 else "negative count"
    if isinstance(event, ComposedDpEvent):
        for e in event.events:
            reason = _check(e)
            if reason:
                return reason
        return None
    return f"{type(event).__name__} is not supported (no amplification by sampling is claimed)"


def _at_orders(rdp_at, orders: Sequence[int]) -> np.ndarray:
    """``rdp_at(a)`` at each order, +inf where it has no float value.

    A float overflow or a division by a product that underflowed to zero (ArithmeticError) and
    a NaN (inf * 0 inside a bound) all mean "no finite bound computed at this order": +inf,
    the conservative answer (it can only raise epsilon), never an exception or a NaN."""
    out = np.empty(len(orders), dtype=np.float64)
    for i, a in enumerate(orders):
        try:
            r = float(rdp_at(a))
        except ArithmeticError:
            r = math.inf
        out[i] = math.inf if math.isnan(r) else r
    return out


def event_rdp(event: DpEvent, orders: Sequence[int] = ORDERS) -> np.ndarray:
    """The RDP curve of one event at ``orders``: non-negative, +inf where unbounded or beyond
    float range, never NaN; raises only AccountingError (unsupported event)."""
    with np.errstate(all="ignore"):  # overflow to inf is handled, not a warning
        curve = _event_rdp(event, orders)
    return np.where(np.isnan(curve), np.inf, curve)


def _event_rdp(  # noqa: PLR0911 - one case per event type
    event: DpEvent, orders: Sequence[int]
) -> np.ndarray:
    reason = _check(event)
    if reason:
        raise AccountingError(reason)
    if isinstance(event, NoOpDpEvent):
        return np.zeros(len(orders))
    if isinstance(event, NonPrivateDpEvent):
        return np.full(len(orders), np.inf)
    if isinstance(event, GaussianDpEvent):
        z = event.noise_multiplier  # z * z can underflow to 0 (z < ~1e-162): +inf
        return _at_orders(lambda a: a / (2 * z * z) if z > 0 else math.inf, orders)
    if isinstance(event, ZCDpEvent):
        return _at_orders(lambda a: event.xi + event.rho * a, orders)
    if isinstance(event, SkellamDpEvent):
        return _at_orders(lambda a: skellam_rdp(a, event.l1_sensitivity, event.l2_sensitivity,
                                                event.variance), orders)
    if isinstance(event, DistributedDiscreteGaussianDpEvent):
        return _at_orders(lambda a: ddg_rdp(a, event), orders)
    if isinstance(event, SelfComposedDpEvent):
        return event.count * _event_rdp(event.event, orders) if event.count else np.zeros(
            len(orders))
    assert isinstance(event, ComposedDpEvent)
    total = np.zeros(len(orders))
    for e in event.events:
        total = total + _event_rdp(e, orders)
    return total


def rdp_to_epsilon(rdp: Sequence[float], delta: float,
                   orders: Sequence[int] = ORDERS) -> tuple[float, int]:
    """(epsilon, best order) by Balle et al. 2020 Theorem 21 (and epsilon 0 when the RDP is
    so small that the total variation bound alone gives delta, as dp_accounting does)."""
    if not (0 < delta < 1):
        raise AccountingError(f"delta must be in (0, 1), got {delta!r}")
    best, best_order = math.inf, orders[0]
    for a, r in zip(orders, rdp, strict=True):
        if not r < math.inf:  # +inf or NaN: no bound at this order
            continue
        if r < 0:
            raise AccountingError(f"negative RDP {r!r} at order {a}")
        if delta * delta + math.expm1(-r) > 0:
            # TV <= sqrt(1 - e^-KL) <= sqrt(1 - e^-r) < delta (Bretagnolle-Huber): (0, delta)-DP
            return 0.0, a
        eps = r + math.log1p(-1 / a) - (math.log(delta) + math.log(a)) / (a - 1)
        if eps < best:
            best, best_order = eps, a
    return max(0.0, best), best_order


def _event_gdp(event: DpEvent) -> tuple[float, float] | None:
    """(mu^2, eta) of the event by :mod:`dp.gdp`, or None where it gives no bound."""
    try:
        mu, eta = event_mu(event)
    except AccountingError:
        return None
    return mu * mu, eta


class RdpAccountant:
    """Composes events (after dp_accounting's PrivacyAccountant, with ``supports`` first).

    Two bounds are kept for the same composition: the Renyi-DP curve at ``orders`` and, while
    every event composed has one, the Gaussian-DP parameter (sum of mu_i^2, sum of eta_i) of
    :mod:`dp.gdp`. ``epsilon`` is the smaller of the two conversions; ``gdp=False`` keeps the
    Renyi-DP bound alone (the ``secagg-rdp/1`` accountant of older ledgers)."""

    def __init__(self, orders: Sequence[int] = ORDERS, *, gdp: bool = True) -> None:
        if not orders or any(isinstance(a, bool) or not isinstance(a, int) or a < 2
                             for a in orders):
            raise AccountingError("orders must be integers >= 2")
        self.orders = tuple(orders)
        self._rdp = np.zeros(len(self.orders))
        self._with_gdp = gdp
        self._gdp: tuple[float, float] | None = (0.0, 0.0) if gdp else None
        self.events: list[DpEvent] = []

    @property
    def name(self) -> str:
        return ACCOUNTANT_NAME if self._with_gdp else RDP_ONLY_NAME

    def supports(self, event: DpEvent) -> bool:
        return _check(event) is None

    def compose(self, event: DpEvent, count: int = 1) -> RdpAccountant:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise AccountingError(f"count must be a positive int, got {count!r}")
        curve = event_rdp(event, self.orders)  # raises before any state changes
        gdp = self._after(event, count)
        with np.errstate(over="ignore"):  # sums beyond float range are +inf
            self._rdp = self._rdp + count * curve
        self._gdp = gdp
        self.events.append(event if count == 1 else SelfComposedDpEvent(event, count))
        return self

    def _after(self, event: DpEvent, count: int) -> tuple[float, float] | None:
        if self._gdp is None:
            return None
        one = _event_gdp(event)
        if one is None:
            return None
        return self._gdp[0] + count * one[0], self._gdp[1] + count * one[1]

    @property
    def rdp(self) -> np.ndarray:
        return self._rdp.copy()

    @property
    def gdp(self) -> tuple[float, float] | None:
        """(mu, eta) of the composition so far, or None when some event has no GDP bound."""
        return None if self._gdp is None else (math.sqrt(self._gdp[0]), self._gdp[1])

    def epsilon(self, delta: float) -> float:
        return _epsilon(self._rdp, self._gdp, delta, self.orders)

    def epsilon_after(self, event: DpEvent, delta: float) -> float:
        """Epsilon if ``event`` were composed now (the budget filter's question); no change."""
        with np.errstate(over="ignore"):
            rdp = self._rdp + event_rdp(event, self.orders)
        return _epsilon(rdp, self._after(event, 1), delta, self.orders)


def _epsilon(rdp: np.ndarray, gdp: tuple[float, float] | None, delta: float,
             orders: Sequence[int]) -> float:
    eps = rdp_to_epsilon(rdp, delta, orders)[0]
    if gdp is not None:
        eps = min(eps, gdp_epsilon(math.sqrt(gdp[0]), gdp[1], delta))
    return eps


def fold_sampler_distance(epsilon: float, delta: float, tv_total: float) -> float:
    """delta + (1 + e^epsilon) tau: the delta that holds for the real, tabulated sampler."""
    if tv_total < 0 or not math.isfinite(tv_total):
        raise AccountingError("statistical distance must be finite and >= 0")
    if math.isnan(epsilon):
        raise AccountingError("epsilon is NaN")
    if tv_total == 0:
        return delta
    return delta + (1 + math.exp(min(epsilon, 700))) * tv_total


def pld_epsilon(event: DpEvent, delta: float) -> float:
    """Epsilon by privacy loss distributions (dp_accounting's PLDAccountant).

    Available for trees of Gaussian (and Poisson-sampled Gaussian) events; the multidimensional
    Skellam and distributed discrete Gaussian have no PLD characterisation here, so they raise
    AccountingError and are accounted by RDP only.
    """
    from dp_accounting.pld import pld_privacy_accountant

    acc = pld_privacy_accountant.PLDAccountant()
    if not acc.supports(event):
        raise AccountingError(f"PLD accounting does not support {type(event).__name__} "
                              "(RDP only for this mechanism)")
    try:
        with np.errstate(all="ignore"):
            acc.compose(event)
            eps = float(acc.get_epsilon(delta))
    except (ArithmeticError, ValueError, MemoryError) as exc:
        # dp_accounting's own overflow or refusal, or a loss grid too large to allocate (a
        # noise multiplier of 1e-3 asks numpy for 76 GiB): the event is beyond PLD's reach
        raise AccountingError(f"PLD accounting failed: {type(exc).__name__}: {exc}") from None
    return math.inf if math.isnan(eps) else eps


def plan_noise(make_event, *, epsilon: float, delta: float, rounds: int,
               lo: float = 1e-3, hi: float = 1e4) -> float:
    """The least noise parameter z (to 0.1 %) such that ``rounds`` compositions of
    ``make_event(z)`` stay within (epsilon, delta); ``make_event`` must be monotone in z."""
    if not (_positive(epsilon) and 0 < delta < 1):
        raise ParameterError("epsilon must be positive and delta in (0, 1)")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ParameterError(f"rounds must be a positive int, got {rounds!r}")

    def eps(z: float) -> float:
        return RdpAccountant().compose(make_event(z), rounds).epsilon(delta)

    if eps(hi) > epsilon:
        raise ParameterError(f"even noise {hi:g} does not reach epsilon {epsilon:g}")
    if eps(lo) <= epsilon:
        return lo
    while hi / lo > 1.001:
        mid = math.sqrt(lo * hi)
        if eps(mid) <= epsilon:
            hi = mid
        else:
            lo = mid
    return hi
