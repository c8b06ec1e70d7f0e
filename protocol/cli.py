"""The ``secagg`` command line (the outermost layer, DESIGN.md section 2)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from secagg import SecAggError

from .demo import run_demo


def _positive(kind: type, lo: float, hi: float | None = None):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(
                f"{text} outside [{lo}, {hi if hi is not None else 'inf'}]"
            )
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="secagg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="mask random vectors of a cohort, drop some clients, unmask, check the sum",
    )
    demo.add_argument("--clients", type=_positive(int, 3, 100_000), default=20)
    demo.add_argument("--dim", type=_positive(int, 1, 100_000_000), default=100_000)
    demo.add_argument("--bits", type=_positive(int, 8, 64), default=32)
    demo.add_argument("--dropout", type=_positive(float, 0.0, 0.5), default=0.1)
    demo.add_argument("--corrupt", type=_positive(float, 0.0, 0.5), default=0.05,
                      help="assumed fraction of corrupted clients, for choosing k and t")
    demo.add_argument("--mode", choices=["semi-honest", "malicious"], default="semi-honest")
    demo.add_argument("--seed", type=int, default=None, help="seed for inputs and dropouts only")
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run_demo(args.clients, args.dim, bits=args.bits, dropout=args.dropout,
                          corrupt=args.corrupt, mode=args.mode, seed=args.seed)
    except SecAggError as exc:
        print(f"secagg: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.__dict__, sort_keys=True))
    else:
        print(f"cohort {result.clients} clients, d = {result.dim}, b = {result.bits}, "
              f"SecAgg+ graph k = {result.k}, threshold t = {result.t}")
        print(f"survivors {result.survivors}, dropped after ShareKeys {result.dropped}")
        for stage, sec in result.seconds.items():
            print(f"  {stage:<15} {sec:8.3f} s")
        print("unmasked sum equals the plain sum: " + ("yes" if result.correct else "NO"))
    return 0 if result.correct else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
