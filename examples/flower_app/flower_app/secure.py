"""What the server and the nodes must agree on, derived from the run configuration.

In this example both sides build their round, DP and sum configurations from the same run
config values, so that a simulation needs no setup. In a real deployment every node pins its
own settings file (``flower-supernode --node-config 'secagg-settings="/etc/node.toml"'``) and
refuses a server whose configuration differs; the server's values are the run config.

Node settings when the node names none (neither the node config key ``secagg-settings`` nor
the environment variable ``SECAGG_FLOWER_SETTINGS``): the ClientApp writes a default file
``node-<partition-id>.toml`` under ``<state-dir>/run-<run id>/`` (``state-dir`` from the run
config; empty: ``<system temp dir>/flower_app``) and uses it. Its state directory (used
sessions, progress of the sealed round state, the node's privacy ledger) is next to it, one per
run; the server's ledger is ``server/ledger.jsonl`` in the same run directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from flwr.app import Context

from protocol import RoundConfig
from protocol.dp_plan import DPConfig
from protocol.flower.settings import (
    SETTINGS_ENV,
    SETTINGS_KEY,
    NodeSettings,
    load_node_settings,
    settings_for,
)
from protocol.real_sum import SumConfig


def _opt(rc: dict, key: str) -> int | None:
    """A positive int from the run config, or None for 0 (resolved by RoundConfig)."""
    v = int(rc.get(key, 0))
    return v if v > 0 else None


def round_config(rc: dict) -> RoundConfig:
    return RoundConfig(bits=int(rc.get("bits", 32)), mode=str(rc.get("mode", "semi-honest")),
                       threshold=_opt(rc, "threshold"), neighbours=_opt(rc, "neighbours"),
                       min_survivors=_opt(rc, "min-survivors"),
                       dropout_rate=float(rc.get("dropout-rate", 0.1)))


def dp_config(rc: dict) -> DPConfig | None:
    """DP-FedAvg's DP configuration; None when ``dp`` is false (a secure sum only)."""
    if not bool(rc.get("dp", True)):
        return None
    return DPConfig(clip_norm=float(rc["clip-norm"]), epsilon=float(rc["epsilon"]),
                    delta=float(rc["delta"]), rounds=int(rc["num-server-rounds"]),
                    weighted=True, max_weight=float(rc["max-weight"]))


def sum_config(rc: dict) -> SumConfig:
    """The encoding without DP: the clip norm is generous, weights are FedAvg's."""
    return SumConfig(clip_norm=100.0, weighted=True, max_weight=1000.0)


def run_dir(rc: dict, run_id: int) -> Path:
    root = str(rc.get("state-dir", "")) or os.path.join(tempfile.gettempdir(), "flower_app")
    return Path(root).expanduser().resolve() / f"run-{run_id}"


def settings_toml(rc: dict, pid: int) -> str:
    """The settings file of partition ``pid`` for the run configuration ``rc``."""
    r = round_config(rc)
    lines = [f'state_dir = "state/node-{pid}"', "", "[round]", f'mode = "{r.mode}"',
             f"bits = {r.bits}", f"dropout_rate = {float(r.dropout_rate)!r}"]
    for key in ("threshold", "neighbours", "min_survivors"):
        if getattr(r, key) is not None:
            lines.append(f"{key} = {getattr(r, key)}")
    dp = dp_config(rc)
    if dp is not None:
        lines += ["", "[dp]", f"clip_norm = {float(dp.clip_norm)!r}",
                  f"epsilon = {float(dp.epsilon)!r}", f"delta = {float(dp.delta)!r}",
                  f"rounds = {dp.rounds}", "weighted = true",
                  f"max_weight = {float(dp.max_weight)!r}"]
    else:
        s = sum_config(rc)
        lines += ["", "[sum]", f"clip_norm = {float(s.clip_norm)!r}",
                  f"weighted = {str(s.weighted).lower()}",
                  f"max_weight = {float(s.max_weight)!r}"]
    return "\n".join(lines) + "\n"


def default_settings_file(context: Context) -> Path:
    """Write (once per run and node) and return the default settings file of this node."""
    pid = int(context.node_config["partition-id"])
    path = run_dir(context.run_config, context.run_id) / f"node-{pid}.toml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(settings_toml(context.run_config, pid))
        os.replace(tmp, path)
    return path


def node_settings(context: Context) -> NodeSettings:
    """This node's pinned settings if it names a file, else the run's default file."""
    if context.node_config.get(SETTINGS_KEY) or os.environ.get(SETTINGS_ENV):
        return settings_for(context)
    return load_node_settings(default_settings_file(context))
