"""The wire format: versioned, canonical, strict, bounded; never pickle (docs/architecture.md
section 3).

Layout: ``VERSION (u8) | message type (u8) | fields in schema order``, big-endian integers.
Field kinds: ``u8``, ``u32``, fixed-size bytes, length-prefixed bytes (u32 length, bounded),
sorted id lists (u32 count + u32 ids), lists of keyed entries (u32 count, entries sorted by
their leading id), the mode (u8 index) and vectors (u8 word size 4 or 8, u32 count,
little-endian words). The same message always encodes to the same bytes; decoding refuses an
unknown version or type, a truncated or oversized field, a count that cannot fit, trailing
bytes, and any value the message's own validation refuses - always with :class:`WireError`.
"""

from __future__ import annotations

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

WIRE_VERSION = 1
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


def _vector() -> tuple[Encoder, Decoder]:
    def enc(v, out):
        out.append(bytes([v.dtype.itemsize]) + _U32.pack(v.shape[0]))
        out.append(v.astype(v.dtype.newbyteorder("<"), copy=False).tobytes())

    def dec(r):
        width = r.u8()
        if width not in (4, 8):
            raise WireError("vector word size must be 4 or 8")
        n = r.u32()
        if n * width > MAX_VECTOR_BYTES:
            raise WireError("vector too large")
        raw = r.take(n * width)
        # a view of the message's bytes on a little-endian machine (no copy), else a copy
        arr = np.frombuffer(raw, dtype="<u4" if width == 4 else "<u8").astype(
            np.uint32 if width == 4 else np.uint64, copy=False
        )
        arr.flags.writeable = False
        return arr

    return enc, dec


_SID, _ROUND, _ID = _fixed(SESSION_ID_BYTES), _u32(), _u32()
_KEY, _SIG = _fixed(KEY_BYTES), _var(SIGNATURE_BYTES)
_CT = _var(MAX_CIPHERTEXT)
_HEAD = (("session_id", _SID), ("round", _ROUND))

SCHEMAS: dict[type[Message], tuple[tuple[str, tuple[Encoder, Decoder]], ...]] = {
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
    MaskedInput: _HEAD + (("sender", _ID), ("vector", _vector())),
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
        enc(getattr(message, name), out)
    data = b"".join(out)
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError("message exceeds the size bound")
    return data


def decode(data: bytes) -> Message:
    """Strictly decode one message; every failure is a :class:`WireError`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError("expected bytes")
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError("message exceeds the size bound")
    r = _Reader(memoryview(data))
    try:
        version, mtype = r.u8(), r.u8()
        if version != WIRE_VERSION:
            raise WireError(f"unknown wire version {version}")
        cls = BY_TYPE.get(mtype)
        if cls is None:
            raise WireError(f"unknown message type {mtype}")
        values = {name: dec(r) for name, (_, dec) in SCHEMAS[cls]}
        if r.pos != len(r.data):
            raise WireError(f"{len(r.data) - r.pos} trailing bytes")
        return cls(**values)
    except WireError:
        raise
    except (ValueError, TypeError, IndexError, struct.error, OverflowError) as exc:
        raise WireError(f"malformed message: {exc}") from None
