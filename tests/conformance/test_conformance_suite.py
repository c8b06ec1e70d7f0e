"""The conformance suites themselves: our client and server pass every case; implementations
that break the protocol fail the case named after what they do wrong; the harness survives
targets that crash, hang or answer outside the framing; the command line's table, JSON and exit
codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from broken_clients import ClaimsAtTheEnd, SelfMaskOnly

from protocol.cli import main
from protocol.conformance import (
    CASES,
    ClientSession,
    ClientTarget,
    InProcessClient,
    ProgramClient,
    Reply,
    run_client_suite,
)
from protocol.conformance import server_cases as sc
from protocol.conformance.hostile import BothShareKinds

HERE = Path(__file__).resolve().parent
OUR_PROGRAM = [sys.executable, "-m", "protocol.conformance.stdio_client"]
BROKEN_PROGRAM = [sys.executable, str(HERE / "broken_clients.py")]


def failed(results) -> dict[tuple[str, str], str]:
    return {(r.case, r.mode): r.observed for r in results if not r.passed}


def test_our_client_passes_every_case_in_both_modes():
    results = run_client_suite(InProcessClient())
    assert not failed(results)
    names = {r.case for r in results}
    assert names == {c.name for c in CASES}
    assert len(results) > 80  # every case in each mode it applies to


def test_a_client_answering_both_share_kinds_fails_the_case_by_name():
    results = run_client_suite(InProcessClient(BothShareKinds),
                               cases=["neighbour-alive-and-dead", "honest-round"])
    bad = failed(results)
    assert set(bad) == {("neighbour-alive-and-dead", "semi-honest"),
                        ("neighbour-alive-and-dead", "malicious")}
    assert all("accepted it" in why or "revealed" in why for why in bad.values())


def test_a_broken_program_fails_with_the_case_named_and_exit_status_1(capsys):
    code = main(["conformance", "client", "--target", "program", "--program",
                 " ".join(BROKEN_PROGRAM), "--mode", "semi-honest",
                 "--case", "neighbour-alive-and-dead", "--case", "honest-round"])
    out = capsys.readouterr().out
    assert code == 1
    assert "failed: neighbour-alive-and-dead (semi-honest)" in out
    assert "FAIL" in out


def test_our_client_as_a_stdin_stdout_program_passes():
    results = run_client_suite(ProgramClient(OUR_PROGRAM), modes=["malicious"],
                               cases=["honest-round", "neighbour-alive-and-dead",
                                      "replayed-session"])
    assert len(results) == 3 and not failed(results)


class _RefusesEverything(ClientTarget):
    name = "refuses everything"

    def open(self, spec):
        class S(ClientSession):
            def send(self, data):
                return Reply(refused="no")

        return S()


class _AcceptsEverything(ClientTarget):
    name = "answers nothing, refuses nothing"

    def open(self, spec):
        class S(ClientSession):
            def send(self, data):
                return Reply()

        return S()


def test_a_client_that_refuses_everything_fails_the_controls_and_every_later_attack():
    """A refusal before the attack was made is not a refusal of the attack: only the Setup
    attacks can pass."""
    results = run_client_suite(_RefusesEverything(), modes=["semi-honest"])
    bad = {case for case, _ in failed(results)}
    assert {"honest-round", "dropout-after-share-keys", "dropout-at-share-keys"} <= bad
    setup_cases = {c.name for c in CASES if c.stage is not None and c.stage == "advertise_keys"}
    assert {r.case for r in results if r.passed} <= setup_cases
    assert "neighbour-alive-and-dead" in bad


def test_a_client_that_refuses_nothing_fails_every_attack():
    results = run_client_suite(_AcceptsEverything(), modes=["semi-honest"])
    assert not any(r.passed for r in results if r.case == "neighbour-alive-and-dead")
    assert sum(r.passed for r in results) == 0


def test_a_program_that_reveals_shares_after_its_refusal_fails():
    target = ProgramClient([*BROKEN_PROGRAM, "--status-first"])
    (r,) = run_client_suite(target, modes=["semi-honest"], cases=["neighbour-alive-and-dead"])
    assert not r.passed and "after its last answer" in r.observed and "both b_" in r.observed


def test_a_client_that_claims_its_session_only_at_the_end_fails_the_cut_replays():
    results = run_client_suite(InProcessClient(ClaimsAtTheEnd), modes=["malicious"],
                               cases=["replayed-session",
                                      "replayed-session-cut-after-consistency-check",
                                      "replayed-session-cut-after-advertise-keys"])
    assert set(failed(results)) == {
        ("replayed-session-cut-after-consistency-check", "malicious"),
        ("replayed-session-cut-after-advertise-keys", "malicious")}


def test_a_client_masking_with_its_self_mask_only_is_caught_revealing_its_input():
    results = run_client_suite(InProcessClient(SelfMaskOnly), modes=["semi-honest"],
                               cases=["honest-round", "neighbour-alive-and-dead"])
    bad = failed(results)
    assert len(bad) == 2
    assert all("self mask only" in why for why in bad.values())


def test_refusal_text_is_made_printable():
    script = ("import sys, struct\n"
              "r = sys.stdin.buffer.read\n"
              "w = sys.stdout.buffer.write\n"
              "n, = struct.unpack('>I', r(4)); r(n); w(struct.pack('>I', 0)); sys.stdout.flush()\n"
              "n, = struct.unpack('>I', r(4)); r(n)\n"
              "t = b'\\x00\\x1b[2J' + b'A' * 5000\n"
              "w(struct.pack('>I', len(t)) + t); sys.stdout.flush()\n")
    (r,) = run_client_suite(ProgramClient([sys.executable, "-c", script]),
                            modes=["semi-honest"], cases=["garbage-bytes"])
    assert "\x1b" not in r.observed and len(r.observed) < 500


@pytest.mark.parametrize("bad", ["nan", "inf", "-1", "0"])
def test_the_timeout_must_be_finite_and_positive(bad, capsys):
    with pytest.raises(SystemExit):
        main(["conformance", "client", "--target", "program", "--program", "x",
              "--timeout", bad])
    with pytest.raises(ValueError, match="timeout"):
        ProgramClient("x", timeout=float(bad))


@pytest.mark.parametrize(("script", "expect"), [
    ("import sys; sys.exit(3)", "exit status 3"),
    ("import sys, time; sys.stdin.buffer.read(4); time.sleep(30)", "no answer within"),
    ("import sys; sys.stdout.buffer.write(b'\\xff\\xff\\xff\\xff'); sys.stdout.flush()",
     "a frame of"),
    ("import sys; sys.stderr.write('debug ' * 100000); sys.stderr.flush(); sys.exit(4)",
     "exit status 4"),
    ("import os, subprocess, sys\n"
     "subprocess.Popen(['sleep', '60'], stdout=subprocess.DEVNULL)\n"
     "sys.exit(3)", "exit status 3"),
])
def test_a_program_that_crashes_hangs_or_breaks_the_framing_fails_typed(script, expect):
    target = ProgramClient([sys.executable, "-c", script], timeout=2.0)
    (r,) = run_client_suite(target, modes=["semi-honest"], cases=["honest-round"])
    assert not r.passed and expect in r.observed


def test_unknown_case_or_mode_is_a_usage_error(capsys):
    with pytest.raises(ValueError, match="unknown case"):
        run_client_suite(InProcessClient(), cases=["no-such-case"])
    assert main(["conformance", "client", "--case", "no-such-case"]) == 2
    assert main(["conformance", "client", "--target", "program"]) == 2
    assert "--program" in capsys.readouterr().err


def test_json_output_and_list(capsys):
    assert main(["conformance", "client", "--mode", "semi-honest", "--case", "honest-round",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["total"] == 1 and doc["cases"][0]["case"] == "honest-round"
    assert set(doc["cases"][0]) == {"case", "mode", "expected", "observed", "passed"}
    assert main(["conformance", "server", "--list"]) == 0
    assert "impersonation" in capsys.readouterr().out


# -- the server suite ----------------------------------------------------------------------------
def test_our_server_passes_every_case_in_both_modes():
    results = sc.run_server_suite()
    assert not failed(results)
    assert {r.case for r in results} == {c.name for c in sc.CASES}


class _NoSenderCheck(sc.InProcessServer):
    """A host that forgets to check that a message's sender is the authenticated client."""

    name = "no sender check"

    def open(self, *args, **kwargs):
        inner = super().open(*args, **kwargs)

        class Lax(type(inner)):
            def receive(self, sender, data):
                from protocol import decode
                try:
                    return super().receive(decode(data).sender, data)
                except Exception:  # noqa: BLE001
                    return super().receive(sender, data)

        lax = Lax.__new__(Lax)
        lax.__dict__.update(inner.__dict__)
        return lax


