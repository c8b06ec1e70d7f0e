"""Ed25519 private keys on disk: the client's identity key and the ledgers' signing keys.

A key file holds the 32-byte raw private key as hex (what ``secagg certs`` writes, 0600).
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .errors import SettingsError


def load_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the hex file ``path``. Raises SettingsError if the file
    cannot be read or does not hold a 32-byte key in hex."""
    path = Path(path)
    try:
        raw = bytes.fromhex(path.read_text().strip())
        return Ed25519PrivateKey.from_private_bytes(raw)
    except (OSError, ValueError) as exc:
        raise SettingsError(f"cannot load the Ed25519 key {path}: {exc}") from None
