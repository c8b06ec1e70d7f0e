"""Mask pseudorandom generator: a 32-byte seed and a purpose label expand to b-bit values.

Bonawitz et al. (CCS 2017), section 3.4 and 4: masks are PRG(b_u) and PRG(s_uv) with a secure
PRG; docs/architecture.md section 2 fixes AES-128-CTR (default) or ChaCha20 from ``cryptography``.

Construction (version 1):

* ``okm = HKDF-SHA256(ikm=seed, salt="secagg/prg/v1", info=canonical("secagg-prg", algorithm,
  purpose), L=32)``;
* AES-128-CTR: key = ``okm[:16]``, initial counter block = 16 zero bytes (the key is unique per
  seed and purpose, so a fixed counter start never repeats a (key, counter) pair);
* ChaCha20: key = ``okm``, 16-byte nonce/counter block of zeros (``cryptography`` layout:
  4-byte little-endian block counter then 12-byte nonce);
* the keystream is read as little-endian uint32 (b <= 32) or uint64 (b > 32) and reduced
  mod 2^b by masking. 2^b divides 2^32 / 2^64, so the values are exactly uniform: no rejection
  sampling is needed.

Full-width 256-bit seeds only: a seed that is not exactly 32 bytes raises :class:`SeedError`.
Output is produced in chunks into caller-owned buffers, so memory stays bounded.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import sys
from collections.abc import Iterator

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .encoding import canonical, require_label, require_uint
from .errors import SecAggTypeError, SecAggValueError, SeedError, ShapeError
from .ring import Ring

SEED_BYTES = 32
ALGORITHMS = ("aes128-ctr", "chacha20")
DEFAULT_ALGORITHM = "aes128-ctr"
#: Default chunk size in elements: 2^16 values (256 KiB for uint32) stays in L2 cache.
DEFAULT_CHUNK = 1 << 16
#: Upper bound on one expansion (2^36 bytes keeps ChaCha20's 32-bit block counter safe).
MAX_ELEMENTS = 1 << 32
_PRG_SALT = b"secagg/prg/v1"
BIG_ENDIAN = sys.byteorder == "big"
_CTR_ZERO = modes.CTR(bytes(16))  # immutable; shared to save per-stream set-up time


_zeros = b""


def zero_bytes(n: int) -> memoryview:
    """A read-only view of n zero bytes, from one buffer shared by every stream."""
    global _zeros  # noqa: PLW0603 - an immutable cache; growing it is idempotent
    if len(_zeros) < n:
        _zeros = bytes(max(n, DEFAULT_CHUNK * 8))
    return memoryview(_zeros)[:n]


def derive_prg_key(seed: bytes, purpose: str, algorithm: str = DEFAULT_ALGORITHM) -> bytes:
    """The cipher key for ``(seed, purpose, algorithm)``; exposed for known-answer tests."""
    seed = check_seed(seed)
    _check_purpose(purpose)
    if algorithm not in ALGORITHMS:
        raise SecAggValueError(f"unknown PRG algorithm {algorithm!r}; choose one of {ALGORITHMS}")
    # HKDF-SHA256 with L = 32 (RFC 5869): one Extract and one Expand block, written as two
    # one-shot HMACs because this runs once per mask stream (k + 1 times per client).
    prk = hmac.digest(_PRG_SALT, seed, hashlib.sha256)
    okm = hmac.digest(prk, _prg_info(algorithm, purpose) + b"\x01", hashlib.sha256)
    return okm[:16] if algorithm == "aes128-ctr" else okm


@functools.lru_cache(maxsize=256)
def _prg_info(algorithm: str, purpose: str) -> bytes:
    return canonical("secagg-prg", algorithm, purpose)


def check_seed(seed: object) -> bytes:
    if not isinstance(seed, bytes | bytearray):
        raise SecAggTypeError(f"PRG seed must be bytes, not {type(seed).__name__}")
    if len(seed) != SEED_BYTES:
        raise SeedError(f"PRG seed must be exactly {SEED_BYTES} bytes, got {len(seed)}")
    return bytes(seed)


def _check_purpose(purpose: object) -> None:
    require_label(purpose, "PRG purpose")


class MaskStream:
    """A keystream of ring elements for one (seed, purpose), read sequentially in chunks."""

    __slots__ = ("ring", "_enc", "_pos")

    def __init__(
        self, seed: bytes, purpose: str, ring: Ring, *, algorithm: str = DEFAULT_ALGORITHM
    ) -> None:
        if not isinstance(ring, Ring):
            raise SecAggTypeError("ring must be a secagg.ring.Ring")
        key = derive_prg_key(seed, purpose, algorithm)
        if algorithm == "aes128-ctr":
            cipher = Cipher(algorithms.AES(key), _CTR_ZERO)
        else:
            cipher = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None)
        self.ring = ring
        self._enc = cipher.encryptor()
        self._pos = 0

    def fill(self, out: np.ndarray) -> np.ndarray:
        """Write the next ``len(out)`` raw storage-width values into ``out`` (not yet reduced).

        ``out`` must be a contiguous 1-D array of the ring's storage dtype. Callers that need
        values in [0, 2^b) call :meth:`Ring.reduce` (or reduce once after summing several).
        """
        if not isinstance(out, np.ndarray):
            raise SecAggTypeError("fill needs a numpy array")
        if out.dtype != self.ring.dtype or out.ndim != 1 or not out.flags.c_contiguous:
            raise ShapeError("fill needs a contiguous 1-D buffer of the ring's storage dtype")
        n = out.shape[0]
        if self._pos + n > MAX_ELEMENTS:
            raise SecAggValueError(f"a PRG stream is limited to {MAX_ELEMENTS} elements")
        self._enc.update_into(zero_bytes(out.nbytes), out.view(np.uint8))
        if BIG_ENDIAN:  # pragma: no cover - the keystream is defined little-endian
            out.byteswap(inplace=True)
        self._pos += n
        return out

    def raw_writer(self):
        """The stream's bound ``update_into(zeros, out_bytes)``, for hot loops that check
        dtype, contiguity and the :data:`MAX_ELEMENTS` bound once up front (see masking)."""
        return self._enc.update_into

    def read(self, n: int) -> np.ndarray:
        """The next ``n`` values reduced into [0, 2^b), as a new array."""
        _check_length(n)
        out = np.empty(n, dtype=self.ring.dtype)
        return self.ring.reduce(self.fill(out), out=out)


def expand(
    seed: bytes,
    purpose: str,
    length: int,
    ring: Ring,
    *,
    algorithm: str = DEFAULT_ALGORITHM,
) -> np.ndarray:
    """Expand ``seed`` under ``purpose`` to ``length`` uniform elements of ``ring``."""
    _check_length(length)
    return MaskStream(seed, purpose, ring, algorithm=algorithm).read(length)


def iter_chunks(
    seed: bytes,
    purpose: str,
    length: int,
    ring: Ring,
    *,
    chunk: int = DEFAULT_CHUNK,
    algorithm: str = DEFAULT_ALGORITHM,
) -> Iterator[np.ndarray]:
    """Yield the expansion of :func:`expand` in chunks of at most ``chunk`` elements.

    The yielded arrays share one buffer: copy a chunk if you keep it past the next iteration.
    Arguments are checked when this is called, not at the first iteration.
    """
    _check_length(length)
    check_chunk(chunk)
    stream = MaskStream(seed, purpose, ring, algorithm=algorithm)
    return _chunks(stream, ring, length, chunk)


def _chunks(stream: MaskStream, ring: Ring, length: int, chunk: int) -> Iterator[np.ndarray]:
    buf = np.empty(min(chunk, max(length, 1)), dtype=ring.dtype)
    for start in range(0, length, chunk):
        view = buf[: min(chunk, length - start)]
        yield ring.reduce(stream.fill(view), out=view)


def check_chunk(chunk: object) -> int:
    """A chunk size must be an int in [1, MAX_ELEMENTS]."""
    require_uint(chunk, "chunk", bits=64, minimum=1)
    if chunk > MAX_ELEMENTS:
        raise SecAggValueError(f"chunk {chunk} exceeds {MAX_ELEMENTS}")
    return chunk


def _check_length(length: object) -> None:
    if isinstance(length, bool) or not isinstance(length, int | np.integer):
        raise SecAggTypeError("length must be an int")
    if not 0 <= length <= MAX_ELEMENTS:
        raise SecAggValueError(f"length {length} outside [0, {MAX_ELEMENTS}]")


__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHM",
    "MaskStream",
    "SEED_BYTES",
    "derive_prg_key",
    "expand",
    "iter_chunks",
]
