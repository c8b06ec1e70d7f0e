"""The reference client (examples/reference_client.py), written from docs/protocol.md alone,
against the whole-round transcripts of the real client (tests/vectors/transcripts/*.json):
fed the messages a client was sent, drawing the randomness that client drew, it must send
exactly what that client sent, byte for byte. Then the refusals, a live round against the real
server, the stdin/stdout program, and the rule that it imports nothing from ``protocol``."""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
import math
import os
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from protocol.config import RoundConfig
from protocol.messages import Setup, ShareKeys, UnmaskRequest
from protocol.server import ServerRound
from protocol.wire import decode, encode
from secagg import SigningKey
from secagg.aead import AeadContext, decrypt
from secagg.aead import encrypt as aead_encrypt
from secagg.shamir import Share

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "examples" / "reference_client.py"
TRANSCRIPTS = sorted((ROOT / "tests" / "vectors" / "transcripts").glob("*.json"))
if os.environ.get("REFERENCE_TRANSCRIPTS"):  # another folder of transcripts, same format
    TRANSCRIPTS += sorted(Path(os.environ["REFERENCE_TRANSCRIPTS"]).glob("*.json"))

sys.path.insert(0, str(MODULE.parent))
import reference_client as ref  # noqa: E402


# -- transcripts ----------------------------------------------------------------------------
def load(path: Path) -> dict:
    return json.loads(path.read_text())


def recorded(draws: list) -> tuple:
    """A randomness callable that replays ``draws`` in order, checking purpose, kind and
    argument; and the list of what it has handed out so far."""
    used: list = []

    def source(purpose: str, kind: str, arg: int):
        i = len(used)
        assert i < len(draws), f"draw {i} ({purpose}, {kind}) beyond the recorded {len(draws)}"
        want_purpose, want_kind, want_arg, value = draws[i]
        assert (purpose, kind) == (want_purpose, want_kind), (
            f"draw {i}: the reference client drew ({purpose}, {kind}), the real client "
            f"({want_purpose}, {want_kind})")
        assert int(want_arg) == arg, f"draw {i} ({purpose}): argument {arg}, recorded {want_arg}"
        used.append(draws[i])
        return bytes.fromhex(value) if kind == "bytes" else int(value)

    return source, used


def make_client(doc: dict, u: int, randomness=None, used_sessions=None) -> ref.ReferenceClient:
    c = doc["clients"][str(u)]
    registry = doc.get("registry")
    return ref.ReferenceClient(
        u, doc["config"],
        identity=bytes.fromhex(c["identity"]) if c.get("identity") else None,
        registry={int(v): bytes.fromhex(k) for v, k in registry.items()} if registry else None,
        input=c["input"], used_sessions=set() if used_sessions is None else used_sessions,
        randomness=randomness)


def to_client(doc: dict, u: int) -> list[bytes]:
    """The messages addressed to client u that it processed: a client dropped at a stage is
    sent that stage's message but handles nothing from there on."""
    dropped_at = doc["clients"][str(u)].get("dropped_at")
    out = []
    for m in doc["messages"]:
        if m.get("to") != u:
            continue
        if m["stage"] == dropped_at:
            break
        out.append(bytes.fromhex(m["bytes"]))
    return out


def from_client(doc: dict, u: int) -> list[bytes]:
    return [bytes.fromhex(m["bytes"]) for m in doc["messages"] if m.get("from") == u]


def replay(doc: dict, u: int) -> tuple[list[bytes], list, str | None]:
    """Client u's messages as the reference client sends them, the draws it used, and its
    refusal (None if it accepted every message)."""
    source, used = recorded(doc["clients"][str(u)]["randomness"])
    client = make_client(doc, u, source)
    sent: list[bytes] = []
    for data in to_client(doc, u):
        try:
            sent += client.receive(data)
        except ref.Refused as exc:
            return sent, used, exc.reason
    return sent, used, None


CASES = [pytest.param(path, int(u), id=f"{path.stem}-client{u}")
         for path in TRANSCRIPTS for u in load(path)["clients"]]


def test_the_transcripts_are_there():
    assert TRANSCRIPTS, "no transcripts in tests/vectors/transcripts"


