"""One client's side of a round, sans-IO: messages in, messages out.

Bonawitz et al. (CCS 2017) section 4 and Bell et al. (CCS 2020) section 3: AdvertiseKeys,
ShareKeys, MaskedInput, ConsistencyCheck (malicious mode), Unmasking. No sockets, threads or
clocks: :meth:`ClientRound.receive` takes a decoded server message and returns the messages to
send. Every check that DESIGN.md section 4 lists for a hardened client is here; a failed check
is raised as :class:`RemoteProtocolError` (the server or a peer misbehaved) at the one boundary
in :meth:`receive`, and the client then stays in ERROR for good.
"""

from __future__ import annotations

import secrets
from bisect import bisect_left
from collections.abc import Mapping, MutableSet

import numpy as np

from secagg import (
    AeadContext,
    KdfContext,
    KeyPair,
    PairwiseMask,
    Ring,
    SecAggError,
    Share,
    SigningKey,
    VerifyKey,
    agree,
    decrypt,
    encrypt,
    harary_graph,
    mask_input,
    pairwise_sign,
    split,
)
from secagg.keyagreement import PURPOSE_MASK, PURPOSE_SHARE_ENCRYPTION
from secagg.merkle import InclusionError, verify_inclusion
from secagg.shamir import SHARE_BYTES

from .config import ConfigError, RoundConfig, RoundParameters, derive_graph_seed
from .errors import LocalProtocolError, RemoteProtocolError
from .messages import (
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
    key_leaf,
    survivors_bytes,
)
from .transitions import ANY, ClientState, client_next


class InputError(LocalProtocolError):
    """This client's own input does not fit the round (never blamed on the server)."""


class _Refuse(Exception):
    """A check on a peer's message failed; converted to RemoteProtocolError in receive()."""


