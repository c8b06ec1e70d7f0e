"""Arithmetic in the ring Z_{2^b}, b in [8, 64], on numpy arrays.

Masked inputs live in Z_{2^b} (Bonawitz et al., CCS 2017, section 4: inputs in Z_R with R a
power of two; docs/architecture.md section 2). Elements are stored as ``uint32`` for b <= 32 and
``uint64`` otherwise. Because 2^b divides the storage modulus 2^32 or 2^64, numpy's wrap-around
arithmetic followed by one AND with ``2^b - 1`` is exact reduction mod 2^b; intermediate sums may
therefore be kept unreduced in the storage width and reduced once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import RingError, SecAggTypeError, ShapeError

MIN_BITS = 8
MAX_BITS = 64


@dataclass(frozen=True)
class Ring:
    """The ring Z_{2^bits}. Construct with ``Ring(32)``; invalid widths raise :class:`RingError`."""

    bits: int

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int | np.integer):
            raise SecAggTypeError(f"bit width must be an int, not {type(self.bits).__name__}")
        if not MIN_BITS <= int(self.bits) <= MAX_BITS:
            raise RingError(f"bit width {self.bits} outside [{MIN_BITS}, {MAX_BITS}]")
        object.__setattr__(self, "bits", int(self.bits))

    # -- shape of the storage ------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        """Storage dtype: uint32 for b <= 32, uint64 otherwise."""
        return np.dtype(np.uint32) if self.bits <= 32 else np.dtype(np.uint64)

    @property
    def modulus(self) -> int:
        """2^b as a Python int."""
        return 1 << self.bits

    @property
    def mask(self) -> np.unsignedinteger:
        """2^b - 1 in the storage dtype (AND with it reduces a storage-width value mod 2^b)."""
        return self.dtype.type(self.modulus - 1)

    @property
    def full_width(self) -> bool:
        """True when b equals the storage width, so no reduction step is needed."""
        return self.bits == self.dtype.itemsize * 8

    # -- construction and validation -----------------------------------------------------
    def zeros(self, d: int) -> np.ndarray:
        if isinstance(d, bool) or not isinstance(d, int | np.integer):
            raise SecAggTypeError(f"length must be an int, not {type(d).__name__}")
        if d < 0:
            raise ShapeError(f"length must be non-negative, got {d}")
        return np.zeros(d, dtype=self.dtype)

    def validate(self, x: object, *, length: int | None = None, name: str = "vector") -> np.ndarray:
        """Return ``x`` as a 1-D array of this ring's dtype, or raise a clear error.

        Accepts any integer numpy array whose values all lie in [0, 2^b); refuses other
        dtypes (float, bool, object), other shapes, and out-of-range values, naming the first
        offending index. The returned array is ``x`` itself when it already has the ring dtype.
        """
        if not isinstance(x, np.ndarray):
            raise SecAggTypeError(f"{name} must be a numpy array, not {type(x).__name__}")
        if x.dtype.kind not in "ui":
            raise SecAggTypeError(f"{name} has dtype {x.dtype}; an integer dtype is required")
        if x.ndim != 1:
            raise ShapeError(f"{name} must be 1-D, got shape {x.shape}")
        if length is not None and x.shape[0] != length:
            raise ShapeError(f"{name} has length {x.shape[0]}, expected {length}")
        if x.size:
            if x.dtype.kind == "i":
                bad = np.flatnonzero(x < 0)
                if bad.size:
                    raise RingError(f"{name}[{bad[0]}] = {x[bad[0]]} is negative")
            if x.dtype.itemsize * 8 > self.bits or x.dtype.kind == "i":
                hi = np.flatnonzero(x.astype(np.uint64, copy=False) > np.uint64(self.modulus - 1))
                if hi.size:
                    raise RingError(
                        f"{name}[{hi[0]}] = {x[hi[0]]} is outside [0, 2^{self.bits})"
                    )
        return x if x.dtype == self.dtype else x.astype(self.dtype)

    # -- operations (inputs must already be valid ring vectors) ----------------------------
    def reduce(self, a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Reduce a storage-width array mod 2^b (no-op copy when b is the full width)."""
        if self.full_width:
            if out is None:
                return a.copy()
            if out is not a:
                np.copyto(out, a)
            return out
        return np.bitwise_and(a, self.mask, out=out)

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.reduce(np.add(a, b, dtype=self.dtype))

    def sub(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.reduce(np.subtract(a, b, dtype=self.dtype))

    def neg(self, a: np.ndarray) -> np.ndarray:
        return self.reduce(np.subtract(self.dtype.type(0), a, dtype=self.dtype))

    def centred(self, a: np.ndarray) -> np.ndarray:
        """Centred lift: the representative in [-2^(b-1), 2^(b-1)) as int64."""
        a = self.validate(a, name="ring vector")
        # Sign extension by shifting: move bit b-1 to bit 63, reinterpret as int64, shift back
        # arithmetically. Exact for every b in [8, 64]; no intermediate exceeds 64 bits.
        s = 64 - self.bits
        widened = a.astype(np.uint64)
        return (widened << np.uint64(s)).view(np.int64) >> np.int64(s)

    def from_signed(self, a: np.ndarray) -> np.ndarray:
        """Wrap an int64 array into the ring (the inverse of :meth:`centred`)."""
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "ui":
            raise SecAggTypeError("from_signed needs an integer numpy array")
        if a.ndim != 1:
            raise ShapeError(f"from_signed needs a 1-D array, got shape {a.shape}")
        return self.reduce(a.astype(np.int64, copy=False).view(np.uint64).astype(self.dtype))
