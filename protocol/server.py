"""The server's side of a round, sans-IO (Bonawitz et al. CCS 2017 section 4; Bell et al.
CCS 2020 section 3).

:meth:`ServerRound.receive` takes one decoded client message: a message that is illegal in the
current stage, from the wrong session, round or client, a duplicate, or that fails a check
raises :class:`RemoteProtocolError` and is discarded - nothing accepted before is touched.
:meth:`ServerRound.close_stage` is the "stage closed" signal from whoever keeps time; it
returns the messages to send, or raises :class:`RoundAborted` naming the reason. Masked inputs
are added to one running sum as they arrive: memory O(d + n k), never O(n d).
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from secagg import (
    KdfContext,
    KeyPair,
    PairwiseMask,
    Ring,
    SecAggError,
    Share,
    VerifyKey,
    agree,
    decode,
    harary_graph,
    pairwise_sign,
    remove_masks,
)
from secagg.keyagreement import PURPOSE_MASK
from secagg.prg import SEED_BYTES

from .config import RoundConfig, derive_graph_seed
from .errors import LocalProtocolError, RemoteProtocolError, RoundAborted
from .messages import (
    KEY_BYTES,
    MAX_CLIENT_ID,
    MAX_VECTOR_BYTES,
    SESSION_ID_BYTES,
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    KeysBroadcast,
    MaskedInput,
    Message,
    Setup,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)
from .payloads import (
    ADVERTISE_LABEL,
    CONSISTENCY_LABEL,
    advertise_bytes,
    commit_self_seed,
    key_tree,
    survivors_bytes,
)
from .transitions import ServerState, server_accepts, server_next


class ServerRound:
    """The server for one round over ``cohort`` with vectors of length ``dim``."""

    def __init__(
        self,
        config: RoundConfig,
        cohort: Sequence[int],
        dim: int,
        *,
        session_id: bytes | None = None,
        round: int = 0,  # noqa: A002 - the protocol's round number
        registry: Mapping[int, VerifyKey] | None = None,
    ) -> None:
        if not isinstance(config, RoundConfig):
            raise LocalProtocolError("config must be a RoundConfig")
        members = list(cohort)
        if any(type(u) is not int or not 0 <= u <= MAX_CLIENT_ID for u in members):
            raise LocalProtocolError("cohort must be distinct client ids in [0, 2^32 - 2]")
        ids = tuple(sorted(members))
        if len(set(ids)) != len(ids):
            raise LocalProtocolError("cohort must be distinct client ids in [0, 2^32 - 2]")
        if type(round) is not int or not 0 <= round < 1 << 32:
            raise LocalProtocolError(f"round must be an int in [0, 2^32), got {round!r}")
        width = 4 if config.bits <= 32 else 8
        if type(dim) is not int or not 1 <= dim or dim * width > MAX_VECTOR_BYTES:
            raise LocalProtocolError(f"dim must be a positive int of at most "
                                     f"{MAX_VECTOR_BYTES // width} words, got {dim!r}")
        self.params = config.resolve(len(ids))
        self.config, self.cohort, self.dim = config, ids, dim
        self.mode = config.mode
        if config.mode == "malicious" and (registry is None or any(u not in registry
                                                                    for u in ids)):
            raise LocalProtocolError("malicious mode needs a registry covering the cohort")
        self.registry = registry
        self.ring = Ring(config.bits)
        self.session_id = session_id if session_id is not None else secrets.token_bytes(32)
        if not isinstance(self.session_id, bytes) or len(self.session_id) != SESSION_ID_BYTES:
            raise LocalProtocolError("session_id must be 32 bytes")
        self.round = round
        self.graph_seed = derive_graph_seed(self.session_id, round, ids)
        self.graph = harary_graph(ids, self.params.neighbours, seed=self.graph_seed)
        self.state = ServerState.SETUP
        self.keys: dict[int, AdvertiseKeys] = {}
        self.share_msgs: dict[int, ShareKeys] = {}
        self.acc: np.ndarray | None = None
        self.u3: set[int] = set()
        self.signatures: dict[int, bytes] = {}
        self.requests: dict[int, UnmaskRequest] = {}
        self.responses: dict[int, UnmaskResponse] = {}
        self.parsed: dict[int, tuple[list[tuple[int, Share]], list[tuple[int, Share]]]] = {}
        self.aggregate: np.ndarray | None = None
        self.key_root = b""  # the key commitment (malicious mode)
        # holder -> [(owner, "b" or "s")]: shares that robust reconstruction found wrong
        self.bad_shares: dict[int, list[tuple[int, str]]] = {}
        self.abort: RoundAborted | None = None
        self._held = 0  # bytes of accepted per-client state, kept as messages arrive

    # -- helpers ---------------------------------------------------------------------------
    @property
    def t(self) -> int:
        return self.params.threshold

    def _abort(self, reason: str, detail: str = "", *,
               clients: tuple[int, ...] = ()) -> RoundAborted:
        stage = self.state.value
        self.state = ServerState.ABORTED
        self.abort = RoundAborted(stage, reason, detail, clients=clients)
        return self.abort

    def _refuse(self, m: Message, why: str) -> RemoteProtocolError:
        return RemoteProtocolError(f"message from client {getattr(m, 'sender', '?')} refused "
                                   f"in {self.state.value}: {why}")

    @property
    def u1(self) -> frozenset[int]:
        return frozenset(self.keys)

    @property
    def u2(self) -> frozenset[int]:
        return frozenset(self.share_msgs)

    # -- start -----------------------------------------------------------------------------
    def start(self) -> list[Message]:
        """Round 0: the Setup message for every cohort member."""
        if self.state is not ServerState.SETUP:
            raise LocalProtocolError(f"can't start in state {self.state.value}")
        nxt = server_next(self.mode, self.state)
        p = self.params
        out = [Setup(self.session_id, self.round, u, self.cohort, p.neighbours, p.threshold,
                     self.dim, self.config.bits, self.mode, p.min_survivors, self.graph_seed)
               for u in self.cohort]
        self.state = nxt
        return out

    # -- receiving -------------------------------------------------------------------------
    def receive(self, m: Message) -> None:
        """Accept one client message, or raise RemoteProtocolError and discard it."""
        if self.state in (ServerState.DONE, ServerState.ABORTED):
            raise self._refuse(m, "the round is over")
        try:
            server_accepts(self.state, type(m))
        except LocalProtocolError as exc:
            raise self._refuse(m, str(exc)) from None
        if m.session_id != self.session_id or m.round != self.round:
            raise self._refuse(m, "wrong session or round (replay)")
        if m.sender not in self.graph.clients:
            raise self._refuse(m, "sender is not in the cohort")
        self._handlers[type(m)](self, m)

    def _on_keys(self, m: AdvertiseKeys) -> None:
        if m.sender in self.keys:
            raise self._refuse(m, "duplicate AdvertiseKeys")
        if self.mode == "malicious":
            try:
                self.registry[m.sender].verify(
                    m.signature, advertise_bytes(self.session_id, self.round, self.graph_seed,
                                                 m.sender, m.c_pk, m.s_pk, m.b_commitment),
                    label=ADVERTISE_LABEL)
            except SecAggError:
                raise self._refuse(m, "bad key signature") from None
        elif m.signature:
            raise self._refuse(m, "unexpected signature in semi-honest mode")
        self.keys[m.sender] = m
        self._held += 132 + len(m.signature)

    def _on_share_keys(self, m: ShareKeys) -> None:
        if m.sender not in self.keys:
            raise self._refuse(m, "sender did not advertise keys")
        if m.sender in self.share_msgs:
            raise self._refuse(m, "duplicate ShareKeys")
        expected = frozenset(v for v in self.graph.neighbours(m.sender) if v in self.keys)
        if frozenset(v for v, _ in m.ciphertexts) != expected:
            raise self._refuse(m, "ciphertexts must address exactly the neighbours in U1")
        self.share_msgs[m.sender] = m
        self._held += sum(len(ct) + 8 for _, ct in m.ciphertexts)

    def _on_masked(self, m: MaskedInput) -> None:
        if m.sender not in self.share_msgs:
            raise self._refuse(m, "sender did not share keys")
        if m.sender in self.u3:
            raise self._refuse(m, "duplicate MaskedInput")
        y = m.vector
        if y.dtype != self.ring.dtype or y.shape != (self.dim,):
            raise self._refuse(m, f"vector must be {self.ring.dtype} of length {self.dim}")
        try:
            self.ring.validate(y, length=self.dim)
        except SecAggError as exc:
            raise self._refuse(m, str(exc)) from None
        if self.acc is None:
            self.acc = self.ring.zeros(self.dim)
        np.add(self.acc, y, out=self.acc)
        self.ring.reduce(self.acc, out=self.acc)
        self.u3.add(m.sender)

    def _on_signature(self, m: ConsistencySignature) -> None:
        if m.sender not in self.u3 or m.sender in self.signatures:
            raise self._refuse(m, "not a survivor, or a duplicate signature")
        try:
            self.registry[m.sender].verify(
                m.signature, survivors_bytes(self.session_id, self.round, self.graph_seed,
                                             tuple(sorted(self.u3)), key_root=self.key_root),
                label=CONSISTENCY_LABEL)
        except SecAggError:
            raise self._refuse(m, "consistency signature does not verify") from None
        self.signatures[m.sender] = m.signature

    def _on_unmask(self, m: UnmaskResponse) -> None:
        req = self.requests.get(m.sender)
        if req is None or m.sender in self.responses:
            raise self._refuse(m, "no unmask request was sent to it, or a duplicate response")
        if (tuple(o for o, _ in m.self_mask_shares) != req.alive
                or tuple(o for o, _ in m.key_shares) != req.dead):
            raise self._refuse(m, "shares do not match the request")
        try:
            alive = [(o, Share.from_bytes(raw)) for o, raw in m.self_mask_shares]
            dead = [(o, Share.from_bytes(raw)) for o, raw in m.key_shares]
        except SecAggError as exc:
            raise self._refuse(m, f"malformed share: {exc}") from None
        if any(sh.x != m.sender + 1 or sh.threshold != self.t for _, sh in alive + dead):
            raise self._refuse(m, "share with the wrong x-coordinate or threshold")
        self.responses[m.sender] = m
        self.parsed[m.sender] = (alive, dead)
        self._held += sum(len(raw) + 8 for _, raw in m.self_mask_shares + m.key_shares)

    _handlers = {
        AdvertiseKeys: _on_keys,
        ShareKeys: _on_share_keys,
        MaskedInput: _on_masked,
        ConsistencySignature: _on_signature,
        UnmaskResponse: _on_unmask,
    }

    # -- closing stages ----------------------------------------------------------------------
    def close_stage(self) -> list[Message]:
        """The current stage's deadline passed: move on, or raise RoundAborted."""
        if self.state in (ServerState.DONE, ServerState.ABORTED, ServerState.SETUP):
            raise LocalProtocolError(f"can't close stage in state {self.state.value}")
        handler = self._closers[self.state]
        try:
            out = handler(self)
        except RoundAborted:
            raise
        except Exception as exc:
            # Whatever went wrong (a value no check anticipated), the round ends here, in a
            # terminal state, with a typed abort: nothing a client sent may leave it half-open.
            raise self._abort("internal-error", f"{type(exc).__name__}: {exc}") from exc
        self.state = server_next(self.mode, self.state)
        return out

    def _need(self, have: int, reason: str) -> None:
        if have < self.params.min_survivors:
            raise self._abort(reason, f"{have} clients, minimum {self.params.min_survivors}")

    def _close_keys(self) -> list[Message]:
        u1 = self.u1
        self._need(len(u1), "too-few-clients")
        members = sorted(u1)
        entry = {v: (v, self.keys[v].c_pk, self.keys[v].s_pk, self.keys[v].b_commitment,
                     self.keys[v].signature) for v in members}
        tree, index = None, {}
        if self.mode == "malicious":
            tree = key_tree(self.session_id, self.round, self.graph_seed, self.cohort, entry)
            index = {v: i for i, v in enumerate(self.cohort)}
            self.key_root = tree.root
        out = []
        for u in members:
            nb = self.graph.neighbours(u) & u1
            if len(nb) < self.t:
                raise self._abort("neighbourhood-below-threshold",
                                  f"client {u} has {len(nb)} neighbours with keys, t = {self.t}")
            ids = sorted(nb | {u})
            entries = tuple(entry[v] for v in ids)
            if tree is None:
                out.append(KeysBroadcast(self.session_id, self.round, u, entries))
            else:
                proofs = tuple((v, index[v], tree.proof(index[v])) for v in ids)
                out.append(KeysBroadcast(self.session_id, self.round, u, entries,
                                         tree.count, tree.root, proofs))
        return out

    def _close_shares(self) -> list[Message]:
        u2 = self.u2
        self._need(len(u2), "too-few-clients")
        inbox: dict[int, list[tuple[int, bytes]]] = {v: [] for v in u2}
        for u in sorted(u2):
            for v, ct in self.share_msgs[u].ciphertexts:
                if v in inbox:
                    inbox[v].append((u, ct))
        return [SharesDelivery(self.session_id, self.round, v, tuple(inbox[v]))
                for v in sorted(u2)]

    def _check_recoverable(self, responders: frozenset[int]) -> None:
        """Abort before any share is requested if some mask could never be removed: b_u needs
        t responding neighbours of each survivor u, and s_u^SK needs t for each dropped u whose
        pairwise masks are in surviving inputs."""
        u3 = frozenset(self.u3)
        for u in sorted(self.u2):
            has_masks_in_sum = u in u3 or bool(self.graph.neighbours(u) & u3)
            answering = len(self.graph.neighbours(u) & responders)
            if has_masks_in_sum and answering < self.t:
                raise self._abort("unrecoverable-dropout",
                                  f"client {u} has {answering} neighbours left to answer, "
                                  f"t = {self.t}")

    def _close_masked(self) -> list[Message]:
        self._need(len(self.u3), "too-few-survivors")
        self._check_recoverable(frozenset(self.u3))
        if self.mode == "malicious":
            u3 = tuple(sorted(self.u3))
            return [ConsistencyRequest(self.session_id, self.round, v, u3) for v in u3]
        return self._unmask_requests(sorted(self.u3), ())

    def _close_consistency(self) -> list[Message]:
        quorum = self.params.quorum
        if len(self.signatures) < quorum:
            raise self._abort("too-few-signatures", f"{len(self.signatures)} < quorum {quorum}")
        self._check_recoverable(frozenset(self.signatures))
        sigs = tuple(sorted(self.signatures.items()))
        return self._unmask_requests(sorted(self.signatures), sigs)

    def _unmask_requests(self, recipients: list[int], sigs: tuple) -> list[Message]:
        u2, u3 = self.u2, frozenset(self.u3)
        out = []
        for v in recipients:
            nb = self.graph.neighbours(v) & u2
            req = UnmaskRequest(self.session_id, self.round, v, tuple(sorted(nb & u3)),
                                tuple(sorted(nb - u3)), sigs)
            self.requests[v] = req
            out.append(req)
        return out

    def _close_unmask(self) -> list[Message]:
        """Reconstruct b_u for every survivor and s_u^SK for every dropped client with masks in
        the sum, validate each value against what its dealer advertised, remove the masks."""
        u2, u3 = self.u2, frozenset(self.u3)
        b_shares: dict[int, list[Share]] = {u: [] for u in u3}
        s_shares: dict[int, list[Share]] = {}
        for alive, dead in self.parsed.values():
            for owner, sh in alive:
                b_shares[owner].append(sh)
            for owner, sh in dead:
                s_shares.setdefault(owner, []).append(sh)
        seeds = []
        for u in sorted(u3):
            seed, corrected, _ = self._reconstruct(u, "b", b_shares[u])
            if commit_self_seed(self.session_id, self.round, u, seed) != self.keys[u].b_commitment:
                raise self._abort("bad-reconstruction", f"b_{u} does not match its commitment "
                                  "(forged shares, or a bad dealing)")
            self._note_wrong(u, "b", corrected)
            if len(seed) != SEED_BYTES:  # committed to by u itself: u's own fault
                raise self._abort("bad-dealing", f"b_{u} is {len(seed)} bytes, not {SEED_BYTES}, "
                                  f"and matches client {u}'s commitment: client {u} dealt an "
                                  "invalid seed", clients=(u,))
            seeds.append(seed)
        pairwise = []
        mctx = KdfContext(self.session_id, self.round, PURPOSE_MASK)
        for u in sorted(u2 - u3):
            alive_nbrs = sorted(self.graph.neighbours(u) & u3)
            if not alive_nbrs:
                continue
            raw, corrected, agreeing = self._reconstruct(u, "s", s_shares.get(u, []))
            s_u = KeyPair.from_private_bytes(raw) if len(raw) == KEY_BYTES else None
            if s_u is None or s_u.public_bytes != self.keys[u].s_pk:
                what = (f"is {len(raw)} bytes, not {KEY_BYTES}" if s_u is None
                        else f"does not match s_{u}^PK")
                if not corrected and agreeing >= 2 * self.t - 1:
                    raise self._abort("bad-dealing", f"s_{u}^SK {what}, and {agreeing} shares "
                                      f"agree: client {u} dealt an invalid key", clients=(u,))
                raise self._abort("bad-reconstruction", f"s_{u}^SK {what} (forged shares, or "
                                  "a bad dealing)")
            self._note_wrong(u, "s", corrected)
            for v in alive_nbrs:
                s_uv = agree(s_u, self.keys[v].s_pk, own_id=u, peer_id=v, context=mctx)
                pairwise.append(PairwiseMask(s_uv, pairwise_sign(v, u)))
        remove_masks(self.acc, ring=self.ring, self_seeds=seeds, pairwise=pairwise)
        self.aggregate = self.acc
        return []

    def _reconstruct(self, owner: int, kind: str,
                     shares: list[Share]) -> tuple[bytes, tuple[int, ...], int]:
        """The secret ``kind`` (b or s) of ``owner`` from its holders' shares: ``(secret,
        holders of wrong shares, number of shares that agree)``.

        Shares of the most common dealing id are decoded (:func:`secagg.decode`: the cheap
        consistency check, then correction of up to floor((N - t) / 2) wrong shares); a share
        of another dealing id counts as wrong (an erasure). An undecodable set aborts.

        Nothing here blames anyone: the caller names the wrong holders only once the value has
        passed its check (decoding steered by forgers past the radius would name honest ones),
        and blames the dealer only on evidence forgers cannot fake. For b_u that is the
        dealer's own commitment. For s_u it is at least 2t - 1 agreeing shares and none
        corrected: colluding holders can shift their shares onto another polynomial through the
        honest shares only while fewer than t honest holders answer, so faking agreement among
        2t - 1 needs t corrupted neighbours, which the parameters exclude (Bell et al. CCS
        2020, section 4: fewer than t corrupted neighbours, except with probability 2^-40).
        """
        ids = Counter(sh.dealing_id for sh in shares)
        main = ids.most_common(1)[0][0] if ids else None
        foreign = tuple(sh.x - 1 for sh in shares if sh.dealing_id != main)
        kept = [sh for sh in shares if sh.dealing_id == main]
        try:
            got = decode(kept, threshold=self.t)
        except SecAggError as exc:
            raise self._abort("cannot-reconstruct", f"{kind}_{owner}: {exc}") from None
        wrong = tuple(sorted(foreign + tuple(x - 1 for x in got.bad_x)))
        return got.secret, wrong, len(kept) - len(got.bad_x)

    def _note_wrong(self, owner: int, kind: str, holders: tuple[int, ...]) -> None:
        """Record the holders whose shares of a value that passed its check were wrong."""
        for h in holders:
            self.bad_shares.setdefault(h, []).append((owner, kind))

    _closers = {
        ServerState.ADVERTISE_KEYS: _close_keys,
        ServerState.SHARE_KEYS: _close_shares,
        ServerState.MASKED_INPUT: _close_masked,
        ServerState.CONSISTENCY_CHECK: _close_consistency,
        ServerState.UNMASKING: _close_unmask,
    }

    @property
    def survivors(self) -> frozenset[int]:
        """U3: the clients whose inputs are in the aggregate."""
        return frozenset(self.u3)

    def retained_bytes(self) -> int:
        """Bytes the server holds for the round: the running sum plus per-client state (keys,
        routed ciphertexts, received shares), counted as messages are accepted."""
        return (self.acc.nbytes if self.acc is not None else 0) + self._held
