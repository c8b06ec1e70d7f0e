"""Flower benchmark: Flower's own SecAgg+ against ours, the same app in the simulation engine.

For each (n, d): one Flower app (a NumPyClient whose update is a known float32 delta of d
values, FedAvg weighted by example counts) runs ``--rounds`` fit rounds in Flower's simulation
engine (``flwr.simulation.run_simulation``, Ray on loopback, 2 CPUs, one CPU per ClientApp)
twice, each run a fresh Ray session:

* Flower: ``SecAggPlusWorkflow(num_shares=k + 1, reconstruction_threshold=t)`` with
  ``secaggplus_mod``, where (k, t) = ``RoundConfig().resolve(n)`` are our neighbours and
  threshold (Flower's share count includes the node itself: k neighbours plus one is the same
  graph, and odd as Flower wants);
* ours: ``HardenedSecAggWorkflow(config=RoundConfig())`` with ``make_hardened_secagg_mod``,
  one settings file per node.

In every round 10 % of the nodes (the same partitions in every round) drop after ShareKeys:
they answer ShareKeys, then fail on the next message (Flower's stage
``collect_masked_vectors``, ours ``masked_input``), as a mod placed before the secure
aggregation mod. Reported per configuration:

* round s: wall time of the fit workflow call inside the ServerApp, the median over rounds
  2.. (round 1 is a warm-up: Ray's actors and imports are cold);
* bytes/node: mean over the surviving nodes of the bytes of message content the ServerApp
  pushed to and pulled from the node in one round (both directions, the global model that
  comes with the shares included), measured the same way for both by wrapping the grid's
  ``push_messages`` and ``pull_messages``: Array data, ConfigRecord and MetricRecord values
  (bytes and str by length, numbers as 8 bytes) and record keys. Flower's masked vector is
  int64 (8 bytes a value) and its aggregate comes back float64, so from round 2 on its nodes
  download a float64 model (ours keeps the model's float32); ours uploads 4-byte words of the
  update padded to a power of two (d = 1e5: 2^17 words);
* ratio: ours / Flower round time (the target is at most 0.5 at n = 50, d = 1e5);
* stage breakdown (second table): for both, the time from one stage's first push to the
  next's (the last stage until the workflow returns); ours also its ``RoundReport``'s
  stage_seconds;
* correctness: the change of the global model in every round against the weighted mean of
  the survivors' deltas (max abs error, ours and Flower's), and the number of drops.

With ``--against-inprocess`` the table is instead Flower's SecAgg+ round (as above) against
one whole round of ours in one process (``protocol.simulate_round``: every client and the
server, real encoded messages, the same 10 % of the clients dropping after ShareKeys), with
the clients in 1 and in 2 worker processes (``workers=``), the median of ``--rounds`` rounds
each; the ratio is Flower's round time over ours.

Usage: python benchmarks/bench_flower.py [--nodes 10 50] [--dims 10000 100000] [--rounds 3]
       [--quick] [--json [PATH]] [--timeout 120]
       python benchmarks/bench_flower.py --against-inprocess --nodes 100 --dims 100000
(``--json`` alone prints JSON instead of the tables; with a path it also writes it there.)
"""

# ruff: noqa: E402
# (telemetry is switched off before Flower is imported)
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no internet: no telemetry attempts

import numpy as np
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.simulation import run_simulation

from protocol.config import RoundConfig
from protocol.flower import HardenedSecAggWorkflow, make_hardened_secagg_mod
from protocol.flower.records import META_RECORD
from protocol.flower.settings import load_node_settings
from protocol.simulate import SeededInputs, simulate_round
from protocol.transitions import Stage as OurStage

RAY = {"init_args": {"num_cpus": 2, "include_dashboard": False,
                     "_node_ip_address": "127.0.0.1"},
       "client_resources": {"num_cpus": 1}}
DROP_RATE = 0.1
OURS_DROP_STAGE = str(OurStage.MASKED_INPUT)  # "masked_input"
FLOWER_DROP_STAGE = Stage.COLLECT_MASKED_VECTORS  # "collect_masked_vectors"


# -- the app: known deltas, example counts, a mod that drops a node at a stage ---------------
def delta_of(pid: int, rnd: int, d: int) -> np.ndarray:
    """Partition ``pid``'s model delta in round ``rnd`` (small, known to the server too)."""
    rng = np.random.default_rng(1000 * rnd + pid)
    return (0.01 * rng.standard_normal(d)).astype(np.float32)