class ClientRound:
    """Client ``client_id`` for one round.

    ``config`` is the deployment's configuration as *this client* knows it: a Setup whose mode,
    bit width, degree, threshold or minimum survivors differ from ``config.resolve(n)`` is
    refused, so a server cannot downgrade the mode or weaken the parameters.

    ``used_sessions`` is the store of session ids this identity has taken part in (see
    :mod:`protocol.sessions`): a Setup that reuses one is refused. Malicious mode requires it,
    kept per identity across objects, processes and restarts (a
    :class:`~protocol.sessions.FileSessionStore`, or
    :func:`~protocol.sessions.store_for_identity` in one process): an identity that took part
    in one session twice could be made to sign two survivor sets for it.
    """

    def __init__(
        self,
        client_id: int,
        *,
        config: RoundConfig,
        input: np.ndarray | None = None,  # noqa: A002 - the protocol's x_u
        identity: SigningKey | None = None,
        registry: Mapping[int, VerifyKey] | None = None,
        used_sessions: MutableSet[bytes] | None = None,
    ) -> None:
        if isinstance(client_id, bool) or not isinstance(client_id, int) or client_id < 0:
            raise LocalProtocolError(f"client id must be a non-negative int, got {client_id!r}")
        if not isinstance(config, RoundConfig):
            raise LocalProtocolError("config must be the deployment's RoundConfig")
        if config.mode == "malicious" and (identity is None or registry is None):
            raise LocalProtocolError("malicious mode needs an identity key and a registry")
        if config.mode == "malicious" and used_sessions is None:
            raise LocalProtocolError("malicious mode needs a persistent used-session store "
                                     "(used_sessions) kept for this identity")
        self.config = config
        self.id = client_id
        self.state = ClientState.IDLE
        self._input = input
        self._identity = identity
        self._registry = registry
        self._used = used_sessions if used_sessions is not None else set()
        self.setup: Setup | None = None
        self.error: str | None = None

    # -- the one boundary ------------------------------------------------------------------
    def receive(self, message: Message) -> list[Message]:
        """Process one server message; return the messages to send back."""
        if self.state is ClientState.ERROR:
            raise LocalProtocolError(f"client {self.id} is in ERROR: {self.error}")
        mode = self.setup.mode if self.setup else ANY
        try:
            nxt = client_next(mode, self.state, type(message))
            self._check_binding(message)
            out = self._handlers[type(message)](self, message)
        except InputError as exc:
            self._fail(str(exc))
            raise
        except (LocalProtocolError, _Refuse, SecAggError) as exc:
            self._fail(str(exc))
            raise RemoteProtocolError(f"client {self.id} refuses: {exc}") from exc
        self.state = nxt
        return out

    def accepts(self, message: Message) -> bool:
        """Whether ``message`` is legal now (state, recipient, session and round), without
        processing it or changing any state: lets a caller avoid work (or a privacy charge)
        for a message :meth:`receive` would refuse anyway."""
        if self.state is ClientState.ERROR:
            return False
        mode = self.setup.mode if self.setup else ANY
        try:
            client_next(mode, self.state, type(message))
            self._check_binding(message)
        except (LocalProtocolError, _Refuse):
            return False
        return True

    def _fail(self, reason: str) -> None:
        self.state = ClientState.ERROR
        self.error = reason

    def _check_binding(self, m: Message) -> None:
        if getattr(m, "recipient", None) != self.id:
            raise _Refuse(f"message addressed to {getattr(m, 'recipient', None)}, not {self.id}")
        if isinstance(m, Setup):
            if m.session_id in self._used:
                raise _Refuse("replayed session: this session id was already used")
            return
        assert self.setup is not None
        if m.session_id != self.setup.session_id or m.round != self.setup.round:
            raise _Refuse("message from another session or round (replay)")

    # -- round 0: setup -> AdvertiseKeys -----------------------------------------------------
    def _on_setup(self, m: Setup) -> list[Message]:
        if self.id not in m.cohort:
            raise _Refuse("this client is not in the cohort")
        if m.graph_seed != derive_graph_seed(m.session_id, m.round, m.cohort):
            raise _Refuse("graph seed is not derived from the session and cohort")
        self.params = self._expected(m)
        if m.mode == "malicious":
            missing = [u for u in m.cohort if u not in self._registry]
            if missing:
                raise _Refuse(f"cohort members without a registered identity: {missing[:5]}")
        self._used.add(m.session_id)
        self.setup = m
        self.ring = Ring(m.bits)
        if self._input is not None:
            self._input = self._validated_input(self._input)
        self.graph = harary_graph(m.cohort, m.neighbours, seed=m.graph_seed)
        self.nbrs = self.graph.neighbours(self.id)
        self.c_keys, self.s_keys = KeyPair.generate(), KeyPair.generate()
        self.b_seed = secrets.token_bytes(32)
        commitment = commit_self_seed(m.session_id, m.round, self.id, self.b_seed)
        sig = b""
        if m.mode == "malicious":
            sig = self._identity.sign(
                advertise_bytes(m.session_id, m.round, m.graph_seed, self.id,
                                self.c_keys.public_bytes, self.s_keys.public_bytes, commitment),
                label=ADVERTISE_LABEL)
        return [AdvertiseKeys(m.session_id, m.round, self.id, self.c_keys.public_bytes,
                              self.s_keys.public_bytes, commitment, sig)]

    def _expected(self, m: Setup) -> RoundParameters:
        """The parameters this client's own configuration gives for the announced cohort."""
        try:
            p = self.config.resolve(len(m.cohort))
        except ConfigError as exc:
            raise _Refuse(f"this client's configuration refuses the cohort: {exc}") from None
        announced = (m.mode, m.bits, m.neighbours, m.threshold, m.min_survivors)
        expected = (self.config.mode, self.config.bits, p.neighbours, p.threshold,
                    p.min_survivors)
        if announced != expected:
            raise _Refuse(f"setup parameters {announced} differ from this client's "
                          f"configuration {expected} (mode, bits, k, t, min survivors)")
        return p

    def set_input(self, x: np.ndarray) -> None:
        """Give (or replace) x_u before MaskedInput."""
        if self.state in (ClientState.MASKED, ClientState.SIGNED, ClientState.DONE):
            raise LocalProtocolError(f"can't set the input in state {self.state.value}")
        self._input = self._validated_input(x) if self.setup else x

    def _validated_input(self, x: object) -> np.ndarray:
        try:
            return self.ring.validate(x, length=self.setup.dim, name="input")
        except SecAggError as exc:
            raise InputError(str(exc)) from exc

    # -- round 1: keys -> ShareKeys ------------------------------------------------------
    def _on_keys(self, m: KeysBroadcast) -> list[Message]:
        s = self.setup
        ids = [e[0] for e in m.keys]
        if self.id not in ids:
            raise _Refuse("own key missing from the key broadcast")
        strangers = [v for v in ids if v != self.id and v not in self.nbrs]
        if strangers:
            raise _Refuse(f"keys of clients that are not neighbours: {strangers[:5]}")
        seen: set[bytes] = set()
        self.peer_keys: dict[int, tuple[bytes, bytes]] = {}
        for v, c_pk, s_pk, commitment, sig in m.keys:
            if v == self.id:
                if (c_pk, s_pk) != (self.c_keys.public_bytes, self.s_keys.public_bytes):
                    raise _Refuse("own key misreported in the key broadcast")
            if c_pk in seen or s_pk in seen or c_pk == s_pk:
                raise _Refuse(f"duplicate public key (client {v})")
            seen |= {c_pk, s_pk}
            if s.mode == "malicious":
                try:
                    self._registry[v].verify(sig, advertise_bytes(s.session_id, s.round,
                                                                  s.graph_seed, v, c_pk, s_pk,
                                                                  commitment),
                                             label=ADVERTISE_LABEL)
                except SecAggError:
                    raise _Refuse(f"bad key signature of client {v}") from None
            elif sig:
                raise _Refuse("unexpected signature in semi-honest mode")
            if v != self.id:
                self.peer_keys[v] = (c_pk, s_pk)
        self._check_key_commitment(m)
        if len(self.peer_keys) < s.threshold:
            raise _Refuse(f"only {len(self.peer_keys)} neighbours advertised keys, t = "
                          f"{s.threshold}")
        order = sorted(self.peer_keys)
        xs = [v + 1 for v in order]
        b_sh = split(self.b_seed, threshold=s.threshold, xs=xs)
        s_sh = split(self.s_keys.private_bytes(), threshold=s.threshold, xs=xs)
        ctx = KdfContext(s.session_id, s.round, PURPOSE_SHARE_ENCRYPTION)
        # One key per pair and direction-independent: kept to open the peer's shares later.
        self.enc_keys = {v: agree(self.c_keys, self.peer_keys[v][0], own_id=self.id, peer_id=v,
                                  context=ctx) for v in order}
        out = []
        for v, bs, ss in zip(order, b_sh, s_sh, strict=True):
            out.append((v, encrypt(self.enc_keys[v], bs.to_bytes() + ss.to_bytes(),
                                   AeadContext(s.session_id, s.round, self.id, v))))
        return [ShareKeys(s.session_id, s.round, self.id, tuple(out))]

    def _check_key_commitment(self, m: KeysBroadcast) -> None:
        """Malicious mode: every entry received (this client's own and its neighbours') must be
        a leaf of the announced key commitment; the ConsistencyCheck signature covers it."""
        s = self.setup
        if s.mode != "malicious":
            if m.key_root:
                raise _Refuse("unexpected key commitment in semi-honest mode")
            return
        if not m.key_root:
            raise _Refuse("the key broadcast carries no key commitment")
        if m.key_count != len(s.cohort):
            raise _Refuse(f"key commitment over {m.key_count} leaves, the cohort has "
                          f"{len(s.cohort)}")
        for entry, (_, index, proof) in zip(m.keys, m.proofs, strict=True):
            if index != bisect_left(s.cohort, entry[0]):  # its position in the sorted cohort
                raise _Refuse(f"the key entry of client {entry[0]} is not at its cohort "
                              "position in the key commitment")
            try:
                verify_inclusion(m.key_root, key_leaf(s.session_id, s.round, s.graph_seed,
                                                      entry),
                                 index=index, count=m.key_count, proof=proof)
            except InclusionError:
                raise _Refuse(f"the key entry of client {entry[0]} is not in the key "
                              "commitment") from None
        self.key_root = m.key_root

    # -- round 2: shares -> MaskedInput ----------------------------------------------------
    def _on_shares(self, m: SharesDelivery) -> list[Message]:
        s = self.setup
        if self._input is None:
            raise InputError("no input was given before MaskedInput")
        self.held: dict[int, tuple[Share, Share]] = {}
        for v, ct in m.ciphertexts:
            if v not in self.peer_keys:
                raise _Refuse(f"shares from client {v}, which is not a neighbour with keys")
            plain = decrypt(self.enc_keys[v], ct, AeadContext(s.session_id, s.round, v, self.id))
            if len(plain) != 2 * SHARE_BYTES:
                raise _Refuse(f"malformed share plaintext from client {v}")
            pair = (Share.from_bytes(plain[:SHARE_BYTES]), Share.from_bytes(plain[SHARE_BYTES:]))
            for sh in pair:
                if sh.x != self.id + 1 or sh.threshold != s.threshold:
                    raise _Refuse(f"share from client {v} has the wrong x or threshold")
            self.held[v] = pair
        if len(self.held) < s.threshold:
            raise _Refuse(f"only {len(self.held)} neighbours shared keys, t = {s.threshold}")
        mctx = KdfContext(s.session_id, s.round, PURPOSE_MASK)
        pairs = [PairwiseMask(agree(self.s_keys, self.peer_keys[v][1], own_id=self.id, peer_id=v,
                                    context=mctx), pairwise_sign(self.id, v))
                 for v in sorted(self.held)]
        y = mask_input(self._input, ring=self.ring, self_seed=self.b_seed, pairwise=pairs)
        return [MaskedInput(s.session_id, s.round, self.id, y)]

    # -- round 4 (malicious): U3 -> signature -----------------------------------------------
    def _on_consistency(self, m: ConsistencyRequest) -> list[Message]:
        s = self.setup
        u3 = frozenset(m.survivors)
        self._check_survivors(u3)
        self.u3 = m.survivors
        sig = self._identity.sign(survivors_bytes(s.session_id, s.round, s.graph_seed,
                                                  m.survivors, key_root=self.key_root),
                                  label=CONSISTENCY_LABEL)
        return [ConsistencySignature(s.session_id, s.round, self.id, sig)]

    def _check_survivors(self, u3: frozenset[int]) -> None:
        s = self.setup
        if self.id not in u3:
            raise _Refuse("survivor set does not contain this client")
        if not u3 <= frozenset(s.cohort):
            raise _Refuse("survivor set names clients outside the cohort")
        if not (u3 & self.nbrs) <= frozenset(self.held):
            raise _Refuse("survivor set is not a subset of the clients that shared keys")
        if len(u3) < s.min_survivors:
            raise _Refuse(f"{len(u3)} survivors, below the minimum {s.min_survivors}")

    # -- round 5: unmasking ---------------------------------------------------------------
    def _on_unmask(self, m: UnmaskRequest) -> list[Message]:
        s = self.setup
        alive, dead = frozenset(m.alive), frozenset(m.dead)
        if self.id in dead:
            raise _Refuse("dead list names this client")
        both = alive & dead
        if both:
            raise _Refuse(f"clients listed both alive and dead: {sorted(both)[:5]}")
        known = frozenset(self.held)
        unknown = (alive | dead) - known
        if unknown:
            raise _Refuse(f"unknown clients or non-neighbours in the request: "
                          f"{sorted(unknown)[:5]}")
        if alive | dead != known:
            raise _Refuse("unmask request leaves neighbours that shared keys unaccounted for")
        if len(alive) < s.threshold:
            raise _Refuse(f"only {len(alive)} alive neighbours, t = {s.threshold}")
        if s.mode == "malicious":
            if alive != frozenset(self.u3) & known:
                raise _Refuse("alive list differs from the signed survivor set")
            self._check_signatures(m.signatures)
        elif m.signatures:
            raise _Refuse("unexpected signatures in semi-honest mode")
        return [UnmaskResponse(
            s.session_id, s.round, self.id,
            tuple((v, self.held[v][0].to_bytes()) for v in sorted(alive)),
            tuple((v, self.held[v][1].to_bytes()) for v in sorted(dead)),
        )]

    def _check_signatures(self, signatures: tuple[tuple[int, bytes], ...]) -> None:
        s = self.setup
        msg = survivors_bytes(s.session_id, s.round, s.graph_seed, self.u3,
                              key_root=self.key_root)
        u3 = frozenset(self.u3)
        for w, sig in signatures:
            if w not in u3:
                raise _Refuse(f"consistency signature from client {w}, not a survivor")
            try:
                self._registry[w].verify(sig, msg, label=CONSISTENCY_LABEL)
            except SecAggError:
                raise _Refuse(f"consistency signature of client {w} does not verify: it "
                              "was made over another survivor set or key commitment (another "
                              "view or another run)") from None
        if len(signatures) < self.params.quorum:
            raise _Refuse(f"only {len(signatures)} consistency signatures over this survivor "
                          f"set, the quorum is {self.params.quorum}")

    _handlers = {
        Setup: _on_setup,
        KeysBroadcast: _on_keys,
        SharesDelivery: _on_shares,
        ConsistencyRequest: _on_consistency,
        UnmaskRequest: _on_unmask,
    }
