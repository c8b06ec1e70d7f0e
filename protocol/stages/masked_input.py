"""MaskedInput (Bonawitz et al. CCS 2017 section 4, round 2; Bell et al. CCS 2020 section 3).

Opened by the delivery of shares. Each client opens and checks the shares addressed to it
(its x-coordinate, the threshold), keeps them, and then needs its input x_u: the machine waits
in AWAIT_INPUT until the host gives it (at once if it was given before). Only then is x_u
masked with b_u and the pairwise masks of its neighbours in U2 and sent: this is the one point
where an input leaves a client, so a DP charge made just before it is made by every host.

The server adds each masked input to one running sum as it arrives (O(d) memory, U3), and
closes the stage by checking that every mask in the sum can still be removed, then asking for
signatures over U3 (malicious mode) or for the unmasking shares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from secagg import (
    AeadContext,
    KdfContext,
    PairwiseMask,
    SecAggError,
    Share,
    agree,
    decrypt,
    mask_input,
    pairwise_sign,
)
from secagg.keyagreement import PURPOSE_MASK
from secagg.shamir import SHARE_BYTES

from ..config import Mode
from ..errors import AbortReason, LocalProtocolError, RoundAborted
from ..messages import ConsistencyRequest, MaskedInput, SharesDelivery, UnmaskRequest
from ..transitions import Stage
from .advertise_keys import ClientKeys
from .common import Refusal, ServerContext
from .share_keys import ClientPeers, Routed

STAGE = Stage.MASKED_INPUT


class InputError(LocalProtocolError):
    """This client's own input does not fit the round (never blamed on the server)."""


# -- client ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClientShares:
    """What a client hands on from MaskedInput: the share pairs (b, s) it holds for each
    neighbour in U2, and the pairwise masks agreed with them (both secret)."""

    held: Mapping[int, tuple[Share, Share]] = field(repr=False)
    pairwise: tuple[PairwiseMask, ...] = field(repr=False)

    @property
    def holders_of(self) -> frozenset[int]:
        """The neighbours whose shares this client holds."""
        return frozenset(self.held)


def client_receive_shares(keys: ClientKeys, peers: ClientPeers,
                          m: SharesDelivery) -> ClientShares:
    """Open and keep the shares addressed to this client. Raises :class:`Refusal` for shares
    from a stranger, a malformed or wrongly addressed share, or fewer than t of them."""
    ctx, s = keys.ctx, keys.ctx.setup
    held: dict[int, tuple[Share, Share]] = {}
    for v, ct in m.ciphertexts:
        if v not in peers.peer_keys:
            raise Refusal(f"shares from client {v}, which is not a neighbour with keys")
        try:
            plain = decrypt(peers.enc_keys[v], ct, AeadContext(s.session_id, s.round, v, ctx.id))
        except SecAggError as exc:
            raise Refusal(str(exc)) from None
        if len(plain) != 2 * SHARE_BYTES:
            raise Refusal(f"malformed share plaintext from client {v}")
        try:
            pair = (Share.from_bytes(plain[:SHARE_BYTES]), Share.from_bytes(plain[SHARE_BYTES:]))
        except SecAggError as exc:
            raise Refusal(str(exc)) from None
        for sh in pair:
            if sh.x != ctx.id + 1 or sh.threshold != s.threshold:
                raise Refusal(f"share from client {v} has the wrong x or threshold")
        held[v] = pair
    if len(held) < s.threshold:
        raise Refusal(f"only {len(held)} neighbours shared keys, t = {s.threshold}")
    # agreed now, before the input is asked for: a neighbour's unusable s key is refused
    # here, before a DP client is charged
    kdf = KdfContext(s.session_id, s.round, PURPOSE_MASK)
    pairs = tuple(PairwiseMask(agree(keys.s_keys, peers.peer_keys[v][1], own_id=ctx.id,
                                     peer_id=v, context=kdf), pairwise_sign(ctx.id, v))
                  for v in sorted(held))
    return ClientShares(MappingProxyType(held), pairs)


def validated_input(keys: ClientKeys, x: object) -> np.ndarray:
    """``x`` as a ring vector of the round's length. Raises :class:`InputError`."""
    try:
        return keys.ctx.ring.validate(x, length=keys.ctx.setup.dim, name="input")
    except SecAggError as exc:
        raise InputError(str(exc)) from exc


