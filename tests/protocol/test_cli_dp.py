"""`secagg simulate --epsilon ... --ledger` and `secagg budget show|verify|plot` (the HTML
report is tested in tests/dp/test_budget_report.py)."""

from __future__ import annotations

import json

import pytest

from protocol.cli import main


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "ledger.jsonl"
    code = main(["simulate", "--clients", "12", "--dim", "200", "--rounds", "3", "--epsilon",
                 "3", "--delta", "1e-5", "--ledger", str(path), "--seed", "4"])
    assert code == 0
    return path


def test_simulate_writes_one_entry_per_round(ledger, capsys):
    assert len(ledger.read_bytes().splitlines()) == 1 + 3
    assert main(["budget", "verify", "--json", str(ledger)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] and out["rounds"] == 3 and 0 < out["epsilon"] <= 3


def test_show_lists_the_rounds(ledger, capsys):
    assert main(["budget", "show", "--json", str(ledger)]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["round"] for r in rows] == [0, 1, 2]
    eps = [r["epsilon"] for r in rows]
    assert eps == sorted(eps) and eps[0] > 0


def test_plot_writes_a_png(ledger, tmp_path):
    out = tmp_path / "eps.png"
    assert main(["budget", "plot", str(ledger), "--output", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verify_names_the_first_bad_line(ledger, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    lines = ledger.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"survivors":', b'"survivors":1', 1)
    bad.write_bytes(b"".join(lines))
    assert main(["budget", "verify", str(bad)]) == 1
    assert "line 3" in capsys.readouterr().err


def test_budget_exhausted_refuses_and_leaves_the_ledger(ledger, tmp_path, capsys):
    copy = tmp_path / "again.jsonl"
    copy.write_bytes(ledger.read_bytes())
    (tmp_path / "again.jsonl.head").write_bytes(ledger.with_name(ledger.name + ".head")
                                                .read_bytes())
    before = copy.read_bytes()
    code = main(["simulate", "--clients", "12", "--dim", "200", "--rounds", "3", "--epsilon",
                 "3", "--ledger", str(copy), "--seed", "5"])
    assert code == 1
    assert "budget" in capsys.readouterr().err
    assert copy.read_bytes() == before


def test_bad_dp_arguments_exit_2():
    with pytest.raises(SystemExit) as e:
        main(["simulate", "--epsilon", "-1"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["budget", "frobnicate", "x"])
    assert e.value.code == 2


def test_missing_ledger_is_an_error(tmp_path, capsys):
    assert main(["budget", "verify", str(tmp_path / "none.jsonl")]) == 1
    assert "cannot read" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Rollback: the auditor pins the ledger id and the round count seen at the last audit
# --------------------------------------------------------------------------------------------


def _signed_ledger(path, key, rounds, noise):
    from dp.events import GaussianDpEvent
    from dp.ledger import Budget, Ledger

    led = Ledger.create(path, Budget(50.0, 1e-5), signing_key=key)
    for r in range(rounds):
        led.record_round(event=GaussianDpEvent(noise), session="s", round=r, cohort=10,
                         survivors=9, n_min=8, clip_norm=1.0, mechanism={"name": "gaussian"},
                         sampler_tv=0.0)
    led.close()
    return path


def _head(path):
    return path.with_name(path.name + ".head")


@pytest.fixture
def signed(tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from dp.ledger import public_key_hex

    key = Ed25519PrivateKey.generate()
    path = _signed_ledger(tmp_path / "ledger.jsonl", key, 4, 3.0)
    ledger_id = json.loads(path.read_bytes().splitlines()[0])["ledger_id"]
    return path, key, public_key_hex(key), ledger_id


def test_show_prints_the_ledger_id_to_record(signed, capsys):
    path, _, pub, ledger_id = signed
    assert main(["budget", "show", str(path), "--public-key", pub]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"ledger id: {ledger_id}"  # first thing an auditor sees
    assert f"--ledger-id {ledger_id} --min-rounds 4" in out[1]
    assert main(["budget", "show", "--json", str(path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["ledger_id"] == ledger_id and shown["rounds"] == 4
    assert main(["budget", "verify", "--json", str(path), "--ledger-id", ledger_id,
                 "--min-rounds", "4"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert checked["ledger_id"] == ledger_id
    assert checked["pinned"] == {"ledger_id": ledger_id, "min_rounds": 4}
    assert main(["budget", "verify", str(path)]) == 0
    assert ledger_id in capsys.readouterr().out


def test_rollback_to_another_ledger_with_same_key_is_refused_by_ledger_id(signed, tmp_path,
                                                                           capsys):
    path, key, pub, ledger_id = signed
    pins = ["--public-key", pub, "--ledger-id", ledger_id, "--min-rounds", "4"]
    assert main(["budget", "verify", str(path), *pins]) == 0
    # an older ledger of the same key (more rounds, far less epsilon) swapped in whole
    older = _signed_ledger(tmp_path / "older.jsonl", key, 6, 50.0)
    path.write_bytes(older.read_bytes())
    _head(path).write_bytes(_head(older).read_bytes())
    assert main(["budget", "verify", str(path), "--public-key", pub]) == 0  # the attack
    capsys.readouterr()
    assert main(["budget", "verify", str(path), *pins]) == 1  # the same code as any failure
    err = capsys.readouterr().err
    other_id = json.loads(older.read_bytes().splitlines()[0])["ledger_id"]
    assert "INVALID" in err and "line 1" in err and ledger_id in err and other_id in err
    for command in ("show", "plot"):  # every subcommand verifies with the pins
        assert main(["budget", command, str(path), *pins]) == 1
    capsys.readouterr()


def test_truncated_history_below_min_rounds_is_refused_by_the_cli(signed, capsys):
    from dp import ledger as ledger_mod

    path, key, pub, ledger_id = signed
    # the key holder cuts the ledger to 2 rounds and writes and signs a matching head
    lines = path.read_bytes().splitlines(keepends=True)[:3]
    path.write_bytes(b"".join(lines))
    head = {"entries": 3, "hash": ledger_mod.line_hash(lines[-1].rstrip(b"\n")),
            "ledger_id": ledger_id}
    head["signature"] = ledger_mod._sign(key, head, ledger_mod.HEAD_LABEL)
    _head(path).write_bytes(ledger_mod.canonical_line(head) + b"\n")
    assert main(["budget", "verify", str(path), "--public-key", pub, "--ledger-id",
                 ledger_id]) == 0  # same ledger, self-consistent: only the count tells
    capsys.readouterr()
    assert main(["budget", "verify", str(path), "--public-key", pub, "--ledger-id",
                 ledger_id, "--min-rounds", "4"]) == 1
    err = capsys.readouterr().err
    assert "INVALID" in err and "2 rounds" in err and "at least 4" in err


@pytest.mark.parametrize("pin", [["--ledger-id", "zz" * 16], ["--ledger-id", "ab" * 15],
                                 ["--min-rounds", "-1"], ["--min-rounds", "x"]])
def test_malformed_pins_exit_2(ledger, pin, capsys):
    with pytest.raises(SystemExit) as e:
        main(["budget", "verify", str(ledger), *pin])
    assert e.value.code == 2
    capsys.readouterr()


def test_simulate_prints_the_pins_for_the_next_audit(tmp_path, capsys):
    path = tmp_path / "l.jsonl"
    assert main(["simulate", "--clients", "12", "--dim", "50", "--rounds", "1", "--epsilon",
                 "3", "--ledger", str(path), "--seed", "1"]) == 0
    ledger_id = json.loads(path.read_bytes().splitlines()[0])["ledger_id"]
    assert f"--ledger-id {ledger_id} --min-rounds 1" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# An existing ledger is appended to only under the budget it was created for
# --------------------------------------------------------------------------------------------


def _simulate(path, epsilon, seed, *extra):
    return main(["simulate", "--clients", "10", "--dim", "50", "--epsilon", epsilon,
                 "--ledger", str(path), "--seed", seed, *extra])


def test_simulate_refuses_a_ledger_created_for_another_budget(tmp_path, capsys):
    path = tmp_path / "l.jsonl"
    assert _simulate(path, "8", "1") == 0
    before, head = path.read_bytes(), _head(path).read_bytes()
    capsys.readouterr()
    assert _simulate(path, "4", "2") == 2
    err = capsys.readouterr().err
    assert err.startswith("secagg: ") and "was created for the budget" in err
    assert path.read_bytes() == before and _head(path).read_bytes() == head


def test_simulate_appends_to_a_ledger_of_the_same_budget(tmp_path, capsys):
    path = tmp_path / "l.jsonl"
    # the first run creates the ledger; its one round aborts (5 survivors, n_min 8) uncharged
    assert _simulate(path, "8", "1", "--dropout", "0.5", "--n-min", "8") == 1
    before = path.read_bytes()
    assert len(before.splitlines()) == 1
    assert _simulate(path, "8", "2") == 0
    after = path.read_bytes()
    assert after.startswith(before) and len(after.splitlines()) == 2
    capsys.readouterr()
    assert main(["budget", "verify", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["rounds"] == 1
