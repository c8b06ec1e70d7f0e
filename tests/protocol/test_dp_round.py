"""protocol.dp_round: DP rounds through the real protocol: n_min enforcement, budget filters of
the server and of each client, update checks, weighted aggregation, and the noise actually
added against the planned noise."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math

import numpy as np
import pytest

import protocol.dp_plan as dp_plan
import protocol.dp_round as dp_round
from dp.errors import BudgetExceeded, ParameterError, UpdateError
from dp.events import DistributedDiscreteGaussianDpEvent, SkellamDpEvent
from dp.ledger import Budget, Ledger, verify
from dp.randomness import CryptoRandom
from protocol import RoundAborted, RoundConfig
from protocol.dp_plan import unweigh
from protocol.dp_round import DPConfig, plan_dp, run_dp_round

N, DIM = 12, 500
ROUND_CONFIG = RoundConfig(bits=32, complete_graph=True)  # any dropout pattern is recoverable


def config(**kw) -> DPConfig:
    base = dict(clip_norm=1.0, epsilon=5.0, delta=1e-5, rounds=1, min_survivors=10)
    return DPConfig(**{**base, **kw})


def updates(n: int, dim: int, seed: int = 0, norm: float = 0.8) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    x *= norm / np.linalg.norm(x, axis=1, keepdims=True)
    return list(x)


def snapshot(led: Ledger) -> bytes:
    return led.path.read_bytes() + b"|" + led.path.with_name(led.path.name + ".head").read_bytes()


@pytest.fixture
def seeded_noise(monkeypatch):
    """Every client's CSPRNG from a fixed seed sequence, so that a round is reproducible."""
    counter = itertools.count()
    monkeypatch.setattr(dp_plan, "CryptoRandom", lambda: CryptoRandom(
        hashlib.sha256(b"test-dp-round %d" % next(counter)).digest()))


@pytest.fixture
def traffic(monkeypatch):
    """Counts the simulated rounds (the round's traffic) that run_dp_round starts."""
    calls = []
    real = dp_round.run_simulated_round

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(dp_round, "run_simulated_round", spy)
    return calls


# --------------------------------------------------------------------------------------------
# plan_dp
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["semi-honest", "malicious"])
@pytest.mark.parametrize("n_min", [None, 9, 11, 14])
def test_plan_raises_min_survivors_to_n_min(mode, n_min):
    rc = RoundConfig(bits=32, mode=mode, complete_graph=True)
    plan = plan_dp(config(min_survivors=n_min), rc, 16, 64)
    expect = 16 - math.ceil(0.1 * 16) if n_min is None else n_min
    assert plan.n_min == expect
    assert plan.round_config.min_survivors >= expect
    assert plan.round_config.resolve(16).min_survivors >= expect
    assert plan.honest_min == expect - rc.resolve(16).corrupted
    if mode == "semi-honest":
        assert rc.resolve(16).min_survivors < expect  # the plan, not the default, enforces it
    # a larger configured minimum is kept
    higher = dataclasses.replace(rc, min_survivors=15)
    assert plan_dp(config(min_survivors=n_min), higher, 16, 64).round_config.min_survivors == 15


@pytest.mark.parametrize("mechanism", ["skellam", "discrete-gaussian"])
def test_plan_event_is_the_planned_noise(mechanism):
    plan = plan_dp(config(mechanism=mechanism), ROUND_CONFIG, N, DIM)
    e, b = plan.encoding, plan.encoding.l2_sensitivity
    assert plan.local_variance == pytest.approx((plan.noise_multiplier * b) ** 2 / plan.honest_min)
    event = plan.event
    if mechanism == "skellam":
        assert isinstance(event, SkellamDpEvent)
        assert event.variance == pytest.approx((plan.noise_multiplier * b) ** 2)
    else:
        assert isinstance(event, DistributedDiscreteGaussianDpEvent)
        assert (event.clients, event.dim) == (plan.honest_min, e.padded_dim)
    assert plan.round_epsilon() <= 5.0
    assert plan.round_epsilon() > 4.9  # the least noise that meets the target


