"""Protocol messages: frozen, validated value objects (Bonawitz et al. CCS 2017, section 4;
Bell et al. CCS 2020). Their byte encoding lives in :mod:`protocol.wire`.

Every message carries the session id and round it belongs to, and the client it comes from
(``sender``) or goes to (``recipient``), so a replay into another session, round or client is
detected by the receiver. Id lists are sorted and duplicate-free by construction, which makes
the encoding canonical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .errors import WireError

SESSION_ID_BYTES = 32
KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_CLIENT_ID = (1 << 32) - 2  # Shamir x-coordinate is id + 1, a u32
MAX_COHORT = 100_000
MAX_VECTOR_BYTES = 1 << 30
MAX_CIPHERTEXT = 512
MAX_PROOF_BYTES = 32 * 32  # a hash tree of up to 2^32 leaves
MODES = ("semi-honest", "malicious")


#: The last id tuples found valid. A tuple is immutable, so one found valid stays valid: the
#: cohort of a Setup decoded once and shared (see protocol.wire) is checked once, not once per
#: message that carries it.
_VALID_IDS: list[tuple[int, ...]] = []
_VALID_IDS_KEPT = 4
_MIN_FAST_IDS = 64


def _ids(values, name: str, *, allow_empty: bool = True) -> tuple[int, ...]:
    out = tuple(values)
    if len(out) >= _MIN_FAST_IDS:
        if any(out is seen for seen in _VALID_IDS):
            return out
        if _fast_ids_ok(out):
            _VALID_IDS.insert(0, out)
            del _VALID_IDS[_VALID_IDS_KEPT:]
            return out
    for v in out:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_CLIENT_ID:
            raise WireError(f"{name}: invalid client id {v!r}")
    if any(a >= b for a, b in zip(out, out[1:], strict=False)):
        raise WireError(f"{name}: ids must be sorted and distinct")
    if not allow_empty and not out:
        raise WireError(f"{name}: must not be empty")
    if len(out) > MAX_COHORT:
        raise WireError(f"{name}: more than {MAX_COHORT} ids")
    return out


def _fast_ids_ok(out: tuple) -> bool:
    """True if ``out`` holds only ints in [0, MAX_CLIENT_ID], strictly increasing, at most
    MAX_COHORT of them (vectorised; False sends the caller to the check that names the fault)."""
    if len(out) > MAX_COHORT or set(map(type, out)) != {int}:
        return False
    try:
        arr = np.array(out, dtype=np.int64)
    except OverflowError:
        return False
    return bool(arr[0] >= 0 and arr[-1] <= MAX_CLIENT_ID and np.all(arr[1:] > arr[:-1]))


def _keyed(entries, name: str, arity: int = 2) -> tuple:
    try:
        out = tuple(tuple(e) for e in entries)
    except TypeError:
        raise WireError(f"{name}: expected a sequence of entries") from None
    if any(len(e) != arity for e in out):
        raise WireError(f"{name}: every entry must have {arity} fields")
    _ids([e[0] for e in out], name)
    return out


def _bytes(value, name: str, size: int | None = None, max_size: int | None = None) -> bytes:
    if not isinstance(value, bytes):
        raise WireError(f"{name}: expected bytes")
    if size is not None and len(value) != size:
        raise WireError(f"{name}: expected {size} bytes, got {len(value)}")
    if max_size is not None and len(value) > max_size:
        raise WireError(f"{name}: more than {max_size} bytes")
    return value


def _uint(value, name: str, bits: int, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value < 1 << bits:
        raise WireError(f"{name}: expected an integer in [{minimum}, 2^{bits})")
    return value


@dataclass(frozen=True)
class Message:
    """Base: the session and round every message is bound to."""

    TYPE: ClassVar[int] = 0
    session_id: bytes
    round: int

    def __post_init__(self) -> None:
        _bytes(self.session_id, "session_id", SESSION_ID_BYTES)
        _uint(self.round, "round", 32)
        self._validate()

    def _validate(self) -> None:  # pragma: no cover - overridden
        pass



@dataclass(frozen=True)
class Setup(Message):
    """Round 0 (server -> each client): cohort, graph and parameters of the round."""

    TYPE: ClassVar[int] = 1
    recipient: int
    cohort: tuple[int, ...]
    neighbours: int
    threshold: int
    dim: int
    bits: int
    mode: str
    min_survivors: int
    graph_seed: bytes

    def _validate(self) -> None:
        _uint(self.recipient, "recipient", 32)
        object.__setattr__(self, "cohort", _ids(self.cohort, "cohort", allow_empty=False))
        n = len(self.cohort)
        if n < 3:
            raise WireError("cohort: at least 3 clients")
        _uint(self.neighbours, "neighbours", 32, 2)
        if self.neighbours > n - 1 or (self.neighbours < n - 1 and self.neighbours % 2):
            raise WireError("neighbours: must be even and below n - 1, or n - 1")
        _uint(self.threshold, "threshold", 32, 1)
        if self.threshold > self.neighbours:
            raise WireError("threshold: above the number of neighbours")
        _uint(self.dim, "dim", 32, 1)
        _uint(self.bits, "bits", 8, 8)
        if self.bits > 64 or self.dim * (4 if self.bits <= 32 else 8) > MAX_VECTOR_BYTES:
            raise WireError("bits / dim: outside the supported range")
        if self.mode not in MODES:
            raise WireError(f"mode: unknown mode {self.mode!r}")
        _uint(self.min_survivors, "min_survivors", 32, 1)
        if self.min_survivors > n:
            raise WireError("min_survivors: larger than the cohort")
        _bytes(self.graph_seed, "graph_seed", 32)


@dataclass(frozen=True)
class AdvertiseKeys(Message):
    """Round 1 (client -> server): c_u^PK, s_u^PK, a hiding commitment to the self-mask seed
    b_u (checked by the server after reconstruction) and, in malicious mode, a signature over
    all three."""

    TYPE: ClassVar[int] = 2
    sender: int
    c_pk: bytes
    s_pk: bytes
    b_commitment: bytes
    signature: bytes

    def _validate(self) -> None:
        _uint(self.sender, "sender", 32)
        _bytes(self.c_pk, "c_pk", KEY_BYTES)
        _bytes(self.s_pk, "s_pk", KEY_BYTES)
        _bytes(self.b_commitment, "b_commitment", 32)
        if len(_bytes(self.signature, "signature")) not in (0, SIGNATURE_BYTES):
            raise WireError("signature: must be empty or 64 bytes")


@dataclass(frozen=True)
class KeysBroadcast(Message):
    """Round 1 (server -> client): the advertised keys of the recipient's neighbours in U1,
    entries ``(id, c_pk, s_pk, b_commitment, signature)`` sorted by id (the recipient's own
    entry included); the commitment is relayed so that the signature can be checked.

    Malicious mode adds the key commitment: ``key_root``, the root of the hash tree over all
    ``key_count`` signed advertisements of U1 in id order, and for each entry ``(id, index,
    proof)``, its leaf index and inclusion proof. Semi-honest mode leaves all three empty.
    """

    TYPE: ClassVar[int] = 3
    recipient: int
    keys: tuple[tuple[int, bytes, bytes, bytes, bytes], ...]
    key_count: int = 0
    key_root: bytes = b""
    proofs: tuple[tuple[int, int, bytes], ...] = ()

    def _validate(self) -> None:
        _uint(self.recipient, "recipient", 32)
        object.__setattr__(self, "keys", _keyed(self.keys, "keys", arity=5))
        for _, c, s, com, sig in self.keys:
            _bytes(c, "c_pk", KEY_BYTES)
            _bytes(s, "s_pk", KEY_BYTES)
            _bytes(com, "b_commitment", 32)
            if len(_bytes(sig, "signature")) not in (0, SIGNATURE_BYTES):
                raise WireError("signature: must be empty or 64 bytes")
        _uint(self.key_count, "key_count", 32)
        object.__setattr__(self, "proofs", _keyed(self.proofs, "proofs", arity=3))
        if not _bytes(self.key_root, "key_root", max_size=32):
            if self.key_count or self.proofs:
                raise WireError("key commitment: a count or proofs without a root")
            return
        if len(self.key_root) != 32:
            raise WireError("key_root: expected 32 bytes")
        if tuple(p[0] for p in self.proofs) != tuple(e[0] for e in self.keys):
            raise WireError("proofs: one per key entry, in the same order")
        indices = [_uint(i, "proof index", 32) for _, i, _ in self.proofs]
        if any(a >= b for a, b in zip(indices, indices[1:], strict=False)) or (
                indices and indices[-1] >= self.key_count):
            raise WireError("proofs: leaf indices must increase and lie below key_count")
        for _, _, path in self.proofs:
            if len(_bytes(path, "proof", max_size=MAX_PROOF_BYTES)) % 32:
                raise WireError("proof: a whole number of 32-byte hashes")


@dataclass(frozen=True)
class ShareKeys(Message):
    """Round 2 (client -> server): one AEAD ciphertext per neighbour in U1, ``(receiver, ct)``."""

    TYPE: ClassVar[int] = 4
    sender: int
    ciphertexts: tuple[tuple[int, bytes], ...]

    def _validate(self) -> None:
        _uint(self.sender, "sender", 32)
        object.__setattr__(self, "ciphertexts", _keyed(self.ciphertexts, "ciphertexts"))
        for _, ct in self.ciphertexts:
            _bytes(ct, "ciphertext", max_size=MAX_CIPHERTEXT)


@dataclass(frozen=True)
class SharesDelivery(Message):
    """Round 2 (server -> client): the ciphertexts addressed to the recipient, ``(sender, ct)``;
    their senders are the recipient's neighbours in U2."""

    TYPE: ClassVar[int] = 5
    recipient: int
    ciphertexts: tuple[tuple[int, bytes], ...]

    def _validate(self) -> None:
        _uint(self.recipient, "recipient", 32)
        object.__setattr__(self, "ciphertexts", _keyed(self.ciphertexts, "ciphertexts"))
        for _, ct in self.ciphertexts:
            _bytes(ct, "ciphertext", max_size=MAX_CIPHERTEXT)


