"""Authenticated encryption of shares in transit (ChaCha20-Poly1305, RFC 8439).

Bonawitz et al. (CCS 2017), section 4, ShareKeys: shares travel through the server encrypted
under a key agreed from c_u^SK, c_v^PK. The associated data binds protocol version, session,
round, sender and receiver (docs/architecture.md section 2), so a ciphertext replayed into another
session or round, or re-addressed to another client, fails to open.

Frame: ``VERSION (1) | nonce (12) | ciphertext || tag (16)``. The nonce is random (96 bits);
keys are fresh per session and pair, so collisions are negligible. Every failure to open
(short frame, unknown version, wrong key, wrong context, tampering) raises the same opaque
:class:`DecryptionError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .encoding import VERSION, canonical, require_bytes, require_uint
from .errors import DecryptionError, SecAggTypeError
from .keyagreement import SESSION_ID_MAX, SESSION_ID_MIN
from .randomness import random_bytes

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = 1 + NONCE_BYTES + TAG_BYTES
MAX_PLAINTEXT = 1 << 16


@dataclass(frozen=True)
class AeadContext:
    """The session, round and ordered (sender, receiver) a ciphertext is bound to."""

    session_id: bytes
    round: int
    sender: int
    receiver: int

    def __post_init__(self) -> None:
        require_bytes(self.session_id, "session_id", min_len=SESSION_ID_MIN, max_len=SESSION_ID_MAX)
        require_uint(self.round, "round")
        require_uint(self.sender, "sender")
        require_uint(self.receiver, "receiver")

    def associated_data(self) -> bytes:
        return canonical(
            "secagg-aead", VERSION, self.session_id, self.round, self.sender, self.receiver
        )


def _check_key(key: object) -> bytes:
    return require_bytes(key, "AEAD key", min_len=KEY_BYTES, max_len=KEY_BYTES)


def _encrypt_with_nonce(key: bytes, plaintext: bytes, context: AeadContext, nonce: bytes) -> bytes:
    """Deterministic encryption with a caller-chosen nonce. Hazmat: see secagg.hazmat."""
    key = _check_key(key)
    nonce = require_bytes(nonce, "nonce", min_len=NONCE_BYTES, max_len=NONCE_BYTES)
    plaintext = require_bytes(plaintext, "plaintext", max_len=MAX_PLAINTEXT)
    if not isinstance(context, AeadContext):
        raise SecAggTypeError("context must be an AeadContext")
    ct = ChaCha20Poly1305(key).encrypt(nonce, plaintext, context.associated_data())
    return bytes([VERSION]) + nonce + ct


def encrypt(key: bytes, plaintext: bytes, context: AeadContext) -> bytes:
    """Encrypt ``plaintext`` for ``context.receiver`` with a fresh random nonce (drawn for the
    purpose ``"nonce"``, :mod:`secagg.randomness`)."""
    return _encrypt_with_nonce(key, plaintext, context, random_bytes(NONCE_BYTES, "nonce"))


def decrypt(key: bytes, frame: bytes, context: AeadContext) -> bytes:
    """Open a frame made by :func:`encrypt` under the same key and context.

    Any failure raises :class:`DecryptionError` without saying why.
    """
    key = _check_key(key)
    if not isinstance(context, AeadContext):
        raise SecAggTypeError("context must be an AeadContext")
    if (
        not isinstance(frame, bytes | bytearray)
        or len(frame) < OVERHEAD
        or len(frame) > OVERHEAD + MAX_PLAINTEXT
        or frame[0] != VERSION
    ):
        raise DecryptionError()
    frame = bytes(frame)
    try:
        return ChaCha20Poly1305(key).decrypt(
            frame[1 : 1 + NONCE_BYTES], frame[1 + NONCE_BYTES :], context.associated_data()
        )
    except InvalidTag:
        raise DecryptionError() from None
