"""Split view through a replayed session (malicious mode).

A server runs the same session id and round twice with the same identities: a rehearsal, in
which it collects a full quorum of ConsistencyCheck signatures over a survivor set S_B of its
choice, and the real run, where it shows other clients another set S_A and presents the
rehearsal's signatures as if they were made there. Two defences, each tested alone:

* the used-session store kept per identity: the rehearsal's (or the real run's) Setup is
  refused, so an identity never takes part in one session twice;
* the key commitment: a ConsistencyCheck signature covers the root over every signed key
  advertisement of its run, so a rehearsal signature does not verify in another run.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from protocol import (
    ClientRound,
    LocalProtocolError,
    RemoteProtocolError,
    RoundAborted,
    RoundConfig,
    ServerRound,
    simulate_round,
)
from protocol.messages import ConsistencyRequest, UnmaskRequest
from protocol.sessions import FileSessionStore, store_for_identity
from secagg import SigningKey

# The reviewer's reproduction: n = 12, k = 6, t = 4.
CFG = RoundConfig(mode="malicious", neighbours=6, threshold=4, dropout_rate=0.2,
                  corrupt_rate=0)
N, D = 12, 8


def _identities():
    ident = {u: SigningKey.generate() for u in range(N)}
    return ident, {u: k.verify_key for u, k in ident.items()}


def _run_to_consistency(session, ident, reg, stores):
    """A real server and clients up to the ConsistencyCheck; returns (server, clients)."""
    srv = ServerRound(CFG, range(N), D, session_id=session, registry=reg)
    x = np.arange(N * D, dtype=np.uint32).reshape(N, D)
    cl = {u: ClientRound(u, config=CFG, input=x[u].copy(), identity=ident[u], registry=reg,
                         used_sessions=stores[u]) for u in range(N)}
    out = srv.start()
    for _ in range(3):  # AdvertiseKeys, ShareKeys, MaskedInput
        for m in out:
            for rep in cl[m.recipient].receive(m):
                srv.receive(rep)
        out = srv.close_stage()
    assert all(isinstance(m, ConsistencyRequest) for m in out)
    return srv, cl


def test_malicious_client_round_without_a_session_store_is_refused():
    ident, reg = _identities()
    with pytest.raises(ValueError, match="used-session store"):
        ClientRound(0, config=CFG, identity=ident[0], registry=reg)


def test_replayed_session_split_view_is_refused_by_the_session_store():
    """Defence 1 alone: fresh ClientRound objects for the same identities share the identity's
    store, so the second run of the session is refused at Setup before anything is signed."""
    ident, reg = _identities()
    session = bytes(range(32))
    stores = {u: store_for_identity(reg[u]) for u in range(N)}
    _run_to_consistency(session, ident, reg, stores)
    srv = ServerRound(CFG, range(N), D, session_id=session, registry=reg)
    x = np.zeros(D, dtype=np.uint32)
    for m in srv.start():
        again = ClientRound(m.recipient, config=CFG, input=x, identity=ident[m.recipient],
                            registry=reg, used_sessions=store_for_identity(reg[m.recipient]))
        with pytest.raises(RemoteProtocolError, match="replayed session"):
            again.receive(m)


def test_replayed_session_is_refused_after_a_restart(tmp_path):
    """The on-disk store: a client process that restarts (a new store object over the same
    file) still refuses the session."""
    ident, reg = _identities()
    session = bytes([7]) * 32
    stores = {u: FileSessionStore(tmp_path / f"sessions-{u}") for u in range(N)}
    _run_to_consistency(session, ident, reg, stores)
    restarted = FileSessionStore(tmp_path / "sessions-0")
    assert session in restarted
    srv = ServerRound(CFG, range(N), D, session_id=session, registry=reg)
    setup = next(m for m in srv.start() if m.recipient == 0)
    c = ClientRound(0, config=CFG, input=np.zeros(D, np.uint32), identity=ident[0],
                    registry=reg, used_sessions=restarted)
    with pytest.raises(RemoteProtocolError, match="replayed session"):
        c.receive(setup)


def test_simulator_refuses_a_session_run_again_with_the_same_identities():
    ident, _ = _identities()
    x = np.ones((N, D), dtype=np.uint32)
    session = bytes([9]) * 32
    simulate_round(x, CFG, session_id=session, identities=ident)
    with pytest.raises(RoundAborted, match="too-few-clients"):
        simulate_round(x, CFG, session_id=session, identities=ident)


def test_rehearsal_signatures_do_not_verify_in_the_real_run():
    """Defence 2 alone: a host that lost its memory (a fresh, empty store for every run), so
    both runs of the session go ahead. The server collects a quorum of signatures over S_B in
    the rehearsal and presents them in the real run; they were made over the rehearsal's key
    commitment, so the real client refuses before revealing any share."""
    ident, reg = _identities()
    session = bytes([3]) * 32
    rehearsal, r_cl = _run_to_consistency(session, ident, reg, {u: set() for u in range(N)})
    real, c_cl = _run_to_consistency(session, ident, reg, {u: set() for u in range(N)})
    assert rehearsal.key_root != real.key_root
    s_b = tuple(u for u in range(N) if u != 11)  # the survivor set shown to the victim's side
    r_sigs = {}
    for u in s_b:
        (sig,) = r_cl[u].receive(ConsistencyRequest(session, 0, u, s_b))
        r_sigs[u] = sig.signature
    victim = 0
    c_cl[victim].receive(ConsistencyRequest(session, 0, victim, s_b))
    held = c_cl[victim].share_holders
    req = UnmaskRequest(session, 0, victim, tuple(sorted(held & set(s_b))),
                        tuple(sorted(held - set(s_b))), tuple(sorted(r_sigs.items())))
    assert len(req.signatures) >= real.params.quorum
    with pytest.raises(RemoteProtocolError, match="another survivor set or key commitment"):
        c_cl[victim].receive(req)
    # the same quorum made in the real run is accepted: the refusal above is the binding's
    real_sigs = {}
    for u in s_b:
        if u != victim:
            (sig,) = c_cl[u].receive(ConsistencyRequest(session, 0, u, s_b))
            real_sigs[u] = sig.signature
    other = 1
    held = c_cl[other].share_holders
    ok = UnmaskRequest(session, 0, other, tuple(sorted(held & set(s_b))),
                       tuple(sorted(held - set(s_b))), tuple(sorted(real_sigs.items())))
    assert c_cl[other].receive(ok)


def _key_broadcast():
    """A fresh malicious round up to the key broadcast: (client 0, its KeysBroadcast)."""
    ident, reg = _identities()
    srv = ServerRound(CFG, range(N), D, registry=reg)
    x = np.zeros(D, dtype=np.uint32)
    cl = {u: ClientRound(u, config=CFG, input=x, identity=ident[u], registry=reg,
                         used_sessions=set()) for u in range(N)}
    for m in srv.start():
        for rep in cl[m.recipient].receive(m):
            srv.receive(rep)
    m = next(b for b in srv.close_stage() if b.recipient == 0)
    return cl[0], m


@pytest.mark.parametrize("tamper", ["root", "count", "proofs", "no-commitment", "entry",
                                    "position"])
def test_key_entry_outside_the_commitment_is_refused(tamper):
    """A server that shows a root, count or proof the entries do not lead to, leaves the
    commitment out, or swaps a neighbour's entry, is refused at the key broadcast."""
    c, m = _key_broadcast()
    other = next(e for e in m.keys if e[0] != 0)
    swapped = tuple(e if e is not other else (e[0], e[2], e[1], e[3], e[4]) for e in m.keys)
    ends = [i for _, i, _ in m.proofs] + [m.key_count]
    movable = next(m.proofs[j][0] for j in range(len(m.proofs)) if ends[j] + 1 < ends[j + 1])
    bad = {
        "root": lambda: dataclasses.replace(m, key_root=bytes(32)),
        "count": lambda: dataclasses.replace(m, key_count=m.key_count + 1),
        "proofs": lambda: dataclasses.replace(
            m, proofs=tuple((v, i, bytes(len(p))) for v, i, p in m.proofs)),
        "no-commitment": lambda: dataclasses.replace(m, key_root=b"", key_count=0, proofs=()),
        "position": lambda: dataclasses.replace(m, proofs=tuple(
            (v, i + 1 if v == movable else i, p) for v, i, p in m.proofs)),
        "entry": lambda: dataclasses.replace(m, keys=swapped),
    }[tamper]()
    with pytest.raises(RemoteProtocolError, match="key commitment|signature"):
        c.receive(bad)


