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
from protocol.messages import ConsistencySignature, UnmaskRequest

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


def test_split_view_attack_is_refused():
    """The attack a Shamir-t quorum allows in SecAgg+ (t << n): the victim v masks only with
    W = W_L + W_R (its ring neighbours minus the outermost two); group L is told U3 = all but
    W_R, group R is told U3 = all but W_L, and each group sees only its own signatures. With a
    quorum of t, L reveals t shares of b_v and of each s_w (w in W_R) and R those of each s_w
    (w in W_L), and the server unmasks x_v. With the cohort-wide quorum both groups refuse."""
    from protocol import ClientRound, RoundConfig, ServerRound
    from protocol.messages import ConsistencyRequest, SharesDelivery
    from secagg import Share, SigningKey

    n, d = 100, 4
    cfg = RoundConfig(mode="malicious", dropout_rate=0.1, corrupt_rate=0.0)
    ident = {u: SigningKey.generate() for u in range(n)}
    reg = {u: k.verify_key for u, k in ident.items()}
    srv = ServerRound(cfg, range(n), d, registry=reg)
    k, t = srv.params.neighbours, srv.params.threshold
    assert t == k // 2 + 1  # the finder's choice here: the construction needs exactly this
    x = np.arange(n * d, dtype=np.uint32).reshape(n, d)
    cl = {u: ClientRound(u, config=cfg, input=x[u].copy(), identity=ident[u], registry=reg,
                         used_sessions=set()) for u in range(n)}
    sid, rd = srv.session_id, srv.round

    def exchange(msgs):
        return [rep for m in msgs for rep in cl[m.recipient].receive(m)]

    for rep in exchange(srv.start()):
        srv.receive(rep)
    for rep in exchange(srv.close_stage()):
        srv.receive(rep)
    order = srv.graph.ordering

    def at(i):
        return order[i % n]

    v, a = at(0), k // 2 - 1
    w_l = {at(-i) for i in range(1, a + 1)}
    w_r = {at(i) for i in range(1, a + 1)}
    w = w_l | w_r
    deliveries = [SharesDelivery(sid, rd, m.recipient, tuple(e for e in m.ciphertexts
                                                            if e[0] in w))
                  if m.recipient == v else m for m in srv.close_stage()]
    exchange(deliveries)
    left = w_l | {at(i) for i in range(k // 2, k)}
    right = w_r | {at(-i) for i in range(k // 2, k)}
    views = {"L": tuple(sorted(set(range(n)) - w_r)), "R": tuple(sorted(set(range(n)) - w_l))}
    group = {**{u: "L" for u in left}, **{u: "R" for u in right}}
    sigs: dict[str, dict[int, bytes]] = {"L": {}, "R": {}}
    for u, g in group.items():
        (sig,) = cl[u].receive(ConsistencyRequest(sid, rd, u, views[g]))
        sigs[g][u] = sig.signature
    b_shares, s_shares = 0, {x_: 0 for x_ in w}
    for u, g in group.items():
        held, u3 = set(cl[u].share_holders), set(views[g])
        req = UnmaskRequest(sid, rd, u, tuple(sorted(held & u3)), tuple(sorted(held - u3)),
                            tuple(sorted(sigs[g].items())))
        with pytest.raises(RemoteProtocolError, match="quorum"):
            for resp in cl[u].receive(req):
                b_shares += sum(o == v for o, _ in resp.self_mask_shares)
                for o, raw in resp.key_shares:
                    if o in s_shares:
                        s_shares[o] += 1
                        Share.from_bytes(raw)
        assert cl[u].state is ClientState.ERROR
    assert b_shares == 0 and not any(s_shares.values())  # nothing at all was revealed


def test_different_survivor_sets_with_mixed_signatures_are_refused():
    r = run_until("consistency_check", **MAL, drop={"masked_input": {5}})
    u3 = r.outgoing[0].survivors
    victim = u3[0]
    lied = tuple(v for v in u3 if v != victim)
    views = [dataclasses.replace(m, survivors=lied) if i % 2 and m.recipient != victim else m
             for i, m in enumerate(r.outgoing)]
    sigs = sign_all(r, views)
    for m in views:
        v = m.recipient
        nb = r.server.graph.neighbours(v) & r.clients[v].share_holders
        alive = tuple(sorted(nb & set(m.survivors)))
        req = UnmaskRequest(m.session_id, m.round, v, alive, tuple(sorted(nb - set(alive))),
                            tuple(sorted(sigs.items())))
        with pytest.raises(RemoteProtocolError, match="does not verify|not a survivor"):
            r.clients[v].receive(req)


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
    keys = tuple((v, c, s, com, bytes(64)) if v == other[0] else (v, c, s, com, sig)
                 for v, c, s, com, sig in m.keys)
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


def test_server_omitting_the_clients_own_key_gets_nothing():
    x = np.arange(10 * 8, dtype=np.uint32).reshape(10, 8)

    def omit_own(stage, msgs):
        if stage != "share_keys":
            return msgs
        return [dataclasses.replace(m, keys=tuple(e for e in m.keys if e[0] != m.recipient))
                for m in msgs]

    with pytest.raises(RoundAborted, match="too-few-clients"):
        simulate_round(x, RoundConfig(bits=16), server_hook=omit_own)


def test_client_pinned_configuration_refuses_a_downgrade():
    from protocol import ClientRound, RoundConfig

    r = run_until("advertise_keys", **MAL)
    m = r.outgoing[0]
    c = r.clients[m.recipient]
    with pytest.raises(RemoteProtocolError, match="differ from this client's configuration"):
        c.receive(dataclasses.replace(m, mode="semi-honest"))
    for field, value in (("min_survivors", 1), ("threshold", m.threshold + 1),
                         ("bits", 16)):
        fresh = ClientRound(m.recipient, config=c.config, input=r.inputs[m.recipient].copy(),
                            identity=r.identities[m.recipient], registry=c._registry,
                            used_sessions=set())
        with pytest.raises(RemoteProtocolError, match="differ"):
            fresh.receive(dataclasses.replace(m, **{field: value}))
    semi = ClientRound(0, config=RoundConfig(), input=r.inputs[0].copy())
    with pytest.raises(RemoteProtocolError, match="differ"):
        semi.receive(next(x for x in r.outgoing if x.recipient == 0))


def test_forged_self_mask_shares_are_caught_by_the_commitment():
    """Colluding responders replace every share of b_o by shares of another seed (same
    dealing id, x-coordinates and threshold): reconstruction succeeds but the commitment does
    not match, so the server aborts instead of releasing a wrong aggregate."""
    from secagg import Share
    from secagg.hazmat import shamir_split_with_coefficients

    r = run_until("unmasking", n=10)
    responses = [r.clients[m.recipient].receive(m)[0] for m in r.outgoing]
    owner = responses[0].self_mask_shares[0][0]
    real = Share.from_bytes(responses[0].self_mask_shares[0][1])
    xs = [resp.sender + 1 for resp in responses
          if any(o == owner for o, _ in resp.self_mask_shares)]
    forged = {sh.x: sh for sh in shamir_split_with_coefficients(
        bytes([7]) * 32, coefficients=[5] * (real.threshold - 1), xs=xs,
        dealing_id=real.dealing_id)}
    for resp in responses:
        shares = tuple((o, forged[resp.sender + 1].to_bytes() if o == owner else raw)
                       for o, raw in resp.self_mask_shares)
        r.server.receive(dataclasses.replace(resp, self_mask_shares=shares))
    with pytest.raises(RoundAborted, match="bad-reconstruction") as e:
        r.server.close_stage()
    assert "commitment" in e.value.detail and r.server.aggregate is None


def test_dropouts_in_consistency_check_abort_before_any_share_is_requested():
    r = run_until("consistency_check", mode="malicious", n=20, neighbours=6, threshold=4,
                  dropout_rate=0.3)
    victim = 0
    gone = set(sorted(r.server.graph.neighbours(victim))[:3])  # 3 of 6: fewer than t remain
    sigs = sign_all(r, [m for m in r.outgoing if m.recipient not in gone])
    for m in r.outgoing:
        if m.recipient not in gone:
            r.server.receive(ConsistencySignature(m.session_id, m.round, m.recipient,
                                                  sigs[m.recipient]))
    with pytest.raises(RoundAborted, match="unrecoverable-dropout"):
        r.server.close_stage()
    assert r.server.requests == {}  # no unmask request was built


def test_semi_honest_mode_assumes_an_honest_server_split_alive_dead_lists_read_an_input():
    """The documented limit of semi-honest mode (threat_model.md): a server that tells half of
    v's neighbours that v survived and the other half that v dropped gets t shares of b_v and
    t of s_v^SK, and reads x_v exactly. Each client sees only its own, consistent request.
    Malicious mode refuses this (the signed survivor set must equal every alive list)."""
    from protocol.messages import MaskedInput
    from protocol.wire import decode
    from secagg import (
        KdfContext,
        KeyPair,
        PairwiseMask,
        Ring,
        Share,
        agree,
        combine,
        pairwise_sign,
        remove_masks,
    )
    from secagg.keyagreement import PURPOSE_MASK

    r = run_until("unmasking", n=8, neighbours=4, threshold=2, dropout_rate=0.0)
    srv, v = r.server, 0
    y_v = next(m for m in map(decode, r.log) if isinstance(m, MaskedInput) and m.sender == v)
    nbrs = sorted(srv.graph.neighbours(v))
    says_alive, says_dead = set(nbrs[:2]), set(nbrs[2:])
    b_sh, s_sh = [], []
    for honest in r.outgoing:
        m = honest if honest.recipient not in says_dead else dataclasses.replace(
            honest, alive=tuple(a for a in honest.alive if a != v),
            dead=tuple(sorted(honest.dead + (v,))))
        (resp,) = r.clients[m.recipient].receive(m)
        b_sh += [Share.from_bytes(raw) for o, raw in resp.self_mask_shares
                 if o == v and m.recipient in says_alive]
        s_sh += [Share.from_bytes(raw) for o, raw in resp.key_shares if o == v]
    b_v = combine(b_sh, threshold=2)
    s_v = KeyPair.from_private_bytes(combine(s_sh, threshold=2))
    ctx = KdfContext(srv.session_id, srv.round, PURPOSE_MASK)
    pairs = [PairwiseMask(agree(s_v, srv.keys[w].s_pk, own_id=v, peer_id=w, context=ctx),
                          pairwise_sign(v, w)) for w in nbrs]
    x_v = np.array(y_v.vector, dtype=np.uint32)
    remove_masks(x_v, ring=Ring(32), self_seeds=[b_v], pairwise=pairs)
    np.testing.assert_array_equal(x_v, r.inputs[v])


def test_a_second_shares_delivery_is_refused():
    """A server that delivers a client's shares twice (hoping for a second masked input under
    the same masks) gets one masked input: the client refuses the second delivery and leaves
    the round, which still completes without it at unmasking."""
    x = np.arange(10 * 4, dtype=np.uint32).reshape(10, 4)

    def twice(stage, msgs):
        if stage == "masked_input":
            return msgs + [m for m in msgs if m.recipient == 0]
        return msgs

    result = simulate_round(x, RoundConfig(bits=16, complete_graph=True), server_hook=twice)
    refused = result.transcript.stages["masked_input"].refused
    assert any("client 0 refuses" in why and "SharesDelivery" in why for why in refused)
    assert 0 in result.survivors  # its one masked input counts
    expected = x[sorted(result.survivors)].astype(np.uint64).sum(axis=0) % (1 << 16)
    assert np.array_equal(result.aggregate, expected)
