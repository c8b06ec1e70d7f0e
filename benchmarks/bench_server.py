"""Server benchmark: the server's time in a whole round against its floor, on one and two cores.

For each (d, dropout) at n = 1000 (by default): one in-process SecAgg+ round (b = 32,
semi-honest, (k, t) from the parameter finder, dropouts spread over the stages) through
:func:`protocol.simulate_round`, exactly as ``bench_round.py`` runs it, once per worker count
given to ``--threads`` (the mask-removal workers of
:func:`protocol.stages.unmasking.set_mask_workers`). Reported per round:

* server time: time inside the server's calls (all stages; wire coding excluded), and the
  part of it spent in Unmasking (accepting the responses, reconstruction, mask removal);
* server floor, as ``bench_round.py`` defines it and measured in the same run: |U3| additions
  (summing masked inputs) plus, for every mask removed (|U3| self masks and one per
  (dropped, surviving neighbour) pair), one AES-128-CTR keystream of d * 4 bytes and one
  addition, all on one core;
* the ratio server / floor. With two workers the mask removal may run below its one-core
  floor, so the two-core ratio is against the same one-core floor.

The machine is shared, so timings are noisy: compare ratios, each against the floor measured
in the same run, and repeat (``--repeat``) to see the spread.

Usage::

    python benchmarks/bench_server.py                      # n = 1000, d in {1e5, 1e6},
                                                           # dropout in {0, 0.1, 0.3}, 1 and 2
    python benchmarks/bench_server.py --grid "1000,1e5,0.1" --threads 1,2 --repeat 3
    python benchmarks/bench_server.py --quick --json       # n = 200, d = 1e4 (a smoke run)
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from bench_round import measured_round
from timing import progress

from protocol.stages.unmasking import set_mask_workers

FULL = [(1000, d, p) for d in (100_000, 1_000_000) for p in (0.0, 0.1, 0.3)]
QUICK = [(200, 10_000, 0.1)]


def run(n: int, d: int, dropout: float, threads: int, seed: int = 0) -> dict:
    """One round; the server's time (all stages and Unmasking alone), its floor, the ratio."""
    set_mask_workers(threads)
    m = measured_round(n, d, dropout, seed)
    result, row, u3, key_pairs = m.result, m.row, m.server.u3, m.key_pairs
    floor = m.server_floor
    tr = result.transcript
    total = tr.server_seconds()
    unmask = tr.stages["unmasking"].server.seconds
    want = (row.astype(np.uint64) * len(u3) % (1 << 32)).astype(np.uint32)
    if not np.array_equal(result.aggregate, want):
        raise SystemExit(f"wrong aggregate at n={n}, d={d}, dropout={dropout}")
    return {"n": n, "d": d, "dropout": dropout, "threads": threads,
            "k": result.params.neighbours, "t": result.params.threshold,
            "survivors": len(u3), "masks_removed": len(u3) + key_pairs,
            "server_s": total, "unmasking_s": unmask, "other_stages_s": total - unmask,
            "floor_s": floor, "ratio": total / floor, "round_wall_s": m.wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="one JSON object per round")
    ap.add_argument("--quick", action="store_true", help="one small round (a smoke run)")
    ap.add_argument("--grid", help="semicolon-separated n,d,dropout triples")
    ap.add_argument("--threads", default="1,2", help="comma-separated worker counts (1,2)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds per grid point and count")
    args = ap.parse_args()
    grid = QUICK if args.quick else FULL
    if args.grid:
        grid = [(int(a), int(float(b)), float(c))
                for a, b, c in (x.split(",") for x in args.grid.split(";"))]
    threads = [int(x) for x in args.threads.split(",")]
    if not args.json:
        print(f"{'n':>5} {'d':>8} {'drop':>5} {'k':>3} {'t':>3} {'thr':>3} {'server s':>9} "
              f"{'unmask s':>9} {'other s':>8} {'floor s':>8} {'ratio':>6}")
    for n, d, p in progress(grid, "rounds"):
        for _ in range(args.repeat):
            for w in threads:
                r = run(n, d, p, w)
                if args.json:
                    print(json.dumps(r), flush=True)
                else:
                    print(f"{n:>5} {d:>8} {p:>5.2f} {r['k']:>3} {r['t']:>3} {w:>3} "
                          f"{r['server_s']:>9.3f} {r['unmasking_s']:>9.3f} "
                          f"{r['other_stages_s']:>8.3f} {r['floor_s']:>8.3f} "
                          f"{r['ratio']:>6.2f}", flush=True)
    set_mask_workers(1)


if __name__ == "__main__":
    main()
