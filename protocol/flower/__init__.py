"""Hardened secure aggregation inside Flower (the optional extra ``flower``).

A Flower app swaps Flower's SecAgg+ for ours by changing one line on each side:

* server: ``DefaultWorkflow(fit_workflow=HardenedSecAggWorkflow(config=RoundConfig(...),
  dp=DPConfig(...) or None, timeout=..., ledger=...))``
  (:mod:`protocol.flower.workflow`);
* client: ``ClientApp(client_fn=..., mods=[hardened_secagg_mod])``
  (:mod:`protocol.flower.mod`), each node with its own settings file
  (:mod:`protocol.flower.settings`).

docs/architecture.md section 4: the workflow is one more host of the shared round driver.
"""

from __future__ import annotations

try:
    import flwr  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("protocol.flower needs Flower: pip install 'secagg-hardened[flower]' "
                      "(with the constraints file)") from exc

from .mod import hardened_secagg_mod, make_hardened_secagg_mod
from .settings import FlowerRegistry, NodeSettings, load_node_settings, load_registry
from .workflow import HardenedSecAggWorkflow, RoundReport

__all__ = ["FlowerRegistry", "HardenedSecAggWorkflow", "NodeSettings", "RoundReport",
           "hardened_secagg_mod", "load_node_settings", "load_registry",
           "make_hardened_secagg_mod"]
