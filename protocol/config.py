"""Round configuration and its resolution into concrete parameters for a cohort.

(k, t) come from the Bell et al. (CCS 2020) parameter finder (:mod:`secagg.params`) unless
given. ``min_survivors`` defaults to t in semi-honest mode (Bonawitz et al. CCS 2017: |U3| >= t)
and to max(t, n - D, Q) in malicious mode, D = ceil(dropout_rate * n): the malicious-mode graph
analysis assumes the server cannot declare more than D clients dropped, so clients and server
refuse to unmask below n - D.

Malicious mode also fixes the ConsistencyCheck quorum Q = floor((n + A) / 2) + 1 (at least t),
A = ceil(corrupt_rate * n): a client reveals shares only after Q cohort members signed the same
survivor set. Two quorums then share more than A members, hence an honest one, and an honest
client signs one set only; so a server cannot get two different survivor sets accepted (the
"split view" attack that a Shamir-t quorum allows in SecAgg+, where t is much smaller than n).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from functools import lru_cache

import numpy as np

from secagg import SecAggError, analyse_parameters, find_parameters
from secagg.encoding import canonical
from secagg.params import Analysis

from .messages import MAX_COHORT, MODES


class Mode(StrEnum):
    """The threat model a round runs under (Bonawitz et al. CCS 2017 sections 4 and 5)."""

    SEMI_HONEST = "semi-honest"
    MALICIOUS = "malicious"  # adds ConsistencyCheck and signed keys


assert tuple(Mode) == MODES  # the wire accepts exactly the modes a configuration names


class ConfigError(ValueError):
    """An invalid round configuration, or one that cannot be resolved for the cohort (a bad
    argument of this party's own, never a protocol violation by a peer)."""


def _opt_int(value: object, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{name} must be a positive int or None, got {value!r}")


@dataclass(frozen=True)
class RoundConfig:
    """What a deployment chooses; the per-cohort values are in :class:`RoundParameters`."""

    bits: int = 32
    mode: Mode = Mode.SEMI_HONEST
    threshold: int | None = None
    neighbours: int | None = None
    min_survivors: int | None = None
    dropout_rate: float = 0.1
    corrupt_rate: float = 0.05
    complete_graph: bool = False

    def __post_init__(self) -> None:
        bits = self.bits
        if isinstance(bits, bool) or not isinstance(bits, int) or not 8 <= bits <= 64:
            raise ConfigError(f"bits must be an int in [8, 64], got {self.bits!r}")
        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        object.__setattr__(self, "mode", Mode(self.mode))
        for name in ("threshold", "neighbours", "min_survivors"):
            _opt_int(getattr(self, name), name)
        for name in ("dropout_rate", "corrupt_rate"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not (
                math.isfinite(v) and 0 <= v < 1
            ):
                raise ConfigError(f"{name} must be a finite number in [0, 1), got {v!r}")
        if not isinstance(self.complete_graph, bool):
            raise ConfigError("complete_graph must be a bool")

    def resolve(self, n: int) -> RoundParameters:
        """Concrete (k, t, min_survivors) for a cohort of n clients.

        A pure function of the configuration and n, computed once per pair in this process
        (the parameter search costs milliseconds; every client of a cohort asks for it)."""
        if isinstance(n, bool) or not isinstance(n, int) or not 3 <= n <= MAX_COHORT:
            raise ConfigError(f"cohort size must be in [3, {MAX_COHORT}], got {n!r}")
        return _resolve(self, n)

    def _resolve(self, n: int) -> RoundParameters:
        try:
            k, t, analysis = self._graph(n)
        except SecAggError as exc:
            raise ConfigError(str(exc)) from exc
        if t > k:
            raise ConfigError(f"threshold {t} exceeds the number of neighbours {k}")
        if self.mode == Mode.MALICIOUS and 2 * t <= k:
            raise ConfigError(f"malicious mode needs 2t > k, got t = {t}, k = {k}")
        dropped = math.ceil(Fraction(str(self.dropout_rate)) * n)
        corrupted = math.ceil(Fraction(str(self.corrupt_rate)) * n)
        quorum = max(t, (n + corrupted) // 2 + 1)
        default = t if self.mode == Mode.SEMI_HONEST else max(t, n - dropped, quorum)
        m = self.min_survivors if self.min_survivors is not None else default
        if m > n:
            raise ConfigError(f"min_survivors {m} exceeds the cohort size {n}")
        if self.mode == Mode.MALICIOUS and quorum > n:
            raise ConfigError(f"the consistency quorum {quorum} exceeds the cohort size {n}")
        return RoundParameters(n, k, t, m, analysis, corrupted, quorum)

    def _graph(self, n: int) -> tuple[int, int, Analysis | None]:
        rates = dict(dropout_rate=self.dropout_rate, corrupt_rate=self.corrupt_rate,
                     mode=self.mode)
        if self.neighbours is None:
            p = find_parameters(n, complete=self.complete_graph, **rates)
            t = p.t if self.threshold is None else self.threshold
            return p.k, t, p.analysis if self.threshold is None else None
        k = n - 1 if (self.complete_graph or self.neighbours >= n - 1) else self.neighbours
        if k < n - 1 and k % 2:
            raise ConfigError(f"neighbours must be even (Harary graph), got {k}")
        if self.threshold is not None:
            return k, self.threshold, None
        for t in range(2, k + 1):
            a = analyse_parameters(n, k, t, **rates)
            if a.secure() and a.correct():
                return k, t, a
        raise ConfigError(f"no threshold meets the security targets with {k} neighbours")


@dataclass(frozen=True)
class RoundParameters:
    n: int
    neighbours: int
    threshold: int
    min_survivors: int
    analysis: Analysis | None  # None when the caller chose (k, t) by hand
    corrupted: int = 0  # A = ceil(corrupt_rate * n)
    quorum: int = 0  # malicious mode: signatures over one U3 needed before unmasking


@lru_cache(maxsize=64)
def _resolve(config: RoundConfig, n: int) -> RoundParameters:
    return config._resolve(n)


def derive_graph_seed(session_id: bytes, round: int, cohort: tuple[int, ...]) -> bytes:
    """The public ordering seed of the SecAgg+ graph, recomputed by every client.

    The server can influence it only through the session id; see threat_model.md. The last
    few seeds are kept: the clients of a cohort simulated in one process share them.
    """
    if type(session_id) is bytes and type(round) is int and type(cohort) is tuple:
        return _shared_graph_seed(session_id, round, cohort)
    return _graph_seed(session_id, round, cohort)


@lru_cache(maxsize=4)
def _shared_graph_seed(session_id: bytes, round: int, cohort: tuple[int, ...]) -> bytes:
    return _graph_seed(session_id, round, cohort)


def _graph_seed(session_id: bytes, round: int, cohort: tuple[int, ...]) -> bytes:
    ids = np.asarray(cohort, dtype=">u4").tobytes()
    return hashlib.sha256(canonical("secagg-graph", session_id, round, ids)).digest()
