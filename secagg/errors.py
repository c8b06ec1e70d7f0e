"""Exceptions of the cryptographic core.

One base exception, :class:`SecAggError`, for the whole package (after PyNaCl's convention:
each subclass also subclasses the matching builtin, so ``except ValueError`` keeps working).
Errors that face a remote peer (:class:`DecryptionError`, :class:`SignatureError`) carry one
opaque message and never say which check failed.
"""

from __future__ import annotations


class SecAggError(Exception):
    """Base class of every error raised by :mod:`secagg`."""


class SecAggTypeError(SecAggError, TypeError):
    """An argument has the wrong Python type or numpy dtype."""


class SecAggValueError(SecAggError, ValueError):
    """An argument has the right type but an invalid value."""


class RingError(SecAggValueError):
    """A bit width outside [8, 64], or a value outside [0, 2^b)."""


class ShapeError(SecAggValueError):
    """An array has the wrong number of dimensions or the wrong length."""


class SeedError(SecAggValueError):
    """A PRG seed or key of the wrong length (seeds must be exactly 32 bytes)."""


class EncodingError(SecAggValueError):
    """A field cannot be canonically encoded, or bytes do not decode strictly."""


class KeyAgreementError(SecAggValueError):
    """A malformed or low-order X25519 public key, or invalid derivation context."""


class ShamirError(SecAggValueError):
    """Base class of the secret-sharing errors."""


class ThresholdError(ShamirError):
    """A threshold outside [1, n]."""


class InsufficientSharesError(ShamirError):
    """Fewer than t shares were given to :func:`secagg.shamir.combine`."""


class DuplicateShareError(ShamirError):
    """Two shares with the same x-coordinate."""


class ForeignShareError(ShamirError):
    """A share from another dealing, or one that does not lie on the dealt polynomial."""


class UndecodableSharesError(ForeignShareError):
    """More shares are wrong than :func:`secagg.shamir.decode` can correct.

    N shares of threshold t that are not on one polynomial of degree < t, and not within
    floor((N - t) / 2) wrong shares of one either.
    """


class DecryptionError(SecAggValueError):
    """AEAD opening failed. Deliberately opaque: the reason is never revealed."""

    def __init__(self) -> None:
        super().__init__("decryption failed")


class SignatureError(SecAggValueError):
    """An Ed25519 signature does not verify. Deliberately opaque."""

    def __init__(self) -> None:
        super().__init__("signature verification failed")


class GraphParameterError(SecAggValueError):
    """SecAgg+ neighbour-graph parameters that are invalid or cannot meet the security and
    correctness targets: the cohort, the degree k, the threshold t, the dropout and corruption
    rates or the targets (:mod:`secagg.params`), or the client ids of a graph
    (:mod:`secagg.graph`)."""
