"""DP-FedAvg on scikit-learn's bundled digits, through the real SecAgg+ protocol.

    python examples/federated_digits.py                 # two budgets and a non-private baseline
    python examples/federated_digits.py --central       # plus central-DP reference runs
    python examples/federated_digits.py --dp-sgd        # plus record-level DP-SGD (Opacus)

A softmax-regression model (64 pixels -> 10 classes) is trained by clients that each hold a
non-IID shard of the training digits (label proportions drawn from Dirichlet(0.5)). Each round
every client trains locally, clips its model delta to C, and the deltas are aggregated with
distributed DP over secure aggregation (protocol.dp_round: Skellam noise planned for n_min
survivors, FedAvg weights n_k scaling each client's vector); 10 % of the clients drop out at random
stages of every round. The server applies the decoded weighted mean and records the round in a
ledger per budget. At the end it prints accuracy and epsilon per round, the final table, and
writes a plot of test accuracy against epsilon.

FedAvg weights n_k are capped at W (``--max-weight``) and the weighted mean divides by the
public denominator |U3| m / W (protocol.dp_plan, the fixed-denominator estimator), with m the
mean capped weight of the cohort, taken here as public metadata of the deployment.

``--central`` adds, per budget, two reference runs through the same code (same data, clipping,
weighting, denominator, dropouts and rounds) in which a trusted server adds continuous
Gaussian noise N(0, (z C)^2) once to the survivors' sum, with z calibrated to the same
(epsilon, delta) over the same rounds by dp_accounting's PLD accountant ("central-pld") and by
Renyi DP alone ("central-rdp"). They are references for accuracy only (floating-point noise),
never a deployment.

No data is downloaded: ``sklearn.datasets.load_digits`` ships with scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

try:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
except ImportError as exc:
    sys.exit(f"federated_digits.py needs the extra 'train' (pip install -c .ci/constraints.txt "
             f"-e '.[train]'): {exc}")

from dp.accounting import RdpAccountant
from dp.events import GaussianDpEvent
from dp.ledger import Ledger, verify
from protocol.config import RoundConfig
from protocol.dp_round import DPConfig, plan_dp, run_dp_round
from protocol.simulate import spread_dropouts


def load(seed: int, clients: int, alpha: float):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    rng = np.random.default_rng(seed)
    shards: list[list[int]] = [[] for _ in range(clients)]
    for c in range(10):
        idx = rng.permutation(np.nonzero(ytr == c)[0])
        p = rng.dirichlet([alpha] * clients)
        cuts = (np.cumsum(p) * len(idx)).astype(int)[:-1]
        for u, part in enumerate(np.split(idx, cuts)):
            shards[u].extend(part.tolist())
    for u in range(clients):  # every client holds at least a few examples
        if len(shards[u]) < 4:
            shards[u].extend(rng.choice(len(ytr), 4, replace=False).tolist())
    data = [(torch.tensor(xtr[s]), torch.tensor(ytr[s], dtype=torch.long)) for s in shards]
    return data, torch.tensor(xte), torch.tensor(yte, dtype=torch.long)


def model_fn() -> torch.nn.Module:
    return torch.nn.Linear(64, 10)


def flat(model: torch.nn.Module) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double().numpy()


def load_flat(model: torch.nn.Module, vec: np.ndarray) -> None:
    off = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(torch.tensor(vec[off:off + n], dtype=p.dtype).reshape(p.shape))
            off += n


def accuracy(model, xte, yte) -> float:
    with torch.no_grad():
        return float((model(xte).argmax(1) == yte).float().mean())


def local_update(global_vec, data, args, dp_sgd_delta=None):
    model = model_fn()
    load_flat(model, global_vec)
    xs, ys = data
    if dp_sgd_delta is not None:
        from dp.local import train_dp_sgd

        rep = train_dp_sgd(model, xs, ys, epochs=args.local_epochs, batch_size=8, lr=args.lr,
                           noise_multiplier=1.0, max_grad_norm=1.0, delta=dp_sgd_delta,
                           pld=False)
        return flat(model) - global_vec, rep
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(args.local_epochs):
        for i in range(0, len(xs), 8):
            opt.zero_grad()
            loss_fn(model(xs[i:i + 8]), ys[i:i + 8]).backward()
            opt.step()
    return flat(model) - global_vec, None


class Progress:
    """One tqdm bar per training run on a terminal (rounds, rate, time left, the last round's
    accuracy and epsilon); one line per round otherwise (logs, CI)."""

    def __init__(self, label: str, total: int) -> None:
        from tqdm import tqdm

        self.label, self.total = label, total
        self.bar = (tqdm(total=total, desc=label, unit="round", file=sys.stderr)
                    if sys.stderr.isatty() else None)

    def step(self, done: int, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
            if done == self.total:
                self.bar.close()
        else:
            print(f"{self.label} round {done}/{self.total}: {text}", file=sys.stderr)


def central_epsilon(z: float, rounds: int, delta: float, accountant: str) -> float:
    """Epsilon after ``rounds`` Gaussian mechanisms of noise multiplier z, by dp_accounting's
    PLD accountant ("pld") or by Renyi DP alone ("rdp")."""
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant

    if accountant == "pld":
        acc = pld_privacy_accountant.PLDAccountant()
        acc.compose(dp_event.GaussianDpEvent(z), rounds)
        return float(acc.get_epsilon(delta))
    return RdpAccountant(gdp=False).compose(GaussianDpEvent(z), rounds).epsilon(delta)


def central_noise_multiplier(epsilon: float, delta: float, rounds: int, accountant: str
                             ) -> float:
    """The least z (to 0.01 %) whose ``rounds`` mechanisms stay within (epsilon, delta)."""
    lo, hi = 0.05, 100.0
    while hi / lo > 1.0001:
        mid = (lo * hi) ** 0.5
        lo, hi = (lo, mid) if central_epsilon(mid, rounds, delta, accountant) <= epsilon \
            else (mid, hi)
    return hi


def counted(schedule: dict[str, set[int]], n: int) -> list[int]:
    """The clients whose masked input counts (U3): all but those that drop before or at
    MaskedInput."""
    gone: set[int] = set()
    for stage in ("advertise_keys", "share_keys", "masked_input"):
        gone |= schedule.get(stage, set())
    return [u for u in range(n) if u not in gone]


def run(budget: float | None, args, data, xte, yte, central: str | None = None,
        noise_scale: float = 1.0) -> list[dict]:
    """One training run; budget None is the non-private baseline (plain weighted FedAvg);
    ``central`` ("pld" or "rdp") the central-DP reference at that budget, its noise multiplied
    by ``noise_scale`` (a benchmark's what-if: the accuracy at a given noise level, with the
    reference's own noise draws)."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed + 1)
    model = model_fn()
    g = flat(model)
    n = len(data)
    weights = [len(d[1]) for d in data]
    mean_weight = float(np.mean(np.minimum(weights, args.max_weight)))  # public metadata
    rows = []
    plan = ledger = None
    label = ("non-private" if budget is None else f"central-{central} epsilon {budget:g}"
             if central else f"epsilon {budget:g}")
    if budget is not None:
        cfg = DPConfig(clip_norm=args.clip, epsilon=budget, delta=args.delta, rounds=args.rounds,
                       weighted=True, max_weight=args.max_weight, mean_weight=mean_weight)
    if central is not None:
        z = central_noise_multiplier(budget, args.delta, args.rounds, central) * noise_scale
        noise_rng = np.random.default_rng([args.seed, 7])
        print(f"[{label}] noise multiplier {z:.4f}", file=sys.stderr)
    elif budget is not None:
        plan = plan_dp(cfg, RoundConfig(dropout_rate=args.dropout), n, g.size)
        path = args.out / f"ledger_eps{budget:g}.jsonl"
        for p in (path, path.with_name(path.name + ".head")):
            p.unlink(missing_ok=True)
        ledger = Ledger.create(path, cfg.budget)
        print(f"[{label}] plan: noise multiplier {plan.noise_multiplier:.3f}, gamma "
              f"{plan.encoding.gamma:g}, b {plan.encoding.bits}, n_min {plan.n_min}",
              file=sys.stderr)
    progress = Progress(f"[{label}]", args.rounds)
    for r in range(args.rounds):
        t0 = time.perf_counter()
        deltas, reports = [], []
        for u in range(n):
            dlt, rep = local_update(g, data[u], args, args.delta if args.dp_sgd else None)
            deltas.append(dlt)
            reports.append(rep)
        if budget is None:
            w = np.array(weights, dtype=float)
            alive = rng.random(n) >= args.dropout
            mean = sum(w[u] * deltas[u] for u in range(n) if alive[u]) / w[alive].sum()
            eps = 0.0
        elif central is not None:  # the same dropouts as the distributed run of this seed
            dropped = rng.choice(n, size=int(round(args.dropout * n)), replace=False)
            survivors = counted(spread_dropouts(dropped.tolist(), "semi-honest"), n)
            total = np.zeros_like(g)
            for u in survivors:
                x = deltas[u] * min(1.0, args.clip / max(np.linalg.norm(deltas[u]), 1e-300))
                total += x * (min(weights[u], args.max_weight) / args.max_weight)
            total += noise_rng.normal(0.0, z * args.clip, size=total.size)
            mean = total / (len(survivors) * mean_weight / args.max_weight)
            eps = central_epsilon(z, r + 1, args.delta, central)
        else:
            dropped = rng.choice(n, size=int(round(args.dropout * n)), replace=False)
            sched = spread_dropouts(dropped.tolist(), plan.round_config.mode)
            res = run_dp_round(deltas, plan, server_ledger=ledger, weights=weights,
                               dropouts=sched, round=r)
            mean, eps = res.estimate, res.epsilon
        g = g + args.server_lr * mean
        load_flat(model, g)
        acc = accuracy(model, xte, yte)
        row = {"budget": budget, "round": r + 1, "accuracy": acc, "epsilon": eps,
               "seconds": time.perf_counter() - t0}
        if reports[0] is not None:
            row["record_level_epsilon"] = max(rep.epsilon_opacus for rep in reports)
        rows.append(row)
        extra = (f", record-level epsilon {row['record_level_epsilon']:.2f}"
                 if "record_level_epsilon" in row else "")
        progress.step(r + 1, f"accuracy {acc:.3f}, epsilon {eps:.3f}{extra}")
    if ledger is not None:
        rep = verify(ledger.path)
        print(f"[{label}] ledger {ledger.path}: verifies, epsilon {rep.epsilon}",
              file=sys.stderr)
    return rows


def plot(results: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for budget, rows in results.items():
        if budget == "baseline":
            ax.axhline(rows[-1]["accuracy"], color="grey", linestyle="--",
                       label=f"non-private ({rows[-1]['accuracy']:.3f})")
            continue
        ax.plot([r["epsilon"] for r in rows], [r["accuracy"] for r in rows], marker=".",
                label=f"budget epsilon = {budget}")
    ax.set_xlabel("cumulative epsilon (delta = 1e-5)")
    ax.set_ylabel("test accuracy")
    ax.set_title("DP-FedAvg over SecAgg+ on digits")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = out / "accuracy_vs_epsilon.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--budgets", type=float, nargs="+", default=[4.0, 8.0])
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=0.3)
    p.add_argument("--server-lr", type=float, default=1.0)
    p.add_argument("--local-epochs", type=int, default=10)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--max-weight", type=float, default=32.0,
                   help="public cap W on a client's FedAvg weight (its example count)")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet non-IID concentration")
    p.add_argument("--central", action="store_true",
                   help="also run the central-DP references (PLD- and RDP-calibrated Gaussian)")
    p.add_argument("--dp-sgd", action="store_true",
                   help="also train each client with DP-SGD (Opacus; slower)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("digits_out"))
    args = p.parse_args(argv)
    if args.clients < 20:
        p.error("use at least 20 clients")
    args.out.mkdir(parents=True, exist_ok=True)
    data, xte, yte = load(args.seed, args.clients, args.alpha)
    results = {"baseline": run(None, args, data, xte, yte)}
    for b in args.budgets:
        results[f"{b:g}"] = run(b, args, data, xte, yte)
        if args.central:
            for acc in ("pld", "rdp"):
                results[f"central-{acc}-{b:g}"] = run(b, args, data, xte, yte, central=acc)
    path = plot(results, args.out)
    summary = {k: {"final_accuracy": v[-1]["accuracy"], "epsilon": v[-1]["epsilon"]}
               for k, v in results.items()}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print("\nbudget        final accuracy   epsilon spent")
    for k, v in summary.items():
        print(f"{k:<13} {v['final_accuracy']:>14.3f}   {v['epsilon']:>12.3f}")
    print(f"plot: {path}; ledgers and results.json in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
