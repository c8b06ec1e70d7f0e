"""Bit-packed masked inputs: what packing and unpacking add to the client's masking and to the
server's summing, against the floors of bench_masking.py and bench_server.py.

For d in {1e5, 1e6} and b in {13, 15, 16, 18, 20, 24, 32}:

* client: masking one vector (one self mask and k = 8 pairwise masks, ``secagg.mask_input``
  at ring width b) and encoding its MaskedInput (``protocol.wire.encode``, which packs), against
  the masking floor of bench_masking.py (the raw AES-128-CTR keystream for (k + 1) d 4 bytes
  plus k + 1 vector additions): the ratios mask / floor and (mask + encode) / floor;
* server: decoding one MaskedInput (``protocol.wire.decode``, which unpacks) and adding it to
  the running sum, against the server's per-input floor (one addition of d words): the ratio
  (decode + add) / add, and the same for b = 32 words, which decode as a view.

Every time is the best of ``--repeat`` runs; ratios are taken within the same run.

Usage: python benchmarks/bench_packing.py [--json] [--repeat N] [--dims 1e5,1e6]
"""

from __future__ import annotations

import argparse
import json
import secrets

import numpy as np
from bench_masking import floor_time
from timing import best_of

from protocol.messages import MaskedInput
from protocol.wire import decode, encode, storage_dtype
from secagg import PairwiseMask, Ring, mask_input

WIDTHS = (13, 15, 16, 18, 20, 24, 32)
K = 8


def measure(d: int, bits: int, repeat: int, floor: float) -> dict:
    rng = np.random.default_rng(bits)
    ring = Ring(bits)
    x = rng.integers(0, 1 << bits, d, dtype=np.uint64).astype(storage_dtype(bits))
    pairs = [PairwiseMask(secrets.token_bytes(32), 1 if i % 2 else -1) for i in range(K)]
    seed = secrets.token_bytes(32)
    y = mask_input(x, ring=ring, self_seed=seed, pairwise=pairs)
    msg = MaskedInput(bytes(32), 0, 1, y, bits=bits)
    data = encode(msg)
    total = np.zeros(d, dtype=y.dtype)
    t_mask = best_of(lambda: mask_input(x, ring=ring, self_seed=seed, pairwise=pairs), repeat)
    t_encode = best_of(lambda: encode(msg), repeat)
    t_decode = best_of(lambda: decode(data), repeat)
    t_add = best_of(lambda: np.add(total, y, out=total), repeat)
    return {"d": d, "bits": bits, "bytes": len(data), "mask_s": t_mask, "encode_s": t_encode,
            "decode_s": t_decode, "add_s": t_add, "mask_floor_s": floor,
            "client_mask_ratio": t_mask / floor,
            "client_mask_and_pack_ratio": (t_mask + t_encode) / floor,
            "server_input_ratio": (t_decode + t_add) / t_add}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--dims", default="1e5,1e6")
    args = ap.parse_args()
    rows = []
    for d in (int(float(v)) for v in args.dims.split(",")):
        floor = floor_time(d, K, args.repeat)
        rows += [measure(d, b, args.repeat, floor) for b in WIDTHS]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("|        d |  b | bytes | mask / floor | (mask + pack) / floor | server (unpack + add) "
          "/ add |")
    print("|---------:|---:|------:|-------------:|----------------------:|"
          "---------------------------:|")
    for r in rows:
        print(f"| {r['d']:>8,} | {r['bits']:>2} | {r['bytes']:>9,} "
              f"| {r['client_mask_ratio']:>12.2f} | {r['client_mask_and_pack_ratio']:>21.2f} "
              f"| {r['server_input_ratio']:>27.2f} |")


if __name__ == "__main__":
    main()
