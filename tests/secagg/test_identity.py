"""Ed25519 identities: verification raises, labels separate domains."""

from __future__ import annotations

import pytest

from secagg import SignatureError, SigningKey, VerifyKey
from secagg.encoding import EncodingError


def test_sign_verify_and_failures():
    sk = SigningKey.generate()
    vk = sk.verify_key
    sig = sk.sign(b"U3 = {1,2,3}", label="consistency-check")
    assert vk.verify(sig, b"U3 = {1,2,3}", label="consistency-check") is None
    with pytest.raises(SignatureError, match="^signature verification failed$"):
        vk.verify(sig, b"U3 = {1,2}", label="consistency-check")
    with pytest.raises(SignatureError):
        vk.verify(sig, b"U3 = {1,2,3}", label="advertise-keys")  # cross-domain replay
    with pytest.raises(SignatureError):
        SigningKey.generate().verify_key.verify(sig, b"U3 = {1,2,3}", label="consistency-check")
    bad = bytearray(sig)
    bad[5] ^= 1
    with pytest.raises(SignatureError):
        vk.verify(bytes(bad), b"U3 = {1,2,3}", label="consistency-check")
    with pytest.raises(SignatureError):
        vk.verify(sig[:-1], b"U3 = {1,2,3}", label="consistency-check")


def test_label_must_encode():
    from secagg import EncodingError

    with pytest.raises(EncodingError, match="UTF-8"):
        SigningKey.generate().sign(b"m", label="\udfff")


def test_key_encoding():
    with pytest.raises(EncodingError):
        VerifyKey(bytes(31))
    sk = SigningKey.generate()
    assert VerifyKey(sk.verify_key.raw) == sk.verify_key
