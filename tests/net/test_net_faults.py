"""Faults with real processes on 127.0.0.1: kill -9 at each stage, refused
certificates, garbage, oversize, replayed and impersonating messages, slow clients, a server
restart between rounds, and the client's own refusals. Every test is bounded (pytest-timeout
and a timeout on every wait) and kills its processes at the end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from net_harness import make_deployment

from dp.ledger import Ledger, verify
from protocol.config import RoundConfig
from protocol.dp_plan import plan_dp
from protocol.net.tls import cert_pem, key_pem, make_ca, make_leaf

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def deploy(tmp_path):
    made = []

    def make(*args, **kw):
        d = make_deployment(tmp_path / f"d{len(made)}", *args, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


def _clients_exit_zero(d, clients):
    for u, p in clients.items():
        assert d.wait(p) == 0, f"client {u}:\n{d.output(p)}"


def test_rounds_complete_with_exact_sums_and_fresh_sessions(deploy):
    d = deploy(5, rounds=2)
    clients = d.start_all()
    assert d.wait_server() == 0
    _clients_exit_zero(d, clients)
    for r in (0, 1):
        assert d.assert_sum(r) == [0, 1, 2, 3, 4]
    sessions = [e["session"] for e in d.events("round-started")]
    assert len(sessions) == 2 and len(set(sessions)) == 2
    # each client printed the published aggregate of both rounds, and was included
    out = [json.loads(x) for x in d.output(clients[3]).splitlines() if x.startswith("{")]
    assert [(o["round"], o["included"]) for o in out] == [(0, True), (1, True)]
    assert d.events("exit")[-1]["code"] == 0


@pytest.mark.parametrize("stage,mode", [("advertise_keys", "semi-honest"),
                                        ("share_keys", "semi-honest"),
                                        ("masked_input", "semi-honest"),
                                        ("consistency_check", "malicious"),
                                        ("unmasking", "semi-honest")])
def test_client_killed_at_each_stage(deploy, stage, mode):
    d = deploy(5, mode=mode)
    clients = d.start_all(skip={2})
    victim = d.client(2, fault="kill", stage=stage)
    d.wait_for(lambda: f"AT {stage}" in d.output(victim), 60, f"client 2 to reach {stage}")
    d.kill(victim)
    assert d.wait_server() == 0, d.events()[-5:]
    _clients_exit_zero(d, clients)
    survivors = d.assert_sum(0)
    # a client killed after sending its masked input is in the sum (its self mask is
    # recovered from its neighbours' shares); before that, it is not
    assert (2 in survivors) == (stage in ("consistency_check", "unmasking"))
    reasons = d.dropped(0)
    if stage not in ("consistency_check", "unmasking"):
        assert reasons[2] == "connection closed without a goodbye"
        assert [e["stage"] for e in d.events("client-dropped")] == [stage]


def test_too_few_survivors_aborts_with_typed_reason(deploy):
    d = deploy(5)
    t = RoundConfig().resolve(5).threshold
    kill = list(range(5 - t + 1))  # leaves t - 1 < t survivors
    clients = d.start_all(skip=set(kill))
    victims = [d.client(u, fault="kill", stage="masked_input") for u in kill]
    for v in victims:
        d.wait_for(lambda v=v: "AT masked_input" in d.output(v), 60, "victims at masked_input")
        d.kill(v)
    assert d.wait_server() == 3
    ab = d.events("round-aborted")
    assert ab and ab[0]["reason"] == "too-few-survivors" and ab[0]["stage"] == "masked_input"
    assert d.events("exit")[-1]["code"] == 3
    assert not (d.dir / "state" / "aggregates" / "round-0.npy").exists()
    for p in clients.values():  # the survivors learn the abort and leave at the server's end
        assert d.wait(p) in (0, 6)


def _impostor_config(d, cert_name: str, key_name: str, ca_name: str = "ca.pem") -> str:
    text = (d.dir / "client-0.toml").read_text()
    text = text.replace('cert = "client-0.pem"', f'cert = "{cert_name}"')
    text = text.replace('key = "client-0.key"', f'key = "{key_name}"')
    text = text.replace('ca = "ca.pem"', f'ca = "{ca_name}"')
    text = text.replace("state/client-0", "state/impostor")
    text = text.replace("\ndim = ", "\nconnect_timeout = 3.0\ndim = ")
    (d.dir / "impostor.toml").write_text(text)
    return "impostor.toml"


def _load_ca(d):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return (load_pem_private_key((d.dir / "ca.key").read_bytes(), None),
            x509.load_pem_x509_certificate((d.dir / "ca.pem").read_bytes()))


def test_certificate_outside_registry_is_refused_and_round_goes_on(deploy):
    d = deploy(5)
    ca_key, ca = _load_ca(d)
    k, c = make_leaf(ca_key, ca, "secagg-client-0", server=False)  # same CA, not registered
    (d.dir / "stranger.pem").write_bytes(cert_pem(c))
    (d.dir / "stranger.key").write_bytes(key_pem(k))
    cfg = _impostor_config(d, "stranger.pem", "stranger.key")
    srv = d.server()
    d.wait_for(lambda: d.events("listening") or srv.poll() is not None, 30, "listening")
    imp = d.client(0, config=cfg)
    assert d.wait(imp) == 5  # ServerRefused
    exit_line = (d.dir / "state" / "impostor" / "log.jsonl").read_text().splitlines()[-1]
    assert "the server refused this client" in exit_line
    refused = d.events("connection-refused")
    assert refused and refused[0]["reason"] == "certificate not in the registry"
    clients = {u: d.client(u) for u in range(5)}
    assert d.wait_server() == 0
    _clients_exit_zero(d, clients)
    assert d.assert_sum(0) == [0, 1, 2, 3, 4]


def test_certificate_from_another_ca_is_refused_and_round_goes_on(deploy):
    d = deploy(5)
    other_key, other = make_ca("someone else's CA")
    k, c = make_leaf(other_key, other, "secagg-client-0", server=False)
    (d.dir / "foreign.pem").write_bytes(cert_pem(c))
    (d.dir / "foreign.key").write_bytes(key_pem(k))
    cfg = _impostor_config(d, "foreign.pem", "foreign.key")
    clients = d.start_all()
    imp = d.client(0, config=cfg)
    assert d.wait(imp) in (5, 6)  # the TLS handshake fails: refused or unreachable
    assert d.wait_server() == 0
    _clients_exit_zero(d, clients)
    assert d.assert_sum(0) == [0, 1, 2, 3, 4]


def test_client_refuses_a_server_certificate_from_another_ca(deploy):
    d = deploy(5)
    other_key, other = make_ca("rogue CA")
    (d.dir / "rogue-ca.pem").write_bytes(cert_pem(other))
    cfg = _impostor_config(d, "client-0.pem", "client-0.key", "rogue-ca.pem")
    clients = d.start_all(skip={0})
    imp = d.client(0, config=cfg)
    assert d.wait(imp) in (5, 6)
    assert not d.events("client-connected") or all(
        e["client"] != 0 for e in d.events("client-connected"))
    assert d.wait_server() == 0  # four of five are enough (t <= 4)
    _clients_exit_zero(d, clients)


@pytest.mark.parametrize("fault,stage,reason", [
    ("garbage", "share_keys", "garbage"),
    ("oversize", "masked_input", "oversize"),
    ("replay", "advertise_keys", "replayed message"),
    ("impersonate", "share_keys", "in the name of client"),
])
def test_misbehaving_client_is_dropped_others_unaffected(deploy, fault, stage, reason):
    d = deploy(5)
    clients = d.start_all(skip={4})
    bad = d.client(4, fault=fault, stage=stage)
    assert d.wait_server() == 0, d.events()[-5:]
    _clients_exit_zero(d, clients)
    assert reason in d.dropped(0)[4]
    assert d.dropped(0).keys() == {4}
    survivors = d.assert_sum(0)
    assert survivors == [0, 1, 2, 3]
    d.wait(bad)


def test_replay_from_an_old_session_is_refused(deploy):
    d = deploy(5, rounds=2)
    clients = d.start_all(skip={1})
    bad = d.client(1, fault="stale", stage="share_keys")
    assert d.wait_server() == 0
    _clients_exit_zero(d, clients)
    assert 1 in d.assert_sum(0)
    assert "wrong session or round" in d.dropped(1)[1]
    assert 1 not in d.assert_sum(1)
    d.wait(bad)


def test_slow_client_past_the_deadline_is_a_dropout(deploy):
    d = deploy(5, deadline=3.0)
    clients = d.start_all(skip={3})
    slow = d.client(3, fault="slow", stage="share_keys", delay=6.0)
    assert d.wait_server() == 0
    _clients_exit_zero(d, clients)
    assert d.dropped(0) == {3: "deadline missed"}
    assert 3 not in d.assert_sum(0)
    assert d.wait(slow) == 0  # it stays connected and leaves at the server's goodbye


def test_server_killed_between_rounds_and_restarted(deploy):
    d = deploy(5, dp=True, rounds=3)
    d.edit("server.toml", "between_rounds = 1.0", "between_rounds = 1.0\nround_gap = 5.0")
    clients = d.start_all()
    d.wait_for(lambda: d.events("round-complete"), 90, "round 0 to complete")
    d.kill(d.server_proc)
    ledger = d.settings.ledger
    pub = (d.dir / "server-ledger.pub").read_text().strip()
    first = verify(ledger, pub)
    assert first.entries == 1
    d.server()
    assert d.wait_server(120) == 0
    _clients_exit_zero(d, clients)
    rep = verify(ledger, pub)
    assert rep.entries == 3 and rep.epsilon <= 8.0
    listening = d.events("listening")
    assert [e["first_round"] for e in listening] == [0, first.entries]
    sessions = [e["session"] for e in d.events("round-started")]
    assert len(sessions) == len(set(sessions))
    assert sorted(e["round"] for e in d.events("round-complete")) == [0, 1, 2]
    for u in range(5):  # each client's own ledger verifies too, one entry per round
        assert verify(d.dir / "state" / f"client-{u}" / "ledger.jsonl").entries == 3


def test_client_refuses_a_server_with_another_configuration(deploy):
    d = deploy(5)
    d.edit("client-0.toml", "corrupt_rate = 0.05", "corrupt_rate = 0.1")
    d.edit("client-0.toml", "\ndim = ", "\nconnect_timeout = 3.0\ndim = ")
    clients = d.start_all()
    assert d.wait(clients.pop(0)) == 5
    assert "configuration" in json.dumps(d.client_events(0, "exit"))
    assert d.wait_server() == 0
    _clients_exit_zero(d, clients)
    assert d.assert_sum(0) == [1, 2, 3, 4]


def test_client_refuses_a_ledger_made_for_another_budget(deploy):
    d = deploy(5, dp=True, rounds=1)
    state = d.dir / "state" / "client-2"
    state.mkdir(parents=True)
    from dp.ledger import Budget

    Ledger.create(state / "ledger.jsonl", Budget(50.0, 1e-2), owner="client-2").close()
    d.edit("client-2.toml", "\ndim = ", "\nconnect_timeout = 3.0\ndim = ")
    srv = d.server()
    d.wait_for(lambda: d.events("listening") or srv.poll() is not None, 30, "listening")
    assert d.wait(d.client(2)) == 2
    assert "was created for the budget" in json.dumps(d.client_events(2, "exit"))


def _spend_client_budget(d, u):
    """Client u's own ledger, created for the configured budget, already spent by an earlier
    participation (the plan is for one round); returns its state directory."""
    state = d.dir / "state" / f"client-{u}"
    state.mkdir(parents=True)
    plan = plan_dp(d.settings.dp, d.settings.round, d.n, 64)
    with Ledger.create(state / "ledger.jsonl", d.settings.dp.budget, owner=f"client-{u}") as led:
        led.record_round(event=plan.event, session="00" * 32, round=0, cohort=d.n,
                         survivors=None, n_min=plan.n_min, clip_norm=1.0,
                         mechanism=plan.mechanism_record(None), sampler_tv=plan.sampler_tv)
    return state


def test_client_over_its_own_budget_refuses_the_round(deploy):
    d = deploy(5, dp=True, rounds=1)
    state = _spend_client_budget(d, 2)
    clients = d.start_all()
    assert d.wait_server() == 0
    _clients_exit_zero(d, clients)
    refusals = d.client_events(2, "round-refused")
    assert refusals and "budget" in refusals[0]["reason"]
    assert d.dropped(0) == {2: "deadline missed"} or 2 not in d.completed()[0]
    assert verify(state / "ledger.jsonl").entries == 1  # nothing more was charged
    agg = np.load(d.dir / "state" / "aggregates" / "round-0.npy")
    assert agg.dtype == np.float64 and agg.shape == (64,)


def test_hostile_dealer_aborts_round_0_and_later_rounds_publish_without_it(deploy):
    """A registered client deals a 31-byte self-mask seed with a matching commitment in round
    0: the server aborts that round with a typed reason naming it (no traceback, no exit),
    excludes it, and rounds 1 and 2 publish exact sums of the others' inputs."""
    d = deploy(5, rounds=3)
    clients = d.start_all(skip={1})
    hostile = d.client(1, fault="short-seed", stage="advertise_keys")
    assert d.wait_server() == 0, d.events()[-8:]
    _clients_exit_zero(d, clients)
    d.wait(hostile)
    (ab,) = d.events("round-aborted")
    assert (ab["round"], ab["stage"], ab["reason"], ab["clients"]) == (0, "unmasking",
                                                                      "bad-dealing", [1])
    assert ab["charged"] is False
    assert [e["client"] for e in d.events("client-excluded")] == [1]
    assert sorted(d.completed()) == [1, 2]
    for r in (1, 2):
        assert d.assert_sum(r) == [0, 2, 3, 4]
    assert d.events("exit")[-1]["aborted"] == 1
    assert "Traceback" not in d.output(d.server_proc)


