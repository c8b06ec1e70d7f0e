"""The wire format: versioned, canonical, strict, bounded; never pickle (docs/architecture.md
section 3; the byte-level specification is docs/protocol.md section 6).

Layout: ``VERSION (u8) | message type (u8) | fields in schema order``, big-endian integers.
Field kinds: ``u8``, ``u32``, fixed-size bytes, length-prefixed bytes (u32 length, bounded),
sorted id lists (u32 count + u32 ids), lists of keyed entries (u32 count, entries sorted by
their leading id), the mode (u8 index) and bit-packed vectors: ``u8 b | u32 count |
ceil(count * b / 8) bytes``, b in 8..64 (a ring width), coordinate i in bits
[i * b, (i + 1) * b) of the little-endian bit stream (bit j is bit j % 8 of byte j // 8), the
unused high bits of the last byte zero (:func:`pack_bits`). The same message always encodes to
the same bytes; decoding refuses an unknown version or type, a truncated or oversized field, a
count that cannot fit, a bit width outside 8..64, nonzero padding bits, trailing bytes, and any
value the message's own validation refuses - always with :class:`WireError`. A decoded vector
is a read-only uint32 array for b <= 32, else uint64.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from .errors import WireError
from .messages import (
    BY_TYPE,
    KEY_BYTES,
    MAX_CIPHERTEXT,
    MAX_COHORT,
    MAX_PROOF_BYTES,
    MAX_VECTOR_BYTES,
    MODES,
    SESSION_ID_BYTES,
    SIGNATURE_BYTES,
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    KeysBroadcast,
    MaskedInput,
    Message,
    Setup,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)

WIRE_VERSION = 2
#: The narrowest ring a message's vector may be packed for (RoundConfig's bits are 8..64).
MIN_RING_BITS = 8
MAX_MESSAGE_BYTES = MAX_VECTOR_BYTES + 4096
_U32 = struct.Struct(">I")


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: memoryview) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise WireError("truncated message")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def count(self, min_entry: int) -> int:
        n = self.u32()
        if n > MAX_COHORT or n * min_entry > len(self.data) - self.pos:
            raise WireError("list count does not fit the message")
        return n


Encoder = Callable[[object, list], None]
Decoder = Callable[[_Reader], object]


def _u8() -> tuple[Encoder, Decoder]:
    return (lambda v, out: out.append(bytes([v]))), (lambda r: r.u8())


def _u32() -> tuple[Encoder, Decoder]:
    return (lambda v, out: out.append(_U32.pack(v))), (lambda r: r.u32())


def _fixed(n: int) -> tuple[Encoder, Decoder]:
    def enc(v, out):
        if len(v) != n:
            raise WireError(f"expected {n} bytes")
        out.append(v)

    return enc, (lambda r: bytes(r.take(n)))


def _var(max_len: int) -> tuple[Encoder, Decoder]:
    def enc(v, out):
        out.append(_U32.pack(len(v)))
        out.append(v)

    def dec(r):
        n = r.u32()
        if n > max_len:
            raise WireError(f"field of {n} bytes exceeds {max_len}")
        return bytes(r.take(n))

    return enc, dec


def _ids() -> tuple[Encoder, Decoder]:
    def enc(v, out):
        out.append(_U32.pack(len(v)))
        if len(v) < _SHARED_IDS_MIN:
            out.append(np.asarray(v, dtype=">u4").tobytes())
        else:
            last = _LAST_ENCODED[0]  # one read: (tuple, its bytes), replaced whole
            if last[0] is not v:  # not the same (immutable) cohort tuple as the last message
                last = (v, np.asarray(v, dtype=">u4").tobytes())
                _LAST_ENCODED[0] = last
            out.append(last[1])

    def dec(r):
        n = r.count(4)
        raw = r.take(4 * n)
        if n < _SHARED_IDS_MIN:
            return tuple(np.frombuffer(raw, dtype=">u4").tolist())
        return _shared_ids(bytes(raw))

    return enc, dec


#: Id lists at least this long (a cohort) are decoded once per distinct byte string and the
#: tuple shared: the n Setups of one round in one process carry the same cohort.
_SHARED_IDS_MIN = 64


#: The last long id tuple encoded and its bytes: a server encodes the same cohort tuple into
#: each of its n Setups.
_LAST_ENCODED: list[tuple[tuple[int, ...] | None, bytes]] = [(None, b"")]


@lru_cache(maxsize=4)
def _shared_ids(raw: bytes) -> tuple[int, ...]:
    return tuple(np.frombuffer(raw, dtype=">u4").tolist())


def _entries(*kinds: tuple[Encoder, Decoder], min_entry: int) -> tuple[Encoder, Decoder]:
    def enc(v, out):
        out.append(_U32.pack(len(v)))
        for entry in v:
            for (e, _), item in zip(kinds, entry, strict=True):
                e(item, out)

    def dec(r):
        return tuple(tuple(d(r) for _, d in kinds) for _ in range(r.count(min_entry)))

    return enc, dec


def _mode() -> tuple[Encoder, Decoder]:
    def dec(r):
        i = r.u8()
        if i >= len(MODES):
            raise WireError("unknown mode")
        return MODES[i]

    return (lambda v, out: out.append(bytes([MODES.index(v)]))), dec


#: Bit widths whose coordinates are whole little-endian words of 1, 2, 4 or 8 bytes.
_BYTE_WIDTHS = {8: "<u1", 16: "<u2", 32: "<u4", 64: "<u8"}


def storage_dtype(bits: int) -> np.dtype:
    """The dtype a vector of ``bits``-bit coordinates is held in: uint32 for b <= 32, else
    uint64."""
    return np.dtype(np.uint32) if bits <= 32 else np.dtype(np.uint64)


def packed_size(count: int, bits: int) -> int:
    """ceil(count * bits / 8): the bytes of ``count`` coordinates packed at ``bits`` bits."""
    return (count * bits + 7) >> 3


@lru_cache(maxsize=64)
def _plan(bits: int) -> tuple[int, int, tuple[tuple[int, int, int], ...]]:
    """How whole lanes (words of the storage width L, 32 or 64 bits) hold ``bits``-bit
    coordinates: a group of ``g`` = L / gcd(bits, L) coordinates fills exactly ``lanes`` =
    g * bits / L lanes, and coordinate k of a group starts at bit ``s`` of lane ``w`` and
    spills into lane w + 1 when ``spill``."""
    width = storage_dtype(bits).itemsize * 8
    g = width // math.gcd(bits, width)
    places = tuple(((k * bits) // width, (k * bits) % width,
                    int((k * bits) % width + bits > width)) for k in range(g))
    return g, g * bits // width, places


#: Groups of coordinates handled as one block: the transposes between coordinate order and
#: lane order stay within a block, which keeps them in cache.
_BLOCK = 256


def _blocks(count: int, g: int) -> tuple[int, int]:
    """(blocks, groups per block) covering ``count`` coordinates in groups of ``g``."""
    groups = -(-count // g)
    per = min(_BLOCK, groups)
    return -(-groups // per), per


def pack_bits(v: np.ndarray, bits: int) -> bytes:
    """The coordinates of ``v`` (unsigned integers, each below 2^bits) as one little-endian
    bit stream: coordinate i in bits [i * bits, (i + 1) * bits), bit j of the stream being bit
    j % 8 of byte j // 8; the last byte's unused high bits are zero. ``ceil(len(v) * bits /
    8)`` bytes. Raises WireError for a width outside 1..64 or a value of 2^bits or more."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 64:
        raise WireError("vector bit width must be in 1..64")
    if not isinstance(v, np.ndarray) or v.dtype.kind != "u" or v.ndim != 1:
        raise WireError("a packed vector is a 1-D unsigned integer array")
    n = v.shape[0]
    if n == 0:
        return b""
    if bits < v.dtype.itemsize * 8 and int(v.max()) >> bits:
        raise WireError(f"a vector value of 2^{bits} or more cannot be packed at {bits} bits")
    if bits in _BYTE_WIDTHS:
        return v.astype(_BYTE_WIDTHS[bits], copy=False).tobytes()
    if bits % 8 == 0:  # 24, 40, 48, 56: the low bits // 8 bytes of each little-endian word
        word = storage_dtype(bits)
        return np.ascontiguousarray(v.astype(word.newbyteorder("<"), copy=False).view(
            np.uint8).reshape(n, word.itemsize)[:, : bits // 8]).tobytes()
    dtype = storage_dtype(bits)
    width = dtype.itemsize * 8
    g, lanes, places = _plan(bits)
    nblocks, per = _blocks(n, g)
    if nblocks * per * g != n:
        padded = np.zeros(nblocks * per * g, dtype=dtype)
        padded[:n] = v
        v = padded
    # cols[b, k, j]: coordinate k of group j of block b
    cols = np.ascontiguousarray(v.reshape(nblocks, per, g).transpose(0, 2, 1), dtype=dtype)
    out = np.zeros((nblocks, lanes, per), dtype=dtype)
    for k, (w, s, spill) in enumerate(places):
        c = cols[:, k]
        out[:, w] |= c << dtype.type(s) if s else c
        if spill:
            out[:, w + 1] |= c >> dtype.type(width - s)
    # lane w of group j of block b is the stream's word (b * per + j) * lanes + w
    stream = np.ascontiguousarray(out.transpose(0, 2, 1), dtype=dtype.newbyteorder("<"))
    return stream.view(np.uint8).reshape(-1)[:packed_size(n, bits)].tobytes()


def unpack_bits(raw: bytes | memoryview, count: int, bits: int) -> np.ndarray:
    """The inverse of :func:`pack_bits`: ``count`` coordinates of ``bits`` bits from exactly
    ``ceil(count * bits / 8)`` bytes, as a uint32 (b <= 32) or uint64 array. Raises WireError
    for a width outside 1..64, another byte length, or a nonzero unused bit in the last byte."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 64:
        raise WireError("vector bit width must be in 1..64")
    size = packed_size(count, bits)
    if len(raw) != size:
        raise WireError(f"{count} coordinates of {bits} bits are {size} bytes, not {len(raw)}")
    dtype = storage_dtype(bits)
    if count == 0:
        return np.zeros(0, dtype=dtype)
    spare = 8 * size - count * bits
    if spare and raw[-1] >> (8 - spare):
        raise WireError("nonzero padding bits after the last coordinate")
    if bits in _BYTE_WIDTHS:
        # a view of the message's bytes where the storage width is the packed width, else a copy
        return np.frombuffer(raw, dtype=_BYTE_WIDTHS[bits]).astype(dtype, copy=False)
    if bits % 8 == 0:  # 24, 40, 48, 56: each coordinate's bytes, zero-extended to a word
        wide = np.zeros((count, dtype.itemsize), dtype=np.uint8)
        wide[:, : bits // 8] = np.frombuffer(raw, dtype=np.uint8).reshape(count, bits // 8)
        return wide.view(dtype.newbyteorder("<")).reshape(count).astype(dtype, copy=False)
    width = dtype.itemsize * 8
    g, lanes, places = _plan(bits)
    nblocks, per = _blocks(count, g)
    buf = np.zeros(nblocks * per * lanes * dtype.itemsize, dtype=np.uint8)
    buf[:size] = np.frombuffer(raw, dtype=np.uint8)
    # words[b, w, j]: lane w of group j of block b
    words = np.ascontiguousarray(
        buf.view(dtype.newbyteorder("<")).reshape(nblocks, per, lanes).transpose(0, 2, 1),
        dtype=dtype)
    cols = np.empty((nblocks, g, per), dtype=dtype)
    mask = dtype.type((1 << bits) - 1)
    for k, (w, s, spill) in enumerate(places):
        c = words[:, w] >> dtype.type(s) if s else words[:, w]
        if spill:
            c = c | words[:, w + 1] << dtype.type(width - s)
        np.bitwise_and(c, mask, out=cols[:, k])
    return np.ascontiguousarray(cols.transpose(0, 2, 1)).reshape(-1)[:count]


def _packed_vector() -> tuple[Encoder, Decoder]:
    """``(bits, vector)``: ``u8(b) | u32(count) | ceil(count * b / 8) bytes``, the bytes
    those of :func:`pack_bits`."""

    def enc(v, out):
        bits, vec = v
        out.append(bytes([bits]) + _U32.pack(vec.shape[0]))
        out.append(pack_bits(vec, bits))

    def dec(r):
        bits = r.u8()
        if not MIN_RING_BITS <= bits <= 64:  # a ring width: at most 4 decoded bytes per byte
            raise WireError(f"vector bit width must be in {MIN_RING_BITS}..64")
        n = r.u32()
        if n * storage_dtype(bits).itemsize > MAX_VECTOR_BYTES:
            raise WireError("vector too large")
        arr = unpack_bits(r.take(packed_size(n, bits)), n, bits)
        arr.flags.writeable = False
        return bits, arr

    return enc, dec


_SID, _ROUND, _ID = _fixed(SESSION_ID_BYTES), _u32(), _u32()
_KEY, _SIG = _fixed(KEY_BYTES), _var(SIGNATURE_BYTES)
_CT = _var(MAX_CIPHERTEXT)
_HEAD = (("session_id", _SID), ("round", _ROUND))

#: A field name, or a tuple of names for a kind that encodes several fields together.
SCHEMAS: dict[type[Message], tuple[tuple[str | tuple[str, ...], tuple[Encoder, Decoder]], ...]] = {
    Setup: _HEAD + (("recipient", _ID), ("cohort", _ids()), ("neighbours", _u32()),
                    ("threshold", _u32()), ("dim", _u32()), ("bits", _u8()), ("mode", _mode()),
                    ("min_survivors", _u32()), ("graph_seed", _fixed(32))),
    AdvertiseKeys: _HEAD + (("sender", _ID), ("c_pk", _KEY), ("s_pk", _KEY),
                            ("b_commitment", _fixed(32)), ("signature", _SIG)),
    KeysBroadcast: _HEAD + (("recipient", _ID),
                            ("keys", _entries(_ID, _KEY, _KEY, _fixed(32), _SIG,
                                              min_entry=104)),
                            ("key_count", _u32()), ("key_root", _var(32)),
                            ("proofs", _entries(_ID, _u32(), _var(MAX_PROOF_BYTES),
                                                min_entry=12))),
    ShareKeys: _HEAD + (("sender", _ID), ("ciphertexts", _entries(_ID, _CT, min_entry=8))),
    SharesDelivery: _HEAD + (("recipient", _ID),
                             ("ciphertexts", _entries(_ID, _CT, min_entry=8))),
    MaskedInput: _HEAD + (("sender", _ID), (("bits", "vector"), _packed_vector())),
    ConsistencyRequest: _HEAD + (("recipient", _ID), ("survivors", _ids())),
    ConsistencySignature: _HEAD + (("sender", _ID), ("signature", _fixed(SIGNATURE_BYTES))),
    UnmaskRequest: _HEAD + (("recipient", _ID), ("alive", _ids()), ("dead", _ids()),
                            ("signatures", _entries(_ID, _fixed(SIGNATURE_BYTES),
                                                    min_entry=68))),
    UnmaskResponse: _HEAD + (("sender", _ID), ("self_mask_shares", _entries(_ID, _var(128),
                                                                              min_entry=8)),
                             ("key_shares", _entries(_ID, _var(128), min_entry=8))),
}


def encode(message: Message) -> bytes:
    """The canonical bytes of ``message``."""
    schema = SCHEMAS.get(type(message))
    if schema is None:
        raise WireError(f"not a protocol message: {type(message).__name__}")
    out = [bytes([WIRE_VERSION, message.TYPE])]
    for name, (enc, _) in schema:
        enc(getattr(message, name) if isinstance(name, str)
            else tuple(getattr(message, n) for n in name), out)
    data = b"".join(out)
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError("message exceeds the size bound")
    return data


def decode(data: bytes) -> Message:
    """Strictly decode one message; every failure is a :class:`WireError`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError("expected bytes")
    try:
        view = memoryview(data).cast("B")  # bytes, whatever the buffer's shape or format
    except TypeError as exc:
        raise WireError(f"expected a contiguous byte buffer: {exc}") from None
    if len(view) > MAX_MESSAGE_BYTES:
        raise WireError("message exceeds the size bound")
    r = _Reader(view)
    try:
        version, mtype = r.u8(), r.u8()
        if version != WIRE_VERSION:
            raise WireError(f"unknown wire version {version}")
        cls = BY_TYPE.get(mtype)
        if cls is None:
            raise WireError(f"unknown message type {mtype}")
        values = {}
        for name, (_, dec) in SCHEMAS[cls]:
            if isinstance(name, str):
                values[name] = dec(r)
            else:
                values.update(zip(name, dec(r), strict=True))
        if r.pos != len(r.data):
            raise WireError(f"{len(r.data) - r.pos} trailing bytes")
        return cls(**values)
    except WireError:
        raise
    except (ValueError, TypeError, IndexError, struct.error, OverflowError) as exc:
        raise WireError(f"malformed message: {exc}") from None