@pytest.mark.parametrize("n_min", [0, 13, True, 1.5])
def test_plan_refuses_bad_n_min(n_min):
    with pytest.raises(ParameterError):
        plan_dp(config(min_survivors=n_min), ROUND_CONFIG, N, DIM)


def test_plan_refuses_n_min_without_an_honest_survivor():
    # A = ceil(0.05 * 12) = 1 corrupted client: n_min = 1 leaves none
    with pytest.raises(ParameterError, match="honest"):
        plan_dp(config(min_survivors=1), ROUND_CONFIG, N, DIM)


# --------------------------------------------------------------------------------------------
# n_min and the budget filters
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["semi-honest", "malicious"])
def test_dropouts_below_n_min_abort_and_write_nothing(tmp_path, mode):
    rc = RoundConfig(bits=32, mode=mode, complete_graph=True, dropout_rate=0.3)
    plan = plan_dp(config(), rc, N, DIM)
    assert rc.resolve(N).min_survivors <= N - 3  # without DP, 9 survivors would do
    server = Ledger.create(tmp_path / "server.jsonl", config().budget)
    clients = {u: Ledger.create(tmp_path / f"c{u}.jsonl", Budget(50.0, 1e-5), owner=f"c{u}")
               for u in (0, 5)}
    before = snapshot(server)
    with pytest.raises(RoundAborted) as info:
        run_dp_round(updates(N, DIM), plan, server_ledger=server, client_ledgers=clients,
                     dropouts={"masked_input": {1, 2, 3}})  # 9 survivors < n_min = 10
    assert info.value.reason == "too-few-survivors"
    assert snapshot(server) == before and server.rounds == 0
    # a client may have charged itself before it knew the round would abort (write-ahead:
    # the safe side), at most once, and its ledger stays valid
    charged = {u: led.rounds for u, led in clients.items()}
    assert set(charged.values()) <= {0, 1}
    for led in clients.values():
        assert verify(led.path).entries == led.rounds
    # exactly n_min survivors is enough, and then the round is recorded
    result = run_dp_round(updates(N, DIM), plan, server_ledger=server, client_ledgers=clients,
                          dropouts={"masked_input": {1, 2}})
    assert len(result.survivors) == 10
    report = verify(server.path)
    assert report.entries == 1 and report.rows[0]["survivors"] == 10
    assert server.rounds == 1
    assert all(led.rounds == charged[u] + 1 for u, led in clients.items())
    assert result.epsilon > 0 and result.epsilon == pytest.approx(server.spent()[0])


def test_server_records_before_unmasking(tmp_path):
    # write-ahead: once U3 is known the round is recorded, before any unmasking share is
    # requested, so a round that fails during unmasking has still been charged
    plan = plan_dp(config(), ROUND_CONFIG, N, DIM)
    server = Ledger.create(tmp_path / "server.jsonl", Budget(50.0, 1e-5))
    with pytest.raises(RoundAborted) as info:
        run_dp_round(updates(N, DIM), plan, server_ledger=server,
                     dropouts={"unmasking": set(range(N - 1))})  # shares never come back
    assert info.value.stage == "unmasking"
    report = verify(server.path)
    assert report.entries == 1 and report.rows[0]["survivors"] == N


def test_server_budget_refusal_comes_before_any_traffic(tmp_path, traffic, monkeypatch):
    plan = plan_dp(config(), ROUND_CONFIG, N, DIM)
    server = Ledger.create(tmp_path / "server.jsonl", Budget(1.0, 1e-5))
    client = Ledger.create(tmp_path / "c0.jsonl", config().budget)
    prepared = []
    real_prepare = dp_round.DPClient.prepare
    monkeypatch.setattr(dp_round.DPClient, "prepare",
                        lambda self, *a, **k: prepared.append(self.id) or real_prepare(
                            self, *a, **k))
    before = snapshot(server), snapshot(client)
    with pytest.raises(BudgetExceeded):
        run_dp_round(updates(N, DIM), plan, server_ledger=server, client_ledgers={0: client})
    assert traffic == [] and prepared == []
    assert (snapshot(server), snapshot(client)) == before
    # the same round with room in the budget goes through: the refusal was the budget's
    roomy = Ledger.create(tmp_path / "roomy.jsonl", config().budget)
    run_dp_round(updates(N, DIM), plan, server_ledger=roomy, client_ledgers={0: client})
    assert len(traffic) == 1 and len(prepared) == N and roomy.rounds == 1


