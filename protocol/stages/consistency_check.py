"""ConsistencyCheck (Bonawitz et al. CCS 2017 section 4, round 3, malicious mode only).

Opened by the server's request naming U3. Each client checks U3 (it contains the client, lies
in the cohort, its neighbours in U3 all shared keys with it, at least the minimum survivors)
and signs (session, round, graph seed, U3, key commitment). The server keeps the signatures
that verify over its own U3 and closes the stage, with a quorum of them, by sending the
unmasking requests with the signatures attached.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from secagg import SigningKey

from ..errors import AbortReason, RoundAborted
from ..messages import ConsistencyRequest, ConsistencySignature, UnmaskRequest
from ..transcript import CONSISTENCY_LABEL, survivors_bytes
from ..transitions import Stage
from .advertise_keys import ClientKeys
from .common import Refusal, ServerContext, verifies
from .masked_input import ClientShares, Summed, check_recoverable, unmask_requests
from .share_keys import ClientPeers, Routed

STAGE = Stage.CONSISTENCY_CHECK


# -- client ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClientSigned:
    """What a client hands on from ConsistencyCheck: the survivor set U3 it signed."""

    u3: tuple[int, ...]


def client_sign(keys: ClientKeys, peers: ClientPeers, shares: ClientShares,
                identity: SigningKey, m: ConsistencyRequest
                ) -> tuple[ClientSigned, ConsistencySignature]:
    """Check U3 and sign it. Raises :class:`Refusal` naming the check that failed."""
    ctx, s = keys.ctx, keys.ctx.setup
    u3 = frozenset(m.survivors)
    if ctx.id not in u3:
        raise Refusal("survivor set does not contain this client")
    if not u3 <= frozenset(s.cohort):
        raise Refusal("survivor set names clients outside the cohort")
    if not (u3 & ctx.neighbours) <= shares.holders_of:
        raise Refusal("survivor set is not a subset of the clients that shared keys")
    if len(u3) < s.min_survivors:
        raise Refusal(f"{len(u3)} survivors, below the minimum {s.min_survivors}")
    sig = identity.sign(survivors_bytes(s.session_id, s.round, s.graph_seed, m.survivors,
                                        key_root=peers.key_root), label=CONSISTENCY_LABEL)
    return ClientSigned(m.survivors), ConsistencySignature(s.session_id, s.round, ctx.id, sig)


def check_signatures(keys: ClientKeys, peers: ClientPeers, signed: ClientSigned,
                     signatures: tuple[tuple[int, bytes], ...]) -> None:
    """The unmasking request's signatures: each from a survivor and over the U3 and key
    commitment this client signed, and at least the quorum of them. Raises :class:`Refusal`."""
    ctx, s = keys.ctx, keys.ctx.setup
    msg = survivors_bytes(s.session_id, s.round, s.graph_seed, signed.u3,
                          key_root=peers.key_root)
    u3 = frozenset(signed.u3)
    for w, sig in signatures:
        if w not in u3:
            raise Refusal(f"consistency signature from client {w}, not a survivor")
        if not verifies(ctx.registry[w], sig, msg, label=CONSISTENCY_LABEL):
            raise Refusal(f"consistency signature of client {w} does not verify: it was made "
                          "over another survivor set or key commitment (another view or "
                          "another run)")
    if len(signatures) < ctx.params.quorum:
        raise Refusal(f"only {len(signatures)} consistency signatures over this survivor set, "
                      f"the quorum is {ctx.params.quorum}")


# -- server ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Signed:
    """What the server hands on from ConsistencyCheck: the verified signatures over U3."""

    signatures: Mapping[int, bytes]


class CollectSignatures:
    """The server while ConsistencyCheck is open: keeps each signature over its U3."""

    def __init__(self, ctx: ServerContext, key_root: bytes, routed: Routed,
                 summed: Summed) -> None:
        self._ctx, self._routed, self._summed = ctx, routed, summed
        self._payload = survivors_bytes(ctx.session_id, ctx.round, ctx.graph_seed,
                                        tuple(sorted(summed.u3)), key_root=key_root)
        self._sigs: dict[int, bytes] = {}

    @property
    def signatures(self) -> Mapping[int, bytes]:
        return MappingProxyType(self._sigs)

    held_bytes = 0

    def accept(self, m: ConsistencySignature) -> None:
        """Raises RemoteProtocolError for a non-survivor, a duplicate, or a signature that does
        not verify over this server's U3."""
        ctx = self._ctx
        if m.sender not in self._summed.u3 or m.sender in self._sigs:
            raise ctx.refuse(STAGE, m, "not a survivor, or a duplicate signature")
        if not verifies(ctx.registry[m.sender], m.signature, self._payload,
                        label=CONSISTENCY_LABEL):
            raise ctx.refuse(STAGE, m, "consistency signature does not verify")
        self._sigs[m.sender] = m.signature

    def close(self) -> tuple[Signed, list[UnmaskRequest]]:
        """Raises RoundAborted below the quorum, or if the signers cannot remove every mask."""
        ctx, quorum = self._ctx, self._ctx.params.quorum
        if len(self._sigs) < quorum:
            raise RoundAborted(STAGE, AbortReason.TOO_FEW_SIGNATURES,
                               f"{len(self._sigs)} < quorum {quorum}")
        signers = frozenset(self._sigs)
        check_recoverable(ctx, STAGE, self._routed.u2, self._summed.u3, responders=signers)
        sigs = tuple(sorted(self._sigs.items()))
        return (Signed(MappingProxyType(dict(self._sigs))),
                unmask_requests(ctx, self._routed.u2, self._summed.u3, sorted(signers), sigs))
