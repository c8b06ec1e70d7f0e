"""``secagg conformance server``: scripted malicious clients against a server implementation.

A cohort of honest :class:`~protocol.client.ClientRound` machines plays a real round through the
server under test; one of them (the attacker) sends, in addition to or instead of its honest
messages, what threat_model.md's table lists against the server: garbage, oversize fields,
truncated and trailing bytes, replays (a second copy, a message of another session, a message
for another stage), impersonation, late and wrongly shaped inputs, ciphertexts to
non-neighbours, shares of a kind not asked for, forged shares, a flood, and invalid dealings.
A case passes when every attacking message is refused and the round ends as it must: the sum
of the survivors' inputs right with every honest client counted, or an abort with the typed
reason the case names (Bonawitz et al. CCS 2017 section 4; the reconstruction checks of
threat_model.md, "What each mode guarantees").

The server is reached through :class:`ServerTarget`; :class:`InProcessServer` is our
:class:`~protocol.server.ServerRound` behind the checks every host makes before it (strict
decoding, sender = the authenticated client).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import secrets
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from secagg import Share, SigningKey, VerifyKey
from secagg.shamir import PRIME

from ..client import ClientRound
from ..config import RoundConfig
from ..errors import AbortReason, ProtocolError, RoundAborted, WireError
from ..messages import (
    AdvertiseKeys,
    MaskedInput,
    Message,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from ..server import ServerRound
from ..transitions import Stage, stage_order
from ..wire import WIRE_VERSION, decode, encode, storage_dtype
from .common import ADV, BOTH, CONS, MAL, MASK, SEMI, SHARE, UNMASK
from .hostile import ShortKeyDealer, ShortSeedDealer
from .report import CaseResult

ATTACKER, VICTIM = 5, 2
FLOOD = 300


# -- the server under test ----------------------------------------------------------------------
class ServerSession(ABC):
    """One round of a server under test."""

    @abstractmethod
    def start(self) -> list[bytes]:
        """The Setup messages (wire bytes)."""

    @abstractmethod
    def receive(self, sender: int, data: bytes) -> str | None:
        """One message from the authenticated client ``sender``: None if accepted, else why it
        was refused."""

    @abstractmethod
    def close_stage(self) -> list[bytes]:
        """Close the open stage; the next stage's messages. Raises RoundAborted (typed)."""

    @property
    @abstractmethod
    def survivors(self) -> frozenset[int]:
        """The clients whose masked input counts (U3)."""

    @property
    @abstractmethod
    def aggregate(self) -> np.ndarray | None:
        """The published sum (None until the round is done)."""


class ServerTarget(ABC):
    name = "server"

    @abstractmethod
    def open(self, config: RoundConfig, cohort: Sequence[int], dim: int, *,
             registry: Mapping[int, VerifyKey] | None, session_id: bytes | None) -> ServerSession:
        """Start one round."""

    def close(self) -> None:  # noqa: B027 - a target may hold nothing to release
        """Release whatever the target holds."""


class InProcessServer(ServerTarget):
    """:class:`~protocol.server.ServerRound` behind the host's checks (strict decoding, sender
    = the authenticated client)."""

    name = "in-process ServerRound"

    def open(self, config, cohort, dim, *, registry, session_id):
        return _InProcessRound(ServerRound(config, cohort, dim, registry=registry,
                                           session_id=session_id))


class _InProcessRound(ServerSession):
    def __init__(self, server: ServerRound) -> None:
        self.server = server

    def start(self) -> list[bytes]:
        return [encode(m) for m in self.server.start()]

    def receive(self, sender: int, data: bytes) -> str | None:
        try:
            msg = decode(data)
        except WireError as exc:
            return f"garbage: {exc}"
        if getattr(msg, "sender", None) != sender:
            return f"message in the name of client {getattr(msg, 'sender', None)}"
        try:
            self.server.receive(msg)
        except ProtocolError as exc:
            return str(exc)
        return None

    def close_stage(self) -> list[bytes]:
        return [encode(m) for m in self.server.close_stage()]

    @property
    def survivors(self) -> frozenset[int]:
        return self.server.u3

    @property
    def aggregate(self) -> np.ndarray | None:
        return self.server.aggregate


