"""Cryptographic randomness for noise and rounding: AES-256-CTR keystream as 64-bit words.

The DP noise must come from a cryptographic source (docs/architecture.md section 6; Mironov CCS 2012
on floating-point attacks, and the general point that a predictable PRNG makes noise removable).
:class:`CryptoRandom` keys AES-256 in CTR mode with a 32-byte seed drawn from the operating
system (``os.urandom``) and reads the keystream as little-endian uint64 words. An explicit
``seed`` exists for reproducible tests and known-answer vectors only: noise made from a seed the
server can learn protects nothing.

The words are computationally, not statistically, indistinguishable from uniform (AES as a
PRF); the statistical distances stated in :mod:`dp.noise` are relative to uniform words.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import ParameterError

SEED_BYTES = 32
_ZEROS = bytes(1 << 20)  # plaintext for update_into: the keystream is written straight into arrays
_BIG_ENDIAN = sys.byteorder == "big"


class CryptoRandom:
    """A stream of uniform 64-bit words from AES-256-CTR (one key per instance, nonce zero)."""

    def __init__(self, seed: bytes | None = None) -> None:
        if seed is None:
            seed = os.urandom(SEED_BYTES)
        if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_BYTES:
            raise ParameterError(f"seed must be {SEED_BYTES} bytes")
        self._enc = Cipher(algorithms.AES(bytes(seed)), modes.CTR(bytes(16))).encryptor()

    def bytes(self, n: int) -> bytes:
        """The next n keystream bytes."""
        _count(n)
        return self._enc.update(bytes(n))

    def uint64(self, n: int) -> np.ndarray:
        """n uniform words as a uint64 array (the next 8 n keystream bytes, little-endian)."""
        _count(n)
        return self.fill_uint64(np.empty(n, dtype=np.uint64))

    def fill_uint64(self, out: np.ndarray) -> np.ndarray:
        """Overwrite the C-contiguous uint64 array ``out`` with the next ``out.size`` words, as
        :meth:`uint64` would return them; returns ``out``. For loops that reuse one buffer."""
        if out.dtype != np.uint64 or not out.flags.c_contiguous or not out.flags.writeable:
            raise ParameterError("fill_uint64 needs a writeable C-contiguous uint64 array")
        dst, src = memoryview(out.reshape(-1)).cast("B"), memoryview(_ZEROS)
        for start in range(0, dst.nbytes, len(_ZEROS)):
            stop = min(dst.nbytes, start + len(_ZEROS))
            self._enc.update_into(src[:stop - start], dst[start:stop])
        if _BIG_ENDIAN:
            out.byteswap(inplace=True)  # the words are little-endian
        return out

    def uniform(self, n: int) -> np.ndarray:
        """n floats uniform on the grid {0, 2^-53, ..., 1 - 2^-53} (for randomized rounding)."""
        return (self.uint64(n) >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def signs(self, n: int) -> np.ndarray:
        """n independent uniform signs in {-1.0, +1.0}."""
        _count(n)
        raw = np.frombuffer(self.bytes((n + 7) // 8), dtype=np.uint8)
        bits = np.unpackbits(raw, bitorder="little")[:n]
        return 1.0 - 2.0 * bits.astype(np.float64)


def _count(n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ParameterError(f"count must be a non-negative int, got {n!r}")
