"""AdvertiseKeys (Bonawitz et al. CCS 2017 section 4, round 0; Bell et al. CCS 2020 section 3).

Opened by the server's Setup. Each client checks the Setup against its own configuration,
generates two key pairs (c for share encryption, s for masks) and its self-mask seed b_u,
commits to b_u and sends its public keys (signed in malicious mode). The server collects the
advertisements (U1) and closes the stage by sending each member the keys of its neighbours in
U1, with, in malicious mode, a hash-tree commitment over the whole cohort's keys.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, MutableSet
from dataclasses import dataclass, field
from types import MappingProxyType

from secagg import KeyPair, Ring, SigningKey, VerifyKey, harary_graph
from secagg.randomness import random_bytes

from ..config import ConfigError, Mode, RoundConfig, RoundParameters, derive_graph_seed
from ..errors import AbortReason, RoundAborted
from ..messages import AdvertiseKeys, KeysBroadcast, Setup
from ..transcript import ADVERTISE_LABEL, advertise_bytes, commit_self_seed, key_tree
from ..transitions import Stage
from .common import ClientContext, Refusal, ServerContext, verifies

STAGE = Stage.ADVERTISE_KEYS


# -- client ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClientKeys:
    """What a client hands on from AdvertiseKeys: its round constants, its two key pairs and
    its self-mask seed b_u (the secrets are never in a repr)."""

    ctx: ClientContext
    c_keys: KeyPair = field(repr=False)
    s_keys: KeyPair = field(repr=False)
    b_seed: bytes = field(repr=False)


def client_advertise(m: Setup, *, client_id: int, config: RoundConfig,
                     identity: SigningKey | None, registry: Mapping[int, VerifyKey] | None,
                     used_sessions: MutableSet[bytes]) -> tuple[ClientKeys, AdvertiseKeys]:
    """Check the Setup and advertise keys. Raises :class:`Refusal` if the Setup replays a
    session, leaves this client out, or differs from this client's own configuration."""
    if m.session_id in used_sessions:
        raise Refusal("replayed session: this session id was already used")
    ctx = client_context(m, client_id=client_id, config=config, registry=registry)
    used_sessions.add(m.session_id)
    keys = ClientKeys(ctx, KeyPair.generate(purpose="c-key"), KeyPair.generate(purpose="s-key"),
                      random_bytes(32, "self-mask-seed"))
    commitment = commit_self_seed(m.session_id, m.round, client_id, keys.b_seed)
    sig = b""
    if m.mode == Mode.MALICIOUS:
        sig = identity.sign(advertise_bytes(m.session_id, m.round, m.graph_seed, client_id,
                                            keys.c_keys.public_bytes, keys.s_keys.public_bytes,
                                            commitment), label=ADVERTISE_LABEL)
    return keys, AdvertiseKeys(m.session_id, m.round, client_id, keys.c_keys.public_bytes,
                               keys.s_keys.public_bytes, commitment, sig)


def client_context(m: Setup, *, client_id: int, config: RoundConfig,
                   registry: Mapping[int, VerifyKey] | None) -> ClientContext:
    """The round constants a Setup fixes, after every check of the Setup against this
    client's own configuration but the replay check (a restored client re-derives them from
    the Setup it accepted). Raises :class:`Refusal`."""
    at = bisect_left(m.cohort, client_id)  # the cohort is sorted (protocol.messages)
    if at == len(m.cohort) or m.cohort[at] != client_id:
        raise Refusal("this client is not in the cohort")
    if m.graph_seed != derive_graph_seed(m.session_id, m.round, m.cohort):
        raise Refusal("graph seed is not derived from the session and cohort")
    params = _expected(m, config)
    if m.mode == Mode.MALICIOUS:
        missing = [u for u in m.cohort if u not in registry]
        if missing:
            raise Refusal(f"cohort members without a registered identity: {missing[:5]}")
    nbrs = harary_graph(m.cohort, m.neighbours, seed=m.graph_seed).neighbours(client_id)
    return ClientContext(client_id, m, Mode(m.mode), params, Ring(m.bits), nbrs, registry)


