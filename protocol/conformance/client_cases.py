"""``secagg conformance client``: every attack of threat_model.md's table that a server can
make on a client, played by the scripted server (:mod:`protocol.conformance.scripted_server`)
against a client under test, each judged on what the client must do.

An attack case passes when the client refuses the tampered message (at that message, or for an
attack only visible later, no later than the stage named), sends nothing in answer to it, and
never reveals a share the honest request would not have asked for (never both shares of one
neighbour, never its input unmasked). A control case passes when the client completes an honest
round (with a dropout to recover from) and the server's sum of the survivors' inputs is right.
A client that refuses everything passes no control case; one that accepts a lie fails its case.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from secagg import AeadContext, Share, SigningKey, decrypt, encrypt
from secagg.shamir import SHARE_BYTES

from ..config import derive_graph_seed
from ..messages import (
    KeysBroadcast,
    Message,
    Setup,
    SharesDelivery,
    UnmaskRequest,
)
from ..transcript import (
    ADVERTISE_LABEL,
    CONSISTENCY_LABEL,
    advertise_bytes,
    key_tree,
    survivors_bytes,
)
from ..transitions import STAGES, Stage
from ..wire import WIRE_VERSION, encode
from .common import ADV, BOTH, CONS, MAL, MASK, SEMI, SHARE, UNMASK
from .report import CaseResult
from .scripted_server import Cohort, PlayedRound, Tamper, play
from .targets import ClientTarget

OUTSIDER = 100  # an id outside every cohort the suite plays


@dataclass(frozen=True)
class ClientCase:
    """One case: its name, what must happen, the modes it is played in and how."""

    name: str
    expected: str
    modes: tuple[str, ...]
    stage: Stage | None  # the stage of the tampered message (None: a control case)
    tamper: Callable[[Message, PlayedRound], list[bytes]] | None = None
    refuse_by: Stage | None = None  # the latest stage the refusal may come at
    drop: Stage | None = None  # the stage at which one neighbour of the client drops
    before: Callable[[Cohort, ClientTarget], PlayedRound] | None = None  # a round played first
    replay: bool = False  # the case's round reuses the session id of the round played before


# -- tampering helpers ----------------------------------------------------------------------------
def _flip(data: bytes, at: int = -1) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


def _neighbour(p: PlayedRound, skip: int = 0) -> int:
    return p.neighbours()[skip]


def _stranger(p: PlayedRound) -> int:
    return next(v for v in range(p.cohort.n) if v != p.target and v not in p.neighbours())


def _keys_kept(m: KeysBroadcast, keep: Callable[[int], bool]) -> KeysBroadcast:
    """``m`` with only the entries (and their proofs) whose id ``keep`` accepts."""
    return dataclasses.replace(m, keys=tuple(e for e in m.keys if keep(e[0])),
                               proofs=tuple(p for p in m.proofs if keep(p[0])))


def _entry(m: KeysBroadcast, v: int, **change) -> KeysBroadcast:
    names = ("id", "c_pk", "s_pk", "commitment", "sig")
    keys = tuple(tuple(change.get(n, x) for n, x in zip(names, e, strict=True)) if e[0] == v
                 else e for e in m.keys)
    return dataclasses.replace(m, keys=keys)


def _twice(m: Message, _: PlayedRound) -> list[bytes]:
    return [encode(m), encode(m)]


def _one(f: Callable[[Message, PlayedRound], Message]) -> Callable:
    return lambda m, p: [encode(f(m, p))]


def _previous(stage: Stage) -> Callable[[Message, PlayedRound], list[bytes]]:
    """The message of the same stage from the round played before (another session)."""
    return lambda m, p: [encode(p.before.honest[stage])]


def _honest_first(cohort: Cohort, target: ClientTarget) -> PlayedRound:
    return play(cohort, target, seed=1)


def _cut_after(stage: Stage) -> Callable[[Cohort, ClientTarget], PlayedRound]:
    """A first round in which the client under test hears nothing after ``stage`` (the server
    stops there; a program target is stopped with its session)."""
    def first(cohort: Cohort, target: ClientTarget) -> PlayedRound:
        last = STAGES.index(stage)
        return play(cohort, target, seed=1, tamper=lambda st, m, p: (
            [encode(m)] if STAGES.index(st) <= last else []))
    return first


# -- Setup ----------------------------------------------------------------------------------------
def _setup_cases() -> Iterator[ClientCase]:
    refuse = "refuses the Setup; sends nothing"
    yield ClientCase("downgrade-to-semi-honest", f"{refuse} (the pinned mode is malicious)", MAL,
                     ADV, _one(lambda m, p: dataclasses.replace(m, mode="semi-honest")))
    yield ClientCase("weakened-threshold", f"{refuse} (t below the pinned configuration's)",
                     BOTH, ADV, _one(lambda m, p: dataclasses.replace(m,
                                                                      threshold=m.threshold - 1)))
    yield ClientCase("weakened-min-survivors", f"{refuse} (min_survivors below the pinned "
                     "configuration's)", BOTH, ADV,
                     _one(lambda m, p: dataclasses.replace(m, min_survivors=m.min_survivors - 1)))
    yield ClientCase("other-bit-width", f"{refuse} (a ring the configuration does not give)",
                     BOTH, ADV, _one(lambda m, p: dataclasses.replace(m, bits=m.bits * 2)))
    yield ClientCase("chosen-graph-seed", f"{refuse} (the graph seed is not derived from "
                     "session, round and cohort)", BOTH, ADV,
                     _one(lambda m, p: dataclasses.replace(m, graph_seed=bytes(32))))
    yield ClientCase("not-in-the-cohort", f"{refuse} (the cohort does not list the client)",
                     BOTH, ADV, _one(_without_target))
    yield ClientCase("setup-addressed-to-another-client", refuse, BOTH, ADV,
                     _one(lambda m, p: dataclasses.replace(m, recipient=_neighbour(p))))
    yield ClientCase("replayed-session", f"{refuse} (a session id this identity already took "
                     "part in)", BOTH, ADV, None, before=_honest_first, replay=True)
    for stage, modes in ((ADV, BOTH), (SHARE, BOTH), (MASK, BOTH), (CONS, MAL)):
        yield ClientCase(f"replayed-session-cut-after-{stage.replace('_', '-')}",
                         f"{refuse} (a session this identity left after {stage}: the session "
                         "is claimed at its Setup, not when it ends)", modes, ADV, None,
                         before=_cut_after(stage), replay=True)
    yield ClientCase("other-neighbours", f"{refuse} (a k other than the pinned "
                     "configuration's; only k differs)", BOTH, ADV,
                     _one(lambda m, p: dataclasses.replace(m, neighbours=m.neighbours + 2)))
    yield ClientCase("unknown-wire-version", f"{refuse} (wire version {WIRE_VERSION + 1})",
                     BOTH, ADV, lambda m, p: [bytes([WIRE_VERSION + 1]) + encode(m)[1:]])
    yield ClientCase("previous-wire-version", f"{refuse} (wire version {WIRE_VERSION - 1}, "
                     "whose vectors are whole words)", BOTH, ADV,
                     lambda m, p: [bytes([WIRE_VERSION - 1]) + encode(m)[1:]])
    yield ClientCase("truncated-message", refuse, BOTH, ADV, lambda m, p: [encode(m)[:-1]])
    yield ClientCase("trailing-bytes", refuse, BOTH, ADV, lambda m, p: [encode(m) + b"\x00"])
    yield ClientCase("garbage-bytes", refuse, BOTH, ADV, lambda m, p: [os.urandom(64)])


def _without_target(m: Setup, p: PlayedRound) -> Setup:
    """A Setup that is right in every other respect for the cohort without this client (its
    graph seed derived and its parameters resolved for that cohort)."""
    cohort = tuple(u for u in m.cohort if u != p.target)
    params = p.cohort.config.resolve(len(cohort))
    return dataclasses.replace(m, cohort=cohort, neighbours=params.neighbours,
                               threshold=params.threshold, min_survivors=params.min_survivors,
                               graph_seed=derive_graph_seed(m.session_id, m.round, cohort))


# -- KeysBroadcast --------------------------------------------------------------------------------
def _keys_cases() -> Iterator[ClientCase]:
    refuse = "refuses the key broadcast; sends no ShareKeys"
    yield ClientCase("own-key-missing", refuse, BOTH, SHARE,
                     _one(lambda m, p: _keys_kept(m, lambda v: v != p.target)))
    yield ClientCase("own-key-misreported", refuse, BOTH, SHARE,
                     _one(lambda m, p: _entry(m, p.target, c_pk=_other_key(m, p))))
    yield ClientCase("keys-of-a-non-neighbour", refuse, BOTH, SHARE, _one(_with_stranger))
    yield ClientCase("duplicate-public-key", f"{refuse} (two neighbours advertised as one key)",
                     BOTH, SHARE, _one(lambda m, p: _resigned(
                         m, p, _neighbour(p), c_pk=_key_of(m, _neighbour(p, 1)))))
    yield ClientCase("signature-in-semi-honest-mode", refuse, SEMI, SHARE,
                     _one(lambda m, p: _entry(m, _neighbour(p), sig=bytes(64))))
    yield ClientCase("too-few-neighbour-keys", f"{refuse} (fewer than t neighbours)", BOTH,
                     SHARE, _one(lambda m, p: _keys_kept(
                         m, lambda v: v in (p.target, _neighbour(p)))))
    yield ClientCase("low-order-encryption-key", "refuses the all-zero X25519 key of a "
                     "neighbour before any share leaves", BOTH, SHARE,
                     _one(lambda m, p: _resigned(m, p, _neighbour(p), c_pk=bytes(32))))
    yield ClientCase("low-order-mask-key", "refuses the all-zero X25519 mask key of a "
                     "neighbour before its masked input leaves", BOTH, SHARE,
                     _one(lambda m, p: _resigned(m, p, _neighbour(p), s_pk=bytes(32))),
                     refuse_by=MASK)
    yield ClientCase("forged-key-signature", f"{refuse} (a neighbour's advertisement does "
                     "not verify)", MAL, SHARE,
                     _one(lambda m, p: _entry(m, _neighbour(p), sig=bytes(64))))
    yield ClientCase("key-commitment-removed", f"{refuse} (malicious mode needs the key "
                     "commitment)", MAL, SHARE,
                     _one(lambda m, p: dataclasses.replace(m, key_root=b"", key_count=0,
                                                           proofs=())))
    yield ClientCase("key-outside-the-commitment", f"{refuse} (an inclusion proof that does "
                     "not lead to the root)", MAL, SHARE, _one(_bad_proof))
    yield ClientCase("key-commitment-of-another-size", f"{refuse} (a tree that is not the "
                     "cohort's size)", MAL, SHARE,
                     _one(lambda m, p: dataclasses.replace(m, key_count=m.key_count + 1)))
    yield ClientCase("second-key-broadcast", "answers the first; refuses the second", BOTH,
                     SHARE, _twice)
    yield ClientCase("key-broadcast-of-another-session", refuse, BOTH, SHARE,
                     _previous(SHARE), before=_honest_first)
    yield ClientCase("key-broadcast-of-another-round", refuse, BOTH, SHARE,
                     _one(lambda m, p: dataclasses.replace(m, round=m.round + 1)))


def _other_key(m: KeysBroadcast, p: PlayedRound) -> bytes:
    return os.urandom(32)


def _key_of(m: KeysBroadcast, v: int) -> bytes:
    return next(e[1] for e in m.keys if e[0] == v)


def _with_stranger(m: KeysBroadcast, p: PlayedRound) -> KeysBroadcast:
    """``m`` with a non-neighbour's genuine advertisement added (with its inclusion proof in
    malicious mode: the server's key tree already holds every member's leaf)."""
    w = _stranger(p)
    adv = p.server.keys[w]
    keys = tuple(sorted(m.keys + ((w, adv.c_pk, adv.s_pk, adv.b_commitment, adv.signature),)))
    return _recommitted(m, p, keys)


def _resigned(m: KeysBroadcast, p: PlayedRound, v: int, **change) -> KeysBroadcast:
    """``m`` with neighbour v's advertisement changed as a malicious server holding v's
    identity would make it: re-signed, and the key commitment rebuilt over it, so that only
    the change itself is wrong."""
    changed = _entry(m, v, **change)
    if not m.key_root:
        return changed
    s, (u, c, sk, com, _) = p.server, next(e for e in changed.keys if e[0] == v)
    ident = SigningKey.from_private_bytes(p.cohort.identities[v])
    sig = ident.sign(advertise_bytes(s.session_id, s.round, s.graph_seed, u, c, sk, com),
                     label=ADVERTISE_LABEL)
    return _recommitted(m, p, _entry(changed, v, sig=sig).keys)


def _recommitted(m: KeysBroadcast, p: PlayedRound, keys: tuple) -> KeysBroadcast:
    """``m`` with the entries ``keys`` and, in malicious mode, a key commitment over them and
    the server's other entries (semi-honest messages carry none)."""
    if not m.key_root:
        return dataclasses.replace(m, keys=keys)
    s = p.server
    entries = {u: (u, a.c_pk, a.s_pk, a.b_commitment, a.signature) for u, a in s.keys.items()}
    entries.update({e[0]: e for e in keys})
    tree = key_tree(s.session_id, s.round, s.graph_seed, s.cohort, entries)
    index = {u: i for i, u in enumerate(s.cohort)}
    proofs = tuple((u, index[u], tree.proof(index[u])) for u, *_ in keys)
    return dataclasses.replace(m, keys=keys, key_root=tree.root, key_count=tree.count,
                               proofs=proofs)


