"""``secagg simulate --epsilon E``: R rounds of distributed-DP aggregation in this process,
charged to a privacy ledger when ``--ledger`` is given (created if missing, appended to when it
was created for the same budget, refused with exit 2 otherwise)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from dp.errors import BudgetExceeded, DPError
from dp.ledger import Ledger, open_ledger
from secagg.version import package_version

from ..dp_plan import DPConfig, DPPlan, plan_dp
from ..dp_round import UpdateSource, run_dp_round
from .common import ROUND_ERRORS, dropout_schedule, positive, round_config


def add_dp_arguments(sim: argparse.ArgumentParser) -> None:
    """Add the DP options (``--epsilon`` turns DP rounds on) to the ``simulate`` parser."""
    g = sim.add_argument_group("differential privacy (DP rounds when --epsilon is given)")
    g.add_argument("--rounds", type=positive(int, 1, 100_000), default=1,
                   help="rounds to run; with --epsilon also the rounds the noise is planned for")
    g.add_argument("--epsilon", type=positive(float, 1e-6, 1e6), default=None,
                   help="total budget over the rounds; turns on DP aggregation")
    g.add_argument("--delta", type=positive(float, 1e-30, 0.5), default=1e-5,
                   help="total delta of the (epsilon, delta) budget over the planned rounds")
    g.add_argument("--ledger", type=Path, default=None,
                   help="privacy ledger (JSON Lines); created if missing, appended otherwise")
    g.add_argument("--clip", type=positive(float, 1e-12, 1e12), default=1.0,
                   help="L2 clip norm of each client's update")
    g.add_argument("--mechanism", choices=["skellam", "discrete-gaussian"], default="skellam",
                   help="the clients' discrete noise")
    g.add_argument("--n-min", type=positive(int, 1, 100_000), default=None,
                   help="planned minimum survivors (default: clients minus planned dropouts)")


def simulate_dp(args: argparse.Namespace, show, finish) -> int:
    """Plan and run the DP rounds, reporting progress through ``show`` and ``finish``.

    Exit 2 when the configuration is refused or the ledger cannot be opened for this budget,
    1 when a round is refused by the budget filter or aborts, 0 otherwise."""
    try:
        cfg = DPConfig(clip_norm=args.clip, epsilon=args.epsilon, delta=args.delta,
                       rounds=args.rounds, mechanism=args.mechanism, min_survivors=args.n_min,
                       bits=args.bits)
        # the plan's round configuration carries its own b; 32 here is only a placeholder
        plan = plan_dp(cfg, round_config(argparse.Namespace(**{**vars(args), "bits": 32})),
                       args.clients, args.dim)
        ledger = (open_ledger(args.ledger, cfg.budget, key=None, owner="simulation")
                  if args.ledger is not None else None)
    except (DPError, *ROUND_ERRORS) as exc:
        print(f"secagg: {exc}", file=sys.stderr)
        return 2
    try:
        return _run_rounds(args, plan, ledger, show, finish)
    finally:
        if ledger is not None:
            ledger.close()


def _run_rounds(args: argparse.Namespace, plan: DPPlan, ledger: Ledger | None, show,
                finish) -> int:
    cfg, e, n, d = plan.config, plan.encoding, args.clients, args.dim
    rng = np.random.default_rng(args.seed)
    print(f"DP plan: {cfg.mechanism}, clip {cfg.clip_norm:g}, n_min {plan.n_min} "
          f"({plan.honest_min} counted honest), gamma {e.gamma:g}, b {e.bits}, padded d "
          f"{e.padded_dim}, noise multiplier {plan.noise_multiplier:.4f}, per-round epsilon "
          f"{plan.round_epsilon():.4f}")
    # each client's update: a fixed direction plus client noise, some above the clip norm;
    # made from a per-(round, client) seed when the client masks, so one is held at a time
    base = rng.normal(size=d)
    base *= 0.5 * cfg.clip_norm / np.linalg.norm(base)
    seed = int(rng.integers(0, 2**63))
    rows = []
    for r in range(args.rounds):
        updates = UpdateSource(n, _client_updates(base, cfg.clip_norm, seed, r))
        sched = dropout_schedule(rng, n, args.dropout, args.mode)
        try:
            res = run_dp_round(updates, plan, server_ledger=ledger, dropouts=sched, round=r,
                               progress=show)
            finish()
        except BudgetExceeded as exc:
            finish()
            print(f"round {r}: refused by the budget filter: {exc}", file=sys.stderr)
            return 1
        except (DPError, *ROUND_ERRORS) as exc:
            finish()
            print(f"round {r}: aborted: {exc}", file=sys.stderr)
            return 1
        rows.append(_round_row(r, res, updates, ledger, plan))
        print(f"round {r}: survivors {len(res.survivors)}/{n}, cumulative epsilon "
              f"{rows[-1]['epsilon']:.4f} (delta {cfg.delta:g}), RMSE of the "
              f"sum {rows[-1]['rmse']:.4g}")
    if ledger is not None:
        print(f"ledger: {args.ledger} (id {ledger.ledger_id}, {ledger.rounds} rounds); check "
              f"it with `secagg budget verify {args.ledger} --ledger-id {ledger.ledger_id} "
              f"--min-rounds {ledger.rounds}`")
    if args.json:
        print(json.dumps({"secagg_version": package_version(),
                          "plan": {"gamma": e.gamma, "bits": e.bits,
                                   "noise_multiplier": plan.noise_multiplier,
                                   "n_min": plan.n_min}, "rounds": rows}))
    return 0


def _client_updates(base: np.ndarray, clip_norm: float, seed: int, r: int):
    """Client u's update in round r: ``base`` plus Gaussian noise drawn from (seed, r, u)."""
    scale = clip_norm / np.sqrt(base.size)

    def make(u: int) -> np.ndarray:
        return base + np.random.default_rng([seed, r, u]).normal(scale=scale, size=base.size)

    return make


def _round_row(r: int, res, updates: UpdateSource, ledger: Ledger | None,
               plan: DPPlan) -> dict:
    """One round's row: survivors, cumulative epsilon (the ledger's, or without one the
    accountant's for the rounds run so far) and the RMSE of the estimate against the exact
    sum of the survivors' clipped updates (made again)."""
    clip_norm = plan.config.clip_norm
    true = np.zeros(res.estimate.shape)
    for u in res.survivors:
        x = updates.make(u)
        true += x * min(1.0, clip_norm / np.linalg.norm(x))
    rmse = float(np.sqrt(np.mean((res.estimate - true) ** 2)))
    eps = res.epsilon if ledger is not None else plan.epsilon_after(r + 1)
    return {"round": r, "survivors": len(res.survivors), "epsilon": eps, "rmse": rmse}
