"""The conformance suites themselves: our client and server pass every case; implementations
that break the protocol fail the case named after what they do wrong; the harness survives
targets that crash, hang or answer outside the framing; the command line's table, JSON and exit
codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

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


def test_a_client_that_refuses_everything_fails_the_controls():
    bad = failed(run_client_suite(_RefusesEverything(), modes=["semi-honest"]))
    assert {case for case, _ in bad} == {"honest-round", "dropout-after-share-keys",
                                         "dropout-at-share-keys"}


def test_a_client_that_refuses_nothing_fails_every_attack():
    results = run_client_suite(_AcceptsEverything(), modes=["semi-honest"])
    assert not any(r.passed for r in results if r.case == "neighbour-alive-and-dead")
    assert sum(r.passed for r in results) == 0


@pytest.mark.parametrize(("script", "expect"), [
    ("import sys; sys.exit(3)", "exit status 3"),
    ("import sys, time; sys.stdin.buffer.read(4); time.sleep(30)", "no answer within"),
    ("import sys; sys.stdout.buffer.write(b'\\xff\\xff\\xff\\xff'); sys.stdout.flush()",
     "a frame of"),
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


def test_server_suite_cli_exit_code(capsys):
    assert main(["conformance", "server", "--mode", "malicious", "--case", "flood",
                 "--case", "forged-consistency-signature"]) == 0
    assert "2 of 2 cases passed" in capsys.readouterr().out