def _bad_proof(m: KeysBroadcast, p: PlayedRound) -> KeysBroadcast:
    v = _neighbour(p)
    proofs = tuple((u, i, _flip(path) if u == v and path else path) for u, i, path in m.proofs)
    if proofs == m.proofs:  # a one-leaf path: move the entry's index instead
        proofs = tuple((u, (i + 1) % m.key_count if u == v else i, path)
                       for u, i, path in m.proofs)
    return dataclasses.replace(m, proofs=proofs)


# -- SharesDelivery -------------------------------------------------------------------------------
def _shares_cases() -> Iterator[ClientCase]:
    refuse = "refuses the delivery; sends no masked input"
    yield ClientCase("reflected-ciphertext", f"{refuse} (its own ciphertext returned as a "
                     "neighbour's)", BOTH, MASK, _one(_reflected))
    yield ClientCase("re-addressed-ciphertext", f"{refuse} (a ciphertext a neighbour made for "
                     "another client)", BOTH, MASK, _one(_readdressed))
    yield ClientCase("tampered-ciphertext", refuse, BOTH, MASK, _one(
        lambda m, p: _ciphertext(m, _neighbour(p), lambda ct: _flip(ct, 20))))
    yield ClientCase("ciphertext-of-another-session", f"{refuse} (the same neighbour's "
                     "ciphertext from another session)", BOTH, MASK, _one(_old_ciphertext),
                     before=_honest_first)
    yield ClientCase("shares-from-a-non-neighbour", refuse, BOTH, MASK, _one(_stranger_share))
    yield ClientCase("share-with-another-x", f"{refuse} (a neighbour dealt it the share of "
                     "another x-coordinate)", BOTH, MASK, _one(lambda m, p: _redealt(
                         m, p, lambda sh: dataclasses.replace(sh, x=sh.x + 1))))
    yield ClientCase("share-with-another-threshold", f"{refuse} (a neighbour dealt a share "
                     "of another threshold)", BOTH, MASK, _one(lambda m, p: _redealt(
                         m, p, lambda sh: dataclasses.replace(sh, threshold=sh.threshold + 1))))
    yield ClientCase("share-plaintext-of-another-length", refuse, BOTH, MASK,
                     _one(lambda m, p: _redealt(m, p, None)))
    yield ClientCase("second-shares-delivery", "masks its input once; refuses the second "
                     "delivery", BOTH, MASK, _twice)
    yield ClientCase("shares-delivery-of-another-session", refuse, BOTH, MASK,
                     _previous(MASK), before=_honest_first)


