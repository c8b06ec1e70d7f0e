"""The round with its clients in forked worker processes: the same round as one process."""

from __future__ import annotations

import dataclasses
import multiprocessing

import numpy as np
import pytest

from protocol import ProtocolError, RoundConfig, SeededInputs, simulate_round
from protocol.messages import KeysBroadcast
from protocol.server import ServerRound
from protocol.simulate import cohort_participants, run_simulated_round, spread_dropouts

SCHEDULE = {"advertise_keys": {1}, "share_keys": {4}, "masked_input": {7}, "unmasking": {9}}


def no_children_left() -> bool:
    return not multiprocessing.active_children()


@pytest.mark.parametrize("mode", ["semi-honest", "malicious"])
def test_workers_give_the_survivors_sum_with_dropouts_at_every_stage(mode):
    inputs = SeededInputs(30, 200, 32, seed=5)
    config = RoundConfig(mode=mode, dropout_rate=0.2)
    schedule = spread_dropouts([1, 4, 7, 9, 12], mode)
    result = simulate_round(inputs, config, schedule, seed=2, workers=2)
    assert result.survivors <= frozenset(range(30)) - {1, 4, 7} and len(result.survivors) >= 25
    assert np.array_equal(result.aggregate, inputs.sum_of(sorted(result.survivors)))
    t = result.transcript
    assert t.bytes_sent_by(0) > 200 * 4 and t.client_seconds(0) > 0
    assert no_children_left()


def test_workers_and_one_process_send_the_same_bytes():
    inputs = SeededInputs(20, 50, 16, seed=1)
    config = RoundConfig(bits=16)
    one = simulate_round(inputs, config, SCHEDULE, seed=3)
    two = simulate_round(inputs, config, SCHEDULE, seed=3, workers=3)
    assert one.survivors == two.survivors
    assert np.array_equal(one.aggregate, two.aggregate)
    for stage, rec in one.transcript.stages.items():
        other = two.transcript.stages[stage]
        assert sorted(rec.clients) == sorted(other.clients)
        for u, traffic in rec.clients.items():  # ciphertexts differ, their sizes do not
            assert traffic.sent_bytes == other.clients[u].sent_bytes
            assert traffic.received_bytes == other.clients[u].received_bytes


def test_a_client_refusing_a_forged_message_drops_with_the_reason():
    def forge(stage, messages):
        if stage != "share_keys":
            return messages
        return [dataclasses.replace(m, round=m.round + 1) if m.recipient == 2 else m
                for m in messages if isinstance(m, KeysBroadcast)]

    inputs = SeededInputs(20, 30, 32, seed=4)
    result = simulate_round(inputs, RoundConfig(), seed=1, server_hook=forge, workers=2)
    assert 2 not in result.survivors
    assert any("replay" in r for r in result.transcript.stages["share_keys"].refused)
    assert np.array_equal(result.aggregate, inputs.sum_of(sorted(result.survivors)))
    assert no_children_left()


def test_replayed_session_is_refused_after_a_round_in_workers():
    from secagg import SigningKey

    identities = {u: SigningKey.generate() for u in range(12)}
    inputs = SeededInputs(12, 10, 32, seed=0)
    config = RoundConfig(mode="malicious", dropout_rate=0.2)
    sid = bytes(range(32))
    simulate_round(inputs, config, session_id=sid, identities=identities, workers=2)
    with pytest.raises(ProtocolError):  # every client now refuses the session: a typed abort
        simulate_round(inputs, config, session_id=sid, identities=identities)
    assert no_children_left()


def test_a_failing_client_is_a_typed_error_and_no_worker_is_left():
    config = RoundConfig()
    participants, registry = cohort_participants(config, 10)
    server = ServerRound(config, range(10), 8, registry=registry)

    def provide(u, setup):
        if u == 3:
            raise RuntimeError("the training crashed")
        return np.zeros(8, dtype=np.uint32), None

    with pytest.raises(ProtocolError, match="client 3 failed: RuntimeError"):
        run_simulated_round(server, participants, provide, workers=2)
    assert no_children_left()


def test_a_client_without_input_drops():
    config = RoundConfig(dropout_rate=0.2)
    participants, registry = cohort_participants(config, 10)
    server = ServerRound(config, range(10), 8, registry=registry)

    def provide(u, setup):
        return None if u == 5 else (np.full(8, u, dtype=np.uint32), None)

    result = run_simulated_round(server, participants, provide, workers=2)
    assert 5 not in result.survivors
    assert int(result.aggregate[0]) == sum(result.survivors)


@pytest.mark.parametrize("workers", [0, -1, True, 1.5])
def test_bad_worker_counts_are_refused(workers):
    with pytest.raises(ProtocolError, match="workers"):
        simulate_round(SeededInputs(5, 4, 32, seed=0), RoundConfig(), workers=workers)


def test_cli_simulate_with_two_workers_checks_the_sum(capsys):
    import json

    from protocol.cli import main

    assert main(["simulate", "--clients", "24", "--dim", "64", "--workers", "2", "--seed", "1",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["correct"] is True and summary["workers"] == 2


def test_cli_refuses_workers_for_dp_rounds(capsys):
    from protocol.cli import main

    assert main(["simulate", "--epsilon", "2", "--workers", "2"]) == 2
    assert "--workers" in capsys.readouterr().err
