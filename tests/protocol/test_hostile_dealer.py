"""A hostile client against the server's reconstruction: invalid dealings end the round with a
typed abort naming the dealer; forged unmasking shares are corrected and their holders named,
up to the decoding radius, and one more aborts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hostile_clients import ShortKeyDealer, ShortSeedDealer
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import ClientRound, RoundAborted, RoundConfig, ServerRound, ServerState
from protocol.messages import UnmaskResponse
from secagg import Share
from secagg.shamir import PRIME


def _to_unmasking(srv, cl, gone=()):
    """Start the round and run AdvertiseKeys, ShareKeys and MaskedInput (clients in ``gone``
    answer only the first two); returns the server's unmask requests."""
    out = srv.start()
    for stage in range(3):
        for m in out:
            if stage < 2 or m.recipient not in gone:
                for rep in cl[m.recipient].receive(m):
                    srv.receive(rep)
        out = srv.close_stage()
    return out


def _answer(srv, cl, requests, gone=()):
    for m in requests:
        if m.recipient not in gone:
            for rep in cl[m.recipient].receive(m):
                srv.receive(rep)


def _round(n=8, d=4, hostile=(), drop_masked=(), cfg=None, **hostile_kw):
    cfg = cfg or RoundConfig(dropout_rate=0.25)
    srv = ServerRound(cfg, range(n), d)
    x = np.arange(n * d, dtype=np.uint32).reshape(n, d)
    cl = {}
    for u in range(n):
        cls = ShortSeedDealer if u in hostile else ClientRound
        cl[u] = cls(u, config=cfg, input=x[u].copy())
        for k, v in hostile_kw.items():
            if u in hostile:
                setattr(cl[u], k, v)
    _answer(srv, cl, _to_unmasking(srv, cl, drop_masked), drop_masked)
    return srv


@pytest.mark.parametrize("length", [31, 1, 33, 64])
def test_short_self_mask_seed_aborts_naming_the_dealer(length):
    """The reviewer's crash: a 31-byte b_u with a matching commitment used to raise an untyped
    SeedError out of close_stage, leaving the round in UNMASKING."""
    srv = _round(hostile={2}, length=length)
    with pytest.raises(RoundAborted) as info:
        srv.close_stage()
    assert info.value.reason == "bad-dealing" and info.value.clients == (2,)
    assert "client 2" in info.value.detail
    assert srv.state is ServerState.ABORTED


def test_invalid_key_dealing_of_a_dropped_client_aborts_naming_the_dealer():
    """s_u^SK of a client that dropped after ShareKeys is reconstructed too; a wrong-length
    one is the dealer's fault."""

    cfg = RoundConfig(dropout_rate=0.25)
    n, d = 8, 4
    srv = ServerRound(cfg, range(n), d)
    cl = {u: (ShortKeyDealer if u == 3 else ClientRound)(u, config=cfg,
                                                           input=np.zeros(d, np.uint32))
          for u in range(n)}
    # 3 drops after ShareKeys: its s^SK must be rebuilt
    _answer(srv, cl, _to_unmasking(srv, cl, {3}), {3})
    with pytest.raises(RoundAborted) as info:
        srv.close_stage()
    assert info.value.reason == "bad-dealing" and info.value.clients == (3,)
    assert srv.state is ServerState.ABORTED


def _forge(resp: UnmaskResponse, owner: int) -> UnmaskResponse:
    def bad(raw):
        sh = Share.from_bytes(raw)
        return Share(sh.dealing_id, sh.threshold, sh.x, (sh.y + 1) % PRIME).to_bytes()

    return dataclasses.replace(resp, self_mask_shares=tuple(
        (o, bad(raw) if o == owner else raw) for o, raw in resp.self_mask_shares))