def _ciphertext(m: SharesDelivery, v: int, change: Callable[[bytes], bytes]) -> SharesDelivery:
    return dataclasses.replace(m, ciphertexts=tuple((u, change(ct) if u == v else ct)
                                                    for u, ct in m.ciphertexts))


def _sent_by(p: PlayedRound, sender: int, receiver: int) -> bytes:
    return dict(p.server.share_msgs[sender].ciphertexts)[receiver]


def _reflected(m: SharesDelivery, p: PlayedRound) -> SharesDelivery:
    v = _neighbour(p)
    return _ciphertext(m, v, lambda ct: _sent_by(p, p.target, v))


def _readdressed(m: SharesDelivery, p: PlayedRound) -> SharesDelivery:
    v = _neighbour(p)
    w = next(u for u, _ in p.server.share_msgs[v].ciphertexts if u != p.target)
    return _ciphertext(m, v, lambda ct: _sent_by(p, v, w))


def _old_ciphertext(m: SharesDelivery, p: PlayedRound) -> SharesDelivery:
    """A neighbour's ciphertext to this client in the round played before, in place of its
    ciphertext of this round (the graph changes with the session: a neighbour of both)."""
    old = dict(p.before.honest[MASK].ciphertexts)
    v = next(u for u, _ in m.ciphertexts if u in old)
    return _ciphertext(m, v, lambda ct: old[v])


