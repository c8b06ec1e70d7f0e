"""Distributed DP over secure aggregation: the client's encoding, the server's decoding and
accounting: what the client and the server each add around a SecAgg round. The in-process
DP round (through the simulator) is :mod:`protocol.dp_round`; the network hosts import only
this module.

docs/architecture.md section 6 (Kairouz, Liu, Steinke ICML 2021; Agarwal, Kairouz, Liu NeurIPS
2021): each client clips, rotates, scales, rounds and adds its share of discrete noise; SecAgg sums;
the server lifts, rescales and rotates back, and records the round in its ledger.

The noise deficit. Each client adds the share of noise planned for n_min survivors, of whom
at most A (the round configuration's corrupted count) may be colluding with the server and so
contribute no usable noise: the DP event counts the noise of n_min - A honest clients. The
round configuration's ``min_survivors`` is raised to at least n_min, so the server aborts
(``too-few-survivors``) rather than unmask a sum with less noise than was accounted, and in
malicious mode every client also refuses to unmask below it. The ledger records the actual
survivors and the noise they carried.

Budget filters. The server consults its ledger before a round starts and refuses a round that
would exceed its budget; each client consults its own ledger before it joins and refuses when
its own participations would exceed its budget (it then sends nothing: a dropout at
AdvertiseKeys). No amplification by sampling is claimed: the server picks the cohort.

Weighted aggregation (FedAvg weights n_k) with a fixed, public denominator (McMahan, Ramage,
Talwar, Zhang ICLR 2018, section 3, the estimator with a fixed denominator): a client with
weight w sends (w'/W) x with w' = min(w, W) for the configured public cap W, so its vector has
norm at most C and the sensitivity stays C; the server divides the decoded sum by
|U3| m / W, where |U3| is the number of survivors (public in the protocol) and m the
configured public mean weight of a client (``DPConfig.mean_weight``, W when not given). The
estimate is the FedAvg mean sum w'_k x_k / sum w'_k when the survivors' mean capped weight is
m, and that mean scaled by (their mean capped weight) / m otherwise: a deterministic factor,
never noise in a denominator.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import numbers
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from dp.accounting import RdpAccountant, plan_noise
from dp.encoding import EncodingPlan, choose_encoding, decode, encode, to_ring
from dp.errors import ParameterError, UpdateError
from dp.events import DistributedDiscreteGaussianDpEvent, DpEvent, SkellamDpEvent
from dp.ledger import Budget, Ledger
from dp.noise import MECHANISMS, noise_table
from dp.randomness import CryptoRandom
from dp.update import UpdateSpec, clip, flatten
from secagg.encoding import canonical

from .config import RoundConfig


@dataclass(frozen=True)
class DPConfig:
    """What a deployment chooses for DP; :func:`plan_dp` resolves it for a cohort."""

    clip_norm: float
    epsilon: float  # total budget over the planned rounds
    delta: float
    rounds: int  # rounds the noise is planned for
    mechanism: str = "skellam"
    min_survivors: int | None = None  # n_min; default n - ceil(dropout_rate n)
    noise_multiplier: float | None = None  # None: planned from (epsilon, delta, rounds)
    weighted: bool = False
    max_weight: float = 1.0  # W: the public cap on a client's weight
    mean_weight: float | None = None  # m: the public mean weight (the denominator); None: W
    wrap_bound: float = 2.0**-30
    bits: int | None = None  # the ring width b; None: the smallest that meets the wrap bound
    max_inflation: float = 0.005  # rounding may enlarge the sensitivity by at most this

    def __post_init__(self) -> None:
        for name in ("clip_norm", "epsilon", "max_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not (
                math.isfinite(v) and v > 0
            ):
                raise ParameterError(f"{name} must be a finite positive number, got {v!r}")
        if not (isinstance(self.delta, float | int) and 0 < self.delta < 1):
            raise ParameterError(f"delta must be in (0, 1), got {self.delta!r}")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ParameterError(f"rounds must be a positive int, got {self.rounds!r}")
        if self.mean_weight is not None and (
            isinstance(self.mean_weight, bool) or not isinstance(self.mean_weight, int | float)
            or not (math.isfinite(self.mean_weight) and 0 < self.mean_weight <= self.max_weight)
        ):
            raise ParameterError(f"mean_weight must be a number in (0, max_weight = "
                                 f"{self.max_weight}], got {self.mean_weight!r}")
        if self.bits is not None and (isinstance(self.bits, bool) or not isinstance(
                self.bits, int) or not 8 <= self.bits <= 64):
            raise ParameterError(f"bits must be an int in [8, 64] or None, got {self.bits!r}")
        if isinstance(self.max_inflation, bool) or not isinstance(
                self.max_inflation, int | float) or not 0 < self.max_inflation <= 1:
            raise ParameterError(f"max_inflation must be in (0, 1], got {self.max_inflation!r}")
        if self.mechanism not in MECHANISMS:
            raise ParameterError(f"mechanism must be one of {MECHANISMS}")
        if self.noise_multiplier is not None and not (
            isinstance(self.noise_multiplier, int | float) and self.noise_multiplier > 0
            and math.isfinite(self.noise_multiplier)
        ):
            raise ParameterError("noise_multiplier must be positive and finite, or None")

    @property
    def budget(self) -> Budget:
        return Budget(self.epsilon, self.delta)

    @property
    def denominator_weight(self) -> float:
        """m: the public mean weight the weighted estimate divides by (W when not given)."""
        return self.max_weight if self.mean_weight is None else float(self.mean_weight)


@dataclass(frozen=True)
class DPPlan:
    """The resolved plan of one cohort: every client and the server must hold the same one."""

    config: DPConfig
    round_config: RoundConfig  # with min_survivors >= n_min
    cohort: int
    update_dim: int
    n_min: int
    honest_min: int  # n_min - A: the survivors whose noise is counted
    encoding: EncodingPlan
    noise_multiplier: float
    local_variance: float  # per client, scaled units (Skellam mu, or sigma^2)

    @property
    def event(self) -> DpEvent:
        e = self.encoding
        if self.config.mechanism == "skellam":
            return SkellamDpEvent(e.l1_sensitivity, e.l2_sensitivity,
                                  self.local_variance * self.honest_min)
        return DistributedDiscreteGaussianDpEvent(e.l1_sensitivity, e.l2_sensitivity,
                                                  self.local_variance, self.honest_min,
                                                  e.padded_dim)

    @property
    def sampler_tv(self) -> float:
        """Statistical distance of all the noise of one round from the exact distribution."""
        tv = noise_table(self.config.mechanism, self.local_variance).tv_bound
        return self.cohort * self.encoding.padded_dim * tv

    def round_epsilon(self) -> float:
        return RdpAccountant().compose(self.event).epsilon(self.config.delta)

    def epsilon_after(self, rounds: int) -> float:
        """The cumulative epsilon of ``rounds`` rounds of this plan at the budget's delta, as
        a ledger records it (the sampler's distance folded into delta the same way), for a
        caller that keeps no ledger."""
        from dp.ledger import delta_for_rdp

        d = delta_for_rdp(self.config.budget, rounds * self.sampler_tv)
        return RdpAccountant().compose(self.event, rounds).epsilon(d)

    def mechanism_record(self, survivors: int | None) -> dict:
        return {"name": self.config.mechanism, **self.encoding.to_dict(),
                "noise_multiplier": self.noise_multiplier,
                "local_variance": self.local_variance, "n_min": self.n_min,
                "honest_min": self.honest_min,
                "planned_variance": self.local_variance * self.honest_min,
                "actual_variance": (None if survivors is None
                                    else self.local_variance * survivors),
                "weighted": self.config.weighted, "max_weight": self.config.max_weight,
                "mean_weight": self.config.denominator_weight if self.config.weighted else None}


def plan_dp(config: DPConfig, round_config: RoundConfig, cohort: int, dim: int) -> DPPlan:
    """Resolve n_min, gamma, b and the noise for a cohort of ``cohort`` and updates of ``dim``
    (a pure function: the plans of recent cohorts are kept)."""
    if not isinstance(config, DPConfig) or not isinstance(round_config, RoundConfig):
        raise ParameterError("plan_dp takes a DPConfig and a RoundConfig")
    return _plan_dp(config, round_config, cohort, dim)


@functools.lru_cache(maxsize=64, typed=True)
def _plan_dp(config: DPConfig, round_config: RoundConfig, cohort: int, dim: int) -> DPPlan:
    params = round_config.resolve(cohort)
    n_min = config.min_survivors
    if n_min is None:
        n_min = cohort - math.ceil(Fraction(str(round_config.dropout_rate)) * cohort)
    if isinstance(n_min, bool) or not isinstance(n_min, int) or not 1 <= n_min <= cohort:
        raise ParameterError(f"min_survivors (n_min) must be in [1, {cohort}], got {n_min!r}")
    honest = n_min - params.corrupted
    if honest < 1:
        raise ParameterError(f"n_min {n_min} leaves no honest survivor with {params.corrupted} "
                             "assumed corrupted clients")
    cnorm = config.clip_norm  # a weighted vector (w'/W) x has norm <= C too
    probe, _ = choose_encoding(clients=cohort, clip_norm=cnorm, dim=dim, noise_multiplier=1.0,
                               min_clients=honest, mechanism=config.mechanism, bits=64,
                               wrap_bound=0.5, max_inflation=config.max_inflation)
    b, l1, dpad = probe.l2_sensitivity, probe.l1_sensitivity, probe.padded_dim

    def event(z: float) -> DpEvent:
        if config.mechanism == "skellam":
            return SkellamDpEvent(l1, b, (z * b) ** 2)
        return DistributedDiscreteGaussianDpEvent(l1, b, (z * b) ** 2 / honest, honest, dpad)

    z = config.noise_multiplier
    if z is None:
        # leave room in delta for the sampler's distance (at most ~1e-30 per sample)
        z = plan_noise(event, epsilon=config.epsilon, delta=config.delta * (1 - 1e-6),
                       rounds=config.rounds)
    enc, local = choose_encoding(clients=cohort, clip_norm=cnorm, dim=dim, noise_multiplier=z,
                                 min_clients=honest, mechanism=config.mechanism,
                                 bits=config.bits, wrap_bound=config.wrap_bound,
                                 max_inflation=config.max_inflation)
    # the ring width travels in the round configuration: the plan's own b
    rc = dataclasses.replace(round_config, bits=enc.bits,
                             min_survivors=max(n_min, params.min_survivors))
    return DPPlan(config, rc, cohort, dim, n_min, honest, enc, z, local)


def weigh(x: np.ndarray, weight: float | None, *, weighted: bool, max_weight: float
          ) -> np.ndarray:
    """The clipped ``x`` as a weighted plan sends it: (w'/W) x with w' = min(w, W) (see the
    module docstring); ``x`` itself when unweighted. Raises UpdateError for a missing,
    negative or non-finite weight, or a weight given to an unweighted plan."""
    if not weighted:
        if weight is not None:
            raise UpdateError("a weight was given but the plan is unweighted")
        return x
    try:
        w = float(weight) if isinstance(weight, numbers.Real) and not isinstance(
            weight, bool) else math.nan
    except OverflowError:  # an int beyond float range
        w = math.inf
    if not (math.isfinite(w) and w >= 0):
        raise UpdateError(f"weighted aggregation needs a finite weight >= 0, got {weight!r}")
    return x * (min(w, max_weight) / max_weight)


def unweigh(v: np.ndarray, *, config: DPConfig, survivors: int) -> np.ndarray:
    """The decoded sum ``v`` of :func:`weigh`'s vectors as the weighted mean: v divided by the
    public denominator |U3| m / W; ``v`` itself (the sum) when unweighted."""
    if not config.weighted:
        return v
    if isinstance(survivors, bool) or not isinstance(survivors, int) or survivors < 1:
        raise ParameterError(f"survivors must be a positive int, got {survivors!r}")
    denominator = survivors * (config.denominator_weight / config.max_weight)
    if not (math.isfinite(denominator) and denominator > 0):
        raise ParameterError(f"the weighted mean's denominator {denominator!r} is not a "
                             "positive finite number (mean_weight / max_weight out of range)")
    return v / denominator


def rotation_seed(session_id: bytes, round: int) -> bytes:
    """The public per-round seed of the Hadamard rotation, bound to the session and round."""
    return hashlib.sha256(canonical("secagg-dp-rotation", session_id, round)).digest()


class DPClient:
    """A client's DP side: budget check, clip, encode, noise (its own CSPRNG), and its ledger."""

    def __init__(self, client_id: int, plan: DPPlan, ledger: Ledger | None = None,
                 spec: UpdateSpec | None = None, *, insecure_disable_noise: bool = False) -> None:
        self.id, self.plan, self.ledger, self.spec = client_id, plan, ledger, spec
        self.last_norm: float | None = None
        # The audit's negative control only (dp/audit.py): a deliberately broken client.
        self._no_noise = insecure_disable_noise

    def check_budget(self) -> None:
        """Raises BudgetExceeded if joining would take this client over its own budget."""
        if self.ledger is not None:
            self.ledger.check(self.plan.event, self.plan.sampler_tv)

    def prepare(self, update: object, *, session_id: bytes, round: int,
                weight: float | None = None, rng: CryptoRandom | None = None,
                record_level: dict | None = None) -> np.ndarray:
        """The ring vector this client feeds to SecAgg.

        Write-ahead: the participation is recorded in the client's own ledger (after its budget
        check) before the vector is returned, so no released input goes unrecorded; a client
        that later drops out has been charged anyway (the safe side)."""
        self.check_budget()
        plan, cfg = self.plan, self.plan.config
        vec, spec = flatten(update, expected=self.spec)
        if vec.size != plan.update_dim:
            raise UpdateError(f"update has {vec.size} coordinates, the plan {plan.update_dim}")
        self.spec = spec
        x, self.last_norm = clip(vec, cfg.clip_norm)
        x = weigh(x, weight, weighted=cfg.weighted, max_weight=cfg.max_weight)
        rng = rng if rng is not None else CryptoRandom()
        z = encode(x, plan.encoding, rotation_seed(session_id, round), rng)
        if not self._no_noise:
            z += noise_table(cfg.mechanism, plan.local_variance).sample(z.size, rng)
        ring = to_ring(z, plan.encoding.bits)
        if self.ledger is not None:
            self.ledger.record_round(event=plan.event, session=session_id.hex(), round=round,
                                     cohort=plan.cohort, survivors=None, n_min=plan.n_min,
                                     clip_norm=cfg.clip_norm,
                                     mechanism=plan.mechanism_record(None),
                                     sampler_tv=plan.sampler_tv, record_level=record_level)
        return ring


class DPServer:
    """The server's DP side: budget filter before the round, decoding and ledger after it."""

    def __init__(self, plan: DPPlan, ledger: Ledger | None = None) -> None:
        self.plan, self.ledger = plan, ledger
        self._committed: tuple[bytes, int, int] | None = None  # (session, round, |U3|)

    def check_budget(self) -> tuple[float, float]:
        if self.ledger is None:
            return 0.0, 0.0
        return self.ledger.check(self.plan.event, self.plan.sampler_tv)

    def commit(self, *, session_id: bytes, round: int, survivors: int,
               model_hash: str | None = None) -> None:
        """Write-ahead: record the round once the survivors U3 are known and before any
        unmasking share is requested. If this raises (over budget, disk error), the round must
        abort unreleased."""
        p = self.plan
        if isinstance(survivors, bool) or not isinstance(survivors, int):
            raise ParameterError(f"survivors must be an int, got {survivors!r}")
        if survivors < p.n_min:
            raise ParameterError(f"{survivors} survivors, below n_min {p.n_min}: not unmasked")
        if self.ledger is not None:
            self.ledger.record_round(event=p.event, session=session_id.hex(), round=round,
                                     cohort=p.cohort, survivors=survivors, n_min=p.n_min,
                                     clip_norm=p.config.clip_norm,
                                     mechanism=p.mechanism_record(survivors),
                                     sampler_tv=p.sampler_tv, model_hash=model_hash)
        self._committed = (bytes(session_id), round, survivors)

    def finish(self, aggregate: np.ndarray, *, session_id: bytes, round: int) -> np.ndarray:
        """The decoded sum (or weighted mean) of the round last committed; ParameterError for
        any other round."""
        p, done = self.plan, self._committed
        if done is None or done[:2] != (bytes(session_id), round):
            raise ParameterError("finish: this round was not committed (commit it with its "
                                 "survivors first)")
        v = decode(aggregate, p.encoding, rotation_seed(session_id, round))
        return unweigh(v, config=p.config, survivors=done[2])
