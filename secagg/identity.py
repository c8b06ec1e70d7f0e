"""Ed25519 long-term identities for the malicious-server mode.

Bonawitz et al. (CCS 2017), section 4, "active adversary" variant: clients sign their
advertised keys and, in ConsistencyCheck, the survivor set, under long-term keys registered
with a trusted PKI. Here the signature scheme is Ed25519 (RFC 8032).

Every signed message is domain-separated: the bytes signed are
``canonical("secagg-sig", VERSION, label, message)``, so a signature made for one purpose
(say "advertise-keys") can never be replayed as another ("consistency-check").
:meth:`VerifyKey.verify` raises :class:`SignatureError`; it never returns a bool.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .encoding import VERSION, canonical, require_bytes, require_label
from .errors import SignatureError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


def _signed_bytes(label: str, message: bytes) -> bytes:
    require_label(label, "signature label")
    message = require_bytes(message, "message")
    return canonical("secagg-sig", VERSION, label, message)


@dataclass(frozen=True)
class VerifyKey:
    """A public Ed25519 identity key (32 bytes)."""

    raw: bytes

    def __post_init__(self) -> None:
        require_bytes(self.raw, "Ed25519 public key", min_len=32, max_len=32)

    def verify(self, signature: bytes, message: bytes, *, label: str) -> None:
        """Raise :class:`SignatureError` unless ``signature`` signs (label, message)."""
        data = _signed_bytes(label, message)
        if not isinstance(signature, bytes | bytearray) or len(signature) != SIGNATURE_BYTES:
            raise SignatureError()
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(bytes(signature), data)
        except (InvalidSignature, ValueError):
            raise SignatureError() from None


@dataclass(frozen=True)
class SigningKey:
    """A private Ed25519 identity key."""

    _private: Ed25519PrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> SigningKey:
        raw = require_bytes(raw, "Ed25519 private key", min_len=32, max_len=32)
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @property
    def verify_key(self) -> VerifyKey:
        return VerifyKey(
            self._private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )

    def sign(self, message: bytes, *, label: str) -> bytes:
        """Sign ``message`` under the domain label ``label`` (deterministic, RFC 8032)."""
        return self._private.sign(_signed_bytes(label, message))
