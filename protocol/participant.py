"""A client's side of a round for every host: the sans-IO machine, its DP side, and the one
point where a DP client is charged.

A host (the simulation, the network client, a Flower client) holds one :class:`Participant`
per identity and does three things with it: :meth:`~Participant.join` a round at its Setup,
:meth:`~Participant.receive` the server's later messages, and, when
:attr:`~Participant.needs_input` is true, :meth:`~Participant.give_input`. With DP the budget
filter runs at :meth:`~Participant.join` (a client over its own budget sends nothing), and the
write-ahead ledger record is made inside :meth:`~Participant.give_input`, just before the masked
input leaves the client: a client that drops before that point is never charged, whichever
host runs it.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableSet

from secagg import SigningKey, VerifyKey

from .client import ClientRound
from .config import RoundConfig
from .dp_plan import DPClient
from .errors import LocalProtocolError, RemoteProtocolError
from .messages import Message, Setup


class Participant:
    """One client identity across rounds: a fresh :class:`ClientRound` per Setup.

    ``dp`` is the client's DP side (its plan and ledger), or None for plain secure aggregation
    of ring vectors.
    """

    def __init__(self, client_id: int, *, config: RoundConfig, identity: SigningKey | None = None,
                 registry: Mapping[int, VerifyKey] | None = None,
                 used_sessions: MutableSet[bytes] | None = None,
                 dp: DPClient | None = None) -> None:
        self._id, self._config = client_id, config
        self._identity, self._registry, self._used = identity, registry, used_sessions
        self._dp = dp
        self._round: ClientRound | None = None

    @property
    def id(self) -> int:
        return self._id

    @property
    def round(self) -> ClientRound | None:
        """The machine of the round this client is in (None before a Setup, or after it left)."""
        return self._round

    @property
    def config(self) -> RoundConfig:
        """The round configuration this client checks every Setup against."""
        return self._config

    @property
    def dp(self) -> DPClient | None:
        return self._dp

    @property
    def needs_input(self) -> bool:
        return self._round is not None and self._round.needs_input

    def join(self, setup: Setup) -> list[Message]:
        """Start the round ``setup`` opens and return the AdvertiseKeys. Raises BudgetExceeded
        (nothing sent: the client declines) if the round would take this client over its own
        budget, and RemoteProtocolError if the Setup is refused."""
        self._round = None
        if self._dp is not None:
            words = self._dp.plan.encoding.padded_dim
            if setup.dim != words:
                raise RemoteProtocolError(f"client {self._id} refuses: the setup's dimension "
                                          f"{setup.dim} is not the DP plan's {words}")
            self._dp.check_budget()
        machine = ClientRound(self._id, config=self._config, identity=self._identity,
                              registry=self._registry, used_sessions=self._used)
        out = machine.receive(setup)
        self._round = machine
        return out

    def receive(self, message: Message) -> list[Message]:
        """The server's next message for the round joined. Raises RemoteProtocolError if it is
        refused, LocalProtocolError if no round was joined."""
        if self._round is None:
            raise LocalProtocolError(f"client {self._id} has joined no round")
        return self._round.receive(message)

    def give_input(self, update: object, *, weight: float | None = None) -> list[Message]:
        """Give this client's input to a machine that needs it; return the MaskedInput.

        Plain aggregation: ``update`` is the ring vector itself. DP: ``update`` is the model
        update (any structure :func:`dp.update.flatten` takes); it is clipped, encoded and
        noised, and the participation is recorded in the client's ledger (write-ahead) right
        before the masked vector is returned. Raises LocalProtocolError if the machine does not
        need an input now, the DP errors of :meth:`DPClient.prepare` (nothing charged then), and
        InputError if the vector does not fit the round."""
        machine = self._round
        if machine is None or not machine.needs_input:
            raise LocalProtocolError(f"client {self._id} does not need an input now")
        if self._dp is None:
            return machine.set_input(update)
        s = machine.setup
        vector = self._dp.prepare(update, session_id=s.session_id, round=s.round, weight=weight)
        return machine.set_input(vector)

    def resume(self, machine: ClientRound) -> None:
        """Continue a round kept outside this process (:meth:`ClientRound.restore_state`).
        Raises LocalProtocolError if ``machine`` is another client's."""
        if machine.id != self._id:
            raise LocalProtocolError(f"client {self._id} cannot resume client {machine.id}'s "
                                     "round")
        self._round = machine

    def remember_session(self, session_id: bytes) -> None:
        """Record a session this client joined in another process (a forked simulation
        worker), so that this process refuses it as a replay too."""
        if self._used is not None:
            self._used.add(session_id)

    def leave(self) -> None:
        """Forget the round joined (it ended, or this client gave it up)."""
        self._round = None
