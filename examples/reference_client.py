"""A minimal reference client of the secure-aggregation round, written from docs/protocol.md.

One module, the client side of both modes (semi-honest and malicious; Bonawitz et al. CCS 2017
section 4, with the SecAgg+ graph of Bell et al. CCS 2020 section 3), with every check of the
specification in the order it gives. It uses the ``secagg`` package's primitives and the
standard library only: nothing from ``protocol`` (the wire codec, the configuration resolution,
the transcript payloads and the graph ordering are written here again from the specification),
and no numpy of its own.

    client = ReferenceClient(3, {"bits": 16, "mode": "semi-honest"}, identity=None,
                             registry=None, input=[1, 2, 3], used_sessions=set())
    replies = client.receive(setup_bytes)  # wire bytes in, wire bytes out; Refused on refusal

``randomness``, when given, is a callable ``(purpose, kind, arg) -> bytes | int`` that supplies
every draw instead of the operating system (kind ``"bytes"`` with arg = length, ``"below"``
with arg = modulus), in the order of docs/protocol.md section 14.

Run as a program (``python examples/reference_client.py``) it speaks the stdin/stdout framing of
docs/protocol.md section 18 ("Conformance over stdin/stdout").
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import struct
import sys
from bisect import bisect_left
from collections.abc import Callable
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

from secagg.aead import AeadContext, decrypt
from secagg.encoding import canonical
from secagg.errors import SecAggError
from secagg.hazmat import (
    aead_encrypt_with_nonce,
    ed25519_from_private_bytes,
    shamir_split_with_coefficients,
    x25519_from_private_bytes,
)
from secagg.identity import VerifyKey
from secagg.keyagreement import KdfContext, agree
from secagg.merkle import verify_inclusion
from secagg.params import analyse_parameters, find_parameters
from secagg.prg import expand
from secagg.ring import Ring
from secagg.shamir import MODULUS, Share

__all__ = ["Refused", "ReferenceClient", "main"]

# -- constants (docs/protocol.md sections 5 and 6) ----------------------------------------------
WIRE_VERSION = 2
MODES = ("semi-honest", "malicious")
MAX_CLIENT_ID = (1 << 32) - 2
MAX_COHORT = 100_000
MAX_VECTOR_BYTES = 1 << 30
MAX_MESSAGE_BYTES = MAX_VECTOR_BYTES + 4096
MAX_CIPHERTEXT = 512
MAX_PROOF_BYTES = 1024
MAX_SHARE_FIELD = 128
SHARE_BYTES = 91
T_SETUP, T_ADVERTISE, T_KEYS, T_SHARE_KEYS, T_SHARES = 1, 2, 3, 4, 5
T_MASKED, T_CONSISTENCY_REQ, T_CONSISTENCY_SIG, T_UNMASK_REQ, T_UNMASK_RESP = 6, 7, 8, 9, 10
SERVER_TYPES = {T_SETUP: "Setup", T_KEYS: "KeysBroadcast", T_SHARES: "SharesDelivery",
                T_CONSISTENCY_REQ: "ConsistencyRequest", T_UNMASK_REQ: "UnmaskRequest"}
CLIENT_TYPES = {T_ADVERTISE: "AdvertiseKeys", T_SHARE_KEYS: "ShareKeys",
                T_MASKED: "MaskedInput", T_CONSISTENCY_SIG: "ConsistencySignature",
                T_UNMASK_RESP: "UnmaskResponse"}
ADVERTISE_LABEL, CONSISTENCY_LABEL = "advertise-keys", "consistency-check"
_U32 = struct.Struct(">I")

# client states (docs/protocol.md section 4)
IDLE, AWAIT_KEYS, AWAIT_SHARES, MASKED, SIGNED, DONE, ERROR = (
    "idle", "await-keys", "await-shares", "masked", "signed", "done", "error")
#: (mode or "*", state, message type) -> next state
TRANSITIONS = {
    ("*", IDLE, T_SETUP): AWAIT_KEYS,
    ("*", AWAIT_KEYS, T_KEYS): AWAIT_SHARES,
    ("*", AWAIT_SHARES, T_SHARES): MASKED,
    ("semi-honest", MASKED, T_UNMASK_REQ): DONE,
    ("malicious", MASKED, T_CONSISTENCY_REQ): SIGNED,
    ("malicious", SIGNED, T_UNMASK_REQ): DONE,
}

Randomness = Callable[[str, str, int], "bytes | int"]


class Refused(Exception):
    """The client refuses a message; it takes no further part in the round."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- the wire (docs/protocol.md section 6) ------------------------------------------------------