def test_a_server_without_the_sender_check_fails_impersonation():
    results = sc.run_server_suite(_NoSenderCheck(), modes=["semi-honest"],
                                  cases=["impersonation", "honest-round"])
    bad = failed(results)
    assert set(bad) == {("impersonation", "semi-honest")}


def test_a_server_that_skips_the_seed_commitment_fails_the_exactly_t_forgery(monkeypatch):
    """b_u decoded from exactly t shares, one forged, is another valid seed: only the
    commitment check refuses it. Without that check the server removes the wrong self mask."""
    from protocol.stages import unmasking

    monkeypatch.setattr(unmasking.CollectResponses, "_self_seed",
                        lambda self, u, got: self._secret(u, "b", got))
    results = sc.run_server_suite(modes=["semi-honest"], cases=[
        "forged-self-mask-share-among-exactly-t", "honest-round"])
    assert set(failed(results)) == {("forged-self-mask-share-among-exactly-t", "semi-honest")}


def test_a_server_that_blames_any_dealer_of_a_bad_key_fails_the_framing_case(monkeypatch):
    """A server that names the dealer whenever s_u^SK fails its check, without 2t - 1 agreeing
    shares, lets t colluding holders frame an honest client."""
    from protocol.errors import AbortReason, RoundAborted
    from protocol.stages import unmasking

    honest = unmasking.CollectResponses._mask_key

    def blames(self, u, got):
        try:
            return honest(self, u, got)
        except RoundAborted as exc:
            raise RoundAborted(exc.stage, AbortReason.BAD_DEALING, "blamed", clients=(u,)
                               ) from None

    monkeypatch.setattr(unmasking.CollectResponses, "_mask_key", blames)
    results = sc.run_server_suite(modes=["semi-honest"], cases=[
        "forged-shares-frame-an-honest-key-dealer", "honest-round"])
    assert set(failed(results)) == {("forged-shares-frame-an-honest-key-dealer", "semi-honest")}


def test_server_suite_cli_exit_code(capsys):
    assert main(["conformance", "server", "--mode", "malicious", "--case", "flood",
                 "--case", "forged-consistency-signature"]) == 0
    assert "2 of 2 cases passed" in capsys.readouterr().out
