"""Masking: pairwise masks cancel over closed sets; the server removes exactly what it may."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import (
    KdfContext,
    KeyPair,
    PairwiseMask,
    Ring,
    SecAggTypeError,
    SecAggValueError,
    SeedError,
    ShapeError,
    agree,
    expand,
    harary_graph,
    mask_input,
    pairwise_sign,
    remove_masks,
)
from secagg.masking import PAIRWISE_MASK_PURPOSE, SELF_MASK_PURPOSE  # noqa: F401

SESSION = bytes(range(16))


def cohort_seeds(ids, graph):
    ctx = KdfContext(SESSION, 0, "pairwise-mask")
    keys = {u: KeyPair.generate() for u in ids}
    return {
        u: [PairwiseMask(agree(keys[u], keys[v].public_bytes, own_id=u, peer_id=v, context=ctx),
                         pairwise_sign(u, v)) for v in sorted(graph.neighbours(u))]
        for u in ids
    }, keys


@settings(max_examples=25)
@given(n=st.integers(3, 12), d=st.integers(1, 300), bits=st.integers(8, 64),
       chunk=st.integers(1, 128), data=st.data())
def test_pairwise_masks_cancel_and_dropouts_recover(n, d, bits, chunk, data):
    ring = Ring(bits)
    ids = list(range(100, 100 + n))
    k = data.draw(st.sampled_from(sorted({min(2 * j, n - 1) for j in range(1, n // 2 + 1)})))
    graph = harary_graph(ids, k, seed=bytes(32))
    pairs, _ = cohort_seeds(ids, graph)
    self_seeds = {u: bytes([u % 256]) * 32 for u in ids}
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
    x = {u: rng.integers(0, ring.modulus, d, dtype=np.uint64).astype(ring.dtype) for u in ids}
    dropped = set(data.draw(st.sets(st.sampled_from(ids), max_size=n - 1)))
    alive = [u for u in ids if u not in dropped]
    acc = ring.zeros(d)
    for u in alive:
        acc = ring.add(acc, mask_input(x[u], ring=ring, self_seed=self_seeds[u], pairwise=pairs[u],
                                       chunk=chunk))
    # Server: self masks of survivors, and dropped clients' masks toward survivors.
    undo = []
    for u in dropped:
        for v in graph.neighbours(u):
            if v in alive:
                seed = next(p.seed for p, w in zip(pairs[v], sorted(graph.neighbours(v)))
                            if w == u)
                undo.append(PairwiseMask(seed, pairwise_sign(v, u)))
    remove_masks(acc, ring=ring, self_seeds=[self_seeds[u] for u in alive], pairwise=undo,
                 chunk=chunk)
    expected = ring.zeros(d)
    for u in alive:
        expected = ring.add(expected, x[u])
    assert np.array_equal(acc, expected)


def test_closed_set_without_self_masks_cancels_exactly():
    ring = Ring(32)
    ids = list(range(7))
    graph = harary_graph(ids, 4, seed=bytes(32))
    pairs, _ = cohort_seeds(ids, graph)
    zero = ring.zeros(50)
    total = ring.zeros(50)
    for u in ids:
        y = mask_input(zero, ring=ring, self_seed=bytes([u]) * 32, pairwise=pairs[u])
        total = ring.add(total, y)
    remove_masks(total, ring=ring, self_seeds=[bytes([u]) * 32 for u in ids])
    assert not total.any()


def test_masked_vector_hides_input_and_equals_formula():
    ring = Ring(24)
    x = np.arange(1000, dtype=np.uint32)
    seed, p1, p2 = bytes([9]) * 32, bytes([1]) * 32, bytes([2]) * 32
    y = mask_input(x, ring=ring, self_seed=seed,
                   pairwise=[PairwiseMask(p1, 1), PairwiseMask(p2, -1)], chunk=77)
    manual = ring.add(x, expand(seed, SELF_MASK_PURPOSE, 1000, ring))
    manual = ring.add(manual, expand(p1, PAIRWISE_MASK_PURPOSE, 1000, ring))
    manual = ring.sub(manual, expand(p2, PAIRWISE_MASK_PURPOSE, 1000, ring))
    assert np.array_equal(y, manual)
    assert not np.array_equal(y, x)
    assert int(y.max()) < ring.modulus
    assert x.tolist() == list(range(1000))  # the input is not modified


def test_pairwise_sign():
    assert pairwise_sign(1, 2) == 1 and pairwise_sign(2, 1) == -1
    with pytest.raises(SecAggValueError):
        pairwise_sign(3, 3)
    for bad in (1.5, True, "a"):
        with pytest.raises(SecAggTypeError):
            pairwise_sign(bad, 2)
    with pytest.raises(SecAggValueError):
        pairwise_sign(-1, 2)


def test_refusals():
    ring = Ring(32)
    x = np.zeros(10, dtype=np.uint32)
    with pytest.raises(SeedError):
        mask_input(x, ring=ring, self_seed=bytes(4), pairwise=[])
    with pytest.raises(SeedError):
        mask_input(x, ring=ring, self_seed=bytes(32), pairwise=[PairwiseMask(bytes(16), 1)])
    with pytest.raises(SecAggValueError, match="sign"):
        PairwiseMask(bytes(32), 0)
    for sign in (1.0, np.int8(-1), True):
        with pytest.raises(SecAggValueError, match="sign"):
            PairwiseMask(bytes(32), sign)
    with pytest.raises(SecAggTypeError):
        PairwiseMask(None, 1)
    with pytest.raises(SecAggTypeError, match="iterable"):
        mask_input(x, ring=ring, self_seed=bytes(32), pairwise=None)
    with pytest.raises(SecAggTypeError, match="iterable"):
        remove_masks(x.copy(), ring=ring, self_seeds=bytes(32))
    for chunk in (0, 1.5, None, "8", True):
        with pytest.raises((SecAggTypeError, SecAggValueError)):
            mask_input(x, ring=ring, self_seed=bytes(32), pairwise=[], chunk=chunk)
    with pytest.raises(SecAggTypeError):
        mask_input(x, ring=ring, self_seed=bytes(32), pairwise=[(bytes(32), 1)])
    with pytest.raises(SecAggTypeError):
        mask_input(x.astype(np.float32), ring=ring, self_seed=bytes(32), pairwise=[])
    with pytest.raises(ShapeError):
        mask_input(np.zeros((2, 5), np.uint32), ring=ring, self_seed=bytes(32), pairwise=[])
    with pytest.raises(SecAggTypeError):
        remove_masks(np.zeros(10, dtype=np.uint64), ring=ring)
    with pytest.raises(ShapeError):
        remove_masks(np.zeros(20, dtype=np.uint32)[::2], ring=ring)
    ro = np.zeros(10, dtype=np.uint32)
    ro.flags.writeable = False
    with pytest.raises(ShapeError):
        remove_masks(ro, ring=ring)
