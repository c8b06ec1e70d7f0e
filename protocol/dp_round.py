"""DP rounds in one process: :mod:`protocol.dp_plan`'s client and server sides around a
simulated SecAgg round (:func:`protocol.simulate.simulate_round`).

The charges follow the network's order exactly, through the same round driver: the server's
budget filter before any client is contacted; each client's own filter when it joins (Setup);
each client's write-ahead record just before its masked input leaves it (a client that drops
earlier is never charged); the server's write-ahead record when the survivor set is known and
before any unmasking share is requested; then decoding.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dp.errors import ParameterError, UpdateError
from dp.ledger import Ledger
from dp.update import flatten

from .dp_plan import DPClient, DPConfig, DPPlan, DPServer, plan_dp, rotation_seed
from .server import ServerRound
from .simulate import SimulationResult, cohort_participants, run_simulated_round

__all__ = ["DPClient", "DPConfig", "DPPlan", "DPRoundResult", "DPServer", "audit_pipeline",
           "UpdateSource", "plan_dp", "rotation_seed", "run_dp_round"]


@dataclass(frozen=True)
class UpdateSource:
    """Updates made on demand: client u's is ``make(u)``, called when that client's machine
    masks (never for a client that dropped earlier), so a round over large models holds one
    update at a time instead of all n. A client whose update is not a valid update of the
    plan's size drops, as a client whose training failed would (it is never charged)."""

    clients: int
    make: Callable[[int], object]

    def __len__(self) -> int:
        return self.clients


@dataclass
class DPRoundResult:
    estimate: np.ndarray  # decoded sum, or weighted mean
    survivors: frozenset[int]
    refused: frozenset[int]  # clients that refused to join (own budget)
    epsilon: float  # server's cumulative epsilon after the round (0 without a ledger)
    delta: float
    simulation: SimulationResult | None = None
    norms: dict[int, float] = field(default_factory=dict)  # pre-clip norms


def run_dp_round(updates: Sequence[object] | UpdateSource, plan: DPPlan, *,
                 server_ledger: Ledger | None = None,
                 client_ledgers: Mapping[int, Ledger] | None = None,
                 weights: Sequence[float] | None = None,
                 dropouts: Mapping[str, Iterable[int]] | None = None, round: int = 0,
                 session_id: bytes | None = None, model_hash: str | None = None,
                 progress=None, insecure_disable_noise: bool = False) -> DPRoundResult:
    """One DP round through the real protocol (in-process, real encoded messages), in the
    network's order (see the module docstring). A client over its own budget declines at Setup
    (a dropout at AdvertiseKeys); a client that drops before MaskedInput is never charged.
    Raises RoundAborted if the round aborts (``ledger-refused`` when the server's write-ahead
    record fails: nothing is unmasked), and BudgetExceeded if the server's own budget filter
    refuses the round before any client is contacted. ``updates`` is a sequence (each one
    checked before anyone is charged) or an :class:`UpdateSource` (each one made and checked
    when its client masks)."""
    n = len(updates)
    if n != plan.cohort:
        raise ParameterError(f"{n} updates for a plan of {plan.cohort} clients")
    if insecure_disable_noise and (server_ledger is not None or client_ledgers):
        raise ParameterError("a round with the noise switched off must not be recorded as "
                             "private: no ledgers with insecure_disable_noise")
    if plan.config.weighted and weights is None:
        raise UpdateError("weighted aggregation needs a weight for every client")
    for u, w in enumerate(weights or ()):
        if isinstance(w, bool) or not isinstance(w, int | float) or not (
                math.isfinite(w) and w >= 0):
            raise UpdateError(f"client {u}: a weight must be finite and >= 0, got {w!r}")
    if isinstance(updates, UpdateSource):
        def vector(u: int) -> np.ndarray | None:
            try:
                return _checked_vector(u, updates.make(u), plan)
            except UpdateError:
                return None  # this client has no usable update: it drops
    else:  # flattened once; bad input fails here, before anyone is charged
        vectors = [_checked_vector(u, update, plan) for u, update in enumerate(updates)]
        vector = vectors.__getitem__
    if weights is not None and not plan.config.weighted:
        raise UpdateError("a weight was given but the plan is unweighted")
    if weights is not None and len(weights) != n:
        raise UpdateError(f"{len(weights)} weights for {n} clients")
    server = DPServer(plan, server_ledger)
    server.check_budget()  # refuses before any client is contacted
    session_id = session_id if session_id is not None else os.urandom(32)
    dp_clients = {u: DPClient(u, plan, (client_ledgers or {}).get(u),
                              insecure_disable_noise=insecure_disable_noise) for u in range(n)}
    participants, registry = cohort_participants(plan.round_config, n, dp=dp_clients)

    def provide(u: int, setup) -> tuple[object, float | None] | None:
        x = vector(u)
        return None if x is None else (x, None if weights is None else weights[u])

    def commit(survivors: frozenset[int]) -> None:
        server.commit(session_id=session_id, round=round, survivors=len(survivors),
                      model_hash=model_hash)

    secagg = ServerRound(plan.round_config, range(n), plan.encoding.padded_dim,
                         session_id=session_id, round=round, registry=registry)
    sim = run_simulated_round(secagg, participants, provide, dropouts, progress=progress,
                              on_survivors_known=commit)
    estimate = server.finish(sim.aggregate, session_id=session_id, round=round)
    eps, delta = server_ledger.spent() if server_ledger is not None else (0.0, 0.0)
    return DPRoundResult(estimate, sim.survivors, sim.declined, eps, delta, sim,
                         {u: c.last_norm for u, c in dp_clients.items()
                          if c.last_norm is not None})


def _checked_vector(u: int, update: object, plan: DPPlan) -> np.ndarray:
    """Client u's update flattened, of the plan's size. Raises UpdateError naming u."""
    try:
        x = flatten(update)[0]
    except UpdateError as exc:
        raise UpdateError(f"client {u}: {exc}") from None
    if x.size != plan.update_dim:
        raise UpdateError(f"client {u}: update has {x.size} coordinates, the plan "
                          f"{plan.update_dim}")
    return x


def audit_pipeline(plan: DPPlan, *, insecure_disable_noise: bool = False):
    """The real pipeline for :mod:`dp.audit`: updates -> DP round through SecAgg -> decoded sum.

    ``insecure_disable_noise`` builds the deliberately broken pipeline the audit must catch.
    """
    counter = [0]

    def run(updates: list[np.ndarray]) -> np.ndarray:
        counter[0] += 1
        res = run_dp_round(updates, plan, round=counter[0],
                           insecure_disable_noise=insecure_disable_noise)
        return res.estimate

    return run
