"""A Flower node's own secure-aggregation settings: pinned on the node, never sent by the server.

One strict TOML file per node (unknown keys, wrong types and out-of-range values are refused
with the key's name; relative paths are relative to the file):

.. code-block:: toml

    client_id = 3                 # malicious mode: this node's identity in the registry
    identity = "client-3.key"     # malicious mode: its Ed25519 private key (hex)
    registry = "registry.toml"    # malicious mode: [[client]] id, ed25519, optional node_id
    state_dir = "state/node-3"    # used sessions, progress of the sealed state, the ledger
    state_key = "state/node-3/state.key"   # node-local AEAD key; created (0600) if missing
    ledger = "state/node-3/ledger.jsonl"   # DP: this node's privacy ledger

    [round]                        # protocol.config.RoundConfig
    mode = "semi-honest"
    [dp]                           # protocol.dp_plan.DPConfig; absent: no DP
    [sum]                          # protocol.real_sum.SumConfig, used without [dp]

:func:`settings_for` finds the file: the node config's ``secagg-settings``
(``flower-supernode --node-config 'secagg-settings="/etc/secagg/node.toml"'``), else the
environment variable ``SECAGG_FLOWER_SETTINGS``; ``{partition-id}`` in either is replaced by
the node's partition id (simulation nodes share one environment).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from secagg import SigningKey, VerifyKey

from ..config import Mode, RoundConfig
from ..dp_plan import DPConfig
from ..messages import MAX_CLIENT_ID
from ..net.errors import SettingsError
from ..net.keys import load_signing_key
from ..net.settings import _dp_config, _load, _path, _round_config, _Table
from ..real_sum import SumConfig

SETTINGS_KEY = "secagg-settings"
SETTINGS_ENV = "SECAGG_FLOWER_SETTINGS"


@dataclass(frozen=True)
class FlowerRegistry:
    """client id -> Ed25519 identity, and the Flower node id pinned for it (None: learnt)."""

    keys: dict[int, VerifyKey]
    nodes: dict[int, int]


@dataclass(frozen=True)
class NodeSettings:
    round: RoundConfig
    dp: DPConfig | None
    sum: SumConfig
    state_dir: Path
    state_key: Path
    client_id: int | None = None
    identity: SigningKey | None = None
    registry: FlowerRegistry | None = None
    ledger: Path | None = None


def load_registry(path: Path) -> FlowerRegistry:
    """``[[client]]`` rows of ``id``, ``ed25519`` (hex) and optionally ``node_id``. Raises
    SettingsError for a missing file, a malformed row, or an id or node listed twice."""
    data = _Table(_load(path), str(path))
    rows = data.get("client", list)
    data.done()
    keys: dict[int, VerifyKey] = {}
    nodes: dict[int, int] = {}
    for i, row in enumerate(rows):
        t = _Table(row, f"{path} client #{i}")
        u = t.get("id", int, lo=0, hi=MAX_CLIENT_ID)
        ed = t.get("ed25519", str)
        node = t.get("node_id", int, None, lo=0, hi=(1 << 64) - 1)
        t.done()
        if u in keys:
            raise SettingsError(f"{path}: client id {u} listed twice")
        try:
            keys[u] = VerifyKey(bytes.fromhex(ed))
        except ValueError as exc:
            raise SettingsError(f"{path}: client {u}: bad ed25519 key: {exc}") from None
        if node is not None:
            if node in nodes.values():
                raise SettingsError(f"{path}: node id {node} listed twice")
            nodes[u] = node
    if len(keys) < 3:
        raise SettingsError(f"{path}: a cohort needs at least 3 registered clients")
    return FlowerRegistry(keys, nodes)


def _sum_config(t: _Table | None) -> SumConfig:
    if t is None:
        return SumConfig()
    kinds = {"clip_norm": float, "weighted": bool, "max_weight": float, "wrap_bound": float}
    kw = {k: t.get(k, kind) for k, kind in kinds.items() if k in t.data}
    t.done()
    try:
        return SumConfig(**kw)
    except ValueError as exc:
        raise SettingsError(f"{t.where}: {exc}") from None


def load_node_settings(path: str | Path) -> NodeSettings:
    """The settings in ``path``. Raises SettingsError naming the key or file at fault, and if
    malicious mode lacks the client id, identity key or registry, or the id is unregistered."""
    path = Path(path)
    base = path.parent
    t = _Table(_load(path), str(path))
    rc = _round_config(t.table("round"))
    dp = _dp_config(t.table("dp"))
    sm = _sum_config(t.table("sum"))
    cid = t.get("client_id", int, None, lo=0, hi=MAX_CLIENT_ID)
    ident = _path(base, t, "identity", None)
    reg = _path(base, t, "registry", None)
    state_dir = _path(base, t, "state_dir", None)
    state_key = _path(base, t, "state_key", None)
    ledger = _path(base, t, "ledger", None)
    t.done()
    if state_dir is None:
        raise SettingsError(f"{path}: missing key 'state_dir' (the node's used sessions and "
                            "sealed-state progress are kept there)")
    registry = load_registry(reg) if reg is not None else None
    identity = SigningKey(load_signing_key(ident)) if ident is not None else None
    if rc.mode == Mode.MALICIOUS:
        missing = [k for k, v in (("client_id", cid), ("identity", identity),
                                  ("registry", registry)) if v is None]
        if missing:
            raise SettingsError(f"{path}: malicious mode needs {missing}")
        if cid not in registry.keys:
            raise SettingsError(f"{path}: client id {cid} is not in the registry")
        if registry.keys[cid] != identity.verify_key:
            raise SettingsError(f"{path}: the identity key is not client {cid}'s registered key")
    if dp is not None and ledger is None:
        ledger = state_dir / "ledger.jsonl"
    return NodeSettings(rc, dp, sm, state_dir, state_key or state_dir / "state.key", cid,
                        identity, registry, ledger)


def settings_path(node_config: dict) -> Path:
    """The settings file a node's configuration names (see the module docstring)."""
    raw = node_config.get(SETTINGS_KEY) or os.environ.get(SETTINGS_ENV)
    if not raw or not isinstance(raw, str):
        raise SettingsError(f"this node names no secure-aggregation settings: set the node "
                            f"config key {SETTINGS_KEY!r} or the environment variable "
                            f"{SETTINGS_ENV}")
    if "{partition-id}" in raw:
        pid = node_config.get("partition-id")
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise SettingsError(f"{raw}: names {{partition-id}} but the node has none")
        raw = raw.replace("{partition-id}", str(pid))
    return Path(raw)


def settings_for(context) -> NodeSettings:
    """The settings of the node running ``context`` (a :class:`flwr.app.Context`)."""
    return load_node_settings(settings_path(dict(context.node_config)))
