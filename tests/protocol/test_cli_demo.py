"""The interim main job: ``secagg demo`` masks, drops, unmasks and checks the sum."""

from __future__ import annotations

import json

import pytest

from protocol.cli import main
from protocol.demo import run_demo


@pytest.mark.parametrize("bits,mode,dropout", [(32, "semi-honest", 0.1), (13, "malicious", 0.2),
                                               (64, "semi-honest", 0.0)])
def test_demo_round_is_correct(bits, mode, dropout):
    r = run_demo(25, 500, bits=bits, dropout=dropout, mode=mode, seed=3)
    assert r.correct
    assert r.survivors + r.dropped == 25 and r.dropped == int(dropout * 25)


def test_cli_json(capsys):
    assert main(["demo", "--clients", "12", "--dim", "100", "--json", "--seed", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["correct"] is True and out["clients"] == 12


@pytest.mark.parametrize("argv", [["demo", "--clients", "2"], ["demo", "--bits", "65"],
                                  ["demo", "--dropout", "x"], ["demo", "--dim", "0"], ["nope"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_infeasible_parameters_exit_2(capsys):
    assert main(["demo", "--clients", "3", "--dropout", "0.5", "--corrupt", "0.5"]) == 2
    assert "error" in capsys.readouterr().err
