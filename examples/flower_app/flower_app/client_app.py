"""The ClientApp: local SGD on this node's digits, its update aggregated securely.

``secagg = "hardened"`` (run config): the update leaves the node only through
:func:`protocol.flower.make_hardened_secagg_mod`, clipped, noised (DP) and masked; the node's
settings come from its own file (see :mod:`flower_app.secure`). ``secagg = "flower"``: Flower's
own ``secaggplus_mod`` (a secure sum without DP).

The deployment engine starts a fresh ClientApp process for every message, and only the
MaskedInput stage trains: torch and scikit-learn are imported when the client is built.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod

from protocol.flower import make_hardened_secagg_mod

from .secure import node_settings


class DigitsClient(NumPyClient):
    def __init__(self, pid: int, num_partitions: int, rc: dict) -> None:
        from . import task

        self.task = task
        seed = int(rc.get("seed", 0))
        self.x, self.y = task.partition(pid, num_partitions, seed, float(rc.get("alpha", 0.5)))
        self.rc, self.pid, self.seed = rc, pid, seed
        self.model = task.make_model(seed)

    def fit(self, parameters, config):
        task = self.task
        task.set_weights(self.model, parameters)
        rnd = int(config.get("server-round", 0))
        loss = task.train(self.model, self.x, self.y, epochs=int(self.rc["local-epochs"]),
                          lr=float(self.rc["learning-rate"]),
                          batch_size=int(self.rc["batch-size"]),
                          seed=10_000 * self.seed + 100 * rnd + self.pid)
        return task.get_weights(self.model), len(self.y), {"train-loss": loss}

    def evaluate(self, parameters, config):
        task = self.task
        task.set_weights(self.model, parameters)
        loss, acc = task.evaluate(self.model, self.x, self.y)
        return loss, len(self.y), {"accuracy": acc}


def client_fn(context: Context):
    nc = context.node_config
    return DigitsClient(int(nc["partition-id"]), int(nc["num-partitions"]),
                        dict(context.run_config)).to_client()


_hardened = make_hardened_secagg_mod(node_settings)


def secagg_mod(msg: Message, ctxt: Context, call_next) -> Message:
    """The run config's choice of secure aggregation, on the node."""
    if str(ctxt.run_config.get("secagg", "hardened")) == "flower":
        return secaggplus_mod(msg, ctxt, call_next)
    return _hardened(msg, ctxt, call_next)


app = ClientApp(client_fn=client_fn, mods=[secagg_mod])