def test_client_over_its_own_budget_declines_at_once(deploy):
    """A client that refuses a round for its own budget sends a DECLINE: the server drops it
    at once, without waiting out the AdvertiseKeys deadline."""
    d = deploy(5, dp=True, rounds=1, deadline=60.0)
    _spend_client_budget(d, 2)
    clients = d.start_all()
    assert d.wait_server(timeout=50) == 0
    _clients_exit_zero(d, clients)
    reason = d.dropped(0)[2]
    assert reason.startswith("declined") and "budget" in reason
    closed = next(e for e in d.events("stage-closed") if e["stage"] == "advertise_keys")
    assert closed["seconds"] < 30  # the 60 s deadline was not waited out


def test_run_stops_after_max_aborts_in_a_row(deploy):
    """Too few clients connect: every round aborts (too-few-clients), each in a fresh session,
    and the run stops with exit 3 after max_aborts_in_a_row of them, not after the first."""
    d = deploy(5, rounds=4)
    d.edit("server.toml", "rounds = 4", "rounds = 4\nmax_aborts_in_a_row = 2")
    d.edit("server.toml", "join_timeout = 30.0", "join_timeout = 3.0")
    clients = d.start_all(skip={0, 1, 2, 3})
    assert d.wait_server() == 3
    aborted = d.events("round-aborted")
    assert [(e["round"], e["reason"], e["charged"]) for e in aborted] == [
        (0, "too-few-clients", False), (1, "too-few-clients", False)]
    assert len({e["session"] for e in d.events("round-started")}) == 2
    assert d.events("exit")[-1]["code"] == 3
    for p in clients.values():
        assert d.wait(p) in (0, 6)
