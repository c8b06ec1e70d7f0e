"""Each node's model delta and example count, known from its partition id alone."""

from __future__ import annotations

import numpy as np

SHAPES = ((6, 5), (7,))
# The secure sum's encoding (protocol.real_sum.SumConfig), the server's and every node's: a
# clip norm near the deltas' (norm ~0.06) and a weight cap near the example counts keep the
# fixed-point precision fine (~1e-8 on the mean).
SUM = {"clip_norm": 1.0, "weighted": True, "max_weight": 100.0}


def initial() -> list[np.ndarray]:
    return [np.zeros(s, dtype=np.float32) for s in SHAPES]


def delta_of(pid: int, rnd: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1000 * rnd + pid)
    return [(0.01 * rng.standard_normal(s)).astype(np.float32) for s in SHAPES]


def examples_of(pid: int) -> int:
    return 10 * (pid + 1)


def expected_update(pids, rnd: int) -> np.ndarray:
    """The FedAvg (example-weighted) mean of the deltas of ``pids``, flattened."""
    pids = sorted(pids)
    w = np.array([examples_of(p) for p in pids], np.float64)
    flat = np.stack([np.concatenate([d.ravel() for d in delta_of(p, rnd)]).astype(np.float64)
                     for p in pids])
    return (w[:, None] * flat).sum(0) / w.sum()
