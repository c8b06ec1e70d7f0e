"""The Flower apps the tests run: a NumPyClient with a known update per node, node settings
files, a mod that makes a node fail at a chosen stage and round, and a ServerApp around a fit
workflow. Used with the simulation engine (Ray) and with the in-process grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flwr.client import ClientApp, NumPyClient
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow

from protocol.flower import make_hardened_secagg_mod
from protocol.flower.records import META_RECORD
from protocol.flower.settings import load_node_settings

SHAPES = ((6, 5), (7,))
INIT = [np.zeros(s, dtype=np.float32) for s in SHAPES]
RAY = {"init_args": {"num_cpus": 2, "include_dashboard": False,
                     "_node_ip_address": "127.0.0.1"},
       "client_resources": {"num_cpus": 1}}


def delta_of(pid: int, rnd: int) -> list[np.ndarray]:
    """Node ``pid``'s model delta in round ``rnd`` (small and known)."""
    rng = np.random.default_rng(1000 * rnd + pid)
    return [(0.01 * rng.standard_normal(s)).astype(np.float32) for s in SHAPES]


def examples_of(pid: int) -> int:
    return 10 * (pid + 1)


def expected_update(pids, rnd: int, *, weighted: bool = True) -> np.ndarray:
    pids = sorted(pids)
    w = np.array([examples_of(p) if weighted else 1 for p in pids], np.float64)
    flat = np.stack([np.concatenate([d.ravel() for d in delta_of(p, rnd)]).astype(np.float64)
                     for p in pids])
    return (w[:, None] * flat).sum(0) / w.sum()


class KnownClient(NumPyClient):
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def fit(self, parameters, config):
        rnd = int(config.get("round", 0))
        return ([p + d for p, d in zip(parameters, delta_of(self.pid, rnd), strict=True)],
                examples_of(self.pid), {"secret-metric": float(self.pid)})

    def evaluate(self, parameters, config):
        return 0.0, 1, {}


def fit_config(rnd: int) -> dict:
    return {"round": rnd}


def client_fn(context):
    return KnownClient(int(context.node_config["partition-id"])).to_client()


def failing_mod(schedule: dict[int, dict[str, set[int]]], stage_key=None):
    """A mod that makes partition p fail in round r at stage s: schedule[r][s] holds p.
    ``stage_key(msg)`` names the stage of a message (ours by default)."""

    def ours(msg):
        rec = msg.content.config_records.get(META_RECORD)
        return rec.get("stage") if rec is not None else None

    key = stage_key or ours

    def mod(msg, ctxt, call_next):
        rnd = int(msg.metadata.group_id or 0)
        pid = int(ctxt.node_config["partition-id"])
        if pid in schedule.get(rnd, {}).get(key(msg), ()):
            raise RuntimeError(f"scheduled failure of partition {pid} in round {rnd}")
        return call_next(msg, ctxt)

    return mod


def write_node_settings(root: Path, n: int, body: str = "", per_node=None) -> Path:
    """One settings file per partition under ``root``; returns the directory."""
    root.mkdir(parents=True, exist_ok=True)
    for p in range(n):
        extra = per_node(p) if per_node else ""
        (root / f"node-{p}.toml").write_text(
            f'state_dir = "state/node-{p}"\n{extra}\n{body}\n')
    return root


def hardened_client_app(settings_dir: Path, schedule=None) -> ClientApp:
    def settings(ctxt):
        return load_node_settings(settings_dir / f"node-{ctxt.node_config['partition-id']}.toml")

    mods = [make_hardened_secagg_mod(settings)]
    if schedule:
        mods.insert(0, failing_mod(schedule))
    return ClientApp(client_fn=client_fn, mods=mods)


def server_app(workflow, n: int, rounds: int, out: dict) -> ServerApp:
    """A ServerApp running ``rounds`` fit rounds through ``workflow``; ``out`` receives the
    final parameters and the history."""
    app = ServerApp()

    @app.main()
    def main(grid, context):
        strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
                          min_available_clients=n, on_fit_config_fn=fit_config,
                          initial_parameters=ndarrays_to_parameters(INIT))
        ctx = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds),
                            strategy=strategy)
        reports = out.setdefault("reports", [])
        params = out.setdefault("params", [])

        def fit(g, c):
            workflow(g, c)
            reports.append(getattr(workflow, "last", None))
            arr = c.state.array_records["parameters"]
            from flwr.common import parameters_to_ndarrays
            from flwr.compat.common import recorddict_compat as compat
            params.append(parameters_to_ndarrays(compat.arrayrecord_to_parameters(arr, True)))

        DefaultWorkflow(fit_workflow=fit)(grid, ctx)

    return app
