"""The server's side of a round, sans-IO (Bonawitz et al. CCS 2017 section 4; Bell et al.
CCS 2020 section 3).

:meth:`ServerRound.receive` takes one decoded client message: a message that is illegal in the
current stage, from the wrong session, round or client, a duplicate, or that fails a check
raises :class:`RemoteProtocolError` and is discarded - nothing accepted before is touched.
:meth:`ServerRound.close_stage` is the "stage closed" signal from whoever keeps time; it
returns the messages to send, or raises :class:`RoundAborted` naming the reason. Masked inputs
are added to one running sum as they arrive: memory O(d + n k), never O(n d).

Each stage's accept and close logic is in its module under :mod:`protocol.stages`; this class
holds the round's constants, the open stage's collector and what each closed stage handed on,
and moves between them by :mod:`protocol.transitions`. The loop that drives it (deliver,
collect, close) is :class:`protocol.driver.RoundDriver`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

import numpy as np

from secagg import Ring, VerifyKey, harary_graph

from .config import Mode, RoundConfig, RoundParameters, derive_graph_seed
from .errors import AbortReason, LocalProtocolError, RoundAborted
from .messages import (
    MAX_CLIENT_ID,
    MAX_VECTOR_BYTES,
    SESSION_ID_BYTES,
    AdvertiseKeys,
    Message,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from .stages.advertise_keys import Advertised, CollectKeys, setup_messages
from .stages.common import ServerContext
from .stages.consistency_check import CollectSignatures
from .stages.masked_input import CollectInputs, Summed
from .stages.share_keys import CollectShares, Routed
from .stages.unmasking import CollectResponses, Unmasked
from .transitions import ServerState, Stage, server_accepts, server_next

_Collector = CollectKeys | CollectShares | CollectInputs | CollectSignatures | CollectResponses
_STAGE_OF = {state: Stage(state.value) for state in ServerState if state.value in set(Stage)}


class ServerRound:
    """The server for one round over ``cohort`` with vectors of length ``dim``.

    Raises TypeError or ValueError for a bad argument (a cohort of non-ids or duplicates, a
    round or dimension out of range, a session id that is not 32 bytes, malicious mode without
    a registry covering the cohort), and :class:`~protocol.config.ConfigError` if the
    configuration cannot be resolved for the cohort.
    """

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
            raise TypeError("config must be a RoundConfig")
        members = list(cohort)
        if any(type(u) is not int or not 0 <= u <= MAX_CLIENT_ID for u in members):
            raise ValueError("cohort must be distinct client ids in [0, 2^32 - 2]")
        ids = tuple(sorted(members))
        if len(set(ids)) != len(ids):
            raise ValueError("cohort must be distinct client ids in [0, 2^32 - 2]")
        if type(round) is not int or not 0 <= round < 1 << 32:
            raise ValueError(f"round must be an int in [0, 2^32), got {round!r}")
        width = 4 if config.bits <= 32 else 8
        if type(dim) is not int or not 1 <= dim or dim * width > MAX_VECTOR_BYTES:
            raise ValueError(f"dim must be a positive int of at most "
                             f"{MAX_VECTOR_BYTES // width} words, got {dim!r}")
        params = config.resolve(len(ids))
        if config.mode == Mode.MALICIOUS and (registry is None
                                              or any(u not in registry for u in ids)):
            raise ValueError("malicious mode needs a registry covering the cohort")
        session_id = session_id if session_id is not None else secrets.token_bytes(32)
        if not isinstance(session_id, bytes) or len(session_id) != SESSION_ID_BYTES:
            raise ValueError("session_id must be 32 bytes")
        graph_seed = derive_graph_seed(session_id, round, ids)
        self._ctx = ServerContext(config, params, ids, dim, session_id, round, graph_seed,
                                  harary_graph(ids, params.neighbours, seed=graph_seed),
                                  Ring(config.bits), registry)
        self._state = ServerState.SETUP
        self._open: _Collector | None = None  # the collector of the stage now open
        self._collectors: dict[Stage, _Collector] = {}
        # what each closed stage handed on, None until it closes
        self._advertised: Advertised | None = None
        self._routed: Routed | None = None
        self._summed: Summed | None = None
        self._unmasked: Unmasked | None = None
        self._abort: RoundAborted | None = None

    # -- the round's constants -----------------------------------------------------------
    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def stage(self) -> Stage | None:
        """The stage now open (None before the start and after the end)."""
        return _STAGE_OF.get(self._state)

    config = property(lambda self: self._ctx.config)
    params: RoundParameters = property(lambda self: self._ctx.params)
    mode: Mode = property(lambda self: self._ctx.mode)
    cohort: tuple[int, ...] = property(lambda self: self._ctx.cohort)
    dim: int = property(lambda self: self._ctx.dim)
    session_id: bytes = property(lambda self: self._ctx.session_id)
    round: int = property(lambda self: self._ctx.round)
    graph_seed: bytes = property(lambda self: self._ctx.graph_seed)
    graph = property(lambda self: self._ctx.graph)
    ring: Ring = property(lambda self: self._ctx.ring)
    registry = property(lambda self: self._ctx.registry)
    t: int = property(lambda self: self._ctx.t)

    # -- what the stages collected (read-only views) --------------------------------------
    def _collected(self, stage: Stage):
        return self._collectors.get(stage)

    @property
    def keys(self) -> Mapping[int, AdvertiseKeys]:
        """U1's advertisements, as accepted so far."""
        c = self._collected(Stage.ADVERTISE_KEYS)
        return c.keys if c is not None else {}

    @property
    def share_msgs(self) -> Mapping[int, ShareKeys]:
        c = self._collected(Stage.SHARE_KEYS)
        return c.share_msgs if c is not None else {}

    @property
    def u1(self) -> frozenset[int]:
        return frozenset(self.keys)

    @property
    def u2(self) -> frozenset[int]:
        return frozenset(self.share_msgs)

    @property
    def u3(self) -> frozenset[int]:
        """The clients whose masked inputs are in the running sum."""
        c = self._collected(Stage.MASKED_INPUT)
        return c.u3 if c is not None else frozenset()

    survivors = u3

    @property
    def masked_sum(self) -> np.ndarray | None:
        """The running sum of the masked inputs (read-only; None before the first)."""
        c = self._collected(Stage.MASKED_INPUT)
        if c is None or c.masked_sum is None:
            return None
        view = c.masked_sum.view()
        view.flags.writeable = False
        return view

    @property
    def key_root(self) -> bytes:
        """The key commitment (malicious mode, once AdvertiseKeys closed; else empty)."""
        return self._advertised.key_root if self._advertised is not None else b""

    @property
    def signatures(self) -> Mapping[int, bytes]:
        c = self._collected(Stage.CONSISTENCY_CHECK)
        return c.signatures if c is not None else {}

    @property
    def requests(self) -> Mapping[int, UnmaskRequest]:
        c = self._collected(Stage.UNMASKING)
        return c.requests if c is not None else {}

    @property
    def responses(self) -> Mapping[int, UnmaskResponse]:
        c = self._collected(Stage.UNMASKING)
        return c.responses if c is not None else {}

    @property
    def bad_shares(self) -> dict[int, list[tuple[int, str]]]:
        """holder -> [(owner, "b" or "s")]: shares that robust reconstruction found wrong."""
        c = self._collected(Stage.UNMASKING)
        return c.bad_shares if c is not None else {}

    @property
    def aggregate(self) -> np.ndarray | None:
        """The sum of U3's inputs once the round is DONE (None before)."""
        return self._unmasked.aggregate if self._unmasked is not None else None

    @property
    def abort(self) -> RoundAborted | None:
        return self._abort

    def retained_bytes(self) -> int:
        """Bytes the server holds for the round: the running sum plus per-client state (keys,
        routed ciphertexts, received shares), counted as messages are accepted."""
        return sum(c.held_bytes for c in self._collectors.values())

    # -- start -----------------------------------------------------------------------------
    def start(self) -> list[Message]:
        """Round 0: the Setup message for every cohort member. Raises LocalProtocolError if
        the round has started already."""
        if self._state is not ServerState.SETUP:
            raise LocalProtocolError(f"can't start in state {self._state.value}")
        out = setup_messages(self._ctx)
        self._enter(server_next(self.mode, self._state), out)
        return out

    def _enter(self, state: ServerState, requests: list[Message]) -> None:
        """Move to ``state`` and open its stage's collector (Unmasking's answers
        ``requests``, the messages that open it)."""
        self._state = state
        ctx = self._ctx
        match state:
            case ServerState.ADVERTISE_KEYS:
                self._open = CollectKeys(ctx)
            case ServerState.SHARE_KEYS:
                self._open = CollectShares(ctx, self._advertised)
            case ServerState.MASKED_INPUT:
                self._open = CollectInputs(ctx, self._routed)
            case ServerState.CONSISTENCY_CHECK:
                self._open = CollectSignatures(ctx, self.key_root, self._routed, self._summed)
            case ServerState.UNMASKING:
                self._open = CollectResponses(ctx, self._advertised.keys, self._routed,
                                              self._summed, requests)
            case _:
                self._open = None
        if self._open is not None:
            self._collectors[Stage(state.value)] = self._open

    # -- receiving -------------------------------------------------------------------------
    def receive(self, m: Message) -> None:
        """Accept one client message. Raises RemoteProtocolError (and discards it) if it is
        illegal now, from another session, round or client, a duplicate, or fails a check."""
        ctx, state = self._ctx, self._state
        if state in (ServerState.DONE, ServerState.ABORTED):
            raise ctx.refuse(state.value, m, "the round is over")
        try:
            server_accepts(state, type(m))
        except LocalProtocolError as exc:
            raise ctx.refuse(state.value, m, str(exc)) from None
        if m.session_id != ctx.session_id or m.round != ctx.round:
            raise ctx.refuse(state.value, m, "wrong session or round (replay)")
        if m.sender not in ctx.graph.clients:
            raise ctx.refuse(state.value, m, "sender is not in the cohort")
        self._open.accept(m)

    # -- closing stages ----------------------------------------------------------------------
    def close_stage(self) -> list[Message]:
        """The current stage's deadline passed (or every client answered): move on, and return
        the messages that open the next stage. Raises LocalProtocolError if no stage is open,
        and RoundAborted (leaving the round ABORTED for good) if the round cannot go on."""
        if self._open is None:
            raise LocalProtocolError(f"can't close stage in state {self._state.value}")
        stage = self.stage
        try:
            out = self._close()
        except RoundAborted as exc:
            self._aborted(exc)
            raise
        except Exception as exc:
            # Whatever went wrong (a value no check anticipated), the round ends here, in a
            # terminal state, with a typed abort: nothing a client sent may leave it half-open.
            abort = RoundAborted(stage, AbortReason.INTERNAL_ERROR,
                                 f"{type(exc).__name__}: {exc}")
            self._aborted(abort)
            raise abort from exc
        return out

    def _close(self) -> list[Message]:
        """Close the open stage: keep what it hands on, open the next one."""
        nxt = server_next(self.mode, self._state)
        out: list[Message] = []
        match self._open:
            case CollectKeys() as c:
                self._advertised, out = c.close()
            case CollectShares() as c:
                self._routed, out = c.close()
            case CollectInputs() as c:
                self._summed, out = c.close()
            case CollectSignatures() as c:
                _, out = c.close()
            case CollectResponses() as c:
                self._unmasked = c.close()
        self._enter(nxt, out)
        return out

    def give_up(self, abort: RoundAborted) -> None:
        """End the round from outside (its host could not go on: the DP write-ahead record
        failed before any unmasking request left). The round is ABORTED for good."""
        if self._state in (ServerState.DONE, ServerState.ABORTED):
            raise LocalProtocolError(f"can't give up in state {self._state.value}")
        self._aborted(abort)

    def _aborted(self, exc: RoundAborted) -> None:
        self._state, self._open, self._abort = ServerState.ABORTED, None, exc
