"""Protocol exceptions (docs/architecture.md section 8, after h11's ``_util.py``).

* :class:`LocalProtocolError`: this party was asked to make an illegal move ("can't handle X
  in state Y"), or a check on a received message failed while processing it.
* :class:`RemoteProtocolError`: the peer did something wrong. :meth:`ClientRound.receive` is
  the one boundary where a local error raised while handling a peer's message is converted.
* :class:`WireError`: bytes that do not decode strictly. One type for every decoding failure.
* :class:`StateError`: a kept client state that must not be restored (tampered, foreign,
  rolled back).
* :class:`RoundAborted`: the server cannot complete the round; ``reason`` names why.

All derive from :class:`ProtocolError`, which also subclasses ValueError.
"""

from __future__ import annotations

from enum import StrEnum


class AbortReason(StrEnum):
    """Why a round was aborted: the ``reason`` of :class:`RoundAborted` and of the abort log."""

    TOO_FEW_CLIENTS = "too-few-clients"  # fewer than the minimum advertised or shared keys
    NEIGHBOURHOOD_BELOW_THRESHOLD = "neighbourhood-below-threshold"
    TOO_FEW_SURVIVORS = "too-few-survivors"  # fewer masked inputs than the minimum
    UNRECOVERABLE_DROPOUT = "unrecoverable-dropout"  # a mask could never be removed
    TOO_FEW_SIGNATURES = "too-few-signatures"  # below the ConsistencyCheck quorum
    CANNOT_RECONSTRUCT = "cannot-reconstruct"  # the shares of a secret do not decode
    BAD_RECONSTRUCTION = "bad-reconstruction"  # a secret fails its check; no one blamed
    BAD_DEALING = "bad-dealing"  # a secret its own dealer made invalid; the dealer blamed
    INTERNAL_ERROR = "internal-error"  # a value no check anticipated
    COHORT_TOO_SMALL = "cohort-too-small"  # the cohort cannot run a round at all
    LEDGER_REFUSED = "ledger-refused"  # the DP write-ahead record failed: nothing unmasked
    PROTOCOL_ERROR = "protocol-error"  # an illegal move by this host


class ProtocolError(ValueError):
    """Base class of every error raised by :mod:`protocol`."""


class LocalProtocolError(ProtocolError):
    """An illegal move or failed check by this party."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something this party must refuse."""


class WireError(RemoteProtocolError):
    """Bytes that are not a valid, canonical message of a known version and type."""


class StateError(LocalProtocolError):
    """A kept client state (:mod:`protocol.client_state`) that must not be restored."""


class StateTampered(StateError):
    """The sealed state does not decode or authenticate."""


class ForeignState(StateError):
    """The sealed state belongs to another node, client, session or round."""


class StateRolledBack(StateError):
    """The sealed state is older than the last one sealed for its session, or its session
    already ended."""


class RoundAborted(ProtocolError):
    """The server aborted the round. ``stage`` and ``reason`` say where and why; ``clients``
    names the clients the abort is attributed to (for example the dealer of a secret that
    reconstructs to an invalid value), empty when no one can be blamed."""

    def __init__(self, stage: str, reason: AbortReason | str, detail: str = "", *,
                 clients: tuple[int, ...] = ()) -> None:
        self.stage = stage
        self.reason = AbortReason(reason)
        self.detail = detail
        self.clients = tuple(clients)
        super().__init__(f"round aborted in {stage}: {reason}" + (f" ({detail})" if detail else ""))
