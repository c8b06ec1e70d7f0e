"""The key-commitment hash tree: shape, known answers recomputed with hashlib, proofs."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secagg.merkle import InclusionError, MerkleTree, proof_length, verify_inclusion


def _h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def test_known_answers_recomputed_independently():
    """Roots for 1, 2, 3 and 5 leaves written out by hand from the definition (0x00 leaf
    prefix, 0x01 node prefix, an odd last node moves up unchanged, 0x02 and the count seal
    the top node)."""
    a, b, c, d, e = (bytes([i]) * 3 for i in range(5))
    la, lb, lc, ld, le = (_h(b"\x00", x) for x in (a, b, c, d, e))

    def seal(top, n):
        return _h(b"\x02", n.to_bytes(4, "big"), top)

    assert MerkleTree([a]).root == seal(la, 1)
    assert MerkleTree([a, b]).root == seal(_h(b"\x01", la, lb), 2)
    assert MerkleTree([a, b, c]).root == seal(_h(b"\x01", _h(b"\x01", la, lb), lc), 3)
    ab, cd = _h(b"\x01", la, lb), _h(b"\x01", lc, ld)
    assert MerkleTree([a, b, c, d, e]).root == seal(_h(b"\x01", _h(b"\x01", ab, cd), le), 5)
    assert MerkleTree([a, b, c, d, e]).proof(4) == _h(b"\x01", ab, cd)
    assert MerkleTree([a, b, c, d, e]).proof(2) == ld + ab + le


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=70), st.data())
def test_every_leaf_verifies_and_no_other_does(leaves, data):
    tree = MerkleTree(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    proof = tree.proof(i)
    assert len(proof) == proof_length(i, len(leaves))
    verify_inclusion(tree.root, leaves[i], index=i, count=len(leaves), proof=proof)
    with pytest.raises(InclusionError):
        verify_inclusion(tree.root, leaves[i] + b"x", index=i, count=len(leaves), proof=proof)
    if len(leaves) > 1:
        j = (i + 1) % len(leaves)
        if leaves[j] != leaves[i]:
            with pytest.raises(InclusionError):
                verify_inclusion(tree.root, leaves[j], index=i, count=len(leaves), proof=proof)


def test_wrong_position_count_or_proof_is_refused():
    leaves = [bytes([i]) for i in range(6)]
    tree = MerkleTree(leaves)
    p = tree.proof(3)
    for kw in (dict(index=2, count=6, proof=p), dict(index=3, count=7, proof=p),
               dict(index=3, count=6, proof=p[:-1]), dict(index=3, count=6, proof=p + p[:32]),
               dict(index=6, count=6, proof=p)):
        with pytest.raises(InclusionError):
            verify_inclusion(tree.root, leaves[3], **kw)
