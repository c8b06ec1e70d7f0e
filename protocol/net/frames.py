"""Transport frames: the envelope the gRPC stream carries around protocol messages.

Every frame is ``TRANSPORT_VERSION (u8) | kind (u8) | body``; integers big-endian. A PROTOCOL
frame's body is one message in the protocol's own canonical wire format
(:mod:`protocol.wire`), so the transport adds no second encoding of the protocol. The other
kinds are the transport's own and carry no secret:

* WELCOME (server -> client, once per connection): the client id the server authenticated from
  the TLS certificate and the digest of the deployment configuration, so a client refuses a
  server whose configuration differs from its own before any round.
* RESULT (server -> every connected client, after Unmasking): session, round, survivors and
  the published aggregate: the ring sum in Z_{2^b} as aggregate type 4, ``u8 b | u32 count |
  ceil(count * b / 8) bytes``, packed at the round's b bits per coordinate exactly as a
  masked input's vector (:func:`protocol.wire.pack_bits`, with the same strict rules: b in
  8..64, the exact byte length, zero padding bits), decoded as uint32 (b <= 32) or uint64;
  or the decoded DP estimate as aggregate type 3, ``u32 count | count little-endian float64``.
  Types 1 and 2 (whole uint32 / uint64 words) are not used and are refused.
* ABORT (server -> clients): session, round, stage and a reason; the round is over.
* BYE (server -> client: no more rounds; client -> server: a clean goodbye).
* DECLINE (client -> server): session, round and a reason: this client takes no (further)
  part in that round (its own budget, or a local refusal), so the server counts it as a
  dropout at once instead of waiting out the stage's deadline.

Decoding is strict as in :mod:`protocol.wire`: unknown version or kind, truncation, trailing
bytes, bad lengths or non-ASCII text all raise :class:`~protocol.errors.WireError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..errors import WireError
from ..messages import MAX_COHORT, MAX_VECTOR_BYTES, SESSION_ID_BYTES
from ..wire import pack_bits, packed_size, storage_dtype, unpack_bits

TRANSPORT_VERSION = 1
PROTOCOL, WELCOME, RESULT, ABORT, BYE, DECLINE = 1, 2, 3, 4, 5, 6
DIGEST_BYTES = 32
MAX_TEXT = 256
_U32 = struct.Struct(">I")
# published aggregates: the decoded float64 estimate, or the ring sum packed at b bits
ESTIMATE, RING_SUM = 3, 4


@dataclass(frozen=True)
class Welcome:
    client_id: int
    config_digest: bytes
    next_round: int


@dataclass(frozen=True)
class Result:
    session_id: bytes
    round: int
    survivors: tuple[int, ...]
    aggregate: np.ndarray  # uint32 / uint64 ring sum, or float64 estimate
    #: the ring's bit width b for a ring sum (None: the word width, 32 or 64); None for an
    #: estimate
    bits: int | None = None


@dataclass(frozen=True)
class Abort:
    session_id: bytes
    round: int
    stage: str
    reason: str


@dataclass(frozen=True)
class Bye:
    reason: str


@dataclass(frozen=True)
class Decline:
    session_id: bytes
    round: int
    reason: str


def printable_ascii(text: str) -> str:
    """``text`` made fit for a frame's text field: every character outside printable ASCII
    replaced by ``?``, cut to :data:`MAX_TEXT` characters."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:MAX_TEXT]


def _text(s: str) -> bytes:
    if not isinstance(s, str) or len(s) > MAX_TEXT or not (s.isascii() and s.isprintable()):
        raise WireError(f"frame text must be printable ASCII of at most {MAX_TEXT} characters")
    return _U32.pack(len(s)) + s.encode("ascii")


def _u32(v: object) -> bytes:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 32:
        raise WireError(f"frame integer must be in [0, 2^32), got {v!r}")
    return _U32.pack(v)


def _fixed(v: object, n: int, what: str) -> bytes:
    if not isinstance(v, bytes) or len(v) != n:
        raise WireError(f"{what} must be {n} bytes")
    return v


def protocol_frame(wire_bytes: bytes) -> bytes:
    return bytes([TRANSPORT_VERSION, PROTOCOL]) + wire_bytes