def test_untouched_key_broadcast_is_accepted():
    c, m = _key_broadcast()
    assert c.receive(m)


def test_semi_honest_client_refuses_a_key_commitment():
    from round_harness import run_until

    r = run_until("share_keys")
    m = r.outgoing[0]
    with pytest.raises(RemoteProtocolError, match="unexpected key commitment"):
        r.clients[m.recipient].receive(dataclasses.replace(
            m, key_count=len(m.keys), key_root=bytes(32),
            proofs=((m.keys[0][0], 0, b""),) + tuple((e[0], i + 1, b"") for i, e in
                                                    enumerate(m.keys[1:]))))


def test_two_processes_sharing_a_store_cannot_both_claim_a_session(tmp_path):
    """Two stores over one file (two client processes of one identity): the second claim of a
    session is refused even though that store was opened before the first claim."""
    path = tmp_path / "sessions"
    a, b = FileSessionStore(path), FileSessionStore(path)
    sid = bytes([5]) * 32
    a.add(sid)
    with pytest.raises(LocalProtocolError, match="already claimed"):
        b.add(sid)
    assert sid in b
    ident, reg = _identities()
    srv = ServerRound(CFG, range(N), D, session_id=bytes([6]) * 32, registry=reg)
    setup = next(m for m in srv.start() if m.recipient == 0)
    first, second = FileSessionStore(path), FileSessionStore(path)
    ClientRound(0, config=CFG, input=np.zeros(D, np.uint32), identity=ident[0], registry=reg,
                used_sessions=first).receive(setup)
    late = ClientRound(0, config=CFG, input=np.zeros(D, np.uint32), identity=ident[0],
                       registry=reg, used_sessions=second)
    with pytest.raises(RemoteProtocolError, match="already claimed"):
        late.receive(setup)


def test_torn_last_line_is_a_claim_that_never_completed(tmp_path):
    path = tmp_path / "sessions"
    path.write_bytes(("11" * 32 + "\n").encode() + b"22" * 10)  # crash mid-append
    store = FileSessionStore(path)
    assert list(store) == [bytes([0x11]) * 32]
    store.add(bytes([0x33]) * 32)
    assert path.read_text().split() == ["11" * 32, "33" * 32]


@pytest.mark.parametrize("content", [b"zz" * 32 + b"\n", b"\xff\xfe\n", b"ab\n"])
def test_damaged_store_is_a_typed_error(tmp_path, content):
    path = tmp_path / "sessions"
    path.write_bytes(content)
    with pytest.raises(LocalProtocolError, match="session id"):
        FileSessionStore(path)