def test_client_over_its_budget_stays_out(tmp_path, traffic):
    plan = plan_dp(config(), ROUND_CONFIG, N, DIM)
    one = plan.event
    server = Ledger.create(tmp_path / "server.jsonl", Budget(50.0, 1e-5))
    # client 4 has spent one round of a budget that does not hold two
    probe = Ledger.create(tmp_path / "probe.jsonl", Budget(50.0, 1e-5))
    eps1, _ = probe.check(one, plan.sampler_tv)
    probe.record_round(event=one, session="s", round=0, cohort=N, survivors=N, n_min=10,
                       clip_norm=1.0, mechanism={"name": "skellam"}, sampler_tv=plan.sampler_tv)
    eps2, _ = probe.check(one, plan.sampler_tv)
    assert eps2 > 1.2 * eps1
    tired = Ledger.create(tmp_path / "c4.jsonl", Budget(1.2 * eps1, 1e-5), owner="c4")
    tired.record_round(event=one, session="s", round=0, cohort=N, survivors=N, n_min=10,
                       clip_norm=1.0, mechanism={"name": "skellam"}, sampler_tv=plan.sampler_tv)
    others = {u: Ledger.create(tmp_path / f"c{u}.jsonl", Budget(50.0, 1e-5), owner=f"c{u}")
              for u in (0, 7, 11)}
    before = snapshot(tired)
    result = run_dp_round(updates(N, DIM), plan, server_ledger=server,
                          client_ledgers={4: tired, **others})
    assert result.refused == frozenset({4})
    assert result.survivors == frozenset(range(N)) - {4}
    assert snapshot(tired) == before and tired.rounds == 1
    for led in others.values():
        assert led.rounds == 1
        report = verify(led.path)
        # the client's own record: survivors unknown to it (write-ahead) or the actual count
        assert report.entries == 1 and report.rows[0]["survivors"] in (None, N - 1)
    assert server.rounds == 1 and verify(server.path).rows[0]["survivors"] == N - 1
    assert len(traffic) == 1
    # the refusing client is a dropout at AdvertiseKeys: it never sent anything
    stage = result.simulation.transcript.stages["advertise_keys"]
    assert stage.client(4).sent_messages == 0
    assert stage.server.received_messages == N - 1


# --------------------------------------------------------------------------------------------
# Updates
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bad", "match"), [
    (math.nan, r"update: NaN at index \(17,\)"),
    (math.inf, r"update: infinite value at index \(17,\)"),
    (-math.inf, r"update: infinite value at index \(17,\)"),
])
def test_non_finite_updates_are_refused_by_name(tmp_path, traffic, bad, match):
    plan = plan_dp(config(), ROUND_CONFIG, N, DIM)
    server = Ledger.create(tmp_path / "server.jsonl", config().budget)
    ups = updates(N, DIM)
    ups[6] = ups[6].copy()
    ups[6][17] = bad
    before = snapshot(server)
    with pytest.raises(UpdateError, match=match):
        run_dp_round(ups, plan, server_ledger=server)
    assert traffic == [] and snapshot(server) == before


def test_non_finite_entry_of_a_mapping_update_is_named(traffic):
    plan = plan_dp(config(), ROUND_CONFIG, N, DIM)
    ups = [{"w": u[:400].reshape(20, 20), "b": u[400:]} for u in updates(N, DIM)]
    ups[3]["w"] = ups[3]["w"].copy()
    ups[3]["w"][2, 5] = math.nan
    with pytest.raises(UpdateError, match=r"\bw: NaN at index \(2, 5\)"):
        run_dp_round(ups, plan)
    assert traffic == []