def encode_frame(frame: Welcome | Result | Abort | Bye | Decline) -> bytes:
    """The bytes of a transport frame. Raises WireError if a field cannot be encoded (text
    that is not printable ASCII, an integer outside [0, 2^32), a wrong-length id or digest,
    unsorted survivors, an aggregate of another dtype or shape, a ring sum with a value of 2^b
    or more)."""
    head = bytes([TRANSPORT_VERSION])
    if isinstance(frame, Welcome):
        return (head + bytes([WELCOME]) + _u32(frame.client_id)
                + _fixed(frame.config_digest, DIGEST_BYTES, "config digest")
                + _u32(frame.next_round))
    if isinstance(frame, Result):
        agg = np.ascontiguousarray(frame.aggregate)
        if agg.ndim != 1 or agg.dtype not in (np.uint32, np.uint64, np.float64):
            raise WireError("a published aggregate is a 1-D uint32, uint64 or float64 vector")
        surv = list(frame.survivors)
        if len(surv) > MAX_COHORT or surv != sorted(set(surv)):
            raise WireError("survivors must be sorted, distinct and at most the cohort bound")
        if agg.dtype == np.float64:
            if frame.bits is not None:
                raise WireError("a DP estimate has no ring bit width")
            body = bytes([ESTIMATE]) + _u32(agg.size) + agg.astype("<f8").tobytes()
        else:
            bits = agg.dtype.itemsize * 8 if frame.bits is None else frame.bits
            if isinstance(bits, bool) or not isinstance(bits, int) or not 8 <= bits <= 64 \
                    or storage_dtype(bits) != agg.dtype:
                raise WireError("a ring sum's bit width is in 8..64, with uint32 words for "
                                "b <= 32, else uint64")
            body = bytes([RING_SUM, bits]) + _u32(agg.size) + pack_bits(agg, bits)
        return (head + bytes([RESULT]) + _fixed(frame.session_id, SESSION_ID_BYTES, "session")
                + _u32(frame.round) + _u32(len(surv)) + b"".join(_u32(v) for v in surv)
                + body)
    if isinstance(frame, Abort):
        return (head + bytes([ABORT]) + _fixed(frame.session_id, SESSION_ID_BYTES, "session")
                + _u32(frame.round) + _text(frame.stage) + _text(frame.reason))
    if isinstance(frame, Bye):
        return head + bytes([BYE]) + _text(frame.reason)
    if isinstance(frame, Decline):
        return (head + bytes([DECLINE]) + _fixed(frame.session_id, SESSION_ID_BYTES, "session")
                + _u32(frame.round) + _text(frame.reason))
    raise WireError(f"not a transport frame: {type(frame).__name__}")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = memoryview(data), 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise WireError("truncated frame")
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return out

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def text(self) -> str:
        n = self.u32()
        if n > MAX_TEXT:
            raise WireError("text field too long")
        raw = self.take(n)
        if not raw.isascii() or not raw.decode("ascii").isprintable():
            raise WireError("text field is not printable ASCII")
        return raw.decode("ascii")


def _result(r: _Reader) -> Result:
    sid, rnd, count = r.take(SESSION_ID_BYTES), r.u32(), r.u32()
    if count > MAX_COHORT:
        raise WireError("survivor list too long")
    survivors = tuple(int(v) for v in np.frombuffer(r.take(4 * count), ">u4"))
    if list(survivors) != sorted(set(survivors)):
        raise WireError("survivors must be sorted and distinct")
    code = r.take(1)[0]
    if code == ESTIMATE:
        n = r.u32()
        if n * 8 > len(r.data) - r.pos:
            raise WireError("truncated frame")
        agg = np.frombuffer(r.take(n * 8), "<f8").astype(np.float64)
        return Result(sid, rnd, survivors, agg)
    if code != RING_SUM:
        raise WireError(f"unknown aggregate type {code}")
    bits = r.take(1)[0]
    if not 8 <= bits <= 64:
        raise WireError("aggregate bit width must be in 8..64")
    n = r.u32()
    if n * storage_dtype(bits).itemsize > MAX_VECTOR_BYTES:
        raise WireError("aggregate too large")
    size = packed_size(n, bits)
    if size > len(r.data) - r.pos:
        raise WireError("truncated frame")
    agg = unpack_bits(r.take(size), n, bits)
    if not agg.flags.writeable:  # a view of the frame's bytes: the caller gets its own copy
        agg = agg.copy()
    return Result(sid, rnd, survivors, agg, bits)


def decode_frame(data: bytes) -> tuple[int, object]:
    """(kind, body): the wire bytes for PROTOCOL, else the decoded frame. Raises WireError
    if ``data`` is not exactly one valid frame."""
    if not isinstance(data, bytes) or len(data) < 2:
        raise WireError("frame too short")
    if data[0] != TRANSPORT_VERSION:
        raise WireError(f"unknown transport version {data[0]}")
    kind, r = data[1], _Reader(data)
    r.pos = 2
    if kind == PROTOCOL:
        return kind, data[2:]
    if kind == WELCOME:
        body: object = Welcome(r.u32(), r.take(DIGEST_BYTES), r.u32())
    elif kind == RESULT:
        body = _result(r)
    elif kind == ABORT:
        body = Abort(r.take(SESSION_ID_BYTES), r.u32(), r.text(), r.text())
    elif kind == BYE:
        body = Bye(r.text())
    elif kind == DECLINE:
        body = Decline(r.take(SESSION_ID_BYTES), r.u32(), r.text())
    else:
        raise WireError(f"unknown frame kind {kind}")
    if r.pos != len(data):
        raise WireError(f"{len(data) - r.pos} trailing bytes in frame")
    return kind, body