def examples_of(pid: int) -> int:
    return 10 * (pid + 1)


def expected_delta(pids, rnd: int, d: int) -> np.ndarray:
    pids = sorted(pids)
    out = np.zeros(d, np.float64)
    for p in pids:
        out += examples_of(p) * delta_of(p, rnd, d).astype(np.float64)
    return out / sum(examples_of(p) for p in pids)


class KnownClient(NumPyClient):
    def __init__(self, pid: int, d: int) -> None:
        self.pid, self.d = pid, d

    def fit(self, parameters, config):
        rnd = int(config.get("round", 0))
        return ([parameters[0] + delta_of(self.pid, rnd, self.d)], examples_of(self.pid), {})

    def evaluate(self, parameters, config):
        return 0.0, 1, {}


def ours_stage(msg) -> str | None:
    rec = msg.content.config_records.get(META_RECORD) if msg.has_content() else None
    return rec.get("stage") if rec is not None else None


def flower_stage(msg) -> str | None:
    rec = msg.content.config_records.get(RECORD_KEY_CONFIGS) if msg.has_content() else None
    return rec.get(Key.STAGE) if rec is not None else None


def failing_mod(dropped: frozenset[int], stage: str, stage_key):
    """Partitions in ``dropped`` fail (raise) on every message of ``stage``."""

    def mod(msg, ctxt, call_next):
        if int(ctxt.node_config["partition-id"]) in dropped and stage_key(msg) == stage:
            raise RuntimeError(f"scheduled drop at {stage}")
        return call_next(msg, ctxt)

    return mod


def client_app(impl: str, d: int, dropped: frozenset[int], settings_dir: Path | None):
    def client_fn(context):
        return KnownClient(int(context.node_config["partition-id"]), d).to_client()

    if impl == "flower":
        mods = [failing_mod(dropped, FLOWER_DROP_STAGE, flower_stage), secaggplus_mod]
    else:
        def settings(ctxt):
            return load_node_settings(
                settings_dir / f"node-{ctxt.node_config['partition-id']}.toml")

        mods = [failing_mod(dropped, OURS_DROP_STAGE, ours_stage),
                make_hardened_secagg_mod(settings)]
    return ClientApp(client_fn=client_fn, mods=mods)


