"""The client side in Flower: a ClientApp mod, used where Flower's ``secaggplus_mod`` is.

``ClientApp(client_fn=..., mods=[hardened_secagg_mod])``. Every TRAIN message of a round is
one of ours (:mod:`protocol.flower.records`); the mod answers it through this node's
:class:`~protocol.participant.Participant` and replies with our bytes only. A TRAIN message
without our records is refused: the mod never lets a plaintext update leave the node.

The app's own training (``call_next``) runs only when the machine needs its input, at the
MaskedInput stage: the mod computes the model delta against the global parameters that came
with the shares, encodes it (with DP: clip, rotate, scale, round and noise, the node charged in
its own ledger just before the masked vector leaves; without: the same encoding without
noise, its wrap bound checked) and masks it. The training's parameters and metrics never
reach the server.

Between messages (a fresh ClientApp process each time in Flower's deployment engine) the round
is kept in ``context.state`` as a blob sealed under the node-local key
(:mod:`protocol.client_state`); the node's used sessions and the blobs' progress are files in
its ``state_dir``, so a replayed Setup or a rolled-back blob is refused across processes and
restarts. Everything the node relies on (round configuration, DP configuration, identity,
registry) comes from its own settings (:mod:`protocol.flower.settings`), never the server.
"""

from __future__ import annotations

import fcntl
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from logging import ERROR, WARNING

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore import log

from dp.ledger import open_ledger

from ..client import ClientRound
from ..client_state import ProgressStore, StateSealer, load_node_key
from ..dp_plan import DPClient, plan_dp
from ..errors import (
    ForeignState,
    LocalProtocolError,
    RemoteProtocolError,
    StateError,
    StateTampered,
)
from ..messages import (
    ConsistencyRequest,
    KeysBroadcast,
    Setup,
    SharesDelivery,
    UnmaskRequest,
)
from ..participant import Participant
from ..real_sum import SumClient, plan_sum
from ..sessions import FileSessionStore
from ..transitions import ClientState
from ..wire import decode, encode
from .records import IDENTIFY, STATE_RECORD, meta_int, put_frame, put_meta, take_frame, take_meta
from .settings import NodeSettings, settings_for

MAX_UPDATE_DIM = 1 << 27
SERVER_MESSAGES = (Setup, KeysBroadcast, SharesDelivery, ConsistencyRequest, UnmaskRequest)


@dataclass
class _Round:
    """This node's side of the round a message belongs to, for the length of one message."""

    participant: Participant
    update_dim: int
    encoder: SumClient | None  # None with DP: the Participant's DPClient encodes


class NodeRefused(Exception):  # noqa: N818 - what the server reads in the error reply
    """The node refused a message; the reason is all the server learns of why.

    A refusal of the server's message (:class:`~protocol.errors.RemoteProtocolError`) or of a
    kept state (:class:`~protocol.errors.StateError`) is named with its reason; any other
    failure on the node (its files, its settings, the app's training) only by its type, so no
    path or local detail reaches the server (the full error is logged on the node)."""


class _Node:
    """One node's files and keys, held for one message under the node's lock.

    The lock (``state_dir/lock``, an exclusive ``flock``) is held from before the progress store
    is read until the reply's state is sealed: two messages handled at once (a server that
    sends a stage message twice; Flower starts a process per message) are taken one after the
    other, and the second finds its blob already consumed."""

    def __init__(self, s: NodeSettings, encoder: type[SumClient] = SumClient) -> None:
        self.settings, self._encoder = s, encoder
        s.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(s.state_dir / "lock", "a+b")  # noqa: SIM115 - held until close()
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.used = FileSessionStore(s.state_dir / "sessions")
        self.progress = ProgressStore(s.state_dir / "progress.json")
        self.sealer = StateSealer(load_node_key(s.state_key), self.progress)
        self.registry = s.registry.keys if s.registry is not None else None

    def round_for(self, cid: int, setup: Setup, update_dim: int) -> _Round:
        """This node's side of ``setup``'s round under its own plan for the cohort."""
        s, n = self.settings, len(setup.cohort)
        if s.dp is not None:
            plan = plan_dp(s.dp, s.round, n, update_dim)
            ledger = open_ledger(s.ledger, s.dp.budget, owner=f"client {cid}")
            p = Participant(cid, config=plan.round_config, identity=s.identity,
                            registry=self.registry, used_sessions=self.used,
                            dp=DPClient(cid, plan, ledger))
            return _Round(p, update_dim, None)
        plan = plan_sum(s.sum, s.round, n, update_dim)
        p = Participant(cid, config=s.round, identity=s.identity, registry=self.registry,
                        used_sessions=self.used)
        return _Round(p, update_dim, self._encoder(plan))

    def close(self, r: _Round | None) -> None:
        try:
            dp = r.participant.dp if r is not None else None
            if dp is not None and dp.ledger is not None:
                dp.ledger.close()
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()


