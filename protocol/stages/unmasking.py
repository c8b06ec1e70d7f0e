"""Unmasking (Bonawitz et al. CCS 2017 section 4, round 4; Bell et al. CCS 2020 section 3).

Opened by the unmasking requests. Each client checks its request (no client both alive and
dead, every neighbour that shared keys accounted for, at least t alive, in malicious mode the
alive list equal to the signed U3 and a quorum of valid signatures) and answers with its
b-shares of the alive and its s-shares of the dead. The server robustly reconstructs b_u of
every survivor and s_u^SK of every dropped client with masks in the sum, checks each value
against what its dealer committed to, and removes the masks from the running sum.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from secagg import (
    KdfContext,
    KeyPair,
    PairwiseMask,
    SecAggError,
    Share,
    agree,
    decode,
    pairwise_sign,
    remove_masks,
)
from secagg.keyagreement import PURPOSE_MASK
from secagg.prg import SEED_BYTES

from ..config import Mode
from ..errors import AbortReason, RoundAborted
from ..messages import KEY_BYTES, AdvertiseKeys, UnmaskRequest, UnmaskResponse
from ..transcript import commit_self_seed
from ..transitions import Stage
from .advertise_keys import ClientKeys
from .common import Refusal, ServerContext
from .consistency_check import ClientSigned, check_signatures
from .masked_input import ClientShares, Summed
from .share_keys import ClientPeers, Routed

STAGE = Stage.UNMASKING


# -- client ---------------------------------------------------------------------------------
def client_unmask(keys: ClientKeys, peers: ClientPeers, shares: ClientShares,
                  signed: ClientSigned | None, m: UnmaskRequest) -> UnmaskResponse:
    """Check the request and answer it. Raises :class:`Refusal` naming the check that failed:
    a client never reveals both shares of one neighbour."""
    ctx, s = keys.ctx, keys.ctx.setup
    alive, dead = frozenset(m.alive), frozenset(m.dead)
    if ctx.id in dead:
        raise Refusal("dead list names this client")
    both = alive & dead
    if both:
        raise Refusal(f"clients listed both alive and dead: {sorted(both)[:5]}")
    known = shares.holders_of
    unknown = (alive | dead) - known
    if unknown:
        raise Refusal(f"unknown clients or non-neighbours in the request: {sorted(unknown)[:5]}")
    if alive | dead != known:
        raise Refusal("unmask request leaves neighbours that shared keys unaccounted for")
    if len(alive) < s.threshold:
        raise Refusal(f"only {len(alive)} alive neighbours, t = {s.threshold}")
    if ctx.mode == Mode.MALICIOUS:
        if alive != frozenset(signed.u3) & known:
            raise Refusal("alive list differs from the signed survivor set")
        check_signatures(keys, peers, signed, m.signatures)
    elif m.signatures:
        raise Refusal("unexpected signatures in semi-honest mode")
    return UnmaskResponse(s.session_id, s.round, ctx.id,
                          tuple((v, shares.held[v][0].to_bytes()) for v in sorted(alive)),
                          tuple((v, shares.held[v][1].to_bytes()) for v in sorted(dead)))


# -- server ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Unmasked:
    """What the round ends with: the aggregate of U3's inputs, and the holders whose shares
    robust reconstruction found wrong (holder -> [(owner, "b" or "s")])."""

    aggregate: np.ndarray = field(repr=False)
    bad_shares: dict[int, list[tuple[int, str]]]


class CollectResponses:
    """The server while Unmasking is open: keeps each response that matches its request."""

    def __init__(self, ctx: ServerContext, keys: Mapping[int, AdvertiseKeys], routed: Routed,
                 summed: Summed, requests: list[UnmaskRequest]) -> None:
        self._ctx, self._keys, self._routed, self._summed = ctx, keys, routed, summed
        self._requests = {r.recipient: r for r in requests}
        self._responses: dict[int, UnmaskResponse] = {}
        self._parsed: dict[int, tuple[list[tuple[int, Share]], list[tuple[int, Share]]]] = {}
        self._bad: dict[int, list[tuple[int, str]]] = {}
        self.held_bytes = 0

    @property
    def requests(self) -> Mapping[int, UnmaskRequest]:
        return MappingProxyType(self._requests)

    @property
    def responses(self) -> Mapping[int, UnmaskResponse]:
        return MappingProxyType(self._responses)

    @property
    def bad_shares(self) -> dict[int, list[tuple[int, str]]]:
        """A copy of holder -> [(owner, "b" or "s")]."""
        return {h: list(w) for h, w in self._bad.items()}

    def accept(self, m: UnmaskResponse) -> None:
        """Raises RemoteProtocolError for a response without a request, a duplicate, shares
        that do not match the request, or a malformed or misaddressed share."""
        ctx = self._ctx
        req = self._requests.get(m.sender)
        if req is None or m.sender in self._responses:
            raise ctx.refuse(STAGE, m, "no unmask request was sent to it, or a duplicate "
                             "response")
        if (tuple(o for o, _ in m.self_mask_shares) != req.alive
                or tuple(o for o, _ in m.key_shares) != req.dead):
            raise ctx.refuse(STAGE, m, "shares do not match the request")
        try:
            alive = [(o, Share.from_bytes(raw)) for o, raw in m.self_mask_shares]
            dead = [(o, Share.from_bytes(raw)) for o, raw in m.key_shares]
        except SecAggError as exc:
            raise ctx.refuse(STAGE, m, f"malformed share: {exc}") from None
        if any(sh.x != m.sender + 1 or sh.threshold != ctx.t for _, sh in alive + dead):
            raise ctx.refuse(STAGE, m, "share with the wrong x-coordinate or threshold")
        self._responses[m.sender] = m
        self._parsed[m.sender] = (alive, dead)
        self.held_bytes += sum(len(raw) + 8 for _, raw in m.self_mask_shares + m.key_shares)

    def close(self) -> Unmasked:
        """Reconstruct b_u for every survivor and s_u^SK for every dropped client with masks in
        the sum, validate each value against what its dealer advertised, remove the masks.
        Raises RoundAborted if a secret cannot be reconstructed or fails its check."""
        ctx, u2, u3 = self._ctx, self._routed.u2, self._summed.u3
        b_shares: dict[int, list[Share]] = {u: [] for u in u3}
        s_shares: dict[int, list[Share]] = {}
        for alive, dead in self._parsed.values():
            for owner, sh in alive:
                b_shares[owner].append(sh)
            for owner, sh in dead:
                s_shares.setdefault(owner, []).append(sh)
        seeds = [self._self_seed(u, b_shares[u]) for u in sorted(u3)]
        pairwise = []
        kdf = KdfContext(ctx.session_id, ctx.round, PURPOSE_MASK)
        for u in sorted(u2 - u3):
            alive_nbrs = sorted(ctx.graph.neighbours(u) & u3)
            if not alive_nbrs:
                continue
            s_u = self._mask_key(u, s_shares.get(u, []))
            for v in alive_nbrs:
                s_uv = agree(s_u, self._keys[v].s_pk, own_id=u, peer_id=v, context=kdf)
                pairwise.append(PairwiseMask(s_uv, pairwise_sign(v, u)))
        acc = self._summed.masked_sum
        remove_masks(acc, ring=ctx.ring, self_seeds=seeds, pairwise=pairwise)
        return Unmasked(acc, self.bad_shares)

    def _self_seed(self, u: int, shares: list[Share]) -> bytes:
        """b_u, checked against u's commitment (a forged share cannot change the sum)."""
        ctx = self._ctx
        seed, corrected, _ = self._reconstruct(u, "b", shares)
        if commit_self_seed(ctx.session_id, ctx.round, u, seed) != self._keys[u].b_commitment:
            raise RoundAborted(STAGE, AbortReason.BAD_RECONSTRUCTION, f"b_{u} does not match "
                               "its commitment (forged shares, or a bad dealing)")
        self._note_wrong(u, "b", corrected)
        if len(seed) != SEED_BYTES:  # committed to by u itself: u's own fault
            raise RoundAborted(STAGE, AbortReason.BAD_DEALING,
                               f"b_{u} is {len(seed)} bytes, not {SEED_BYTES}, and matches "
                               f"client {u}'s commitment: client {u} dealt an invalid seed",
                               clients=(u,))
        return seed

    def _mask_key(self, u: int, shares: list[Share]) -> KeyPair:
        """s_u^SK of a dropped client, checked against its advertised s_u^PK."""
        t = self._ctx.t
        raw, corrected, agreeing = self._reconstruct(u, "s", shares)
        s_u = KeyPair.from_private_bytes(raw) if len(raw) == KEY_BYTES else None
        if s_u is None or s_u.public_bytes != self._keys[u].s_pk:
            what = (f"is {len(raw)} bytes, not {KEY_BYTES}" if s_u is None
                    else f"does not match s_{u}^PK")
            if not corrected and agreeing >= 2 * t - 1:
                raise RoundAborted(STAGE, AbortReason.BAD_DEALING,
                                   f"s_{u}^SK {what}, and {agreeing} shares agree: client {u} "
                                   "dealt an invalid key", clients=(u,))
            raise RoundAborted(STAGE, AbortReason.BAD_RECONSTRUCTION,
                               f"s_{u}^SK {what} (forged shares, or a bad dealing)")
        self._note_wrong(u, "s", corrected)
        return s_u

    def _reconstruct(self, owner: int, kind: str,
                     shares: list[Share]) -> tuple[bytes, tuple[int, ...], int]:
        """The secret ``kind`` (b or s) of ``owner`` from its holders' shares: ``(secret,
        holders of wrong shares, number of shares that agree)``.

        Shares of the most common dealing id are decoded (:func:`secagg.decode`: the cheap
        consistency check, then correction of up to floor((N - t) / 2) wrong shares); a share
        of another dealing id counts as wrong (an erasure). An undecodable set aborts.

        Nothing here blames anyone: the caller names the wrong holders only once the value has
        passed its check (decoding steered by forgers past the radius would name honest ones),
        and blames the dealer only on evidence forgers cannot fake. For b_u that is the
        dealer's own commitment. For s_u it is at least 2t - 1 agreeing shares and none
        corrected: colluding holders can shift their shares onto another polynomial through the
        honest shares only while fewer than t honest holders answer, so faking agreement among
        2t - 1 needs t corrupted neighbours, which the parameters exclude (Bell et al. CCS
        2020, section 4: fewer than t corrupted neighbours, except with probability 2^-40).
        """
        ids = Counter(sh.dealing_id for sh in shares)
        main = ids.most_common(1)[0][0] if ids else None
        foreign = tuple(sh.x - 1 for sh in shares if sh.dealing_id != main)
        kept = [sh for sh in shares if sh.dealing_id == main]
        try:
            got = decode(kept, threshold=self._ctx.t)
        except SecAggError as exc:
            raise RoundAborted(STAGE, AbortReason.CANNOT_RECONSTRUCT,
                               f"{kind}_{owner}: {exc}") from None
        wrong = tuple(sorted(foreign + tuple(x - 1 for x in got.bad_x)))
        return got.secret, wrong, len(kept) - len(got.bad_x)

    def _note_wrong(self, owner: int, kind: str, holders: tuple[int, ...]) -> None:
        """Record the holders whose shares of a value that passed its check were wrong."""
        for h in holders:
            self._bad.setdefault(h, []).append((owner, kind))
