"""Clients that deal invalid secrets on purpose, for the server's reconstruction checks (the
conformance server suite and the tests). They reach into :class:`ClientRound`'s stage
hand-offs, which are frozen dataclasses, by replacing them."""

from __future__ import annotations

import dataclasses
import os

from ..client import ClientRound
from ..messages import KeysBroadcast, Setup
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
