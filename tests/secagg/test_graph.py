"""SecAgg+ Harary graph: structure, determinism, uniform shuffle."""

from __future__ import annotations

import collections

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secagg import GraphParameterError, complete_graph, harary_graph, public_shuffle


@given(n=st.integers(3, 60), data=st.data())
def test_harary_structure(n, data):
    k = data.draw(st.integers(1, n // 2)) * 2
    ids = data.draw(st.lists(st.integers(0, 2**32), min_size=n, max_size=n, unique=True))
    g = harary_graph(ids, k, seed=bytes(32))
    kk = min(k, n - 1)
    assert g.clients == frozenset(ids) and g.k == kk
    for u in ids:
        nb = g.neighbours(u)
        assert u not in nb and len(nb) == kk
        for v in nb:
            assert u in g.neighbours(v)  # undirected
    # ring structure: consecutive positions in the ordering are neighbours
    order = g.ordering
    for i in range(n):
        assert order[(i + 1) % n] in g.neighbours(order[i])


def test_deterministic_by_seed_and_independent_of_input_order():
    ids = list(range(50))
    a = harary_graph(ids, 6, seed=bytes(32))
    b = harary_graph(list(reversed(ids)), 6, seed=bytes(32))
    c = harary_graph(ids, 6, seed=bytes([1]) * 32)
    assert a.ordering == b.ordering
    assert a.ordering != c.ordering


def test_shuffle_is_uniform_on_small_sets():
    counts = collections.Counter(public_shuffle([0, 1, 2], bytes([i % 256, i // 256]) + bytes(30))
                                 for i in range(3000))
    assert len(counts) == 6
    assert all(400 < c < 600 for c in counts.values())  # 500 expected, ~5 sigma band


def test_shuffle_rejects_the_biased_top(monkeypatch):
    """For 3 items the first draw uses bound 3 and limit 2^64 - 1 (2^64 mod 3 = 1): the value
    2^64 - 1 must be rejected. Taking it would give j = 0; the next value, 4, gives j = 1."""
    import numpy as np

    import secagg.graph as graph_mod

    class FakeStream:
        def __init__(self, *args, **kwargs):
            pass

        def fill(self, out):
            vals = ([2**64 - 1, 4, 7] + [0] * len(out))[: len(out)]
            out[:] = np.array(vals, dtype=np.uint64)
            return out

    monkeypatch.setattr(graph_mod, "MaskStream", FakeStream)
    # i = 2: reject 2^64-1, j = 4 % 3 = 1 -> swap positions 2 and 1 -> [0, 2, 1]
    # i = 1: j = 7 % 2 = 1 -> no swap. (The vectorised fast path sees the rejection and hands
    # over to the sequential algorithm, which must give exactly this.)
    assert graph_mod.public_shuffle([0, 1, 2], bytes(32)) == (0, 2, 1)


def test_fast_and_sequential_shuffles_agree():
    import secagg.graph as graph_mod

    for n in (2, 3, 10, 257, 1000):
        for seed in (bytes(32), bytes([7]) * 32):
            assert graph_mod.public_shuffle(list(range(n)), seed) == \
                graph_mod._sequential_shuffle(list(range(n)), seed)


def test_complete_graph():
    g = complete_graph([5, 9, 11, 2])
    assert g.complete and g.k == 3 and g.neighbours(5) == {9, 11, 2}
    assert harary_graph([1, 2, 3, 4], 4, seed=bytes(32)).complete


def test_refusals():
    with pytest.raises(GraphParameterError, match="even"):
        harary_graph(range(10), 3, seed=bytes(32))
    with pytest.raises(GraphParameterError, match="distinct"):
        harary_graph([1, 1, 2, 3], 2, seed=bytes(32))
    with pytest.raises(GraphParameterError, match="at least 2"):
        complete_graph([1])
    with pytest.raises(GraphParameterError, match="not in the graph"):
        complete_graph([1, 2]).neighbours(3)
    from secagg import EncodingError, SecAggTypeError

    with pytest.raises(SecAggTypeError):
        harary_graph(range(4), 4, seed=None)  # refused even when the graph is complete
    with pytest.raises(EncodingError):
        harary_graph(range(10), 2, seed=bytes(16))
    with pytest.raises(GraphParameterError, match="distinct"):
        public_shuffle([1, 1, 2], bytes(32))
    with pytest.raises(EncodingError):
        public_shuffle([-1, 2], bytes(32))
    with pytest.raises(SecAggTypeError):
        public_shuffle(["a", "b"], bytes(32))
