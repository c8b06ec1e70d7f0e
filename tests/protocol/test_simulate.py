"""simulate_round: the public API, and properties over random cohorts and dropout schedules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    STAGES,
    ConfigError,
    InputError,
    ProtocolError,
    RoundAborted,
    RoundConfig,
    simulate_round,
)


def plain_sum(inputs, survivors, bits):
    total = inputs[sorted(survivors)].astype(object).sum(axis=0) % (1 << bits)
    return np.array([int(v) for v in total], dtype=np.uint32 if bits <= 32 else np.uint64)


def test_issue_example():
    # 40 clients: the default plan (10 % dropout, D = 4) covers the 3 dropouts below, so
    # failure is bounded by 2^-20 whatever graph the random session id gives.
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 2**32, size=(40, 50), dtype=np.uint64).astype(np.uint32)
    result = simulate_round(inputs, config=RoundConfig(bits=32, mode="semi-honest"),
                            dropouts={"share_keys": {3}, "masked_input": {5, 6}}, seed=None)
    assert result.survivors == frozenset(range(40)) - {3, 5, 6}
    assert np.array_equal(result.aggregate, plain_sum(inputs, result.survivors, 32))
    t = result.transcript
    assert set(t.stages) == {"advertise_keys", "share_keys", "masked_input", "unmasking"}
    assert t.stages["masked_input"].client(0).sent_bytes > 50 * 4
    assert t.bytes_sent_by(3) > 0 and t.stages["share_keys"].client(3).sent_messages == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(3, 40),
    d=st.integers(1, 40),
    bits=st.integers(8, 64),
    mode=st.sampled_from(["semi-honest", "malicious"]),
    complete=st.booleans(),
    data=st.data(),
)
def test_aggregate_is_the_survivors_sum_or_a_typed_abort(n, d, bits, mode, complete, data):
    stages = [s for s in STAGES if mode == "malicious" or s != "consistency_check"]
    schedule = {s: set(data.draw(st.lists(st.integers(0, n - 1), max_size=max(1, n // 4))))
                for s in stages}
    config = RoundConfig(bits=bits, mode=mode, complete_graph=complete, dropout_rate=0.3,
                         corrupt_rate=0.0)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
    inputs = rng.integers(0, 1 << bits, size=(n, d), dtype=np.uint64, endpoint=False) \
        if bits < 64 else rng.integers(0, 2**63, size=(n, d), dtype=np.uint64) * 2 + 1
    inputs = inputs.astype(np.uint32 if bits <= 32 else np.uint64)
    try:
        result = simulate_round(inputs, config, schedule, seed=data.draw(st.integers(0, 99)))
    except RoundAborted as exc:
        assert exc.reason in {"too-few-clients", "too-few-survivors", "too-few-signatures",
                              "neighbourhood-below-threshold", "cannot-reconstruct",
                              "unrecoverable-dropout"}
        return
    except ConfigError:
        return  # no (k, t) for this cohort and rate: refused before any message
    dropped_before_masking = set()
    for s in ("advertise_keys", "share_keys", "masked_input"):
        dropped_before_masking |= schedule.get(s, set())
    assert result.survivors <= frozenset(range(n)) - dropped_before_masking
    assert len(result.survivors) >= result.params.min_survivors
    assert np.array_equal(result.aggregate, plain_sum(inputs, result.survivors, bits))


def test_dropout_during_share_keys_does_not_break_recovery():
    x = np.arange(15 * 6, dtype=np.uint32).reshape(15, 6)
    r = simulate_round(x, RoundConfig(bits=20, dropout_rate=0.3),
                       {"share_keys": {0, 7}, "unmasking": {3}})
    assert r.survivors == frozenset(range(15)) - {0, 7}  # 3 sent its input, then vanished
    assert np.array_equal(r.aggregate, plain_sum(x, r.survivors, 20))


def test_seed_fixes_public_values_only():
    x = np.ones((6, 3), dtype=np.uint32)
    a = simulate_round(x, RoundConfig(bits=8), seed=1)
    b = simulate_round(x, RoundConfig(bits=8), seed=1)
    assert a.aggregate.tolist() == b.aggregate.tolist() == [6, 6, 6]


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(inputs=np.zeros(5, np.uint32)), ProtocolError, "2-D"),
    (dict(dropouts={"nope": {1}}), ProtocolError, "unknown dropout stage"),
    (dict(dropouts={"share_keys": {9}}), ProtocolError, "outside"),
    (dict(dropouts={"masked_input": 3}), ProtocolError, "set of client indices"),
    (dict(inputs=np.full((5, 3), 300, np.uint32), config=RoundConfig(bits=8)), InputError,
     "outside"),
    (dict(inputs=np.zeros((5, 3), np.float64)), InputError, "float"),
    (dict(inputs=np.zeros((2, 3), np.uint32)), ConfigError, "cohort size"),
])
def test_bad_input(kwargs, err, match):
    args = dict(inputs=np.zeros((5, 3), np.uint32), config=RoundConfig(bits=16)) | kwargs
    with pytest.raises(err, match=match):
        simulate_round(args.pop("inputs"), **args)


@pytest.mark.parametrize("kwargs", [dict(bits=7), dict(bits=65), dict(mode="byzantine"),
                                    dict(threshold=0), dict(dropout_rate=1.0),
                                    dict(dropout_rate=float("nan")), dict(neighbours=True)])
def test_bad_config(kwargs):
    with pytest.raises(ConfigError):
        RoundConfig(**kwargs)


def test_config_resolution():
    p = RoundConfig(dropout_rate=0.1, corrupt_rate=0.05).resolve(1000)
    assert (p.neighbours, p.threshold, p.min_survivors) == (36, 19, 19)
    m = RoundConfig(mode="malicious").resolve(1000)
    assert m.neighbours > 100 and m.min_survivors == 900
    q = RoundConfig(neighbours=10).resolve(50)
    assert q.neighbours == 10 and q.analysis.secure()
    with pytest.raises(ConfigError, match="2t > k"):
        RoundConfig(mode="malicious", neighbours=10, threshold=5).resolve(50)
    with pytest.raises(ConfigError, match="even"):
        RoundConfig(neighbours=9).resolve(50)
