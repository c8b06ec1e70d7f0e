"""The labelled randomness source (secagg.randomness) and its one replacement point
(secagg.hazmat.fixed_randomness)."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest

from secagg import AeadContext, KeyPair, combine, decode, encrypt, split
from secagg import randomness as rnd
from secagg.hazmat import (
    aead_encrypt_with_nonce,
    fixed_randomness,
    shamir_split_with_coefficients,
    x25519_from_private_bytes,
)
from secagg.shamir import DEALING_ID_BYTES, MODULUS

ROOT = Path(__file__).resolve().parents[2]
CTX = AeadContext(bytes(range(32)), 2, 3, 7)


class Recorder:
    """A source that answers every draw from a counter and records (purpose, kind, arg)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def __call__(self, purpose: str, kind: str, arg: int):
        self.calls.append((purpose, kind, arg))
        i = len(self.calls)
        if kind == "bytes":
            return bytes((i + j) % 256 for j in range(arg))
        return (i * 0x9E3779B97F4A7C15) % arg


def test_default_source_draws_fresh_values():
    assert rnd._installed == 0
    a, b = rnd.random_bytes(32, "nonce"), rnd.random_bytes(32, "nonce")
    assert len(a) == len(b) == 32 and a != b
    draws = {rnd.random_below(MODULUS, "coefficient") for _ in range(8)}
    assert len(draws) == 8 and all(0 <= v < MODULUS for v in draws)
    assert KeyPair.generate().public_bytes != KeyPair.generate().public_bytes


def test_the_source_replaces_every_dealer_draw():
    src = Recorder()
    with fixed_randomness(src):
        c = KeyPair.generate(purpose="c-key")
        shares = split(b"\x07" * 32, threshold=3, xs=[2, 5, 9, 11])
        frame = encrypt(bytes(range(100, 132)), b"payload", CTX)
    assert [p for p, _, _ in src.calls] == ["c-key", "dealing-id", "coefficient",
                                            "coefficient", "nonce"]
    replay = Recorder()
    key = replay("c-key", "bytes", 32)
    expected = x25519_from_private_bytes(key)
    assert (c.public_bytes, c.private_bytes()) == (expected.public_bytes,
                                                   expected.private_bytes())
    dealing = replay("dealing-id", "bytes", DEALING_ID_BYTES)
    coeffs = [replay("coefficient", "below", MODULUS) for _ in range(2)]
    assert shares == shamir_split_with_coefficients(b"\x07" * 32, coefficients=coeffs,
                                                    xs=[2, 5, 9, 11], dealing_id=dealing)
    nonce = replay("nonce", "bytes", 12)
    assert frame == aead_encrypt_with_nonce(bytes(range(100, 132)), b"payload", CTX,
                                            nonce=nonce)


def test_the_same_source_gives_the_same_values():
    def run() -> tuple[bytes, list, bytes]:
        with fixed_randomness(Recorder()):
            return (KeyPair.generate(purpose="s-key").public_bytes,
                    split(b"abc", threshold=2, n=3), rnd.random_bytes(32, "self-mask-seed"))
    assert run() == run()


def test_the_source_is_removed_after_the_block():
    src = Recorder()
    with fixed_randomness(src):
        rnd.random_bytes(16, "nonce")
    assert rnd._installed == 0
    rnd.random_bytes(16, "nonce")
    assert len(src.calls) == 1


def test_the_source_is_removed_after_an_exception():
    src = Recorder()
    with pytest.raises(KeyError), fixed_randomness(src):
        raise KeyError("inside")
    assert rnd._installed == 0 and not getattr(rnd._local, "sources", [])
    rnd.random_bytes(16, "nonce")
    assert src.calls == []


def test_blocks_nest_and_the_innermost_wins():
    outer, inner = Recorder(), Recorder()
    with fixed_randomness(outer):
        rnd.random_bytes(4, "nonce")
        with fixed_randomness(inner):
            rnd.random_bytes(4, "nonce")
        rnd.random_bytes(4, "nonce")
    assert len(outer.calls) == 2 and len(inner.calls) == 1 and rnd._installed == 0


def test_other_threads_keep_the_os_source():
    src, seen = Recorder(), []
    with fixed_randomness(src):
        t = threading.Thread(target=lambda: seen.append(rnd.random_bytes(32, "nonce")))
        t.start()
        t.join()
    assert src.calls == [] and len(seen[0]) == 32


@pytest.mark.parametrize("value", [b"short", b"x" * 13, "x" * 12, 12, None, [0] * 12])
def test_bad_bytes_are_refused(value):
    with fixed_randomness(lambda p, k, a: value), pytest.raises(ValueError, match="nonce"):
        encrypt(bytes(32), b"m", CTX)


@pytest.mark.parametrize("value", [-1, MODULUS, MODULUS + 5, True, 1.0, b"\x01", None])
def test_bad_integers_are_refused(value):
    def source(purpose, kind, arg):
        return bytes(arg) if kind == "bytes" else value

    with fixed_randomness(source), pytest.raises(ValueError, match="coefficient"):
        split(b"secret", threshold=2, n=3)


def test_a_short_private_key_is_refused():
    with fixed_randomness(lambda p, k, a: bytes(31)), pytest.raises(ValueError, match="c-key"):
        KeyPair.generate(purpose="c-key")


def test_an_unknown_purpose_is_refused():
    with fixed_randomness(Recorder()), pytest.raises(ValueError, match="purpose"):
        rnd.random_bytes(8, "session-id")


def test_a_source_must_be_callable():
    with pytest.raises(TypeError), fixed_randomness(b"not a function"):
        pass
    assert rnd._installed == 0


def test_sources_are_removed_in_order():
    a, b = Recorder(), Recorder()
    rnd._install(a)
    rnd._install(b)
    with pytest.raises(RuntimeError):
        rnd._uninstall(a)
    rnd._uninstall(b)
    rnd._uninstall(a)
    assert rnd._installed == 0


def test_verification_randomness_is_not_the_dealers():
    shares = split(b"\x42" * 32, threshold=3, n=6)

    def refuse(purpose, kind, arg):
        raise AssertionError(f"the verifier drew {purpose}")

    with fixed_randomness(refuse):
        assert combine(shares) == b"\x42" * 32
        assert decode(shares, threshold=3).secret == b"\x42" * 32


# -- where the source may be replaced and which purposes the code names ----------------------
def _modules():
    for pkg in ("secagg", "dp", "protocol"):
        yield from sorted((ROOT / pkg).rglob("*.py"))


def test_only_hazmat_replaces_the_source():
    for path in _modules():
        if path.relative_to(ROOT).as_posix() in ("secagg/hazmat.py", "secagg/randomness.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
            if isinstance(node, ast.alias):
                name = node.name
            assert name not in ("_install", "_uninstall", "_installed", "_local"), path


def test_every_draw_names_a_known_purpose():
    named = set()
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = getattr(node.func, "id", getattr(node.func, "attr", None))
            if func in ("random_bytes", "random_below"):
                assert len(node.args) == 2, path
                purpose = node.args[1]
                if isinstance(purpose, ast.Name) and purpose.id == "purpose":
                    continue  # KeyPair.generate forwards its caller's purpose
                assert isinstance(purpose, ast.Constant), path
                named.add(purpose.value)
            elif func == "generate" and any(k.arg == "purpose" for k in node.keywords):
                kw = next(k for k in node.keywords if k.arg == "purpose")
                named.add(kw.value.value)
    assert named <= rnd.PURPOSES
    assert named >= {"c-key", "s-key", "self-mask-seed", "dealing-id", "coefficient", "nonce"}
