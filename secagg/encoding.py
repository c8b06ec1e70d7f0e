"""Canonical, injective byte encoding of small field tuples.

Used wherever bytes are bound cryptographically: HKDF ``info`` strings, AEAD associated data,
signed messages and share framing. Every encoding starts with a version byte (pyca convention,
docs/architecture.md section 8); each field is type-tagged and length-prefixed, so two different
tuples can never encode to the same bytes (no ambiguity between ``("ab", "c")`` and ``("a",
"bc")``).

Layout: ``VERSION (1) | field count (u16) | fields``, each field one of

* ``0x01 | len u32 | raw bytes``  for :class:`bytes`
* ``0x02 | len u32 | UTF-8``      for :class:`str`
* ``0x03 | u64 big-endian``       for non-negative :class:`int` below 2^64
"""

from __future__ import annotations

import struct

from .errors import EncodingError, SecAggTypeError

#: Version of every byte format defined by this package.
VERSION = 1

_MAX_FIELD = 1 << 20  # 1 MiB: nothing bound by this encoding is larger
_MAX_FIELDS = 64

Field = bytes | str | int
_BYTES_TYPES = (bytes, bytearray, memoryview)


_HEADER = struct.Struct(">BH").pack
_INT_FIELD = struct.Struct(">BQ").pack
_LEN_FIELD = struct.Struct(">BI").pack
_U64_END = 1 << 64


def canonical(*fields: Field) -> bytes:
    """Encode ``fields`` canonically (same tuple, same bytes; different tuples, different bytes)."""
    if len(fields) > _MAX_FIELDS:
        raise EncodingError(f"too many fields to encode: {len(fields)} > {_MAX_FIELDS}")
    out = [_HEADER(VERSION, len(fields))]
    append = out.append
    for f in fields:  # the common exact types; anything else takes the checked path below
        kind = type(f)
        if kind is bytes and len(f) <= _MAX_FIELD:
            append(_LEN_FIELD(1, len(f)))
            append(f)
        elif kind is int and 0 <= f < _U64_END:
            append(_INT_FIELD(3, f))
        elif kind is str and f.isascii() and len(f) <= _MAX_FIELD:
            append(_LEN_FIELD(2, len(f)))
            append(f.encode("ascii"))
        else:
            return _canonical_checked(fields)
    return b"".join(out)


def _canonical_checked(fields: tuple[Field, ...]) -> bytes:
    """:func:`canonical` for any field types, raising a typed error for the first bad one."""
    out = [_HEADER(VERSION, len(fields))]
    for i, f in enumerate(fields):
        if isinstance(f, bool):
            raise SecAggTypeError(f"field {i}: bool is not an encodable type (use int 0/1)")
        if isinstance(f, _BYTES_TYPES):
            raw = bytes(f)
            tag = 1
        elif isinstance(f, str):
            try:
                raw = f.encode("utf-8")
            except UnicodeEncodeError:
                raw = _utf8(f, f"field {i}")  # raises EncodingError
            tag = 2
        elif isinstance(f, int):
            if not 0 <= f < 1 << 64:
                raise EncodingError(f"field {i}: integer {f} outside [0, 2^64)")
            out.append(struct.pack(">BQ", 3, f))
            continue
        else:
            raise SecAggTypeError(f"field {i}: cannot encode {type(f).__name__}")
        if len(raw) > _MAX_FIELD:
            raise EncodingError(f"field {i}: {len(raw)} bytes exceeds the {_MAX_FIELD}-byte bound")
        out.append(struct.pack(">BI", tag, len(raw)))
        out.append(raw)
    return b"".join(out)


def _utf8(text: str, name: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise EncodingError(f"{name} is not encodable as UTF-8 (lone surrogate?)") from None


def require_label(value: object, name: str) -> str:
    """Check that ``value`` is a non-empty str that encodes as UTF-8; return it."""
    if not isinstance(value, str) or not value:
        raise SecAggTypeError(f"{name} must be a non-empty str")
    _utf8(value, name)
    return value


def require_bytes(
    value: object, name: str, *, min_len: int = 0, max_len: int | None = None
) -> bytes:
    """Check that ``value`` is bytes with a length in [min_len, max_len]; return it as bytes."""
    if not isinstance(value, bytes | bytearray):
        raise SecAggTypeError(f"{name} must be bytes, not {type(value).__name__}")
    n = len(value)
    if n < min_len or (max_len is not None and n > max_len):
        bound = f"exactly {min_len}" if max_len == min_len else f"in [{min_len}, {max_len}]"
        raise EncodingError(f"{name} must be {bound} bytes long, got {n}")
    return bytes(value)


def require_uint(value: object, name: str, *, bits: int = 64, minimum: int = 0) -> int:
    """Check that ``value`` is an int (not bool) in [minimum, 2^bits); return it."""
    if type(value) is int and minimum <= value < 1 << bits:  # fast path
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise SecAggTypeError(f"{name} must be an int, not {type(value).__name__}")
    if not minimum <= value < 1 << bits:
        raise EncodingError(f"{name} must be in [{minimum}, 2^{bits}), got {value}")
    return value
