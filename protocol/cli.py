"""The ``secagg`` command line (the outermost layer, DESIGN.md section 2)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import numpy as np

from secagg import SecAggError

from .cli_dp import add_budget_parser, add_dp_arguments, budget, simulate_dp
from .cli_net import add_net_parsers, run_net
from .config import RoundConfig
from .errors import ProtocolError
from .simulate import simulate_round
from .transitions import STAGES


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
    sim = sub.add_parser(
        "simulate",
        help="run one whole SecAgg+ round in this process on random inputs and check the sum",
    )
    sim.add_argument("--clients", type=_positive(int, 3, 100_000), default=100)
    sim.add_argument("--dim", type=_positive(int, 1, 100_000_000), default=100_000)
    sim.add_argument("--dropout", type=_positive(float, 0.0, 0.9), default=0.1,
                     help="fraction of clients that drop (spread over the stages)")
    sim.add_argument("--bits", type=_positive(int, 8, 64), default=32)
    sim.add_argument("--mode", choices=["semi-honest", "malicious"], default="semi-honest")
    sim.add_argument("--corrupt", type=_positive(float, 0.0, 0.5), default=0.05,
                     help="assumed fraction of corrupted clients, for choosing k and t")
    sim.add_argument("--complete-graph", action="store_true",
                     help="original SecAgg: every client neighbours every other")
    sim.add_argument("--seed", type=int, default=None,
                     help="seed for inputs, dropouts and the session id (never for keys)")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    add_dp_arguments(sim, _positive)
    add_budget_parser(sub)
    add_net_parsers(sub, _positive)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "budget":
        return budget(args)
    if args.command in ("server", "client", "certs"):
        return run_net(args)
    if args.epsilon is not None:
        show, finish = _progress(sys.stderr)
        return simulate_dp(args, show, finish)
    return _simulate(args)


def _progress(stream):
    """A progress bar per stage: redrawn in place on a terminal, one line per stage otherwise."""
    tty = stream.isatty()
    state: dict = {"stage": None, "fill": -1}
    width = 30

    def show(stage: str, done: int, total: int) -> None:
        fill = width * done // max(total, 1)
        if stage != state["stage"]:
            if state["stage"] is not None and tty:
                stream.write("\n")
            state["stage"], state["fill"] = stage, -1
        if tty and fill != state["fill"]:
            stream.write(f"\r{stage:<18} [{'#' * fill}{'.' * (width - fill)}] {done}/{total}")
            stream.flush()
        elif not tty and done == total:
            stream.write(f"{stage:<18} [{'#' * width}] {done}/{total}\n")
        state["fill"] = fill

    def finish() -> None:
        if state["stage"] is not None and tty:
            stream.write("\n")

    return show, finish


def _simulate(args: argparse.Namespace) -> int:
    n, d, bits = args.clients, args.dim, args.bits
    rng = np.random.default_rng(args.seed)
    dtype = np.uint32 if bits <= 32 else np.uint64
    inputs = (rng.integers(0, 2**63, size=(n, d), dtype=np.uint64) >> np.uint64(63 - bits + 1)
              if bits < 64 else rng.integers(0, 2**63, size=(n, d), dtype=np.uint64) * 2)
    inputs = inputs.astype(dtype)
    stages = [s for s in STAGES if args.mode == "malicious" or s != "consistency_check"]
    n_drop = int(round(args.dropout * n))
    dropped = rng.choice(n, size=n_drop, replace=False).tolist() if n_drop else []
    schedule: dict[str, set[int]] = {s: set() for s in stages}
    for i, u in enumerate(dropped):  # spread the dropouts over every stage
        schedule[stages[i % len(stages)]].add(u)
    try:
        config = RoundConfig(bits=bits, mode=args.mode, dropout_rate=min(args.dropout, 0.95),
                             corrupt_rate=args.corrupt, complete_graph=args.complete_graph)
        show, finish = _progress(sys.stderr)
        t0 = time.perf_counter()
        result = simulate_round(inputs, config, schedule, seed=args.seed, progress=show,
                                track_memory=True)
        total = time.perf_counter() - t0
        finish()
    except (ProtocolError, SecAggError) as exc:
        print(f"\nsecagg: round aborted or refused: {exc}", file=sys.stderr)
        return 1
    survivors = sorted(result.survivors)
    expected = (inputs[survivors].astype(object).sum(axis=0) % (1 << bits)).astype(dtype)
    correct = bool(np.array_equal(result.aggregate, expected))
    t = result.transcript
    sent = [t.bytes_sent_by(u) for u in range(n)]
    recv = [t.bytes_received_by(u) for u in range(n)]
    plain = -(-d * bits // 8)
    alive_sent = [sent[u] for u in survivors]
    summary = {
        "clients": n, "dim": d, "bits": bits, "mode": args.mode,
        "neighbours": result.params.neighbours, "threshold": result.params.threshold,
        "min_survivors": result.params.min_survivors, "survivors": len(survivors),
        "dropped": {s: sorted(v) for s, v in schedule.items() if v},
        "seconds": {s: round(r.seconds, 4) for s, r in t.stages.items()},
        "total_seconds": round(total, 3),
        "bytes_sent_per_survivor": int(np.mean(alive_sent)),
        "bytes_received_per_client": int(np.mean(recv)),
        "plain_upload_bytes": plain,
        "upload_expansion": round(float(np.mean(alive_sent)) / plain, 4),
        "server_peak_bytes": result.server_peak_bytes,
        "vector_bytes": d * np.dtype(dtype).itemsize,
        "correct": correct,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"SecAgg+ round: {n} clients, d = {d}, b = {bits}, {args.mode}, "
              f"k = {summary['neighbours']}, t = {summary['threshold']}, "
              f"min survivors = {summary['min_survivors']}")
        print(f"survivors: {len(survivors)} of {n}; dropped per stage: "
              + ", ".join(f"{s} {len(v)}" for s, v in schedule.items()))
        for s, sec in summary["seconds"].items():
            print(f"  {s:<18} {sec:9.3f} s")
        print(f"  {'total':<18} {total:9.3f} s")
        print(f"bytes per client: sent {summary['bytes_sent_per_survivor']:,} (survivors), "
              f"received {summary['bytes_received_per_client']:,}; plain {bits}-bit upload "
              f"{plain:,}; upload expansion {summary['upload_expansion']:.3f}x")
        print(f"server peak memory: {result.server_peak_bytes / 2**20:.1f} MiB "
              f"(one vector is {summary['vector_bytes'] / 2**20:.1f} MiB)")
        print("aggregate equals the plain sum of the survivors' inputs: "
              + ("yes" if correct else "NO"))
    return 0 if correct else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