class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise Refused("wire: truncated message")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def count(self, min_entry: int) -> int:
        n = self.u32()
        if n > MAX_COHORT or n * min_entry > len(self.data) - self.pos:
            raise Refused("wire: list count does not fit the message")
        return n

    def var(self, max_len: int) -> bytes:
        n = self.u32()
        if n > max_len:
            raise Refused(f"wire: field of {n} bytes exceeds {max_len}")
        return self.take(n)

    def ids(self) -> list[int]:
        n = self.count(4)
        return list(struct.unpack(f">{n}I", self.take(4 * n)))


def _check_ids(ids: list[int], name: str, *, allow_empty: bool = True) -> None:
    if any(v > MAX_CLIENT_ID for v in ids):
        raise Refused(f"wire: {name}: invalid client id")
    if any(a >= b for a, b in zip(ids, ids[1:], strict=False)):
        raise Refused(f"wire: {name}: ids must be sorted and distinct")
    if not allow_empty and not ids:
        raise Refused(f"wire: {name}: must not be empty")


def _check_sig(sig: bytes) -> None:
    if len(sig) not in (0, 64):
        raise Refused("wire: signature: must be empty or 64 bytes")


def decode(data: bytes) -> tuple[int, dict]:
    """(message type, fields) of one server message, strictly (docs/protocol.md 6.3-6.5).
    A client message type is returned with empty fields (its state refuses it)."""
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_MESSAGE_BYTES:
        raise Refused("wire: message exceeds the size bound")
    r = _Reader(bytes(data))
    version, mtype = r.u8(), r.u8()
    if version != WIRE_VERSION:
        raise Refused(f"wire: unknown wire version {version}")
    if mtype in CLIENT_TYPES:
        return mtype, {}
    if mtype not in SERVER_TYPES:
        raise Refused(f"wire: unknown message type {mtype}")
    m = {"session_id": r.take(32), "round": r.u32(), "recipient": r.u32()}
    if mtype == T_SETUP:
        m["cohort"] = r.ids()
        m["neighbours"], m["threshold"], m["dim"] = r.u32(), r.u32(), r.u32()
        m["bits"] = r.u8()
        mode = r.u8()
        if mode >= len(MODES):
            raise Refused("wire: unknown mode")
        m["mode"] = MODES[mode]
        m["min_survivors"], m["graph_seed"] = r.u32(), r.take(32)
    elif mtype == T_KEYS:
        m["keys"] = [(r.u32(), r.take(32), r.take(32), r.take(32), r.var(64))
                     for _ in range(r.count(104))]
        m["key_count"], m["key_root"] = r.u32(), r.var(32)
        m["proofs"] = [(r.u32(), r.u32(), r.var(MAX_PROOF_BYTES)) for _ in range(r.count(12))]
    elif mtype == T_SHARES:
        m["ciphertexts"] = [(r.u32(), r.var(MAX_CIPHERTEXT)) for _ in range(r.count(8))]
    elif mtype == T_CONSISTENCY_REQ:
        m["survivors"] = r.ids()
    else:  # T_UNMASK_REQ
        m["alive"], m["dead"] = r.ids(), r.ids()
        m["signatures"] = [(r.u32(), r.take(64)) for _ in range(r.count(68))]
    if r.pos != len(r.data):
        raise Refused(f"wire: {len(r.data) - r.pos} trailing bytes")
    _validate(mtype, m)
    return mtype, m


