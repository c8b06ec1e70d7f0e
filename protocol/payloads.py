"""The byte strings that clients sign, commit to or hash, shared by client and server.

Each is a :func:`secagg.encoding.canonical` tuple that starts with its own label and carries
the session id and round, so no payload of one kind or one run can stand for another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from secagg.encoding import canonical
from secagg.merkle import MerkleTree

#: Ed25519 signature labels (domain separation inside :class:`secagg.SigningKey`).
ADVERTISE_LABEL = "advertise-keys"
CONSISTENCY_LABEL = "consistency-check"


def advertise_bytes(  # noqa: PLR0917 - the fields a key advertisement signs, in order
    session_id: bytes, rnd: int, u: int, c_pk: bytes, s_pk: bytes, b_commitment: bytes
) -> bytes:
    """What client u signs in AdvertiseKeys (malicious mode)."""
    return canonical("advertise", session_id, rnd, u, c_pk, s_pk, b_commitment)


def commit_self_seed(session_id: bytes, rnd: int, u: int, seed: bytes) -> bytes:
    """SHA-256 commitment to b_u, bound to the session, round and client. b_u is a uniform
    256-bit secret, so the commitment hides it; the server checks the reconstructed b_u
    against it, so a forged share cannot silently change the aggregate."""
    return hashlib.sha256(canonical("b-commit", session_id, rnd, u, seed)).digest()


def key_leaf(session_id: bytes, rnd: int, entry: tuple[int, bytes, bytes, bytes, bytes]) -> bytes:
    """The leaf of the key commitment for one signed advertisement
    ``(id, c_pk, s_pk, b_commitment, signature)``."""
    u, c_pk, s_pk, commitment, sig = entry
    return canonical("key-leaf", session_id, rnd, u, c_pk, s_pk, commitment, sig)


def key_tree(session_id: bytes, rnd: int,
             entries: Iterable[tuple[int, bytes, bytes, bytes, bytes]]) -> MerkleTree:
    """The hash tree over every signed advertisement of U1, in id order (malicious mode)."""
    return MerkleTree([key_leaf(session_id, rnd, e) for e in entries])


def survivors_bytes(session_id: bytes, rnd: int, survivors: tuple[int, ...], *,
                    key_root: bytes, key_count: int) -> bytes:
    """What a client signs in ConsistencyCheck: U3 and the key commitment of its run, so a
    signature made in one run over the same session (a rehearsal with other keys) does not
    verify in another."""
    return canonical("survivors", session_id, rnd, np.asarray(survivors, ">u4").tobytes(),
                     key_root, key_count)