# -- the scripted clients ------------------------------------------------------------------------
@dataclass
class ServerRoundPlayed:
    """What the scripted clients sent and how the round ended."""

    config: RoundConfig
    inputs: dict[int, np.ndarray]
    clients: dict[int, ClientRound]
    attacks: list[tuple[Stage, str | None]] = field(default_factory=list)  # verdict per attack
    honest_refused: list[str] = field(default_factory=list)  # honest messages refused
    aborted: RoundAborted | None = None
    session: ServerSession | None = None
    own: dict[tuple[Stage, int], Message] = field(default_factory=dict)  # each client's reply
    before: ServerRoundPlayed | None = None
    broken: str | None = None
    sent: list[Message] = field(default_factory=list)  # every message the server sent
    inbox: dict[int, Message] = field(default_factory=dict)  # the open stage's, by recipient
    dropped: dict[Stage, tuple[int, ...]] = field(default_factory=dict)  # as played
    plans: dict[str, _Plan] = field(default_factory=dict)  # victims chosen from the graph

    @property
    def t(self) -> int:
        return self.config.resolve(len(self.clients)).threshold

    def graph(self) -> dict[int, frozenset[int]]:
        """N(u) of every client, as the honest machines derived it from their Setup (the
        graph is random, seeded by the server's session id: known once Setup is out)."""
        graph = {u: c.neighbours for u, c in self.clients.items()}
        if not all(graph.values()):
            raise LookupError("the graph is not known before every client accepted Setup")
        return graph


#: A case's attack at one stage: (the round, the attacker's honest reply or None) -> the frames
#: the attacker sends instead (each must be refused), and whether its honest reply still goes.
Attack = Callable[[ServerRoundPlayed, Message | None], tuple[list[bytes], bool]]
#: The clients that drop at one stage: fixed, or chosen from the played round's graph.
Drop = tuple[int, ...] | Callable[[ServerRoundPlayed], tuple[int, ...]]


@dataclass(frozen=True)
class ServerCase:
    name: str
    expected: str
    modes: tuple[str, ...]
    attacks: Mapping[Stage, Attack] = field(default_factory=dict)
    outcome: tuple[str, ...] = ("sum",)  # "sum", or the AbortReason values the round may end
    #                                        with
    graph: tuple[int, int] = (4, 3)  # (k, t) of the round
    dealer: type[ClientRound] | None = None  # the attacker's machine, if not an honest one
    drop: Mapping[Stage, Drop] = field(default_factory=dict)  # who drops (gets nothing) there
    late: Stage | None = None  # the attacker's reply of this stage is sent after it closed
    before: bool = False  # play an honest round first (for replays of another session)
    n: int = 8  # the cohort: clients 0 .. n - 1
    overrides: Mapping[str, object] = field(default_factory=dict)  # other RoundConfig fields
    no_unmasking: bool = False  # the round must end before any UnmaskRequest is sent


def _config(case: ServerCase, mode: str) -> RoundConfig:
    k, t = case.graph
    return RoundConfig(**{"bits": 16, "mode": mode, "neighbours": k, "threshold": t,
                          "dropout_rate": 0.25, **case.overrides})


def play_server(target: ServerTarget, case: ServerCase, mode: str, *, n: int | None = None,
                dim: int = 16, seed: int = 0, identities: Mapping[int, SigningKey] | None = None,
                before: ServerRoundPlayed | None = None) -> ServerRoundPlayed:
    """Play ``case`` once against ``target`` (with ``case.n`` clients unless ``n`` is given;
    ``identities`` must cover them in malicious mode)."""
    n = case.n if n is None else n
    config = _config(case, mode)
    identities = {u: identities[u] for u in range(n)} if identities else None
    registry = ({u: k.verify_key for u, k in identities.items()} if identities else None)
    rng = np.random.default_rng(seed)
    inputs = {u: rng.integers(0, 1 << config.bits, dim, dtype=np.uint64).astype(np.uint32)
              for u in range(n)}
    clients = {}
    for u in range(n):
        machine = case.dealer if (case.dealer and u == ATTACKER) else ClientRound
        clients[u] = machine(u, config=config, input=inputs[u].copy(),
                             identity=identities[u] if identities else None,
                             registry=registry, used_sessions=set())
    played = ServerRoundPlayed(config, inputs, clients, before=before)
    session = target.open(config, range(n), dim, registry=registry, session_id=None)
    played.session = session
    try:
        _play_stages(played, case, session)
    except RoundAborted as exc:
        played.aborted = exc
    return played


