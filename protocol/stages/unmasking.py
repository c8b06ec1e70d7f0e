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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from secagg import (
    KdfContext,
    KeyPair,
    PairwiseMask,
    SecAggError,
    ShareTable,
    agree,
    decode_many,
    pairwise_sign,
    remove_masks,
)
from secagg.keyagreement import PURPOSE_MASK
from secagg.prg import SEED_BYTES
from secagg.shamir import SHARE_BYTES, check_held

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
#: Threads that remove masks in :meth:`CollectResponses.close` (1: none, all in the caller's
#: thread). See :func:`set_mask_workers`.
_mask_workers = 1


def set_mask_workers(workers: int) -> int:
    """Use ``workers`` threads to remove masks at the end of every round (1 = the caller's
    thread only, the default); returns the previous count. Raises ValueError for a count
    outside [1, 64].

    Each worker agrees its share of the pairwise secrets and regenerates and subtracts its
    share of the keystreams into its own accumulator (X25519, AES-CTR and numpy release the
    GIL), and the partial sums are added at the end: addition mod 2^b is commutative, so the
    aggregate is the same whatever the count. A host with idle cores sets it; the core itself
    starts no thread unless asked (docs/architecture.md section 1).
    """
    global _mask_workers  # noqa: PLW0603 - one process-wide setting, as a host chooses it
    if type(workers) is not int or not 1 <= workers <= 64:
        raise ValueError(f"workers must be an int in [1, 64], got {workers!r}")
    previous, _mask_workers = _mask_workers, workers
    return previous


@dataclass(frozen=True)
class Unmasked:
    """What the round ends with: the aggregate of U3's inputs, and the holders whose shares
    robust reconstruction found wrong (holder -> [(owner, "b" or "s")])."""

    aggregate: np.ndarray = field(repr=False)
    bad_shares: dict[int, list[tuple[int, str]]]


@dataclass(frozen=True)
class _Outcome:
    """One reconstructed value: the secret (or the error that stopped it), the holders of
    wrong shares, and the number of shares that agree."""

    secret: bytes | None = field(repr=False)
    error: SecAggError | None
    wrong: tuple[int, ...]
    agreeing: int


