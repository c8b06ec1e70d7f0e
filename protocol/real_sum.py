"""Secure aggregation of real vectors without DP: the DP pipeline's encoding without its noise.

docs/architecture.md section 6. A client clips its update to L2 norm C, rotates it (the
randomized Hadamard transform, seeded per session and round), scales it by gamma and rounds it
with conditional randomized rounding (Kairouz, Liu, Steinke ICML 2021, section 4), exactly as
:class:`~protocol.dp_plan.DPClient` does, and adds no noise. gamma is the largest power of two
for which the sum of the whole cohort wraps modulo 2^b with probability at most ``wrap_bound``
(the same union bound as the DP plan, with zero noise variance), so precision is as fine as
the ring allows.

Weighted aggregation (FedAvg weights n_k): with no noise, the weight sum travels exactly in
one more coordinate. A client with weight w sends (w'/W)[x, C] with w' = min(w, W) (norm at
most sqrt(2) C); the server divides the decoded vector by the decoded weight sum.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from dp.encoding import EncodingPlan, decode, encode, padded_dim, to_ring, wrap_probability
from dp.errors import ParameterError, UpdateError
from dp.randomness import CryptoRandom
from dp.update import UpdateSpec, clip, flatten

from .config import RoundConfig
from .dp_plan import rotation_seed, weigh


@dataclass(frozen=True)
class SumConfig:
    """The encoding of a secure sum without DP; client and server must hold the same one."""

    clip_norm: float = 100.0
    weighted: bool = True
    max_weight: float = 1000.0
    wrap_bound: float = 2.0**-30

    def __post_init__(self) -> None:
        for name in ("clip_norm", "max_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not (
                    math.isfinite(v) and v > 0):
                raise ParameterError(f"{name} must be a finite positive number, got {v!r}")
        if not isinstance(self.weighted, bool):
            raise ParameterError("weighted must be a bool")
        if not (isinstance(self.wrap_bound, float) and 0 < self.wrap_bound < 1):
            raise ParameterError(f"wrap_bound must be in (0, 1), got {self.wrap_bound!r}")


@dataclass(frozen=True)
class SumPlan:
    config: SumConfig
    cohort: int
    update_dim: int
    encoding: EncodingPlan


@functools.lru_cache(maxsize=64, typed=True)
def plan_sum(config: SumConfig, round_config: RoundConfig, cohort: int, dim: int) -> SumPlan:
    """The finest scale whose wrap probability over ``cohort`` clients is within the bound
    (a pure function of its arguments, so the plans of recent cohorts are kept)."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ParameterError(f"dim must be a positive int, got {dim!r}")
    rdim = dim + 1 if config.weighted else dim
    cnorm = config.clip_norm * (math.sqrt(2) if config.weighted else 1.0)
    bits, padded = round_config.bits, padded_dim(rdim)

    def wraps(gamma: float) -> bool:
        return wrap_probability(clients=cohort, plan_gamma=gamma, clip_norm=cnorm,
                                padded=padded, bits=bits, mechanism="skellam",
                                local_variance=0.0) > config.wrap_bound

    # the wrap probability grows with gamma: bisect the exponent in [-40, 40]
    lo, hi = -40, 40
    if wraps(2.0**lo):
        raise ParameterError(f"b = {bits} bits cannot hold the sum of {cohort} clients at "
                             f"clip norm {config.clip_norm:g}: raise bits")
    if not wraps(2.0**hi):
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if not wraps(2.0**mid) else (lo, mid)
    return SumPlan(config, cohort, dim, EncodingPlan(rdim, 2.0**lo, bits, cnorm))


def _weigh(x: np.ndarray, weight: float | None, *, weighted: bool, clip_norm: float,
           max_weight: float) -> np.ndarray:
    """(w'/W)[x, C] with w' = min(w, W) when weighted, else ``x``; the weight is checked by
    :func:`protocol.dp_plan.weigh` (UpdateError)."""
    if not weighted:
        return weigh(x, weight, weighted=False, max_weight=max_weight)
    scale = weigh(np.ones(1), weight, weighted=True, max_weight=max_weight)[0]
    return np.append(x, clip_norm) * scale


def _unweigh(v: np.ndarray, *, weighted: bool, clip_norm: float) -> np.ndarray:
    """The decoded sum of :func:`_weigh`'s vectors as the weighted mean (all NaN when the
    decoded weight sum is not positive), or ``v`` itself when unweighted."""
    if not weighted:
        return v
    total = v[-1] / clip_norm
    return v[:-1] / total if total > 0 else np.full(v.size - 1, np.nan)


class SumClient:
    """Clip, rotate, scale and round one update into the ring (no noise)."""

    def __init__(self, plan: SumPlan, spec: UpdateSpec | None = None) -> None:
        self.plan, self.spec = plan, spec

    def prepare(self, update: object, *, session_id: bytes, round: int,
                weight: float | None = None) -> np.ndarray:
        plan, cfg = self.plan, self.plan.config
        vec, self.spec = flatten(update, expected=self.spec)
        if vec.size != plan.update_dim:
            raise UpdateError(f"update has {vec.size} coordinates, the plan {plan.update_dim}")
        x, _ = clip(vec, cfg.clip_norm)
        x = _weigh(x, weight, weighted=cfg.weighted, clip_norm=cfg.clip_norm,
                   max_weight=cfg.max_weight)
        z = encode(x, plan.encoding, rotation_seed(session_id, round), CryptoRandom())
        return to_ring(z, plan.encoding.bits)


def finish_sum(plan: SumPlan, aggregate: np.ndarray, *, session_id: bytes,
               round: int) -> np.ndarray:
    """The decoded sum of the survivors' clipped updates, or their weighted mean."""
    v = decode(aggregate, plan.encoding, rotation_seed(session_id, round))
    return _unweigh(v, weighted=plan.config.weighted, clip_norm=plan.config.clip_norm)


__all__ = ["SumClient", "SumConfig", "SumPlan", "finish_sum", "plan_sum"]
