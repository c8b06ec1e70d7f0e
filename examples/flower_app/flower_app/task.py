"""The learning task: softmax regression on scikit-learn's bundled digits (no download).

The training digits are split over the nodes with label skew: for every class, the share of
each node is drawn from Dirichlet(alpha), seeded, so every process of a run computes the same
partition from (partition id, number of partitions, seed, alpha) alone.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

torch.set_num_threads(1)  # several ClientApps share two cores


@lru_cache(maxsize=4)
def _split(seed: int):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y.astype(np.int64), test_size=0.25, random_state=seed,
                            stratify=y)


def test_set(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The held-out digits the server evaluates on (no node holds them)."""
    _, xte, _, yte = _split(seed)
    return xte, yte


@lru_cache(maxsize=8)
def _shards(num_partitions: int, seed: int, alpha: float) -> tuple[np.ndarray, ...]:
    _, _, ytr, _ = _split(seed)
    rng = np.random.default_rng(seed)
    shards: list[list[int]] = [[] for _ in range(num_partitions)]
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(ytr == c))
        cuts = (np.cumsum(rng.dirichlet([alpha] * num_partitions)) * len(idx)).astype(int)
        for p, part in enumerate(np.split(idx, cuts[:-1])):
            shards[p].extend(part.tolist())
    for p in range(num_partitions):  # every node holds at least a few digits
        if len(shards[p]) < 8:
            shards[p].extend(rng.choice(len(ytr), 8, replace=False).tolist())
    return tuple(np.array(sorted(s), dtype=np.int64) for s in shards)


def partition(pid: int, num_partitions: int, seed: int, alpha: float):
    """Node ``pid``'s training digits (x, y)."""
    if not 0 <= pid < num_partitions:
        raise ValueError(f"partition id {pid} is not in [0, {num_partitions})")
    xtr, _, ytr, _ = _split(seed)
    idx = _shards(num_partitions, seed, alpha)[pid]
    return xtr[idx], ytr[idx]


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(64, 10)


def get_weights(model: torch.nn.Module) -> list[np.ndarray]:
    return [p.detach().cpu().numpy().copy() for p in model.parameters()]


def set_weights(model: torch.nn.Module, arrays) -> None:
    with torch.no_grad():
        for p, a in zip(model.parameters(), arrays, strict=True):
            p.copy_(torch.as_tensor(np.asarray(a), dtype=p.dtype).reshape(p.shape))


def train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float,
          batch_size: int, seed: int) -> float:
    """Plain SGD on the node's digits; returns the mean loss of the last epoch."""
    gen = torch.Generator().manual_seed(seed)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    last = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(xs), generator=gen)
        total = 0.0
        for i in range(0, len(xs), batch_size):
            b = order[i:i + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(xs[b]), ys[b])
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        last = total / max(len(xs), 1)
    return last


def evaluate(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean cross-entropy, accuracy)."""
    with torch.no_grad():
        out = model(torch.from_numpy(x))
        loss = float(torch.nn.functional.cross_entropy(out, torch.from_numpy(y)))
        acc = float((out.argmax(1) == torch.from_numpy(y)).float().mean())
    return loss, acc
