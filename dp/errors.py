"""Exceptions of :mod:`dp`.

One base exception, :class:`DPError`, for the package (PyNaCl's convention, docs/architecture.md
section 8): each subclass also subclasses the matching builtin, so ``except ValueError`` keeps
working.
"""

from __future__ import annotations


class DPError(Exception):
    """Base class of every error raised by :mod:`dp`."""


class UpdateError(DPError, ValueError):
    """A model update that cannot be used: NaN or infinite values, wrong shape or dtype."""


class ParameterError(DPError, ValueError):
    """Privacy or encoding parameters that are invalid or cannot meet their targets."""


class AccountingError(DPError, ValueError):
    """An event the accountant does not support, or an invalid accounting request."""


class BudgetExceeded(DPError, RuntimeError):
    """A round would take the cumulative (epsilon, delta) past the configured budget."""


class LedgerError(DPError, ValueError):
    """A ledger that is malformed, tampered with, torn by a crash, or fails verification.

    ``line`` is the 1-based line number of the first bad entry (None when the problem is not
    tied to one line, for example a missing file).
    """

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line
        self.reason = message


class BudgetMismatch(LedgerError):
    """A ledger opened for a budget other than the one it was created for (a lowered budget in
    the configuration must not be ignored, nor a raised one applied to an old history)."""