def write_node_settings(root: Path, n: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for p in range(n):
        (root / f"node-{p}.toml").write_text(f'state_dir = "state/node-{p}"\n')
    return root


# -- measuring the messages the ServerApp exchanges -----------------------------------------
def _value_bytes(v) -> int:
    if isinstance(v, bytes | bytearray):
        return len(v)
    if isinstance(v, str):
        return len(v.encode())
    if isinstance(v, bool):
        return 1
    if isinstance(v, int | float):
        return 8
    if isinstance(v, list | tuple):
        return sum(_value_bytes(x) for x in v)
    raise TypeError(f"unexpected record value {type(v).__name__}")


def content_bytes(msg) -> int:
    if not msg.has_content():
        return 0
    rd, total = msg.content, 0
    for name, rec in rd.array_records.items():
        total += len(name) + sum(len(k) + len(a.data) for k, a in rec.items())
    for name, rec in list(rd.config_records.items()) + list(rd.metric_records.items()):
        total += len(name) + sum(len(k) + _value_bytes(v) for k, v in rec.items())
    return total


class Meter:
    """Wraps a grid's push_messages/pull_messages; counts bytes per node and stage times."""

    def __init__(self, grid, stage_key) -> None:
        self.stage_key = stage_key
        self.reset()
        push, pull = grid.push_messages, grid.pull_messages

        def pushed(messages):
            messages = list(messages)
            self._on_push(messages)
            return push(messages)

        def pulled(message_ids):
            replies = list(pull(message_ids))
            self._on_pull(replies)
            return replies

        grid.push_messages, grid.pull_messages = pushed, pulled

    def reset(self) -> None:
        self.down: dict[int, int] = {}
        self.up: dict[int, int] = {}
        self.errored: set[int] = set()
        self.marks: list[tuple[str, float]] = []  # (stage, time of its first push)

    def _on_push(self, messages) -> None:
        if messages:
            stage = str(self.stage_key(messages[0]))
            if not self.marks or self.marks[-1][0] != stage:
                self.marks.append((stage, time.perf_counter()))
        for m in messages:
            node = m.metadata.dst_node_id
            self.down[node] = self.down.get(node, 0) + content_bytes(m)

    def _on_pull(self, replies) -> None:
        for m in replies:
            node = m.metadata.src_node_id
            if m.has_error():
                self.errored.add(node)
            else:
                self.up[node] = self.up.get(node, 0) + content_bytes(m)

    def stage_seconds(self, end: float) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, (stage, t) in enumerate(self.marks):
            nxt = self.marks[i + 1][1] if i + 1 < len(self.marks) else end
            out[stage] = out.get(stage, 0.0) + nxt - t
        return out


def server_app(workflow, impl: str, n: int, d: int, rounds: int, dropped: frozenset[int],
               out: dict) -> ServerApp:
    app = ServerApp()
    survivors = sorted(set(range(n)) - dropped)

    @app.main()
    def main(grid, context):
        try:
            _main(grid, context)
        except BaseException:
            out["error"] = traceback.format_exc()
            raise

    def _main(grid, context):
        strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
                          min_available_clients=n, on_fit_config_fn=lambda r: {"round": r},
                          initial_parameters=ndarrays_to_parameters(
                              [np.zeros(d, np.float32)]))
        ctx = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds),
                            strategy=strategy)
        meter = Meter(grid, flower_stage if impl == "flower" else ours_stage)
        rows = out.setdefault("rounds", [])

        def params(c) -> np.ndarray:
            arr = c.state.array_records["parameters"]
            return parameters_to_ndarrays(compat.arrayrecord_to_parameters(arr, True))[0]

        def fit(g, c):
            rnd = len(rows) + 1
            before = params(c).astype(np.float64)
            meter.reset()
            t0 = time.perf_counter()
            workflow(g, c)
            t1 = time.perf_counter()
            change = params(c).astype(np.float64) - before
            want = expected_delta(survivors, rnd, d)
            ok_nodes = [u for u in meter.down if u not in meter.errored]
            row = {"round": rnd, "seconds": t1 - t0,
                   "max_abs_err": float(np.max(np.abs(change - want))),
                   "max_abs_delta": float(np.max(np.abs(want))),
                   "errored_nodes": len(meter.errored), "survivor_nodes": len(ok_nodes),
                   "bytes_per_node": statistics.mean(meter.down[u] + meter.up.get(u, 0)
                                                     for u in ok_nodes),
                   "down_per_node": statistics.mean(meter.down[u] for u in ok_nodes),
                   "up_per_node": statistics.mean(meter.up.get(u, 0) for u in ok_nodes),
                   "stage_seconds": meter.stage_seconds(t1)}
            rep = getattr(workflow, "last", None)
            if rep is not None:  # ours: the workflow's own report
                row["report"] = {
                    "seconds": rep.seconds, "stage_seconds": dict(rep.stage_seconds),
                    "dropped": len(rep.dropped), "survivors": len(rep.survivor_nodes),
                    "abort": None if rep.abort is None else repr(rep.abort),
                    "frame_bytes_per_node": statistics.mean(
                        rep.bytes_out.get(u, 0) + rep.bytes_in.get(u, 0)
                        for u in rep.survivor_nodes) if rep.survivor_nodes else 0}
            rows.append(row)

        DefaultWorkflow(fit_workflow=fit)(grid, ctx)

    return app


# -- one configuration ----------------------------------------------------------------------
def dropped_partitions(n: int) -> frozenset[int]:
    k = round(DROP_RATE * n)
    return frozenset(int(x) for x in np.random.default_rng(n).choice(n, k, replace=False))


