"""The README's two-command network demo (``examples/network_demo.py``) with real processes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from net_harness import free_port, make_deployment

from protocol.net.certs import DemoOptions, write_demo

DEMO = Path(__file__).resolve().parents[2] / "examples" / "network_demo.py"


def _demo_module():
    spec = importlib.util.spec_from_file_location("network_demo", DEMO)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.timeout(60)
def test_demo_refuses_more_drops_than_the_dp_plan_allows(tmp_path, capsys):
    # 8 clients at dropout_rate 0.1: the DP noise is planned for n_min = 7 survivors, so at
    # most one client may be killed; two would make round 1 abort with too-few-clients.
    write_demo(tmp_path, DemoOptions(clients=8, port=free_port(), dim=16, rounds=2, seed=3))
    demo = _demo_module()
    assert demo.round_minimum(demo.load_server(tmp_path / "server.toml")) == 7
    assert demo.main([str(tmp_path), "--drop", "2"]) == 2
    err = capsys.readouterr().err
    assert "--drop 2 is outside [0, 1]" in err and "at least 7 of the 8" in err
    assert demo.main([str(tmp_path), "--drop", "-1"]) == 2
    # refused before anything started: no server log, no ledger, no aggregate
    assert not (tmp_path / "state" / "server.log.jsonl").exists()
    assert not any((tmp_path / "state").rglob("*.npy"))


@pytest.mark.timeout(120)
def test_demo_runs_with_a_killed_client_and_passes(tmp_path, capsys):
    make_deployment(tmp_path, 8, dp=True, rounds=2)
    code = _demo_module().main([str(tmp_path), "--drop", "1", "--timeout", "100"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "killed clients [0] with SIGKILL" in out
    assert "server exit status 0" in out and "demo passed" in out
    assert "server ledger verifies: 2 rounds" in out
    # the killed client is missing from round 1's survivors
    assert "round 1: 7 survivors" in out
