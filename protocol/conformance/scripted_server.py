"""The scripted server of ``secagg conformance client``: a real round around one client under
test, with one message to it replaced by an attack.

The cohort is the client under test and honest in-process peers (:class:`ClientRound`), run by
a real :class:`~protocol.server.ServerRound`. Every server message addressed to the client
under test passes through a *tamper* function first, which returns the frames to send instead
(the honest message itself, a changed copy, it twice, or bytes that are no message at all).
The client's replies go to the real server. :class:`PlayedRound` records what the client was
sent and what it answered, so a case can judge the refusal and check that nothing secret left
the client (Bonawitz et al. CCS 2017 section 4: a client reveals, per neighbour, the share of
b_v or of s_v^SK, never both).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from secagg import AeadContext, Ring, SecAggError, SigningKey, VerifyKey, combine, decrypt, expand
from secagg.masking import SELF_MASK_PURPOSE
from secagg.shamir import SHARE_BYTES

from ..client import ClientRound
from ..config import RoundConfig
from ..errors import ProtocolError, RemoteProtocolError, RoundAborted, WireError
from ..messages import MaskedInput, Message, Setup, UnmaskRequest
from ..server import ServerRound
from ..transitions import Stage, stage_order
from ..wire import decode, encode
from .targets import ClientSession, ClientSpec, ClientTarget, Reply, TargetError

#: A tamper function: (stage, the honest message for the client under test, the round) -> the
#: frames to send in its place.
Tamper = Callable[[Stage, Message, "PlayedRound"], list[bytes]]
#: Who drops at a stage, chosen once the round's graph is known.
Dropper = Callable[["PlayedRound"], set[int]]


@dataclass(frozen=True)
class Cohort:
    """The round every case plays: n clients, the client under test among them."""

    config: RoundConfig
    n: int
    dim: int
    target: int
    identities: Mapping[int, bytes] | None  # Ed25519 private keys (malicious mode)
    registry: Mapping[int, VerifyKey] | None
    state_dir: Path  # the client under test's, kept across the sessions of the suite

    @classmethod
    def make(cls, mode: str, state_dir: Path, *, n: int = 8, dim: int = 16,
             bits: int = 16) -> Cohort:
        config = RoundConfig(bits=bits, mode=mode, neighbours=4, threshold=3)
        identities = registry = None
        if mode == "malicious":
            identities = {u: os.urandom(32) for u in range(n)}
            registry = {u: SigningKey.from_private_bytes(k).verify_key
                        for u, k in identities.items()}
        return cls(config, n, dim, 3, identities, registry, state_dir)

    def spec(self, x: np.ndarray) -> ClientSpec:
        ident = self.identities[self.target] if self.identities else None
        return ClientSpec(self.target, self.config, ident, self.registry, x, self.state_dir)

    def peer(self, u: int, x: np.ndarray) -> ClientRound:
        ident = (SigningKey.from_private_bytes(self.identities[u]) if self.identities
                 else None)
        return ClientRound(u, config=self.config, input=x, identity=ident,
                           registry=self.registry, used_sessions=set())


@dataclass
class PlayedRound:
    """One round as the scripted server played it."""

    cohort: Cohort
    server: ServerRound
    peers: dict[int, ClientRound]
    inputs: dict[int, np.ndarray]
    honest: dict[Stage, Message] = field(default_factory=dict)  # the untampered messages
    sent: list[tuple[Stage, bytes]] = field(default_factory=list)  # frames to the target
    replies: list[tuple[Stage, Reply]] = field(default_factory=list)
    refused: tuple[Stage, int, str] | None = None  # stage, frame index in it, reason
    broken: str | None = None  # the target broke the interface or sent a malformed reply
    server_refused: list[str] = field(default_factory=list)  # target replies the server refused
    aborted: RoundAborted | None = None
    before: PlayedRound | None = None  # the round a case played first, if any
    after_close: tuple[bytes, ...] = ()  # what the client sent after its last answer

    @property
    def target(self) -> int:
        return self.cohort.target

    def frames_from_target(self) -> list[bytes]:
        """Every frame the client under test sent, its late ones included."""
        return [d for _, reply in self.replies for d in reply.messages] + list(self.after_close)

    def messages_from_target(self) -> list[Message]:
        out = []
        for data in self.frames_from_target():
            try:
                out.append(decode(data))
            except WireError:
                continue
        return out

    def expected_sum(self) -> np.ndarray:
        mod = 1 << self.cohort.config.bits
        total = np.zeros(self.cohort.dim, dtype=object)
        for u in sorted(self.server.u3):
            total = (total + self.inputs[u].astype(object)) % mod
        return total

    def neighbours(self) -> list[int]:
        return sorted(self.server.graph.neighbours(self.target))

    def leaks(self) -> list[str]:
        """What the client under test revealed that it must not have, looked for in the bytes
        of everything it sent (whatever message carries them): a share it holds of a kind the
        honest request did not ask for, or both shares of one owner; its own b_u or s_u^SK in
        the clear; its input unmasked, or masked with b_u alone (which the server removes)."""
        found = []
        frames = self.frames_from_target()
        honest = self.honest.get(Stage.UNMASKING)
        alive = set(honest.alive) if isinstance(honest, UnmaskRequest) else set()
        dead = set(honest.dead) if isinstance(honest, UnmaskRequest) else set()
        kinds: dict[int, set[str]] = {}
        for owner, (b, sk) in sorted(self._held_by_target().items()):
            for kind, share, allowed, name in (("b", b, alive, f"b_{owner}"),
                                               ("s", sk, dead, f"s_{owner}^SK")):
                if any(share in f for f in frames):
                    kinds.setdefault(owner, set()).add(kind)
                    if owner not in allowed:
                        found.append(f"a share of {name}, which the honest request did not "
                                     "ask for")
        found += [f"shares of both b_{o} and s_{o}^SK" for o, k in sorted(kinds.items())
                  if len(k) == 2]
        b_u, s_sk = self._target_secrets()
        for secret, name in ((b_u, "b_u"), (s_sk, "s_u^SK")):
            if secret is not None and any(secret in f for f in frames):
                found.append(f"its own {name} in the clear")
        found += self._unmasked_inputs(b_u)
        return found

    def _held_by_target(self) -> dict[int, tuple[bytes, bytes]]:
        """owner -> (share of b_owner, share of s_owner^SK) that the client under test was
        dealt: the scripted server plays the dealers, so it opens their ciphertexts with the
        keys they agreed (the dealer's hand-ons, read here as the hostile clients read them)."""
        delivery = self.honest.get(Stage.MASKED_INPUT)
        if delivery is None:
            return {}
        out = {}
        s = self.server
        for v, ct in delivery.ciphertexts:
            peers = getattr(self.peers.get(v), "_peers", None)
            if peers is None or self.target not in peers.enc_keys:
                continue
            try:
                plain = decrypt(peers.enc_keys[self.target], ct,
                                AeadContext(s.session_id, s.round, v, self.target))
            except SecAggError:
                continue
            out[v] = (plain[:SHARE_BYTES], plain[SHARE_BYTES:])
        return out

    def _target_secrets(self) -> tuple[bytes | None, bytes | None]:
        """b_u and s_u^SK of the client under test, rebuilt from the shares its peers hold
        (None when fewer than t of them hold one)."""
        b_sh, s_sh = [], []
        for peer in self.peers.values():
            held = getattr(getattr(peer, "_shares", None), "held", {})
            if self.target in held:
                b_sh.append(held[self.target][0])
                s_sh.append(held[self.target][1])
        try:
            return (combine(b_sh, threshold=self.server.t),
                    combine(s_sh, threshold=self.server.t))
        except (SecAggError, ValueError):
            return None, None

    def _unmasked_inputs(self, b_u: bytes | None) -> list[str]:
        x = self.inputs[self.target].astype(np.uint64)
        ring = Ring(self.cohort.config.bits)
        found = []
        for m in self.messages_from_target():
            if not isinstance(m, MaskedInput) or len(m.vector) != len(x):
                continue
            y = m.vector.astype(np.uint64)
            if np.array_equal(y, x):
                found.append("its masked input equals its input (no mask was added)")
            elif b_u is not None:
                y_minus_b = (y - expand(b_u, SELF_MASK_PURPOSE, len(x), ring).astype(np.uint64))
                if np.array_equal(y_minus_b & np.uint64(ring.mask), x):
                    found.append("its masked input is its input plus the self mask only (the "
                                 "server removes b_u and reads the input)")
        return found


def play(cohort: Cohort, target: ClientTarget, *, tamper: Tamper | None = None,
         drop: Mapping[Stage, Dropper] | None = None, session_id: bytes | None = None,
         rnd: int = 0, seed: int = 0) -> PlayedRound:
    """Play one round: the client under test gets every message through ``tamper``; peers in
    ``drop[stage](round)`` send nothing from that stage on. A refusal ends the client's part in the
    round (the server then counts it as a dropout)."""
    rng = np.random.default_rng(seed)
    word = np.uint32 if cohort.config.bits <= 32 else np.uint64
    inputs = {u: rng.integers(0, 1 << cohort.config.bits, cohort.dim, dtype=np.uint64)
              .astype(word) for u in range(cohort.n)}
    server = ServerRound(cohort.config, range(cohort.n), cohort.dim, session_id=session_id,
                         round=rnd, registry=cohort.registry)
    peers = {u: cohort.peer(u, inputs[u].copy()) for u in range(cohort.n) if u != cohort.target}
    played = PlayedRound(cohort, server, peers, inputs)
    try:
        session = target.open(cohort.spec(inputs[cohort.target].copy()))
    except TargetError as exc:
        played.broken = str(exc)
        return played
    try:
        _stages(played, session, tamper, drop or {})
    finally:
        try:
            played.after_close = tuple(session.close() or ())
        except TargetError as exc:
            played.broken = played.broken or str(exc)
    return played


def _stages(played: PlayedRound, session: ClientSession, tamper: Tamper | None,
            drop: Mapping[Stage, Dropper]) -> None:
    server, cohort = played.server, played.cohort
    gone: set[int] = set()
    try:
        outgoing = server.start()
        for stage in stage_order(cohort.config.mode):
            if stage in drop:
                gone |= drop[stage](played) - {cohort.target}
            for m in outgoing:
                if m.recipient in gone:
                    continue
                if m.recipient != cohort.target:
                    for reply in played.peers[m.recipient].receive(m):
                        server.receive(reply)
                    continue
                played.honest[stage] = m
                frames = tamper(stage, m, played) if tamper else [encode(m)]
                if not _to_target(played, session, stage, frames):
                    gone.add(cohort.target)
            if played.broken:
                return
            outgoing = server.close_stage()
    except RoundAborted as exc:
        played.aborted = exc


def _to_target(played: PlayedRound, session: ClientSession, stage: Stage,
               frames: list[bytes]) -> bool:
    """Send ``frames`` to the client under test; False once it refused or broke."""
    for i, data in enumerate(frames):
        played.sent.append((stage, data))
        try:
            reply = session.send(data)
        except TargetError as exc:
            played.broken = str(exc)
            return False
        played.replies.append((stage, reply))
        for raw in reply.messages:
            try:
                msg = decode(raw)
            except WireError as exc:
                played.broken = f"a malformed reply at {stage}: {exc}"
                return False
            if getattr(msg, "sender", None) != played.target:
                played.server_refused.append(f"a reply in the name of client "
                                             f"{getattr(msg, 'sender', None)}")
                continue
            try:
                played.server.receive(msg)
            except RemoteProtocolError as exc:
                played.server_refused.append(f"{type(msg).__name__}: {exc}")
            except ProtocolError as exc:
                played.server_refused.append(f"{type(msg).__name__}: {exc}")
        if reply.refused is not None:
            played.refused = (stage, i, reply.refused)
            return False
    return True


def setup_for(played: PlayedRound) -> Setup:
    """The Setup the client under test was (honestly) sent."""
    return played.honest[Stage.ADVERTISE_KEYS]
