"""The server's batched Unmasking (protocol/stages/unmasking.py over secagg.decode_many): shares
parsed in bulk and checked at accept, wrong shares of many owners corrected and named in one
round, masks removed on several threads with the same aggregate."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from round_harness import run_until

from protocol import RemoteProtocolError, RoundConfig, simulate_round
from protocol.simulate import spread_dropouts
from protocol.stages.unmasking import set_mask_workers
from secagg import Share, ShareTable
from secagg.field import PRIMES
from secagg.shamir import MODULUS, SHARE_BYTES


@pytest.fixture
def workers():
    """Restore the process-wide worker count after the test."""
    previous = set_mask_workers(1)
    yield set_mask_workers
    set_mask_workers(previous)


def _exact(inputs: np.ndarray, survivors) -> np.ndarray:
    rows = inputs[sorted(survivors)].astype(np.uint64)
    return (rows.sum(axis=0) % (1 << 32)).astype(np.uint32)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_mask_removal_on_threads_gives_the_exact_sum(workers, count):
    n, d = 40, 300
    rng = np.random.default_rng(count)
    inputs = rng.integers(0, 1 << 32, size=(n, d), dtype=np.uint64).astype(np.uint32)
    schedule = spread_dropouts(rng.choice(n, size=8, replace=False).tolist(), "semi-honest")
    workers(count)
    result = simulate_round(inputs, RoundConfig(dropout_rate=0.2), schedule, seed=count)
    assert set(schedule["unmasking"]) <= result.survivors  # dropped after their input
    np.testing.assert_array_equal(result.aggregate, _exact(inputs, result.survivors))


@pytest.mark.parametrize("bits", [16, 64])
def test_threads_and_narrow_or_wide_rings(workers, bits):
    n, d = 24, 50
    rng = np.random.default_rng(bits)
    inputs = rng.integers(0, 1 << bits, size=(n, d), dtype=np.uint64)
    inputs = inputs.astype(np.uint64 if bits > 32 else np.uint32)
    schedule = spread_dropouts([3, 7, 11, 15], "semi-honest")
    workers(2)
    result = simulate_round(inputs, RoundConfig(bits=bits, dropout_rate=0.2), schedule, seed=1)
    want = inputs[sorted(result.survivors)].astype(object).sum(axis=0) % (1 << bits)
    assert result.aggregate.astype(object).tolist() == want.tolist()


@pytest.mark.parametrize("bad", [0, 65, True, 1.5])
def test_worker_count_is_checked(workers, bad):
    with pytest.raises(ValueError):
        workers(bad)


def _respond(r, tamper):
    """Every client answers its unmask request; ``tamper(holder, response)`` may rewrite it.
    Returns the responses the server refused."""
    refused = []
    for m in r.outgoing:
        (rep,) = r.clients[m.recipient].receive(m)
        rep = tamper(m.recipient, rep)
        try:
            r.server.receive(rep)
        except RemoteProtocolError as exc:
            refused.append((m.recipient, str(exc)))
    return refused


def _replace_first(rep, make):
    owner, raw = rep.self_mask_shares[0]
    return dataclasses.replace(rep, self_mask_shares=((owner, make(raw)),)
                               + rep.self_mask_shares[1:])


@pytest.mark.parametrize(("make", "why"), [
    (lambda raw: raw[:25] + PRIMES[0].to_bytes(6, "big") + raw[31:], "residue"),
    (lambda raw: b"\x01" + raw[1:], "version"),
    (lambda raw: raw[:21] + (12345).to_bytes(4, "big") + raw[25:], "x-coordinate"),
    (lambda raw: raw[:17] + (9).to_bytes(4, "big") + raw[21:], "threshold"),
    (lambda raw: raw[:-1], f"{SHARE_BYTES} bytes"),
])
def test_a_malformed_or_misaddressed_share_refuses_the_response(make, why):
    r = run_until("unmasking", n=10, neighbours=6, threshold=3, dropout_rate=0.0)
    evil = r.outgoing[0].recipient
    refused = _respond(r, lambda h, rep: _replace_first(rep, make) if h == evil else rep)
    assert [h for h, _ in refused] == [evil] and why in refused[0][1]
    assert evil not in r.server.responses
    r.server.close_stage()  # the others are enough: the round completes without it
    np.testing.assert_array_equal(r.server.aggregate, _exact(r.inputs, range(10)))


def _shift(raw: bytes, delta: int) -> bytes:
    sh = Share.from_bytes(raw)
    return Share(sh.dealing_id, sh.threshold, sh.x, (sh.y + delta) % MODULUS).to_bytes()


def test_wrong_shares_of_many_owners_are_corrected_and_named_in_one_round():
    """Three holders each forge their share of a different owner (one in a single component
    field only); every value is corrected and each forger named for that owner alone."""
    r = run_until("unmasking", n=16, neighbours=10, threshold=4, dropout_rate=0.0)
    p = PRIMES[6]
    one_component = (MODULUS // p) * pow(MODULUS // p, -1, p) % MODULUS
    plan: dict[int, tuple[int, int]] = {}
    for m in r.outgoing:
        owner = next(o for o in m.alive if o not in {o for o, _ in plan.values()})
        plan[m.recipient] = (owner, one_component if len(plan) == 1 else 1 + len(plan))
        if len(plan) == 3:
            break

    def tamper(h, rep):
        if h not in plan:
            return rep
        owner, delta = plan[h]
        return dataclasses.replace(rep, self_mask_shares=tuple(
            (o, _shift(raw, delta) if o == owner else raw) for o, raw in rep.self_mask_shares))

    assert _respond(r, tamper) == []
    r.server.close_stage()
    np.testing.assert_array_equal(r.server.aggregate, _exact(r.inputs, range(16)))
    assert r.server.bad_shares == {h: [(owner, "b")] for h, (owner, _) in plan.items()}


def test_a_dropped_clients_key_with_a_forged_share_is_corrected():
    r = run_until("unmasking", n=12, neighbours=8, threshold=3, dropout_rate=0.2,
                  drop={"masked_input": {5}})
    holders = [m.recipient for m in r.outgoing if 5 in m.dead]
    forger = holders[0]

    def tamper(h, rep):
        if h != forger:
            return rep
        return dataclasses.replace(rep, key_shares=tuple(
            (o, _shift(raw, 99) if o == 5 else raw) for o, raw in rep.key_shares))

    assert _respond(r, tamper) == []
    r.server.close_stage()
    survivors = set(range(12)) - {5}
    np.testing.assert_array_equal(r.server.aggregate, _exact(r.inputs, survivors))
    assert r.server.bad_shares == {forger: [(5, "s")]}


def test_bulk_parsing_agrees_with_one_share_at_a_time():
    r = run_until("unmasking", n=10, neighbours=6, threshold=3, dropout_rate=0.0)
    raws = [raw for m in r.outgoing
            for raw in (raw for _, raw in r.clients[m.recipient].receive(m)[0].self_mask_shares)]
    table = ShareTable.from_bytes(b"".join(raws))
    assert [table.share(i) for i in range(len(table))] == [Share.from_bytes(x) for x in raws]
