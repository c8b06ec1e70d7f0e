"""``secagg simulate --epsilon ...`` (R rounds of DP aggregation) and ``secagg budget``.

``secagg budget verify LEDGER --public-key K --ledger-id HEX --min-rounds N`` pins what an
earlier audit saw (``secagg budget show`` prints the id and the round count to record): another
ledger signed with the same key, or a truncated history, exits 1 like any failed verification.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from dp.errors import BudgetExceeded, DPError, LedgerError
from dp.ledger import LEDGER_ID_HEX, Ledger, verify
from secagg import SecAggError

from .config import RoundConfig
from .dp_round import DPConfig, plan_dp, run_dp_round
from .errors import ProtocolError
from .transitions import STAGES


def _ledger_id(text: str) -> str:
    if len(text) != LEDGER_ID_HEX or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise argparse.ArgumentTypeError(f"a ledger id is {LEDGER_ID_HEX} hex digits "
                                         "(as printed by `secagg budget show`)")
    return text.lower()


def _rounds(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError("an integer >= 0")
    return n


def add_budget_parser(sub) -> None:
    bud = sub.add_parser("budget", help="inspect, verify or plot a privacy ledger")
    bsub = bud.add_subparsers(dest="budget_command", required=True)
    for name, text in (("show", "print the ledger id, the rounds and the cumulative epsilon"),
                       ("verify", "check chain, signatures and every epsilon (independent "
                                  "accountant), and the pins; exit 1 naming the first bad "
                                  "line"),
                       ("plot", "write a PNG of cumulative epsilon per round")):
        p = bsub.add_parser(name, help=text)
        p.add_argument("ledger", type=Path)
        p.add_argument("--public-key", default=None,
                       help="the signer's Ed25519 public key (hex) to pin signatures to")
        p.add_argument("--ledger-id", type=_ledger_id, default=None, metavar="HEX",
                       help="pin the ledger id recorded at an earlier audit: another ledger "
                            "signed with the same key (a rollback) is refused")
        p.add_argument("--min-rounds", type=_rounds, default=None, metavar="N",
                       help="pin the round count recorded at an earlier audit: a history "
                            "truncated below N rounds (even with a re-signed head) is refused")
        if name == "plot":
            p.add_argument("--output", "-o", type=Path, default=None,
                           help="PNG path (default LEDGER.png)")
        if name in ("show", "verify"):
            p.add_argument("--json", action="store_true")


def budget(args: argparse.Namespace) -> int:
    try:
        report = verify(args.ledger, args.public_key, expected_id=args.ledger_id,
                        min_rounds=args.min_rounds)
    except LedgerError as exc:
        print(f"secagg budget: {args.ledger}: INVALID: {exc}", file=sys.stderr)
        return 1
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.budget_command == "plot":
        from dp.plot import plot_epsilon

        out = args.output or args.ledger.with_suffix(args.ledger.suffix + ".png")
        plot_epsilon(report, out, title=args.ledger.name)
        print(f"wrote {out}")
        return 0
    summary = {"ledger": str(args.ledger), "ledger_id": report.ledger_id, "valid": True,
               "rounds": report.entries, "epsilon": report.epsilon, "delta": report.delta,
               "budget": {"epsilon": report.budget.epsilon, "delta": report.budget.delta},
               "signed": report.signed,
               "pinned": {"ledger_id": args.ledger_id, "min_rounds": args.min_rounds}}
    if args.budget_command == "verify":
        if args.json:
            print(json.dumps(summary))
        else:
            print(f"{args.ledger}: valid; ledger id {report.ledger_id}; {report.entries} "
                  f"rounds, epsilon {report.epsilon} delta {report.delta:.3g} of budget "
                  f"({report.budget.epsilon}, {report.budget.delta:g}); "
                  f"{'signed' if report.signed else 'unsigned'}")
        return 0
    if args.json:
        print(json.dumps({**summary, "rows": report.rows}))
        return 0
    print(f"ledger id: {report.ledger_id}")
    print(f"record for the next audit: --ledger-id {report.ledger_id} --min-rounds "
          f"{report.entries}")
    print(f"{'line':>4} {'round':>5} {'session':<16} {'mechanism':<18} {'surv':>9} "
          f"{'epsilon':>10}")
    for r in report.rows:
        print(f"{r['line']:>4} {r['round']:>5} {str(r['session'])[:16]:<16} "
              f"{str(r['mechanism']):<18} {r['survivors']:>4}/{r['cohort']:<4} "
              f"{r['epsilon']:>10.6f}")
    print(f"spent: epsilon {report.epsilon} delta {report.delta:.3g}; budget "
          f"({report.budget.epsilon}, {report.budget.delta:g})")
    return 0


def add_dp_arguments(sim: argparse.ArgumentParser, positive) -> None:
    g = sim.add_argument_group("differential privacy (DP rounds when --epsilon is given)")
    g.add_argument("--rounds", type=positive(int, 1, 100_000), default=1)
    g.add_argument("--epsilon", type=positive(float, 1e-6, 1e6), default=None,
                   help="total budget over the rounds; turns on DP aggregation")
    g.add_argument("--delta", type=positive(float, 1e-30, 0.5), default=1e-5)
    g.add_argument("--ledger", type=Path, default=None,
                   help="privacy ledger (JSON Lines); created if missing, appended otherwise")
    g.add_argument("--clip", type=positive(float, 1e-12, 1e12), default=1.0,
                   help="L2 clip norm of each client's update")
    g.add_argument("--mechanism", choices=["skellam", "discrete-gaussian"], default="skellam")
    g.add_argument("--n-min", type=positive(int, 1, 100_000), default=None,
                   help="planned minimum survivors (default: clients minus planned dropouts)")


def simulate_dp(args: argparse.Namespace, show, finish) -> int:
    n, d = args.clients, args.dim
    rng = np.random.default_rng(args.seed)
    stages = [s for s in STAGES if args.mode == "malicious" or s != "consistency_check"]
    try:
        rc = RoundConfig(bits=args.bits, mode=args.mode, dropout_rate=min(args.dropout, 0.95),
                         corrupt_rate=args.corrupt, complete_graph=args.complete_graph)
        cfg = DPConfig(clip_norm=args.clip, epsilon=args.epsilon, delta=args.delta,
                       rounds=args.rounds, mechanism=args.mechanism, min_survivors=args.n_min)
        plan = plan_dp(cfg, rc, n, d)
        if args.ledger is not None and args.ledger.exists():
            ledger = Ledger.open(args.ledger)
        elif args.ledger is not None:
            ledger = Ledger.create(args.ledger, cfg.budget)
        else:
            ledger = None
    except (DPError, ProtocolError, SecAggError) as exc:
        print(f"secagg: {exc}", file=sys.stderr)
        return 2
    e = plan.encoding
    print(f"DP plan: {plan.config.mechanism}, clip {cfg.clip_norm:g}, n_min {plan.n_min} "
          f"({plan.honest_min} counted honest), gamma {e.gamma:g}, b {e.bits}, padded d "
          f"{e.padded_dim}, noise multiplier {plan.noise_multiplier:.4f}, per-round epsilon "
          f"{plan.round_epsilon():.4f}")
    # each client's update: a fixed direction plus client noise, some above the clip norm
    base = rng.normal(size=d)
    base *= 0.5 * cfg.clip_norm / np.linalg.norm(base)
    rows = []
    for r in range(args.rounds):
        updates = [base + rng.normal(scale=cfg.clip_norm / np.sqrt(d), size=d)
                   for _ in range(n)]
        n_drop = int(round(args.dropout * n))
        dropped = rng.choice(n, size=n_drop, replace=False).tolist() if n_drop else []
        sched: dict[str, set[int]] = {s: set() for s in stages}
        for i, u in enumerate(dropped):
            sched[stages[i % len(stages)]].add(u)
        try:
            res = run_dp_round(updates, plan, server_ledger=ledger, dropouts=sched, round_=r,
                               progress=show)
            finish()
        except BudgetExceeded as exc:
            finish()
            print(f"round {r}: refused by the budget filter: {exc}", file=sys.stderr)
            return 1
        except (ProtocolError, DPError, SecAggError) as exc:
            finish()
            print(f"round {r}: aborted: {exc}", file=sys.stderr)
            return 1
        true = np.zeros(d)
        for u in res.survivors:
            x = updates[u]
            true += x * min(1.0, cfg.clip_norm / np.linalg.norm(x))
        rmse = float(np.sqrt(np.mean((res.estimate - true) ** 2)))
        eps = res.epsilon if ledger is not None else None
        rows.append({"round": r, "survivors": len(res.survivors), "epsilon": eps,
                     "rmse": rmse})
        print(f"round {r}: survivors {len(res.survivors)}/{n}, cumulative epsilon "
              f"{'-' if eps is None else f'{eps:.4f}'} (delta {cfg.delta:g}), RMSE of the "
              f"sum {rmse:.4g}")
    if ledger is not None:
        print(f"ledger: {args.ledger} (id {ledger.ledger_id}, {ledger.rounds} rounds); check "
              f"it with `secagg budget verify {args.ledger} --ledger-id {ledger.ledger_id} "
              f"--min-rounds {ledger.rounds}`")
    if args.json:
        print(json.dumps({"plan": {"gamma": e.gamma, "bits": e.bits,
                                   "noise_multiplier": plan.noise_multiplier,
                                   "n_min": plan.n_min}, "rounds": rows}))
    return 0
