"""The transition table of one round, for the client and the server (the one owner of it).

In the manner of h11's ``_state.py``: states are enums, legal moves are table entries, and an
illegal move raises ``LocalProtocolError("can't handle X in state Y")``. Stages follow
Bonawitz et al. (CCS 2017) section 4, with ConsistencyCheck only in malicious mode.
"""

from __future__ import annotations

from enum import Enum, StrEnum

from .config import Mode
from .errors import LocalProtocolError
from .messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    KeysBroadcast,
    MaskedInput,
    Message,
    Setup,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)


class Stage(StrEnum):
    """The stages of a round, named as dropout schedules, logs and abort reasons name them."""

    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    CONSISTENCY_CHECK = "consistency_check"
    UNMASKING = "unmasking"


#: Every stage, in protocol order (a mode runs the ones :func:`stage_order` gives).
STAGES = tuple(Stage)


class ClientState(Enum):
    IDLE = "idle"
    AWAIT_KEYS = "await-keys"
    AWAIT_SHARES = "await-shares"
    AWAIT_INPUT = "await-input"  # the shares are held; the machine needs this client's input
    MASKED = "masked"
    SIGNED = "signed"
    DONE = "done"
    ERROR = "error"


class ServerState(Enum):
    SETUP = "setup"
    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    CONSISTENCY_CHECK = "consistency_check"
    UNMASKING = "unmasking"
    DONE = "done"
    ABORTED = "aborted"


class InputGiven:
    """The client machine's one local event: the host gives this client's input x_u."""


ANY = "*"
S, C = ServerState, ClientState

#: (mode, state, received message type) -> next state, for a client.
CLIENT_TRANSITIONS: dict[tuple[str, ClientState, type], ClientState] = {
    (ANY, C.IDLE, Setup): C.AWAIT_KEYS,
    (ANY, C.AWAIT_KEYS, KeysBroadcast): C.AWAIT_SHARES,
    (ANY, C.AWAIT_SHARES, SharesDelivery): C.AWAIT_INPUT,
    (ANY, C.AWAIT_INPUT, InputGiven): C.MASKED,  # at once when the input came before
    (Mode.SEMI_HONEST, C.MASKED, UnmaskRequest): C.DONE,
    (Mode.MALICIOUS, C.MASKED, ConsistencyRequest): C.SIGNED,
    (Mode.MALICIOUS, C.SIGNED, UnmaskRequest): C.DONE,
}

#: server message type -> the stage it opens (what a client is answering when it receives it).
OPENS: dict[type[Message], Stage] = {
    Setup: Stage.ADVERTISE_KEYS,
    KeysBroadcast: Stage.SHARE_KEYS,
    SharesDelivery: Stage.MASKED_INPUT,
    ConsistencyRequest: Stage.CONSISTENCY_CHECK,
    UnmaskRequest: Stage.UNMASKING,
}

#: server state -> the one client message type it accepts in that state.
SERVER_ACCEPTS: dict[ServerState, type[Message]] = {
    S.ADVERTISE_KEYS: AdvertiseKeys,
    S.SHARE_KEYS: ShareKeys,
    S.MASKED_INPUT: MaskedInput,
    S.CONSISTENCY_CHECK: ConsistencySignature,
    S.UNMASKING: UnmaskResponse,
}

#: (mode, state) -> next state when the stage closes (the "start" event for SETUP).
SERVER_TRANSITIONS: dict[tuple[str, ServerState], ServerState] = {
    (ANY, S.SETUP): S.ADVERTISE_KEYS,
    (ANY, S.ADVERTISE_KEYS): S.SHARE_KEYS,
    (ANY, S.SHARE_KEYS): S.MASKED_INPUT,
    (Mode.SEMI_HONEST, S.MASKED_INPUT): S.UNMASKING,
    (Mode.MALICIOUS, S.MASKED_INPUT): S.CONSISTENCY_CHECK,
    (Mode.MALICIOUS, S.CONSISTENCY_CHECK): S.UNMASKING,
    (ANY, S.UNMASKING): S.DONE,
}


def client_next(mode: str, state: ClientState, event: type) -> ClientState:
    nxt = CLIENT_TRANSITIONS.get((mode, state, event)) or CLIENT_TRANSITIONS.get(
        (ANY, state, event)
    )
    if nxt is None:
        raise LocalProtocolError(f"can't handle {event.__name__} in state {state.value}")
    return nxt


def server_accepts(state: ServerState, event: type[Message]) -> None:
    if SERVER_ACCEPTS.get(state) is not event:
        raise LocalProtocolError(f"can't handle {event.__name__} in state {state.value}")


def server_next(mode: str, state: ServerState) -> ServerState:
    nxt = SERVER_TRANSITIONS.get((mode, state)) or SERVER_TRANSITIONS.get((ANY, state))
    if nxt is None:
        raise LocalProtocolError(f"can't close stage in state {state.value}")
    return nxt


def stage_order(mode: str) -> tuple[Stage, ...]:
    """The stages a round of ``mode`` runs, in order: the path of :data:`SERVER_TRANSITIONS`
    from SETUP to DONE. Every host takes the order from here (through the round driver)."""
    out, state = [], server_next(mode, S.SETUP)
    while state is not S.DONE:
        out.append(Stage(state.value))
        state = server_next(mode, state)
    return tuple(out)