def _redealt(m: SharesDelivery, p: PlayedRound,
             change: Callable[[Share], Share] | None) -> SharesDelivery:
    """A neighbour that is corrupt deals this client a bad share pair, authentically
    encrypted: its b-share changed by ``change``, or (``change`` None) a plaintext one byte
    short. The scripted server plays the neighbour, so it encrypts with the neighbour's key."""
    s, v = p.server, _neighbour(p)
    key = p.peers[v]._peers.enc_keys[p.target]
    ctx = AeadContext(s.session_id, s.round, v, p.target)
    old = dict(p.server.share_msgs[v].ciphertexts)[p.target]
    plain = decrypt(key, old, ctx)
    if change is None:
        plain = plain[:-1]
    else:
        b = change(Share.from_bytes(plain[:SHARE_BYTES]))
        plain = b.to_bytes() + plain[SHARE_BYTES:]
    return _ciphertext(m, v, lambda ct: encrypt(key, plain, ctx))


def _stranger_share(m: SharesDelivery, p: PlayedRound) -> SharesDelivery:
    w = _stranger(p)
    ct = next(iter(dict(m.ciphertexts).values()))
    return dataclasses.replace(m, ciphertexts=tuple(sorted(m.ciphertexts + ((w, ct),))))


# -- ConsistencyCheck (malicious mode) -----------------------------------------------------------
def _consistency_cases() -> Iterator[ClientCase]:
    refuse = "refuses to sign"
    yield ClientCase("survivors-below-the-minimum", f"{refuse} a survivor set below "
                     "min_survivors", MAL, CONS,
                     _one(lambda m, p: dataclasses.replace(m, survivors=(p.target,))))
    yield ClientCase("survivors-outside-the-cohort", refuse, MAL, CONS,
                     _one(lambda m, p: dataclasses.replace(
                         m, survivors=tuple(sorted(m.survivors + (OUTSIDER,))))))
    yield ClientCase("survivors-without-the-client", refuse, MAL, CONS,
                     _one(lambda m, p: dataclasses.replace(
                         m, survivors=tuple(v for v in m.survivors if v != p.target))))
    yield ClientCase("second-consistency-request", "signs once; refuses the second request",
                     MAL, CONS, _twice)