def run_one(impl: str, n: int, d: int, rounds: int, timeout: float, tmp: Path) -> dict:
    params = RoundConfig().resolve(n)
    k, t = params.neighbours, params.threshold
    dropped = dropped_partitions(n)
    settings_dir = None
    if impl == "flower":
        workflow = SecAggPlusWorkflow(num_shares=k + 1, reconstruction_threshold=t,
                                      timeout=timeout)
    else:
        settings_dir = write_node_settings(tmp / f"ours-n{n}-d{d}", n)
        workflow = HardenedSecAggWorkflow(config=RoundConfig(), timeout=timeout)
    out: dict = {}
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    run_simulation(server_app=server_app(workflow, impl, n, d, rounds, dropped, out),
                   client_app=client_app(impl, d, dropped, settings_dir),
                   num_supernodes=n, backend_config=copy.deepcopy(RAY))
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()[0]
    if "error" in out:
        raise RuntimeError(f"{impl} n={n} d={d}: the ServerApp failed:\n{out['error']}")
    rows = out.get("rounds", [])
    if len(rows) != rounds:
        raise RuntimeError(f"{impl} n={n} d={d}: {len(rows)} of {rounds} rounds ran")
    timed = rows[1:] or rows
    stages: dict[str, float] = {}
    for s in rows[-1]["stage_seconds"]:
        stages[s] = statistics.median(r["stage_seconds"].get(s, 0.0) for r in timed)
    res = {"impl": impl, "n": n, "d": d, "k": k, "t": t, "dropped": len(dropped),
           "num_shares": k + 1 if impl == "flower" else None,
           "round_s": statistics.median(r["seconds"] for r in timed),
           "bytes_per_node": statistics.median(r["bytes_per_node"] for r in timed),
           "down_per_node": statistics.median(r["down_per_node"] for r in timed),
           "up_per_node": statistics.median(r["up_per_node"] for r in timed),
           "max_abs_err": max(r["max_abs_err"] for r in rows),
           "max_abs_delta": max(r["max_abs_delta"] for r in rows),
           "drops_seen": [r["errored_nodes"] for r in rows],
           "stage_s": stages, "run_wall_s": wall, "loadavg_1min": [load0, load1],
           "rounds": rows}
    if impl == "ours":
        reps = [r["report"] for r in rows]
        res["report_stage_s"] = {s: statistics.median(r["report"]["stage_seconds"].get(s, 0.0)
                                                      for r in timed)
                                 for s in reps[-1]["stage_seconds"]}
        res["report_drops"] = [r["dropped"] for r in reps]
        res["aborts"] = [r["abort"] for r in reps if r["abort"]]
        res["frame_bytes_per_node"] = statistics.median(r["report"]["frame_bytes_per_node"]
                                                        for r in timed)
    return res


def inprocess_round(n: int, d: int, workers: int, rounds: int) -> dict:
    """Our whole round in this process at (n, d), the Flower run's drops (after ShareKeys)."""
    dropped = sorted(dropped_partitions(n))
    inputs = SeededInputs(n, d, 32, seed=n)
    times = []
    for r in range(rounds):
        t0 = time.perf_counter()
        res = simulate_round(inputs, RoundConfig(), {"masked_input": set(dropped)}, round=r,
                             workers=workers)
        times.append(time.perf_counter() - t0)
        if not np.array_equal(res.aggregate, inputs.sum_of(sorted(res.survivors))):
            raise RuntimeError(f"in-process n={n} d={d}: wrong aggregate")
    return {"workers": workers, "round_s": statistics.median(times), "rounds_s": times}


