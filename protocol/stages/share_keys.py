"""ShareKeys (Bonawitz et al. CCS 2017 section 4, round 1; Bell et al. CCS 2020 section 3).

Opened by the key broadcast. Each client checks it (its own entry, only neighbours, no
duplicate keys, signatures and the key commitment in malicious mode), Shamir-shares b_u and
s_u^SK among its neighbours with keys (threshold t, x = id + 1), and sends each share pair
encrypted to its holder under a key agreed from the c keys. The server routes the ciphertexts
(U2) and closes the stage by delivering each member of U2 the ciphertexts addressed to it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from secagg import AeadContext, KdfContext, agree, encrypt, split
from secagg.keyagreement import PURPOSE_SHARE_ENCRYPTION
from secagg.merkle import InclusionError, verify_inclusion

from ..config import Mode
from ..errors import AbortReason
from ..messages import KeysBroadcast, ShareKeys, SharesDelivery
from ..transcript import ADVERTISE_LABEL, advertise_bytes, key_leaf
from ..transitions import Stage
from .advertise_keys import Advertised, ClientKeys
from .common import Refusal, ServerContext, verifies

STAGE = Stage.SHARE_KEYS


# -- client ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClientPeers:
    """What a client hands on from ShareKeys: its neighbours' public keys (c_pk, s_pk), the
    pairwise share-encryption keys (secret), and the key commitment it checked."""

    peer_keys: Mapping[int, tuple[bytes, bytes]]
    enc_keys: Mapping[int, bytes] = field(repr=False)
    key_root: bytes


def client_share(keys: ClientKeys, m: KeysBroadcast) -> tuple[ClientPeers, ShareKeys]:
    """Check the key broadcast and deal the shares. Raises :class:`Refusal` naming the check
    that failed."""
    ctx, s = keys.ctx, keys.ctx.setup
    ids = [e[0] for e in m.keys]
    if ctx.id not in ids:
        raise Refusal("own key missing from the key broadcast")
    strangers = [v for v in ids if v != ctx.id and v not in ctx.neighbours]
    if strangers:
        raise Refusal(f"keys of clients that are not neighbours: {strangers[:5]}")
    seen: set[bytes] = set()
    peer_keys: dict[int, tuple[bytes, bytes]] = {}
    own = (keys.c_keys.public_bytes, keys.s_keys.public_bytes)
    for v, c_pk, s_pk, commitment, sig in m.keys:
        if v == ctx.id and (c_pk, s_pk) != own:
            raise Refusal("own key misreported in the key broadcast")
        if c_pk in seen or s_pk in seen or c_pk == s_pk:
            raise Refusal(f"duplicate public key (client {v})")
        seen |= {c_pk, s_pk}
        if ctx.mode == Mode.MALICIOUS:
            payload = advertise_bytes(s.session_id, s.round, s.graph_seed, v, c_pk, s_pk,
                                      commitment)
            if not verifies(ctx.registry[v], sig, payload, label=ADVERTISE_LABEL):
                raise Refusal(f"bad key signature of client {v}")
        elif sig:
            raise Refusal("unexpected signature in semi-honest mode")
        if v != ctx.id:
            peer_keys[v] = (c_pk, s_pk)
    root = _check_key_commitment(keys, m)
    if len(peer_keys) < s.threshold:
        raise Refusal(f"only {len(peer_keys)} neighbours advertised keys, t = {s.threshold}")
    order = sorted(peer_keys)
    xs = [v + 1 for v in order]
    b_sh = split(keys.b_seed, threshold=s.threshold, xs=xs)
    s_sh = split(keys.s_keys.private_bytes(), threshold=s.threshold, xs=xs)
    kdf = KdfContext(s.session_id, s.round, PURPOSE_SHARE_ENCRYPTION)
    # One key per pair and direction-independent: kept to open the peer's shares later.
    enc = {v: agree(keys.c_keys, peer_keys[v][0], own_id=ctx.id, peer_id=v, context=kdf)
           for v in order}
    out = tuple((v, encrypt(enc[v], bs.to_bytes() + ss.to_bytes(),
                            AeadContext(s.session_id, s.round, ctx.id, v)))
                for v, bs, ss in zip(order, b_sh, s_sh, strict=True))
    peers = ClientPeers(MappingProxyType(peer_keys), MappingProxyType(enc), root)
    return peers, ShareKeys(s.session_id, s.round, ctx.id, out)


def _check_key_commitment(keys: ClientKeys, m: KeysBroadcast) -> bytes:
    """Malicious mode: every entry received (this client's own and its neighbours') must be
    a leaf of the announced key commitment; the ConsistencyCheck signature covers it."""
    ctx, s = keys.ctx, keys.ctx.setup
    if ctx.mode != Mode.MALICIOUS:
        if m.key_root:
            raise Refusal("unexpected key commitment in semi-honest mode")
        return b""
    if not m.key_root:
        raise Refusal("the key broadcast carries no key commitment")
    if m.key_count != len(s.cohort):
        raise Refusal(f"key commitment over {m.key_count} leaves, the cohort has "
                      f"{len(s.cohort)}")
    for entry, (_, index, proof) in zip(m.keys, m.proofs, strict=True):
        if index != bisect_left(s.cohort, entry[0]):  # its position in the sorted cohort
            raise Refusal(f"the key entry of client {entry[0]} is not at its cohort position "
                          "in the key commitment")
        try:
            verify_inclusion(m.key_root, key_leaf(s.session_id, s.round, s.graph_seed, entry),
                             index=index, count=m.key_count, proof=proof)
        except InclusionError:
            raise Refusal(f"the key entry of client {entry[0]} is not in the key "
                          "commitment") from None
    return m.key_root


# -- server ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Routed:
    """What the server hands on from ShareKeys: U2, the clients whose shares were routed."""

    u2: frozenset[int]


class CollectShares:
    """The server while ShareKeys is open: keeps each client's ciphertexts for routing."""

    def __init__(self, ctx: ServerContext, advertised: Advertised) -> None:
        self._ctx, self._advertised = ctx, advertised
        self._msgs: dict[int, ShareKeys] = {}
        self.held_bytes = 0

    @property
    def share_msgs(self) -> Mapping[int, ShareKeys]:
        return MappingProxyType(self._msgs)

    def accept(self, m: ShareKeys) -> None:
        """Raises RemoteProtocolError for a client outside U1, a duplicate, or ciphertexts
        that do not address exactly its neighbours in U1."""
        ctx, u1 = self._ctx, self._advertised.keys
        if m.sender not in u1:
            raise ctx.refuse(STAGE, m, "sender did not advertise keys")
        if m.sender in self._msgs:
            raise ctx.refuse(STAGE, m, "duplicate ShareKeys")
        expected = frozenset(v for v in ctx.graph.neighbours(m.sender) if v in u1)
        if frozenset(v for v, _ in m.ciphertexts) != expected:
            raise ctx.refuse(STAGE, m, "ciphertexts must address exactly the neighbours in U1")
        self._msgs[m.sender] = m
        self.held_bytes += sum(len(ct) + 8 for _, ct in m.ciphertexts)

    def close(self) -> tuple[Routed, list[SharesDelivery]]:
        """Deliver each member of U2 the ciphertexts addressed to it. Raises RoundAborted if U2
        is below the minimum."""
        ctx = self._ctx
        u2 = frozenset(self._msgs)
        ctx.need(STAGE, len(u2), AbortReason.TOO_FEW_CLIENTS)
        inbox: dict[int, list[tuple[int, bytes]]] = {v: [] for v in u2}
        for u in sorted(u2):
            for v, ct in self._msgs[u].ciphertexts:
                if v in inbox:
                    inbox[v].append((u, ct))
        out = [SharesDelivery(ctx.session_id, ctx.round, v, tuple(inbox[v]))
               for v in sorted(u2)]
        return Routed(u2), out