@pytest.mark.parametrize(("path", "u"), CASES)
def test_the_reference_client_sends_what_the_real_client_sent(path, u):
    doc = load(path)
    assert doc["format"] == 1
    sent, used, refused = replay(doc, u)
    expected = from_client(doc, u)
    for i, (got, want) in enumerate(zip(sent, expected, strict=False)):
        assert got.hex() == want.hex(), f"message {i} of client {u} differs"
    assert len(sent) == len(expected), (
        f"client {u}: the reference client sent {len(sent)} messages, the real one "
        f"{len(expected)} (refused: {refused})")
    draws = doc["clients"][str(u)]["randomness"]
    assert len(used) == len(draws), f"client {u} drew {len(used)} values of {len(draws)}"


# -- refusals ---------------------------------------------------------------------------------
def first_client(doc: dict, *, needs: int) -> int:
    """A client that received at least ``needs`` messages and accepted them all."""
    for u in sorted(int(v) for v in doc["clients"]):
        if len(to_client(doc, u)) >= needs and replay(doc, u)[2] is None:
            return u
    pytest.skip(f"no client received {needs} messages")


def fed(doc: dict, u: int, count: int) -> ref.ReferenceClient:
    """Client u after the first ``count`` messages addressed to it."""
    source, _ = recorded(doc["clients"][str(u)]["randomness"])
    client = make_client(doc, u, source)
    for data in to_client(doc, u)[:count]:
        client.receive(data)
    return client


