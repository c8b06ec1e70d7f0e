"""HardenedSecAggWorkflow and hardened_secagg_mod against each other on an in-process Grid
(every node's state copied in and out around each message, as the deployment engine's fresh
ClientApp processes see it): exact weighted means through dropouts at every stage, malicious
mode, DP with both sides' ledgers, and the refusals of the node's mod."""

from __future__ import annotations

import numpy as np
import pytest
from flower_apps import expected_update
from flower_nodes import make_grid, malicious_node, node_id, write_identities
from inprocess_grid import run_rounds

from dp.ledger import verify
from protocol import RoundConfig
from protocol.dp_plan import DPConfig
from protocol.errors import AbortReason, RoundAborted
from protocol.flower import HardenedSecAggWorkflow, load_registry
from protocol.flower.records import FRAME_RECORD, STATE_RECORD

N = 6
TOL = 1e-4  # the encoding's rounding at the default clip norm; deltas are about 1e-2


def updates(models):
    return [b - a for a, b in zip(models, models[1:], strict=False)]


@pytest.mark.parametrize("stage", ["advertise_keys", "share_keys", "masked_input",
                                   "unmasking"])
def test_the_survivors_weighted_mean_reaches_the_model_through_a_dropout_at(stage,
                                                                           flower_root):
    grid = make_grid(flower_root, N)
    grid.silent[node_id(2)] = (1, stage)  # crashes: no reply from this stage on
    wf = HardenedSecAggWorkflow(config=RoundConfig(), timeout=0.3)
    reports, models = run_rounds(grid, wf, 1)
    (r,) = reports
    assert r.abort is None
    survivors = [p for p in range(N) if p != 2 or stage == "unmasking"]
    assert sorted(r.survivor_nodes) == [node_id(p) for p in survivors]
    assert np.abs(updates(models)[0] - expected_update(survivors, 1)).max() < TOL
    assert node_id(2) in r.dropped


def test_a_node_failing_in_share_keys_does_not_halt_the_round_and_the_next_round_runs(
        flower_root):
    grid = make_grid(flower_root, N, schedule={1: {"share_keys": {3}}})
    wf = HardenedSecAggWorkflow(config=RoundConfig(), timeout=0.3)
    reports, models = run_rounds(grid, wf, 2)
    assert [r.abort for r in reports] == [None, None]
    ups = updates(models)
    assert np.abs(ups[0] - expected_update([0, 1, 2, 4, 5], 1)).max() < TOL
    assert np.abs(ups[1] - expected_update(range(N), 2)).max() < TOL


def test_nothing_but_our_frames_reaches_the_server(flower_root):
    grid = make_grid(flower_root, N)
    run_rounds(grid, HardenedSecAggWorkflow(config=RoundConfig(), timeout=0.3), 1)
    for reply in grid.received:
        assert not reply.has_error()
        c = reply.content
        assert set(c.array_records) == {FRAME_RECORD}  # no parameters, no FitRes arrays
        assert not c.metric_records  # no training metrics
        assert set(c.config_records) == {"secagg.meta"}


def test_an_abort_ends_the_round_visibly_and_the_next_round_runs(flower_root, caplog):
    # round 1: one survivor, below the minimum whatever the graph
    grid = make_grid(flower_root, N, schedule={1: {"masked_input": set(range(N - 1))}})
    wf = HardenedSecAggWorkflow(config=RoundConfig(), timeout=0.3)
    reports, models = run_rounds(grid, wf, 2)
    assert isinstance(reports[0].abort, RoundAborted)
    assert reports[0].abort.reason in (AbortReason.TOO_FEW_SURVIVORS,
                                       AbortReason.UNRECOVERABLE_DROPOUT)
    assert any(r.levelname == "ERROR" and "aborted" in r.getMessage() for r in caplog.records)
    assert np.array_equal(models[0], models[1])  # the model is left as it was
    assert reports[1].abort is None
    assert np.abs(updates(models)[1] - expected_update(range(N), 2)).max() < TOL


def test_malicious_mode_with_a_dropout_in_the_consistency_check(flower_root):
    write_identities(flower_root, N)
    grid = make_grid(flower_root, N, '[round]\nmode = "malicious"\n', malicious_node)
    grid.silent[node_id(4)] = (1, "consistency_check")
    wf = HardenedSecAggWorkflow(config=RoundConfig(mode="malicious"), timeout=0.3,
                                registry=load_registry(flower_root / "registry.toml"))
    reports, models = run_rounds(grid, wf, 1)
    assert reports[0].abort is None
    # a node that dropped in the consistency check had sent its masked input: it is in U3
    assert np.abs(updates(models)[0] - expected_update(range(N), 1)).max() < TOL


