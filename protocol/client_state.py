"""A client's round kept outside its process: exported, sealed, and restored once.

A host that runs every server message in a fresh process (Flower's deployment engine starts a
ClientApp per message and keeps only the node's ``context.state`` in between) holds the round
as a sealed blob between messages. docs/architecture.md section 4.

* :func:`export_round` / :func:`restore_round`: the machine's state (its Setup, key pairs,
  self-mask seed, peers' keys, the shares it holds, the pairwise mask keys, the survivor set it
  signed) as canonical JSON. It contains every secret of the round: it never leaves the
  sealer in the clear.
* :class:`StateSealer`: ChaCha20-Poly1305 (RFC 8439) under a key derived with HKDF-SHA256
  (RFC 5869) from the node-local key. The header (client id, session, round, stage, sequence
  number, key id) is the associated data, so a blob is bound to all of them. A
  :class:`ProgressStore` on the node records, per session, the sequence number of the last
  blob sealed and whether the session ended: a blob older than the last one sealed (a
  rollback to an earlier stage), or one of a finished session, is refused.

Errors (:mod:`protocol.errors`): :class:`~protocol.errors.StateTampered` (the blob does not
decode or authenticate), :class:`~protocol.errors.ForeignState` (sealed for another node,
client, session or round), :class:`~protocol.errors.StateRolledBack`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import stat
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg import KeyPair, PairwiseMask, SecAggError, Share, VerifyKey

from .config import RoundConfig
from .errors import ForeignState, LocalProtocolError, StateRolledBack, StateTampered
from .messages import Setup
from .stages.advertise_keys import ClientKeys, client_context
from .stages.common import Refusal
from .stages.consistency_check import ClientSigned
from .stages.masked_input import ClientShares
from .stages.share_keys import ClientPeers
from .transitions import ClientState
from .wire import decode, encode

STATE_VERSION = 1
NODE_KEY_BYTES = 32
_MAGIC = b"SAST"
_SEAL_LABEL = b"secagg/client-state/v1/seal"
_KEY_ID_LABEL = b"secagg/client-state/v1/key-id"
_HEADER = struct.Struct(">4sB8sI32sIQB")  # magic, version, key id, client, session, round,
#                                           sequence number, length of the stage name
_NONCE = 12
KEEP_ENDED = 64  # ended sessions whose record the progress store keeps
# the states a round can be kept in between two server messages
RESUMABLE = (ClientState.AWAIT_KEYS, ClientState.AWAIT_SHARES, ClientState.AWAIT_INPUT,
             ClientState.MASKED, ClientState.SIGNED)


# -- the machine's state as canonical JSON ----------------------------------------------------
@dataclass(frozen=True)
class RoundState:
    """Everything a :class:`~protocol.client.ClientRound` holds between two messages."""

    state: ClientState
    keys: ClientKeys
    peers: ClientPeers | None
    shares: ClientShares | None
    signed: ClientSigned | None


def export_round(s: RoundState) -> bytes:
    """The canonical JSON of ``s`` (secrets included: seal it before it leaves the process)."""
    if s.state not in RESUMABLE:
        raise LocalProtocolError(f"a round in state {s.state.value} is not kept")
    k = s.keys
    doc: dict = {
        "v": STATE_VERSION, "id": k.ctx.id, "state": s.state.value,
        "setup": encode(k.ctx.setup).hex(),
        "keys": {"c": k.c_keys.private_bytes().hex(), "s": k.s_keys.private_bytes().hex(),
                 "b": k.b_seed.hex()},
        "peers": None, "shares": None, "signed": None,
    }
    if s.peers is not None:
        p = s.peers
        doc["peers"] = {"keys": [[v, c.hex(), sk.hex()] for v, (c, sk) in
                                 sorted(p.peer_keys.items())],
                        "enc": [[v, e.hex()] for v, e in sorted(p.enc_keys.items())],
                        "root": p.key_root.hex()}
    if s.shares is not None:
        doc["shares"] = {"held": [[v, b.to_bytes().hex(), sk.to_bytes().hex()]
                                  for v, (b, sk) in sorted(s.shares.held.items())],
                         "pairwise": [[m.seed.hex(), m.sign] for m in s.shares.pairwise]}
    if s.signed is not None:
        doc["signed"] = list(s.signed.u3)
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def restore_round(data: bytes, *, config: RoundConfig,
                  registry: Mapping[int, VerifyKey] | None) -> RoundState:
    """The state :func:`export_round` wrote. The round constants are derived again from the
    Setup with every check but the replay check; a Setup this configuration now refuses is a
    LocalProtocolError, anything else that does not decode is :class:`StateTampered`."""
    try:
        doc = json.loads(data)
        if doc["v"] != STATE_VERSION:
            raise StateTampered(f"client state version {doc['v']!r}, expected {STATE_VERSION}")
        state = ClientState(doc["state"])
        if state not in RESUMABLE:
            raise StateTampered(f"a kept round cannot be in state {state.value}")
        setup = decode(bytes.fromhex(doc["setup"]))
        if not isinstance(setup, Setup):
            raise StateTampered("the kept Setup is not a Setup")
        try:
            ctx = client_context(setup, client_id=doc["id"], config=config, registry=registry)
        except Refusal as exc:
            raise LocalProtocolError(f"the kept round's Setup is refused now: {exc}") from None
        kd = doc["keys"]
        keys = ClientKeys(ctx, KeyPair.from_private_bytes(bytes.fromhex(kd["c"])),
                          KeyPair.from_private_bytes(bytes.fromhex(kd["s"])),
                          bytes.fromhex(kd["b"]))
        peers = shares = signed = None
        if doc["peers"] is not None:
            pd = doc["peers"]
            peers = ClientPeers(
                MappingProxyType({v: (bytes.fromhex(c), bytes.fromhex(s))
                                  for v, c, s in pd["keys"]}),
                MappingProxyType({v: bytes.fromhex(e) for v, e in pd["enc"]}),
                bytes.fromhex(pd["root"]))
        if doc["shares"] is not None:
            sd = doc["shares"]
            held = {v: (Share.from_bytes(bytes.fromhex(b)), Share.from_bytes(bytes.fromhex(s)))
                    for v, b, s in sd["held"]}
            pairs = tuple(PairwiseMask(bytes.fromhex(seed), sign) for seed, sign in
                          sd["pairwise"])
            shares = ClientShares(MappingProxyType(held), pairs)
        if doc["signed"] is not None:
            signed = ClientSigned(tuple(doc["signed"]))
    except (StateTampered, LocalProtocolError):
        raise
    except (ValueError, KeyError, TypeError, SecAggError) as exc:
        raise StateTampered(f"client state does not decode: {type(exc).__name__}: "
                            f"{exc}") from None
    _check_consistent(state, peers, shares, signed)
    return RoundState(state, keys, peers, shares, signed)


def _check_consistent(state, peers, shares, signed) -> None:
    need = {ClientState.AWAIT_KEYS: (False, False), ClientState.AWAIT_SHARES: (True, False),
            ClientState.AWAIT_INPUT: (True, True), ClientState.MASKED: (True, True),
            ClientState.SIGNED: (True, True)}[state]
    if need != (peers is not None, shares is not None) or (
            (signed is not None) != (state is ClientState.SIGNED)):
        raise StateTampered(f"client state {state.value} with the wrong stage hand-ons")


# -- the node's progress: one sequence number per session ------------------------------------
class ProgressStore:
    """Per session: the sequence number of the last blob sealed, and whether it ended.

    ``path=None`` keeps it in memory (one process). On disk it is one JSON file, replaced
    atomically (write, fsync, rename) at every change, so a crash leaves the old or the new
    record, never a torn one.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = Path(path) if path is not None else None
        self._records: dict[str, list] = {}
        if self._path is not None and self._path.exists():
            try:
                raw = json.loads(self._path.read_bytes())
                self._records = {str(s): [int(q), bool(d)] for s, (q, d) in raw.items()}
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise LocalProtocolError(f"{self._path}: the progress store is damaged: "
                                         f"{exc}") from None

    def get(self, session_id: bytes) -> tuple[int, bool] | None:
        """(last sequence number, ended) for ``session_id``, None if never sealed here."""
        r = self._records.get(session_id.hex())
        return None if r is None else (r[0], r[1])

    def advance(self, session_id: bytes) -> int:
        """The next sequence number for ``session_id`` (recorded before it is used)."""
        cur = self.get(session_id)
        if cur is not None and cur[1]:
            raise StateRolledBack("the session already ended on this node")
        seq = 1 if cur is None else cur[0] + 1
        self._records[session_id.hex()] = [seq, False]
        self._save()
        return seq

    def end(self, session_id: bytes) -> None:
        """Nothing of ``session_id`` may be restored any more (it finished or failed)."""
        cur = self.get(session_id)
        self._records[session_id.hex()] = [0 if cur is None else cur[0], True]
        self._save()

    def end_all(self) -> None:
        """End every session not ended yet (a node takes part in one round at a time: a new
        Setup abandons the round before it)."""
        if any(not r[1] for r in self._records.values()):
            for r in self._records.values():
                r[1] = True
            self._save()

    def _save(self) -> None:
        # an ended session's blob is refused as well when its record is gone (never sealed
        # here): only the most recent ended records are kept, so the file stays small
        ended = [k for k, r in self._records.items() if r[1]]
        for k in ended[:max(0, len(ended) - KEEP_ENDED)]:
            del self._records[k]
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=self._path.name + ".")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(self._records, sort_keys=True).encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