def test_wrong_sizes_and_weights_are_refused(traffic):
    plan = plan_dp(config(), ROUND_CONFIG, N, DIM)
    ups = updates(N, DIM)
    with pytest.raises(ParameterError):
        run_dp_round(ups[:-1], plan)
    short = [*ups[:-1], ups[-1][:-1]]
    with pytest.raises(UpdateError, match="coordinates"):
        run_dp_round(short, plan)
    with pytest.raises(UpdateError, match="unweighted"):
        run_dp_round(ups, plan, weights=[1.0] * N)
    weighted = plan_dp(config(weighted=True), ROUND_CONFIG, N, DIM)
    for w in (math.nan, -1.0, math.inf, True):
        with pytest.raises(UpdateError, match="weight"):
            run_dp_round(ups, weighted, weights=[1.0] * (N - 1) + [w])
    assert traffic == []


def test_unweighted_round_decodes_the_sum(seeded_noise):
    plan = plan_dp(config(epsilon=50.0), ROUND_CONFIG, N, DIM)
    ups = updates(N, DIM, seed=3)
    result = run_dp_round(ups, plan, dropouts={"masked_input": {4}})
    expect = np.sum([ups[u] for u in sorted(result.survivors)], axis=0)
    err = result.estimate - expect
    e = plan.encoding
    sd = plan.noise_multiplier * e.l2_sensitivity / e.gamma * math.sqrt(11 / plan.honest_min)
    rounding = math.sqrt(11 / 4) / e.gamma
    rms = float(np.sqrt(np.mean(err**2)))
    assert 0.9 * sd <= rms <= 1.1 * math.hypot(sd, rounding)
    # client 4 dropped before its input was asked for: it was never clipped, noised or charged
    assert result.norms == pytest.approx({u: 0.8 for u in range(N) if u != 4})


# --------------------------------------------------------------------------------------------
# Weighted aggregation
# --------------------------------------------------------------------------------------------


def test_weighted_round_decodes_the_weighted_mean(seeded_noise):
    n, dim, cap, c = 12, DIM, 5.0, 2.0
    # client u sends a_u v + (a small private part); heavier clients have larger a_u, so that
    # the weighted mean, the unweighted mean and the uncapped mean differ along v
    weights = np.array([0.5, 0.5, 1.0, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 100.0])
    w = np.minimum(weights, cap)
    # the public denominator: the cohort's mean capped weight
    plan = plan_dp(config(epsilon=200.0, weighted=True, max_weight=cap, clip_norm=c,
                          mean_weight=float(w.mean())), ROUND_CONFIG, n, dim)
    rng = np.random.default_rng(7)
    v = rng.normal(size=dim)
    v /= np.linalg.norm(v)
    a = np.linspace(-0.6, 0.6, n)
    ups = []
    for u in range(n):
        r = rng.normal(size=dim)
        r -= (r @ v) * v
        ups.append(c * (a[u] * v + 0.3 * r / np.linalg.norm(r)))  # norm < 0.7 C: unclipped
    result = run_dp_round(ups, plan, weights=list(weights))
    assert result.survivors == frozenset(range(n))
    expect = np.sum([w[u] * ups[u] for u in range(n)], axis=0) / w.sum()

    e = plan.encoding
    # per coordinate of the decoded sum: n survivors' noise, planned for honest_min
    noise = plan.noise_multiplier * e.l2_sensitivity / e.gamma * math.sqrt(n / plan.honest_min)
    rounding = math.sqrt(n / 4) / e.gamma  # at most 1/4 variance per client and coordinate
    total = n * plan.config.mean_weight / cap  # the public denominator |U3| m / W
    sd = math.sqrt(noise**2 + rounding**2) / total  # per coordinate of the mean
    err = result.estimate - expect
    assert np.sqrt(np.mean(err**2)) <= 1.2 * sd
    assert np.sqrt(np.mean(err**2)) >= 0.8 * noise / total  # the planned noise is there
    assert np.max(np.abs(err)) <= 5 * sd
    along = float(err @ v)  # one coordinate of the rotated frame: the same std
    assert abs(along) <= 5 * sd
    # the test tells the right weighting from the wrong ones
    coef = float(expect @ v)
    for wrong in (np.ones(n), weights):
        assert abs(coef - c * float(np.sum(wrong * a) / wrong.sum())) > 10 * sd


