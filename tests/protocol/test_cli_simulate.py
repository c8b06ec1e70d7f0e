"""The main job: ``secagg simulate`` runs a whole round, checks it, and summarises it."""

from __future__ import annotations

import json

import pytest

from protocol.cli import main


@pytest.mark.parametrize("extra", [[], ["--mode", "malicious"], ["--bits", "12"],
                                   ["--complete-graph", "--bits", "64"]])
def test_simulate_json_summary(extra, capsys):
    rc = main(["simulate", "--clients", "24", "--dim", "300", "--dropout", "0.1", "--seed", "3",
               "--json", *extra])
    out = capsys.readouterr()
    s = json.loads(out.out)
    assert rc == 0 and s["correct"] is True
    assert s["survivors"] <= 24 - sum(len(v) for k, v in s["dropped"].items()
                                      if k in ("advertise_keys", "share_keys", "masked_input"))
    assert s["upload_expansion"] > 1 and s["server_peak_bytes"] > 0
    assert set(s["seconds"]) >= {"advertise_keys", "share_keys", "masked_input", "unmasking"}
    assert "unmasking" in out.err  # the progress bars


def test_simulate_text_summary(capsys):
    assert main(["simulate", "--clients", "10", "--dim", "50", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "aggregate equals the plain sum of the survivors' inputs: yes" in out
    assert "upload expansion" in out and "server peak memory" in out


@pytest.mark.parametrize("argv", [
    ["simulate", "--clients", "2"], ["simulate", "--dim", "-5"], ["simulate", "--dropout", "2"],
    ["simulate", "--mode", "evil"], ["simulate", "--bits", "7"], ["simulate", "--clients", "x"],
])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_abort_is_reported_with_its_reason(capsys):
    rc = main(["simulate", "--clients", "10", "--dim", "5", "--dropout", "0.9", "--seed", "1"])
    assert rc == 1
    assert "aborted" in capsys.readouterr().err