def _play_stages(played: ServerRoundPlayed, case: ServerCase, session: ServerSession) -> None:
    gone: set[int] = set()
    out = session.start()
    for stage in stage_order(played.config.mode):
        who = case.drop.get(stage, ())
        played.dropped[stage] = tuple(who(played) if callable(who) else who)
        gone |= set(played.dropped[stage])
        held = None
        try:
            msgs = [decode(data) for data in out]
        except WireError as exc:
            played.broken = f"the server sent a malformed message at {stage}: {exc}"
            return
        played.sent += msgs
        played.inbox = {m.recipient: m for m in msgs}
        # the attacker moves first in every stage: its impersonations and replays arrive
        # before the messages they imitate
        for m in sorted(msgs, key=lambda m: m.recipient != ATTACKER):
            u = m.recipient
            if u in gone:
                continue
            replies = played.clients[u].receive(m)
            reply = replies[0] if replies else None
            played.own[(stage, u)] = reply
            if u == ATTACKER and stage in case.attacks:
                frames, send_own = case.attacks[stage](played, reply)
                for f in frames:
                    played.attacks.append((stage, session.receive(ATTACKER, f)))
                if not send_own:
                    continue
            if u == ATTACKER and stage is case.late:
                held = reply
                continue
            if reply is not None:
                why = session.receive(u, encode(reply))
                if why is not None:
                    played.honest_refused.append(f"{type(reply).__name__} of client {u}: {why}")
        out = session.close_stage()
        if held is not None:
            played.attacks.append((stage, session.receive(ATTACKER, encode(held))))
            gone.add(ATTACKER)


# -- victims chosen from the graph --------------------------------------------------------------
def _recoverable(graph: Mapping[int, frozenset[int]], t: int, u3: frozenset[int],
                 responders: frozenset[int]) -> bool:
    """Whether every mask in the sum of ``u3`` can be removed when ``responders`` answer the
    unmasking requests (every client shared keys): b_u of each survivor and s_u^SK of each
    dropped client with a neighbour in U3 need t responding neighbours each (Bonawitz et al.
    CCS 2017 section 4, Unmasking; the check :func:`protocol.stages.masked_input.
    check_recoverable` makes)."""
    return all(len(graph[u] & responders) >= t for u in graph if u in u3 or graph[u] & u3)


def _below_minimum(p: ServerRoundPlayed) -> tuple[int, ...]:
    """n - min_survivors + 1 clients other than the attacker that drop at MaskedInput, so that
    |U3| = min_survivors - 1, chosen from the graph so that every mask would still be
    removable: the only reason left to abort is the minimum itself."""
    graph, everyone = p.graph(), frozenset(p.clients)
    count = len(everyone) - p.config.resolve(len(everyone)).min_survivors + 1
    for drops in itertools.combinations(sorted(everyone - {ATTACKER}), count):
        u3 = everyone - set(drops)
        if _recoverable(graph, p.t, u3, u3):
            return drops
    raise LookupError(f"no {count} dropouts leave every mask of this graph removable")


@dataclass(frozen=True)
class _Plan:
    """A value of ``owner`` (a neighbour of the attacker) reconstructed from exactly t shares:
    the attacker's and those of ``answering``; ``droppers`` drop at Unmasking to get there."""

    owner: int
    droppers: tuple[int, ...]
    answering: tuple[int, ...]  # the other holders whose shares arrive


def _exactly_t(p: ServerRoundPlayed, kind: str) -> _Plan:
    """The first (owner, droppers) the graph allows such that exactly t shares of b_owner
    (``kind`` "b": the owner survives) or of s_owner^SK ("s": the owner drops at MaskedInput)
    arrive, the attacker's among them, while every other mask of the round stays removable:
    the one forged share then cannot be detected by decoding (no redundancy) and only the
    value's own check (commitment, s^PK) can catch it. Chosen once per round and kept."""
    if kind in p.plans:
        return p.plans[kind]
    graph, t, everyone = p.graph(), p.t, frozenset(p.clients)
    for owner in sorted(graph[ATTACKER]):
        u3 = everyone - {owner} if kind == "s" else everyone
        others = sorted(u3 - {owner, ATTACKER})
        for size in range(len(graph[owner]) - t + 1):
            for drops in itertools.combinations(others, size):
                responders = u3 - set(drops)
                if (len(graph[owner] & responders) == t
                        and _recoverable(graph, t, u3, responders)):
                    plan = _Plan(owner, drops, tuple(sorted(graph[owner] & responders
                                                            - {ATTACKER})))
                    p.plans[kind] = plan
                    return plan
    raise LookupError(f"no neighbour of the attacker whose {kind}-value this graph lets "
                      "arrive in exactly t shares")


