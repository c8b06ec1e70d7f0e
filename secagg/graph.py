"""The SecAgg+ neighbour graph: a Harary graph H(k, n) over a publicly shuffled ordering.

Bell et al. (CCS 2020), section 3 ("k-regular communication graph"), and the Harary-graph
instantiation used in production SecAgg+ deployments: place the n clients on a ring in a
uniformly random order, and connect each to the k/2 clients on either side (k even). The
order is a Fisher-Yates shuffle driven by AES-CTR output from a public 32-byte seed, with
rejection sampling so every permutation is exactly equally likely. The security analysis
(:mod:`secagg.params`) assumes the seed is unpredictable when clients are corrupted, so the
seed should be fixed only after the cohort is (for example derived from the session id).

When k >= n - 1 the graph is complete: every client neighbours every other (original SecAgg).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .encoding import require_bytes, require_uint
from .errors import GraphParameterError, SecAggTypeError
from .prg import MaskStream
from .ring import Ring

ORDERING_PURPOSE = "graph-ordering"


def public_shuffle(items: Sequence[int], seed: bytes) -> tuple[int, ...]:
    """A uniformly random permutation of distinct client ids determined by the public ``seed``."""
    out = list(_check_clients(items, minimum=0))
    n = len(out)
    if n > 1:
        # Fast path: draw the n - 1 words the sequential algorithm would use when it rejects
        # none (probability about 1 - n / 2^64), and do the swaps with the same j values.
        stream = MaskStream(seed, ORDERING_PURPOSE, Ring(64))
        words = stream.fill(np.empty(n - 1, dtype=np.uint64))
        bounds = np.arange(n, 1, -1, dtype=np.uint64)  # i + 1 for i = n - 1 .. 1
        rem = (np.uint64(0) - bounds) % bounds  # 2^64 mod (i + 1)
        if bool(np.all((rem == 0) | (words < np.uint64(0) - rem))):
            js = (words % bounds).tolist()
            for i, j in zip(range(n - 1, 0, -1), js, strict=True):
                out[i], out[j] = out[j], out[i]
            return tuple(out)
    return _sequential_shuffle(out, seed)


def _sequential_shuffle(out: list[int], seed: bytes) -> tuple[int, ...]:
    """Fisher-Yates, one 64-bit word at a time, rejecting words in the biased top range."""
    stream = MaskStream(seed, ORDERING_PURPOSE, Ring(64))
    buf = np.empty(256, dtype=np.uint64)
    pos = len(buf)

    def next_u64() -> int:
        nonlocal pos
        if pos == len(buf):
            stream.fill(buf)
            pos = 0
        pos += 1
        return int(buf[pos - 1])

    for i in range(len(out) - 1, 0, -1):
        bound = i + 1
        limit = (1 << 64) - (1 << 64) % bound  # reject the biased top so j is exactly uniform
        while True:
            r = next_u64()
            if r < limit:
                break
        j = r % bound
        out[i], out[j] = out[j], out[i]
    return tuple(out)


def _check_clients(clients: Iterable[int], minimum: int = 2) -> tuple[int, ...]:
    if isinstance(clients, bytes | str) or not isinstance(clients, Iterable):
        raise SecAggTypeError("clients must be an iterable of int ids")
    ids = tuple(clients)
    if not (ids and all(type(c) is int for c in ids) and min(ids) >= 0 and max(ids) < 1 << 64):
        for c in ids:  # slow path: name the offending id
            require_uint(c, "client id")
    if len(set(ids)) != len(ids):
        raise GraphParameterError("client ids must be distinct")
    if len(ids) < minimum:
        raise GraphParameterError(f"a graph needs at least {minimum} clients, got {len(ids)}")
    return ids


@dataclass(frozen=True)
class NeighbourGraph:
    """An undirected neighbour graph over client ids: H(k, n) on the ring ``ordering``.

    Neighbourhoods are computed on demand (O(k) each) and cached, so a client that needs only
    its own neighbours does not pay O(n k) for the whole graph.
    """

    ordering: tuple[int, ...]
    k: int
    _position: dict[int, int] = field(repr=False, compare=False)
    clients: frozenset[int] = field(init=False, repr=False, compare=False)
    _cache: dict[int, frozenset[int]] = field(repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "clients", frozenset(self.ordering))

    @property
    def n(self) -> int:
        return len(self.ordering)

    @property
    def complete(self) -> bool:
        return self.k == self.n - 1

    def neighbours(self, u: int) -> frozenset[int]:
        """N(u), not including u. Unknown ids raise :class:`GraphParameterError`."""
        cached = self._cache.get(u)
        if cached is not None:
            return cached
        i = self._position.get(u) if isinstance(u, int) and not isinstance(u, bool) else None
        if i is None:
            raise GraphParameterError(f"client {u} is not in the graph")
        if self.complete:
            nb = frozenset(self.ordering[:i] + self.ordering[i + 1 :])
        else:
            n, half = self.n, self.k // 2
            nb = frozenset(self.ordering[(i + j) % n] for j in range(-half, half + 1) if j)
        self._cache[u] = nb
        return nb

    def are_neighbours(self, u: int, v: int) -> bool:
        return v in self.neighbours(u)


def _graph(order: tuple[int, ...], k: int) -> NeighbourGraph:
    return NeighbourGraph(order, k, {u: i for i, u in enumerate(order)})


def complete_graph(clients: Iterable[int]) -> NeighbourGraph:
    """The complete graph: the original SecAgg of Bonawitz et al. (CCS 2017)."""
    ids = _check_clients(clients)
    return _graph(tuple(sorted(ids)), len(ids) - 1)


def harary_graph(clients: Iterable[int], k: int, *, seed: bytes) -> NeighbourGraph:
    """H(k, n) over the clients shuffled by ``seed``; complete when k >= n - 1.

    The graph is public and a pure function of its arguments, so the last few graphs built in
    this process are kept and shared: every client of a cohort simulated in one process (and a
    server and client in one process) derive the same graph once, not once each.
    """
    if type(clients) is tuple and type(k) is int and type(seed) is bytes:
        return _shared_harary(clients, k, seed)
    return _harary(clients, k, seed)


@lru_cache(maxsize=4)
def _shared_harary(clients: tuple[int, ...], k: int, seed: bytes) -> NeighbourGraph:
    return _harary(clients, k, seed)


def _harary(clients: Iterable[int], k: int, seed: bytes) -> NeighbourGraph:
    ids = _check_clients(clients)
    require_bytes(seed, "graph ordering seed", min_len=32, max_len=32)
    if isinstance(k, bool) or not isinstance(k, int):
        raise SecAggTypeError("k must be an int")
    n = len(ids)
    if k >= n - 1:
        return complete_graph(ids)
    if k < 2 or k % 2:
        raise GraphParameterError(f"Harary degree k must be even and at least 2, got {k}")
    return _graph(public_shuffle(sorted(ids), seed), k)
