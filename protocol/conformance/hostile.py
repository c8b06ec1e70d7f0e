"""Clients that break the protocol on purpose: dealers of invalid secrets, for the server's
reconstruction checks (the conformance server suite and the tests), and a client that reveals
both shares of a neighbour, which the client suite must fail. They reach into
:class:`ClientRound`'s stage hand-offs, which are frozen dataclasses, by replacing them."""

from __future__ import annotations

import dataclasses
import os

from ..client import ClientRound
from ..messages import KeysBroadcast, Setup, UnmaskRequest, UnmaskResponse
from ..transcript import ADVERTISE_LABEL, advertise_bytes, commit_self_seed


class ShortSeedDealer(ClientRound):
    """Deals (and commits to) a self-mask seed of ``length`` bytes instead of 32, then sends a
    masked input made with some 32-byte seed: the commitment matches the shares it dealt (and,
    in malicious mode, its advertisement is signed over that commitment)."""

    length = 31

    def _handle(self, m):
        if not isinstance(m, Setup):
            return super()._handle(m)
        (adv,) = super()._handle(m)
        dealt = os.urandom(self.length)
        self._keys = dataclasses.replace(self._keys, b_seed=dealt)
        commitment = commit_self_seed(m.session_id, m.round, self.id, dealt)
        signature = adv.signature
        if self._identity is not None:
            signature = self._identity.sign(advertise_bytes(
                m.session_id, m.round, m.graph_seed, self.id, adv.c_pk, adv.s_pk, commitment),
                label=ADVERTISE_LABEL)
        return [dataclasses.replace(adv, b_commitment=commitment, signature=signature)]

    def _give(self, x):
        dealt = self._keys
        self._keys = dataclasses.replace(dealt, b_seed=os.urandom(32))
        try:
            return super()._give(x)
        finally:
            self._keys = dealt


class _ShortKey:
    """A key pair whose private bytes (as dealt in shares) are cut to 20 bytes."""

    def __init__(self, real) -> None:
        self.real = real
        self.public_bytes = real.public_bytes

    def private_bytes(self):
        return self.real.private_bytes()[:20]


class ShortKeyDealer(ClientRound):
    """Deals shares of a 20-byte s_u^SK (the advertised s_u^PK is the real one's)."""

    def _handle(self, m):
        if not isinstance(m, KeysBroadcast):
            return super()._handle(m)
        real = self._keys
        self._keys = dataclasses.replace(real, s_keys=_ShortKey(real.s_keys))
        try:
            return super()._handle(m)
        finally:
            self._keys = real


class BothShareKinds(ClientRound):
    """Answers an unmasking request that lists a neighbour both alive and dead with both of
    that neighbour's shares (in two responses, since one response cannot carry both kinds for
    one owner): the attack the alive-and-dead check refuses (Bonawitz et al. CCS 2017 section
    4: with both, the server removes the neighbour's masks and reads its input)."""

    def _handle(self, m):
        if not isinstance(m, UnmaskRequest) or not set(m.alive) & set(m.dead):
            return super()._handle(m)
        held = self._shares.held
        alive = tuple((v, held[v][0].to_bytes()) for v in m.alive if v in held)
        dead = tuple((v, held[v][1].to_bytes()) for v in m.dead if v in held)
        return [UnmaskResponse(m.session_id, m.round, self.id, alive, ()),
                UnmaskResponse(m.session_id, m.round, self.id, (), dead)]