@dataclass(frozen=True)
class MaskedInput(Message):
    """Round 3 (client -> server): y_u, its coordinates in Z_{2^bits}, held as uint32 words
    (bits <= 32) or uint64 words (bits > 32) and sent packed at ``bits`` bits each (see
    :mod:`protocol.wire`). ``bits`` defaults to the word width (32 or 64); an honest client
    gives the round's b. A coordinate of 2^bits or more is refused when encoded."""

    TYPE: ClassVar[int] = 6
    sender: int
    vector: np.ndarray
    bits: int | None = None

    def _validate(self) -> None:
        _uint(self.sender, "sender", 32)
        v = self.vector
        if not isinstance(v, np.ndarray) or v.ndim != 1 or v.dtype not in (np.uint32, np.uint64):
            raise WireError("vector: expected a 1-D uint32 or uint64 array")
        if v.nbytes > MAX_VECTOR_BYTES:
            raise WireError("vector: too large")
        bits = v.dtype.itemsize * 8 if self.bits is None else self.bits
        _uint(bits, "bits", 8, 8)
        if bits > 64 or v.dtype != (np.uint32 if bits <= 32 else np.uint64):
            raise WireError("bits: in 8..64, with uint32 words for bits <= 32, else uint64")
        object.__setattr__(self, "bits", bits)
        if v.flags.writeable:  # the message is immutable: keep a read-only array
            v = v.copy()
            v.flags.writeable = False
            object.__setattr__(self, "vector", v)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, MaskedInput)
            and (self.session_id, self.round, self.sender, self.bits) == (
                other.session_id, other.round, other.sender, other.bits)
            and self.vector.dtype == other.vector.dtype
            and np.array_equal(self.vector, other.vector)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class ConsistencyRequest(Message):
    """Round 4, malicious mode (server -> client): U3, the clients whose masked input counts."""

    TYPE: ClassVar[int] = 7
    recipient: int
    survivors: tuple[int, ...]

    def _validate(self) -> None:
        _uint(self.recipient, "recipient", 32)
        object.__setattr__(self, "survivors", _ids(self.survivors, "survivors"))


