"""The conformance suite's client cases through Flower: a ClientApp with hardened_secagg_mod,
handed each server message as the Flower Message our workflow sends
(:mod:`protocol.conformance.flower_target`). Honest rounds complete with the right sum in both
modes; attacks come back as the node's error replies; the spec's input is what the node
masks."""

from __future__ import annotations

import pytest

from protocol.conformance import MODES, run_client_suite
from protocol.conformance import flower_target as ft
from protocol.real_sum import SumClient

pytestmark = pytest.mark.timeout(90)

CASES = ("honest-round", "dropout-after-share-keys", "neighbour-alive-and-dead",
         "replayed-session", "second-unmasking-request", "garbage-bytes")


def _play(cases, tmp_path, modes=MODES):
    target = ft.FlowerModClient()
    try:
        return {(r.case, r.mode): r for r in run_client_suite(target, modes=modes, cases=cases,
                                                              workdir=tmp_path)}
    finally:
        target.close()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return _play(CASES, tmp_path_factory.mktemp("conformance-flower"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
def test_the_mod_passes(results, case, mode):
    r = results[(case, mode)]
    assert r.passed, r.observed


@pytest.mark.parametrize("mode", MODES)
def test_refusals_are_the_nodes_error_replies(results, mode):
    assert "NodeRefused: RemoteProtocolError" in results[("neighbour-alive-and-dead",
                                                          mode)].observed
    assert "replayed session" in results[("replayed-session", mode)].observed
    assert "NodeRefused: WireError" in results[("garbage-bytes", mode)].observed


def test_the_masked_input_is_the_specs(tmp_path, monkeypatch):
    """With the mod's own encoding of the app's update in place of the spec's ring vector,
    the server's sum is not the spec's: the input reaches the round only through the
    encoder."""
    def encoded(self, update, **kw):
        return SumClient.prepare(self, update, **kw)

    monkeypatch.setattr(ft._SpecInput, "prepare", encoded)
    (r,) = _play(["honest-round"], tmp_path, modes=["semi-honest"]).values()
    assert not r.passed and "sum of the survivors is wrong" in r.observed
