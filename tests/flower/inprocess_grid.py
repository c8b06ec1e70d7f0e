"""A Flower Grid in one process, for fast tests of the workflow and the mod without Ray.

Each node is a ClientApp with its own Context; every message is handled at push time (so a
stage's replies are ready at the first pull), and the node's ``context.state`` is copied in
and out around each message, as a deployment engine's fresh ClientApp process sees it. A node
can be made silent from a stage on (``silence``: a crash, no reply ever), and ``tamper`` may
rewrite a node's kept state between messages (an attacker with access to the node's store).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from flower_apps import INIT, fit_config
from flwr.app import Context, Error, Message, RecordDict
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow

from protocol.flower.records import META_RECORD

SUPERLINK = 1


@dataclass
class _Run:
    run_id: int = 7


class InProcessGrid:
    def __init__(self, apps: dict[int, object], partitions: dict[int, int]) -> None:
        from flwr.supercore.task_identity import TaskIdentity

        # what a ServerApp process has set
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, SUPERLINK, 1
        self.apps = apps  # node id -> ClientApp
        self.contexts = {n: Context(run_id=7, node_id=n,
                                    node_config={"partition-id": partitions[n],
                                                 "num-partitions": len(apps)},
                                    state=RecordDict(), run_config={})
                         for n in apps}
        self.replies: dict[str, Message] = {}
        self.silent: dict[int, tuple[int, str]] = {}  # node -> (round, stage) from which on
        # nodes the SuperLink answers for (gone, or their TTL passed): an Error from node 1
        self.gone: set[int] = set()
        self.tamper: Callable[[int, Message, RecordDict], None] | None = None
        # a lying server: may replace a message before it reaches its node
        self.rewrite: Callable[[Message], Message] | None = None
        self.sent: list[Message] = []  # every message pushed (for checks)
        self.received: list[Message] = []  # every reply made
        self.run = _Run()

    def get_node_ids(self):
        return list(self.apps)

    def _is_silent(self, node: int, msg: Message) -> bool:
        if node not in self.silent:
            return False
        rnd, stage = self.silent[node]
        rec = msg.content.config_records.get(META_RECORD)
        here = (int(msg.metadata.group_id or 0), rec.get("stage") if rec else None)
        order = ["identify", "advertise_keys", "share_keys", "masked_input",
                 "consistency_check", "unmasking"]
        if here[0] != rnd:
            return here[0] > rnd
        return here[1] in order and order.index(here[1]) >= order.index(stage)

    def push_messages(self, messages):
        ids = []
        for pushed in messages:
            msg = pushed
            mid = uuid.uuid4().hex
            msg.metadata.__dict__["_message_id"] = mid
            msg.metadata.__dict__["_src_node_id"] = SUPERLINK
            msg.metadata.__dict__["_run_id"] = 7
            self.sent.append(msg)
            ids.append(mid)
            node = msg.metadata.dst_node_id
            if self._is_silent(node, msg):
                continue
            if node in self.gone:
                reply = Message(Error(code=3, reason="message expired"), reply_to=msg)
                reply.metadata.__dict__["_src_node_id"] = SUPERLINK
                self.replies[mid] = reply
                continue
            ctx = self.contexts[node]
            if self.rewrite is not None:
                msg = self.rewrite(msg)
            if self.tamper is not None:
                self.tamper(node, msg, ctx.state)
            fresh = Context(run_id=7, node_id=node, node_config=dict(ctx.node_config),
                            state=copy.deepcopy(ctx.state), run_config={})
            try:
                reply = self.apps[node](msg, fresh)
            except Exception as exc:  # noqa: BLE001 - a ClientApp that raises replies an Error
                reply = Message(Error(code=2, reason=f"{type(exc).__name__}: {exc}"),
                                reply_to=msg)
            ctx.state = fresh.state
            self.received.append(reply)
            self.replies[mid] = reply
        return ids

    def pull_messages(self, message_ids):
        out = [self.replies.pop(m) for m in list(message_ids) if m in self.replies]
        return out

    def send_and_receive(self, messages, *, timeout=None):
        return self.pull_messages(self.push_messages(list(messages)))


def run_rounds(grid: InProcessGrid, workflow, rounds: int):
    """Run ``rounds`` fit rounds of ``workflow`` on ``grid``; returns the workflow's report of
    each round and the global model (flattened, float64) before the first and after each."""
    from flwr.app import Context as _Ctx
    from flwr.common import parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    n = len(grid.apps)
    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
                      min_available_clients=n, on_fit_config_fn=fit_config,
                      initial_parameters=ndarrays_to_parameters(INIT))
    ctx = LegacyContext(context=_Ctx(run_id=7, node_id=0, node_config={}, state=RecordDict(),
                                     run_config={}),
                        config=ServerConfig(num_rounds=rounds), strategy=strategy)
    reports, models = [], [np.zeros(sum(a.size for a in INIT))]

    def fit(g, c):
        workflow(g, c)
        reports.append(workflow.last)
        arr = compat.arrayrecord_to_parameters(c.state.array_records["parameters"], True)
        models.append(np.concatenate([a.ravel() for a in parameters_to_ndarrays(arr)])
                      .astype(np.float64))

    DefaultWorkflow(fit_workflow=fit)(grid, ctx)
    return reports, models