class CollectResponses:
    """The server while Unmasking is open: keeps each response that matches its request."""

    def __init__(self, ctx: ServerContext, keys: Mapping[int, AdvertiseKeys], routed: Routed,
                 summed: Summed, requests: list[UnmaskRequest]) -> None:
        self._ctx, self._keys, self._routed, self._summed = ctx, keys, routed, summed
        self._requests = {r.recipient: r for r in requests}
        self._responses: dict[int, UnmaskResponse] = {}
        # per accepted response, in order: its encoded shares, b-shares first (parsed in bulk
        # when the stage closes)
        self._blobs: list[bytes] = []
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
        if ([o for o, _ in m.self_mask_shares] != list(req.alive)
                or [o for o, _ in m.key_shares] != list(req.dead)):
            raise ctx.refuse(STAGE, m, "shares do not match the request")
        raws = [raw for _, raw in m.self_mask_shares] + [raw for _, raw in m.key_shares]
        if raws and set(map(len, raws)) != {SHARE_BYTES}:
            raise ctx.refuse(STAGE, m, f"malformed share: a share must be {SHARE_BYTES} bytes")
        blob = b"".join(raws)
        try:  # strict, as Share.from_bytes, and addressed from this holder with the round's t
            check_held(blob, x=m.sender + 1, threshold=ctx.t)
        except SecAggError as exc:
            raise ctx.refuse(STAGE, m, f"malformed or misaddressed share: {exc}") from None
        self._responses[m.sender] = m
        self._blobs.append(blob)
        self.held_bytes += len(blob) + 8 * len(raws)

    def close(self) -> Unmasked:
        """Reconstruct b_u for every survivor and s_u^SK for every dropped client with masks in
        the sum, validate each value against what its dealer advertised, remove the masks.
        Raises RoundAborted if a secret cannot be reconstructed or fails its check."""
        ctx, u2, u3 = self._ctx, self._routed.u2, self._summed.u3
        survivors = sorted(u3)
        dropped = [u for u in sorted(u2 - u3) if ctx.graph.neighbours(u) & u3]
        outcomes = self._reconstruct_all(survivors, dropped)
        seeds = [self._self_seed(u, outcomes[i]) for i, u in enumerate(survivors)]
        keys = [self._mask_key(u, outcomes[len(survivors) + i]) for i, u in enumerate(dropped)]
        pairs = [(s_u, u, v) for s_u, u in zip(keys, dropped, strict=True)
                 for v in sorted(ctx.graph.neighbours(u) & u3)]
        _remove_all_masks(ctx, self._keys, self._summed.masked_sum, seeds, pairs)
        return Unmasked(self._summed.masked_sum, self.bad_shares)

    def _reconstruct_all(self, survivors: list[int], dropped: list[int]) -> list[_Outcome]:
        """b_u of every survivor, then s_u^SK of every dropped client in ``dropped``, from
        their holders' shares, in one batch (:func:`secagg.decode_many`): ``(secret or error,
        holders of wrong shares, number of shares that agree)`` each.

        Shares of the most common dealing id of each value are decoded (the cheap consistency
        check, then correction of up to floor((N - t) / 2) wrong shares); a share of another
        dealing id counts as wrong (an erasure).

        Nothing here blames anyone: the caller names the wrong holders only once the value has
        passed its check (decoding steered by forgers past the radius would name honest ones),
        and blames the dealer only on evidence forgers cannot fake. For b_u that is the
        dealer's own commitment. For s_u it is at least 2t - 1 agreeing shares and none
        corrected: colluding holders can shift their shares onto another polynomial through the
        honest shares only while fewer than t honest holders answer, so faking agreement among
        2t - 1 needs t corrupted neighbours, which the parameters exclude (Bell et al. CCS
        2020, section 4: fewer than t corrupted neighbours, except with probability 2^-40).
        """
        count = len(survivors) + len(dropped)
        table = ShareTable.from_bytes(b"".join(self._blobs))
        responses = list(self._responses.values())
        owners = np.array([o for r in responses for o, _ in r.self_mask_shares + r.key_shares],
                          dtype=np.int64).reshape(-1)
        kinds = np.tile([True, False], len(responses))  # b-shares, then s-shares, per response
        runs = [n for r in responses for n in (len(r.self_mask_shares), len(r.key_shares))]
        is_b = np.repeat(kinds, runs)
        group = np.full(len(table), -1, dtype=np.int64)
        for ids, mask, base in ((survivors, is_b, 0), (dropped, ~is_b, len(survivors))):
            ref = np.asarray(ids, dtype=np.int64)
            if ref.size:
                pos = np.minimum(np.searchsorted(ref, owners), ref.size - 1)
                hit = mask & (ref[pos] == owners)
                group[hit] = base + pos[hit]
        rows = np.flatnonzero(group >= 0)  # in accept order
        if rows.size < len(table):
            table, group = table.take(rows), group[rows]
        kept, foreign = _main_dealing(table, group, count)
        wrong_of: dict[int, list[int]] = {}  # value -> holders of a share of another dealing
        for g, x in zip(group[foreign].tolist(), table.x[foreign].tolist(), strict=True):
            wrong_of.setdefault(g, []).append(x - 1)
        if foreign.size:
            table, group = table.take(kept), group[kept]
        results = decode_many(table, group, threshold=self._ctx.t, count=count)
        sizes = np.bincount(group, minlength=count).tolist()
        out = []
        for g, got in enumerate(results):
            foreign_g = wrong_of.get(g, [])
            if isinstance(got, SecAggError):
                out.append(_Outcome(None, got, (), 0))
                continue
            wrong = tuple(sorted(foreign_g + [x - 1 for x in got.bad_x]))
            out.append(_Outcome(got.secret, None, wrong, sizes[g] - len(got.bad_x)))
        return out

    def _secret(self, owner: int, kind: str, got: _Outcome) -> bytes:
        if got.error is not None:
            raise RoundAborted(STAGE, AbortReason.CANNOT_RECONSTRUCT,
                               f"{kind}_{owner}: {got.error}")
        return got.secret

    def _self_seed(self, u: int, got: _Outcome) -> bytes:
        """b_u, checked against u's commitment (a forged share cannot change the sum)."""
        ctx = self._ctx
        seed = self._secret(u, "b", got)
        if commit_self_seed(ctx.session_id, ctx.round, u, seed) != self._keys[u].b_commitment:
            raise RoundAborted(STAGE, AbortReason.BAD_RECONSTRUCTION, f"b_{u} does not match "
                               "its commitment (forged shares, or a bad dealing)")
        self._note_wrong(u, "b", got.wrong)
        if len(seed) != SEED_BYTES:  # committed to by u itself: u's own fault
            raise RoundAborted(STAGE, AbortReason.BAD_DEALING,
                               f"b_{u} is {len(seed)} bytes, not {SEED_BYTES}, and matches "
                               f"client {u}'s commitment: client {u} dealt an invalid seed",
                               clients=(u,))
        return seed

    def _mask_key(self, u: int, got: _Outcome) -> KeyPair:
        """s_u^SK of a dropped client, checked against its advertised s_u^PK."""
        t = self._ctx.t
        raw = self._secret(u, "s", got)
        s_u = KeyPair.from_private_bytes(raw) if len(raw) == KEY_BYTES else None
        if s_u is None or s_u.public_bytes != self._keys[u].s_pk:
            what = (f"is {len(raw)} bytes, not {KEY_BYTES}" if s_u is None
                    else f"does not match s_{u}^PK")
            if not got.wrong and got.agreeing >= 2 * t - 1:
                raise RoundAborted(STAGE, AbortReason.BAD_DEALING,
                                   f"s_{u}^SK {what}, and {got.agreeing} shares agree: client "
                                   f"{u} dealt an invalid key", clients=(u,))
            raise RoundAborted(STAGE, AbortReason.BAD_RECONSTRUCTION,
                               f"s_{u}^SK {what} (forged shares, or a bad dealing)")
        self._note_wrong(u, "s", got.wrong)
        return s_u

    def _note_wrong(self, owner: int, kind: str, holders: tuple[int, ...]) -> None:
        """Record the holders whose shares of a value that passed its check were wrong."""
        for h in holders:
            self._bad.setdefault(h, []).append((owner, kind))