# -- sealing ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StateHeader:
    """What a sealed blob is bound to (its associated data)."""

    key_id: bytes
    client_id: int
    session_id: bytes
    round: int
    seq: int
    stage: str

    def to_bytes(self) -> bytes:
        stage = self.stage.encode("ascii")
        return _HEADER.pack(_MAGIC, STATE_VERSION, self.key_id, self.client_id,
                            self.session_id, self.round, self.seq, len(stage)) + stage

    @classmethod
    def parse(cls, blob: bytes) -> tuple[StateHeader, int]:
        if not isinstance(blob, bytes | bytearray) or len(blob) < _HEADER.size:
            raise StateTampered("client state blob too short")
        magic, version, key_id, client, sid, rnd, seq, n = _HEADER.unpack_from(blob)
        if magic != _MAGIC or version != STATE_VERSION:
            raise StateTampered("not a client state blob of a known version")
        end = _HEADER.size + n
        try:
            stage = bytes(blob[_HEADER.size:end]).decode("ascii")
        except UnicodeDecodeError:
            raise StateTampered("client state blob has a malformed stage") from None
        if len(blob) < end + _NONCE + 16:
            raise StateTampered("client state blob too short")
        return cls(key_id, client, sid, rnd, seq, stage), end


def key_id(node_key: bytes) -> bytes:
    return hashlib.sha256(_KEY_ID_LABEL + node_key).digest()[:8]


