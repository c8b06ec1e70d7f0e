"""The round driver: the one loop around :class:`~protocol.server.ServerRound`, for every host.

A host (the in-process simulation, the gRPC server, a Flower workflow) moves bytes and keeps
time; the driver owns everything else about the order of a round:

* the stages, in the order :func:`protocol.transitions.stage_order` derives from the server's
  transition table;
* the dropout bookkeeping: who is still in the round, who dropped, at which stage and why
  (:class:`Drop`); a client still pending when a stage closes missed its deadline;
* the points a host fills (:class:`Host`): :meth:`~Host.deliver` the messages that open a stage,
  :meth:`~Host.collect` the replies until the stage closes (everyone answered, or the host's
  deadline passed), and the named hooks :meth:`~Host.on_survivors_known` (the survivor set U3
  is final and no unmasking share has been requested yet: where the DP write-ahead commit
  goes), :meth:`~Host.on_drop` and :meth:`~Host.on_stage_closed`.

The driver is sans-IO too: :meth:`RoundDriver.run` serves a synchronous host and
:meth:`RoundDriver.run_async` an asyncio one; both walk the same stage sequence.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from .errors import AbortReason, RoundAborted
from .messages import Message
from .server import ServerRound
from .transitions import Stage, stage_order


class DropReason(StrEnum):
    """Why a client left a round."""

    SCHEDULED = "scheduled"  # the simulation's dropout schedule
    NOT_CONNECTED = "not connected"  # no live connection when the stage opened
    DEADLINE = "deadline missed"  # still pending when the stage closed
    GOODBYE = "goodbye"  # the client said goodbye
    DECLINED = "declined"  # the client declined the round (its budget, its checks)
    REFUSED = "refused"  # the client refused a server message (in process)
    CONNECTION_LOST = "connection lost"
    VIOLATION = "violation"  # the client sent what the protocol or transport refuses


@dataclass(frozen=True)
class Drop:
    """One client's exit from the round: where, why, and the host's detail."""

    stage: Stage
    reason: DropReason
    detail: str = ""

    def __str__(self) -> str:
        return self.detail or str(self.reason)


class Host:
    """The points a synchronous host fills; every hook but :meth:`deliver` may be left as is."""

    def deliver(self, run: StageRun) -> None:
        """Send ``run.outgoing`` (already without the clients that dropped)."""
        raise NotImplementedError

    def collect(self, run: StageRun) -> None:
        """Feed replies to :meth:`StageRun.accept` until ``run.done`` or the deadline."""

    def on_survivors_known(self, survivors: frozenset[int]) -> None:
        """U3 is final and no unmasking share has been requested yet. Raising here aborts the
        round unreleased (:attr:`~protocol.errors.AbortReason.LEDGER_REFUSED`)."""

    def on_drop(self, client: int, drop: Drop) -> None:
        """A client left the round."""

    def on_stage_closed(self, run: StageRun) -> None:
        """``run``'s stage closed and the next stage's messages are made."""


class AsyncHost(Host):
    """An asyncio host: :meth:`deliver` and :meth:`collect` are coroutines."""

    async def deliver(self, run: StageRun) -> None:  # type: ignore[override]
        raise NotImplementedError

    async def collect(self, run: StageRun) -> None:  # type: ignore[override]
        """Feed replies to :meth:`StageRun.accept` until ``run.done`` or the deadline."""


Meter = Callable[[], AbstractContextManager]


class StageRun:
    """One open stage as a host sees it: what to send, who must still answer, and the two
    things a host may do with a client (:meth:`accept` its reply, :meth:`drop` it)."""

    def __init__(self, driver: RoundDriver, stage: Stage, outgoing: Sequence[Message]) -> None:
        self._driver, self.stage = driver, stage
        self.outgoing: tuple[Message, ...] = tuple(
            m for m in outgoing if m.recipient not in driver.dropped)
        self._pending = {m.recipient for m in self.outgoing}
        self.server_seconds = 0.0  # time inside the server's calls for this stage
        self.started = time.perf_counter()
        self.seconds = 0.0  # from opening to closing, set when the stage closes

    @property
    def pending(self) -> frozenset[int]:
        """Clients sent a message in this stage that have not answered (nor dropped)."""
        return frozenset(self._pending)

    def is_pending(self, client: int) -> bool:
        """Whether ``client`` was sent a message in this stage and has neither answered nor
        dropped."""
        return client in self._pending

    def has_left(self, client: int) -> bool:
        """Whether ``client`` has dropped out of the round (at this stage or before)."""
        return client in self._driver.dropped

    @property
    def done(self) -> bool:
        return not self._pending

    def accept(self, message: Message) -> None:
        """Hand one client reply to the server; its sender is no longer pending. Raises
        RemoteProtocolError (the message is discarded, the sender still pending) if the
        server refuses it."""
        with self._driver.meter():
            t0 = time.perf_counter()
            try:
                self._driver.server.receive(message)
            finally:
                self.server_seconds += time.perf_counter() - t0
        self._pending.discard(message.sender)

    def drop(self, client: int, reason: DropReason, detail: str = "") -> bool:
        """``client`` leaves the round now; True if it had not left before."""
        self._pending.discard(client)
        return self._driver.drop(client, Drop(self.stage, reason, detail))


class RoundDriver:
    """Drives one :class:`ServerRound` through its stages for ``host``.

    ``meter`` is a context-manager factory entered around every server call (the simulator
    uses it to measure memory); it must not change what the call does.
    """

    def __init__(self, server: ServerRound, host: Host, *, meter: Meter = nullcontext) -> None:
        self.server, self.host, self.meter = server, host, meter
        self._dropped: dict[int, Drop] = {}
        self._dropped_view = MappingProxyType(self._dropped)

    @property
    def dropped(self) -> Mapping[int, Drop]:
        """client -> how it left the round (a read-only view)."""
        return self._dropped_view

    def drop(self, client: int, drop: Drop) -> bool:
        """Record that ``client`` left; True if it had not left before."""
        if client in self._dropped:
            return False
        self._dropped[client] = drop
        self.host.on_drop(client, drop)
        return True

    def run(self) -> ServerRound:
        """Run the round with a synchronous host; the server is DONE on return. Raises
        RoundAborted (typed) if the round cannot complete."""
        for run in self.steps():
            self.host.deliver(run)
            self.host.collect(run)
        return self.server

    async def run_async(self) -> ServerRound:
        """:meth:`run` for an :class:`AsyncHost`."""
        for run in self.steps():
            await self.host.deliver(run)
            await self.host.collect(run)
        return self.server

    def steps(self) -> Iterator[StageRun]:
        """The stage sequence itself: each stage is opened and yielded (the host delivers and
        collects), then closed when the host asks for the next one. :meth:`run` and
        :meth:`run_async` are this loop; a test harness may stop it at a stage."""
        server = self.server
        with self.meter():
            outgoing = server.start()
        for stage in stage_order(server.mode):
            if stage is Stage.UNMASKING:
                self._survivors_known(stage)
            run = StageRun(self, stage, outgoing)
            yield run
            for u in sorted(run.pending):
                run.drop(u, DropReason.DEADLINE)
            t0 = time.perf_counter()
            try:
                with self.meter():
                    outgoing = server.close_stage()
            finally:
                run.server_seconds += time.perf_counter() - t0
                run.seconds = time.perf_counter() - run.started
            self.host.on_stage_closed(run)

    def _survivors_known(self, stage: Stage) -> None:
        try:
            self.host.on_survivors_known(self.server.survivors)
        except RoundAborted:
            raise
        except Exception as exc:  # the write-ahead record failed: nothing may be unmasked
            why = f"I/O error: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
            abort = RoundAborted(stage, AbortReason.LEDGER_REFUSED, why)
            self.server.give_up(abort)
            raise abort from exc


__all__ = ["AsyncHost", "Drop", "DropReason", "Host", "RoundDriver", "StageRun"]
