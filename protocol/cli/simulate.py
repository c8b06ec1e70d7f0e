"""``secagg simulate`` without ``--epsilon``: one whole SecAgg+ round in this process on
random inputs, checked against the plain sum of the survivors' inputs and summarised, with a
progress bar per stage on stderr."""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import sys
import time

import numpy as np

from secagg.version import package_version

from ..simulate import SeededInputs, simulate_round
from .common import ROUND_ERRORS, dropout_schedule, positive, round_config


def add_simulate_parser(sub) -> argparse.ArgumentParser:
    """Add ``simulate`` and its round options to ``sub``; returns its parser."""
    sim = sub.add_parser(
        "simulate",
        help="run one whole SecAgg+ round in this process on random inputs and check the sum",
    )
    sim.add_argument("--clients", type=positive(int, 3, 100_000), default=100,
                     help="clients in the cohort")
    sim.add_argument("--dim", type=positive(int, 1, 100_000_000), default=100_000,
                     help="length of each client's input vector (coordinates)")
    sim.add_argument("--dropout", type=positive(float, 0.0, 0.9), default=0.1,
                     help="fraction of clients that drop (spread over the stages)")
    sim.add_argument("--bits", type=positive(int, 8, 64), default=None,
                     help="ring bit width b (default 32; with --epsilon, the smallest b the DP "
                          "plan's wrap bound allows)")
    sim.add_argument("--mode", choices=["semi-honest", "malicious"], default="semi-honest",
                     help="threat model of the round (malicious: signatures, consistency check)")
    sim.add_argument("--corrupt", type=positive(float, 0.0, 0.5), default=0.05,
                     help="assumed fraction of corrupted clients, for choosing k and t")
    sim.add_argument("--complete-graph", action="store_true",
                     help="original SecAgg: every client neighbours every other")
    sim.add_argument("--seed", type=int, default=None,
                     help="seed for inputs, dropouts and the session id (never for keys)")
    sim.add_argument("--workers", type=positive(int, 1, 256), default=1,
                     help="processes the simulated clients run in (forked; default 1: all in "
                          "this process; not with --epsilon)")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    return sim


def progress(stream):
    """A progress bar per stage (tqdm: count, rate and time left) on a terminal; one line per
    stage otherwise (logs, CI). Returns ``(show, finish)``: ``show(stage, done, total)`` per
    step, ``finish()`` at the end."""
    from tqdm import tqdm

    tty = stream.isatty()
    state: dict = {"stage": None, "bar": None}
    width = 30

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()
            state["bar"] = None

    def show(stage: str, done: int, total: int) -> None:
        if stage != state["stage"]:
            close()
            state["stage"] = stage
            if tty:
                state["bar"] = tqdm(total=total, desc=f"{stage:<18}", file=stream,
                                    unit="client", dynamic_ncols=True, leave=True)
        if state["bar"] is not None:
            state["bar"].update(done - state["bar"].n)
        elif not tty and done == total:
            stream.write(f"{stage:<18} [{'#' * width}] {done}/{total}\n")

    def finish() -> None:
        close()

    return show, finish


def simulate(args: argparse.Namespace) -> int:
    """Run the round; exit 0 if the aggregate is correct, 1 if it is not or the round aborted
    or was refused."""
    n, d, bits = args.clients, args.dim, args.bits
    base = args.seed if args.seed is not None else secrets.randbits(63)
    rng = np.random.default_rng(base)
    inputs = SeededInputs(n, d, bits, base)  # generated per client when that client masks
    schedule = dropout_schedule(rng, n, args.dropout, args.mode)
    try:
        config = round_config(args)
        show, finish = progress(sys.stderr)
        t0 = time.perf_counter()
        result = simulate_round(inputs, config, schedule, seed=args.seed, progress=show,
                                workers=args.workers)
        total = time.perf_counter() - t0
        finish()
    except ROUND_ERRORS as exc:
        print(f"\nsecagg: round aborted or refused: {exc}", file=sys.stderr)
        return 1
    summary = _summary(args, inputs, schedule, result, total)
    if args.json:
        print(json.dumps({"secagg_version": package_version(), **summary}))
    else:
        _print_summary(summary, schedule, total)
    return 0 if summary["correct"] else 1


def _summary(args: argparse.Namespace, inputs: SeededInputs, schedule: dict[str, set[int]],
             result, total: float) -> dict:
    """The round's summary: parameters, survivors, time per stage, traffic, memory, and
    whether the aggregate equals the plain sum of the survivors' inputs.

    Memory: what the server retained at its peak (its running sum and per-client state, as
    it counts them) and the whole process's peak resident set (every simulated client, the
    inputs as they are generated, the interpreter)."""
    n, d, bits, dtype = args.clients, args.dim, args.bits, inputs.dtype
    survivors = sorted(result.survivors)
    expected = inputs.sum_of(survivors)
    t = result.transcript
    recv = [t.bytes_received_by(u) for u in range(n)]
    plain = -(-d * bits // 8)
    alive_sent = [t.bytes_sent_by(u) for u in survivors]
    return {
        "clients": n, "dim": d, "bits": bits, "mode": args.mode, "workers": args.workers,
        "neighbours": result.params.neighbours, "threshold": result.params.threshold,
        "min_survivors": result.params.min_survivors, "survivors": len(survivors),
        "dropped": {s: sorted(v) for s, v in schedule.items() if v},
        "seconds": {s: round(r.seconds, 4) for s, r in t.stages.items()},
        "total_seconds": round(total, 3),
        "bytes_sent_per_survivor": int(np.mean(alive_sent)),
        "bytes_received_per_client": int(np.mean(recv)),
        "plain_upload_bytes": plain,
        "upload_expansion": round(float(np.mean(alive_sent)) / plain, 4),
        "server_peak_bytes": result.server_retained_peak,
        "process_peak_rss_bytes": peak_rss_bytes(),
        "vector_bytes": d * np.dtype(dtype).itemsize,
        "correct": bool(np.array_equal(result.aggregate, expected)),
    }


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (Linux reports kibibytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _print_summary(summary: dict, schedule: dict[str, set[int]], total: float) -> None:
    """The summary as text."""
    s, n = summary, summary["clients"]
    print(f"SecAgg+ round: {n} clients, d = {s['dim']}, b = {s['bits']}, {s['mode']}, "
          f"k = {s['neighbours']}, t = {s['threshold']}, "
          f"min survivors = {s['min_survivors']}")
    print(f"survivors: {s['survivors']} of {n}; dropped per stage: "
          + ", ".join(f"{stage} {len(v)}" for stage, v in schedule.items()))
    for stage, sec in s["seconds"].items():
        print(f"  {stage:<18} {sec:9.3f} s")
    print(f"  {'total':<18} {total:9.3f} s")
    print(f"bytes per client: sent {s['bytes_sent_per_survivor']:,} (survivors), "
          f"received {s['bytes_received_per_client']:,}; plain {s['bits']}-bit upload "
          f"{s['plain_upload_bytes']:,}; upload expansion {s['upload_expansion']:.3f}x")
    print(f"server peak memory: {s['server_peak_bytes'] / 2**20:.1f} MiB retained "
          f"(one vector is {s['vector_bytes'] / 2**20:.1f} MiB); process peak RSS "
          f"{s['process_peak_rss_bytes'] / 2**20:.0f} MiB")
    print("aggregate equals the plain sum of the survivors' inputs: "
          + ("yes" if s["correct"] else "NO"))