@dataclass(frozen=True)
class ConsistencySignature(Message):
    """Round 4, malicious mode (client -> server): signature over (session, round, U3)."""

    TYPE: ClassVar[int] = 8
    sender: int
    signature: bytes

    def _validate(self) -> None:
        _uint(self.sender, "sender", 32)
        _bytes(self.signature, "signature", SIGNATURE_BYTES)


@dataclass(frozen=True)
class UnmaskRequest(Message):
    """Round 5 (server -> client): which neighbours are alive (reveal the share of b_v) and
    which dropped (reveal the share of s_v^SK); in malicious mode, the U3 signatures."""

    TYPE: ClassVar[int] = 9
    recipient: int
    alive: tuple[int, ...]
    dead: tuple[int, ...]
    signatures: tuple[tuple[int, bytes], ...]

    def _validate(self) -> None:
        _uint(self.recipient, "recipient", 32)
        object.__setattr__(self, "alive", _ids(self.alive, "alive"))
        object.__setattr__(self, "dead", _ids(self.dead, "dead"))
        object.__setattr__(self, "signatures", _keyed(self.signatures, "signatures"))
        for _, sig in self.signatures:
            _bytes(sig, "signature", SIGNATURE_BYTES)


@dataclass(frozen=True)
class UnmaskResponse(Message):
    """Round 5 (client -> server): encoded Shamir shares, ``(owner, share)``: of b_owner for
    alive owners, of s_owner^SK for dropped ones; never both for one owner."""

    TYPE: ClassVar[int] = 10
    sender: int
    self_mask_shares: tuple[tuple[int, bytes], ...]
    key_shares: tuple[tuple[int, bytes], ...]

    def _validate(self) -> None:
        _uint(self.sender, "sender", 32)
        object.__setattr__(self, "self_mask_shares", _keyed(self.self_mask_shares, "shares"))
        object.__setattr__(self, "key_shares", _keyed(self.key_shares, "shares"))
        for _, sh in self.self_mask_shares + self.key_shares:
            _bytes(sh, "share", max_size=128)
        both = {o for o, _ in self.self_mask_shares} & {o for o, _ in self.key_shares}
        if both:
            raise WireError(f"shares: both kinds for owner(s) {sorted(both)}")


ALL_MESSAGES: tuple[type[Message], ...] = (
    Setup, AdvertiseKeys, KeysBroadcast, ShareKeys, SharesDelivery, MaskedInput,
    ConsistencyRequest, ConsistencySignature, UnmaskRequest, UnmaskResponse,
)
BY_TYPE = {m.TYPE: m for m in ALL_MESSAGES}
