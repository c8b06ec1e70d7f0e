"""Masking a client's input and removing masks on the server, streamed in chunks.

Bonawitz et al. (CCS 2017), section 4, MaskedInput: client u sends

    y_u = x_u + PRG(b_u) + sum_{v in N(u)} sign(u, v) * PRG(s_uv)   (mod 2^b)

with sign(u, v) = +1 if u < v and -1 if u > v, so pairwise masks cancel in the sum over any
set closed under the neighbour relation. Unmasking: the server subtracts PRG(b_v) for each
survivor v and, for each dropped client u, the pairwise masks its surviving neighbours added
toward u (reconstructed from s_u^SK). Bell et al. (CCS 2020) restrict N(u) to a sparse graph.

Both directions run chunk-major: for each chunk of the output, every mask stream contributes
its next keystream block into one shared scratch buffer, so the working set is one chunk plus
the output vector. No O(k * d) buffer is ever allocated.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .encoding import require_uint
from .errors import SecAggTypeError, SecAggValueError, ShapeError
from .prg import (
    BIG_ENDIAN,
    DEFAULT_ALGORITHM,
    DEFAULT_CHUNK,
    MAX_ELEMENTS,
    MaskStream,
    check_chunk,
    check_seed,
    zero_bytes,
)
from .ring import Ring

SELF_MASK_PURPOSE = "self-mask"
PAIRWISE_MASK_PURPOSE = "pairwise-mask"


def pairwise_sign(u: int, v: int) -> int:
    """+1 if u < v, -1 if u > v (Bonawitz et al. 2017, section 3.2). u == v is an error."""
    require_uint(u, "client id")
    require_uint(v, "client id")
    if u == v:
        raise SecAggValueError(f"no pairwise mask between client {u} and itself")
    return 1 if u < v else -1


@dataclass(frozen=True)
class PairwiseMask:
    """One pairwise mask term: the 32-byte seed s_uv and the sign with which u adds it."""

    seed: bytes
    sign: int

    def __post_init__(self) -> None:
        check_seed(self.seed)
        if type(self.sign) is not int or self.sign not in (1, -1):
            raise SecAggValueError(f"pairwise mask sign must be the int +1 or -1: {self.sign!r}")


def _streams(
    ring: Ring,
    self_seeds: Iterable[bytes],
    pairwise: Iterable[PairwiseMask],
    algorithm: str,
) -> list[tuple[MaskStream, int]]:
    for name, value in (("self_seeds", self_seeds), ("pairwise", pairwise)):
        if not isinstance(value, Iterable) or isinstance(value, bytes | str):
            raise SecAggTypeError(f"{name} must be an iterable of seeds / PairwiseMask")
    out = [(MaskStream(s, SELF_MASK_PURPOSE, ring, algorithm=algorithm), 1) for s in self_seeds]
    for p in pairwise:
        if not isinstance(p, PairwiseMask):
            raise SecAggTypeError(f"expected PairwiseMask, got {type(p).__name__}")
        out.append((MaskStream(p.seed, PAIRWISE_MASK_PURPOSE, ring, algorithm=algorithm), p.sign))
    return out


def _apply(
    out: np.ndarray,
    src: np.ndarray,
    ring: Ring,
    streams: Sequence[tuple[MaskStream, int]],
    *,
    negate: bool,
    chunk: int,
) -> np.ndarray:
    check_chunk(chunk)
    d = out.shape[0]
    if d > MAX_ELEMENTS:
        raise SecAggValueError(f"vector length {d} exceeds {MAX_ELEMENTS}")
    # Hot loop: dtype, contiguity and length were checked above, so each stream writes its
    # keystream straight into the shared scratch buffer through its bound update_into.
    writers = [(stream.raw_writer(), (sign > 0) != negate) for stream, sign in streams]
    scratch = np.empty(min(chunk, max(d, 1)), dtype=ring.dtype)
    for start in range(0, d, chunk):
        stop = min(start + chunk, d)
        o = out[start:stop]
        # the first mask is applied from src into out: no separate copy pass
        base = src[start:stop] if src is not out else o
        if not writers and base is not o:
            np.copyto(o, base)
        ks = scratch[: stop - start]
        ks_bytes = ks.view(np.uint8)
        zeros = zero_bytes(ks.nbytes)
        for write, add in writers:
            write(zeros, ks_bytes)
            if BIG_ENDIAN:  # pragma: no cover - the keystream is defined little-endian
                ks.byteswap(inplace=True)
            if add:
                np.add(base, ks, out=o)
            else:
                np.subtract(base, ks, out=o)
            base = o
        if not ring.full_width:
            np.bitwise_and(o, ring.mask, out=o)
    return out


def mask_input(
    x: np.ndarray,
    *,
    ring: Ring,
    self_seed: bytes,
    pairwise: Sequence[PairwiseMask],
    chunk: int = DEFAULT_CHUNK,
    algorithm: str = DEFAULT_ALGORITHM,
) -> np.ndarray:
    """Client u's masked vector y_u (a new array; ``x`` is not modified)."""
    if not isinstance(ring, Ring):
        raise SecAggTypeError("ring must be a secagg.ring.Ring")
    x = ring.validate(x, name="input")
    streams = _streams(ring, [self_seed], pairwise, algorithm)
    return _apply(np.empty_like(x), x, ring, streams, negate=False, chunk=chunk)


def remove_masks(
    acc: np.ndarray,
    *,
    ring: Ring,
    self_seeds: Iterable[bytes] = (),
    pairwise: Iterable[PairwiseMask] = (),
    chunk: int = DEFAULT_CHUNK,
    algorithm: str = DEFAULT_ALGORITHM,
) -> np.ndarray:
    """Subtract masks from the running sum ``acc`` in place and return it.

    ``self_seeds``: the reconstructed b_v of surviving clients. ``pairwise``: for each dropped
    client u and surviving neighbour v, ``PairwiseMask(s_uv, pairwise_sign(v, u))``, the term
    exactly as v added it. ``acc`` must be a writable, contiguous ring vector.
    """
    if not isinstance(ring, Ring):
        raise SecAggTypeError("ring must be a secagg.ring.Ring")
    if not isinstance(acc, np.ndarray) or acc.dtype != ring.dtype:
        raise SecAggTypeError(f"accumulator must be a numpy array of dtype {ring.dtype}")
    if acc.ndim != 1 or not acc.flags.c_contiguous or not acc.flags.writeable:
        raise ShapeError("accumulator must be a writable, contiguous 1-D array")
    ring.validate(acc, name="accumulator")
    streams = _streams(ring, self_seeds, pairwise, algorithm)
    return _apply(acc, acc, ring, streams, negate=True, chunk=chunk)
