"""Networked load benchmark: one server process, n clients over gRPC with mutual TLS.

For each dimension d: a deployment of n clients (``secagg certs`` layout, b = 32, semi-honest,
(k, t) from the parameter finder, no DP, so the sum is exact and checked), one
``secagg server`` process and W worker processes running n / W clients each as asyncio tasks
(:class:`protocol.net.client.AsyncClient`), all on 127.0.0.1. A fraction of the clients
drops out, spread over the stages: a dropped client closes its connection when the message
that opens its stage arrives (as a process killed there would).

Reported per run: round time and time per stage (the server's own ``stage-closed`` and
``round-complete`` log events; the round is timed from Setup to the published aggregate,
after every client has connected), bytes per client on the wire (transport frames sent plus
received: protocol messages, the published aggregate and the transport's own frames; TLS and
HTTP/2 framing not included), the server process's peak resident memory (its own VmHWM, as
its ``exit`` event logs it) and its resident memory when it started listening, and the ratio
of the round time to the in-process simulation of the same round
(:func:`protocol.simulate_round`, same n, d, graph parameters and dropout schedule), measured
in the same run. The connect phase is reported apart from the round: ``setup_s`` (the worker
processes start and load their clients' settings), ``connect_s`` (the first client admitted
to the start of the round, when the last is), the admission rate, the slowest client's
connect, and the server's peak memory at each stage's close.

Usage: python benchmarks/bench_network.py [--clients 200] [--dims 10000,100000]
       [--dropout 0.1] [--workers 4] [--repeat 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from timing import progress

from protocol import RoundConfig, simulate_round
from protocol.net.certs import DemoOptions, write_demo
from protocol.net.client import AsyncClient
from protocol.net.jsonlog import JsonLog
from protocol.net.settings import load_client
from protocol.simulate import spread_dropouts
from protocol.transitions import OPENS


class _Drop(Exception):
    pass


class BenchClient(AsyncClient):
    """A client that vanishes (closes its connection without a goodbye) at one stage."""

    drop_at: str | None = None

    async def _on_message(self, msg) -> None:
        if self.drop_at is not None and OPENS.get(type(msg)) == self.drop_at:
            raise _Drop
        await super()._on_message(msg)


async def _one(settings, x: np.ndarray, drop_at: str | None, sink) -> dict:
    async def provider(session, rnd):
        return x, None

    c = BenchClient(settings, log=JsonLog(sink, party="bench"), provider=provider)
    c.drop_at = drop_at
    t0 = time.perf_counter()
    await c.connect()
    connect_s = time.perf_counter() - t0
    try:
        await c.serve()
        await c.close()
    except _Drop:
        c.call.cancel()
        await c.channel.close()
    return {"id": settings.id, "sent": c.bytes_sent, "received": c.bytes_received,
            "dropped": drop_at, "connect_s": connect_s}


async def _worker(root: Path, ids: list[int], drops: dict[int, str]) -> list[dict]:
    # every client's settings first: a client process loads only its own, and loading 500 of
    # them must not run inside the connect timeouts of those already connecting
    settings = {u: load_client(root / f"client-{u}.toml") for u in ids}
    xs = {u: np.load(root / f"update-{u}.npy") for u in ids}
    with open(os.devnull, "w") as sink:
        return await asyncio.gather(*(_one(settings[u], xs[u], drops.get(u), sink)
                                      for u in ids))


def worker_main(args) -> None:
    ids = [int(v) for v in args.ids.split(",")]
    drops = {int(k): v for k, v in json.loads(args.drops).items()}
    print(json.dumps(asyncio.run(_worker(Path(args.worker), ids, drops))))


def _schedule(n: int, dropout: float, seed: int) -> dict[str, set[int]]:
    rng = np.random.default_rng(seed)
    dropped = rng.choice(n, size=int(round(dropout * n)), replace=False).tolist()
    return spread_dropouts(dropped, "semi-honest")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_network(n: int, d: int, dropout: float, workers: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="secagg-bench-") as tmp:
        root = Path(tmp)
        # the deployment's defaults: time limits derived from the cohort and the vector
        write_demo(root, DemoOptions(clients=n, port=_free_port(), dim=d, rounds=1,
                                     dp=False, seed=seed))
        sched = _schedule(n, dropout, seed)
        drops = {u: st for st, us in sched.items() for u in us}
        server = subprocess.Popen([sys.executable, "-m", "protocol.cli", "server", "--config",
                                   str(root / "server.toml")], stderr=subprocess.DEVNULL)
        log = root / "state" / "server.log.jsonl"
        while not (log.exists() and "listening" in log.read_text()):
            if server.poll() is not None:
                raise RuntimeError("the server exited before listening")
            time.sleep(0.05)
        base_rss = _rss_kib(server.pid)
        chunks = [list(range(n))[i::workers] for i in range(workers)]
        t_launch = time.time()
        procs = [subprocess.Popen(
            [sys.executable, __file__, "--worker", str(root), "--ids",
             ",".join(map(str, ids)), "--drops",
             json.dumps({u: drops[u] for u in ids if u in drops})],
            stdout=subprocess.PIPE, text=True) for ids in chunks]
        _, status, _ = os.wait4(server.pid, 0)
        server.returncode = os.waitstatus_to_exitcode(status)
        clients = [row for p in procs for row in json.loads(p.communicate(timeout=300)[0])]
        events = [json.loads(x) for x in log.read_text().splitlines()]
        if server.returncode != 0:
            raise RuntimeError(f"server exit {server.returncode}: {events[-3:]}")
        done = next(e for e in events if e["event"] == "round-complete")
        started = next(e for e in events if e["event"] == "round-started")
        joined = [e["ts"] for e in events if e["event"] == "client-connected"]
        stages = {e["stage"]: e["seconds"] for e in events if e["event"] == "stage-closed"}
        agg = np.load(root / "state" / "aggregates" / "round-0.npy")
        want = np.zeros(d, dtype=np.uint32)
        for u in done["survivors"]:
            want += np.load(root / f"update-{u}.npy")
        survivors = set(done["survivors"])
        sent = [c["sent"] for c in clients if c["id"] in survivors]
        recv = [c["received"] for c in clients if c["id"] in survivors]
        inputs = np.stack([np.load(root / f"update-{u}.npy") for u in range(n)])
    t0 = time.perf_counter()
    sim = simulate_round(inputs, RoundConfig(), sched, seed=seed)
    sim_s = time.perf_counter() - t0
    return {"bench": "network", "n": n, "d": d, "dropout": dropout, "workers": workers,
            "survivors": len(survivors), "correct": bool(np.array_equal(agg, want)),
            "round_s": done["seconds"], "stages_s": stages,
            # worker processes starting and loading their clients' settings
            "setup_s": min(joined) - t_launch,
            # the connect phase: the first client admitted to the last (the round starts then)
            "connect_s": started["ts"] - min(joined),
            "admitted_per_s": (len(joined) - 1) / max(max(joined) - min(joined), 1e-3),
            "stage_peak_mib": {e["stage"]: e["peak_mib"] for e in events
                               if e["event"] == "stage-closed"},
            "client_connect_max_s": max(c["connect_s"] for c in clients),
            "sent_per_client": int(np.mean(sent)), "received_per_client": int(np.mean(recv)),
            "plain_upload_bytes": 4 * d,
            # the server's own high-water mark (wait4's maxrss would carry this process's
            # peak across the exec)
            "server_peak_mib": next(e for e in events if e["event"] == "exit")["peak_mib"],
            "server_base_mib": base_rss / 1024,
            "simulation_s": sim_s, "ratio_to_simulation": done["seconds"] / sim_s,
            "sim_survivors": len(sim.survivors)}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--dims", default="10000,100000")
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ids", default="", help=argparse.SUPPRESS)
    ap.add_argument("--drops", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker_main(args)
        return
    if not args.json:
        print(f"{'n':>5} {'d':>8} {'surv':>4} {'round s':>8} {'sim s':>7} {'ratio':>6} "
              f"{'sent/client':>11} {'recv/client':>11} {'up x':>6} {'peak MiB':>8} "
              f"{'base MiB':>8} {'connect s':>9} {'adm/s':>6}  "
              "stages (s)")
    for d in progress((int(float(v)) for v in args.dims.split(",")), "dimensions"):
        runs = [run_network(args.clients, d, args.dropout, args.workers, args.seed + i)
                for i in range(args.repeat)]
        for r in runs:
            if args.json:
                print(json.dumps(r), flush=True)
                continue
            st = " ".join(f"{k[:6]} {v:.3f}" for k, v in r["stages_s"].items())
            print(f"{r['n']:>5} {r['d']:>8} {r['survivors']:>4} {r['round_s']:>8.3f} "
                  f"{r['simulation_s']:>7.3f} {r['ratio_to_simulation']:>6.2f} "
                  f"{r['sent_per_client']:>11,} {r['received_per_client']:>11,} "
                  f"{r['sent_per_client'] / r['plain_upload_bytes']:>6.3f} "
                  f"{r['server_peak_mib']:>8.1f} {r['server_base_mib']:>8.1f} "
                  f"{r['connect_s']:>9.2f} {r['admitted_per_s']:>6.0f}  {st}"
                  + ("" if r["correct"] else "  SUM WRONG"), flush=True)


if __name__ == "__main__":
    main()