def test_weighted_mean_of_identical_updates_is_that_update(seeded_noise):
    # whatever the weights, the mean of equal vectors is the vector when the public mean weight
    # is the survivors' own: this checks the scale of the estimate to about 1 %
    n, c = 12, 2.0
    weights = [0.0, 0.3, 1.0, 2.5, 4.0, 4.0, 9.0, 1.0, 0.5, 3.0, 2.0, 100.0]
    mean = sum(min(w, 4.0) for w in weights) / n
    plan = plan_dp(config(noise_multiplier=0.01, weighted=True, max_weight=4.0, clip_norm=c,
                          mean_weight=mean), ROUND_CONFIG, n, DIM)
    x = updates(1, DIM, seed=5, norm=0.9 * c)[0]
    result = run_dp_round([x] * n, plan, weights=weights)
    e = plan.encoding
    total = n * mean / 4.0
    noise = 0.01 * e.l2_sensitivity / e.gamma * math.sqrt(n / plan.honest_min)
    sd = math.hypot(noise, math.sqrt(n / 4) / e.gamma) / total
    scale = float(result.estimate @ x / (x @ x))
    assert abs(scale - 1) <= 5 * sd / np.linalg.norm(x)
    assert 5 * sd / np.linalg.norm(x) < 0.05
    assert np.sqrt(np.mean((result.estimate - x) ** 2)) <= 1.2 * sd


def test_the_weighted_path_has_the_sensitivity_of_the_unweighted_one():
    # the weight changes each vector's length, never the L2 bound: same encoding, same event
    kw = dict(epsilon=4.0, rounds=10, clip_norm=1.0)
    weighted = plan_dp(config(weighted=True, max_weight=32.0, mean_weight=13.5, **kw),
                       ROUND_CONFIG, N, 650)
    plain = plan_dp(config(**kw), ROUND_CONFIG, N, 650)
    assert weighted.encoding == plain.encoding and weighted.event == plain.event
    assert weighted.encoding.l2_sensitivity <= 1.05 * weighted.encoding.gamma * 1.0


def test_a_weighted_estimate_divides_by_the_public_denominator_not_by_noise():
    plan = plan_dp(config(weighted=True, max_weight=4.0, mean_weight=2.0), ROUND_CONFIG, N, 8)
    v = np.arange(8.0)
    np.testing.assert_array_equal(unweigh(v, config=plan.config, survivors=10), v / 5.0)
    with pytest.raises(ParameterError):
        unweigh(v, config=plan.config, survivors=0)


@pytest.mark.parametrize("mean_weight", [0.0, -1.0, 5.0, math.nan, math.inf, True])
def test_a_mean_weight_outside_the_cap_is_refused(mean_weight):
    with pytest.raises(ParameterError, match="mean_weight"):
        config(weighted=True, max_weight=4.0, mean_weight=mean_weight)


# --------------------------------------------------------------------------------------------
# The noise: empirical variance of the decoded aggregate against the plan
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["skellam", "discrete-gaussian"])
def test_decoded_noise_has_the_planned_variance(seeded_noise, mechanism):
    n, dim = 16, 2000
    cfg = config(mechanism=mechanism, min_survivors=10)
    plan = plan_dp(cfg, ROUND_CONFIG, n, dim)
    assert plan.honest_min == 9  # A = ceil(0.05 * 16) = 1
    ups = updates(n, dim, seed=11, norm=0.5)
    result = run_dp_round(ups, plan, dropouts={"masked_input": {2, 3, 5}},
                          session_id=bytes(range(32)))
    survivors = len(result.survivors)
    assert survivors == 13
    noise = result.estimate - np.sum([ups[u] for u in sorted(result.survivors)], axis=0)
    e = plan.encoding
    planned = (plan.noise_multiplier * e.l2_sensitivity / e.gamma) ** 2 * survivors / 9
    assert abs(float(np.mean(noise))) < 4 * math.sqrt(planned / dim)
    assert float(np.mean(noise**2)) == pytest.approx(planned, rel=0.10)
    # against the alternatives a wrong implementation would give
    for wrong in (planned * n / survivors, planned * 9 / survivors, planned * 10 / 9):
        assert not float(np.mean(noise**2)) == pytest.approx(wrong, rel=0.05)
    # negative control: the audit's deliberately broken clients add no noise, and it shows
    bare = run_dp_round(ups, plan, dropouts={"masked_input": {2, 3, 5}},
                        session_id=bytes(range(32)), insecure_disable_noise=True)
    rest = bare.estimate - np.sum([ups[u] for u in sorted(bare.survivors)], axis=0)
    assert float(np.mean(rest**2)) < 0.01 * planned


