"""What the ``secagg`` subcommands share: argument types, the round configuration built from
the ``simulate`` options, and the dropout schedule that spreads dropouts over the stages."""

from __future__ import annotations

import argparse

import numpy as np

from secagg import SecAggError

from ..config import ConfigError, RoundConfig
from ..errors import ProtocolError
from ..simulate import spread_dropouts

#: What building a round configuration or running a round raises for a refused configuration
#: or an aborted round.
ROUND_ERRORS = (ProtocolError, SecAggError, ConfigError)


def positive(kind: type, lo: float, hi: float | None = None):
    """An argparse type: ``kind(text)`` within ``[lo, hi]`` (no upper bound when ``hi`` is
    None), an ``ArgumentTypeError`` otherwise."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(
                f"{text} outside [{lo}, {hi if hi is not None else 'inf'}]"
            )
        return value

    return parse


def round_config(args: argparse.Namespace) -> RoundConfig:
    """The round configuration the ``simulate`` options ask for (raises ConfigError)."""
    return RoundConfig(bits=args.bits, mode=args.mode, dropout_rate=min(args.dropout, 0.95),
                       corrupt_rate=args.corrupt, complete_graph=args.complete_graph)


def dropout_schedule(rng: np.random.Generator, clients: int, dropout: float,
                     mode: str) -> dict[str, set[int]]:
    """Drop ``round(dropout * clients)`` clients drawn from ``rng``, dealt in turn to the stages
    that ``mode`` runs (:func:`protocol.simulate.spread_dropouts`, in ``stage_order(mode)``);
    every stage is a key, named by its string value."""
    n_drop = int(round(dropout * clients))
    dropped = rng.choice(clients, size=n_drop, replace=False).tolist() if n_drop else []
    return spread_dropouts(dropped, mode)
