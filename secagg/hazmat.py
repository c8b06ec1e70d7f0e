"""Dangerous knobs: explicit randomness for known-answer tests and reproducible fixtures.

Nothing here is needed by a correct protocol run. Each function removes a source of fresh
randomness (Shamir coefficients, AEAD nonces, key material) and is safe only when the caller
guarantees uniqueness and secrecy itself (pyca/cryptography's "hazmat" convention,
docs/architecture.md section 8). Production code must not import this module;
``tests/secagg/test_hazmat_boundary.py`` checks that no other module of the package does.
"""

from __future__ import annotations

from collections.abc import Sequence

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
