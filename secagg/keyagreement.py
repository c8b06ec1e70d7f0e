"""X25519 key agreement and HKDF-SHA256 derivation of 32-byte pairwise secrets.

Bonawitz et al. (CCS 2017), section 4 (AdvertiseKeys: each client publishes two public keys,
c_u^PK for share encryption and s_u^PK for masks) and section 3.3 (KA.agree followed by a
hash). Here KA is X25519 (RFC 7748) and the hash is HKDF-SHA256 (RFC 5869) whose ``info``
binds everything that must make a secret unique (docs/architecture.md section 2):

    info = canonical("secagg-kdf", VERSION, session_id, round, min(u, v), max(u, v), purpose)
    salt = "secagg/kdf/v1"

Both parties derive the same secret because the pair is ordered. A secret agreed in one session,
round or purpose is unrelated to the secret of any other, which is what binds shares and masks
to their session and round.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .encoding import VERSION, canonical, require_bytes, require_label, require_uint
from .errors import KeyAgreementError, SecAggTypeError
from .randomness import random_bytes

PUBLIC_KEY_BYTES = 32
PRIVATE_KEY_BYTES = 32
SECRET_BYTES = 32
SESSION_ID_MIN, SESSION_ID_MAX = 16, 64
#: Purposes used by the protocol; any non-empty label is accepted, these are the standard ones.
PURPOSE_MASK = "pairwise-mask"
PURPOSE_SHARE_ENCRYPTION = "share-encryption"
_KDF_SALT = b"secagg/kdf/v1"


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair (the private half is hidden from repr).

    :meth:`private_bytes` exists because the protocol Shamir-shares s_u^SK (Bonawitz et al.
    2017, section 4); nothing else should call it.
    """

    _private: X25519PrivateKey = field(repr=False)
    public_bytes: bytes

    def __post_init__(self) -> None:
        if not isinstance(self._private, X25519PrivateKey):
            raise SecAggTypeError("KeyPair needs an X25519PrivateKey")
        derived = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        if derived != self.public_bytes:
            raise KeyAgreementError("public key does not match the private key")

    @classmethod
    def generate(cls, *, purpose: str = "x25519-key") -> KeyPair:
        """A fresh key pair whose private key is 32 bytes of :func:`secagg.randomness.random_bytes`
        drawn for ``purpose`` (``"c-key"`` or ``"s-key"`` in AdvertiseKeys, Bonawitz et al. 2017
        section 4); X25519 clamps them (RFC 7748 section 5), so any 32 bytes are a key."""
        raw = random_bytes(PRIVATE_KEY_BYTES, purpose)
        return cls._from_private(X25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def _from_private(cls, priv: X25519PrivateKey) -> KeyPair:
        pub = priv.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(priv, pub)

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key, for Shamir sharing of s_u^SK (Bonawitz 2017, sec. 4)."""
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> KeyPair:
        """Rebuild a key pair from 32 raw bytes (the server does this for dropped clients)."""
        raw = require_bytes(raw, "X25519 private key", min_len=32, max_len=32)
        return cls._from_private(X25519PrivateKey.from_private_bytes(raw))


@dataclass(frozen=True)
class KdfContext:
    """What a derived secret is bound to. Validated on construction."""

    session_id: bytes
    round: int
    purpose: str

    def __post_init__(self) -> None:
        require_bytes(self.session_id, "session_id", min_len=SESSION_ID_MIN, max_len=SESSION_ID_MAX)
        require_uint(self.round, "round")
        require_label(self.purpose, "purpose")

    def info(self, u: int, v: int) -> bytes:
        require_uint(u, "client id")
        require_uint(v, "client id")
        if u == v:
            raise KeyAgreementError(f"a client cannot agree a pairwise secret with itself ({u})")
        lo, hi = (u, v) if u < v else (v, u)
        return canonical("secagg-kdf", VERSION, self.session_id, self.round, lo, hi, self.purpose)


def agree(
    own: KeyPair,
    peer_public: bytes,
    *,
    own_id: int,
    peer_id: int,
    context: KdfContext,
) -> bytes:
    """Derive the 32-byte secret shared by ``own_id`` and ``peer_id`` under ``context``.

    Raises :class:`KeyAgreementError` for a public key of the wrong length or a low-order
    point (whose shared secret would be all zeros and known to everyone).
    """
    if not isinstance(own, KeyPair):
        raise SecAggTypeError("own must be a KeyPair")
    if not isinstance(context, KdfContext):
        raise SecAggTypeError("context must be a KdfContext")
    peer_public = require_bytes(
        peer_public, "peer public key", min_len=PUBLIC_KEY_BYTES, max_len=PUBLIC_KEY_BYTES
    )
    info = context.info(own_id, peer_id)
    try:
        shared = own._private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # OpenSSL refuses an all-zero result (low-order point)
        raise KeyAgreementError("peer public key is a low-order point") from exc
    # HKDF-SHA256 with L = 32 (RFC 5869): Extract, then one Expand block, as one-shot HMACs.
    prk = hmac.digest(_KDF_SALT, shared, hashlib.sha256)
    return hmac.digest(prk, info + b"\x01", hashlib.sha256)
