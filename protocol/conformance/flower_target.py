"""The conformance target of our Flower client side: a ClientApp with the mod of
:func:`protocol.flower.mod.make_hardened_secagg_mod`, called in this process with Flower
Messages as the SuperLink delivers them to a node.

Each server message becomes the Flower Message our workflow (:mod:`protocol.flower.workflow`)
sends for it: a TRAIN message of the round's group, the wire bytes in the ``secagg.frame``
record and the stage in ``secagg.meta`` (:mod:`protocol.flower.records`), with the model's
length (``update_dim``) at the first stage and the fit instructions (the global model) with the
shares. The stage is the one the message opens; bytes that are no message are sent at the stage
after the last message's (the first stage at the start). In malicious mode the session starts
with the workflow's ``identify`` round trip, and the node must name the spec's client id.

The node is what a deployment runs: its settings file (named by the node config's
``secagg-settings``, read by the mod on every message) pins the spec's round configuration and
client id, in malicious mode its identity key file and registry, and ``state_dir`` is the
spec's. Its Context lives as long as the node (one per ``state_dir``, across sessions); each
message is handled on a copy of it, taken back after the call, as Flower's deployment engine
hands a fresh ClientApp process the node's context and stores it after the reply.

The reply maps as Flower's ClientApp runtime builds it: the app's reply carries our frame (the
client's message), or the app raised (the mod refuses with ``NodeRefused``) and the reply is an
Error whose reason is the refusal; a reply that is neither is a :class:`TargetError`.

The input. The mod masks the app's training, encoded into the ring (without DP: the secure
sum's encoding, :class:`protocol.real_sum.SumClient`: clip, rotate, scale, randomized
rounding), so no trained model gives the node a chosen ring vector. The app here trains a
fixed small delta; the mod encodes it with the real encoder, and :class:`_SpecInput` (the
encoder given to :func:`~protocol.flower.mod.make_hardened_secagg_mod`) returns the spec's ring
vector in place of that encoding, so the masked input is the spec's, as the suite's sums need.
Everything else, from the settings to the sealed state, is the mod's own code.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from flwr.app import Context, Error, Message, Metadata, RecordDict
from flwr.app.message_type import MessageType
from flwr.client import ClientApp, NumPyClient
from flwr.common import FitIns, ndarrays_to_parameters
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.compat.common import recorddict_compat as compat

from dp.encoding import padded_dim

from ..config import Mode, RoundConfig
from ..errors import WireError
from ..flower.mod import make_hardened_secagg_mod
from ..flower.records import IDENTIFY, meta_int, put_frame, put_meta, take_frame, take_meta
from ..flower.settings import SETTINGS_KEY, load_node_settings
from ..messages import Message as ProtocolMessage
from ..net.errors import SettingsError
from ..net.tls import write_private
from ..real_sum import SumClient
from ..transitions import OPENS, Stage, stage_order
from ..wire import decode
from .targets import ClientSession, ClientSpec, ClientTarget, Reply, TargetError

RUN_ID = 1
NODE0 = 1000  # node id of client u: NODE0 + u
TTL = 60.0  # the workflow's default stage deadline (seconds)
DELTA = 0.01  # each coordinate of the update the app trains
_RAISED = re.compile(r"<class '([\w.]+)'>:<'(.*)'>", re.DOTALL)  # Flower's error reason


class FlowerModClient(ClientTarget):
    """A Flower node running a ClientApp with ``hardened_secagg_mod`` (see the module
    docstring). Settings files live in a directory made at the first :meth:`open` and removed
    by :meth:`close`."""

    name = "Flower ClientApp with hardened_secagg_mod"

    def __init__(self) -> None:
        self._dir: Path | None = None
        self._nodes: dict[Path, _Node] = {}  # state_dir -> the node
        self._count = itertools.count(1)

    def open(self, spec: ClientSpec) -> ClientSession:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="secagg-conformance-flower-"))
        d = self._dir / f"session-{next(self._count)}"
        d.mkdir()
        path = _write_settings(spec, d)
        try:
            settings = load_node_settings(path)
        except SettingsError as exc:
            raise TargetError(f"the node's settings do not load: {exc}") from None
        if settings.round != spec.config:
            raise TargetError(f"the node's settings hold {settings.round}, not {spec.config}")
        node = self._nodes.setdefault(Path(spec.state_dir).resolve(), _Node())
        session = _FlowerSession(spec, path, node, d)
        if spec.config.mode == Mode.MALICIOUS:
            session.identify()
        return session

    def close(self) -> None:
        self._nodes.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v))  # a TOML basic string


def _write_settings(spec: ClientSpec, d: Path) -> Path:
    """The node's settings file (and its identity key and registry in malicious mode)."""
    c: RoundConfig = spec.config
    rows = [f"client_id = {spec.client_id}", f"state_dir = {_toml(Path(spec.state_dir))}"]
    if spec.identity is not None:
        write_private(d / "identity.key", spec.identity.hex().encode() + b"\n")
        rows.append('identity = "identity.key"')
    if spec.registry is not None:
        (d / "registry.toml").write_text("".join(
            f'[[client]]\nid = {u}\ned25519 = "{k.raw.hex()}"\n\n'
            for u, k in sorted(spec.registry.items())))
        rows.append('registry = "registry.toml"')
    rows.append("\n[round]")
    for name in ("bits", "mode", "threshold", "neighbours", "min_survivors", "dropout_rate",
                 "corrupt_rate", "complete_graph"):
        v = getattr(c, name)
        if v is not None:
            rows.append(f"{name} = {_toml(v)}")
    path = d / "node.toml"
    path.write_text("\n".join(rows) + "\n")
    return path