def _main_dealing(table: ShareTable, group: np.ndarray, count: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Rows of each value's most common dealing id (ties: the one seen first, in accept order,
    as :class:`collections.Counter` orders them), and the other rows (erasures)."""
    ids = table.dealing_ids
    first_row = np.zeros(count, dtype=np.int64)
    present, first = np.unique(group, return_index=True)
    first_row[present] = first
    keep = ~(ids != ids[first_row[group]]).any(axis=1)
    for g in np.unique(group[~keep]).tolist():
        rows = np.flatnonzero(group == g).tolist()
        main = Counter(table.dealing_id(r) for r in rows).most_common(1)[0][0]
        keep[rows] = [table.dealing_id(r) == main for r in rows]
    return np.flatnonzero(keep), np.flatnonzero(~keep)


def _remove_all_masks(ctx: ServerContext, keys: Mapping[int, AdvertiseKeys], acc: np.ndarray,
                      seeds: list[bytes], pairs: list[tuple[KeyPair, int, int]]) -> None:
    """Subtract PRG(b_u) for every seed and, for each (s_u^SK, dropped u, surviving v), the
    pairwise mask v added toward u, from ``acc`` in place (Bonawitz et al. CCS 2017, section 4,
    Unmasking), on :data:`_mask_workers` threads: each agrees its share of the pairwise
    secrets, then (once every agreement has succeeded, so a failure leaves ``acc`` untouched)
    removes its share of the masks into its own accumulator, the first into ``acc`` itself;
    the partial sums are added at the end."""
    kdf = KdfContext(ctx.session_id, ctx.round, PURPOSE_MASK)

    def agreed(part: list[tuple[KeyPair, int, int]]) -> list[PairwiseMask]:
        return [PairwiseMask(agree(s_u, keys[v].s_pk, own_id=u, peer_id=v, context=kdf),
                             pairwise_sign(v, u)) for s_u, u, v in part]

    def removed(out: np.ndarray, part_seeds: list[bytes],
                pairwise: list[PairwiseMask]) -> np.ndarray:
        return remove_masks(out, ring=ctx.ring, self_seeds=part_seeds, pairwise=pairwise)

    workers = min(_mask_workers, max(len(seeds) + len(pairs), 1))
    if workers == 1:
        removed(acc, seeds, agreed(pairs))
        return
    # seeds and pairs dealt round-robin (a pair costs one key agreement more than a seed)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pairwise = list(pool.map(agreed, [pairs[w::workers] for w in range(workers)]))
        outs = [acc] + [ctx.ring.zeros(acc.shape[0]) for _ in range(workers - 1)]
        parts = list(pool.map(removed, outs, [seeds[w::workers] for w in range(workers)],
                              pairwise))
    for part in parts[1:]:
        np.add(acc, part, out=acc)
    ctx.ring.reduce(acc, out=acc)