# -- attacks -----------------------------------------------------------------------------------
def _frames(*frames: Callable[[ServerRoundPlayed, Message], bytes], own: bool = True) -> Attack:
    return lambda p, m: ([f(p, m) for f in frames], own)


def _oversize(p: ServerRoundPlayed, m: AdvertiseKeys) -> bytes:
    """An AdvertiseKeys whose signature field claims (and carries) 2 MiB."""
    head = encode(dataclasses.replace(m, signature=b""))[:-4]
    big = 2 << 20
    return head + struct.pack(">I", big) + bytes(big)


def _impersonating(p: ServerRoundPlayed, m: AdvertiseKeys) -> bytes:
    return encode(dataclasses.replace(m, sender=VICTIM))


def _impersonating_shares(p: ServerRoundPlayed, m: ShareKeys) -> bytes:
    """A ShareKeys in the victim's name that addresses exactly the victim's neighbours in U1
    (as its KeysBroadcast lists them), with ciphertexts of the right size: only the sender
    check can tell it from the victim's own."""
    size = len(m.ciphertexts[0][1])
    near = sorted({e[0] for e in p.inbox[VICTIM].keys} - {VICTIM})
    return encode(ShareKeys(m.session_id, m.round, VICTIM,
                            tuple((v, os.urandom(size)) for v in near)))


def _impersonating_response(p: ServerRoundPlayed, m: UnmaskResponse) -> bytes:
    """An UnmaskResponse in the victim's name answering the victim's own request: a share of
    the right x-coordinate and threshold for every owner it lists (values made up)."""
    req = p.inbox[VICTIM]
    t = Share.from_bytes((m.self_mask_shares + m.key_shares)[0][1]).threshold

    def made_up() -> bytes:
        return Share(os.urandom(16), t, VICTIM + 1, secrets.randbelow(PRIME)).to_bytes()

    return encode(UnmaskResponse(m.session_id, m.round, VICTIM,
                                 tuple((o, made_up()) for o in req.alive),
                                 tuple((o, made_up()) for o in req.dead)))


def _other_stage(p: ServerRoundPlayed, m: Message) -> bytes:
    return encode(MaskedInput(m.session_id, m.round, ATTACKER,
                              np.zeros(len(p.inputs[ATTACKER]), np.uint32)))


def _replayed(stage: Stage) -> Callable[[ServerRoundPlayed, Message], bytes]:
    return lambda p, m: encode(p.before.own[(stage, ATTACKER)])


def _wrong_dim(p: ServerRoundPlayed, m: MaskedInput) -> bytes:
    return encode(dataclasses.replace(m, vector=np.zeros(len(m.vector) + 1, np.uint32)))


def _other_bits(step: int) -> Callable[[ServerRoundPlayed, MaskedInput], bytes]:
    """The attacker's masked input packed at b + step bits (b - step if that leaves 1..64):
    the same coordinates, reduced to the other width when it is narrower."""
    def tamper(p: ServerRoundPlayed, m: MaskedInput) -> bytes:
        bits = m.bits + step if 1 <= m.bits + step <= 64 else m.bits - step
        y = m.vector.astype(np.uint64) & np.uint64((1 << bits) - 1)
        return encode(dataclasses.replace(m, bits=bits, vector=y.astype(storage_dtype(bits))))
    return tamper


def _previous_version(p: ServerRoundPlayed, m: MaskedInput) -> bytes:
    """The attacker's masked input in the layout of wire version WIRE_VERSION - 1: the version
    byte, then the vector as u8 word size | u32 count | little-endian words."""
    head = bytes([WIRE_VERSION - 1]) + encode(m)[1:2 + 32 + 4 + 4]
    words = m.vector.astype(m.vector.dtype.newbyteorder("<"))
    return (head + bytes([words.dtype.itemsize]) + struct.pack(">I", len(words))
            + words.tobytes())


def _to_stranger(p: ServerRoundPlayed, m: ShareKeys) -> bytes:
    near = p.clients[ATTACKER].neighbours
    w = next(v for v in p.clients if v != ATTACKER and v not in near and
             v not in {u for u, _ in m.ciphertexts})
    ct = m.ciphertexts[0][1]
    return encode(dataclasses.replace(m, ciphertexts=tuple(sorted(m.ciphertexts + ((w, ct),)))))


