"""What every stage module shares: the round's public constants on each side, and the one
internal signal of a failed check on a peer's message."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from secagg import Ring, SecAggError, VerifyKey
from secagg.graph import NeighbourGraph

from ..config import Mode, RoundConfig, RoundParameters
from ..errors import AbortReason, RemoteProtocolError, RoundAborted
from ..messages import Message, Setup
from ..transitions import Stage


class Refusal(Exception):
    """A check on a peer's message failed; :meth:`protocol.client.ClientRound.receive` turns it
    into :class:`RemoteProtocolError` (the one boundary)."""


def verifies(key: VerifyKey, signature: bytes, payload: bytes, *, label: str) -> bool:
    """Whether ``signature`` is ``key``'s signature over ``payload`` under ``label``."""
    try:
        key.verify(signature, payload, label=label)
    except SecAggError:
        return False
    return True


@dataclass(frozen=True)
class ServerContext:
    """The server's constants for one round, read by every stage and changed by none."""

    config: RoundConfig
    params: RoundParameters
    cohort: tuple[int, ...]
    dim: int
    session_id: bytes
    round: int
    graph_seed: bytes
    graph: NeighbourGraph = field(repr=False)
    ring: Ring
    registry: Mapping[int, VerifyKey] | None = field(repr=False)

    @property
    def mode(self) -> Mode:
        return self.config.mode

    @property
    def t(self) -> int:
        return self.params.threshold

    def refuse(self, stage: Stage, m: Message, why: str) -> RemoteProtocolError:
        """The error for a refused client message (it is discarded; nothing else changes)."""
        return RemoteProtocolError(f"message from client {getattr(m, 'sender', '?')} refused "
                                   f"in {stage}: {why}")

    def need(self, stage: Stage, have: int, reason: AbortReason) -> None:
        """Raises RoundAborted(reason) if ``have`` is below the minimum number of survivors."""
        if have < self.params.min_survivors:
            raise RoundAborted(stage, reason, f"{have} clients, minimum "
                               f"{self.params.min_survivors}")


@dataclass(frozen=True)
class ClientContext:
    """The client's constants for one round, fixed by the Setup it accepted."""

    id: int
    setup: Setup
    mode: Mode
    params: RoundParameters
    ring: Ring
    neighbours: frozenset[int]
    registry: Mapping[int, VerifyKey] | None = field(repr=False)
