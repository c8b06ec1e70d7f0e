"""Server rules: refusals leave accepted state intact; aborts are typed; memory is O(d)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from round_harness import run_until

from protocol import (
    LocalProtocolError,
    RemoteProtocolError,
    RoundAborted,
    RoundConfig,
    ServerRound,
    ServerState,
    simulate_round,
)
from protocol.messages import AdvertiseKeys, MaskedInput


def test_late_early_duplicate_and_foreign_messages_change_nothing():
    r = run_until("masked_input")
    s = r.server
    replies = [r.clients[m.recipient].receive(m)[0] for m in r.outgoing]
    s.receive(replies[0])
    before = s.masked_sum.copy()
    with pytest.raises(RemoteProtocolError, match="duplicate"):
        s.receive(replies[0])
    with pytest.raises(RemoteProtocolError, match="can't handle AdvertiseKeys"):
        s.receive(AdvertiseKeys(s.session_id, 0, 1, bytes(32), bytes([1]) * 32, bytes(32), b""))
    with pytest.raises(RemoteProtocolError, match="session or round"):
        s.receive(dataclasses.replace(replies[1], round=5))
    with pytest.raises(RemoteProtocolError, match="not in the cohort"):
        s.receive(dataclasses.replace(replies[1], sender=50))
    with pytest.raises(RemoteProtocolError, match="length"):
        s.receive(MaskedInput(s.session_id, 0, replies[1].sender, np.zeros(3, np.uint32)))
    with pytest.raises(RemoteProtocolError, match="uint32"):
        s.receive(MaskedInput(s.session_id, 0, replies[1].sender, np.zeros(16, np.uint64)))
    assert np.array_equal(s.masked_sum, before) and s.u3 == {replies[0].sender}
    for m in replies[1:]:
        s.receive(m)
    assert len(s.u3) == len(replies)


def test_share_keys_must_address_exactly_the_neighbours():
    r = run_until("share_keys")
    m = r.outgoing[0]
    sk = r.clients[m.recipient].receive(m)[0]
    with pytest.raises(RemoteProtocolError, match="exactly the neighbours"):
        r.server.receive(dataclasses.replace(sk, ciphertexts=sk.ciphertexts[1:]))
    r.server.receive(sk)


def test_never_unmasks_below_min_survivors():
    x = np.ones((10, 4), dtype=np.uint32)
    with pytest.raises(RoundAborted, match="too-few-survivors") as e:
        simulate_round(x, RoundConfig(bits=16, min_survivors=8, complete_graph=True),
                       dropouts={"masked_input": {1, 2, 3}})
    assert e.value.stage == "masked_input" and e.value.reason == "too-few-survivors"
    r = simulate_round(x, RoundConfig(bits=16, min_survivors=7, complete_graph=True),
                       dropouts={"masked_input": {1, 2, 3}})
    assert len(r.survivors) == 7 and r.aggregate.tolist() == [7] * 4


def test_unrecoverable_dropouts_abort_before_any_share_is_requested():
    x = np.ones((10, 4), dtype=np.uint32)
    cfg = RoundConfig(bits=16, neighbours=4, threshold=2)  # sparse: 3 dropouts may isolate one
    seen = []

    def hook(stage, msgs):
        seen.append(stage)
        return msgs

    graph_probe = ServerRound(cfg, range(10), 4, session_id=bytes(32))
    u = 0
    nb = sorted(graph_probe.graph.neighbours(u))  # 4 neighbours; drop 3 -> 1 alive < t
    with pytest.raises(RoundAborted, match="unrecoverable-dropout"):
        _run_with_session(x, cfg, set(nb[:3]), hook)
    assert "unmasking" not in seen


def _run_with_session(x, cfg, dropped, hook):
    from protocol import simulate as sim

    class Fixed(ServerRound):
        def __init__(self, *a, **kw):
            kw["session_id"] = bytes(32)
            super().__init__(*a, **kw)

    return sim.simulate_round(x, cfg, {"masked_input": dropped}, server_factory=Fixed,
                              server_hook=hook)


def test_malicious_default_refuses_more_dropouts_than_planned():
    x = np.ones((12, 4), dtype=np.uint32)
    with pytest.raises(RoundAborted, match="too-few"):
        simulate_round(x, RoundConfig(bits=16, mode="malicious", dropout_rate=0.1),
                       dropouts={"masked_input": {1, 2, 3}})


def test_illegal_local_moves():
    s = ServerRound(RoundConfig(), range(5), 4)
    with pytest.raises(LocalProtocolError, match="can't close stage in state setup"):
        s.close_stage()
    s.start()
    with pytest.raises(LocalProtocolError, match="can't start in state advertise_keys"):
        s.start()
    with pytest.raises(ValueError, match="distinct"):
        ServerRound(RoundConfig(), [1, 1, 2], 4)
    with pytest.raises(ValueError, match="registry"):
        ServerRound(RoundConfig(mode="malicious"), range(5), 4)
    for kwargs in (dict(round=-1), dict(round=2**32), dict(round="a")):
        with pytest.raises(ValueError, match="round"):
            ServerRound(RoundConfig(), range(5), 4, **kwargs)
    for dim in (0, -3, 2.5, 2**31):
        with pytest.raises(ValueError, match="dim"):
            ServerRound(RoundConfig(), range(5), dim)
    for cohort in ([1, 2, "x"], [1, None, 3], [1, 2, -4]):
        with pytest.raises(ValueError, match="cohort"):
            ServerRound(RoundConfig(), cohort, 4)


def test_aborted_server_refuses_everything():
    r = run_until("masked_input")
    with pytest.raises(RoundAborted):
        r.server.close_stage()  # no masked input at all
    assert r.server.state is ServerState.ABORTED
    with pytest.raises(RemoteProtocolError, match="over"):
        r.server.receive(r.clients[0].receive(r.outgoing[0])[0])


def test_server_memory_is_o_d_not_o_nd():
    n, d = 30, 20_000
    x = np.zeros((n, d), dtype=np.uint32)
    r = simulate_round(x, RoundConfig(bits=32))
    k = r.params.neighbours
    assert r.server_retained_bytes < d * 4 + 2_000 * n * k   # one vector plus O(n k)
    assert r.server_retained_bytes < 2 * d * 4                # far below n * d * 4
