"""Noise-sampler throughput, and the DP encoding's cost against its floor.

Sampler: samples per second on one core for Skellam and the discrete Gaussian at several
variances (each table built and cached before timing), and the ratio of the sampler's time to
its floor measured in the same run: the raw AES-256-CTR keystream for the same 16 bytes per
sample (two 64-bit words), produced in the same 1 Mi-sample calls.

Encoding: a client's whole DP step at d (clip, rotate, scale, conditional rounding, noise,
wrap) against the same floor for its noise words plus one d-element numpy pass. A second
ratio uses the floor of every keystream byte the step must draw: 24 bytes per coordinate (16 for
the noise, 8 for the first rounding attempt) plus the same pass.

Every ratio is the median of three interleaved (floor, measurement) pairs, each the best of
``--repeat`` runs, so the two share the machine's noise; the times shown are the best of all.
BLAS runs on one thread (OPENBLAS_NUM_THREADS=1 unless set), like the floor: on a core shared
with other work a second BLAS thread makes a product much slower, not faster.

Usage: python benchmarks/bench_noise.py [--json] [--repeat N] [--samples N] [--dims 1e4,...]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402
from timing import best_of  # noqa: E402

from dp.encoding import choose_encoding, encode, to_ring  # noqa: E402
from dp.noise import noise_table  # noqa: E402
from dp.randomness import CryptoRandom  # noqa: E402
from dp.update import clip  # noqa: E402

CHUNK = 1 << 20
PAIRS = 3


def keystream_floor(nbytes: int, repeat: int) -> float:
    zeros = bytes(16 * CHUNK)
    buf = bytearray(16 * CHUNK)

    def run():
        enc = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(bytes(16))).encryptor()
        left = nbytes
        mv = memoryview(zeros)
        while left > 0:
            n = min(len(zeros), left)
            enc.update_into(mv[:n], buf)
            left -= n

    return best_of(run, repeat)


def interleaved(measure, *floors) -> tuple[float, list[float], list[float]]:
    """(best time, best of each floor, median ratio to each floor) over PAIRS interleaved
    rounds of (floors, measure)."""
    times, fs = [], [[] for _ in floors]
    for _ in range(PAIRS):
        for f, out in zip(floors, fs, strict=True):
            out.append(f())
        times.append(measure())
    ratios = [statistics.median(t / f for t, f in zip(times, out, strict=True)) for out in fs]
    return min(times), [min(out) for out in fs], ratios


def bench_sampler(samples: int, repeat: int) -> list[dict]:
    rows = []
    for mech, var in [("skellam", 1.0), ("skellam", 1e2), ("skellam", 1e4), ("skellam", 1e6),
                      ("skellam", 1e8), ("discrete-gaussian", 1e2), ("discrete-gaussian", 1e4),
                      ("discrete-gaussian", 1e6)]:
        t0 = time.perf_counter()
        table = noise_table(mech, var)
        build = time.perf_counter() - t0
        rng = CryptoRandom()
        secs, (floor,), (ratio,) = interleaved(
            lambda t=table, r=rng: best_of(lambda: t.sample(samples, r), repeat),
            lambda: keystream_floor(16 * samples, repeat))
        rows.append({"bench": "sampler", "mechanism": mech, "variance": var,
                     "table_entries": 2 * table.k + 1,
                     "guide_bits": getattr(table, "guide_bits", None),
                     "build_s": round(build, 4), "samples": samples, "seconds": secs,
                     "msamples_per_s": round(samples / secs / 1e6, 2),
                     "floor_s": floor, "ratio_to_aes_floor": round(ratio, 2),
                     "tv_per_sample": table.tv_bound})
    return rows


def bench_encode(dims: list[int], repeat: int) -> list[dict]:
    rows = []
    for d in dims:
        plan, mu = choose_encoding(clients=100, clip_norm=1.0, dim=d, noise_multiplier=1.0,
                                   min_clients=90, bits=32)
        x = np.random.default_rng(0).normal(size=d)
        table = noise_table("skellam", mu)
        seed = os.urandom(32)

        def step(x=x, plan=plan, table=table, seed=seed):
            rng = CryptoRandom()
            v, _ = clip(x, 1.0)
            z = encode(v, plan, seed, rng)
            z += table.sample(z.size, rng)
            return to_ring(z, plan.bits)

        dp_ = plan.padded_dim
        y = np.ones(dp_)

        def floor(nbytes: int, y=y) -> float:
            return keystream_floor(nbytes, repeat) + best_of(lambda: y * 2.0, repeat)

        secs, (floor16, floor24), (ratio16, ratio24) = interleaved(
            lambda s=step: best_of(s, repeat), lambda n=dp_: floor(16 * n),
            lambda n=dp_: floor(24 * n))
        rows.append({"bench": "encode", "d": d, "padded_d": dp_, "gamma": plan.gamma,
                     "local_variance": round(mu, 1), "seconds": secs, "floor_s": floor16,
                     "ratio": round(ratio16, 2), "floor24_s": floor24,
                     "ratio24": round(ratio24, 2)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--json", action="store_true")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--samples", type=int, default=4_000_000)
    p.add_argument("--dims", default="1e4,1e5,1e6")
    a = p.parse_args()
    dims = [int(float(x)) for x in a.dims.split(",")]
    rows = bench_sampler(a.samples, a.repeat) + bench_encode(dims, a.repeat)
    if a.json:
        for r in rows:
            print(json.dumps(r))
        return
    print(f"{'mechanism':<18} {'variance':>9} {'entries':>8} {'Msamples/s':>10} "
          f"{'x AES floor':>11} {'TV/sample':>10}")
    for r in rows:
        if r["bench"] == "sampler":
            print(f"{r['mechanism']:<18} {r['variance']:>9.0e} {r['table_entries']:>8} "
                  f"{r['msamples_per_s']:>10.2f} {r['ratio_to_aes_floor']:>11.2f} "
                  f"{r['tv_per_sample']:>10.1e}")
    print(f"\n{'d':>9} {'padded':>9} {'gamma':>7} {'seconds':>9} {'floor (s)':>10} "
          f"{'ratio':>6} {'24 B floor':>10} {'ratio':>6}")
    for r in rows:
        if r["bench"] == "encode":
            print(f"{r['d']:>9} {r['padded_d']:>9} {r['gamma']:>7g} {r['seconds']:>9.4f} "
                  f"{r['floor_s']:>10.4f} {r['ratio']:>6.2f} {r['floor24_s']:>10.4f} "
                  f"{r['ratio24']:>6.2f}")


if __name__ == "__main__":
    main()