def test_malicious_mode_refuses_a_node_claiming_anothers_identity(flower_root):
    write_identities(flower_root, N + 1)
    # node 5 is set up as client 100 too (a copy of node 0's identity)
    grid = make_grid(flower_root, N + 1, '[round]\nmode = "malicious"\n',
                     lambda p: malicious_node(p).replace("client_id = 105", "client_id = 100")
                     .replace('"client-5.key"', '"client-0.key"'))
    wf = HardenedSecAggWorkflow(config=RoundConfig(mode="malicious"), timeout=0.3,
                                registry=load_registry(flower_root / "registry.toml"))
    reports, models = run_rounds(grid, wf, 1)
    assert reports[0].abort is None
    # no one can tell which claimant is honest: both are left out, the round goes on
    assert "claimed by 2 nodes" in reports[0].dropped[node_id(5)]
    assert "claimed by 2 nodes" in reports[0].dropped[node_id(0)]
    assert np.abs(updates(models)[0] - expected_update([1, 2, 3, 4, 6], 1)).max() < TOL


def test_malicious_mode_with_pinned_node_ids_refuses_the_impostor_only(flower_root):
    write_identities(flower_root, N, pin_nodes=True)
    grid = make_grid(flower_root, N, '[round]\nmode = "malicious"\n',
                     lambda p: malicious_node(p).replace("client_id = 105", "client_id = 100")
                     .replace('"client-5.key"', '"client-0.key"'))
    wf = HardenedSecAggWorkflow(config=RoundConfig(mode="malicious"), timeout=0.3,
                                registry=load_registry(flower_root / "registry.toml"))
    reports, models = run_rounds(grid, wf, 1)
    assert f"registered to node {node_id(0)}" in reports[0].dropped[node_id(5)]
    assert np.abs(updates(models)[0] - expected_update(range(5), 1)).max() < TOL


def test_too_few_nodes_to_run_abort_the_round_typed(flower_root):
    write_identities(flower_root, N)
    grid = make_grid(flower_root, N, '[round]\nmode = "malicious"\n',
                     lambda p: malicious_node(p).replace(f"client_id = {100 + p}",
                                                         "client_id = 999") if p > 1
                     else malicious_node(p))
    wf = HardenedSecAggWorkflow(config=RoundConfig(mode="malicious"), timeout=0.3,
                                registry=load_registry(flower_root / "registry.toml"))
    reports, models = run_rounds(grid, wf, 1)
    assert reports[0].abort.reason is AbortReason.COHORT_TOO_SMALL
    assert np.array_equal(models[0], models[1])


def test_dp_rounds_charge_both_ledgers_and_both_verify(flower_root, tmp_path):
    dp = DPConfig(clip_norm=1.0, epsilon=8.0, delta=1e-5, rounds=2)
    body = "[dp]\nclip_norm = 1.0\nepsilon = 8.0\ndelta = 1e-5\nrounds = 2\n"
    grid = make_grid(flower_root, N, body)
    grid.silent[node_id(1)] = (2, "masked_input")  # dropped before its input: not charged
    server_ledger = tmp_path / "server-ledger.jsonl"
    wf = HardenedSecAggWorkflow(config=RoundConfig(), dp=dp, timeout=0.3,
                                ledger=server_ledger)
    reports, models = run_rounds(grid, wf, 2)
    assert [r.abort for r in reports] == [None, None]
    wf.close()
    server = verify(server_ledger)  # independently recomputed (dp_accounting)
    assert server.entries == 2 and 0 < server.epsilon <= 8.0
    for p in range(N):
        node = verify(flower_root / "state" / f"node-{p}" / "ledger.jsonl")
        assert node.entries == (1 if p == 1 else 2), p
        assert node.epsilon <= server.epsilon + 1e-12
    # DP noise at epsilon 8 with 6 clients is large; the mean is still in the right place
    assert np.isfinite(models[-1]).all()


def test_the_nodes_state_between_messages_is_sealed(flower_root):
    grid = make_grid(flower_root, N)
    seen = []
    grid.tamper = lambda node, msg, state: seen.append(bytes(
        state.config_records[STATE_RECORD]["blob"])) if STATE_RECORD in \
        state.config_records else None
    run_rounds(grid, HardenedSecAggWorkflow(config=RoundConfig(), timeout=0.3), 1)
    assert seen
    for blob in seen:  # no secret in the clear: not JSON, no key material visible
        assert b'"keys"' not in blob and b"await" not in blob[:80] or blob.startswith(b"SAST")


def test_a_decoded_update_that_is_not_finite_is_not_applied(flower_root, monkeypatch, caplog):
    from protocol.real_sum import SumPlan

    grid = make_grid(flower_root, N)
    monkeypatch.setattr("protocol.flower.workflow.finish_sum",
                        lambda plan, agg, **kw: np.full(plan.update_dim, np.nan)
                        if isinstance(plan, SumPlan) else None)
    reports, models = run_rounds(grid, HardenedSecAggWorkflow(config=RoundConfig(),
                                                              timeout=0.3), 1)
    assert "not finite" in str(reports[0].abort)
    assert np.array_equal(models[0], models[1])


def test_an_error_the_superlink_sends_for_a_gone_node_is_a_lost_connection(flower_root):
    grid = make_grid(flower_root, N)
    grid.gone.add(node_id(4))
    reports, models = run_rounds(grid, HardenedSecAggWorkflow(config=RoundConfig(),
                                                              timeout=0.3), 1)
    why = reports[0].dropped[node_id(4)]
    assert why == f"advertise_keys: node {node_id(4)}: message expired"  # not a violation
    assert np.abs(updates(models)[0] - expected_update([0, 1, 2, 3, 5], 1)).max() < TOL
