"""The ClientApp: a NumPyClient whose update is known, behind hardened_secagg_mod.

The node's settings are the file its node config names (``secagg-settings``). A marker mod in
front of it leaves ``received-<partition>-<stage>`` and ``replied-<partition>-<stage>`` files in
the run config's ``marker-dir``, and makes the node of ``stall-partition`` stall when its
``stall-stage`` message arrives (after ``stalled-<partition>-<stage>`` is written), so that the
test can kill it at a known point of the round.
"""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.client import ClientApp, NumPyClient

from protocol.flower import hardened_secagg_mod
from protocol.flower.records import META_RECORD

from .known import delta_of, examples_of


class KnownClient(NumPyClient):
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def fit(self, parameters, config):
        rnd = int(config.get("round", 0))
        return ([p + d for p, d in zip(parameters, delta_of(self.pid, rnd), strict=True)],
                examples_of(self.pid), {})

    def evaluate(self, parameters, config):
        return 0.0, 1, {}


def client_fn(context: Context):
    return KnownClient(int(context.node_config["partition-id"])).to_client()


def marker_mod(msg: Message, ctxt: Context, call_next) -> Message:
    rc = ctxt.run_config
    rec = msg.content.config_records.get(META_RECORD)
    if msg.metadata.message_type != MessageType.TRAIN or rec is None or not rc["marker-dir"]:
        return call_next(msg, ctxt)
    marks, pid, stage = Path(str(rc["marker-dir"])), int(ctxt.node_config["partition-id"]), \
        str(rec.get("stage"))
    (marks / f"received-{pid}-{stage}").touch()
    if pid == int(rc["stall-partition"]) and stage == str(rc["stall-stage"]):
        (marks / f"stalled-{pid}-{stage}").touch()
        time.sleep(float(rc["stall-seconds"]))  # the test kills this node meanwhile
    out = call_next(msg, ctxt)
    (marks / f"replied-{pid}-{stage}").touch()
    return out


app = ClientApp(client_fn=client_fn, mods=[marker_mod, hardened_secagg_mod])
