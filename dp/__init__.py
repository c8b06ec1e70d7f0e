"""dp: clipping, encoding to the ring, discrete noise, accounting, ledger and audit.

Not built yet: the differential-privacy issue fills this package (DESIGN.md section 5).
Only the package's base exception exists so far.
"""


class DPError(Exception):
    """Base class of every error raised by :mod:`dp`."""


__all__ = ["DPError"]