# -- Unmasking ------------------------------------------------------------------------------------
def _unmask_cases() -> Iterator[ClientCase]:
    refuse = "refuses the request; reveals no share"
    yield ClientCase("neighbour-alive-and-dead", f"{refuse} (both shares of one neighbour "
                     "asked for)", BOTH, UNMASK, _one(_alive_and_dead))
    yield ClientCase("dead-list-names-the-client", refuse, BOTH, UNMASK,
                     _one(lambda m, p: dataclasses.replace(
                         m, dead=tuple(sorted(m.dead + (p.target,))))))
    yield ClientCase("unknown-client-in-request", refuse, BOTH, UNMASK,
                     _one(lambda m, p: dataclasses.replace(
                         m, alive=tuple(sorted(m.alive + (OUTSIDER,))))))
    yield ClientCase("neighbour-unaccounted", f"{refuse} (a neighbour neither alive nor dead)",
                     BOTH, UNMASK, _one(_unaccounted))
    yield ClientCase("survivors-below-threshold", f"{refuse} (fewer than t alive neighbours: "
                     "the rest listed dead)", SEMI, UNMASK, _one(_few_alive))
    yield ClientCase("split-view-alive-list", f"{refuse} (the alive list differs from the "
                     "signed survivor set)", MAL, UNMASK, _one(_split_view))
    yield ClientCase("split-view-signatures-over-another-set", f"{refuse} (a quorum of the "
                     "other members signed a survivor set other than the one this client "
                     "signed)", MAL, UNMASK, _one(_signed_elsewhere))
    yield ClientCase("too-few-consistency-signatures", f"{refuse} (below the quorum)", MAL,
                     UNMASK, _one(lambda m, p: dataclasses.replace(
                         m, signatures=m.signatures[: p.server.params.quorum - 1])))
    yield ClientCase("forged-consistency-signature-of-a-neighbour", refuse, MAL, UNMASK,
                     _one(lambda m, p: _forged_signature(m, p, neighbour=True)))
    yield ClientCase("forged-consistency-signature-of-a-non-neighbour", f"{refuse} (every "
                     "signature counted towards the quorum is checked, not only the "
                     "neighbours')", MAL, UNMASK,
                     _one(lambda m, p: _forged_signature(m, p, neighbour=False)))
    yield ClientCase("second-unmasking-request", "answers once; refuses the second request",
                     BOTH, UNMASK, _twice)
    yield ClientCase("unmasking-request-of-another-round", refuse, BOTH, UNMASK,
                     _one(lambda m, p: dataclasses.replace(m, round=m.round + 1)))
    yield ClientCase("unmasking-request-of-another-session", refuse, BOTH, UNMASK,
                     _previous(UNMASK), before=_honest_first)


