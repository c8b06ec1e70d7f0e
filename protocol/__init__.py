"""protocol: sans-IO SecAgg / SecAgg+ rounds, wire format, simulation and command line.

Bonawitz et al. (CCS 2017) section 4 with the SecAgg+ graph of Bell et al. (CCS 2020):
AdvertiseKeys, ShareKeys, MaskedInput, ConsistencyCheck (malicious mode), Unmasking.

    from protocol import RoundConfig, simulate_round
    result = simulate_round(inputs, config=RoundConfig(bits=32, mode="semi-honest"),
                            dropouts={"share_keys": {3}, "masked_input": {5, 6}})
"""

from .client import ClientRound, InputError
from .config import ConfigError, RoundConfig, RoundParameters
from .errors import (
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    RoundAborted,
    WireError,
)
from .server import ServerRound
from .simulate import SimulationResult, Transcript, simulate_round
from .transitions import STAGES, ClientState, ServerState
from .wire import decode, encode

__all__ = [
    "STAGES",
    "ClientRound",
    "ClientState",
    "ConfigError",
    "InputError",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "RoundAborted",
    "RoundConfig",
    "RoundParameters",
    "ServerRound",
    "ServerState",
    "SimulationResult",
    "Transcript",
    "WireError",
    "decode",
    "encode",
    "simulate_round",
]
