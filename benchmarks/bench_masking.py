"""Masking throughput against its floor, and Shamir costs.

For d in {1e5, 1e6, 1e7} and k in {8, 32}: the time to mask one client's vector (one self mask
and k pairwise masks, b = 32), the floor measured in the same run - the raw AES-128-CTR
keystream for the same (k + 1) * d * 4 bytes produced in 1 MiB calls, plus (k + 1) in-place
numpy additions of a d-vector - and their ratio. Peak memory during masking is measured with
tracemalloc (numpy reports its buffers to it) and given as a multiple of the vector's size.
Also: Shamir split and combine of a 32-byte secret for 100 neighbours (t = 51).

Usage: python benchmarks/bench_masking.py [--json] [--repeat N] [--dims 1e5,1e6,1e7]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tracemalloc

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from timing import best_of

from secagg import PairwiseMask, Ring, combine, mask_input, split


def floor_time(d: int, k: int, repeat: int) -> float:
    """Raw keystream for (k+1)*d*4 bytes plus (k+1) vector additions: the work masking must do."""
    nbytes = (k + 1) * d * 4
    piece = 1 << 20
    zeros = bytes(piece)
    buf = bytearray(piece)
    x = np.ones(d, dtype=np.uint32)
    y = np.full(d, 7, dtype=np.uint32)

    def keystream():
        enc = Cipher(algorithms.AES(bytes(16)), modes.CTR(bytes(16))).encryptor()
        left = nbytes
        mv = memoryview(zeros)
        while left > 0:
            n = min(piece, left)
            enc.update_into(mv[:n], buf)
            left -= n

    def additions():
        for _ in range(k + 1):
            np.add(x, y, out=x)

    return best_of(keystream, repeat) + best_of(additions, repeat)


def mask_time(d: int, k: int, repeat: int) -> tuple[float, float]:
    ring = Ring(32)
    x = np.random.default_rng(0).integers(0, 2**32, d, dtype=np.uint64).astype(np.uint32)
    pairs = [PairwiseMask(secrets.token_bytes(32), 1 if i % 2 else -1) for i in range(k)]
    seed = secrets.token_bytes(32)
    t = best_of(lambda: mask_input(x, ring=ring, self_seed=seed, pairwise=pairs), repeat)
    tracemalloc.start()
    tracemalloc.reset_peak()
    mask_input(x, ring=ring, self_seed=seed, pairwise=pairs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return t, peak / x.nbytes


def shamir_times(neighbours: int, repeat: int) -> tuple[float, float]:
    t = neighbours // 2 + 1
    secret = secrets.token_bytes(32)
    shares = split(secret, threshold=t, n=neighbours)
    ts = best_of(lambda: split(secret, threshold=t, n=neighbours), repeat)
    tc = best_of(lambda: combine(shares[:t]), repeat)
    return ts, tc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dims", default="1e5,1e6,1e7")
    args = ap.parse_args()
    rows = []
    for d in [int(float(s)) for s in args.dims.split(",")]:
        for k in (8, 32):
            rep = max(1, args.repeat if d <= 1_000_000 else args.repeat // 2)
            ratios, masks, floors = [], [], []
            for _ in range(3):  # interleave measurement and floor to share machine noise
                f = floor_time(d, k, rep)
                m, mem = mask_time(d, k, rep)
                floors.append(f)
                masks.append(m)
                ratios.append(m / f)
            rows.append({"bench": "mask", "d": d, "k": k, "mask_s": min(masks),
                         "floor_s": min(floors), "ratio": statistics.median(ratios),
                         "peak_mem_x_vector": round(mem, 3)})
    ts, tc = shamir_times(100, args.repeat)
    rows.append({"bench": "shamir", "neighbours": 100, "threshold": 51,
                 "split_s": ts, "combine_s": tc})
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return
    print(f"{'d':>10} {'k':>3} {'mask (s)':>10} {'floor (s)':>10} {'ratio':>6} {'peak mem':>9}")
    for r in rows[:-1]:
        print(f"{r['d']:>10} {r['k']:>3} {r['mask_s']:>10.4f} {r['floor_s']:>10.4f} "
              f"{r['ratio']:>6.2f} {r['peak_mem_x_vector']:>8.2f}x")
    s = rows[-1]
    print(f"Shamir, 100 neighbours, t = 51: split {s['split_s'] * 1e3:.2f} ms, "
          f"combine {s['combine_s'] * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
