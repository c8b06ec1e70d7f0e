"""A cohort of Flower nodes with their own settings files (and, in malicious mode, identities
and a registry), run in one process (:mod:`inprocess_grid`)."""

from __future__ import annotations

from pathlib import Path

from flower_apps import client_fn, failing_mod, write_node_settings
from flwr.client import ClientApp
from inprocess_grid import InProcessGrid

from protocol.flower import make_hardened_secagg_mod
from protocol.flower.settings import load_node_settings
from secagg import SigningKey

NODE0 = 5000


def node_id(p: int) -> int:
    return NODE0 + 11 * p


def make_grid(root: Path, n: int, body: str = "", per_node=None, schedule=None,
              extra_mods=None) -> InProcessGrid:
    write_node_settings(root, n, body, per_node)
    apps, parts = {}, {}
    for p in range(n):
        def settings(ctxt, p=p):
            return load_node_settings(root / f"node-{p}.toml")

        mods = list(extra_mods or []) + [make_hardened_secagg_mod(settings)]
        if schedule:
            mods.insert(0, failing_mod(schedule))
        apps[node_id(p)] = ClientApp(client_fn=client_fn, mods=mods)
        parts[node_id(p)] = p
    return InProcessGrid(apps, parts)


def write_identities(root: Path, n: int, *, pin_nodes: bool = False) -> None:
    """Ed25519 identities client-<p>.key and registry.toml for partitions 0..n-1 (client id
    = 100 + p, so ids are not the partition numbers)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in range(n):
        key = SigningKey.generate()
        raw = key._private.private_bytes_raw()  # noqa: SLF001 - writing the test's key file
        (root / f"client-{p}.key").write_text(raw.hex())
        row = f'[[client]]\nid = {100 + p}\ned25519 = "{key.verify_key.raw.hex()}"\n'
        if pin_nodes:
            row += f"node_id = {node_id(p)}\n"
        rows.append(row)
    (root / "registry.toml").write_text("\n".join(rows))


def malicious_node(p: int) -> str:
    return (f'client_id = {100 + p}\nidentity = "client-{p}.key"\n'
            f'registry = "registry.toml"\n')