def test_round_is_reproducible_with_seeded_noise(monkeypatch):
    plan = plan_dp(config(), ROUND_CONFIG, N, 64)
    ups = updates(N, 64)
    out = []
    for _ in range(2):
        counter = itertools.count()
        monkeypatch.setattr(dp_plan, "CryptoRandom", lambda c=counter: CryptoRandom(
            hashlib.sha256(b"%d" % next(c)).digest()))
        out.append(run_dp_round(ups, plan, session_id=bytes(32)).estimate)
    np.testing.assert_array_equal(out[0], out[1])
    monkeypatch.undo()
    fresh = run_dp_round(ups, plan, session_id=bytes(32)).estimate
    assert not np.array_equal(fresh, out[0])  # the default noise comes from the OS


def test_ledger_entries_describe_the_round(tmp_path):
    plan = plan_dp(config(), ROUND_CONFIG, N, DIM)
    server = Ledger.create(tmp_path / "server.jsonl", config().budget)
    result = run_dp_round(updates(N, DIM), plan, server_ledger=server, round=3,
                          session_id=b"\x01" * 32, model_hash="cd" * 32,
                          dropouts={"unmasking": {0}})
    entry = json.loads(server.path.read_bytes().splitlines()[-1])
    assert entry["session"] == ("01" * 32) and entry["round"] == 3
    assert entry["cohort"] == N and entry["survivors"] == len(result.survivors) == N
    assert entry["n_min"] == 10 and entry["model_hash"] == "cd" * 32
    m = entry["mechanism"]
    assert m["name"] == "skellam" and m["honest_min"] == plan.honest_min
    assert m["actual_variance"] == pytest.approx(plan.local_variance * N)
    assert m["planned_variance"] == pytest.approx(plan.local_variance * plan.honest_min)
    assert entry["epsilon"] >= result.epsilon


@pytest.mark.parametrize("mode", ["semi-honest", "malicious"])
def test_a_client_is_charged_only_when_its_masked_input_leaves_it(tmp_path, mode):
    """Clients that drop at AdvertiseKeys, ShareKeys or MaskedInput (before their input is
    asked for) have nothing in their ledgers; every client whose masked input was sent has
    exactly one entry, as over the network."""
    rc = RoundConfig(bits=32, mode=mode, complete_graph=True, dropout_rate=0.3)
    plan = plan_dp(config(min_survivors=8), rc, N, DIM)
    ledgers = {u: Ledger.create(tmp_path / f"c{u}.jsonl", config().budget, owner=f"client-{u}")
               for u in range(N)}
    gone = {"advertise_keys": {0}, "share_keys": {1}, "masked_input": {2}}
    if mode == "malicious":
        gone["consistency_check"] = {3}  # its masked input left it: charged
    result = run_dp_round(updates(N, DIM), plan, client_ledgers=ledgers, dropouts=gone)
    assert {0, 1, 2}.isdisjoint(result.survivors)
    for u, led in ledgers.items():
        assert led.rounds == (0 if u in (0, 1, 2) else 1), u
    assert sorted(result.norms) == [u for u in range(N) if u not in (0, 1, 2)]


