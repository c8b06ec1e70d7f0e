"""A binary SHA-256 hash tree over an ordered list of byte strings, with inclusion proofs.

Merkle, "A digital signature based on a conventional encryption function" (CRYPTO 1987). The
leaf and node hashes are domain-separated as in RFC 6962 section 2.1 (``0x00`` before a leaf,
``0x01`` before two children), so a leaf can never be read as an inner node; the published
root is ``SHA-256(0x02 || count (u32, big-endian) || top node)``, so it also fixes the number
of leaves. The shape is
fixed by the number of leaves alone: each level pairs nodes left to right and an odd last
node moves up unchanged. An inclusion proof for leaf ``index`` of ``count`` is the list of the
siblings met on the way up (none on a level where the node moves up alone); the verifier
derives the same shape from ``(index, count)``, so the proof carries no position bits.

Used by the protocol's key commitment (malicious mode): the root over every signed key
advertisement of a round, which each client checks its own and its neighbours' entries
against and which its ConsistencyCheck signature covers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from .encoding import require_bytes, require_uint
from .errors import EncodingError, SecAggValueError

HASH_BYTES = 32
#: Deepest tree a proof may describe: 2^32 leaves.
MAX_DEPTH = 32


class InclusionError(SecAggValueError):
    """A leaf, index or proof that does not lead to the given root."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _seal(top: bytes, count: int) -> bytes:
    """The published root: the top node bound to the number of leaves (0x02 prefix), since
    trees of different sizes can share a top node (6 and 7 leaves share the path of leaf 3)."""
    return hashlib.sha256(b"\x02" + count.to_bytes(4, "big") + top).digest()


def _levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaf hashes first, the root's level last."""
    level = [leaf_hash(require_bytes(x, "leaf")) for x in leaves]
    if not level:
        raise EncodingError("a hash tree needs at least one leaf")
    out = [level]
    while len(level) > 1:
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        out.append(nxt)
        level = nxt
    return out


class MerkleTree:
    """The tree over ``leaves`` (in the given order): its root and a proof for each leaf."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self._levels = _levels(leaves)

    @property
    def count(self) -> int:
        return len(self._levels[0])

    @property
    def root(self) -> bytes:
        return _seal(self._levels[-1][0], self.count)

    def proof(self, index: int) -> bytes:
        """The concatenated sibling hashes from leaf ``index`` up to the root."""
        require_uint(index, "index", bits=32)
        if index >= self.count:
            raise EncodingError(f"leaf index {index} outside a tree of {self.count} leaves")
        path = []
        for level in self._levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            index //= 2
        return b"".join(path)


def proof_length(index: int, count: int) -> int:
    """Bytes of the proof for leaf ``index`` of ``count``: one hash per level with a sibling."""
    hashes = 0
    while count > 1:
        if index ^ 1 < count:
            hashes += 1
        index, count = index // 2, (count + 1) // 2
    return hashes * HASH_BYTES


def verify_inclusion(root: bytes, data: bytes, *, index: int, count: int, proof: bytes) -> None:
    """Check that ``data`` is leaf ``index`` of the ``count``-leaf tree with ``root``.

    Raises :class:`InclusionError` if it is not (including a proof of the wrong length for
    that position), never returns a bool.
    """
    require_bytes(root, "root", min_len=HASH_BYTES, max_len=HASH_BYTES)
    require_bytes(proof, "proof")
    require_uint(count, "count", bits=32, minimum=1)
    require_uint(index, "index", bits=32)
    if index >= count:
        raise InclusionError(f"leaf index {index} outside a tree of {count} leaves")
    if len(proof) != proof_length(index, count):
        raise InclusionError("inclusion proof has the wrong length for its position")
    node, pos, total = leaf_hash(require_bytes(data, "leaf")), 0, count
    while count > 1:
        if index ^ 1 < count:
            sibling = proof[pos : pos + HASH_BYTES]
            pos += HASH_BYTES
            node = _node(node, sibling) if index % 2 == 0 else _node(sibling, node)
        index, count = index // 2, (count + 1) // 2
    if _seal(node, total) != root:
        raise InclusionError("leaf is not in the tree with this root")