def _forged_signature(m: UnmaskRequest, p: PlayedRound, *, neighbour: bool) -> UnmaskRequest:
    near = set(p.neighbours())
    w = next(u for u, _ in m.signatures if u != p.target and (u in near) == neighbour)
    return dataclasses.replace(m, signatures=tuple((u, bytes(64) if u == w else sig)
                                                   for u, sig in m.signatures))


def _alive_and_dead(m: UnmaskRequest, p: PlayedRound) -> UnmaskRequest:
    v = next(u for u in m.alive if u != p.target)
    return dataclasses.replace(m, dead=tuple(sorted(m.dead + (v,))))


def _unaccounted(m: UnmaskRequest, p: PlayedRound) -> UnmaskRequest:
    v = next(u for u in m.alive if u != p.target)
    return dataclasses.replace(m, alive=tuple(u for u in m.alive if u != v))


def _few_alive(m: UnmaskRequest, p: PlayedRound) -> UnmaskRequest:
    t = p.server.t
    neighbours = [u for u in m.alive if u != p.target]
    moved = neighbours[: len(neighbours) - t + 2]
    return dataclasses.replace(m, alive=tuple(u for u in m.alive if u not in moved),
                               dead=tuple(sorted(m.dead + tuple(moved))))


def _signed_elsewhere(m: UnmaskRequest, p: PlayedRound) -> UnmaskRequest:
    """The split view (Bonawitz et al. CCS 2017 section 4.3): the other members were shown a
    survivor set S_B without one survivor x and signed it (the scripted server holds their
    identities); this client, which signed U3, gets their signatures with its own."""
    s = p.server
    x = next(u for u in sorted(s.u3) if u != p.target)
    other = tuple(u for u in sorted(s.u3) if u != x)
    payload = survivors_bytes(s.session_id, s.round, s.graph_seed, other, key_root=s.key_root)
    keys = p.cohort.identities
    sigs = tuple((u, sig if u == p.target else SigningKey.from_private_bytes(keys[u]).sign(
        payload, label=CONSISTENCY_LABEL)) for u, sig in m.signatures)
    return dataclasses.replace(m, signatures=sigs)


def _split_view(m: UnmaskRequest, p: PlayedRound) -> UnmaskRequest:
    v = next(u for u in m.alive if u != p.target)
    return dataclasses.replace(m, alive=tuple(u for u in m.alive if u != v),
                               dead=tuple(sorted(m.dead + (v,))))


# -- controls -------------------------------------------------------------------------------------
def _control_cases() -> Iterator[ClientCase]:
    yield ClientCase("honest-round", "completes; the server's sum of the survivors is right",
                     BOTH, None)
    yield ClientCase("dropout-after-share-keys", "completes, revealing the key share of the "
                     "neighbour that dropped and the self-mask shares of the others; the sum "
                     "is right", BOTH, None, drop=MASK)
    yield ClientCase("dropout-at-share-keys", "completes without masks with the neighbour "
                     "that never shared keys; the sum is right", SEMI, None,
                     drop=SHARE)


