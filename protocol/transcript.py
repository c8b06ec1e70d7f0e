"""The transcript: every byte string a client signs, commits to or hashes, and the labels that
separate them; shared by client and server (neither imports the other).

Each is a :func:`secagg.encoding.canonical` tuple that starts with its own label and carries
the session id and round, so no payload of one kind or one run can stand for another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from secagg.encoding import canonical
from secagg.merkle import MerkleTree

#: Ed25519 signature labels (domain separation inside :class:`secagg.SigningKey`).
ADVERTISE_LABEL = "advertise-keys"
CONSISTENCY_LABEL = "consistency-check"


def advertise_bytes(  # noqa: PLR0917 - the fields a key advertisement signs, in order
    session_id: bytes, rnd: int, graph_seed: bytes, u: int, c_pk: bytes, s_pk: bytes,
    b_commitment: bytes,
) -> bytes:
    """What client u signs in AdvertiseKeys (malicious mode). ``graph_seed`` is derived from
    the session, round and cohort, so the signature also fixes the cohort it was made for."""
    return canonical("advertise", session_id, rnd, graph_seed, u, c_pk, s_pk, b_commitment)


def commit_self_seed(session_id: bytes, rnd: int, u: int, seed: bytes) -> bytes:
    """SHA-256 commitment to b_u, bound to the session, round and client. b_u is a uniform
    256-bit secret, so the commitment hides it; the server checks the reconstructed b_u
    against it, so a forged share cannot silently change the aggregate."""
    return hashlib.sha256(canonical("b-commit", session_id, rnd, u, seed)).digest()


def key_leaf(session_id: bytes, rnd: int, graph_seed: bytes,
             entry: tuple[int, bytes, bytes, bytes, bytes]) -> bytes:
    """The leaf of the key commitment for one signed advertisement
    ``(id, c_pk, s_pk, b_commitment, signature)``."""
    u, c_pk, s_pk, commitment, sig = entry
    return canonical("key-leaf", session_id, rnd, graph_seed, u, c_pk, s_pk, commitment, sig)


def absent_leaf(session_id: bytes, rnd: int, graph_seed: bytes, u: int) -> bytes:
    """The leaf of a cohort member that advertised no keys."""
    return canonical("key-leaf-absent", session_id, rnd, graph_seed, u)


def key_tree(session_id: bytes, rnd: int, graph_seed: bytes, cohort: Sequence[int],
             entries: Mapping[int, tuple[int, bytes, bytes, bytes, bytes]]) -> MerkleTree:
    """The hash tree of the key commitment (malicious mode): one leaf per cohort member, at its
    position in the sorted cohort, holding its signed advertisement if it is in U1 and an
    absent-leaf otherwise. A position belongs to one id, so the tree cannot hold two
    advertisements of one client, and its size is the cohort's."""
    return MerkleTree([key_leaf(session_id, rnd, graph_seed, entries[u]) if u in entries
                       else absent_leaf(session_id, rnd, graph_seed, u) for u in cohort])


def survivors_bytes(session_id: bytes, rnd: int, graph_seed: bytes, survivors: tuple[int, ...],
                    *, key_root: bytes) -> bytes:
    """What a client signs in ConsistencyCheck: U3, the cohort (through ``graph_seed``) and the
    key commitment of its run, so a signature made in one run of the session (a rehearsal with
    other keys, or another cohort) does not verify in another."""
    return canonical("survivors", session_id, rnd, graph_seed,
                     np.asarray(survivors, ">u4").tobytes(), key_root)