class StateSealer:
    """Seals and opens one node's client state under its node-local key ``node_key``."""

    def __init__(self, node_key: bytes, progress: ProgressStore) -> None:
        if not isinstance(node_key, bytes) or len(node_key) != NODE_KEY_BYTES:
            raise ValueError(f"the node-local state key must be {NODE_KEY_BYTES} bytes")
        self._key_id = key_id(node_key)
        self._aead = ChaCha20Poly1305(HKDF(hashes.SHA256(), 32, salt=None,
                                           info=_SEAL_LABEL).derive(node_key))
        self._progress = progress
        self._reserved: dict[bytes, int] = {}  # session -> the number taken when it was opened

    def seal(self, client_id: int, setup: Setup, state: ClientState, plain: bytes) -> bytes:
        """The blob of a round in ``state``; it supersedes every blob sealed before for the
        session."""
        seq = self._reserved.pop(setup.session_id, None)
        if seq is None:
            seq = self._progress.advance(setup.session_id)
        h = StateHeader(self._key_id, client_id, setup.session_id, setup.round, seq,
                        state.value).to_bytes()
        nonce = secrets.token_bytes(_NONCE)
        return h + nonce + self._aead.encrypt(nonce, plain, h)

    def open(self, blob: bytes, *, client_id: int, session_id: bytes, round: int) -> bytes:
        """The plain state in ``blob``, which must be the last one sealed for this client's
        ``session_id`` and ``round`` on this node. Raises StateTampered, ForeignState or
        StateRolledBack (docs/architecture.md section 7)."""
        h, end = StateHeader.parse(blob)
        if h.key_id != self._key_id:
            raise ForeignState("client state sealed under another node's key")
        if h.client_id != client_id:
            raise ForeignState(f"client state of client {h.client_id}, not {client_id}")
        if h.session_id != session_id or h.round != round:
            raise ForeignState("client state of another session or round")
        nonce, ct = blob[end:end + _NONCE], blob[end + _NONCE:]
        try:
            plain = self._aead.decrypt(bytes(nonce), bytes(ct), bytes(blob[:end]))
        except InvalidTag:
            raise StateTampered("client state does not authenticate (tampered, or "
                                "sealed under another key)") from None
        cur = self._progress.get(session_id)
        if cur is None:
            raise ForeignState("client state of a session this node never sealed")
        last, ended = cur
        if ended:
            raise StateRolledBack("client state of a session that already ended on this node")
        if h.seq != last:
            raise StateRolledBack(f"client state number {h.seq} of this session, the last "
                                  f"sealed is number {last} (a rollback to an earlier stage, "
                                  "or a blob already opened)")
        # consumed: this blob never opens again; the number taken is the next blob's
        self._reserved[session_id] = self._progress.advance(session_id)
        return plain

    def end(self, session_id: bytes) -> None:
        self._reserved.pop(session_id, None)
        self._progress.end(session_id)


def load_node_key(path: Path, *, create: bool = True) -> bytes:
    """The node-local state key in ``path`` (64 hex digits, mode 0600); created atomically
    (written to a private temporary file, then linked into place) if missing and ``create``.
    Raises LocalProtocolError for a key file that is unreadable, malformed, or readable by
    others."""
    path = Path(path)
    if not path.exists() and create:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state-key.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(NODE_KEY_BYTES) + "\n")
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    try:
        mode = path.stat().st_mode
        raw = bytes.fromhex(path.read_text().strip())
    except OSError as exc:
        raise LocalProtocolError(f"cannot read the node state key {path}: "
                                 f"{exc.strerror}") from None
    except ValueError:
        raise LocalProtocolError(f"{path}: the node state key is not hex") from None
    if stat.S_IMODE(mode) & 0o077:
        raise LocalProtocolError(f"{path}: the node state key is readable by others "
                                 f"(mode {stat.S_IMODE(mode):o}); make it 0600")
    if len(raw) != NODE_KEY_BYTES:
        raise LocalProtocolError(f"{path}: the node state key must be {NODE_KEY_BYTES} bytes")
    return raw


__all__ = ["NODE_KEY_BYTES", "RESUMABLE", "ProgressStore", "RoundState", "StateHeader",
           "StateSealer", "export_round", "load_node_key", "restore_round"]
