"""Drive a real server and real clients up to a stage, for tests that tamper with one message.

The stages run through :class:`protocol.driver.RoundDriver` (the loop every host uses) until
the one asked for opens; the test then has that stage's messages and the objects to play it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protocol import ClientRound, RoundConfig, ServerRound, decode, encode
from protocol.driver import DropReason, Host, RoundDriver, StageRun
from protocol.messages import Message
from protocol.sessions import store_for_identity
from secagg import SigningKey


@dataclass
class Round:
    server: ServerRound
    clients: dict[int, ClientRound]
    inputs: np.ndarray
    outgoing: list[Message]  # the server messages that open the stage we stopped at
    identities: dict | None
    log: list[bytes]  # every encoded message exchanged so far, in order

    def by_recipient(self) -> dict[int, Message]:
        return {m.recipient: m for m in self.outgoing}

    def answer(self, messages: list[Message], skip=()) -> None:
        """Clients answer ``messages`` (through the wire); the server receives the replies."""
        for m in messages:
            if m.recipient in skip:
                continue
            for reply in self._replies(m):
                self.server.receive(reply)

    def _replies(self, m: Message) -> list[Message]:
        self.log.append(encode(m))
        out = []
        for reply in self.clients[m.recipient].receive(decode(self.log[-1])):
            self.log.append(encode(reply))
            out.append(decode(self.log[-1]))
        return out


class _Harness(Host):
    """Every client answers at once, except those the test drops at a stage."""

    def __init__(self, r: Round, drop: dict[str, set[int]]) -> None:
        self._r, self._drop = r, drop

    def deliver(self, run: StageRun) -> None:
        for m in run.outgoing:
            if m.recipient in self._drop.get(run.stage, ()):
                run.drop(m.recipient, DropReason.SCHEDULED)
                continue
            for reply in self._r._replies(m):
                run.accept(reply)


def run_until(stage: str, *, n: int = 8, dim: int = 16, mode: str = "semi-honest",
              bits: int = 32, drop: dict[str, set[int]] | None = None, **cfg) -> Round:
    """Run the round until the server has produced the messages that open ``stage``."""
    config = RoundConfig(bits=bits, mode=mode, **cfg)
    identities = registry = None
    if mode == "malicious":
        identities = {u: SigningKey.generate() for u in range(n)}
        registry = {u: k.verify_key for u, k in identities.items()}
    rng = np.random.default_rng(1)
    ring_max = 1 << bits
    inputs = rng.integers(0, ring_max, size=(n, dim), dtype=np.uint64)
    inputs = inputs.astype(np.uint32 if bits <= 32 else np.uint64)
    server = ServerRound(config, range(n), dim, registry=registry)
    clients = {u: ClientRound(u, config=config, input=inputs[u].copy(),
                              identity=identities[u] if identities else None, registry=registry,
                              used_sessions=store_for_identity(registry[u]) if registry else None)
               for u in range(n)}
    r = Round(server, clients, inputs, [], identities, [])
    harness = _Harness(r, drop or {})
    for run in RoundDriver(server, harness).steps():
        if run.stage == stage:
            r.outgoing = list(run.outgoing)
            return r
        harness.deliver(run)
    raise ValueError(stage)
