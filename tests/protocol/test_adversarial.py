"""An adversarial server: honest clients refuse, and in malicious mode an inconsistent view of
the survivors is detected before any share is revealed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from round_harness import run_until

from protocol import (
    ClientState,
    RemoteProtocolError,
    RoundAborted,
    RoundConfig,
    simulate_round,
)
from protocol.messages import ConsistencySignature, UnmaskRequest, UnmaskResponse

MAL = dict(mode="malicious", n=8, dropout_rate=0.25)


def sign_all(r, views):
    """Each client signs the survivor set the (lying) server showed it."""
    sigs = {}
    for m in views:
        out = r.clients[m.recipient].receive(m)
        assert isinstance(out[0], ConsistencySignature)
        sigs[m.recipient] = out[0].signature
    return sigs


def honest_unmask_requests(r):
    """Every client signs the true U3; the server collects the signatures and closes the
    ConsistencyCheck stage, returning its unmask requests."""
    sigs = sign_all(r, r.outgoing)
    for m in r.outgoing:
        r.server.receive(ConsistencySignature(m.session_id, m.round, m.recipient,
                                              sigs[m.recipient]))
    return r.server.close_stage()


def test_different_survivor_sets_are_detected_before_any_share_is_revealed():
    r = run_until("consistency_check", **MAL, drop={"masked_input": {5}})
    u3 = r.outgoing[0].survivors
    victim = u3[0]
    # The server tells half the clients that `victim` is dead, the other half that it is alive.
    lied = tuple(v for v in u3 if v != victim)
    views = [dataclasses.replace(m, survivors=lied) if i % 2 and m.recipient != victim else m
             for i, m in enumerate(r.outgoing)]
    sigs = sign_all(r, views)
    revealed = 0
    for m in views:
        v = m.recipient
        honest = r.server.requests.get(v) or UnmaskRequest(
            m.session_id, m.round, v, (), (), ())
        nb = r.server.graph.neighbours(v) & frozenset(r.clients[v].held)
        alive = tuple(sorted(nb & set(m.survivors)))
        req = dataclasses.replace(honest, alive=alive, dead=tuple(sorted(nb - set(alive))),
                                  signatures=tuple(sorted(sigs.items())))
        with pytest.raises(RemoteProtocolError, match="does not verify|not a survivor"):
            revealed += len(r.clients[v].receive(req))
        assert r.clients[v].state is ClientState.ERROR
    assert revealed == 0


def test_too_few_signatures_refused():
    r = run_until("consistency_check", **MAL)
    t = r.server.t
    v = r.outgoing[0].recipient
    reqs = honest_unmask_requests(r)
    req = next(q for q in reqs if q.recipient == v)
    few = dataclasses.replace(req, signatures=req.signatures[: t - 1])
    with pytest.raises(RemoteProtocolError, match="consistency signatures"):
        r.clients[v].receive(few)


def test_forged_or_foreign_signature_refused():
    r = run_until("consistency_check", **MAL)
    reqs = honest_unmask_requests(r)
    req = reqs[0]
    (w, sig), rest = req.signatures[0], req.signatures[1:]
    bad = dataclasses.replace(req, signatures=((w, bytes(64)),) + rest)
    with pytest.raises(RemoteProtocolError, match="does not verify"):
        r.clients[req.recipient].receive(bad)
    req2 = reqs[1]
    outsider = dataclasses.replace(req2, signatures=tuple(sorted(req2.signatures + (
        (99, sig),))))
    with pytest.raises(RemoteProtocolError, match="not a survivor"):
        r.clients[req2.recipient].receive(outsider)


def test_alive_list_must_match_signed_survivors():
    r = run_until("consistency_check", **MAL)
    req = honest_unmask_requests(r)[0]
    moved = req.alive[0]
    bad = dataclasses.replace(req, alive=req.alive[1:], dead=tuple(sorted(req.dead + (moved,))))
    with pytest.raises(RemoteProtocolError, match="alive list differs|alive neighbours"):
        r.clients[req.recipient].receive(bad)


def test_survivor_set_checks_in_consistency():
    r = run_until("consistency_check", **MAL)
    m = r.outgoing[0]
    with pytest.raises(RemoteProtocolError, match="does not contain this client"):
        r.clients[m.recipient].receive(dataclasses.replace(
            m, survivors=tuple(v for v in m.survivors if v != m.recipient)))
    r = run_until("consistency_check", **MAL)
    m = r.outgoing[0]
    with pytest.raises(RemoteProtocolError, match="below the minimum"):
        r.clients[m.recipient].receive(dataclasses.replace(m, survivors=(m.recipient,)))
    r = run_until("consistency_check", **MAL)
    m = r.outgoing[0]
    with pytest.raises(RemoteProtocolError, match="outside the cohort"):
        r.clients[m.recipient].receive(dataclasses.replace(
            m, survivors=tuple(sorted(m.survivors + (500,)))))


def test_bad_key_signature_refused():
    r = run_until("share_keys", **MAL)
    m = r.outgoing[0]
    other = next(e for e in m.keys if e[0] != m.recipient)
    keys = tuple((v, c, s, bytes(64)) if v == other[0] else (v, c, s, sig)
                 for v, c, s, sig in m.keys)
    with pytest.raises(RemoteProtocolError, match="bad key signature"):
        r.clients[m.recipient].receive(dataclasses.replace(m, keys=keys))


def test_semi_honest_server_listing_a_client_alive_and_dead_gets_nothing():
    x = np.arange(10 * 8, dtype=np.uint32).reshape(10, 8)

    def hook(stage, msgs):
        if stage != "unmasking":
            return msgs
        return [dataclasses.replace(m, dead=tuple(sorted(set(m.dead) | {m.alive[0]})))
                for m in msgs]

    with pytest.raises(RoundAborted, match="cannot-reconstruct"):
        simulate_round(x, RoundConfig(bits=16), server_hook=hook)


def test_server_omitting_or_duplicating_keys_is_refused():
    x = np.arange(10 * 8, dtype=np.uint32).reshape(10, 8)

    def omit_own(stage, msgs):
        if stage != "share_keys":
            return msgs
        return [dataclasses.replace(m, keys=tuple(e for e in m.keys if e[0] != m.recipient))
                for m in msgs]

    with pytest.raises(RoundAborted, match="too-few-clients"):
        simulate_round(x, RoundConfig(bits=16), server_hook=omit_own)


def test_unmask_response_never_holds_both_kinds():
    with pytest.raises(Exception, match="both kinds"):
        UnmaskResponse(bytes(32), 0, 1, ((2, b"x"),), ((2, b"y"),))
