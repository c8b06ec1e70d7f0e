"""Known-answer tests: the package and an independent code path must both give the files."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import math
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from secagg import (
    AeadContext,
    KdfContext,
    PairwiseMask,
    Ring,
    Share,
    ShareTable,
    VerifyKey,
    agree,
    combine,
    decrypt,
    expand,
    mask_input,
)
from secagg.hazmat import (
    aead_encrypt_with_nonce,
    ed25519_from_private_bytes,
    shamir_split_with_coefficients,
    x25519_from_private_bytes,
)
from secagg.prg import derive_prg_key

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def load(name: str) -> dict:
    return json.loads((VECTORS / f"{name}.json").read_text())


# --- independent building blocks (stdlib / bare primitives, not secagg code) -------------
def enc_field(f) -> bytes:
    if isinstance(f, int):
        return struct.pack(">BQ", 3, f)
    tag, raw = (2, f.encode()) if isinstance(f, str) else (1, f)
    return struct.pack(">BI", tag, len(raw)) + raw


def enc_fields(*fields) -> bytes:
    return struct.pack(">BH", 1, len(fields)) + b"".join(enc_field(f) for f in fields)


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()  # RFC 5869 section 2.2
    okm, block = b"", b""
    for i in range(1, -(-length // 32) + 1):  # section 2.3
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        okm += block
    return okm[:length]


def keystream(algorithm: str, key: bytes, nbytes: int) -> bytes:
    """Keystream by openssl when present, else AES-ECB over explicit counter blocks."""
    if shutil.which("openssl"):
        flag = {"aes128-ctr": "-aes-128-ctr", "chacha20": "-chacha20"}[algorithm]
        return subprocess.run(
            ["openssl", "enc", flag, "-K", key.hex(), "-iv", "00" * 16, "-nosalt"],
            input=bytes(nbytes), capture_output=True, check=True,
        ).stdout
    if algorithm != "aes128-ctr":
        pytest.skip("no openssl for an independent ChaCha20 keystream")
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    blocks = b"".join(i.to_bytes(16, "big") for i in range(-(-nbytes // 16)))
    return ecb.update(blocks)[:nbytes]


def independent_prg(seed: bytes, purpose: str, algorithm: str, bits: int, n: int) -> list[int]:
    okm = hkdf_sha256(seed, b"secagg/prg/v1", enc_fields("secagg-prg", algorithm, purpose), 32)
    key = okm[:16] if algorithm == "aes128-ctr" else okm
    width = 8 if bits > 32 else 4
    ks = keystream(algorithm, key, n * width)
    return [int.from_bytes(ks[i * width:(i + 1) * width], "little") % (1 << bits)
            for i in range(n)]


# --- the vectors ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", load("prg")["cases"],
                         ids=lambda c: f"{c['algorithm']}-{c['bits']}")
def test_prg_vector(case):
    seed = bytes.fromhex(case["seed"])
    ring = Ring(case["bits"])
    got = expand(seed, case["purpose"], len(case["values"]), ring, algorithm=case["algorithm"])
    assert [int(v) for v in got] == case["values"]
    assert derive_prg_key(seed, case["purpose"], case["algorithm"]).hex() == case["key"]
    assert independent_prg(seed, case["purpose"], case["algorithm"], case["bits"],
                           len(case["values"])) == case["values"]


def test_rfc7748_shared_secret_then_kdf_vector():
    data = load("kdf")
    for case in data["cases"]:
        alice = bytes.fromhex(case["alice_private"])
        bob_pub = bytes.fromhex(case["bob_public"])
        raw = X25519PrivateKey.from_private_bytes(alice).exchange(
            X25519PublicKey.from_public_bytes(bob_pub))
        # RFC 7748 section 6.1 shared secret K
        assert raw.hex() == "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
        lo, hi = sorted((case["own_id"], case["peer_id"]))
        info = enc_fields("secagg-kdf", 1, bytes.fromhex(case["session_id"]), case["round"],
                          lo, hi, case["purpose"])
        assert hkdf_sha256(raw, b"secagg/kdf/v1", info, 32).hex() == case["secret"]
        ctx = KdfContext(bytes.fromhex(case["session_id"]), case["round"], case["purpose"])
        got = agree(x25519_from_private_bytes(alice), bob_pub, own_id=case["own_id"],
                    peer_id=case["peer_id"], context=ctx)
        assert got.hex() == case["secret"]


def _small_primes(limit: int = 1 << 24) -> np.ndarray:
    """Every prime below ``limit`` (sieve of Eratosthenes, independent of secagg)."""
    sieve = np.ones(limit, dtype=bool)
    sieve[:2] = False
    for i in range(2, math.isqrt(limit) + 1):
        if sieve[i]:
            sieve[i * i::i] = False
    return np.flatnonzero(sieve).astype(np.int64)


def _is_prime(n: int, small: np.ndarray) -> bool:
    """Trial division by every prime up to sqrt(n) (n < 2^48, so sqrt(n) < 2^24)."""
    assert 1 << 24 < n < 1 << 48
    return not (n % small == 0).any()


def test_shamir_vector():
    """Share version 2 (Z_P, P the product of the eleven largest primes below 2^48): made by
    ``tests/vectors/make_vectors.py`` on 2026-12-02 from the fixed polynomial recorded in the
    file, and rebuilt here with plain Python integers and ``struct``: y = f(x) mod P, written
    as y mod p_l in 6 big-endian bytes for each prime in order."""
    data = load("shamir")
    secret = bytes.fromhex(data["secret"])
    coeffs = [int(c) for c in data["coefficients"]]
    dealing = bytes.fromhex(data["dealing_id"])
    primes = [(1 << 48) - c for c in data["prime_offsets"]]
    assert data["share_version"] == 2 and len(set(primes)) == 11
    assert primes == sorted(primes, reverse=True) and all(p > 1 << 32 for p in primes)
    modulus = math.prod(primes)
    assert 1 << 527 < modulus < 1 << 528
    a0 = int.from_bytes(b"\x01" + secret, "big")
    for sh in data["shares"]:
        x = sh["x"]
        y = sum(c * x**i for i, c in enumerate([a0, *coeffs])) % modulus
        assert str(y) == sh["y"]
        layout = struct.pack(">B16sII", 2, dealing, data["threshold"], x) + b"".join(
            (y % p).to_bytes(6, "big") for p in primes)
        assert layout.hex() == sh["encoded"]
    shares = shamir_split_with_coefficients(secret, coefficients=coeffs,
                                            xs=[s["x"] for s in data["shares"]],
                                            dealing_id=dealing)
    assert [s.to_bytes().hex() for s in shares] == [s["encoded"] for s in data["shares"]]
    decoded = [Share.from_bytes(bytes.fromhex(s["encoded"])) for s in data["shares"]]
    for subset in itertools.combinations(decoded, data["threshold"]):
        assert combine(subset) == secret
    table = ShareTable.from_bytes(b"".join(bytes.fromhex(s["encoded"]) for s in data["shares"]))
    assert [table.share(i) for i in range(len(table))] == decoded


def test_shamir_primes_are_prime():
    """The eleven primes of the vector (and of secagg.field) by trial division, and they are
    the eleven largest below 2^48."""
    primes = [(1 << 48) - c for c in load("shamir")["prime_offsets"]]
    small = _small_primes()
    assert all(_is_prime(p, small) for p in primes)
    others = [q for q in range(primes[-1], 1 << 48) if q not in primes]
    assert not any(_is_prime(q, small) for q in others)


def test_chacha20poly1305_primitive_rfc8439():
    # RFC 8439 section 2.8.2 AEAD test vector.
    key = bytes(range(0x80, 0xA0))
    nonce = bytes.fromhex("070000004041424344454647")
    aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    pt = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip "
          b"for the future, sunscreen would be it.")
    out = ChaCha20Poly1305(key).encrypt(nonce, pt, aad)
    assert out[-16:].hex() == "1ae10b594f09e26a7e902ecbd0600691"
    assert out[:16].hex() == "d31a8d34648e60db7b86afbc53ef7ec2"


def test_aead_vector():
    d = load("aead")
    key, nonce = bytes.fromhex(d["key"]), bytes.fromhex(d["nonce"])
    ad = enc_fields("secagg-aead", 1, bytes.fromhex(d["session_id"]), d["round"], d["sender"],
                    d["receiver"])
    assert ad.hex() == d["associated_data"]
    frame = bytes.fromhex(d["frame"])
    assert frame[0] == 1 and frame[1:13] == nonce
    assert ChaCha20Poly1305(key).decrypt(nonce, frame[13:], ad).hex() == d["plaintext"]
    ctx = AeadContext(bytes.fromhex(d["session_id"]), d["round"], d["sender"], d["receiver"])
    assert aead_encrypt_with_nonce(key, bytes.fromhex(d["plaintext"]), ctx, nonce=nonce) == frame
    assert decrypt(key, frame, ctx).hex() == d["plaintext"]


@pytest.mark.parametrize("case", load("masked_vector")["cases"], ids=lambda c: f"b{c['bits']}")
def test_masked_vector(case):
    bits, m = case["bits"], 1 << case["bits"]
    n = len(case["x"])
    seed = bytes.fromhex(case["self_seed"])
    y = [(xi + bi) % m for xi, bi in zip(case["x"], independent_prg(seed, "self-mask",
                                                                     "aes128-ctr", bits, n))]
    for p in case["pairwise"]:
        ks = independent_prg(bytes.fromhex(p["seed"]), "pairwise-mask", "aes128-ctr", bits, n)
        y = [(yi + p["sign"] * ki) % m for yi, ki in zip(y, ks)]
    assert y == case["y"]
    ring = Ring(bits)
    got = mask_input(np.array(case["x"], dtype=ring.dtype), ring=ring, self_seed=seed,
                     pairwise=[PairwiseMask(bytes.fromhex(p["seed"]), p["sign"])
                               for p in case["pairwise"]], chunk=5)
    assert [int(v) for v in got] == case["y"]


def test_signature_vector():
    d = load("signature")
    # RFC 8032 section 7.1 TEST 1 public key.
    assert d["public_key"] == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    signed = enc_fields("secagg-sig", 1, d["label"], bytes.fromhex(d["message"]))
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(d["public_key"])).verify(
        bytes.fromhex(d["signature"]), signed)
    sk = ed25519_from_private_bytes(bytes.fromhex(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    assert sk.sign(bytes.fromhex(d["message"]), label=d["label"]).hex() == d["signature"]
    VerifyKey(bytes.fromhex(d["public_key"])).verify(
        bytes.fromhex(d["signature"]), bytes.fromhex(d["message"]), label=d["label"])


def test_regenerating_vectors_is_byte_identical(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS / "make_vectors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "HERE", tmp_path)
    mod.main()
    for f in tmp_path.iterdir():
        assert f.read_bytes() == (VECTORS / f.name).read_bytes(), f.name
