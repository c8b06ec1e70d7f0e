"""The ServerApp: FedAvg whose fit rounds run through secure aggregation, evaluated centrally.

``secagg = "hardened"``: :class:`protocol.flower.HardenedSecAggWorkflow` with distributed DP
(``dp = true``: DP-FedAvg, each node clips its model delta, adds its share of Skellam noise and
is charged in its own ledger; the server records every round in its ledger) or a plain secure
sum (``dp = false``). ``secagg = "flower"``: Flower's ``SecAggPlusWorkflow`` (no DP), for
comparison. After every round the global model is evaluated on held-out digits no node holds.
"""

from __future__ import annotations

import json
import time
from logging import INFO
from pathlib import Path

from flwr.app import Context
from flwr.common import ndarrays_to_parameters
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.supercore import log

from dp.ledger import open_ledger
from protocol.flower import HardenedSecAggWorkflow

from . import task
from .secure import dp_config, round_config, run_dir, sum_config

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = dict(context.run_config)
    rounds, n, seed = int(rc["num-server-rounds"]), int(rc["min-nodes"]), int(rc["seed"])
    timeout = float(rc["stage-timeout"])
    xte, yte = task.test_set(seed)
    model = task.make_model(seed)
    rows: list[dict] = []
    ledger = None

    def evaluate(server_round: int, arrays, config):
        task.set_weights(model, arrays)
        loss, acc = task.evaluate(model, xte, yte)
        row = {"round": server_round, "accuracy": acc, "loss": loss}
        if ledger is not None:
            row["epsilon"] = ledger.spent()[0]
        rows.append(row)
        eps = f", epsilon spent {row['epsilon']:.3f}" if "epsilon" in row else ""
        log(INFO, "[digits] round %s: test accuracy %.3f, loss %.3f%s", server_round, acc,
            loss, eps)
        return loss, {"accuracy": acc}

    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
                      min_evaluate_clients=n, min_available_clients=n,
                      on_fit_config_fn=lambda r: {"server-round": r}, evaluate_fn=evaluate,
                      initial_parameters=ndarrays_to_parameters(task.get_weights(model)))
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds),
                           strategy=strategy)
    reports: list[dict] = []
    kind = str(rc["secagg"])
    if kind == "hardened":
        dp = dp_config(rc)
        if dp is not None:
            path = run_dir(rc, context.run_id) / "server" / "ledger.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            ledger = open_ledger(path, dp.budget, owner="server")
            log(INFO, "[digits] DP-FedAvg: epsilon %s, delta %s over %s rounds; server ledger "
                "%s", dp.epsilon, dp.delta, dp.rounds, path)
        workflow = HardenedSecAggWorkflow(config=round_config(rc), dp=dp,
                                          sum=None if dp is not None else sum_config(rc),
                                          timeout=timeout, ledger=ledger)

        def fit(g, c):
            workflow(g, c)
            r = workflow.last
            if r is not None:
                reports.append({"round": r.round, "survivors": sorted(r.survivor_nodes),
                                "dropped": {str(k): v for k, v in r.dropped.items()},
                                "abort": None if r.abort is None else str(r.abort),
                                "seconds": round(r.seconds, 2)})
    elif kind == "flower":
        fit = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=0.6,
                                 clipping_range=8.0, timeout=timeout)
    else:
        raise ValueError(f"secagg must be 'hardened' or 'flower', got {kind!r}")
    log(INFO, "[digits] %s secure aggregation, %s nodes, %s rounds", kind, n, rounds)
    t0 = time.perf_counter()
    try:
        DefaultWorkflow(fit_workflow=fit)(grid, legacy)
    finally:
        if ledger is not None:
            ledger.close()
    result = {"secagg": kind, "dp": kind == "hardened" and dp_config(rc) is not None,
              "nodes": n, "rounds": rows, "secagg_reports": reports,
              "seconds": round(time.perf_counter() - t0, 1)}
    final = rows[-1] if rows else {}
    log(INFO, "[digits] done in %.1f s: final test accuracy %s%s", result["seconds"],
        f"{final.get('accuracy', float('nan')):.3f}",
        f", epsilon {final['epsilon']:.3f}" if "epsilon" in final else "")
    if out := str(rc.get("result-file", "")):
        Path(out).expanduser().write_text(json.dumps(result, indent=1) + "\n")
        log(INFO, "[digits] result written to %s", out)