def against_inprocess(args) -> None:
    """Flower's SecAgg+ in its simulation engine against our whole round in process."""
    lines = ["| n | d | dropped | Flower SecAgg+ round s | ours, 1 process s | ratio "
             "| ours, 2 workers s | ratio |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    doc = []
    with tempfile.TemporaryDirectory(prefix="bench_flower-") as tmp:
        for n in args.nodes:
            for d in args.dims:
                logging.getLogger("flwr").setLevel(logging.WARNING)
                fl = run_one("flower", n, d, args.rounds, args.timeout, Path(tmp))
                one, two = (inprocess_round(n, d, w, max(args.rounds, 3)) for w in (1, 2))
                doc.append({"n": n, "d": d, "flower_round_s": fl["round_s"], "ours": [one, two]})
                lines.append(f"| {n} | {d:.0e} | {fl['dropped']} | {fl['round_s']:.3f} "
                             f"| {one['round_s']:.3f} | {fl['round_s'] / one['round_s']:.1f}x "
                             f"| {two['round_s']:.3f} | {fl['round_s'] / two['round_s']:.1f}x |")
    print(json.dumps(doc, indent=1) if args.json else "\n".join(lines))


def check(res: dict) -> list[str]:
    """What is wrong with a configuration's result (empty: nothing)."""
    bad = []
    if any(x != res["dropped"] for x in res["drops_seen"]):
        bad.append(f"drops per round {res['drops_seen']}, expected {res['dropped']}")
    if res.get("aborts"):
        bad.append(f"aborted rounds: {res['aborts']}")
    if res["impl"] == "ours":
        if any(x != res["dropped"] for x in res["report_drops"]):
            bad.append(f"workflow reported drops {res['report_drops']}")
        if res["max_abs_err"] > 1e-4 * max(res["max_abs_delta"], 1e-3):
            bad.append(f"aggregate off by {res['max_abs_err']:.3g}")
    return bad


# -- output ---------------------------------------------------------------------------------
def tables(pairs: list[tuple[dict, dict]]) -> str:
    lines = ["| n | d | dropped | k / t (Flower num_shares) | Flower round s | ours round s "
             "| ratio | Flower bytes/node | ours bytes/node | bytes ratio |",
             "|---:|---:|---:|:--:|---:|---:|---:|---:|---:|---:|"]
    for fl, us in pairs:
        lines.append(
            f"| {us['n']} | {us['d']:.0e} | {us['dropped']} | {us['k']} / {us['t']} "
            f"({fl['num_shares']}) | {fl['round_s']:.3f} | {us['round_s']:.3f} "
            f"| {us['round_s'] / fl['round_s']:.2f}x | {fl['bytes_per_node']:,.0f} "
            f"| {us['bytes_per_node']:,.0f} "
            f"| {us['bytes_per_node'] / fl['bytes_per_node']:.2f}x |")
    lines += ["", "Stage times (median of the timed rounds, s; push to next push):", "",
              "| n | d | Flower stages | ours stages | ours RoundReport.stage_seconds "
              "| max abs err Flower / ours |",
              "|---:|---:|:--|:--|:--|:--|"]

    def fmt(st: dict) -> str:
        return ", ".join(f"{k} {v:.3f}" for k, v in st.items())

    for fl, us in pairs:
        lines.append(f"| {us['n']} | {us['d']:.0e} | {fmt(fl['stage_s'])} | {fmt(us['stage_s'])} "
                     f"| {fmt(us['report_stage_s'])} "
                     f"| {fl['max_abs_err']:.2g} / {us['max_abs_err']:.2g} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--dims", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--quick", action="store_true", help="n = 10, d = 1e4 only")
    ap.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH")
    ap.add_argument("--verbose", action="store_true", help="keep Flower's INFO log")
    ap.add_argument("--against-inprocess", action="store_true",
                    help="Flower's SecAgg+ against our whole round in one process")
    args = ap.parse_args()
    if args.against_inprocess:
        against_inprocess(args)
        return
    if args.quick:
        args.nodes, args.dims = [10], [10_000]
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    t_start = time.perf_counter()
    pairs, problems = [], []
    with tempfile.TemporaryDirectory(prefix="bench_flower-") as tmp:
        for n in args.nodes:
            for d in args.dims:
                pair = []
                for impl in ("flower", "ours"):
                    if not args.verbose:
                        logging.getLogger("flwr").setLevel(logging.WARNING)
                    print(f"# {impl}: n={n} d={d} ...", file=sys.stderr, flush=True)
                    res = run_one(impl, n, d, args.rounds, args.timeout, Path(tmp))
                    print(f"# {impl}: n={n} d={d}: round {res['round_s']:.3f} s, "
                          f"{res['bytes_per_node']:,.0f} B/node, run {res['run_wall_s']:.1f} s",
                          file=sys.stderr, flush=True)
                    problems += [f"{impl} n={n} d={d}: {p}" for p in check(res)]
                    pair.append(res)
                pairs.append(tuple(pair))
    total = time.perf_counter() - t_start
    doc = {"results": [r for p in pairs for r in p], "total_s": total, "problems": problems,
           "rounds": args.rounds, "backend_config": RAY}
    if args.json is not None and args.json != "-":
        Path(args.json).write_text(json.dumps(doc, indent=1))
    if args.json == "-":
        print(json.dumps(doc, indent=1))
    else:
        print(tables(pairs))
        loads = [x for r in doc["results"] for x in r["loadavg_1min"]]
        print(f"\nrounds per configuration: {args.rounds} (round 1 warm-up, median of the "
              f"rest); total run time {total:.0f} s; 1-minute load average "
              f"{min(loads):.1f}..{max(loads):.1f} on {os.cpu_count()} CPUs")
        for fl, us in pairs:
            if (us["n"], us["d"]) == (50, 100_000):
                ratio = us["round_s"] / fl["round_s"]
                print(f"target ours <= 0.5x Flower at n=50, d=1e5: "
                      f"{'met' if ratio <= 0.5 else 'NOT met'} ({ratio:.2f}x)")
        for p in problems:
            print(f"PROBLEM: {p}")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
