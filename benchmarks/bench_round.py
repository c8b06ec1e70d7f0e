"""Whole-round benchmark: client and server time against their floors.

For each (n, d, dropout): one in-process SecAgg+ round (b = 32, semi-honest, SecAgg+ graph
from the parameter finder) through :func:`protocol.simulate_round`, with dropouts spread over
the stages. Reported:

* client time: mean over surviving clients of the time inside their protocol calls;
* client floor: (|N(u) in U2| + 1) keystreams of d * 4 bytes plus as many d-vector additions
  (the PRG bytes a client must generate and add), from AES-128-CTR throughput and numpy
  addition time measured in the same run; and the same floor plus the client's two X25519
  agreements per neighbour (``x fl+kx``);
* server time: time inside the server's calls (summing, routing, reconstruction, unmasking);
* server floor: |U3| additions (summing masked inputs) plus, for every mask it must remove
  (|U3| self masks and one per (dropped, surviving neighbour) pair), a keystream and an
  addition;
* bytes per client: mean bytes a surviving client sent, against a plain b-bit upload.

Wire encoding and decoding are excluded from both times (they are transport, measured by the
network benchmark). Inputs are one broadcast row (no n * d allocation).

Scale rows (``--scale``): ``secagg simulate``'s round at n = 1000, 3000 and 10 000, d = 1e4,
5 % dropout, each in a fresh process (so its peak resident set is its own), inputs generated
per client (:class:`protocol.simulate.SeededInputs`). Reported: the whole round's wall time,
wall time per client, the process's peak RSS, and the ratio of the wall time per client to a
per-client floor measured in the same process: 2 |N(u)| X25519 agreements (one for the share
encryption key, one for the mask key) plus (|N(u)| + 1) keystreams and additions of d words.
A flat ratio means the round costs each client only what its own neighbourhood needs.

Usage: python benchmarks/bench_round.py [--json] [--quick] [--grid n,d,dropout;...]
       python benchmarks/bench_round.py --scale [--json] [--sizes 1000,3000,10000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from timing import progress

from protocol import RoundConfig, SeededInputs, ServerRound, SimulationResult, simulate_round
from protocol.simulate import spread_dropouts

FULL = [(n, d, p) for n in (100, 1000) for d in (10_000, 100_000, 1_000_000)
        for p in (0.0, 0.1, 0.3)] + [(500, 100_000, 0.1)]
QUICK = [(100, 10_000, 0.1), (100, 100_000, 0.1)]


def aes_seconds_per_byte() -> float:
    buf = bytearray(1 << 22)
    zeros = bytes(1 << 22)
    enc = Cipher(algorithms.AES(bytes(16)), modes.CTR(bytes(16))).encryptor()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(16):
            enc.update_into(zeros, buf)
        best = min(best, time.perf_counter() - t0)
    return best / (16 * len(zeros))


def add_seconds(d: int) -> float:
    a = np.ones(d, dtype=np.uint32)
    b = np.full(d, 3, dtype=np.uint32)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(10):
            np.add(a, b, out=a)
        best = min(best, (time.perf_counter() - t0) / 10)
    return best


class RecordingServer(ServerRound):
    """Keeps the graph and sets the floors need (the server already knows them)."""

    last: RecordingServer | None = None

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        RecordingServer.last = self


@dataclass
class Measured:
    """One timed round and what its floors need: the server's survivor sets, the number of
    pairwise masks it removed, the keystream and addition time for one d-vector."""

    result: SimulationResult
    server: RecordingServer
    row: np.ndarray  # every client's input
    wall: float
    key_pairs: int  # (dropped, surviving neighbour) pairs
    ks: float
    add: float

    @property
    def server_floor(self) -> float:
        u3 = self.server.u3
        return len(u3) * self.add + (len(u3) + self.key_pairs) * (self.ks + self.add)


def measured_round(n: int, d: int, dropout: float, seed: int = 0) -> Measured:
    """One semi-honest b = 32 round of n equal rows, ``dropout`` of the clients dropping
    (spread over the stages), timed, with the AES and addition figures for its floors."""
    rng = np.random.default_rng(seed)
    row = rng.integers(0, 2**32, size=d, dtype=np.uint64).astype(np.uint32)
    inputs = np.broadcast_to(row, (n, d))
    dropped = rng.choice(n, size=int(round(dropout * n)), replace=False).tolist()
    schedule = spread_dropouts(dropped, "semi-honest")
    config = RoundConfig(bits=32, dropout_rate=max(dropout, 0.05), corrupt_rate=0.05)
    t0 = time.perf_counter()
    result = simulate_round(inputs, config, schedule, server_factory=RecordingServer)
    wall = time.perf_counter() - t0
    server = RecordingServer.last
    u2, u3 = server.u2, frozenset(server.u3)
    key_pairs = sum(len(server.graph.neighbours(u) & u3) for u in u2 - u3)
    return Measured(result, server, row, wall, key_pairs, aes_seconds_per_byte() * d * 4,
                    add_seconds(d))


def run(n: int, d: int, dropout: float, seed: int = 0) -> dict:
    m = measured_round(n, d, dropout, seed)
    result, server, wall, ks, add = m.result, m.server, m.wall, m.ks, m.add
    u2, u3 = server.u2, frozenset(server.u3)
    survivors = sorted(u3)
    client_streams = np.mean([len(server.graph.neighbours(u) & u2) + 1 for u in survivors])
    client_floor = client_streams * (ks + add)
    # the same plus the client's 2 X25519 agreements per neighbour with keys (share
    # encryption and mask keys): work no implementation of the protocol can skip
    client_floor_kx = client_floor + 2 * (client_streams - 1) * x25519_seconds()
    server_floor = m.server_floor
    tr = result.transcript
    client_time = float(np.mean([tr.client_seconds(u) for u in survivors]))
    server_time = tr.server_seconds()
    sent = float(np.mean([tr.bytes_sent_by(u) for u in survivors]))
    return {
        "n": n, "d": d, "dropout": dropout, "k": result.params.neighbours,
        "t": result.params.threshold, "survivors": len(survivors),
        "client_s": client_time, "client_floor_s": client_floor,
        "client_ratio": client_time / client_floor,
        "client_floor_kx_s": client_floor_kx, "client_ratio_kx": client_time / client_floor_kx,
        "server_s": server_time, "server_floor_s": server_floor,
        "server_ratio": server_time / server_floor,
        "bytes_per_client": int(sent), "plain_bytes": d * 4, "expansion": sent / (d * 4),
        "round_wall_s": wall,
    }


def x25519_seconds() -> float:
    """One X25519 agreement, best of several batches."""
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate().public_key()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(200):
            a.exchange(b)
        best = min(best, (time.perf_counter() - t0) / 200)
    return best


def scale_row(n: int, workers: int = 1, d: int = 10_000, dropout: float = 0.05,
              seed: int = 1) -> dict:
    """One ``secagg simulate``-shaped round in this process, against its per-client floor."""
    config = RoundConfig(bits=32, dropout_rate=dropout, corrupt_rate=0.05)
    rng = np.random.default_rng(seed)
    dropped = rng.choice(n, size=int(round(dropout * n)), replace=False).tolist()
    inputs = SeededInputs(n, d, 32, seed)
    t0 = time.perf_counter()
    result = simulate_round(inputs, config, spread_dropouts(dropped, "semi-honest"), seed=seed,
                            server_factory=RecordingServer, workers=workers)
    wall = time.perf_counter() - t0
    correct = bool(np.array_equal(result.aggregate, inputs.sum_of(sorted(result.survivors))))
    server = RecordingServer.last
    k_mean = float(np.mean([len(server.graph.neighbours(u)) for u in range(n)]))
    per_client_floor = (2 * k_mean * x25519_seconds()
                        + (k_mean + 1) * (aes_seconds_per_byte() * d * 4 + add_seconds(d)))
    tr = result.transcript
    return {
        "n": n, "d": d, "dropout": dropout, "workers": workers, "k": result.params.neighbours,
        "t": result.params.threshold, "survivors": len(result.survivors), "correct": correct,
        "round_wall_s": wall, "per_client_s": wall / n,
        "per_client_floor_s": per_client_floor, "per_client_ratio": wall / n / per_client_floor,
        "server_s": tr.server_seconds(),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def scale(sizes: list[int], workers: int, as_json: bool) -> None:
    """Each scale row in its own process, so each peak RSS is that round's (with
    ``workers`` > 1, the server process's; each worker's is reported by the OS apart)."""
    if not as_json:
        print(f"{'n':>6} {'k':>4} {'t':>3} {'round s':>9} {'s/client':>9} {'x floor':>8} "
              f"{'server s':>9} {'peak RSS':>9} correct")
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--scale-row", str(n), "--workers",
                              str(workers)], check=True, capture_output=True, text=True).stdout
        r = json.loads(out)
        if as_json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{n:>6} {r['k']:>4} {r['t']:>3} {r['round_wall_s']:>9.1f} "
                  f"{r['per_client_s']:>9.4f} {r['per_client_ratio']:>8.2f} "
                  f"{r['server_s']:>9.2f} {r['peak_rss_bytes'] / 2**30:>7.2f} G "
                  f"{r['correct']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="two small rounds (a smoke run)")
    ap.add_argument("--grid", help="semicolon-separated n,d,dropout triples")
    ap.add_argument("--scale", action="store_true",
                    help="the scale rows (n = 1e3, 3e3, 1e4 at d = 1e4), one process each")
    ap.add_argument("--sizes", default="1000,3000,10000", help="cohort sizes for --scale")
    ap.add_argument("--workers", type=int, default=1,
                    help="client processes for the --scale rounds (simulate_round(workers=))")
    ap.add_argument("--scale-row", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scale_row:
        print(json.dumps(scale_row(args.scale_row, args.workers)))
        return
    if args.scale:
        scale([int(x) for x in args.sizes.split(",")], args.workers, args.json)
        return
    grid = QUICK if args.quick else FULL
    if args.grid:
        grid = [(int(a), int(float(b)), float(c))
                for a, b, c in (x.split(",") for x in args.grid.split(";"))]
    if not args.json:
        print(f"{'n':>5} {'d':>8} {'drop':>5} {'k':>4} {'t':>3} {'client s':>9} {'x floor':>8} "
              f"{'x fl+kx':>8} {'server s':>9} {'x floor':>8} {'bytes/client':>13} "
              f"{'expansion':>9}")
    for n, d, p in progress(grid, "rounds"):
        r = run(n, d, p)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{n:>5} {d:>8} {p:>5.2f} {r['k']:>4} {r['t']:>3} {r['client_s']:>9.4f} "
                  f"{r['client_ratio']:>8.2f} {r['client_ratio_kx']:>8.2f} "
                  f"{r['server_s']:>9.3f} {r['server_ratio']:>8.2f} "
                  f"{r['bytes_per_client']:>13,} {r['expansion']:>9.4f}", flush=True)


if __name__ == "__main__":
    main()