def flipped(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_every_byte_flipped_in_a_setup_is_refused(path):
    doc = load(path)
    u = first_client(doc, needs=1)
    setup = to_client(doc, u)[0]
    for i in range(len(setup)):
        client = make_client(doc, u, recorded(doc["clients"][str(u)]["randomness"])[0])
        with pytest.raises(ref.Refused):
            client.receive(flipped(setup, i))
        assert client.state == ref.ERROR


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_every_byte_flipped_in_a_shares_delivery_is_refused(path):
    doc = load(path)
    u = first_client(doc, needs=3)
    delivery = to_client(doc, u)[2]
    assert delivery[1] == ref.T_SHARES
    for i in range(len(delivery)):
        client = fed(doc, u, 2)
        with pytest.raises(ref.Refused):
            client.receive(flipped(delivery, i))


@pytest.mark.parametrize("path", [p for p in TRANSCRIPTS if load(p)["config"]["mode"]
                                  == "malicious"], ids=lambda p: p.stem)
def test_every_byte_flipped_in_a_malicious_key_broadcast_is_refused(path):
    doc = load(path)
    u = first_client(doc, needs=2)
    broadcast = to_client(doc, u)[1]
    for i in range(len(broadcast)):
        client = fed(doc, u, 1)
        with pytest.raises(ref.Refused):
            client.receive(flipped(broadcast, i))


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_a_flipped_last_byte_of_a_later_message_is_refused(path):
    """The last byte of a KeysBroadcast (the proofs count, or a proof), a SharesDelivery (an
    AEAD tag) or an UnmaskRequest (the signatures count, or a signature), flipped: refused."""
    doc = load(path)
    u = first_client(doc, needs=3)
    msgs = to_client(doc, u)
    checked = 0
    for at in range(1, len(msgs)):
        if msgs[at][1] not in (ref.T_KEYS, ref.T_SHARES, ref.T_UNMASK_REQ):
            continue
        client = fed(doc, u, at)
        with pytest.raises(ref.Refused):
            client.receive(flipped(msgs[at], len(msgs[at]) - 1))
        checked += 1
    assert checked >= 2


def test_a_message_after_a_refusal_is_refused():
    doc = load(TRANSCRIPTS[0])
    u = first_client(doc, needs=2)
    client = make_client(doc, u, recorded(doc["clients"][str(u)]["randomness"])[0])
    with pytest.raises(ref.Refused):
        client.receive(flipped(to_client(doc, u)[0], 2))
    with pytest.raises(ref.Refused, match="in ERROR"):
        client.receive(to_client(doc, u)[0])


def malicious_config(**kw) -> dict:
    return {"bits": 16, "mode": "malicious", "neighbours": 4, "threshold": 3, **kw}


def setup_for(config: dict, n: int = 8, dim: int = 4) -> tuple[Setup, bytes, dict]:
    """Client 0's Setup from the real server for ``config``, client 0's identity and the
    registry (id -> Ed25519 public key) of the cohort."""
    keys = {u: os.urandom(32) for u in range(n)}
    registry = {u: SigningKey.from_private_bytes(k).verify_key for u, k in keys.items()}
    server = ServerRound(RoundConfig(**config), range(n), dim, registry=registry)
    setup = server.start()[0]
    assert isinstance(setup, Setup) and setup.recipient == 0
    return setup, keys[0], {u: k.raw for u, k in registry.items()}


def client_zero(config: dict, identity: bytes, registry: dict, used=None) -> ref.ReferenceClient:
    return ref.ReferenceClient(0, config, identity=identity, registry=registry, input=[0] * 4,
                               used_sessions=set() if used is None else used)


def test_a_setup_that_downgrades_the_mode_is_refused():
    setup, identity, registry = setup_for(malicious_config())
    downgraded = encode(replace(setup, mode="semi-honest"))
    with pytest.raises(ref.Refused, match="differ"):
        client_zero(malicious_config(), identity, registry).receive(downgraded)
    # the honest Setup is accepted, and answered with a signed AdvertiseKeys
    (reply,) = client_zero(malicious_config(), identity, registry).receive(encode(setup))
    assert reply[1] == ref.T_ADVERTISE and len(reply) == 206


@pytest.mark.parametrize("change", [{"threshold": 2}, {"bits": 8}, {"min_survivors": 3},
                                    {"neighbours": 6}])
def test_a_setup_that_weakens_the_parameters_is_refused(change):
    setup, identity, registry = setup_for(malicious_config())
    with pytest.raises(ref.Refused, match="differ"):
        client_zero(malicious_config(), identity, registry).receive(
            encode(replace(setup, **change)))


def test_a_replayed_session_is_refused():
    setup, identity, registry = setup_for(malicious_config())
    used: set[bytes] = set()
    client_zero(malicious_config(), identity, registry, used).receive(encode(setup))
    assert used == {setup.session_id}
    with pytest.raises(ref.Refused, match="replayed"):
        client_zero(malicious_config(), identity, registry, used).receive(encode(setup))


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_a_neighbour_listed_alive_and_dead_is_refused(path):
    doc = load(path)
    for u in sorted(int(v) for v in doc["clients"]):
        msgs = to_client(doc, u)
        if msgs and msgs[-1][1] == ref.T_UNMASK_REQ and replay(doc, u)[2] is None:
            break
    else:
        pytest.skip("no client received an unmasking request")
    request = decode(msgs[-1])
    assert isinstance(request, UnmaskRequest) and request.alive
    both = replace(request, dead=tuple(sorted(set(request.dead) | {request.alive[0]})))
    client = fed(doc, u, len(msgs) - 1)
    with pytest.raises(ref.Refused, match="both alive and dead"):
        client.receive(encode(both))
    assert client.state == ref.ERROR


def test_both_shares_are_decoded_before_either_is_checked():
    """docs/protocol.md 15.4: step 4 (both shares decode strictly) comes before step 5 (each
    has x = u + 1 and threshold t). A plaintext whose first share is well formed but addressed
    to another x, and whose second share does not decode, is refused for the decoding."""
    n, dim = 6, 2
    config = {"bits": 16, "mode": "semi-honest", "neighbours": 4, "threshold": 3}
    server = ServerRound(RoundConfig(**config), range(n), dim)
    clients = {u: ref.ReferenceClient(u, config, identity=None, registry=None, input=[u] * dim,
                                      used_sessions=set()) for u in range(n)}
    out, tampered = server.start(), False
    while out and server.stage != "masked_input":
        for m in out:
            for reply in clients[m.recipient].receive(encode(m)):
                msg = decode(reply)
                if isinstance(msg, ShareKeys) and not tampered and 0 in dict(msg.ciphertexts):
                    msg, tampered = forge_shares_to_zero(clients[msg.sender], msg), True
                server.receive(msg)
        out = server.close_stage()
    assert tampered
    (delivery,) = [m for m in out if m.recipient == 0]
    with pytest.raises(ref.Refused) as refusal:
        clients[0].receive(encode(delivery))
    assert "unknown share version" in refusal.value.reason, refusal.value.reason
    assert clients[0].state == ref.ERROR


def forge_shares_to_zero(sender: ref.ReferenceClient, msg: ShareKeys) -> ShareKeys:
    """``msg`` with the ciphertext to client 0 re-encrypted over a forged plaintext: the first
    share moved to x = 5 (a valid encoding), the second of an unknown share version."""
    s = sender.setup
    ctx = AeadContext(s["session_id"], s["round"], sender.id, 0)
    cts = dict(msg.ciphertexts)
    plain = bytearray(decrypt(sender.enc_keys[0], cts[0], ctx))
    assert len(plain) == 2 * ref.SHARE_BYTES and Share.from_bytes(bytes(plain[:91])).x == 1
    plain[21:25] = struct.pack(">I", 5)  # the x of the first share (version, dealing id, t, x)
    plain[ref.SHARE_BYTES] = 0xEE  # the version byte of the second share
    cts[0] = aead_encrypt(sender.enc_keys[0], bytes(plain), ctx)
    return replace(msg, ciphertexts=tuple(sorted(cts.items())))


# -- a live round: reference clients with the real server --------------------------------------
@pytest.mark.parametrize("config", [
    {"bits": 16, "mode": "semi-honest", "neighbours": 4, "threshold": 3},
    {"bits": 64, "mode": "semi-honest"},
    malicious_config(bits=24),
], ids=["semi-honest", "semi-honest-complete", "malicious"])
def test_a_round_of_reference_clients_with_the_real_server_sums_the_inputs(config):
    n, dim = 8, 6
    rng = np.random.default_rng(5)
    inputs = {u: [int(v) for v in rng.integers(0, 1 << config["bits"], dim, dtype=np.uint64)]
              for u in range(n)}
    keys = registry = None
    if config["mode"] == "malicious":
        keys = {u: os.urandom(32) for u in range(n)}
        registry = {u: SigningKey.from_private_bytes(k).verify_key for u, k in keys.items()}
    server = ServerRound(RoundConfig(**config), range(n), dim, registry=registry)
    clients = {u: ref.ReferenceClient(u, config, identity=keys[u] if keys else None,
                                      registry={v: k.raw for v, k in registry.items()}
                                      if registry else None,
                                      input=inputs[u], used_sessions=set()) for u in range(n)}
    gone = {5} if config["mode"] == "semi-honest" else set()
    out = server.start()
    while out:
        for m in out:
            if m.recipient in gone:
                continue
            for reply in clients[m.recipient].receive(encode(m)):
                server.receive(decode(reply))
        if server.stage == "masked_input":
            gone = set()
        out = server.close_stage()
    mod = 1 << config["bits"]
    want = [sum(inputs[u][i] for u in server.u3) % mod for i in range(dim)]
    assert [int(v) for v in server.aggregate] == want


# -- the program over stdin/stdout --------------------------------------------------------------
def frames(*items: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(x)) + x for x in items)