def _expected(m: Setup, config: RoundConfig) -> RoundParameters:
    """The parameters this client's own configuration gives for the announced cohort."""
    try:
        p = config.resolve(len(m.cohort))
    except ConfigError as exc:
        raise Refusal(f"this client's configuration refuses the cohort: {exc}") from None
    announced = (m.mode, m.bits, m.neighbours, m.threshold, m.min_survivors)
    expected = (str(config.mode), config.bits, p.neighbours, p.threshold, p.min_survivors)
    if announced != expected:
        raise Refusal(f"setup parameters {announced} differ from this client's "
                      f"configuration {expected} (mode, bits, k, t, min survivors)")
    return p


# -- server ---------------------------------------------------------------------------------
def setup_messages(ctx: ServerContext) -> list[Setup]:
    """The Setup that opens the round, one per cohort member."""
    p = ctx.params
    return [Setup(ctx.session_id, ctx.round, u, ctx.cohort, p.neighbours, p.threshold,
                  ctx.dim, ctx.config.bits, str(ctx.mode), p.min_survivors, ctx.graph_seed)
            for u in ctx.cohort]


@dataclass(frozen=True)
class Advertised:
    """What the server hands on from AdvertiseKeys: U1's advertisements and, in malicious
    mode, the root of the key commitment (empty otherwise)."""

    keys: Mapping[int, AdvertiseKeys]
    key_root: bytes

    @property
    def u1(self) -> frozenset[int]:
        return frozenset(self.keys)


class CollectKeys:
    """The server while AdvertiseKeys is open: verifies and keeps each advertisement."""

    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx
        self._keys: dict[int, AdvertiseKeys] = {}
        self.held_bytes = 0

    @property
    def keys(self) -> Mapping[int, AdvertiseKeys]:
        return MappingProxyType(self._keys)

    def accept(self, m: AdvertiseKeys) -> None:
        """Raises RemoteProtocolError for a duplicate or a bad signature."""
        ctx = self._ctx
        if m.sender in self._keys:
            raise ctx.refuse(STAGE, m, "duplicate AdvertiseKeys")
        if ctx.mode == Mode.MALICIOUS:
            payload = advertise_bytes(ctx.session_id, ctx.round, ctx.graph_seed, m.sender,
                                      m.c_pk, m.s_pk, m.b_commitment)
            if not verifies(ctx.registry[m.sender], m.signature, payload, label=ADVERTISE_LABEL):
                raise ctx.refuse(STAGE, m, "bad key signature")
        elif m.signature:
            raise ctx.refuse(STAGE, m, "unexpected signature in semi-honest mode")
        self._keys[m.sender] = m
        self.held_bytes += 132 + len(m.signature)

    def close(self) -> tuple[Advertised, list[KeysBroadcast]]:
        """Each member of U1 gets its neighbours' keys in U1. Raises RoundAborted if U1 is below
        the minimum or a member has fewer than t neighbours with keys."""
        ctx = self._ctx
        u1 = frozenset(self._keys)
        ctx.need(STAGE, len(u1), AbortReason.TOO_FEW_CLIENTS)
        entry = {v: (v, m.c_pk, m.s_pk, m.b_commitment, m.signature)
                 for v, m in sorted(self._keys.items())}
        tree, index, root = None, {}, b""
        if ctx.mode == Mode.MALICIOUS:
            tree = key_tree(ctx.session_id, ctx.round, ctx.graph_seed, ctx.cohort, entry)
            index = {v: i for i, v in enumerate(ctx.cohort)}
            root = tree.root
        out = []
        for u in sorted(u1):
            nb = ctx.graph.neighbours(u) & u1
            if len(nb) < ctx.t:
                raise RoundAborted(STAGE, AbortReason.NEIGHBOURHOOD_BELOW_THRESHOLD,
                                   f"client {u} has {len(nb)} neighbours with keys, t = {ctx.t}")
            ids = sorted(nb | {u})
            entries = tuple(entry[v] for v in ids)
            if tree is None:
                out.append(KeysBroadcast(ctx.session_id, ctx.round, u, entries))
            else:
                proofs = tuple((v, index[v], tree.proof(index[v])) for v in ids)
                out.append(KeysBroadcast(ctx.session_id, ctx.round, u, entries, tree.count,
                                         tree.root, proofs))
        return Advertised(MappingProxyType(dict(self._keys)), root), out