def _update_dim(words: int) -> int:
    """The model length whose secure-sum encoding (weighted: one more word) fills exactly
    ``words`` ring words. Raises TargetError if none does."""
    for dim in range(max(words - 1, 1), 0, -1):
        if padded_dim(dim + 1) == words:
            return dim
    raise TargetError(f"no model length is encoded in {words} ring words")


class _Trainer(NumPyClient):
    """The app's training: the global model plus a fixed delta, one example."""

    def fit(self, parameters, config):
        return [np.asarray(p) + np.float32(DELTA) for p in parameters], 1, {}

    def evaluate(self, parameters, config):
        return 0.0, 1, {}


def _client_fn(context: Context):
    return _Trainer().to_client()


class _SpecInput(SumClient):
    """The mod's encoder for one session: encodes the app's update as the mod's own encoder
    does, then hands the mod the spec's ring vector in its place."""

    ring: np.ndarray

    def prepare(self, update: object, *, session_id: bytes, round: int,  # noqa: A002
                weight: float | None = None) -> np.ndarray:
        super().prepare(update, session_id=session_id, round=round, weight=weight)
        return self.ring.copy()


class _Node:
    """What a node keeps between messages: its Context's state."""

    def __init__(self) -> None:
        self.state = RecordDict()


class _FlowerSession(ClientSession):
    """One node taking part in one round: the Flower Messages of the server's messages."""

    def __init__(self, spec: ClientSpec, settings: Path, node: _Node, d: Path) -> None:
        self._spec, self._settings, self._kept, self._dir = spec, settings, node, d
        self._node = NODE0 + spec.client_id
        self._dim = _update_dim(int(spec.input.size))
        encoder = type("SessionInput", (_SpecInput,), {"ring": spec.input.copy()})
        self._app = ClientApp(client_fn=_client_fn,
                              mods=[make_hardened_secagg_mod(encoder=encoder)])
        model = [np.zeros(self._dim, dtype=np.float32)]
        self._fitins = compat.fitins_to_recorddict(
            FitIns(ndarrays_to_parameters(model), {}), True)
        self._stages = stage_order(spec.config.mode)
        self._stage: Stage | None = None  # the stage of the last message that decoded
        self._group = "0"

    # -- one Flower message ------------------------------------------------------------------
    def _message(self, content: RecordDict) -> Message:
        meta = Metadata(run_id=RUN_ID, message_id=uuid.uuid4().hex,
                        src_node_id=SUPERLINK_NODE_ID, dst_node_id=self._node,
                        reply_to_message_id="", group_id=self._group, created_at=time.time(),
                        ttl=TTL, message_type=MessageType.TRAIN)
        return Message(content=content, metadata=meta)

    def _deliver(self, msg: Message) -> Message:
        """Run the ClientApp on ``msg`` with a copy of the node's context, as Flower's
        ClientApp runtime does (an exception becomes an Error reply); keep the context."""
        ctx = Context(run_id=RUN_ID, node_id=self._node,
                      node_config={SETTINGS_KEY: str(self._settings)},
                      state=copy.deepcopy(self._kept.state), run_config={})
        try:
            reply = self._app(message=msg, context=ctx)
        except Exception as ex:  # noqa: BLE001 - what Flower's runtime does with it
            reason = str(type(ex)) + ":<'" + str(ex) + "'>"
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
                            reply_to=msg)
        self._kept.state = ctx.state
        if (reply.metadata.reply_to_message_id != msg.metadata.message_id
                or reply.metadata.src_node_id != self._node):
            raise TargetError("the node's reply answers another message or comes from "
                              "another node")
        return reply

    def identify(self) -> None:
        """The workflow's identify round trip; the node must name the spec's client id."""
        reply = self._deliver(self._message(put_meta(RecordDict(), stage=IDENTIFY)))
        if reply.has_error():
            raise TargetError(f"the node did not identify itself: {reply.error.reason}")
        try:
            cid = meta_int(take_meta(reply.content), "client_id", hi=(1 << 32) - 2)
        except WireError as exc:
            raise TargetError(f"the node's identify reply: {exc}") from None
        if cid != self._spec.client_id:
            raise TargetError(f"the node says it is client {cid}, not {self._spec.client_id}")

    def send(self, data: bytes) -> Reply:
        stage = self._stage_of(data)
        content = _copy(self._fitins) if stage is Stage.MASKED_INPUT else RecordDict()
        extra = {"update_dim": self._dim} if stage is Stage.ADVERTISE_KEYS else {}
        put_frame(content, data, stage=str(stage), **extra)
        reply = self._deliver(self._message(content))
        if reply.has_error():
            return Reply(refused=_refusal(reply.error.reason))
        try:
            frame, _ = take_frame(reply.content)
        except WireError as exc:
            raise TargetError(f"the node's reply carries no frame: {exc}") from None
        return Reply((frame,))

    def _stage_of(self, data: bytes) -> Stage:
        try:
            m: ProtocolMessage = decode(data)
        except WireError:
            m = None
        if m is not None and type(m) in OPENS:
            self._stage = OPENS[type(m)]
            self._group = str(m.round)
            return self._stage
        if self._stage is None:
            return self._stages[0]
        i = self._stages.index(self._stage)
        return self._stages[min(i + 1, len(self._stages) - 1)]

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def _refusal(reason: str) -> str:
    """An error reply's reason, Flower's ``<class 'pkg.Name'>:<'text'>`` read as
    ``Name: text``."""
    m = _RAISED.fullmatch(reason)
    return f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2)}" if m else reason


def _copy(content: RecordDict) -> RecordDict:
    out = RecordDict()
    for k, v in content.array_records.items():
        out.array_records[k] = copy.deepcopy(v)
    for k, v in content.config_records.items():
        out.config_records[k] = copy.deepcopy(v)
    return out
