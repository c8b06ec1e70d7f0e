"""Regenerate the known-answer files in this folder (see README.md for provenance).

Run from the repository root: ``python tests/vectors/make_vectors.py``. Every input is fixed
here; the outputs were produced by this package and then checked by the independent code paths
in ``tests/secagg/test_vectors.py`` (openssl, stdlib HMAC-HKDF, AES-ECB counter blocks, integer
arithmetic). Regenerating must leave the files byte-identical: a diff means the construction
changed and every deployed peer would disagree.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from secagg import AeadContext, KdfContext, PairwiseMask, Ring, agree, expand, mask_input
from secagg.hazmat import (
    aead_encrypt_with_nonce,
    ed25519_from_private_bytes,
    shamir_split_with_coefficients,
    x25519_from_private_bytes,
)
from secagg.prg import derive_prg_key
from secagg.shamir import PRIMES, SHARE_VERSION

HERE = Path(__file__).parent
SEED = bytes(range(32))
SESSION = bytes.fromhex("5e55104e00112233445566778899aabb")
# RFC 7748, section 6.1: Alice's and Bob's X25519 private keys.
ALICE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
BOB = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")


def prg() -> dict:
    cases = []
    for algorithm in ("aes128-ctr", "chacha20"):
        for bits, purpose in ((32, "self-mask"), (16, "pairwise-mask"), (64, "self-mask")):
            ring = Ring(bits)
            vals = expand(SEED, purpose, 8, ring, algorithm=algorithm)
            cases.append({
                "algorithm": algorithm, "seed": SEED.hex(), "purpose": purpose, "bits": bits,
                "key": derive_prg_key(SEED, purpose, algorithm).hex(),
                "values": [int(v) for v in vals],
            })
    return {"description": "mask PRG expansion (secagg.prg, construction v1)", "cases": cases}


def kdf() -> dict:
    a, b = x25519_from_private_bytes(ALICE), x25519_from_private_bytes(BOB)
    cases = []
    for rnd, purpose, ids in ((0, "pairwise-mask", (3, 7)), (1, "share-encryption", (7, 3))):
        ctx = KdfContext(SESSION, rnd, purpose)
        secret = agree(a, b.public_bytes, own_id=ids[0], peer_id=ids[1], context=ctx)
        cases.append({
            "alice_private": ALICE.hex(), "bob_public": b.public_bytes.hex(),
            "session_id": SESSION.hex(), "round": rnd, "purpose": purpose,
            "own_id": ids[0], "peer_id": ids[1], "secret": secret.hex(),
        })
    return {"description": "X25519 + HKDF-SHA256 pairwise secret (secagg.keyagreement)",
            "cases": cases}


def shamir() -> dict:
    secret = bytes.fromhex("00" + "ab" * 31)  # leading zero byte: length must survive
    coeffs = [123456789, 2**300 + 17, 2**520 - 5]
    xs = [1, 2, 5, 9, 4294967295]
    shares = shamir_split_with_coefficients(secret, coefficients=coeffs, xs=xs,
                                            dealing_id=bytes(range(16)))
    return {"description": "Shamir over Z_P, P the product of the 11 largest primes below "
                           "2^48, y written as its 11 residues of 6 bytes (secagg.shamir, "
                           "share version 2)",
            "prime_offsets": [(1 << 48) - p for p in PRIMES], "share_version": SHARE_VERSION,
            "secret": secret.hex(), "coefficients": [str(c) for c in coeffs],
            "dealing_id": bytes(range(16)).hex(), "threshold": 4,
            "shares": [{"x": s.x, "y": str(s.y), "encoded": s.to_bytes().hex()} for s in shares]}


def aead() -> dict:
    key = bytes(range(100, 132))
    nonce = bytes.fromhex("000000000102030405060708")
    ctx = AeadContext(SESSION, 2, 3, 7)
    pt = b"share of b_u || share of s_u^SK"
    frame = aead_encrypt_with_nonce(key, pt, ctx, nonce=nonce)
    return {"description": "ChaCha20-Poly1305 share framing (secagg.aead)", "key": key.hex(),
            "nonce": nonce.hex(), "session_id": SESSION.hex(), "round": 2, "sender": 3,
            "receiver": 7, "plaintext": pt.hex(), "associated_data": ctx.associated_data().hex(),
            "frame": frame.hex()}


def masked_vector() -> dict:
    cases = []
    for bits in (32, 20, 64):
        ring = Ring(bits)
        x = np.array([i * 0x9E3779B97F4A7C15 % ring.modulus for i in range(16)], dtype=ring.dtype)
        pairs = [PairwiseMask(bytes([1]) * 32, 1), PairwiseMask(bytes([2]) * 32, -1)]
        y = mask_input(x, ring=ring, self_seed=SEED, pairwise=pairs)
        cases.append({"bits": bits, "x": [int(v) for v in x], "self_seed": SEED.hex(),
                      "pairwise": [{"seed": p.seed.hex(), "sign": p.sign} for p in pairs],
                      "y": [int(v) for v in y]})
    return {"description": "a whole masked vector (secagg.masking.mask_input)", "cases": cases}


def signature() -> dict:
    # RFC 8032, section 7.1, TEST 1 secret key.
    sk = ed25519_from_private_bytes(bytes.fromhex(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    msg = b"survivor set"
    return {"description": "Ed25519 signature over a domain-separated message (secagg.identity)",
            "public_key": sk.verify_key.raw.hex(), "label": "consistency-check",
            "message": msg.hex(), "signature": sk.sign(msg, label="consistency-check").hex()}


def main() -> None:
    for name, make in (("prg", prg), ("kdf", kdf), ("shamir", shamir), ("aead", aead),
                       ("masked_vector", masked_vector), ("signature", signature)):
        (HERE / f"{name}.json").write_text(json.dumps(make(), indent=1) + "\n")


if __name__ == "__main__":
    main()