def _validate(mtype: int, m: dict) -> None:
    """The value rules of docs/protocol.md section 6.5."""
    if mtype == T_SETUP:
        _check_ids(m["cohort"], "cohort", allow_empty=False)
        n = len(m["cohort"])
        if n < 3:
            raise Refused("wire: cohort: at least 3 clients")
        k = m["neighbours"]
        if k < 2 or k > n - 1 or (k < n - 1 and k % 2):
            raise Refused("wire: neighbours: must be even and below n - 1, or n - 1")
        if not 1 <= m["threshold"] <= k:
            raise Refused("wire: threshold: outside [1, neighbours]")
        width = 4 if m["bits"] <= 32 else 8
        if m["dim"] < 1 or not 8 <= m["bits"] <= 64 or m["dim"] * width > MAX_VECTOR_BYTES:
            raise Refused("wire: bits / dim: outside the supported range")
        if not 1 <= m["min_survivors"] <= n:
            raise Refused("wire: min_survivors: outside [1, n]")
    elif mtype == T_KEYS:
        _check_ids([e[0] for e in m["keys"]], "keys")
        for e in m["keys"]:
            _check_sig(e[4])
        _check_ids([p[0] for p in m["proofs"]], "proofs")
        if not m["key_root"]:
            if m["key_count"] or m["proofs"]:
                raise Refused("wire: key commitment: a count or proofs without a root")
            return
        if len(m["key_root"]) != 32:
            raise Refused("wire: key_root: expected 32 bytes")
        if [p[0] for p in m["proofs"]] != [e[0] for e in m["keys"]]:
            raise Refused("wire: proofs: one per key entry, in the same order")
        indices = [p[1] for p in m["proofs"]]
        if any(a >= b for a, b in zip(indices, indices[1:], strict=False)) or (
                indices and indices[-1] >= m["key_count"]):
            raise Refused("wire: proofs: leaf indices must increase and lie below key_count")
        if any(len(p[2]) % 32 for p in m["proofs"]):
            raise Refused("wire: proof: a whole number of 32-byte hashes")
    elif mtype == T_SHARES:
        _check_ids([c[0] for c in m["ciphertexts"]], "ciphertexts")
    elif mtype == T_CONSISTENCY_REQ:
        _check_ids(m["survivors"], "survivors")
    elif mtype == T_UNMASK_REQ:
        _check_ids(m["alive"], "alive")
        _check_ids(m["dead"], "dead")
        _check_ids([s[0] for s in m["signatures"]], "signatures")


def pack_vector(values: list[int], bits: int) -> bytes:
    """The coordinates as one little-endian bit stream, coordinate i in bits [i * bits,
    (i + 1) * bits), bit j the bit j % 8 of byte j // 8, the unused high bits of the last byte
    zero: ceil(len(values) * bits / 8) bytes (docs/protocol.md section 6.2)."""
    out, acc, held = bytearray(), 0, 0  # acc: the stream's next `held` bits, not yet written
    for v in values:
        if not 0 <= v < 1 << bits:
            raise ValueError(f"a value of 2^{bits} or more cannot be packed at {bits} bits")
        acc |= v << held
        held += bits
        whole = held // 8
        out += (acc & ((1 << (8 * whole)) - 1)).to_bytes(whole, "little")
        acc >>= 8 * whole
        held -= 8 * whole
    if held:
        out.append(acc)
    return bytes(out)


def _head(mtype: int, session_id: bytes, rnd: int, sender: int) -> bytes:
    return bytes([WIRE_VERSION, mtype]) + session_id + _U32.pack(rnd) + _U32.pack(sender)


def _entries(entries: list[tuple[int, bytes]]) -> bytes:
    """Keyed entries (id, length-prefixed bytes), the count first."""
    return _U32.pack(len(entries)) + b"".join(
        _U32.pack(i) + _U32.pack(len(b)) + b for i, b in entries)


# -- the round configuration (docs/protocol.md section 7) ---------------------------------------
_CONFIG_DEFAULTS = {"bits": 32, "mode": "semi-honest", "threshold": None, "neighbours": None,
                    "min_survivors": None, "dropout_rate": 0.1, "corrupt_rate": 0.05,
                    "complete_graph": False}


def _config(config: dict) -> tuple:
    if not isinstance(config, dict) or set(config) - set(_CONFIG_DEFAULTS):
        raise ValueError(f"config must be a dict with keys among {sorted(_CONFIG_DEFAULTS)}")
    c = {**_CONFIG_DEFAULTS, **config}
    bits = c["bits"]
    if isinstance(bits, bool) or not isinstance(bits, int) or not 8 <= bits <= 64:
        raise ValueError(f"bits must be an int in [8, 64], got {bits!r}")
    if c["mode"] not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    for name in ("threshold", "neighbours", "min_survivors"):
        v = c[name]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name} must be a positive int or None")
    for name in ("dropout_rate", "corrupt_rate"):
        v = c[name]
        if isinstance(v, bool) or not isinstance(v, int | float) or not (
                math.isfinite(v) and 0 <= v < 1):
            raise ValueError(f"{name} must be a finite number in [0, 1)")
    if not isinstance(c["complete_graph"], bool):
        raise ValueError("complete_graph must be a bool")
    return tuple(c[k] for k in _CONFIG_DEFAULTS)


