"""One client's side of a round, sans-IO: messages in, messages out.

Bonawitz et al. (CCS 2017) section 4 and Bell et al. (CCS 2020) section 3: AdvertiseKeys,
ShareKeys, MaskedInput, ConsistencyCheck (malicious mode), Unmasking. No sockets, threads or
clocks: :meth:`ClientRound.receive` takes a decoded server message and returns the messages to
send. Every check a hardened client makes is in the stage modules (:mod:`protocol.stages`); a
failed check is raised as :class:`RemoteProtocolError` (the server or a peer misbehaved) at the
one boundary in :meth:`receive`, and the client then stays in ERROR for good.

The input x_u is a state of the machine, as in the "input set / waiting for input" states of
Google's fcp/secagg client: once the shares are held the machine is in AWAIT_INPUT
(:attr:`ClientRound.needs_input`) until :meth:`ClientRound.set_input` gives it, which returns
the MaskedInput to send. An input given earlier is used as soon as the shares arrive.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableSet

import numpy as np

from secagg import SecAggError, SigningKey, VerifyKey

from .client_state import RoundState, export_round, restore_round
from .config import Mode, RoundConfig, RoundParameters
from .errors import LocalProtocolError, RemoteProtocolError
from .messages import (
    ConsistencyRequest,
    KeysBroadcast,
    Message,
    Setup,
    SharesDelivery,
    UnmaskRequest,
)
from .stages.advertise_keys import ClientKeys, client_advertise
from .stages.common import Refusal
from .stages.consistency_check import ClientSigned, client_sign
from .stages.masked_input import (
    ClientShares,
    InputError,
    client_mask,
    client_receive_shares,
    validated_input,
)
from .stages.share_keys import ClientPeers, client_share
from .stages.unmasking import client_unmask
from .transitions import ANY, ClientState, InputGiven, client_next

__all__ = ["ClientRound", "InputError"]


class ClientRound:
    """Client ``client_id`` for one round.

    ``config`` is the deployment's configuration as *this client* knows it: a Setup whose mode,
    bit width, degree, threshold or minimum survivors differ from ``config.resolve(n)`` is
    refused, so a server cannot downgrade the mode or weaken the parameters.

    ``used_sessions`` is the store of session ids this identity has taken part in (see
    :mod:`protocol.sessions`): a Setup that reuses one is refused. Malicious mode requires it,
    kept per identity across objects, processes and restarts (a
    :class:`~protocol.sessions.FileSessionStore`, or
    :func:`~protocol.sessions.store_for_identity` in one process): an identity that took part
    in one session twice could be made to sign two survivor sets for it.

    Raises TypeError or ValueError for a bad argument, including malicious mode without an
    identity, a registry or a used-session store.
    """

    def __init__(
        self,
        client_id: int,
        *,
        config: RoundConfig,
        input: np.ndarray | None = None,  # noqa: A002 - the protocol's x_u
        identity: SigningKey | None = None,
        registry: Mapping[int, VerifyKey] | None = None,
        used_sessions: MutableSet[bytes] | None = None,
    ) -> None:
        if isinstance(client_id, bool) or not isinstance(client_id, int):
            raise TypeError(f"client id must be a non-negative int, got {client_id!r}")
        if client_id < 0:
            raise ValueError(f"client id must be a non-negative int, got {client_id!r}")
        if not isinstance(config, RoundConfig):
            raise TypeError("config must be the deployment's RoundConfig")
        if config.mode == Mode.MALICIOUS and (identity is None or registry is None):
            raise ValueError("malicious mode needs an identity key and a registry")
        if config.mode == Mode.MALICIOUS and used_sessions is None:
            raise ValueError("malicious mode needs a persistent used-session store "
                             "(used_sessions) kept for this identity")
        self._id, self._config = client_id, config
        self._identity, self._registry = identity, registry
        self._used = used_sessions if used_sessions is not None else set()
        self._state = ClientState.IDLE
        self._error: str | None = None
        self._input = input  # x_u as given; validated once the Setup fixes the ring
        # what each stage handed on, None until it is passed
        self._keys: ClientKeys | None = None
        self._peers: ClientPeers | None = None
        self._shares: ClientShares | None = None
        self._signed: ClientSigned | None = None

    # -- public view -----------------------------------------------------------------------
    @property
    def id(self) -> int:
        return self._id

    @property
    def config(self) -> RoundConfig:
        return self._config

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def error(self) -> str | None:
        """Why the client is in ERROR (None otherwise)."""
        return self._error

    @property
    def setup(self) -> Setup | None:
        """The Setup this client accepted (None before)."""
        return self._keys.ctx.setup if self._keys is not None else None

    @property
    def params(self) -> RoundParameters | None:
        return self._keys.ctx.params if self._keys is not None else None

    @property
    def neighbours(self) -> frozenset[int]:
        return self._keys.ctx.neighbours if self._keys is not None else frozenset()

    @property
    def share_holders(self) -> frozenset[int]:
        """The neighbours whose shares this client holds (empty before MaskedInput)."""
        return self._shares.holders_of if self._shares is not None else frozenset()

    @property
    def needs_input(self) -> bool:
        """The machine holds its shares and waits for x_u (:meth:`set_input`)."""
        return self._state is ClientState.AWAIT_INPUT

    # -- the one boundary ------------------------------------------------------------------
    def receive(self, message: Message) -> list[Message]:
        """Process one server message; return the messages to send back. Raises
        RemoteProtocolError if the message is refused (the client is then in ERROR for good),
        InputError if this client's own input does not fit the round, and LocalProtocolError
        if the client is already in ERROR."""
        if self._state is ClientState.ERROR:
            raise LocalProtocolError(f"client {self._id} is in ERROR: {self._error}")
        with self._boundary():
            nxt = client_next(self._mode, self._state, type(message))
            self._check_binding(message)
            out = self._handle(message)
            self._state = nxt
            if nxt is ClientState.AWAIT_INPUT and self._input is not None:
                out = self._give(self._input)
        return out

    def set_input(self, x: np.ndarray) -> list[Message]:
        """Give (or replace) x_u. Before the shares arrive it is kept (and validated once the
        Setup fixes the ring) and nothing is returned; in AWAIT_INPUT it is masked at once and
        the MaskedInput to send is returned. Raises InputError if x_u does not fit the round,
        and LocalProtocolError once the input has been masked."""
        if self._state in (ClientState.MASKED, ClientState.SIGNED, ClientState.DONE,
                           ClientState.ERROR):
            raise LocalProtocolError(f"can't set the input in state {self._state.value}")
        if self._state is not ClientState.AWAIT_INPUT:
            self._input = validated_input(self._keys, x) if self._keys else x
            return []
        with self._boundary():
            return self._give(x)

    def accepts(self, message: Message) -> bool:
        """Whether ``message`` is legal now (state, recipient, session and round, and for a
        Setup a session this identity never took part in), without processing it or changing
        any state: lets a caller avoid work (or a privacy charge) for a message
        :meth:`receive` would refuse anyway."""
        if self._state is ClientState.ERROR:
            return False
        try:
            client_next(self._mode, self._state, type(message))
            self._check_binding(message)
        except (LocalProtocolError, Refusal):
            return False
        return True

    # -- kept between processes (protocol.client_state) -------------------------------------
    def export_state(self) -> bytes:
        """This round's state as canonical JSON, secrets included: a host seals it
        (:class:`~protocol.client_state.StateSealer`) before it leaves the process. Raises
        LocalProtocolError in a state that is not kept (IDLE, DONE, ERROR)."""
        if self._keys is None:
            raise LocalProtocolError(f"a round in state {self._state.value} is not kept")
        return export_round(RoundState(self._state, self._keys, self._peers, self._shares,
                                       self._signed))

    @classmethod
    def restore_state(cls, data: bytes, *, config: RoundConfig,
                      identity: SigningKey | None = None,
                      registry: Mapping[int, VerifyKey] | None = None,
                      used_sessions: MutableSet[bytes] | None = None) -> ClientRound:
        """The round :meth:`export_state` wrote, under this client's configuration (checked
        again against the kept Setup). Raises StateTampered for a state that does not decode,
        LocalProtocolError for a Setup the configuration refuses now."""
        kept = restore_round(data, config=config, registry=registry)
        machine = cls(kept.keys.ctx.id, config=config, identity=identity, registry=registry,
                      used_sessions=used_sessions)
        if kept.keys.ctx.setup.session_id not in machine._used:
            machine._used.add(kept.keys.ctx.setup.session_id)
        machine._state = kept.state
        machine._keys, machine._peers = kept.keys, kept.peers
        machine._shares, machine._signed = kept.shares, kept.signed
        return machine

    # -- internals ---------------------------------------------------------------------------
    @property
    def _mode(self) -> str:
        return self._keys.ctx.mode if self._keys is not None else ANY

    def _boundary(self):
        return _Boundary(self)

    def _fail(self, reason: str) -> None:
        self._state, self._error = ClientState.ERROR, reason

    def _check_binding(self, m: Message) -> None:
        if getattr(m, "recipient", None) != self._id:
            raise Refusal(f"message addressed to {getattr(m, 'recipient', None)}, not "
                          f"{self._id}")
        if isinstance(m, Setup):
            if m.session_id in self._used:
                raise Refusal("replayed session: this session id was already used")
            return
        s = self._keys.ctx.setup
        if m.session_id != s.session_id or m.round != s.round:
            raise Refusal("message from another session or round (replay)")

    def _handle(self, m: Message) -> list[Message]:
        match m:
            case Setup():
                self._keys, out = client_advertise(
                    m, client_id=self._id, config=self._config, identity=self._identity,
                    registry=self._registry, used_sessions=self._used)
                if self._input is not None:
                    self._input = validated_input(self._keys, self._input)
                return [out]
            case KeysBroadcast():
                self._peers, out = client_share(self._keys, m)
                return [out]
            case SharesDelivery():
                self._shares = client_receive_shares(self._keys, self._peers, m)
                return []
            case ConsistencyRequest():
                self._signed, out = client_sign(self._keys, self._peers, self._shares,
                                                self._identity, m)
                return [out]
            case UnmaskRequest():
                return [client_unmask(self._keys, self._peers, self._shares, self._signed, m)]
        raise LocalProtocolError(f"can't handle {type(m).__name__}")  # the table forbids it

    def _give(self, x: object) -> list[Message]:
        """AWAIT_INPUT -> MASKED: mask x_u and return the MaskedInput."""
        nxt = client_next(self._mode, self._state, InputGiven)
        x = validated_input(self._keys, x)
        out = client_mask(self._keys, self._shares, x)
        self._input, self._state = None, nxt  # the masked vector is on its way out
        return [out]


class _Boundary:
    """Where a failed check becomes RemoteProtocolError and the client enters ERROR."""

    def __init__(self, client: ClientRound) -> None:
        self._client = client

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None:
            return False
        c = self._client
        if isinstance(exc, InputError):
            c._fail(str(exc))
            return False
        if isinstance(exc, LocalProtocolError | Refusal | SecAggError):
            c._fail(str(exc))
            raise RemoteProtocolError(f"client {c._id} refuses: {exc}") from exc
        if isinstance(exc, Exception):  # no check anticipated it: the client stops here too
            c._fail(f"{type(exc).__name__}: {exc}")
        return False
