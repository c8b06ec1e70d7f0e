"""The Gaussian-DP accountant: the Skellam certificate against exact divergences, its two
implementations, the conversion against dp_accounting, and ledgers of both accountants."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

from dp.accounting import ACCOUNTANT_NAME, RDP_ONLY_NAME, RdpAccountant
from dp.crosscheck import LibraryAccountant, _skellam_pmf, _slope
from dp.errors import AccountingError, LedgerError
from dp.events import (
    ComposedDpEvent,
    DistributedDiscreteGaussianDpEvent,
    GaussianDpEvent,
    SkellamDpEvent,
    ZCDpEvent,
)
from dp.gdp import event_mu, gdp_delta, gdp_epsilon, skellam_slope
from dp.ledger import Budget, Ledger, canonical_line, verify


def _pmf(variance: float, top: int) -> np.ndarray:
    """p(-top..top) of Sk(variance), from scipy's Bessel function."""
    z = np.arange(-top, top + 1)
    return special.ive(np.abs(z), variance)


def _hockey_stick(p: np.ndarray, q: np.ndarray, eps: float) -> float:
    """sum (p - e^eps q)_+ over a common support: the exact delta(eps) of the pair."""
    return float(np.sum(np.maximum(p - math.exp(eps) * q, 0.0)))


EPSILONS = [0.0, 0.1, 0.5, 1.0, 2.0, 4.0, 8.0]


@pytest.mark.parametrize("variance", [2.0, 9.0, 50.0, 400.0])
@pytest.mark.parametrize("shift", [1, 2, 5])
def test_skellam_certificate_bounds_the_exact_one_dimensional_divergence(variance, shift):
    s, eta = skellam_slope(variance)
    top = math.ceil(40 * math.sqrt(variance)) + shift
    p = _pmf(variance, top)
    q = np.roll(p, shift)  # Z + shift on the same support (the far tail that wraps is ~0)
    q[:shift] = 0.0
    for eps in EPSILONS:
        exact = max(_hockey_stick(p, q, eps), _hockey_stick(q, p, eps))
        assert exact <= gdp_delta(s * shift, eps) + (1 + math.exp(eps)) * eta + 1e-15


@pytest.mark.parametrize("variance", [4.0, 30.0])
@pytest.mark.parametrize("vector", [(1, 1), (2, 1), (3, 0), (2, 2)])
def test_skellam_certificate_bounds_the_exact_two_dimensional_divergence(variance, vector):
    s, eta = skellam_slope(variance)
    top = math.ceil(25 * math.sqrt(variance)) + 4
    p1 = _pmf(variance, top)
    p = np.outer(p1, p1)
    q = np.roll(np.roll(p, vector[0], axis=0), vector[1], axis=1)
    q[: vector[0], :] = 0.0
    q[:, : vector[1]] = 0.0
    mu = s * math.hypot(*vector)
    for eps in EPSILONS:
        exact = max(_hockey_stick(p, q, eps), _hockey_stick(q, p, eps))
        assert exact <= gdp_delta(mu, eps) + 2 * (1 + math.exp(eps)) * eta + 1e-15


def test_the_certificate_is_never_below_the_gaussian_and_tends_to_it():
    prev = math.inf
    for variance in [1.0, 10.0, 100.0, 1e4, 1e6, 1e8]:
        ratio = skellam_slope(variance)[0] * math.sqrt(variance)
        assert ratio >= 1.0  # Skellam is never more private than the Gaussian of its variance
        assert ratio <= prev
        prev = ratio
    assert prev <= 1 + 2e-6  # 1 + MARGIN at large variance


@settings(max_examples=25, deadline=None)
@given(variance=st.floats(1.0, 1e7))
def test_the_two_certificate_implementations_agree(variance):
    ours, theirs = skellam_slope(variance), _slope(variance)
    assert ours[0] == pytest.approx(theirs[0], rel=1e-9)
    assert ours[1] == pytest.approx(theirs[1], rel=1e-6)


def test_millers_recurrence_reproduces_the_bessel_pmf():
    for variance in [1.0, 77.0, 1e5]:
        top = math.ceil(30 * math.sqrt(variance))
        np.testing.assert_allclose(_skellam_pmf(variance, top), special.ive(np.arange(top + 1),
                                   variance), rtol=1e-9)


@pytest.mark.parametrize(("z", "rounds", "delta"), [(1.0, 1, 1e-5), (3.4, 10, 1e-5),
                                                     (0.8, 3, 1e-6), (5.0, 100, 1e-8)])
def test_gaussian_gdp_matches_dp_accounting_pld_and_beats_rdp(z, rounds, delta):
    pld = pld_privacy_accountant.PLDAccountant()
    pld.compose(dp_event.GaussianDpEvent(z), rounds)
    ours = RdpAccountant().compose(GaussianDpEvent(z), rounds).epsilon(delta)
    rdp = RdpAccountant(gdp=False).compose(GaussianDpEvent(z), rounds).epsilon(delta)
    # dp_accounting's PLD is pessimistic by its discretisation (1e-4 in the privacy loss)
    assert ours == pytest.approx(pld.get_epsilon(delta), abs=2e-4, rel=1e-4)
    assert ours <= pld.get_epsilon(delta) + 1e-12
    assert ours < rdp


def test_gdp_delta_known_value():
    # mu = 1, epsilon = 0: delta = Phi(1/2) - Phi(-1/2) = 0.38292492254802624
    assert gdp_delta(1.0, 0.0) == pytest.approx(0.38292492254802624, rel=1e-14)
    assert gdp_delta(0.0, 1.0) == 0.0 and gdp_delta(math.inf, 1.0) == 1.0
    eps = gdp_epsilon(1.0, 0.0, 1e-5)
    assert gdp_delta(1.0, eps) == pytest.approx(1e-5, rel=1e-9)