CASES: tuple[ClientCase, ...] = (*_control_cases(), *_setup_cases(), *_keys_cases(),
                                 *_shares_cases(), *_consistency_cases(), *_unmask_cases())


# -- judging --------------------------------------------------------------------------------------
def run_case(case: ClientCase, mode: str, cohort: Cohort, target: ClientTarget) -> CaseResult:
    """Play ``case`` against ``target`` and judge it."""
    before = case.before(cohort, target) if case.before else None
    if before is not None and before.broken:
        return CaseResult(case.name, mode, case.expected,
                          f"the round played first failed: {before.broken}", False)
    drop = {case.drop: lambda p: {_neighbour(p)}} if case.drop else {}
    tamper: Tamper | None = None
    frames_in_stage: list[int] = []
    if case.tamper is not None:
        def tamper(stage: Stage, m: Message, p: PlayedRound) -> list[bytes]:
            if stage is not case.stage:
                return [encode(m)]
            p.before = before
            frames = case.tamper(m, p)
            frames_in_stage.append(len(p.sent) + len(frames) - 1)  # the frame to refuse
            return frames
    session = before.server.session_id if case.replay else None
    played = play(cohort, target, tamper=tamper, drop=drop, session_id=session,
                  seed=2, rnd=0 if case.replay or before is None else 1)
    observed, passed = _judge(case, played, frames_in_stage)
    return CaseResult(case.name, mode, case.expected, observed, passed)


def _judge(  # noqa: PLR0911 - one verdict per way a case can fail, in order
        case: ClientCase, p: PlayedRound, last_frame: list[int]) -> tuple[str, bool]:
    if p.broken:
        return f"the client broke the interface: {p.broken}", False
    if p.after_close:
        return (f"sent {len(p.after_close)} message(s) after its last answer" +
                (f": revealed {'; '.join(p.leaks())}" if p.leaks() else "")), False
    leaks = p.leaks()
    if leaks:
        return "revealed " + "; ".join(leaks), False
    if case.stage is None and not case.replay:
        return _judge_control(p)
    if p.refused is None:
        return "accepted it: no refusal", False
    stage, _, reason = p.refused
    if case.tamper is not None and not last_frame:
        return f"refused an honest message before the attack was made: {reason}", False
    index = _refused_index(p)
    latest = case.refuse_by or case.stage
    target_frame = last_frame[0] if last_frame else 0
    if STAGES.index(stage) > STAGES.index(latest):
        return f"refused only at {stage}: {reason}", False
    if index < target_frame:
        return f"refused an honest message before the attack: {reason}", False
    answered = p.replies[index][1].messages
    if answered:
        return f"refused ({reason}) but sent {len(answered)} message(s) in answer", False
    return f"refused at {stage}: {reason}", True


def _refused_index(p: PlayedRound) -> int:
    return next(i for i, (_, r) in enumerate(p.replies) if r.refused is not None)


def _judge_control(p: PlayedRound) -> tuple[str, bool]:
    if p.refused is not None:
        return f"refused an honest {p.refused[0]} message: {p.refused[2]}", False
    if p.server_refused:
        return "the server refused its reply: " + "; ".join(p.server_refused), False
    if p.aborted is not None:
        return f"the round aborted: {p.aborted.reason} ({p.aborted.detail})", False
    if p.target not in p.server.u3:
        return "its masked input did not count", False
    agg = p.server.aggregate
    if agg is None or not np.array_equal(np.asarray(agg, dtype=object), p.expected_sum()):
        return "the server's sum of the survivors is wrong", False
    return f"completed; sum of {len(p.server.u3)} survivors right", True


def select(cases: tuple[ClientCase, ...], modes: tuple[str, ...],
           names: tuple[str, ...] = ()) -> list[tuple[ClientCase, str]]:
    """(case, mode) pairs to play: every case in each of ``modes`` it applies to, only those
    named if ``names`` is given."""
    known = {c.name for c in cases}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown case(s): {', '.join(unknown)}")
    return [(c, m) for m in modes for c in cases if m in c.modes and (not names or c.name in
                                                                      names)]
