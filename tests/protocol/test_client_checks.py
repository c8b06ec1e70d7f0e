"""Every client-side check of docs/architecture.md section 3, each triggered by tampering one real
server message; the client refuses with RemoteProtocolError and stays in ERROR."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from round_harness import run_until

from protocol import ClientState, InputError, LocalProtocolError, RemoteProtocolError
from protocol.messages import UnmaskResponse


def refuse(r, msg, match, to=None):
    client = r.clients[msg.recipient if to is None else to]
    with pytest.raises(RemoteProtocolError, match=match):
        client.receive(msg)
    assert client.state is ClientState.ERROR
    with pytest.raises(LocalProtocolError, match="ERROR"):  # and it stays there
        client.receive(msg)


def first(r):
    return r.outgoing[0]


def non_neighbour(r, u):
    return next(v for v in sorted(r.server.graph.clients)
                if v != u and v not in r.server.graph.neighbours(u))


def some_neighbour(r, u, pool):
    return next(v for v in sorted(r.server.graph.neighbours(u)) if v in pool)


# --- Setup -------------------------------------------------------------------------------
def test_not_in_cohort_or_wrong_recipient():
    r = run_until("advertise_keys")
    m = first(r)
    refuse(r, dataclasses.replace(m, recipient=m.recipient + 1), "addressed to", to=m.recipient)
    r = run_until("advertise_keys")
    m = first(r)
    cohort = tuple(u for u in m.cohort if u != m.recipient) + (99,)
    other = dataclasses.replace(m, cohort=tuple(sorted(cohort)))
    refuse(r, other, "not in the cohort")


def test_graph_seed_must_be_derived():
    r = run_until("advertise_keys")
    refuse(r, dataclasses.replace(first(r), graph_seed=bytes(32)), "graph seed")


def test_replayed_session_is_refused():
    r = run_until("share_keys")
    u = 0
    setup = r.clients[u].setup
    with pytest.raises(RemoteProtocolError):  # a Setup in the middle of a round: wrong state
        r.clients[u].receive(setup)
    from protocol import ClientRound

    used: set[bytes] = set()
    c = ClientRound(u, config=r.clients[u].config, input=r.inputs[u].copy(), used_sessions=used)
    c.receive(setup)
    c2 = ClientRound(u, config=r.clients[u].config, input=r.inputs[u].copy(),
                     used_sessions=used)
    assert not c2.accepts(setup)  # a host can skip the round (and any charge) up front
    with pytest.raises(RemoteProtocolError, match="replayed session"):
        c2.receive(setup)


# --- keys -----------------------------------------------------------------------------------
def test_own_key_missing_or_misreported():
    r = run_until("share_keys")
    m = first(r)
    refuse(r, dataclasses.replace(m, keys=tuple(e for e in m.keys if e[0] != m.recipient)),
           "own key missing")
    r = run_until("share_keys")
    m = first(r)
    keys = tuple((v, bytes([7]) * 32, s, com, sig) if v == m.recipient else (v, c, s, com, sig)
                 for v, c, s, com, sig in m.keys)
    refuse(r, dataclasses.replace(m, keys=keys), "own key misreported")


def test_duplicate_keys():
    r = run_until("share_keys")
    m = first(r)
    others = [e for e in m.keys if e[0] != m.recipient]
    dup = others[1][1]
    keys = tuple((v, dup, s, com, sig) if v == others[0][0] else (v, c, s, com, sig)
                 for v, c, s, com, sig in m.keys)
    refuse(r, dataclasses.replace(m, keys=keys), "duplicate public key")


def test_keys_of_non_neighbours():
    r = run_until("share_keys", n=12)
    m = first(r)
    stranger = non_neighbour(r, m.recipient)
    keys = tuple(sorted(m.keys + ((stranger, bytes([9]) * 32, bytes([8]) * 32, bytes(32), b""),)))
    refuse(r, dataclasses.replace(m, keys=keys), "not neighbours")


def test_missing_keys_below_threshold():
    r = run_until("share_keys", n=12)
    m = first(r)
    t = r.server.t
    keep = [e for e in m.keys if e[0] == m.recipient] + [
        e for e in m.keys if e[0] != m.recipient][: t - 1]
    refuse(r, dataclasses.replace(m, keys=tuple(sorted(keep))), "advertised keys")


# --- shares -----------------------------------------------------------------------------------
def test_replayed_ciphertext_from_another_round_is_refused():
    old = run_until("masked_input")
    r = run_until("masked_input")
    m = first(r)
    stale = {v: ct for v, ct in old.by_recipient()[m.recipient].ciphertexts}
    cts = tuple((v, stale.get(v, ct)) for v, ct in m.ciphertexts)
    refuse(r, dataclasses.replace(m, ciphertexts=cts), "decryption failed")


def test_ciphertext_readdressed_from_another_client_is_refused():
    r = run_until("masked_input")
    m = first(r)
    (v1, ct1), (v2, ct2) = m.ciphertexts[:2]
    swapped = tuple((v, ct2 if v == v1 else ct1 if v == v2 else ct) for v, ct in m.ciphertexts)
    refuse(r, dataclasses.replace(m, ciphertexts=swapped), "decryption failed")


def test_own_ciphertext_reflected_back_is_refused():
    """The pair key is the same in both directions, so only the associated data (sender,
    receiver) stops the server from handing v's own ciphertext to u back to v as u's."""
    r = run_until("masked_input")
    m = r.outgoing[0]
    v = m.recipient
    u, _ = m.ciphertexts[0]
    own_to_u = dict(r.server.share_msgs[v].ciphertexts)[u]
    reflected = tuple((w, own_to_u if w == u else ct) for w, ct in m.ciphertexts)
    refuse(r, dataclasses.replace(m, ciphertexts=reflected), "decryption failed")


def test_shares_from_a_non_neighbour():
    r = run_until("masked_input", n=12)
    m = first(r)
    stranger = non_neighbour(r, m.recipient)
    cts = tuple(sorted(m.ciphertexts + ((stranger, bytes(60)),)))
    refuse(r, dataclasses.replace(m, ciphertexts=cts), "not a neighbour")


# --- unmasking ----------------------------------------------------------------------------
def test_neighbour_listed_alive_and_dead():
    r = run_until("unmasking", drop={"masked_input": {3}})
    m = next(x for x in r.outgoing if x.dead or len(x.alive) > 1)
    v = m.alive[0]
    refuse(r, dataclasses.replace(m, dead=tuple(sorted(set(m.dead) | {v}))),
           "both alive and dead")


def test_dead_list_naming_this_client():
    r = run_until("unmasking")
    m = first(r)
    refuse(r, dataclasses.replace(m, dead=tuple(sorted(set(m.dead) | {m.recipient}))),
           "names this client")


def test_unknown_client_in_request():
    r = run_until("unmasking", n=12)
    m = first(r)
    refuse(r, dataclasses.replace(m, alive=tuple(sorted(set(m.alive) | {77}))), "unknown")


def test_survivors_not_subset_of_earlier_set():
    """A neighbour that dropped in ShareKeys (not in U2) cannot reappear as alive or dead."""
    r = run_until("unmasking", n=10, drop={"share_keys": {4}})
    m = next(x for x in r.outgoing if 4 in r.server.graph.neighbours(x.recipient))
    refuse(r, dataclasses.replace(m, dead=tuple(sorted(set(m.dead) | {4}))), "unknown")


def test_unaccounted_neighbour():
    r = run_until("unmasking")
    m = first(r)
    refuse(r, dataclasses.replace(m, alive=m.alive[1:]), "unaccounted")


def test_fewer_than_t_alive_neighbours():
    r = run_until("unmasking", n=10)
    m = first(r)
    t = r.server.t
    moved = m.alive[: len(m.alive) - t + 1]
    refuse(r, dataclasses.replace(m, alive=tuple(v for v in m.alive if v not in moved),
                                  dead=tuple(sorted(set(m.dead) | set(moved)))), "alive neighbours")


def test_second_unmasking_request_is_refused():
    r = run_until("unmasking")
    m = first(r)
    client = r.clients[m.recipient]
    out = client.receive(m)
    assert isinstance(out[0], UnmaskResponse)
    with pytest.raises(RemoteProtocolError, match="UnmaskRequest in state done"):
        client.receive(m)
    assert client.state is ClientState.ERROR


def test_message_of_another_round_is_refused():
    r = run_until("unmasking")
    m = first(r)
    refuse(r, dataclasses.replace(m, round=m.round + 1), "another session or round")
    r = run_until("unmasking")
    refuse(r, dataclasses.replace(first(r), session_id=bytes(32)), "another session or round")


def test_alive_neighbours_get_the_b_share_and_dead_ones_the_key_share():
    r = run_until("unmasking", drop={"masked_input": {2}})
    checked = 0
    for m in r.outgoing:
        client = r.clients[m.recipient]
        resp = client.receive(m)[0]
        assert dict(resp.self_mask_shares) == {v: client._shares.held[v][0].to_bytes()
                                               for v in m.alive}
        assert dict(resp.key_shares) == {v: client._shares.held[v][1].to_bytes() for v in m.dead}
        checked += len(m.dead)
    assert checked  # some neighbour of a survivor dropped, so key shares were exercised


def test_set_input_before_setup_and_refused_after_masking():
    r = run_until("advertise_keys")
    m = first(r)
    c = r.clients[m.recipient]
    c.set_input(r.inputs[m.recipient].copy())  # replace it before Setup: accepted
    c.receive(m)
    with pytest.raises(InputError, match="length 3, expected 16"):
        c.set_input(np.zeros(3, dtype=np.uint32))  # checked against the Setup's dim
    r = run_until("unmasking")
    c = r.clients[first(r).recipient]
    with pytest.raises(LocalProtocolError, match="can't set the input in state masked"):
        c.set_input(r.inputs[0].copy())


# --- local errors -------------------------------------------------------------------------
def test_wrong_input_is_a_local_error():
    r = run_until("advertise_keys")
    m = first(r)
    c = r.clients[m.recipient]
    c._input = np.zeros(5, dtype=np.uint32)  # the wrong length for dim = 16
    with pytest.raises(InputError, match="length 5, expected 16"):
        c.receive(m)
    assert c.state is ClientState.ERROR


def test_unusable_neighbour_mask_key_is_refused_before_the_input_is_asked_for():
    """A key broadcast that gives a neighbour an all-zero (low-order) s key: the client finds
    out when it agrees the pairwise masks, which it does on receiving its shares, before its
    machine asks for the input (so a DP client is never charged for such a round)."""
    r = run_until("share_keys")
    u = 0
    m = r.by_recipient()[u]
    v = next(e[0] for e in m.keys if e[0] != u)
    bad = dataclasses.replace(m, keys=tuple((e[0], e[1], bytes(32), e[3], e[4]) if e[0] == v
                                            else e for e in m.keys))
    client = r.clients[u]
    client._input = None  # no input yet: the machine would ask for it after the shares
    r.answer([bad])
    r.answer([x for x in r.outgoing if x.recipient != u])
    delivery = next(x for x in r.server.close_stage() if x.recipient == u)
    with pytest.raises(RemoteProtocolError):
        client.receive(delivery)
    assert client.state is ClientState.ERROR and not client.needs_input