def _wrong_kind(p: ServerRoundPlayed, m: UnmaskResponse) -> bytes:
    """The self-mask shares relabelled as key shares: shares of s^SK of alive owners."""
    return encode(dataclasses.replace(m, self_mask_shares=(), key_shares=tuple(sorted(
        m.key_shares + m.self_mask_shares))))


def _forged_shares(p: ServerRoundPlayed, m: UnmaskResponse) -> tuple[list[bytes], bool]:
    """Every share the attacker reveals, changed in its last residue: still well formed."""
    forged = dataclasses.replace(m, self_mask_shares=tuple(
        (o, _flip_low_bit(s)) for o, s in m.self_mask_shares))
    return [], _send_instead(p, forged)


#: Added to a value's encoding 0x01 || v: another 32-byte value, 1 in its second-to-last byte
#: (within X25519's clamped bits, so another key too).
ANOTHER_VALUE = 1 << 8
#: Added to a value's encoding 0x01 || v: 0x01 || 0x00 || v, a 33-byte value (an invalid seed
#: or key), whatever v is.
LONGER_VALUE = (1 << 264) - (1 << 256)


def _shifted(kind: str, delta: int) -> Attack:
    """The attacker's share of the planned owner's value (b or s, see :func:`_exactly_t`)
    moved so that the t arriving shares interpolate to the true value + ``delta``: with the
    other holders' x-coordinates x_j known from the graph, adding delta / l_a(0) to y_a, l_a
    the attacker's Lagrange basis polynomial, moves f(0) by exactly delta (the forgery of
    Bonawitz et al. CCS 2017 section 4 that only a check of the value itself catches). The
    response is still well formed and is sent as the attacker's own."""

    def attack(p: ServerRoundPlayed, m: UnmaskResponse) -> tuple[list[bytes], bool]:
        plan = _exactly_t(p, kind)
        xa = ATTACKER + 1
        lagrange = 1
        for h in plan.answering:
            lagrange = lagrange * (h + 1) * pow(h + 1 - xa, -1, PRIME) % PRIME
        step = delta * pow(lagrange, -1, PRIME) % PRIME

        def moved(o: int, raw: bytes) -> bytes:
            if o != plan.owner:
                return raw
            sh = Share.from_bytes(raw)
            return Share(sh.dealing_id, sh.threshold, sh.x, (sh.y + step) % PRIME).to_bytes()

        field_name = "self_mask_shares" if kind == "b" else "key_shares"
        shares = tuple((o, moved(o, raw)) for o, raw in getattr(m, field_name))
        return [], _send_instead(p, dataclasses.replace(m, **{field_name: shares}))

    return attack


def _another_dealing(p: ServerRoundPlayed, m: UnmaskResponse) -> tuple[list[bytes], bool]:
    """Every share the attacker reveals, genuine, but under another dealing id (all zero)."""
    def relabelled(raw: bytes) -> bytes:
        sh = Share.from_bytes(raw)
        return Share(bytes(16), sh.threshold, sh.x, sh.y).to_bytes()

    return [], _send_instead(p, dataclasses.replace(m, self_mask_shares=tuple(
        (o, relabelled(raw)) for o, raw in m.self_mask_shares)))


def _send_instead(p: ServerRoundPlayed, m: Message) -> bool:
    why = p.session.receive(ATTACKER, encode(m))
    if why is not None:
        p.honest_refused.append(f"the forged but well-formed {type(m).__name__}: {why}")
    return False


def _flip_low_bit(share: bytes) -> bytes:
    b = bytearray(share)
    b[-1] ^= 0x01
    return bytes(b)


def _bad_signature(p: ServerRoundPlayed, m: Message) -> bytes:
    return encode(dataclasses.replace(m, signature=bytes(64)))


