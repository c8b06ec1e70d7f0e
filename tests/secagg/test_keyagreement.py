"""X25519 + HKDF: symmetry, binding to every context field, refusals."""

from __future__ import annotations

import pytest

from secagg import KdfContext, KeyAgreementError, KeyPair, SecAggTypeError, agree
from secagg.encoding import EncodingError

SESSION = bytes(range(16))


def test_both_sides_agree_and_secrets_are_bound():
    a, b = KeyPair.generate(), KeyPair.generate()
    ctx = KdfContext(SESSION, 5, "pairwise-mask")
    s_ab = agree(a, b.public_bytes, own_id=1, peer_id=2, context=ctx)
    s_ba = agree(b, a.public_bytes, own_id=2, peer_id=1, context=ctx)
    assert s_ab == s_ba and len(s_ab) == 32
    variants = [
        agree(a, b.public_bytes, own_id=1, peer_id=2,
              context=KdfContext(bytes(16), 5, "pairwise-mask")),
        agree(a, b.public_bytes, own_id=1, peer_id=2,
              context=KdfContext(SESSION, 6, "pairwise-mask")),
        agree(a, b.public_bytes, own_id=1, peer_id=2,
              context=KdfContext(SESSION, 5, "share-encryption")),
        agree(a, b.public_bytes, own_id=1, peer_id=3, context=ctx),
        agree(a, KeyPair.generate().public_bytes, own_id=1, peer_id=2, context=ctx),
    ]
    assert len({s_ab, *variants}) == 6


def test_private_bytes_roundtrip():
    a = KeyPair.generate()
    again = KeyPair.from_private_bytes(a.private_bytes())
    assert again.public_bytes == a.public_bytes
    assert "_private" not in repr(a)  # the private key object is excluded from repr


def test_keypair_refuses_a_mismatched_public_key():
    from secagg import KeyAgreementError as KAE

    a, b = KeyPair.generate(), KeyPair.generate()
    with pytest.raises(KAE, match="does not match"):
        KeyPair(a._private, b.public_bytes)


def test_low_order_point_refused():
    a = KeyPair.generate()
    ctx = KdfContext(SESSION, 0, "pairwise-mask")
    with pytest.raises(KeyAgreementError, match="low-order"):
        agree(a, bytes(32), own_id=1, peer_id=2, context=ctx)
    one = (1).to_bytes(32, "little")
    with pytest.raises(KeyAgreementError):
        agree(a, one, own_id=1, peer_id=2, context=ctx)


def test_bad_inputs():
    a = KeyPair.generate()
    ctx = KdfContext(SESSION, 0, "pairwise-mask")
    with pytest.raises(EncodingError, match="exactly 32"):
        agree(a, bytes(31), own_id=1, peer_id=2, context=ctx)
    with pytest.raises(SecAggTypeError):
        agree(a, "k" * 32, own_id=1, peer_id=2, context=ctx)
    with pytest.raises(KeyAgreementError, match="itself"):
        agree(a, KeyPair.generate().public_bytes, own_id=2, peer_id=2, context=ctx)
    with pytest.raises(EncodingError):
        KdfContext(bytes(8), 0, "p")  # session id too short
    with pytest.raises(EncodingError):
        KdfContext(SESSION, -1, "p")
    with pytest.raises(SecAggTypeError):
        KdfContext(SESSION, 0, "")
    with pytest.raises(EncodingError, match="UTF-8"):
        KdfContext(SESSION, 0, "\ud800")
    with pytest.raises(SecAggTypeError):
        agree(a, a.public_bytes, own_id=1, peer_id=2, context=None)