def _unmask_with_forgers(cfg, n, forgers_of_owner):
    """A complete round where the holders in ``forgers_of_owner(server, owner)`` forge their
    share of b_owner; returns the server after close (or raises RoundAborted)."""
    d = 4
    srv = ServerRound(cfg, range(n), d)
    x = np.arange(n * d, dtype=np.uint32).reshape(n, d)
    cl = {u: ClientRound(u, config=cfg, input=x[u].copy()) for u in range(n)}
    out = _to_unmasking(srv, cl)
    owner = 0
    forgers = forgers_of_owner(srv, owner)
    for m in out:
        (rep,) = cl[m.recipient].receive(m)
        srv.receive(_forge(rep, owner) if m.recipient in forgers else rep)
    srv.close_stage()
    want = (x.astype(np.uint64).sum(axis=0) % (1 << 32)).astype(np.uint32)
    return srv, want, forgers


@pytest.mark.parametrize(("n", "k", "t"), [(8, 7, 3), (12, 6, 2), (16, 10, 4), (11, 10, 6)])
def test_forged_unmasking_shares_up_to_the_radius_are_corrected_and_named(n, k, t):
    cfg = RoundConfig(neighbours=k, threshold=t, dropout_rate=0.0)
    radius = (k - t) // 2  # every neighbour of the owner answers: N = k

    def pick(srv, owner):
        return set(sorted(srv.graph.neighbours(owner))[:radius])

    srv, want, forgers = _unmask_with_forgers(cfg, n, pick)
    np.testing.assert_array_equal(srv.aggregate, want)
    assert set(srv.bad_shares) == forgers
    assert all(v == [(0, "b")] for v in srv.bad_shares.values())


@pytest.mark.parametrize(("n", "k", "t"), [(8, 7, 3), (12, 6, 2), (16, 10, 4), (11, 10, 6)])
def test_one_forgery_past_the_radius_aborts(n, k, t):
    cfg = RoundConfig(neighbours=k, threshold=t, dropout_rate=0.0)
    radius = (k - t) // 2

    def pick(srv, owner):
        return set(sorted(srv.graph.neighbours(owner))[:radius + 1])

    with pytest.raises(RoundAborted) as info:
        _unmask_with_forgers(cfg, n, pick)
    assert info.value.reason in ("cannot-reconstruct", "bad-reconstruction")


@settings(max_examples=15, deadline=None)
@given(st.sampled_from([(8, 7, 3), (12, 6, 2), (10, 9, 3)]), st.data())
def test_any_forgers_within_the_radius_leave_the_sum_exact(nkt, data):
    n, k, t = nkt
    cfg = RoundConfig(neighbours=k, threshold=t, dropout_rate=0.0)
    radius = (k - t) // 2

    def pick(srv, owner):
        nbrs = sorted(srv.graph.neighbours(owner))
        return set(data.draw(st.lists(st.sampled_from(nbrs), max_size=radius, unique=True)))

    srv, want, forgers = _unmask_with_forgers(cfg, n, pick)
    np.testing.assert_array_equal(srv.aggregate, want)
    assert set(srv.bad_shares) == forgers


def test_forgers_cannot_frame_an_honest_dealer_as_a_bad_dealer():
    """Every holder of b_0 replaces its share with one of a consistent dealing of a 31-byte
    secret: the value is invalid, but it does not match client 0's own commitment, so no one
    is blamed (bad-reconstruction) and client 0 is not named for exclusion."""
    from secagg import split

    cfg = RoundConfig(neighbours=6, threshold=3, dropout_rate=0.0)
    n, d = 10, 4
    srv = ServerRound(cfg, range(n), d)
    cl = {u: ClientRound(u, config=cfg, input=np.zeros(d, np.uint32)) for u in range(n)}
    out = _to_unmasking(srv, cl)
    holders = sorted(srv.graph.neighbours(0))
    fake = {sh.x: sh for sh in split(b"\x07" * 31, threshold=3, xs=[h + 1 for h in holders])}

    def reforge(resp):
        def swap(raw):
            real = Share.from_bytes(raw)
            return Share(real.dealing_id, 3, real.x, fake[real.x].y).to_bytes()

        return dataclasses.replace(resp, self_mask_shares=tuple(
            (o, swap(raw) if o == 0 else raw) for o, raw in resp.self_mask_shares))

    for m in out:
        (rep,) = cl[m.recipient].receive(m)
        srv.receive(reforge(rep) if m.recipient in holders else rep)
    with pytest.raises(RoundAborted) as info:
        srv.close_stage()
    assert info.value.reason == "bad-reconstruction" and info.value.clients == ()