def is_ours(message_type: str) -> bool:
    """TRAIN messages (``train`` and ``train.<action>``) are secure aggregation's."""
    return message_type == MessageType.TRAIN or message_type.startswith(MessageType.TRAIN + ".")


def make_hardened_secagg_mod(settings: Callable[[Context], NodeSettings] = settings_for, *,
                             encoder: type[SumClient] = SumClient):
    """A mod that reads this node's settings with ``settings(context)`` (by default from the
    file its node config or environment names: :func:`protocol.flower.settings.settings_for`).
    Without DP, the app's update is encoded for the secure sum by ``encoder(plan)`` (a
    :class:`~protocol.real_sum.SumClient`; the conformance suite gives one that hands the mod
    a fixed ring vector).

    Messages other than TRAIN (evaluation, queries) pass to the app unprotected: what the app
    answers them with (a loss, its example count, metrics) reaches the server in the clear."""

    def hardened_secagg_mod(msg: Message, ctxt: Context, call_next) -> Message:
        if not is_ours(msg.metadata.message_type):
            return call_next(msg, ctxt)
        try:
            return _handle(settings(ctxt), msg, ctxt, call_next, encoder)
        except (RemoteProtocolError, StateError) as exc:
            log(WARNING, "hardened secure aggregation: refused: %s", exc)
            raise NodeRefused(f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:
            log(ERROR, "hardened secure aggregation: %s: %s", type(exc).__name__, exc)
            raise NodeRefused(f"{type(exc).__name__} on the node") from None

    return hardened_secagg_mod


def _handle(s: NodeSettings, msg: Message, ctxt: Context, call_next,
            encoder: type[SumClient]) -> Message:
    node = _Node(s, encoder)
    r = m = None
    try:
        if take_meta(msg.content)["stage"] == IDENTIFY:
            return _identify(node, msg)
        frame, meta = take_frame(msg.content)
        m = decode(frame)
        if not isinstance(m, SERVER_MESSAGES):
            raise RemoteProtocolError(f"a {type(m).__name__} is not a server's message")
        if isinstance(m, Setup):
            r = _join(node, m, meta)
            out = r.participant.join(m)
            node.progress.end_all()  # the round before, if any, is abandoned for good
        else:
            r = _resume(node, ctxt, m)
            out = r.participant.receive(m)
            if isinstance(m, SharesDelivery) and r.participant.needs_input:
                out = _give_input(r, msg, ctxt, call_next)
        if len(out) != 1:
            raise LocalProtocolError(f"the round made {len(out)} messages for one reply")
        _keep(node, ctxt, r)
    except Exception:
        _forget(node, ctxt, m)
        raise
    finally:
        node.close(r)
    return Message(put_frame(RecordDict(), encode(out[0]), stage=meta["stage"]), reply_to=msg)


hardened_secagg_mod = make_hardened_secagg_mod()


def _identify(node: _Node, msg: Message) -> Message:
    cid = node.settings.client_id
    if cid is None:
        raise LocalProtocolError("this node has no client id in its settings")
    return Message(put_meta(RecordDict(), stage=IDENTIFY, client_id=cid), reply_to=msg)


def _join(node: _Node, m: Setup, meta: dict) -> _Round:
    d = meta_int(meta, "update_dim", lo=1, hi=MAX_UPDATE_DIM)
    s = node.settings
    if s.client_id is not None and m.recipient != s.client_id:
        raise RemoteProtocolError(f"setup addressed to client {m.recipient}, this node is "
                                  f"client {s.client_id}")
    # semi-honest without a pinned id: the server numbers the cohort
    cid = s.client_id if s.client_id is not None else m.recipient
    r = node.round_for(cid, m, d)
    if r.encoder is not None and m.dim != r.encoder.plan.encoding.padded_dim:
        raise RemoteProtocolError(f"the setup's dimension {m.dim} is not this node's encoding "
                                  f"of {d} values ({r.encoder.plan.encoding.padded_dim} words)")
    return r


def _resume(node: _Node, ctxt: Context, m) -> _Round:
    rec = ctxt.state.config_records.get(STATE_RECORD)
    blob = rec.get("blob") if rec is not None else None
    if not isinstance(blob, bytes):
        raise ForeignState("this node keeps no round: no Setup was accepted here")
    plain = node.sealer.open(blob, client_id=m.recipient, session_id=m.session_id,
                             round=m.round)
    try:
        doc = json.loads(plain)
        d, kept = int(doc["update_dim"]), bytes.fromhex(doc["machine"])
        setup = decode(bytes.fromhex(json.loads(kept)["setup"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise StateTampered(f"the kept round does not decode: {exc}") from None
    r = node.round_for(m.recipient, setup, d)
    p = r.participant
    p.resume(ClientRound.restore_state(kept, config=p.config, identity=node.settings.identity,
                                       registry=node.registry, used_sessions=node.used))
    return r


def _give_input(r: _Round, msg: Message, ctxt: Context, call_next):
    """Train, take the delta against the global parameters that came with the shares, encode
    and mask it (with DP the node's charge is made inside ``give_input``)."""
    try:
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        base = parameters_to_ndarrays(fitins.parameters)
    except Exception as exc:  # noqa: BLE001 - whatever the records hold, refuse it typed
        raise RemoteProtocolError(f"the shares came without usable global parameters: "
                                  f"{type(exc).__name__}: {exc}") from None
    got = sum(int(np.asarray(a).size) for a in base)
    if got != r.update_dim:
        raise RemoteProtocolError(f"the global parameters have {got} values, the Setup "
                                  f"announced {r.update_dim}")
    out = call_next(msg, ctxt)
    if out.has_error():
        raise LocalProtocolError(f"the app's training failed: {out.error.reason}")
    res = compat.recorddict_to_fitres(out.content, keep_input=True)
    trained = parameters_to_ndarrays(res.parameters)
    if len(trained) != len(base) or any(np.shape(a) != np.shape(b)
                                        for a, b in zip(trained, base, strict=True)):
        raise LocalProtocolError("the app's training returned parameters of other shapes")
    delta = np.concatenate([(np.asarray(t, np.float64) - np.asarray(b, np.float64)).ravel()
                            for t, b in zip(trained, base, strict=True)])
    weight = float(res.num_examples)
    if not math.isfinite(weight) or weight < 0:
        raise LocalProtocolError(f"the app reported {res.num_examples!r} examples")
    p = r.participant
    if r.encoder is None:
        return p.give_input(delta, weight=weight if p.dp.plan.config.weighted else None)
    s = p.round.setup
    w = weight if r.encoder.plan.config.weighted else None
    return p.give_input(r.encoder.prepare(delta, session_id=s.session_id, round=s.round,
                                          weight=w))


def _keep(node: _Node, ctxt: Context, r: _Round) -> None:
    """Seal the round in ``context.state``, or end its session on the node when it is over."""
    machine = r.participant.round
    setup = machine.setup
    if machine.state in (ClientState.DONE, ClientState.ERROR):
        node.sealer.end(setup.session_id)
        ctxt.state.config_records.pop(STATE_RECORD, None)
        return
    plain = json.dumps({"update_dim": r.update_dim,
                        "machine": machine.export_state().hex()}).encode()
    blob = node.sealer.seal(machine.id, setup, machine.state, plain)
    ctxt.state.config_records[STATE_RECORD] = ConfigRecord({"blob": blob})


def _forget(node: _Node, ctxt: Context, m) -> None:
    """A refused message ends this node's part in that session for good (the node's kept
    round is dropped with it)."""
    sid = getattr(m, "session_id", None)
    if sid is not None and node.progress.get(sid) is not None:
        node.sealer.end(sid)
    ctxt.state.config_records.pop(STATE_RECORD, None)


__all__ = ["NodeRefused", "hardened_secagg_mod", "is_ours", "make_hardened_secagg_mod"]
