"""The ServerApp: one FedAvg fit round through HardenedSecAggWorkflow (a secure sum without
DP), its report and the resulting global parameters written to the run config's
``result-file``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

from protocol import RoundConfig
from protocol.flower import HardenedSecAggWorkflow
from protocol.real_sum import SumConfig
from protocol.transitions import Stage

from .known import SUM, initial

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    n = int(rc["min-nodes"])
    timeout = {str(s): float(rc["stage-timeout"]) for s in Stage}
    timeout[str(Stage.MASKED_INPUT)] = float(rc["masked-input-timeout"])
    workflow = HardenedSecAggWorkflow(
        config=RoundConfig(threshold=int(rc["threshold"])),
        sum=SumConfig(**SUM), timeout=timeout)
    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
                      min_available_clients=n, on_fit_config_fn=lambda r: {"round": r},
                      initial_parameters=ndarrays_to_parameters(initial()))
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=1),
                           strategy=strategy)
    rounds = []

    def fit(g, c):
        workflow(g, c)
        r = workflow.last
        params = parameters_to_ndarrays(compat.arrayrecord_to_parameters(
            c.state.array_records[MAIN_PARAMS_RECORD], True))
        rounds.append({"round": r.round, "survivors": sorted(r.survivor_nodes),
                       "dropped": {str(k): v for k, v in r.dropped.items()},
                       "abort": None if r.abort is None else str(r.abort),
                       "stage_seconds": r.stage_seconds,
                       "params": np.concatenate([np.ravel(p) for p in params]).tolist()})

    DefaultWorkflow(fit_workflow=fit)(grid, legacy)
    Path(str(rc["result-file"])).write_text(json.dumps({"rounds": rounds}, indent=1))
