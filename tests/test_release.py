"""What a user installs: the version from the package metadata, and the license."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from protocol.cli import main
from secagg.version import package_version

ROOT = Path(__file__).resolve().parents[1]


def test_secagg_version_is_the_package_metadata(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"secagg {metadata.version('secagg-hardened')}"
    assert package_version() == metadata.version("secagg-hardened")


def test_the_installed_command_prints_the_version():
    out = subprocess.run([sys.executable, "-m", "protocol.cli", "--version"], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.strip() == f"secagg {metadata.version('secagg-hardened')}"


def test_json_outputs_carry_the_version(capsys):
    assert main(["simulate", "--clients", "5", "--dim", "8", "--json", "--seed", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["secagg_version"] == package_version()
    assert main(["conformance", "server", "--case", "honest-round", "--mode", "semi-honest",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["secagg_version"] == package_version()


def test_the_license_is_apache_2_and_ships_with_the_package():
    dist = metadata.distribution("secagg-hardened")
    assert dist.metadata["License-Expression"] == "Apache-2.0"
    assert set(dist.metadata.get_all("License-File")) == {"LICENSE", "NOTICE"}
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "Apache License, Version 2.0" in (ROOT / "NOTICE").read_text()


def _options(parser, path=("secagg",)):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield path, action


def test_every_option_of_every_subcommand_has_help_and_shows_its_default():
    import argparse

    from protocol.cli import _HelpWithDefaults, build_parser

    missing, undefaulted = [], []
    formatter = _HelpWithDefaults("secagg")
    for path, action in _options(build_parser()):
        name = f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}"
        if not (action.help and action.help.strip()) or action.help == argparse.SUPPRESS:
            missing.append(name)
        elif action.option_strings and action.default not in (None, False, argparse.SUPPRESS) \
                and "default" not in formatter._get_help_string(action):
            undefaulted.append(name)
    assert not missing, f"options without help: {missing}"
    assert not undefaulted, f"options whose help does not show the default: {undefaulted}"
    help_text = subprocess.run([sys.executable, "-m", "protocol.cli", "simulate", "--help"],
                               cwd=ROOT, capture_output=True, text=True, check=True,
                               timeout=120).stdout
    assert "cohort (default: 100)" in help_text and "(default: semi-honest)" in help_text


def test_a_dp_simulation_without_a_ledger_reports_the_accountants_epsilon(capsys):
    from dp.accounting import RdpAccountant
    from dp.ledger import delta_for_rdp
    from protocol.config import RoundConfig
    from protocol.dp_round import DPConfig, plan_dp

    assert main(["simulate", "--clients", "12", "--dim", "64", "--rounds", "3", "--epsilon",
                 "6", "--delta", "1e-5", "--dropout", "0.1", "--seed", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    eps = [row["epsilon"] for row in doc["rounds"]]
    assert all(isinstance(e, float) and 0 < e <= 6 for e in eps) and eps == sorted(eps)
    plan = plan_dp(DPConfig(clip_norm=1.0, epsilon=6.0, delta=1e-5, rounds=3),
                   RoundConfig(bits=32, dropout_rate=0.1), 12, 64)
    for r, e in enumerate(eps, 1):
        d = delta_for_rdp(plan.config.budget, r * plan.sampler_tv)
        assert e == RdpAccountant().compose(plan.event, r).epsilon(d)


def test_a_missing_extra_is_named(monkeypatch):
    from dp.local import train_dp_sgd

    monkeypatch.setitem(sys.modules, "opacus", None)  # as if the extra were not installed
    with pytest.raises(ImportError, match=r"extra 'train'"):
        train_dp_sgd(None, [], [], epochs=1, batch_size=1, lr=0.1, noise_multiplier=1.0,
                     max_grad_norm=1.0, delta=1e-5)
    script = ("import sys, runpy; sys.modules['torch'] = None; "
              "runpy.run_path('examples/federated_digits.py', run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 1 and "needs the extra 'train'" in out.stderr


def test_the_flower_target_without_flower_names_the_extra(monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "flwr" or m.startswith(("flwr.",
                 "protocol.flower", "protocol.conformance.flower_target"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "flwr", None)  # as if the extra were not installed
    assert main(["conformance", "client", "--target", "flower"]) == 2
    assert "needs the extra 'flower'" in capsys.readouterr().err
