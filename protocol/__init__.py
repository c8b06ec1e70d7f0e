"""protocol: sans-IO SecAgg / SecAgg+ rounds, the round driver, its hosts and the command line.

Bonawitz et al. (CCS 2017) section 4 with the SecAgg+ graph of Bell et al. (CCS 2020):
AdvertiseKeys, ShareKeys, MaskedInput, ConsistencyCheck (malicious mode), Unmasking.

    from protocol import RoundConfig, simulate_round
    result = simulate_round(inputs, config=RoundConfig(bits=32, mode="semi-honest"),
                            dropouts={"share_keys": {3}, "masked_input": {5, 6}})
"""

from .client import ClientRound, InputError
from .config import ConfigError, Mode, RoundConfig, RoundParameters
from .driver import AsyncHost, Drop, DropReason, Host, RoundDriver, StageRun
from .errors import (
    AbortReason,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    RoundAborted,
    WireError,
)
from .participant import Participant
from .server import ServerRound
from .transitions import STAGES, ClientState, ServerState, Stage, stage_order
from .wire import decode, encode

#: Names of the in-process host, imported on first use so that a network host (which imports
#: ``protocol``) does not load the simulator.
_SIMULATION = ("SeededInputs", "SimulationResult", "Transcript", "simulate_round")


def __getattr__(name: str):
    if name in _SIMULATION:
        from . import simulate

        return getattr(simulate, name)
    raise AttributeError(f"module 'protocol' has no attribute {name!r}")

__all__ = [
    "STAGES",
    "AbortReason",
    "AsyncHost",
    "ClientRound",
    "ClientState",
    "ConfigError",
    "Drop",
    "DropReason",
    "Host",
    "InputError",
    "LocalProtocolError",
    "Mode",
    "Participant",
    "ProtocolError",
    "RemoteProtocolError",
    "RoundAborted",
    "RoundConfig",
    "RoundDriver",
    "RoundParameters",
    "ServerRound",
    "SeededInputs",
    "ServerState",
    "SimulationResult",
    "Stage",
    "StageRun",
    "Transcript",
    "WireError",
    "decode",
    "encode",
    "simulate_round",
    "stage_order",
]