def _flood(p: ServerRoundPlayed, m: Message) -> tuple[list[bytes], bool]:
    junk = [os.urandom(40) for _ in range(FLOOD // 3)]
    copies = [encode(m)] * (FLOOD // 3)
    versions = [bytes([WIRE_VERSION + 1]) + encode(m)[1:]] * (FLOOD // 3)
    return junk + versions, _flood_copies(p, m, copies)


def _flood_copies(p: ServerRoundPlayed, m: Message, copies: list[bytes]) -> bool:
    """The honest message, then its copies (each must be refused)."""
    why = p.session.receive(ATTACKER, copies[0])
    if why is not None:
        p.honest_refused.append(f"{type(m).__name__} of client {ATTACKER}: {why}")
    for c in copies:
        p.attacks.append((SHARE, p.session.receive(ATTACKER, c)))
    return False


def _exactly_t_drops(kind: str) -> dict[Stage, Drop]:
    """The drops of :func:`_exactly_t`'s plan: the owner at MaskedInput (kind "s"), the
    droppers at Unmasking."""
    drops: dict[Stage, Drop] = {UNMASK: lambda p: _exactly_t(p, kind).droppers}
    if kind == "s":
        drops[MASK] = lambda p: (_exactly_t(p, kind).owner,)
    return drops


def _server_cases() -> Iterator[ServerCase]:  # noqa: PLR0915 - one statement per case
    ok = "every attacking message refused; the round completes with every honest client " \
         "counted and the sum right"
    yield ServerCase("honest-round", "the round completes; the sum of the survivors is right",
                     BOTH)
    yield ServerCase("garbage-bytes", ok, BOTH, {ADV: _frames(lambda p, m: os.urandom(64))})
    yield ServerCase("oversize-field", ok, BOTH, {ADV: _frames(_oversize)})
    yield ServerCase("truncated-message", ok, BOTH, {ADV: _frames(lambda p, m: encode(m)[:-1])})
    yield ServerCase("trailing-bytes", ok, BOTH, {ADV: _frames(lambda p, m: encode(m) + b"\0")})
    yield ServerCase("unknown-wire-version", ok, BOTH, {ADV: _frames(
        lambda p, m: bytes([WIRE_VERSION + 1]) + encode(m)[1:])})
    yield ServerCase("impersonation", f"{ok} (the victim's own advertisement accepted)", BOTH,
                     {ADV: _frames(_impersonating)})
    yield ServerCase("impersonation-at-share-keys", f"{ok} (a ShareKeys in client {VICTIM}'s "
                     "name addressing its neighbours, sent before its own, refused)", BOTH,
                     {SHARE: _frames(_impersonating_shares)})
    yield ServerCase("impersonation-at-masked-input", f"{ok} (the attacker's masked input in "
                     f"client {VICTIM}'s name, sent before its own, refused)", BOTH,
                     {MASK: _frames(lambda p, m: encode(dataclasses.replace(m, sender=VICTIM)))})
    yield ServerCase("impersonation-at-unmasking", f"{ok} (an answer to client {VICTIM}'s "
                     "request in its name, sent before its own, refused)", BOTH,
                     {UNMASK: _frames(_impersonating_response)})
    yield ServerCase("duplicate-message", ok, BOTH, {SHARE: lambda p, m: (
        [], _flood_copies(p, m, [encode(m)] * 2))})
    yield ServerCase("replay-of-another-session", ok, BOTH,
                     {ADV: _frames(_replayed(ADV)), SHARE: _frames(_replayed(SHARE))},
                     before=True)
    yield ServerCase("message-for-another-stage", ok, BOTH, {ADV: _frames(_other_stage)})
    yield ServerCase("late-masked-input", "the input sent after its stage closed is refused; "
                     "the attacker counts as a dropout and the sum of the others is right",
                     BOTH, late=MASK)
    yield ServerCase("input-of-another-dimension", "refused; the attacker is recovered as a "
                     "dropout; the sum of the others is right", BOTH,
                     {MASK: _frames(_wrong_dim, own=False)})
    yield ServerCase("input-of-another-bit-width", "refused (packed at b + 1 bits); the "
                     "attacker is recovered as a dropout", BOTH,
                     {MASK: _frames(_other_bits(1), own=False)})
    yield ServerCase("input-of-another-word-size", "refused (packed at b + 32 bits: the other "
                     "word size); the attacker is recovered as a dropout", BOTH,
                     {MASK: _frames(_other_bits(32), own=False)})
    yield ServerCase("input-in-the-previous-wire-version", "refused (wire version "
                     f"{WIRE_VERSION - 1}, whole words); the attacker is recovered as a dropout",
                     BOTH, {MASK: _frames(_previous_version, own=False)})
    yield ServerCase("ciphertext-to-a-non-neighbour", ok, BOTH, {SHARE: _frames(_to_stranger)})
    yield ServerCase("share-of-a-kind-not-asked-for", "refused; the secrets are rebuilt from "
                     "the other holders and the sum is right", BOTH,
                     {UNMASK: _frames(_wrong_kind, own=False)})
    yield ServerCase("forged-unmasking-shares", "the forged shares are corrected (k = 6: one "
                     "wrong share is within the decoding radius) and the sum is right", BOTH,
                     {UNMASK: _forged_shares}, graph=(6, 4))
    yield ServerCase("forged-share-past-the-radius", "the round aborts with "
                     "cannot-reconstruct (k = 4, t = 3: no wrong share can be corrected), "
                     "never a wrong sum", BOTH, {UNMASK: _forged_shares},
                     outcome=(AbortReason.CANNOT_RECONSTRUCT.value,))
    yield ServerCase("forged-self-mask-share-among-exactly-t", "the attacker shifts its share "
                     "of b_v of an alive neighbour v and a holder of v drops at unmasking: the "
                     "t shares decode to another 32-byte seed; the round aborts with "
                     "bad-reconstruction (the commitment), never a sum", BOTH,
                     {UNMASK: _shifted("b", ANOTHER_VALUE)},
                     outcome=(AbortReason.BAD_RECONSTRUCTION.value,), drop=_exactly_t_drops("b"))
    yield ServerCase("forged-key-share-among-exactly-t", "the same with s_u^SK of a neighbour "
                     "u that dropped at masked input (k = 6, t = 4, n = 9): another 32-byte "
                     "key; the round aborts with bad-reconstruction (s_u^PK), never a sum",
                     BOTH, {UNMASK: _shifted("s", ANOTHER_VALUE)},
                     outcome=(AbortReason.BAD_RECONSTRUCTION.value,), drop=_exactly_t_drops("s"),
                     graph=(6, 4), n=9)
    yield ServerCase("forged-shares-frame-an-honest-seed-dealer", "the t shares of b_v are "
                     "shifted to a 33-byte seed: it does not match v's commitment, so the "
                     "round aborts with bad-reconstruction naming no one (never bad-dealing "
                     "naming v)", BOTH, {UNMASK: _shifted("b", LONGER_VALUE)},
                     outcome=(AbortReason.BAD_RECONSTRUCTION.value,), drop=_exactly_t_drops("b"))
    yield ServerCase("forged-shares-frame-an-honest-key-dealer", "the t shares of s_u^SK of a "
                     "dropped u are shifted to a 33-byte key on which every share agrees, but "
                     "t < 2t - 1 of them: bad-reconstruction naming no one (never bad-dealing "
                     "naming u)", BOTH, {UNMASK: _shifted("s", LONGER_VALUE)},
                     outcome=(AbortReason.BAD_RECONSTRUCTION.value,), drop=_exactly_t_drops("s"),
                     graph=(6, 4), n=9)
    yield ServerCase("share-under-another-dealing-id", "the attacker's genuine shares under "
                     "another dealing id are set aside as wrong shares (k = 6, t = 4: five "
                     "others remain) and the sum is right", BOTH, {UNMASK: _another_dealing},
                     graph=(6, 4))
    yield ServerCase("flood", f"{FLOOD} junk, wrong-version and duplicate messages refused; "
                     "the sum is right", BOTH, {SHARE: _flood})
    yield ServerCase("short-self-mask-seed-dealing", "the round aborts with bad-dealing "
                     "naming the dealer (a 31-byte b_u with a matching commitment)", BOTH,
                     outcome=(AbortReason.BAD_DEALING.value,), dealer=ShortSeedDealer)
    yield ServerCase("short-key-dealing", "the round aborts with bad-dealing naming the dealer "
                     "(a 20-byte s^SK dealt by a client that then drops; 2t - 1 shares agree)",
                     SEMI, outcome=(AbortReason.BAD_DEALING.value,), dealer=ShortKeyDealer,
                     drop={MASK: (ATTACKER,)}, graph=(6, 3))
    yield ServerCase("forged-advertisement-signature", ok, MAL, {ADV: _frames(_bad_signature)})
    yield ServerCase("forged-consistency-signature", ok, MAL, {CONS: _frames(_bad_signature)})
    yield ServerCase("survivors-below-the-minimum", "min_survivors = 7 and two clients drop at "
                     "masked input, chosen so that every mask could still be removed: the "
                     "round aborts with too-few-survivors before any UnmaskRequest", BOTH,
                     outcome=(AbortReason.TOO_FEW_SURVIVORS.value,), drop={MASK: _below_minimum},
                     graph=(6, 4), overrides={"min_survivors": 7}, no_unmasking=True)
    yield ServerCase("too-many-dropouts", "the round aborts, typed (too-few-survivors or "
                     "unrecoverable-dropout), before any UnmaskRequest", BOTH,
                     outcome=(AbortReason.TOO_FEW_SURVIVORS.value,
                              AbortReason.UNRECOVERABLE_DROPOUT.value),
                     drop={MASK: (0, 1, 2, 4, 6, 7)}, no_unmasking=True)


CASES: tuple[ServerCase, ...] = tuple(_server_cases())


def _judge(case: ServerCase, p: ServerRoundPlayed) -> tuple[str, bool]:  # noqa: PLR0911
    if p.broken:
        return p.broken, False
    accepted = [s for s, why in p.attacks if why is None]
    if accepted:
        return f"accepted {len(accepted)} attacking message(s) at {accepted[0]}", False
    if p.honest_refused:
        return "refused an honest message: " + "; ".join(p.honest_refused[:2]), False
    unmask = sum(isinstance(m, UnmaskRequest) for m in p.sent)
    if case.no_unmasking and unmask:
        ended = f"aborted with {p.aborted.reason}" if p.aborted else "completed"
        return f"sent {unmask} UnmaskRequest(s), then {ended}", False
    if case.outcome != ("sum",):
        return _judge_abort(case, p)
    if p.aborted is not None:
        return f"aborted: {p.aborted.reason} ({p.aborted.detail})", False
    survivors = p.session.survivors
    dropped = {u for us in p.dropped.values() for u in us}
    honest = set(p.clients) - {ATTACKER} - dropped
    if not honest <= survivors:
        return f"honest client(s) {sorted(honest - survivors)} not counted", False
    mod = 1 << p.config.bits
    want = sum((p.inputs[u].astype(object) for u in sorted(survivors)),
               np.zeros(len(p.inputs[0]), dtype=object)) % mod
    agg = p.session.aggregate
    if agg is None or not np.array_equal(np.asarray(agg, dtype=object), want):
        return "the published sum is wrong", False
    refused = len(p.attacks)
    return (f"completed; sum of {len(survivors)} survivors right" +
            (f"; {refused} attacking message(s) refused" if refused else "")), True


def _judge_abort(case: ServerCase, p: ServerRoundPlayed) -> tuple[str, bool]:
    """A case that must abort: with one of its reasons, naming no client but its dealer, and
    publishing nothing."""
    if p.aborted is None:
        return f"completed instead of aborting with {' or '.join(case.outcome)}", False
    if p.session.aggregate is not None:
        return f"aborted with {p.aborted.reason} but published a sum", False
    named = sorted(set(p.aborted.clients) - ({ATTACKER} if case.dealer else set()))
    if named:
        return (f"aborted with {p.aborted.reason} naming honest client(s) {named} "
                f"({p.aborted.detail})"), False
    if p.aborted.reason not in case.outcome:
        return f"aborted with {p.aborted.reason} ({p.aborted.detail})", False
    if case.dealer is not None and ATTACKER not in p.aborted.clients:
        return f"aborted with {p.aborted.reason} without naming the dealer", False
    return f"aborted with {p.aborted.reason} {list(p.aborted.clients) or ''}".strip(), True


def run_server_suite(target: ServerTarget | None = None, *, modes: Sequence[str] = BOTH,
                     cases: Sequence[str] = (),
                     on_result: Callable[[CaseResult], None] | None = None) -> list[CaseResult]:
    """Play every server case (or those named) in each mode; one result per (case, mode).
    Raises ValueError for an unknown case or mode."""
    target = target or InProcessServer()
    unknown = sorted(set(cases) - {c.name for c in CASES}) + sorted(set(modes) - set(BOTH))
    if unknown:
        raise ValueError(f"unknown case(s) or mode(s): {', '.join(unknown)}")
    results = []
    cohort = range(max(c.n for c in CASES))
    for mode in modes:
        identities = ({u: SigningKey.generate() for u in cohort} if mode == "malicious"
                      else None)
        for case in CASES:
            if mode not in case.modes or (cases and case.name not in cases):
                continue
            try:
                before = (play_server(target, ServerCase("honest", "", BOTH), mode, seed=1,
                                      identities=identities) if case.before else None)
                p = play_server(target, case, mode, identities=identities, before=before)
                observed, passed = _judge(case, p)
            except Exception as exc:  # noqa: BLE001 - a case that crashes the harness fails
                observed, passed = (f"the case could not be played: {type(exc).__name__}: "
                                    f"{exc}", False)
            r = CaseResult(case.name, mode, case.expected, observed, passed)
            results.append(r)
            if on_result is not None:
                on_result(r)
    return results


__all__ = ["CASES", "InProcessServer", "ServerCase", "ServerSession", "ServerTarget",
           "play_server", "run_server_suite"]