def test_the_skellam_event_is_as_tight_as_the_central_gaussian():
    b, z = 1300.0, 3.4
    skellam = SkellamDpEvent(b * b, b, (z * b) ** 2)
    central = GaussianDpEvent(z)
    ours = RdpAccountant().compose(skellam, 10).epsilon(1e-5)
    assert ours == pytest.approx(RdpAccountant().compose(central, 10).epsilon(1e-5), rel=1e-5)
    assert ours < 0.93 * RdpAccountant(gdp=False).compose(skellam, 10).epsilon(1e-5)


@pytest.mark.parametrize("event", [
    DistributedDiscreteGaussianDpEvent(4.0, 2.0, 10.0, 5, 16), ZCDpEvent(0.1, 0.0),
    ComposedDpEvent([GaussianDpEvent(1.0), ZCDpEvent(0.1, 0.0)]),
    SkellamDpEvent(1.0, 1.0, 0.5), SkellamDpEvent(1.0, 1.0, 1e12),
])
def test_events_without_a_gdp_bound_fall_back_to_renyi_dp(event):
    with pytest.raises(AccountingError):
        event_mu(event)
    acc = RdpAccountant().compose(event)
    assert acc.gdp is None
    assert acc.epsilon(1e-5) == RdpAccountant(gdp=False).compose(event).epsilon(1e-5)
    lib = LibraryAccountant()
    lib.compose(event)
    assert lib.get_epsilon(1e-5) == pytest.approx(acc.epsilon(1e-5), rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(l2=st.floats(1, 1e4), ratio=st.floats(0.3, 20), count=st.integers(1, 200),
       delta=st.floats(1e-10, 1e-3))
def test_library_and_ours_agree_on_skellam_compositions(l2, ratio, count, delta):
    event = SkellamDpEvent(l2 * l2, l2, (ratio * l2) ** 2)
    ours = RdpAccountant().compose(event, count).epsilon(delta)
    lib = LibraryAccountant()
    lib.compose(event, count)
    assert lib.get_epsilon(delta) == pytest.approx(ours, rel=1e-8, abs=1e-9)


# -- ledgers -----------------------------------------------------------------------------------
def _ledger(tmp_path, rounds=3):
    path = tmp_path / "l.jsonl"
    led = Ledger.create(path, Budget(8.0, 1e-5))
    event = SkellamDpEvent(1600.0, 40.0, (3.0 * 40.0) ** 2)
    for r in range(rounds):
        led.record_round(event=event, session="ab" * 16, round=r, cohort=10, survivors=9,
                         n_min=9, clip_norm=1.0, mechanism={"name": "skellam"}, sampler_tv=0.0)
    led.close()
    return path


def test_a_new_ledger_names_the_gdp_accountant_and_verifies_both_ways(tmp_path):
    path = _ledger(tmp_path)
    lines = path.read_bytes().splitlines()
    assert json.loads(lines[0])["accountant"] == ACCOUNTANT_NAME
    assert json.loads(lines[-1])["accountant"]["name"] == ACCOUNTANT_NAME
    assert verify(path).entries == verify(path, independent=False).entries == 3


def _rewrite_open(path, **changes):
    lines = path.read_bytes().splitlines()
    first = json.loads(lines[0])
    first.update(changes)
    path.write_bytes(b"\n".join([canonical_line(first), *lines[1:]]) + b"\n")


def test_downgrading_the_accountant_name_is_refused(tmp_path):
    # the recorded epsilons are the GDP bound: recomputed by Renyi DP alone they do not match
    path = _ledger(tmp_path)
    _rewrite_open(path, accountant=RDP_ONLY_NAME)
    with pytest.raises(LedgerError):
        verify(path)


def test_an_unknown_accountant_is_refused_at_line_1(tmp_path):
    path = _ledger(tmp_path)
    _rewrite_open(path, accountant="my-own/1")
    with pytest.raises(LedgerError, match="unknown accountant") as err:
        verify(path)
    assert err.value.line == 1


def test_a_ledger_of_the_renyi_only_accountant_is_recomputed_by_renyi_dp(tmp_path, monkeypatch):
    import functools

    import dp.ledger as ledger_module

    monkeypatch.setattr(ledger_module, "ACCOUNTANT_NAME", RDP_ONLY_NAME)
    monkeypatch.setattr(ledger_module, "RdpAccountant",
                        functools.partial(RdpAccountant, gdp=False))
    path = _ledger(tmp_path)
    monkeypatch.undo()
    last = json.loads(path.read_bytes().splitlines()[-1])
    assert last["accountant"]["name"] == RDP_ONLY_NAME
    event = SkellamDpEvent(1600.0, 40.0, (3.0 * 40.0) ** 2)
    rdp = RdpAccountant(gdp=False).compose(event, 3).epsilon(1e-5)
    assert last["epsilon"] == pytest.approx(rdp, abs=2e-6)
    assert last["epsilon"] > RdpAccountant().compose(event, 3).epsilon(1e-5) + 0.1
    assert verify(path).entries == 3 and verify(path, independent=False).entries == 3
    with Ledger.open(path) as led:  # appending keeps the ledger's own accountant
        led.record_round(event=event, session="cd" * 16, round=3, cohort=10, survivors=9,
                         n_min=9, clip_norm=1.0, mechanism={"name": "skellam"}, sampler_tv=0.0)
    assert json.loads(path.read_bytes().splitlines()[-1])["accountant"]["name"] == RDP_ONLY_NAME
    assert verify(path).entries == 4
