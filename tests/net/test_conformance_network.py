"""The conformance suite's client cases over the network: our networked client (run_client,
gRPC + mutual TLS on 127.0.0.1) against the scripted server of
:mod:`protocol.conformance.net_target`. Honest rounds complete with the right sum in both
modes, attacks are refused (a DECLINE, or silence for a Setup that does not decode), and a
client that answers twice, stays silent or crashes fails its case instead of passing it."""

from __future__ import annotations

import threading

import pytest

import protocol.participant as participant
from protocol.conformance import MODES, run_client_suite
from protocol.conformance import net_target as nt
from protocol.conformance.hostile import BothShareKinds
from protocol.messages import KeysBroadcast
from protocol.net.client import AsyncClient
from protocol.net.frames import Welcome

pytestmark = pytest.mark.timeout(90)

CASES = ("honest-round", "dropout-after-share-keys", "neighbour-alive-and-dead",
         "replayed-session", "second-unmasking-request", "garbage-bytes")


def _no_target_threads() -> bool:
    return not any(t.name == "secagg-conformance-net" for t in threading.enumerate())


def _play(cases, tmp_path, modes=MODES):
    target = nt.NetworkClient()
    try:
        return {(r.case, r.mode): r for r in run_client_suite(target, modes=modes, cases=cases,
                                                              workdir=tmp_path)}
    finally:
        target.close()
        assert _no_target_threads()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return _play(CASES, tmp_path_factory.mktemp("conformance-net"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
def test_the_networked_client_passes(results, case, mode):
    r = results[(case, mode)]
    assert r.passed, r.observed


@pytest.mark.parametrize("mode", MODES)
def test_refusals_map_to_a_decline_or_to_silence(results, mode):
    assert "DECLINE" in results[("neighbour-alive-and-dead", mode)].observed
    assert "replayed session" in results[("replayed-session", mode)].observed
    # an undecodable Setup names no session to decline: the client gives the round up quietly
    assert "without a DECLINE" in results[("garbage-bytes", mode)].observed


def test_a_client_that_answers_twice_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(participant, "ClientRound", BothShareKinds)
    (r,) = _play(["neighbour-alive-and-dead"], tmp_path, modes=["semi-honest"]).values()
    assert not r.passed
    assert "beyond its one answer" in r.observed


def test_a_silent_client_is_refused_as_no_answer(tmp_path, monkeypatch):
    on_message = AsyncClient._on_message

    async def silent_at_keys(self, msg):
        if not isinstance(msg, KeysBroadcast):
            await on_message(self, msg)

    monkeypatch.setattr(AsyncClient, "_on_message", silent_at_keys)
    monkeypatch.setattr(nt, "QUIET", 0.5)
    (r,) = _play(["honest-round"], tmp_path, modes=["semi-honest"]).values()
    assert not r.passed
    assert "refused an honest share_keys message: no answer within 0.5 s" in r.observed


def test_a_crashing_client_breaks_the_interface(tmp_path, monkeypatch):
    async def crash(self, msg):
        raise RuntimeError("crashed on purpose")

    monkeypatch.setattr(AsyncClient, "_on_message", crash)
    (r,) = _play(["honest-round"], tmp_path, modes=["semi-honest"]).values()
    assert not r.passed
    assert "crashed: RuntimeError: crashed on purpose" in r.observed


def test_a_client_that_refuses_the_welcome_breaks_the_interface(tmp_path, monkeypatch):
    def wrong_digest(client_id, digest, next_round):
        return Welcome(client_id, bytes(32), next_round)

    monkeypatch.setattr(nt, "Welcome", wrong_digest)
    (r,) = _play(["honest-round"], tmp_path, modes=["semi-honest"]).values()
    assert not r.passed
    assert "did not start its session" in r.observed
    assert "exit 5 (SERVER_REFUSED): the server's configuration" in r.observed
