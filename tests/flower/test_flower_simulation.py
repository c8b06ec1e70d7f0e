"""On Flower's simulation engine (run_simulation, Ray kept on loopback): our workflow and mod
end to end, and the regression against Flower's own SecAgg+ on a node failing in ShareKeys.

Each test starts and stops its own Ray session (run_simulation shuts it down)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flower_apps import (
    INIT,
    RAY,
    client_fn,
    expected_update,
    failing_mod,
    hardened_client_app,
    server_app,
    write_node_settings,
)
from flower_nodes import malicious_node, write_identities
from flwr.client import ClientApp
from flwr.client.mod import secaggplus_mod
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.simulation import run_simulation

from dp.ledger import verify
from protocol import RoundConfig
from protocol.dp_plan import DPConfig
from protocol.flower import HardenedSecAggWorkflow, load_registry

pytestmark = pytest.mark.timeout(600)
N = 5
TOL = 1e-4
# the first stage waits for Ray's cold start (13 s on a quiet machine, far more under load)
TIMEOUT = {"advertise_keys": 240.0, "share_keys": 60.0, "masked_input": 60.0,
           "consistency_check": 60.0, "unmasking": 60.0}


def flat(params) -> np.ndarray:
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in params])


def updates(out) -> list[np.ndarray]:
    models = [flat(INIT)] + [flat(p) for p in out["params"]]
    return [b - a for a, b in zip(models, models[1:], strict=False)]


def flower_stage(msg):
    rec = msg.content.config_records.get("secaggplus_configs")
    return rec.get("stage") if rec is not None else None


def test_rounds_on_the_simulation_engine_through_dropouts_at_share_keys_and_masked_input(
        tmp_path):
    root = write_node_settings(tmp_path / "nodes", N)
    schedule = {2: {"share_keys": {1}}, 3: {"masked_input": {2}}}
    out: dict = {}
    wf = HardenedSecAggWorkflow(config=RoundConfig(), timeout=TIMEOUT)
    run_simulation(server_app(wf, N, 3, out), hardened_client_app(root, schedule),
                   num_supernodes=N, backend_config=RAY)
    assert [r.abort for r in out["reports"]] == [None, None, None]
    ups = updates(out)
    for rnd, up in enumerate(ups, 1):
        survivors = [p for p in range(N)
                     if all(p not in s for s in schedule.get(rnd, {}).values())]
        assert np.abs(up - expected_update(survivors, rnd)).max() < TOL, rnd


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record) -> None:
        self.lines.append(record.getMessage())


def test_flowers_secaggplus_halts_on_a_node_failing_in_share_keys_and_ours_completes(
        tmp_path):
    schedule = {1: {"share_keys": {0}}}
    # Flower's own SecAgg+ on the schedule of its reproduction: 5 nodes, 3 shares, threshold 2
    theirs: dict = {}
    app = ClientApp(client_fn=client_fn,
                    mods=[failing_mod(schedule, flower_stage), secaggplus_mod])
    wf = SecAggPlusWorkflow(num_shares=3, reconstruction_threshold=2, timeout=240)
    lines = Lines()
    logging.getLogger("flwr").addHandler(lines)
    try:
        run_simulation(server_app(wf, N, 1, theirs), app, num_supernodes=N,
                       backend_config=RAY)
    finally:
        logging.getLogger("flwr").removeHandler(lines)
    assert "Secure aggregation halted." in lines.lines
    assert any("Not enough shares" in m for m in lines.lines)
    assert np.array_equal(flat(theirs["params"][0]), flat(INIT))  # the round gave nothing
    # ours, the same schedule
    root = write_node_settings(tmp_path / "nodes", N)
    ours: dict = {}
    wf = HardenedSecAggWorkflow(config=RoundConfig(), timeout=TIMEOUT)
    run_simulation(server_app(wf, N, 1, ours), hardened_client_app(root, schedule),
                   num_supernodes=N, backend_config=RAY)
    assert ours["reports"][0].abort is None
    assert np.abs(updates(ours)[0] - expected_update([1, 2, 3, 4], 1)).max() < TOL


def test_malicious_mode_with_dp_on_the_simulation_engine_and_both_ledgers_verify(tmp_path):
    root = tmp_path / "nodes"
    write_identities(root, N)
    body = ('[round]\nmode = "malicious"\n'
            "[dp]\nclip_norm = 1.0\nepsilon = 8.0\ndelta = 1e-5\nrounds = 2\n")
    write_node_settings(root, N, body, malicious_node)
    schedule = {1: {"consistency_check": {3}}, 2: {"share_keys": {4}}}
    dp = DPConfig(clip_norm=1.0, epsilon=8.0, delta=1e-5, rounds=2)
    ledger = tmp_path / "server-ledger.jsonl"
    wf = HardenedSecAggWorkflow(config=RoundConfig(mode="malicious"), dp=dp, timeout=TIMEOUT,
                                ledger=ledger, registry=load_registry(root / "registry.toml"))
    out: dict = {}
    run_simulation(server_app(wf, N, 2, out), hardened_client_app(root, schedule),
                   num_supernodes=N, backend_config=RAY)
    wf.close()
    assert [r.abort for r in out["reports"]] == [None, None]
    assert verify(ledger).entries == 2
    for p in range(N):
        entries = verify(root / "state" / f"node-{p}" / "ledger.jsonl").entries
        assert entries == (1 if p == 4 else 2), p  # node 4 left before its input in round 2