@lru_cache(maxsize=64)
def resolve(config: tuple, n: int) -> tuple[int, int, int, int]:
    """(k, t, min_survivors, quorum) for a cohort of n (docs/protocol.md section 7.2). Raises
    ValueError (or a SecAggError of the parameter finder) if the configuration refuses n."""
    bits, mode, threshold, neighbours, min_survivors, dropout, corrupt, complete = config
    rates = {"dropout_rate": dropout, "corrupt_rate": corrupt, "mode": mode}
    if neighbours is None:
        p = find_parameters(n, complete=complete, **rates)
        k, t = p.k, p.t if threshold is None else threshold
    else:
        k = n - 1 if (complete or neighbours >= n - 1) else neighbours
        if k < n - 1 and k % 2:
            raise ValueError(f"neighbours must be even, got {k}")
        t = threshold
        if t is None:
            t = next((t for t in range(2, k + 1)
                      if (a := analyse_parameters(n, k, t, **rates)).secure() and a.correct()),
                     None)
            if t is None:
                raise ValueError(f"no threshold meets the security targets with k = {k}")
    if t > k:
        raise ValueError(f"threshold {t} exceeds k = {k}")
    if mode == "malicious" and 2 * t <= k:
        raise ValueError(f"malicious mode needs 2t > k, got t = {t}, k = {k}")
    dropped = math.ceil(Fraction(str(dropout)) * n)
    corrupted = math.ceil(Fraction(str(corrupt)) * n)
    quorum = max(t, (n + corrupted) // 2 + 1)
    default = t if mode == "semi-honest" else max(t, n - dropped, quorum)
    m = min_survivors if min_survivors is not None else default
    if m > n:
        raise ValueError(f"min_survivors {m} exceeds the cohort size {n}")
    if mode == "malicious" and quorum > n:
        raise ValueError(f"the quorum {quorum} exceeds the cohort size {n}")
    return k, t, m, quorum


# -- the graph (docs/protocol.md section 8) -----------------------------------------------------
def _ids_bytes(ids) -> bytes:
    return b"".join(_U32.pack(v) for v in ids)


def graph_seed(session_id: bytes, rnd: int, cohort: list[int]) -> bytes:
    return hashlib.sha256(canonical("secagg-graph", session_id, rnd, _ids_bytes(cohort))).digest()


def _ordering(cohort: list[int], seed: bytes) -> list[int]:
    """Fisher-Yates over the sorted cohort, 64-bit words of the "graph-ordering" PRG stream,
    biased top range rejected."""
    out, n = list(cohort), len(cohort)
    want = n - 1 + 16
    while True:
        words = expand(seed, "graph-ordering", want, Ring(64)).tolist()
        pos, ok = 0, True
        order = list(out)
        for i in range(n - 1, 0, -1):
            bound = i + 1
            limit = (1 << 64) - (1 << 64) % bound
            while pos < len(words) and words[pos] >= limit:
                pos += 1
            if pos == len(words):
                ok = False
                break
            j = words[pos] % bound
            pos += 1
            order[i], order[j] = order[j], order[i]
        if ok:
            return order
        want *= 2


def neighbours_of(u: int, cohort: list[int], k: int, seed: bytes) -> frozenset[int]:
    n = len(cohort)
    if k >= n - 1:
        return frozenset(v for v in cohort if v != u)
    order = _ordering(cohort, seed)
    i, half = order.index(u), k // 2
    return frozenset(order[(i + j) % n] for j in range(-half, half + 1) if j)


# -- signed and committed payloads (docs/protocol.md section 13) ---------------------------------
def commit_self_seed(session_id: bytes, rnd: int, u: int, seed: bytes) -> bytes:
    return hashlib.sha256(canonical("b-commit", session_id, rnd, u, seed)).digest()


def advertise_bytes(session_id, rnd, gseed, u, c_pk, s_pk, commitment) -> bytes:
    return canonical("advertise", session_id, rnd, gseed, u, c_pk, s_pk, commitment)


def key_leaf(session_id, rnd, gseed, entry) -> bytes:
    u, c_pk, s_pk, commitment, sig = entry
    return canonical("key-leaf", session_id, rnd, gseed, u, c_pk, s_pk, commitment, sig)


def survivors_bytes(session_id, rnd, gseed, survivors, key_root) -> bytes:
    return canonical("survivors", session_id, rnd, gseed, _ids_bytes(survivors), key_root)


def _verifies(public: bytes, sig: bytes, payload: bytes, label: str) -> bool:
    try:
        VerifyKey(public).verify(sig, payload, label=label)
    except SecAggError:
        return False
    return True


def _os_randomness(purpose: str, kind: str, arg: int) -> bytes | int:
    return secrets.token_bytes(arg) if kind == "bytes" else secrets.randbelow(arg)


# -- the client ---------------------------------------------------------------------------------
class ReferenceClient:
    """Client ``client_id`` for one round. ``config`` holds RoundConfig fields (bits, mode,
    threshold, neighbours, min_survivors, dropout_rate, corrupt_rate, complete_graph);
    ``identity`` is the Ed25519 private key and ``registry`` id -> Ed25519 public key
    (malicious mode); ``input`` is x_u; ``used_sessions`` the session ids this identity took
    part in (a Setup of one of them is refused; the accepted one is added)."""

    def __init__(self, client_id: int, config: dict, *, identity: bytes | None,
                 registry: dict[int, bytes] | None, input: list[int],  # noqa: A002
                 used_sessions: set[bytes], randomness: Randomness | None = None) -> None:
        if isinstance(client_id, bool) or not isinstance(client_id, int) or not (
                0 <= client_id <= MAX_CLIENT_ID):
            raise ValueError(f"client id must be an int in [0, 2^32 - 2], got {client_id!r}")
        self._cfg = _config(config)
        self.mode = self._cfg[1]
        if self.mode == "malicious" and (identity is None or registry is None):
            raise ValueError("malicious mode needs an identity and a registry")
        self.id = client_id
        self._identity = ed25519_from_private_bytes(identity) if identity is not None else None
        self._registry = dict(registry) if registry is not None else None
        self._input = list(input)
        self._used = used_sessions
        self._draw = randomness if randomness is not None else _os_randomness
        self.state = IDLE
        self.error: str | None = None

    # randomness, checked (docs/protocol.md section 14)
    def _bytes(self, purpose: str, n: int) -> bytes:
        v = self._draw(purpose, "bytes", n)
        if not isinstance(v, bytes | bytearray) or len(v) != n:
            raise ValueError(f"randomness for {purpose!r}: expected {n} bytes")
        return bytes(v)

    def _below(self, purpose: str, m: int) -> int:
        v = self._draw(purpose, "below", m)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < m:
            raise ValueError(f"randomness for {purpose!r}: expected an int in [0, {m})")
        return v

    def receive(self, data: bytes) -> list[bytes]:
        """Process one server message (wire bytes); return the wire messages to send. Raises
        Refused (and the client is then in ERROR for good) if the message is refused."""
        if self.state == ERROR:
            raise Refused(f"in ERROR: {self.error}")
        try:
            mtype, m = decode(data)
            mode = self.mode if self.state != IDLE else "*"
            nxt = TRANSITIONS.get((mode, self.state, mtype)) or TRANSITIONS.get(
                ("*", self.state, mtype))
            if nxt is None:
                name = SERVER_TYPES.get(mtype) or CLIENT_TYPES[mtype]
                raise Refused(f"can't handle {name} in state {self.state}")
            if m["recipient"] != self.id:
                raise Refused(f"message addressed to {m['recipient']}, not {self.id}")
            if mtype == T_SETUP:
                if m["session_id"] in self._used:
                    raise Refused("replayed session: this session id was already used")
            elif (m["session_id"], m["round"]) != (self.setup["session_id"],
                                                   self.setup["round"]):
                raise Refused("message from another session or round (replay)")
            handler = {T_SETUP: self._setup, T_KEYS: self._keys, T_SHARES: self._shares,
                       T_CONSISTENCY_REQ: self._consistency, T_UNMASK_REQ: self._unmask}[mtype]
            out = handler(m)
        except Refused as exc:
            self.state, self.error = ERROR, exc.reason
            raise
        except SecAggError as exc:  # a primitive refused a peer's value
            self.state, self.error = ERROR, str(exc)
            raise Refused(str(exc)) from None
        self.state = nxt
        return out

    # -- Setup -> AdvertiseKeys (section 15.2) -------------------------------------------------
    def _setup(self, m: dict) -> list[bytes]:
        cohort = m["cohort"]
        at = bisect_left(cohort, self.id)
        if at == len(cohort) or cohort[at] != self.id:
            raise Refused("this client is not in the cohort")
        gseed = graph_seed(m["session_id"], m["round"], cohort)
        if m["graph_seed"] != gseed:
            raise Refused("graph seed is not derived from the session and cohort")
        try:
            k, t, min_surv, quorum = resolve(self._cfg, len(cohort))
        except (ValueError, SecAggError) as exc:
            raise Refused(f"this client's configuration refuses the cohort: {exc}") from None
        announced = (m["mode"], m["bits"], m["neighbours"], m["threshold"], m["min_survivors"])
        expected = (self.mode, self._cfg[0], k, t, min_surv)
        if announced != expected:
            raise Refused(f"setup parameters {announced} differ from this client's "
                          f"configuration {expected}")
        if self.mode == "malicious":
            missing = [u for u in cohort if u not in self._registry]
            if missing:
                raise Refused(f"cohort members without a registered identity: {missing[:5]}")
        self.nbrs = neighbours_of(self.id, cohort, k, gseed)
        self.quorum = quorum
        self.setup = m
        self._used.add(m["session_id"])
        self.c_key = x25519_from_private_bytes(self._bytes("c-key", 32))
        self.s_key = x25519_from_private_bytes(self._bytes("s-key", 32))
        self.b_seed = self._bytes("self-mask-seed", 32)
        if len(self._input) != m["dim"] or any(
                isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << m["bits"]
                for v in self._input):
            raise Refused(f"the input is not a vector of {m['dim']} {m['bits']}-bit words")
        sid, rnd = m["session_id"], m["round"]
        commitment = commit_self_seed(sid, rnd, self.id, self.b_seed)
        sig = b""
        if self.mode == "malicious":
            sig = self._identity.sign(advertise_bytes(
                sid, rnd, gseed, self.id, self.c_key.public_bytes, self.s_key.public_bytes,
                commitment), label=ADVERTISE_LABEL)
        return [_head(T_ADVERTISE, sid, rnd, self.id) + self.c_key.public_bytes
                + self.s_key.public_bytes + commitment + _U32.pack(len(sig)) + sig]

    # -- KeysBroadcast -> ShareKeys (section 15.3) ---------------------------------------------
    def _keys(self, m: dict) -> list[bytes]:
        s = self.setup
        sid, rnd, gseed, t = s["session_id"], s["round"], s["graph_seed"], s["threshold"]
        ids = [e[0] for e in m["keys"]]
        if self.id not in ids:
            raise Refused("own key missing from the key broadcast")
        strangers = [v for v in ids if v != self.id and v not in self.nbrs]
        if strangers:
            raise Refused(f"keys of clients that are not neighbours: {strangers[:5]}")
        seen: set[bytes] = set()
        self.peer_keys: dict[int, tuple[bytes, bytes]] = {}
        own = (self.c_key.public_bytes, self.s_key.public_bytes)
        for v, c_pk, s_pk, commitment, sig in m["keys"]:
            if v == self.id and (c_pk, s_pk) != own:
                raise Refused("own key misreported in the key broadcast")
            if c_pk in seen or s_pk in seen or c_pk == s_pk:
                raise Refused(f"duplicate public key (client {v})")
            seen |= {c_pk, s_pk}
            if self.mode == "malicious":
                payload = advertise_bytes(sid, rnd, gseed, v, c_pk, s_pk, commitment)
                if not _verifies(self._registry[v], sig, payload, ADVERTISE_LABEL):
                    raise Refused(f"bad key signature of client {v}")
            elif sig:
                raise Refused("unexpected signature in semi-honest mode")
            if v != self.id:
                self.peer_keys[v] = (c_pk, s_pk)
        self.key_root = self._key_commitment(m)
        if len(self.peer_keys) < t:
            raise Refused(f"only {len(self.peer_keys)} neighbours advertised keys, t = {t}")
        order = sorted(self.peer_keys)
        xs = [v + 1 for v in order]
        dealt = []
        for secret in (self.b_seed, self.s_key.private_bytes()):
            dealing_id = self._bytes("dealing-id", 16)
            coefficients = [self._below("coefficient", MODULUS) for _ in range(t - 1)]
            dealt.append(shamir_split_with_coefficients(
                secret, coefficients=coefficients, xs=xs, dealing_id=dealing_id))
        kdf = KdfContext(sid, rnd, "share-encryption")
        self.enc_keys = {v: agree(self.c_key, self.peer_keys[v][0], own_id=self.id, peer_id=v,
                                  context=kdf) for v in order}
        out = []
        for v, b_sh, s_sh in zip(order, dealt[0], dealt[1], strict=True):
            nonce = self._bytes("nonce", 12)
            out.append((v, aead_encrypt_with_nonce(
                self.enc_keys[v], b_sh.to_bytes() + s_sh.to_bytes(),
                AeadContext(sid, rnd, self.id, v), nonce=nonce)))
        return [_head(T_SHARE_KEYS, sid, rnd, self.id) + _entries(out)]

    def _key_commitment(self, m: dict) -> bytes:
        s = self.setup
        if self.mode != "malicious":
            if m["key_root"]:
                raise Refused("unexpected key commitment in semi-honest mode")
            return b""
        if not m["key_root"]:
            raise Refused("the key broadcast carries no key commitment")
        if m["key_count"] != len(s["cohort"]):
            raise Refused(f"key commitment over {m['key_count']} leaves, the cohort has "
                          f"{len(s['cohort'])}")
        for entry, (_, index, proof) in zip(m["keys"], m["proofs"], strict=True):
            if index != bisect_left(s["cohort"], entry[0]):
                raise Refused(f"the key entry of client {entry[0]} is not at its cohort "
                              "position in the key commitment")
            try:
                verify_inclusion(m["key_root"], key_leaf(s["session_id"], s["round"],
                                                         s["graph_seed"], entry),
                                 index=index, count=m["key_count"], proof=proof)
            except SecAggError:
                raise Refused(f"the key entry of client {entry[0]} is not in the key "
                              "commitment") from None
        return m["key_root"]

    # -- SharesDelivery -> MaskedInput (section 15.4) ------------------------------------------
    def _shares(self, m: dict) -> list[bytes]:
        s = self.setup
        sid, rnd, t, bits = s["session_id"], s["round"], s["threshold"], s["bits"]
        self.held: dict[int, tuple[bytes, bytes]] = {}
        for v, ct in m["ciphertexts"]:
            if v not in self.peer_keys:
                raise Refused(f"shares from client {v}, which is not a neighbour with keys")
            plain = decrypt(self.enc_keys[v], ct, AeadContext(sid, rnd, v, self.id))
            if len(plain) != 2 * SHARE_BYTES:
                raise Refused(f"malformed share plaintext from client {v}")
            pair = (plain[:SHARE_BYTES], plain[SHARE_BYTES:])
            shares = [Share.from_bytes(raw) for raw in pair]  # 4: both decode strictly
            for sh in shares:  # 5: then each has x = u + 1 and threshold = t
                if sh.x != self.id + 1 or sh.threshold != t:
                    raise Refused(f"share from client {v} has the wrong x or threshold")
            self.held[v] = pair
        if len(self.held) < t:
            raise Refused(f"only {len(self.held)} neighbours shared keys, t = {t}")
        kdf = KdfContext(sid, rnd, "pairwise-mask")
        pairwise = [(agree(self.s_key, self.peer_keys[v][1], own_id=self.id, peer_id=v,
                           context=kdf), 1 if self.id < v else -1) for v in sorted(self.held)]
        ring, mod = Ring(bits), 1 << bits
        y = [(a + b) % mod for a, b in zip(
            self._input, expand(self.b_seed, "self-mask", s["dim"], ring).tolist(), strict=True)]
        for seed, sign in pairwise:
            mask = expand(seed, "pairwise-mask", s["dim"], ring).tolist()
            y = [(a + sign * b) % mod for a, b in zip(y, mask, strict=True)]
        return [_head(T_MASKED, sid, rnd, self.id) + bytes([bits]) + _U32.pack(len(y))
                + pack_vector(y, bits)]

    # -- ConsistencyRequest -> ConsistencySignature (malicious mode, section 15.5) -------------
    def _consistency(self, m: dict) -> list[bytes]:
        s = self.setup
        u3 = frozenset(m["survivors"])
        if self.id not in u3:
            raise Refused("survivor set does not contain this client")
        if not u3 <= frozenset(s["cohort"]):
            raise Refused("survivor set names clients outside the cohort")
        if not (u3 & self.nbrs) <= frozenset(self.held):
            raise Refused("survivor set is not a subset of the clients that shared keys")
        if len(u3) < s["min_survivors"]:
            raise Refused(f"{len(u3)} survivors, below the minimum {s['min_survivors']}")
        self.u3 = list(m["survivors"])
        sig = self._identity.sign(survivors_bytes(s["session_id"], s["round"], s["graph_seed"],
                                                  self.u3, self.key_root),
                                  label=CONSISTENCY_LABEL)
        return [_head(T_CONSISTENCY_SIG, s["session_id"], s["round"], self.id) + sig]

    # -- UnmaskRequest -> UnmaskResponse (section 15.6) ----------------------------------------
    def _unmask(self, m: dict) -> list[bytes]:
        s = self.setup
        alive, dead = frozenset(m["alive"]), frozenset(m["dead"])
        if self.id in dead:
            raise Refused("dead list names this client")
        both = alive & dead
        if both:
            raise Refused(f"clients listed both alive and dead: {sorted(both)[:5]}")
        known = frozenset(self.held)
        unknown = (alive | dead) - known
        if unknown:
            raise Refused(f"unknown clients or non-neighbours in the request: "
                          f"{sorted(unknown)[:5]}")
        if alive | dead != known:
            raise Refused("unmask request leaves neighbours that shared keys unaccounted for")
        if len(alive) < s["threshold"]:
            raise Refused(f"only {len(alive)} alive neighbours, t = {s['threshold']}")
        if self.mode == "malicious":
            if alive != frozenset(self.u3) & known:
                raise Refused("alive list differs from the signed survivor set")
            payload = survivors_bytes(s["session_id"], s["round"], s["graph_seed"], self.u3,
                                      self.key_root)
            for w, sig in m["signatures"]:
                if w not in self.u3:
                    raise Refused(f"consistency signature from client {w}, not a survivor")
                if not _verifies(self._registry[w], sig, payload, CONSISTENCY_LABEL):
                    raise Refused(f"consistency signature of client {w} does not verify")
            if len(m["signatures"]) < self.quorum:
                raise Refused(f"only {len(m['signatures'])} consistency signatures, the "
                              f"quorum is {self.quorum}")
        elif m["signatures"]:
            raise Refused("unexpected signatures in semi-honest mode")
        b_shares = [(v, self.held[v][0]) for v in sorted(alive)]
        s_shares = [(v, self.held[v][1]) for v in sorted(dead)]
        return [_head(T_UNMASK_RESP, s["session_id"], s["round"], self.id)
                + _entries(b_shares) + _entries(s_shares)]


# -- the program: conformance over stdin/stdout (docs/protocol.md section 18) --------------------
class FileSessions(set):
    """Used session ids in ``path``, one hex line each, appended and fsynced when added."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        if path.exists():
            for line in path.read_text().split():
                super().add(bytes.fromhex(line))

    def add(self, value: bytes) -> None:
        if value in self:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, value.hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        super().add(value)


def _read_frame(stream) -> bytes | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    (n,) = _U32.unpack(head)
    data = stream.read(n)
    if len(data) < n:
        return None
    return data


def _write_frame(stream, data: bytes) -> None:
    stream.write(_U32.pack(len(data)) + data)


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
             float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _start(frame: bytes) -> ReferenceClient:
    """The client the start frame describes. Raises ValueError for any frame it cannot use:
    not UTF-8 JSON, not a JSON object, another version, a field missing or of the wrong type,
    values the client refuses, or a state_dir whose session store cannot be read."""
    try:
        doc = json.loads(frame.decode("utf-8"))
    except RecursionError:
        raise ValueError("the start frame is nested too deeply") from None
    if not isinstance(doc, dict):
        raise ValueError(f"the start frame is a JSON {_json_type(doc)}, not an object")
    if doc.get("conformance") != 1:
        raise ValueError("unknown conformance start frame version")
    registry, identity, state_dir = doc.get("registry"), doc.get("identity"), doc.get("state_dir")
    if registry is not None and not isinstance(registry, dict):
        raise ValueError(f"registry is a JSON {_json_type(registry)}, not an object")
    if identity is not None and not isinstance(identity, str):
        raise ValueError("identity must be hex text or null")
    if not isinstance(state_dir, str):
        raise ValueError("state_dir must be a path (a JSON string)")
    try:
        return ReferenceClient(
            doc["client_id"], doc["config"],
            identity=bytes.fromhex(identity) if identity is not None else None,
            registry=({int(u): bytes.fromhex(k) for u, k in registry.items()}
                      if registry is not None else None),
            input=doc["input"], used_sessions=FileSessions(Path(state_dir) / "sessions"))
    except KeyError as exc:
        raise ValueError(f"the start frame has no field {exc}") from None
    except (TypeError, AttributeError, SecAggError) as exc:
        raise ValueError(f"a start frame field of the wrong type: {exc}") from None
    except OSError as exc:
        raise ValueError(f"state_dir cannot be used: {exc.strerror or exc}") from None


def main() -> int:
    """Answer every frame on stdin (docs/protocol.md section 18). A start frame it cannot use
    is answered with a refusal status frame naming why, and the program exits with status 1
    without reading further; otherwise it exits with status 0 at the end of its input."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    frame = _read_frame(stdin)
    if frame is None:
        return 0
    try:
        client = _start(frame)
    except ValueError as exc:
        _write_frame(stdout, b"\x00" + f"bad start frame: {exc}".encode("utf-8", "replace"))
        stdout.flush()
        return 1
    _write_frame(stdout, b"")
    stdout.flush()
    while (frame := _read_frame(stdin)) is not None:
        out: list[bytes] = []
        status = b""
        try:
            out = client.receive(frame)
        except Refused as exc:
            status = b"\x00" + exc.reason.encode("utf-8", "replace")
        for data in out:
            _write_frame(stdout, data)
        _write_frame(stdout, status)
        stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
