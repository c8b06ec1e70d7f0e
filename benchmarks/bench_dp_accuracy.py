"""Distributed DP against central DP on the digits example: accuracy, noise and bytes.

For each seed (data split, model initialisation, dropouts) and budget, examples/federated_digits.py
trains runs through the same code: ours (Skellam over SecAgg+, protocol.dp_round), the central
Gaussian reference calibrated by dp_accounting's PLD accountant, the same calibrated by Renyi DP
alone, two what-if runs of the PLD reference with its noise scaled to the level ours releases
(with and without the n_min - A honest-client factor), and (once per seed) the non-private
baseline. The central and what-if runs share one noise stream per seed, so their differences
are measured far more precisely than ours against any of them (independent noise). Reported
per budget: final test accuracy, mean and standard deviation over seeds, and paired differences
(mean and standard error), the seed being the pairing.

The noise decomposition is computed from the plans: the standard deviation ours releases per
coordinate of the survivors' sum, in units of C, over the central PLD reference's z, as the
product of the accounting factor (our planned z over central-pld's), the noise counted for
n_min - A honest clients (sqrt(n_min / (n_min - A))), the rounding inflation B / (gamma C), and
the survivors beyond n_min (sqrt(|U3| / n_min)).

The bytes table: the masked input a client uploads, for the digits cohort and for n = 1000,
d = 1e5, against b_min * D / 8 (D the rotated, padded dimension) and b_min * d / 8.

Usage: python benchmarks/bench_dp_accuracy.py [--seeds 5] [--first-seed 0] [--budgets 4 8]
       [--json] [--jobs 2] [--bytes-only]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT))

import federated_digits as fd  # noqa: E402
from timing import progress  # noqa: E402

from protocol.config import RoundConfig  # noqa: E402
from protocol.dp_round import DPConfig, plan_dp  # noqa: E402
from protocol.messages import MaskedInput  # noqa: E402
from protocol.wire import encode  # noqa: E402


def _args(seed: int, out: Path) -> argparse.Namespace:
    return argparse.Namespace(clients=100, rounds=10, delta=1e-5, clip=1.0, lr=0.3,
                              server_lr=1.0, local_epochs=10, dropout=0.1, max_weight=32.0,
                              alpha=0.5, dp_sgd=False, seed=seed, out=out)


def one_seed(seed: int, budgets: list[float], out: Path) -> dict:
    import torch

    torch.set_num_threads(1)  # one process per core: tiny models, no thread contention
    args = _args(seed, out / f"seed{seed}")
    args.out.mkdir(parents=True, exist_ok=True)
    data, xte, yte = fd.load(seed, args.clients, args.alpha)
    res = {"baseline": fd.run(None, args, data, xte, yte)[-1]["accuracy"]}
    for b in budgets:
        res[f"ours-{b:g}"] = fd.run(b, args, data, xte, yte)[-1]["accuracy"]
        for acc in ("pld", "rdp"):
            res[f"central-{acc}-{b:g}"] = fd.run(b, args, data, xte, yte,
                                                 central=acc)[-1]["accuracy"]
        # what-if runs on the PLD reference's own noise draws: its noise scaled to ours, and
        # to ours without the honest-client factor, price each factor in accuracy points
        dec = decomposition(b)
        honest = dec["factors"]["n_min - A honest"]
        for name, scale in (("at-our-noise", dec["total"]),
                            ("at-our-noise-but-honest-factor", dec["total"] / honest)):
            res[f"central-pld-{name}-{b:g}"] = fd.run(b, args, data, xte, yte, central="pld",
                                                      noise_scale=scale)[-1]["accuracy"]
    return res


def decomposition(budget: float) -> dict:
    args = _args(0, Path("."))
    data, _, _ = fd.load(0, args.clients, args.alpha)
    weights = [len(d[1]) for d in data]
    cfg = DPConfig(clip_norm=1.0, epsilon=budget, delta=1e-5, rounds=10, weighted=True,
                   max_weight=32.0, mean_weight=float(np.mean(np.minimum(weights, 32.0))))
    plan = plan_dp(cfg, RoundConfig(dropout_rate=0.1), 100, 650)
    sched = fd.spread_dropouts(range(10), plan.round_config.mode)
    survivors = len(fd.counted(sched, 100))
    z_pld = fd.central_noise_multiplier(budget, 1e-5, 10, "pld")
    z_rdp = fd.central_noise_multiplier(budget, 1e-5, 10, "rdp")
    parts = {"accounting (our z / central-pld z)": plan.noise_multiplier / z_pld,
             "n_min - A honest": math.sqrt(plan.n_min / plan.honest_min),
             "rounding B / (gamma C)": plan.encoding.inflation,
             "survivors beyond n_min": math.sqrt(survivors / plan.n_min)}
    return {"budget": budget, "z_ours": plan.noise_multiplier, "z_central_pld": z_pld,
            "z_central_rdp": z_rdp, "n_min": plan.n_min, "honest_min": plan.honest_min,
            "survivors": survivors, "gamma": plan.encoding.gamma, "bits": plan.encoding.bits,
            "factors": parts, "total": math.prod(parts.values())}


def upload_bytes(n: int, d: int, budget: float, weighted: bool) -> dict:
    cfg = DPConfig(clip_norm=1.0, epsilon=budget, delta=1e-5, rounds=10, weighted=weighted,
                   max_weight=32.0 if weighted else 1.0)
    plan = plan_dp(cfg, RoundConfig(dropout_rate=0.1), n, d)
    e = plan.encoding
    dim = e.padded_dim
    vec = np.zeros(dim, dtype=np.uint32 if e.bits <= 32 else np.uint64)
    msg = MaskedInput(bytes(32), 0, 0, vec, **({"bits": e.bits} if _has_bits() else {}))
    sent = len(encode(msg))
    return {"n": n, "d": d, "padded": dim, "b_min": e.bits, "gamma": e.gamma,
            "bytes_32bit_words": 4 * dim, "bytes_sent": sent,
            "ratio_to_b_min_D": sent / (e.bits * dim / 8),
            "ratio_to_b_min_d": sent / (e.bits * d / 8)}


def _has_bits() -> bool:
    import dataclasses

    return any(f.name == "bits" for f in dataclasses.fields(MaskedInput))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--budgets", type=float, nargs="+", default=[4.0, 8.0])
    p.add_argument("--jobs", type=int, default=2, help="seeds trained in parallel processes")
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_dp_accuracy"))
    p.add_argument("--bytes-only", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    report: dict = {"bytes": [upload_bytes(100, 650, 4.0, True),
                              upload_bytes(1000, 100_000, 4.0, False)],
                    "decomposition": [decomposition(b) for b in args.budgets]}
    if not args.bytes_only:
        with ProcessPoolExecutor(args.jobs) as pool:
            seeds = range(args.first_seed, args.first_seed + args.seeds)
            runs = list(progress(pool.map(one_seed, seeds, [args.budgets] * args.seeds,
                                          [args.out] * args.seeds), "seeds"))  # in order
        table = {}
        for key in runs[0]:
            vals = [r[key] for r in runs]
            table[key] = {"mean": statistics.fmean(vals), "sd": statistics.stdev(vals)
                          if len(vals) > 1 else 0.0, "values": vals}
        for b in args.budgets:
            for a in ("ours", "central-rdp", "central-pld-at-our-noise",
                      "central-pld-at-our-noise-but-honest-factor"):
                diff = [r[f"{a}-{b:g}"] - r[f"central-pld-{b:g}"] for r in runs]
                table[f"{a}-minus-central-pld-{b:g}"] = {
                    "mean": statistics.fmean(diff),
                    "se": statistics.stdev(diff) / math.sqrt(len(diff)) if len(diff) > 1
                    else 0.0, "values": diff}
        report["accuracy"] = table
        report["seeds"] = args.seeds
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    for row in report["bytes"]:
        print(f"n = {row['n']}, d = {row['d']} (padded {row['padded']}): b_min {row['b_min']}, "
              f"32-bit words {row['bytes_32bit_words']:,} B, sent {row['bytes_sent']:,} B = "
              f"{row['ratio_to_b_min_D']:.3f} x b_min D / 8 = "
              f"{row['ratio_to_b_min_d']:.3f} x b_min d / 8")
    for dec in report["decomposition"]:
        fac = ", ".join(f"{k} x{v:.4f}" for k, v in dec["factors"].items())
        print(f"epsilon {dec['budget']:g}: released noise / central PLD = x{dec['total']:.4f} "
              f"({fac}); z ours {dec['z_ours']:.4f}, central PLD {dec['z_central_pld']:.4f}, "
              f"central RDP {dec['z_central_rdp']:.4f}")
    if "accuracy" in report:
        print(f"final test accuracy over {report['seeds']} seeds (mean +- sd):")
        for key, v in report["accuracy"].items():
            spread = f"+- {v['sd']:.3f}" if "sd" in v else f"(se {v['se']:.3f})"
            print(f"  {key:<28} {v['mean']:.3f} {spread}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