def test_a_dp_client_refuses_a_setup_of_another_dimension_uncharged(tmp_path):
    from protocol import Participant, RemoteProtocolError, ServerRound
    from protocol.dp_plan import DPClient

    plan = plan_dp(config(), ROUND_CONFIG, N, DIM)
    led = Ledger.create(tmp_path / "c0.jsonl", config().budget, owner="client-0")
    p = Participant(0, config=plan.round_config, dp=DPClient(0, plan, led))
    srv = ServerRound(plan.round_config, range(N), plan.encoding.padded_dim + 1)
    setup = next(m for m in srv.start() if m.recipient == 0)
    with pytest.raises(RemoteProtocolError, match="dimension"):
        p.join(setup)
    assert p.round is None and led.rounds == 0


# --------------------------------------------------------------------------------------------
# Updates made on demand (UpdateSource)
# --------------------------------------------------------------------------------------------


def test_update_source_gives_the_same_round_as_a_list(seeded_noise, tmp_path):
    plan = plan_dp(config(epsilon=50.0), ROUND_CONFIG, N, DIM)
    ups = updates(N, DIM, seed=3)
    asked = []

    def make(u):
        asked.append(u)
        return ups[u]

    result = run_dp_round(dp_round.UpdateSource(N, make), plan, dropouts={"share_keys": {2}})
    assert sorted(asked) == sorted(result.survivors)  # made only for clients that masked
    assert 2 not in asked
    expect = np.sum([ups[u] for u in sorted(result.survivors)], axis=0)
    e = plan.encoding
    sd = plan.noise_multiplier * e.l2_sensitivity / e.gamma * math.sqrt(11 / plan.honest_min)
    rms = float(np.sqrt(np.mean((result.estimate - expect) ** 2)))
    assert 0.9 * sd <= rms <= 1.1 * math.hypot(sd, math.sqrt(11 / 4) / e.gamma)


def test_update_source_client_with_an_unusable_update_drops_uncharged(tmp_path):
    plan = plan_dp(config(), ROUND_CONFIG, N, DIM)
    ups = updates(N, DIM)
    ledgers = {u: Ledger.create(tmp_path / f"c{u}.jsonl", Budget(50.0, 1e-5), owner=f"c{u}")
               for u in (5, 6)}

    def make(u):
        if u == 5:
            bad = ups[u].copy()
            bad[3] = math.nan
            return bad
        return ups[u][:-1] if u == 6 else ups[u]

    result = run_dp_round(dp_round.UpdateSource(N, make), plan, client_ledgers=ledgers)
    assert result.survivors == frozenset(range(N)) - {5, 6}
    assert all(led.rounds == 0 for led in ledgers.values())


@pytest.mark.parametrize("weight", [10**400, -1, math.nan, math.inf, "3", True, None])
def test_a_weight_that_is_no_finite_number_is_a_typed_error(weight):
    with pytest.raises(UpdateError, match="weight"):
        dp_plan.weigh(np.ones(3), weight, weighted=True, max_weight=4.0)


def test_integer_and_numpy_weights_are_accepted():
    for w in (3, np.int64(3), np.float32(3.0)):
        np.testing.assert_allclose(dp_plan.weigh(np.ones(2), w, weighted=True, max_weight=4.0),
                                   0.75)


def test_a_denominator_beyond_float_range_is_refused_not_silently_wrong():
    cfg = config(weighted=True, max_weight=1e300, mean_weight=1e-320)
    with pytest.raises(ParameterError, match="denominator"):
        unweigh(np.ones(2), config=cfg, survivors=2)
    cfg = config(weighted=True, max_weight=1e308, mean_weight=1e308)
    np.testing.assert_allclose(unweigh(np.ones(2), config=cfg, survivors=2), 0.5)


@pytest.mark.parametrize("survivors", [None, 10.0, True])
def test_commit_refuses_a_survivor_count_that_is_not_an_int(survivors):
    plan = plan_dp(config(), ROUND_CONFIG, N, 8)
    with pytest.raises(ParameterError, match="survivors"):
        dp_plan.DPServer(plan).commit(session_id=bytes(32), round=0, survivors=survivors)