def _shift_towards(honest_xs, delta):
    """h with deg h <= t - 1, h = 0 at every honest holder's x and h(0) = delta: what colluding
    holders add to their own shares to move the decoded value by delta unnoticed by the honest
    shares (they need no honest share for this)."""
    def h(x):
        num = den = 1
        for xi in honest_xs:
            num = num * (x - xi) % PRIME
            den = den * (-xi) % PRIME
        return delta * num * pow(den, -1, PRIME) % PRIME

    return h


@pytest.mark.parametrize("mode", ["semi-honest", "malicious"])
def test_colluding_holders_cannot_frame_a_dropped_dealer_as_bad_dealing(mode):
    """Client 0 drops after ShareKeys, so the server rebuilds s_0^SK. t - 1 of its holders are
    honest; the other holders (fewer than t) shift their own shares onto a polynomial through
    the honest ones whose value at zero encodes 33 bytes. Every share agrees, yet fewer than
    2t - 1 do, so no one is blamed and client 0 is not named for exclusion."""
    from round_harness import run_until

    n, k, t, dealer = 12, 6, 4, 0
    r = run_until("unmasking", n=n, mode=mode, neighbours=k, threshold=t, dropout_rate=0.1,
                  corrupt_rate=0.0, drop={"masked_input": {dealer}})
    holders = sorted(m.recipient for m in r.outgoing if dealer in m.dead)
    honest, colluders = holders[: t - 1], holders[t - 1:]
    assert len(colluders) < t
    h = _shift_towards([x + 1 for x in honest], (1 << 264) - (1 << 256))

    def shift(raw):
        sh = Share.from_bytes(raw)
        return Share(sh.dealing_id, sh.threshold, sh.x, (sh.y + h(sh.x)) % PRIME).to_bytes()

    for m in r.outgoing:
        (rep,) = r.clients[m.recipient].receive(m)
        if m.recipient in colluders:
            rep = dataclasses.replace(rep, key_shares=tuple(
                (o, shift(raw) if o == dealer else raw) for o, raw in rep.key_shares))
        r.server.receive(rep)
    with pytest.raises(RoundAborted) as info:
        r.server.close_stage()
    assert info.value.reason == "bad-reconstruction" and info.value.clients == ()
    assert r.server.bad_shares == {}  # no holder is named on a value that failed its check


def test_a_share_of_another_dealing_is_corrected_as_a_wrong_share():
    """One holder returns its genuine share of b_u under another dealing id: the share is set
    aside (an erasure), the round completes with the exact sum, and the holder is named."""
    from round_harness import run_until

    r = run_until("unmasking", n=12, neighbours=6, threshold=4, dropout_rate=0.0)
    evil = r.outgoing[0].recipient
    owner = None
    for m in r.outgoing:
        (rep,) = r.clients[m.recipient].receive(m)
        if m.recipient == evil:
            owner, raw = rep.self_mask_shares[0]
            sh = Share.from_bytes(raw)
            rep = dataclasses.replace(rep, self_mask_shares=(
                (owner, Share(bytes(16), sh.threshold, sh.x, sh.y).to_bytes()),)
                + rep.self_mask_shares[1:])
        r.server.receive(rep)
    r.server.close_stage()
    want = (r.inputs.astype(np.uint64).sum(axis=0) % (1 << 32)).astype(np.uint32)
    np.testing.assert_array_equal(r.server.aggregate, want)
    assert r.server.bad_shares == {evil: [(owner, "b")]}
