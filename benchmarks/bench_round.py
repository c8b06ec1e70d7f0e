"""Whole-round benchmark: client and server time against their floors.

For each (n, d, dropout): one in-process SecAgg+ round (b = 32, semi-honest, SecAgg+ graph
from the parameter finder) through :func:`protocol.simulate_round`, with dropouts spread over
the stages. Reported:

* client time: mean over surviving clients of the time inside their protocol calls;
* client floor: (|N(u) in U2| + 1) keystreams of d * 4 bytes plus as many d-vector additions
  (the PRG bytes a client must generate and add), from AES-128-CTR throughput and numpy
  addition time measured in the same run;
* server time: time inside the server's calls (summing, routing, reconstruction, unmasking);
* server floor: |U3| additions (summing masked inputs) plus, for every mask it must remove
  (|U3| self masks and one per (dropped, surviving neighbour) pair), a keystream and an
  addition;
* bytes per client: mean bytes a surviving client sent, against a plain b-bit upload.

Wire encoding and decoding are excluded from both times (they are transport, measured by the
network benchmark). Inputs are one broadcast row (no n * d allocation).

Usage: python benchmarks/bench_round.py [--json] [--quick] [--grid n,d,dropout;...]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocol import RoundConfig, ServerRound, simulate_round
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


def run(n: int, d: int, dropout: float, seed: int = 0) -> dict:
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
    ks, add = aes_seconds_per_byte() * d * 4, add_seconds(d)
    survivors = sorted(u3)
    client_streams = np.mean([len(server.graph.neighbours(u) & u2) + 1 for u in survivors])
    client_floor = client_streams * (ks + add)
    server_floor = len(u3) * add + (len(u3) + key_pairs) * (ks + add)
    tr = result.transcript
    client_time = float(np.mean([tr.client_seconds(u) for u in survivors]))
    server_time = tr.server_seconds()
    sent = float(np.mean([tr.bytes_sent_by(u) for u in survivors]))
    return {
        "n": n, "d": d, "dropout": dropout, "k": result.params.neighbours,
        "t": result.params.threshold, "survivors": len(survivors),
        "client_s": client_time, "client_floor_s": client_floor,
        "client_ratio": client_time / client_floor,
        "server_s": server_time, "server_floor_s": server_floor,
        "server_ratio": server_time / server_floor,
        "bytes_per_client": int(sent), "plain_bytes": d * 4, "expansion": sent / (d * 4),
        "round_wall_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="two small rounds (a smoke run)")
    ap.add_argument("--grid", help="semicolon-separated n,d,dropout triples")
    args = ap.parse_args()
    grid = QUICK if args.quick else FULL
    if args.grid:
        grid = [(int(a), int(float(b)), float(c))
                for a, b, c in (x.split(",") for x in args.grid.split(";"))]
    if not args.json:
        print(f"{'n':>5} {'d':>8} {'drop':>5} {'k':>4} {'t':>3} {'client s':>9} {'x floor':>8} "
              f"{'server s':>9} {'x floor':>8} {'bytes/client':>13} {'expansion':>9}")
    for n, d, p in grid:
        r = run(n, d, p)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{n:>5} {d:>8} {p:>5.2f} {r['k']:>4} {r['t']:>3} {r['client_s']:>9.4f} "
                  f"{r['client_ratio']:>8.2f} {r['server_s']:>9.3f} {r['server_ratio']:>8.2f} "
                  f"{r['bytes_per_client']:>13,} {r['expansion']:>9.4f}", flush=True)


if __name__ == "__main__":
    main()
