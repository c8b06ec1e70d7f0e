"""Dangerous knobs: explicit randomness for known-answer tests and reproducible fixtures.

Nothing here is needed by a correct protocol run. Each function removes a source of fresh
randomness (Shamir coefficients, AEAD nonces, key material) and is safe only when the caller
guarantees uniqueness and secrecy itself (pyca/cryptography's "hazmat" convention,
docs/architecture.md section 8); :func:`fixed_randomness` replaces every draw of a client at
once (:mod:`secagg.randomness`), for whole-round known-answer transcripts, and is the only
place that may replace that source. Production code must not import this module;
``tests/secagg/test_hazmat_boundary.py`` checks that no other module of the package does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from . import randomness as _randomness
from .aead import AeadContext
from .aead import _encrypt_with_nonce as _enc
from .identity import SigningKey
from .keyagreement import KeyPair
from .shamir import Share
from .shamir import _split_with_coefficients as _split


def shamir_split_with_coefficients(
    secret: bytes, *, coefficients: Sequence[int], xs: Sequence[int], dealing_id: bytes
) -> list[Share]:
    """Deal with the polynomial secret + a_1 x + ... + a_{t-1} x^{t-1} (t = len(coeffs) + 1)."""
    return _split(secret, coefficients, xs, dealing_id)


def aead_encrypt_with_nonce(
    key: bytes, plaintext: bytes, context: AeadContext, *, nonce: bytes
) -> bytes:
    """AEAD encryption with a caller-chosen nonce. Reusing a nonce under one key is fatal."""
    return _enc(key, plaintext, context, nonce)


def x25519_from_private_bytes(raw: bytes) -> KeyPair:
    """An X25519 key pair from fixed private bytes (for vectors)."""
    return KeyPair.from_private_bytes(raw)


def ed25519_from_private_bytes(raw: bytes) -> SigningKey:
    """An Ed25519 identity from fixed private bytes (for vectors)."""
    return SigningKey.from_private_bytes(raw)


@contextmanager
def fixed_randomness(source: _randomness.Source) -> Iterator[None]:
    """Within the ``with`` block, every draw of :mod:`secagg.randomness` made by this thread
    (key pairs, b_u, Shamir dealings, AEAD nonces: a client's randomness in Bonawitz et al.
    CCS 2017 section 4) is ``source(purpose, kind, arg)``: kind ``"bytes"`` with arg n must
    return n bytes, kind ``"below"`` with arg m an int in [0, m). A value of the wrong type,
    length or range raises ValueError at the draw. Blocks nest (the innermost source wins);
    the source is removed when the block ends, also by an exception. Other threads keep the
    operating system's CSPRNG. A source anyone can predict makes every key, mask and share
    drawn under it public: for known-answer tests only.
    """
    _randomness._install(source)
    try:
        yield
    finally:
        _randomness._uninstall(source)