def client_mask(keys: ClientKeys, shares: ClientShares, x: np.ndarray) -> MaskedInput:
    """y_u = x_u + PRG(b_u) + sum of signed pairwise masks with the neighbours in U2."""
    ctx, s = keys.ctx, keys.ctx.setup
    y = mask_input(x, ring=ctx.ring, self_seed=keys.b_seed, pairwise=list(shares.pairwise))
    return MaskedInput(s.session_id, s.round, ctx.id, y, bits=ctx.ring.bits)


# -- server ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Summed:
    """What the server hands on from MaskedInput: U3 and the running sum of their inputs."""

    u3: frozenset[int]
    masked_sum: np.ndarray = field(repr=False)


class CollectInputs:
    """The server while MaskedInput is open: adds each masked input to the running sum."""

    def __init__(self, ctx: ServerContext, routed: Routed) -> None:
        self._ctx, self._routed = ctx, routed
        self._sum: np.ndarray | None = None
        self._u3: set[int] = set()

    @property
    def u3(self) -> frozenset[int]:
        return frozenset(self._u3)

    @property
    def masked_sum(self) -> np.ndarray | None:
        return self._sum

    @property
    def held_bytes(self) -> int:
        return self._sum.nbytes if self._sum is not None else 0

    def accept(self, m: MaskedInput) -> None:
        """Raises RemoteProtocolError for a client outside U2, a duplicate, or a vector of
        another bit width, type, length or range (nothing is added then)."""
        ctx = self._ctx
        if m.sender not in self._routed.u2:
            raise ctx.refuse(STAGE, m, "sender did not share keys")
        if m.sender in self._u3:
            raise ctx.refuse(STAGE, m, "duplicate MaskedInput")
        y = m.vector
        if y.dtype != ctx.ring.dtype or y.shape != (ctx.dim,):
            raise ctx.refuse(STAGE, m, f"vector must be {ctx.ring.dtype} of length {ctx.dim}")
        if m.bits != ctx.ring.bits:
            raise ctx.refuse(STAGE, m, f"vector packed at {m.bits} bits, the round's ring has "
                             f"{ctx.ring.bits}")
        try:
            ctx.ring.validate(y, length=ctx.dim)
        except SecAggError as exc:
            raise ctx.refuse(STAGE, m, str(exc)) from None
        if self._sum is None:
            self._sum = ctx.ring.zeros(ctx.dim)
        np.add(self._sum, y, out=self._sum)
        ctx.ring.reduce(self._sum, out=self._sum)
        self._u3.add(m.sender)

    def close(self) -> tuple[Summed, list[ConsistencyRequest] | list[UnmaskRequest]]:
        """Raises RoundAborted if U3 is below the minimum or a mask could not be removed."""
        ctx = self._ctx
        u3 = frozenset(self._u3)
        ctx.need(STAGE, len(u3), AbortReason.TOO_FEW_SURVIVORS)
        check_recoverable(ctx, STAGE, self._routed.u2, u3, responders=u3)
        summed = Summed(u3, self._sum)
        if ctx.mode == Mode.MALICIOUS:
            ids = tuple(sorted(u3))
            return summed, [ConsistencyRequest(ctx.session_id, ctx.round, v, ids) for v in ids]
        return summed, unmask_requests(ctx, self._routed.u2, u3, sorted(u3), ())


def check_recoverable(ctx: ServerContext, stage: Stage, u2: frozenset[int], u3: frozenset[int],
                      *, responders: frozenset[int]) -> None:
    """Abort before any share is requested if some mask could never be removed: b_u needs
    t responding neighbours of each survivor u, and s_u^SK needs t for each dropped u whose
    pairwise masks are in surviving inputs."""
    for u in sorted(u2):
        has_masks_in_sum = u in u3 or bool(ctx.graph.neighbours(u) & u3)
        answering = len(ctx.graph.neighbours(u) & responders)
        if has_masks_in_sum and answering < ctx.t:
            raise RoundAborted(stage, AbortReason.UNRECOVERABLE_DROPOUT,
                               f"client {u} has {answering} neighbours left to answer, "
                               f"t = {ctx.t}")


def unmask_requests(ctx: ServerContext, u2: frozenset[int], u3: frozenset[int],
                    recipients: list[int], sigs: tuple) -> list[UnmaskRequest]:
    """One request per recipient: b-shares of its neighbours in U3, s-shares of its neighbours
    in U2 \\ U3, and (malicious mode) the consistency signatures."""
    out = []
    for v in recipients:
        nb = ctx.graph.neighbours(v) & u2
        out.append(UnmaskRequest(ctx.session_id, ctx.round, v, tuple(sorted(nb & u3)),
                                 tuple(sorted(nb - u3)), sigs))
    return out
