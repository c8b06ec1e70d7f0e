"""End-to-end exercise of the cryptographic core: one SecAgg+ round without the state machines.

This is the interim main job (issue 2): it composes the primitives of :mod:`secagg` the way
Bonawitz et al. (CCS 2017, section 4) and Bell et al. (CCS 2020) do - AdvertiseKeys, ShareKeys
(AEAD-encrypted Shamir shares), MaskedInput, Unmasking - with a fraction of clients dropping
after ShareKeys, and checks the unmasked sum against the plain sum. It has no message
validation or adversarial checks; the protocol issue replaces it with the sans-IO state
machines and ``secagg simulate``.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

import numpy as np

from secagg import (
    AeadContext,
    KdfContext,
    KeyPair,
    PairwiseMask,
    Ring,
    Share,
    agree,
    combine,
    decrypt,
    encrypt,
    find_parameters,
    harary_graph,
    mask_input,
    pairwise_sign,
    remove_masks,
    split,
)
from secagg.keyagreement import PURPOSE_MASK, PURPOSE_SHARE_ENCRYPTION
from secagg.shamir import SHARE_BYTES


@dataclass
class DemoResult:
    clients: int
    dim: int
    bits: int
    k: int
    t: int
    survivors: int
    dropped: int
    correct: bool
    seconds: dict[str, float] = field(default_factory=dict)


def run_demo(
    clients: int, dim: int, *, bits: int = 32, dropout: float = 0.1, mode: str = "semi-honest",
    corrupt: float = 0.05, seed: int | None = None,
) -> DemoResult:
    """Mask ``clients`` random vectors of length ``dim``, drop some, unmask, check the sum."""
    ring = Ring(bits)
    rng = np.random.default_rng(seed)  # inputs and the dropout choice only: not key material
    params = find_parameters(clients, dropout_rate=dropout, corrupt_rate=corrupt, mode=mode)
    session = secrets.token_bytes(32)
    rnd = 0
    ids = list(range(clients))
    graph = harary_graph(ids, params.k, seed=secrets.token_bytes(32))
    timer: dict[str, float] = {}

    # AdvertiseKeys: two X25519 key pairs per client.
    t0 = time.perf_counter()
    c_keys = {u: KeyPair.generate() for u in ids}
    s_keys = {u: KeyPair.generate() for u in ids}
    self_seeds = {u: secrets.token_bytes(32) for u in ids}
    timer["advertise_keys"] = time.perf_counter() - t0

    # ShareKeys: shares of b_u and s_u^SK for each neighbour, AEAD-encrypted under c-keys.
    t0 = time.perf_counter()
    enc_ctx = KdfContext(session, rnd, PURPOSE_SHARE_ENCRYPTION)
    mailbox: dict[tuple[int, int], bytes] = {}
    for u in ids:
        nbrs = sorted(graph.neighbours(u))
        xs = [v + 1 for v in nbrs]
        b_sh = split(self_seeds[u], threshold=params.t, xs=xs)
        s_sh = split(s_keys[u].private_bytes(), threshold=params.t, xs=xs)
        for v, bs, ss in zip(nbrs, b_sh, s_sh, strict=True):
            key = agree(c_keys[u], c_keys[v].public_bytes, own_id=u, peer_id=v, context=enc_ctx)
            mailbox[(u, v)] = encrypt(key, bs.to_bytes() + ss.to_bytes(),
                                      AeadContext(session, rnd, u, v))
    timer["share_keys"] = time.perf_counter() - t0

    # Dropouts after ShareKeys: their pairwise masks must be removed by the server.
    n_drop = min(int(dropout * clients), clients - 1)
    dropped = set(rng.choice(clients, size=n_drop, replace=False).tolist()) if n_drop else set()
    survivors = [u for u in ids if u not in dropped]

    # MaskedInput: streaming sum on the server.
    t0 = time.perf_counter()
    mask_ctx = KdfContext(session, rnd, PURPOSE_MASK)
    inputs = {u: rng.integers(0, ring.modulus, size=dim, dtype=np.uint64).astype(ring.dtype)
              for u in survivors}
    acc = ring.zeros(dim)
    for u in survivors:
        pairs = [PairwiseMask(agree(s_keys[u], s_keys[v].public_bytes, own_id=u, peer_id=v,
                                    context=mask_ctx), pairwise_sign(u, v))
                 for v in sorted(graph.neighbours(u))]
        y = mask_input(inputs[u], ring=ring, self_seed=self_seeds[u], pairwise=pairs)
        acc = ring.add(acc, y)
    timer["masked_input"] = time.perf_counter() - t0

    # Unmasking: each survivor reveals, per neighbour, the b-share (alive) or s-share (dropped).
    t0 = time.perf_counter()
    b_shares: dict[int, list[Share]] = {u: [] for u in survivors}
    s_shares: dict[int, list[Share]] = {u: [] for u in dropped}
    for v in survivors:
        for u in sorted(graph.neighbours(v)):
            key = agree(c_keys[v], c_keys[u].public_bytes, own_id=v, peer_id=u, context=enc_ctx)
            plain = decrypt(key, mailbox[(u, v)], AeadContext(session, rnd, u, v))
            if u in dropped:
                s_shares[u].append(Share.from_bytes(plain[SHARE_BYTES:]))
            else:
                b_shares[u].append(Share.from_bytes(plain[:SHARE_BYTES]))
    seeds = [combine(b_shares[u], threshold=params.t) for u in survivors]
    pairwise = []
    for u in dropped:
        s_u = KeyPair.from_private_bytes(combine(s_shares[u], threshold=params.t))
        for v in sorted(graph.neighbours(u) - dropped):
            s_uv = agree(s_u, s_keys[v].public_bytes, own_id=u, peer_id=v, context=mask_ctx)
            pairwise.append(PairwiseMask(s_uv, pairwise_sign(v, u)))
    remove_masks(acc, ring=ring, self_seeds=seeds, pairwise=pairwise)
    timer["unmasking"] = time.perf_counter() - t0

    expected = ring.zeros(dim)
    for u in survivors:
        expected = ring.add(expected, inputs[u])
    return DemoResult(clients, dim, bits, params.k, params.t, len(survivors), len(dropped),
                      bool(np.array_equal(acc, expected)), timer)