def unframe(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        out.append(data[pos + 4: pos + 4 + n])
        pos += 4 + n
    return out


def test_the_program_speaks_the_conformance_framing(tmp_path):
    """A whole round's messages to one client through the program; it answers each with its
    messages and an empty status, and refuses a replay of the session in a second run (the
    used-session store in state_dir)."""
    n, dim = 6, 3
    config = {"bits": 16, "mode": "semi-honest", "threshold": 2, "neighbours": 4,
              "min_survivors": None, "dropout_rate": 0.1, "corrupt_rate": 0.05,
              "complete_graph": False}
    server = ServerRound(RoundConfig(**config), range(n), dim)
    peers = {u: ref.ReferenceClient(u, config, identity=None, registry=None,
                                    input=[u] * dim, used_sessions=set()) for u in range(1, n)}
    start = json.dumps({"conformance": 1, "client_id": 0, "config": config, "identity": None,
                        "registry": None, "input": [7] * dim,
                        "state_dir": str(tmp_path)}).encode()
    proc = subprocess.Popen([sys.executable, str(MODULE)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    proc.stdin.write(frames(start))
    proc.stdin.flush()

    def answer() -> list[bytes]:
        got = []
        while True:
            (size,) = struct.unpack(">I", proc.stdout.read(4))
            frame = proc.stdout.read(size)
            if not frame:
                return got
            assert frame[0] != 0, frame[1:].decode()
            got.append(frame)

    assert answer() == []
    first_setup = None
    out = server.start()
    while out:
        for m in out:
            if m.recipient == 0:
                data = encode(m)
                first_setup = first_setup or data
                proc.stdin.write(frames(data))
                proc.stdin.flush()
                replies = answer()
            else:
                replies = peers[m.recipient].receive(encode(m))
            for r in replies:
                server.receive(decode(r))
        out = server.close_stage()
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    assert [int(v) for v in server.aggregate] == [(7 + sum(range(1, n))) % (1 << 16)] * dim
    again = subprocess.run([sys.executable, str(MODULE)], input=frames(start, first_setup),
                           capture_output=True, cwd=ROOT, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    status = unframe(again.stdout)
    assert status[0] == b""
    assert status[1][:1] == b"\x00" and b"replayed" in status[1]


def _start_frame(tmp_path: Path, **change) -> bytes:
    doc = {"conformance": 1, "client_id": 0, "config": {"bits": 16}, "identity": None,
           "registry": None, "input": [1, 2], "state_dir": str(tmp_path), **change}
    return json.dumps(doc).encode()


UNUSABLE_STARTS = {
    "a JSON array": lambda d: b"[1, 2]",
    "a JSON string": lambda d: b'"start"',
    "JSON null": lambda d: b"null",
    "a JSON number": lambda d: b"7",
    "JSON nested too deeply to parse": lambda d: b"[" * 100_000 + b"]" * 100_000,
    "not UTF-8": lambda d: b"\xff",
    "a config key that is not a RoundConfig field": lambda d: _start_frame(
        d, config={"bits": 16, "frobnicate": 1}),
    "a registry that is not an object": lambda d: _start_frame(d, registry=[1]),
    "an identity that is not a string": lambda d: _start_frame(d, identity=5),
    "a state_dir that is not a string": lambda d: _start_frame(d, state_dir=None),
    "a session store that is a directory": lambda d: _start_frame(d, state_dir=str(d / "s")),
    "no input": lambda d: b'{"conformance": 1, "client_id": 0, "config": {}}',
    "another version": lambda d: _start_frame(d, conformance=2),
}


@pytest.mark.parametrize("case", UNUSABLE_STARTS)
def test_the_program_refuses_an_unusable_start_frame_with_exit_status_1(tmp_path, case):
    (tmp_path / "s" / "sessions").mkdir(parents=True)
    proc = subprocess.run([sys.executable, str(MODULE)], capture_output=True, cwd=ROOT,
                          input=frames(UNUSABLE_STARTS[case](tmp_path), b"\x01\x01"),
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60, check=False)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")
    assert proc.returncode == 1
    (status,) = unframe(proc.stdout)  # the refusal, and no answer to the later frame
    assert status[:1] == b"\x00" and status[1:].decode().startswith("bad start frame: ")


# -- what the module may import ---------------------------------------------------------------
def test_the_reference_client_imports_nothing_from_protocol():
    names = set()
    for node in ast.walk(ast.parse(MODULE.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import"
            names.add(node.module or "")
    roots = {name.split(".")[0] for name in names}
    assert "protocol" not in roots
    assert "numpy" not in roots
    assert roots <= {"secagg"} | set(sys.stdlib_module_names), sorted(roots)


# -- the byte constructions of docs/protocol.md, written out from its text --------------------
VECTORS = ROOT / "tests" / "vectors"


def spec_canonical(*fields) -> bytes:
    """docs/protocol.md section 5.1."""
    out = b"\x01" + struct.pack(">H", len(fields))
    for f in fields:
        if isinstance(f, bytes):
            out += b"\x01" + struct.pack(">I", len(f)) + f
        elif isinstance(f, str):
            out += b"\x02" + struct.pack(">I", len(f.encode())) + f.encode()
        else:
            out += b"\x03" + struct.pack(">Q", f)
    return out


def spec_hkdf(salt: bytes, ikm: bytes, info: bytes) -> bytes:
    """Section 5.2."""
    prk = hmac.digest(salt, ikm, hashlib.sha256)
    return hmac.digest(prk, info + b"\x01", hashlib.sha256)


def test_the_specified_canonical_encoding_and_kdf_reproduce_the_vectors():
    from secagg.hazmat import x25519_from_private_bytes
    from secagg.keyagreement import KdfContext

    assert spec_canonical("ab", 1, b"\x00").hex() == (
        "01000302000000026162030000000000000001010000000100")
    for case in json.loads((VECTORS / "kdf.json").read_text())["cases"]:
        sid, u, v = bytes.fromhex(case["session_id"]), case["own_id"], case["peer_id"]
        info = spec_canonical("secagg-kdf", 1, sid, case["round"], min(u, v), max(u, v),
                              case["purpose"])
        assert info == KdfContext(sid, case["round"], case["purpose"]).info(u, v)
        own = x25519_from_private_bytes(bytes.fromhex(case["alice_private"]))
        z = own._private.exchange(X25519PublicKey.from_public_bytes(
            bytes.fromhex(case["bob_public"])))
        assert spec_hkdf(b"secagg/kdf/v1", z, info).hex() == case["secret"]
    aead = json.loads((VECTORS / "aead.json").read_text())
    assert spec_canonical("secagg-aead", 1, bytes.fromhex(aead["session_id"]), aead["round"],
                          aead["sender"], aead["receiver"]).hex() == aead["associated_data"]


def test_the_specified_prg_reproduces_the_vectors():
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    for case in json.loads((VECTORS / "prg.json").read_text())["cases"]:
        okm = spec_hkdf(b"secagg/prg/v1", bytes.fromhex(case["seed"]),
                        spec_canonical("secagg-prg", case["algorithm"], case["purpose"]))
        width = 4 if case["bits"] <= 32 else 8
        if case["algorithm"] == "aes128-ctr":
            key, cipher = okm[:16], Cipher(algorithms.AES(okm[:16]), modes.CTR(bytes(16)))
        else:
            key, cipher = okm, Cipher(algorithms.ChaCha20(okm, bytes(16)), None)
        stream = cipher.encryptor().update(bytes(8 * width))
        assert key.hex() == case["key"]
        assert [int.from_bytes(stream[i * width:(i + 1) * width], "little")
                & ((1 << case["bits"]) - 1) for i in range(8)] == case["values"]


def test_the_specified_share_encoding_reproduces_the_vectors():
    vec = json.loads((VECTORS / "shamir.json").read_text())
    primes = [(1 << 48) - c for c in (59, 65, 89, 93, 147, 165, 189, 233, 243, 257, 317)]
    modulus = math.prod(primes)
    coefficients = [int.from_bytes(b"\x01" + bytes.fromhex(vec["secret"]), "big")] + [
        int(c) for c in vec["coefficients"]]
    for share in vec["shares"]:
        x = share["x"]
        y = sum(c * x ** i for i, c in enumerate(coefficients)) % modulus
        encoded = (bytes([2]) + bytes.fromhex(vec["dealing_id"])
                   + struct.pack(">II", vec["threshold"], x)
                   + b"".join((y % p).to_bytes(6, "big") for p in primes))
        assert encoded.hex() == share["encoded"]


def spec_verify_inclusion(root: bytes, data: bytes, index: int, count: int,
                          proof: bytes) -> bool:
    """Section 13.4."""
    if index >= count:
        return False
    i, c, levels = index, count, 0
    while c > 1:
        levels += (i ^ 1) < c
        i, c = i // 2, (c + 1) // 2
    if len(proof) != 32 * levels:
        return False
    node, i, c, pos = hashlib.sha256(b"\x00" + data).digest(), index, count, 0
    while c > 1:
        if (i ^ 1) < c:
            sibling, pos = proof[pos:pos + 32], pos + 32
            pair = node + sibling if i % 2 == 0 else sibling + node
            node = hashlib.sha256(b"\x01" + pair).digest()
        i, c = i // 2, (c + 1) // 2
    return hashlib.sha256(b"\x02" + struct.pack(">I", count) + node).digest() == root


@pytest.mark.parametrize("count", [1, 2, 3, 5, 6, 7, 8, 13, 33])
def test_the_specified_inclusion_proofs_verify_the_key_commitment_tree(count):
    from secagg.merkle import MerkleTree

    leaves = [bytes([j]) * 5 for j in range(count)]
    tree = MerkleTree(leaves)
    for j, leaf in enumerate(leaves):
        assert spec_verify_inclusion(tree.root, leaf, j, count, tree.proof(j))
        assert not spec_verify_inclusion(tree.root, leaf + b"!", j, count, tree.proof(j))
