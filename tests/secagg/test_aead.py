"""AEAD share transport: round trip, binding, tampering, one opaque error."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secagg import AeadContext, DecryptionError, decrypt, encrypt
from secagg.encoding import EncodingError

KEY = os.urandom(32)
CTX = AeadContext(bytes(range(16)), 3, 10, 20)


@given(st.binary(max_size=300))
def test_roundtrip(pt):
    assert decrypt(KEY, encrypt(KEY, pt, CTX), CTX) == pt


@pytest.mark.parametrize("other", [
    AeadContext(bytes(range(1, 17)), 3, 10, 20),  # another session
    AeadContext(bytes(range(16)), 4, 10, 20),     # another round (replay)
    AeadContext(bytes(range(16)), 3, 11, 20),     # another sender
    AeadContext(bytes(range(16)), 3, 10, 21),     # re-addressed to another receiver
    AeadContext(bytes(range(16)), 3, 20, 10),     # sender and receiver swapped
])
def test_context_binding(other):
    frame = encrypt(KEY, b"share", CTX)
    with pytest.raises(DecryptionError) as e:
        decrypt(KEY, frame, other)
    assert str(e.value) == "decryption failed"


def test_tampering_any_byte_fails_opaquely():
    frame = encrypt(KEY, b"share bytes", CTX)
    for i in range(len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x01
        with pytest.raises(DecryptionError, match="^decryption failed$"):
            decrypt(KEY, bytes(bad), CTX)
    for bad in (b"", frame[:28], frame[:-1], frame + b"\0", b"\x02" + frame[1:]):
        with pytest.raises(DecryptionError, match="^decryption failed$"):
            decrypt(KEY, bad, CTX)
    with pytest.raises(DecryptionError):
        decrypt(os.urandom(32), frame, CTX)
    with pytest.raises(DecryptionError):
        decrypt(KEY, "not bytes", CTX)


def test_fresh_nonces():
    assert encrypt(KEY, b"x", CTX) != encrypt(KEY, b"x", CTX)


def test_local_misuse_is_not_opaque():
    with pytest.raises(EncodingError, match="AEAD key"):
        encrypt(bytes(16), b"x", CTX)
    with pytest.raises(EncodingError):
        AeadContext(bytes(4), 0, 1, 2)
    with pytest.raises(EncodingError):
        encrypt(KEY, bytes((1 << 16) + 1), CTX)
