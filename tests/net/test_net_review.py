"""Review of the networked transport (protocol/net/): defects as strict xfails, plus coverage the
fault tests lack. Everything runs in this process: the real AggregationServer and AsyncClient over
gRPC + mutual TLS on 127.0.0.1 (port 0) in one asyncio loop, or their handlers called directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import os
import random
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from dp.errors import DPError
from dp.ledger import Budget, Ledger
from protocol.client import ClientRound
from protocol.errors import ProtocolError, WireError
from protocol.messages import MaskedInput, SharesDelivery, UnmaskRequest
from protocol.net.certs import DemoOptions, write_demo
from protocol.net.client import AsyncClient, ServerRefused, run_client
from protocol.net.frames import (
    DECLINE,
    PROTOCOL,
    Abort,
    Bye,
    Decline,
    Result,
    Welcome,
    decode_frame,
    encode_frame,
    protocol_frame,
)
from protocol.net.jsonlog import JsonLog
from protocol.net.server import (
    EXIT_ABORTED,
    AggregationServer,
    _Inbound,
    _Peer,
    _RoundState,
    load_signing_key,
)
from protocol.net.settings import SettingsError, load_client, load_server
from protocol.server import ServerRound
from protocol.wire import decode, encode

pytestmark = pytest.mark.timeout(60)

SID = bytes(range(32))


# -- helpers: a deployment, a server and clients in this process ------------------------
class _Cap(io.StringIO):
    """A JsonLog target whose lines can be read back."""

    def events(self, event: str | None = None) -> list[dict]:
        rows = [json.loads(x) for x in self.getvalue().splitlines() if x.strip()]
        return [r for r in rows if event is None or r["event"] == event]


def _deploy(tmp: Path, n: int = 5, **kw) -> Path:
    """A demo deployment; for a cohort secagg certs refuses (n < 5, or malicious n < 7), a
    valid one of 7 whose registry is then cut to the first n members."""
    opts = dict(clients=n, port=0, dim=16, rounds=1, dp=False, seed=1, deadline=2.0)
    opts.update(kw)
    cut = n < 5 or (n < 7 and kw.get("mode") == "malicious")
    if cut:
        opts["clients"] = 7
    write_demo(tmp, DemoOptions(**opts))
    if cut:
        reg = (tmp / "registry.toml").read_text().split("\n[[client]]")
        (tmp / "registry.toml").write_text("\n[[client]]".join(reg[: n + 1]))
    return tmp


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def _server(d: Path, **kw) -> tuple[AggregationServer, _Cap]:
    s = load_server(d / "server.toml")
    kw.setdefault("join_timeout", 5.0)
    kw.setdefault("between_rounds", 0.3)
    kw.setdefault("output_dir", None)
    kw.setdefault("log", None)
    cap = _Cap()
    return AggregationServer(dataclasses.replace(s, **kw), JsonLog(cap, party="server")), cap


def _client(d: Path, u: int, port, *, cls=AsyncClient, update=None, **kw
            ) -> tuple[AsyncClient, _Cap]:
    cs = load_client(d / f"client-{u}.toml")
    kw.setdefault("log", None)
    cs = dataclasses.replace(cs, server=f"127.0.0.1:{port}", **kw)
    x = np.load(d / f"update-{u}.npy") if update is None else update

    async def provider(session, rnd):
        return x, None

    cap = _Cap()
    return cls(cs, log=JsonLog(cap, party=f"client-{u}"), provider=provider), cap


async def _start(srv: AggregationServer) -> asyncio.Task:
    task = asyncio.create_task(srv.run())
    while srv.port is None and not task.done():
        await asyncio.sleep(0.005)
    return task


async def _play(srv: AggregationServer, make_clients) -> tuple[object, list, list]:
    """Run the server with the clients make_clients(port) gives; (exit code or the exception
    that escaped run(), what each client's serve() returned or raised, the clients)."""
    task = await _start(srv)
    clients = make_clients(srv.port)
    await asyncio.gather(*(c.connect() for c, _ in clients))
    serving = [asyncio.create_task(c.serve()) for c, _ in clients]
    try:
        code: object = await task
    except Exception as exc:  # noqa: BLE001 - the tests look at what escaped
        code = exc
    served = await asyncio.gather(*serving, return_exceptions=True)
    for c, _ in clients:
        await c.close()
    return code, served, clients


def _run(coro, timeout: float = 40.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def _capture_sends(client: AsyncClient) -> list[bytes]:
    sent: list[bytes] = []

    async def send(frame: bytes) -> None:
        sent.append(frame)

    client._send = send
    return sent


def _direct_round(d: Path):
    """A server with five fake connected peers and a started round; each client's honest
    AdvertiseKeys, ready to be fed to _handle / _collect."""
    srv, cap = _server(d)
    sr = ServerRound(srv.round_config, srv.cohort, srv.vector_words, session_id=SID, round=0)
    setups = {m.recipient: m for m in sr.start()}
    for u in srv.cohort:
        srv.peers[u] = _Peer(u, 100 + u)
    answers = {u: ClientRound(u, config=srv.round_config).receive(setups[u])[0]
               for u in srv.cohort}
    return srv, cap, sr, _RoundState(sr, 0, SID), answers


def _inbound(u: int, data: bytes | None, reason: str = "") -> _Inbound:
    return _Inbound(u, 100 + u, data, reason)


# =========================================================================================
# Defects found in review, now fixed (each test failed before its fix)
# =========================================================================================
def test_flooding_client_cannot_grow_the_server_inbox_without_bound(tmp_path):
    d = _deploy(tmp_path)

    async def scenario():
        srv, _ = _server(d, join_timeout=20.0)  # waits for the other four: nobody drains
        task = await _start(srv)
        c, _ = _client(d, 0, srv.port)
        await c.connect()
        junk = protocol_frame(b"\x01" * 20_000)  # well under the per-frame bound
        with contextlib.suppress(Exception):  # a fix may push back or close the stream
            for _ in range(800):
                await asyncio.wait_for(c.call.write(junk), 1.0)
        await asyncio.sleep(0.3)
        peer = srv.peers.get(0)
        queued, closed = srv.inbox.qsize(), peer is None or peer.status is not None
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await c.close()
        return queued, closed

    queued, closed = _run(scenario())
    assert closed or queued <= 64, f"{queued} frames (~{queued * 20} KB) queued for one client"


def test_messages_that_arrived_before_the_deadline_count(tmp_path):
    srv, cap, sr, state, answers = _direct_round(_deploy(tmp_path))
    for u in srv.cohort:  # all five answers are in the inbox before the deadline ...
        srv.inbox.put_nowait(_inbound(u, protocol_frame(encode(answers[u]))))
    receive = sr.receive

    def busy(m):  # ... but the loop is busy (large masked inputs, many clients)
        time.sleep(0.03)
        return receive(m)

    sr.receive = busy
    _run(srv._collect(state, set(srv.cohort), 0.05))
    assert state.dropped == {}, cap.events("late-message-ignored")
    assert sr.u1 == frozenset(srv.cohort)


_UNSERVABLE = {
    "three-clients": (dict(n=3), None, None),
    "four-clients-malicious": (dict(n=4, mode="malicious"), None, None),
    "threshold-above-degree": ({}, "[round]\n", "[round]\nthreshold = 9\n"),
    "min-survivors-above-cohort": ({}, "[round]\n", "[round]\nmin_survivors = 9\n"),
    "dp-n-min-above-cohort": (dict(dp=True), "[dp]\n", "[dp]\nmin_survivors = 9\n"),
}


@pytest.mark.parametrize("case", sorted(_UNSERVABLE))
def test_settings_refuse_round_parameters_the_cohort_cannot_meet(tmp_path, case):
    opts, old, new = _UNSERVABLE[case]
    d = _deploy(tmp_path, **opts)
    if old is not None:
        for name in ("server.toml", "client-0.toml"):
            _edit(d / name, old, new)
    with pytest.raises(SettingsError):
        load_server(d / "server.toml")
    with pytest.raises(SettingsError):
        load_client(d / "client-0.toml")


@pytest.mark.parametrize("party,opts,old,new", [
    ("server", dict(n=3), None, None),
    ("server", dict(n=3, dp=True), None, None),
    ("server", dict(dp=True), "[dp]\n", "[dp]\nmin_survivors = 9\n"),
    ("client", dict(n=3, dp=True), None, None),
])
def test_cli_exits_2_on_round_parameters_the_cohort_cannot_meet(tmp_path, party, opts, old, new):
    from protocol.cli import main

    d = _deploy(tmp_path, **opts)
    _edit(d / "server.toml", "join_timeout = 60.0", "join_timeout = 0.0")
    _edit(d / "client-0.toml", "connect_timeout = 30.0", "connect_timeout = 1.0")
    if old is not None:
        for name in ("server.toml", "client-0.toml"):
            _edit(d / name, old, new)
    if party == "server":
        argv = ["server", "--config", str(d / "server.toml")]
    else:
        argv = ["client", "--config", str(d / "client-0.toml"), "--input",
                str(d / "update-0.npy")]
    assert main(argv) == 2


def test_ledger_write_failure_aborts_the_round_with_an_exit_code(tmp_path, monkeypatch):
    from protocol.net import server as net_server

    class FullDisk(Ledger):
        def record_round(self, **kw):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(net_server, "Ledger", FullDisk)  # the server's ledger only
    d = _deploy(tmp_path, dp=True)
    srv, _ = _server(d)
    code, _, clients = _run(_play(srv, lambda port: [_client(d, u, port) for u in range(5)]))
    assert isinstance(code, int) and code != 0, f"escaped run(): {code!r}"
    assert all(cap.events("round-aborted") for _, cap in clients)


def test_unwritable_output_dir_gives_an_exit_code_not_a_traceback(tmp_path):
    d = _deploy(tmp_path / "d")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    srv, cap = _server(d, output_dir=blocker)
    code, _, _ = _run(_play(srv, lambda port: [_client(d, u, port) for u in range(5)]))
    assert isinstance(code, int), f"escaped run(): {code!r}"
    assert cap.events("exit")


def test_clients_hear_goodbye_when_the_server_stops_after_an_abort(tmp_path):
    d = _deploy(tmp_path)
    srv, _ = _server(d, join_timeout=0.3)  # only client 0 joins: too-few-clients
    code, served, _ = _run(_play(srv, lambda port: [_client(d, 0, port)]))
    assert code == EXIT_ABORTED
    assert isinstance(served[0], str), f"client saw {served[0]!r} instead of the server's BYE"


@pytest.fixture(scope="module")
def refused_input_run(tmp_path_factory):
    """Client 0 runs the command line's run_client with an input the ring refuses (a value
    >= 2^32); clients 1..4 are honest. Returns (exit code, client 0's log, its results)."""
    d = _deploy(tmp_path_factory.mktemp("refused"), deadline=1.0)
    bad = np.zeros(16, dtype=np.uint64)
    bad[5] = 123456789012345

    async def scenario():
        srv, _ = _server(d)
        task = await _start(srv)
        good = [_client(d, u, srv.port) for u in range(1, 5)]
        await asyncio.gather(*(c.connect() for c, _ in good))
        serving = [asyncio.create_task(c.serve()) for c, _ in good]
        cs = dataclasses.replace(load_client(d / "client-0.toml"),
                                 server=f"127.0.0.1:{srv.port}", log=None)
        cap, results = _Cap(), []
        code = await run_client(cs, bad, log=JsonLog(cap, party="client-0"),
                                on_result=results.append)
        await task
        await asyncio.gather(*serving, return_exceptions=True)
        for c, _ in good:
            await c.close()
        return code, cap.getvalue(), results

    return _run(scenario())


def test_cli_client_whose_input_is_refused_does_not_exit_0(refused_input_run):
    code, _, results = refused_input_run
    assert code != 0 or results, "exit 0, and no round result or failure was ever reported"


def test_refused_input_values_do_not_reach_the_log(refused_input_run):
    _, log, _ = refused_input_run
    assert "round-refused" in log or '"code":2' in log  # the refusal itself is logged ...
    assert "123456789012345" not in log  # ... but not the private value


def test_client_is_not_charged_for_a_shares_delivery_it_refuses(tmp_path):
    d = _deploy(tmp_path, dp=True)

    async def scenario():
        c, cap = _client(d, 0, 1)
        sent = _capture_sends(c)
        c._open_ledger()
        sr = ServerRound(c.round_config, c.s.registry.cohort, c.plan.encoding.padded_dim,
                         session_id=SID, round=0)
        await c._on_message(next(m for m in sr.start() if m.recipient == 0))
        assert [type(decode(f[2:])).__name__ for f in sent] == ["AdvertiseKeys"]
        await c._on_message(SharesDelivery(SID, 0, 0, ()))  # before any KeysBroadcast
        charged = c.ledger.rounds
        await c.close()
        return charged, sent, cap

    charged, sent, cap = _run(scenario())
    # refused: no protocol message left the client, only its DECLINE of the round
    assert len(sent) == 2 and decode_frame(sent[1])[0] == DECLINE
    assert cap.events("round-refused")
    assert charged == 0


@pytest.mark.parametrize("frame", [
    Bye("line one\nline two"),
    Abort(SID, 0, "unmasking", "tab\there"),
    Result(SID, 0, (3, 1), np.zeros(2)),
    Result(SID, 0, (-1,), np.zeros(2)),
    Welcome(1, b"\xaa" * 31, 0),
    Welcome(-1, b"\xaa" * 32, 0),
    Abort(b"short", 0, "x", "y"),
], ids=["bye-newline", "abort-tab", "unsorted-survivors", "negative-survivor",
        "short-digest", "negative-id", "short-session"])
def test_encode_frame_is_strict(frame):
    try:
        data = encode_frame(frame)
    except WireError:
        return  # refused with the one error type: fine
    decode_frame(data)  # whatever the encoder emits, the decoder accepts


@pytest.mark.parametrize("name,old,new", [
    ("server.toml", "port = 0\n", "port = 0\nmax_message_bytes = 100\n"),
    ("client-0.toml", "connect_timeout = 30.0", "connect_timeout = 30.0\ninput_timeout = 0.0"),
], ids=["message-bound-below-every-message", "input-timeout-zero"])
def test_settings_refuse_values_that_make_every_round_fail(tmp_path, name, old, new):
    d = _deploy(tmp_path)
    _edit(d / name, old, new)
    with pytest.raises(SettingsError):
        if name == "server.toml":
            AggregationServer(load_server(d / name), JsonLog(io.StringIO(), party="server"))
        else:
            load_client(d / name)


def test_existing_ledger_with_a_larger_budget_than_configured_is_refused(tmp_path):
    d = _deploy(tmp_path, dp=True)
    srv, _ = _server(d)
    s = srv.s
    s.ledger.parent.mkdir(parents=True, exist_ok=True)
    Ledger.create(s.ledger, Budget(50.0, 1e-2), owner="server",
                  signing_key=load_signing_key(s.ledger_key)).close()
    try:
        ledger, _ = srv._open_ledger()
    except (SettingsError, DPError, ProtocolError):
        return  # refused: fine
    try:
        assert ledger.budget.epsilon <= s.dp.epsilon and ledger.budget.delta <= s.dp.delta, (
            f"configured {s.dp.budget}, enforced {ledger.budget}")
    finally:
        ledger.close()


# =========================================================================================
# Checked and found sound (coverage the process tests lack)
# =========================================================================================
def test_dp_write_ahead_order_over_the_network(tmp_path):
    """The server's ledger holds the round before any UnmaskRequest reaches a client; each
    client is charged exactly once, after SharesDelivery arrives and before MaskedInput leaves."""
    d = _deploy(tmp_path, dp=True)
    srv, cap = _server(d)
    ledger_path = srv.s.ledger
    seen: dict[str, list] = {"server": [], "at_shares": [], "at_masked": []}

    class Probe(AsyncClient):
        async def _on_message(self, msg):
            if isinstance(msg, UnmaskRequest):
                seen["server"].append(len(ledger_path.read_bytes().splitlines()))
            if isinstance(msg, SharesDelivery):
                seen["at_shares"].append(self.ledger.rounds)
            await super()._on_message(msg)

        async def _send(self, frame):
            if frame[1] == PROTOCOL and isinstance(decode(frame[2:]), MaskedInput):
                seen["at_masked"].append(self.ledger.rounds)
            await super()._send(frame)

    code, served, _ = _run(_play(srv, lambda port: [_client(d, u, port, cls=Probe)
                                                    for u in range(5)]))
    assert code == 0 and served == ["all rounds done"] * 5
    assert seen["server"] == [2] * 5  # open entry + this round, before the first request
    assert seen["at_shares"] == [0] * 5 and seen["at_masked"] == [1] * 5
    assert cap.events("ledger-committed")[0]["survivors"] == 5


def test_server_refuses_impersonation_replay_stale_and_foreign_frames(tmp_path):
    srv, _, sr, state, ans = _direct_round(_deploy(tmp_path))
    pending = set(srv.cohort)
    srv._handle(state, pending, _inbound(1, protocol_frame(encode(ans[2]))))  # in 2's name
    srv._handle(state, pending, _inbound(2, protocol_frame(encode(ans[2]))))  # 2 itself
    srv._handle(state, pending, _inbound(3, protocol_frame(encode(ans[3]))))
    srv._handle(state, pending, _inbound(3, protocol_frame(encode(ans[3]))))  # second copy
    stale = dataclasses.replace(ans[4], session_id=bytes(32))
    srv._handle(state, pending, _inbound(4, protocol_frame(encode(stale))))
    result = encode_frame(Result(SID, 0, (0,), np.zeros(16, np.uint32)))
    srv._handle(state, pending, _inbound(0, result))  # a server-to-client kind
    assert sr.u1 == {2, 3} and pending == set()
    assert "in the name of client 2" in state.dropped[1]
    assert "replayed message" in state.dropped[3]
    assert "wrong session or round" in state.dropped[4]
    assert "garbage" in state.dropped[0]
    assert 2 not in state.dropped and srv.peers[2].status is None
    assert all(srv.peers[u].status[0] is grpc.StatusCode.INVALID_ARGUMENT for u in (0, 1, 3, 4))
    # a connection that is not the client's current one is ignored, not punished
    srv._handle(state, set(), _Inbound(2, 999, b"garbage"))
    assert 2 not in state.dropped


def test_server_handler_turns_any_bytes_into_a_violation_never_an_exception(tmp_path):
    srv, _, sr, _, ans = _direct_round(_deploy(tmp_path))
    rng = random.Random(5)
    base = protocol_frame(encode(ans[0]))
    for _ in range(600):
        g = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            if op < 0.4 and g:
                g[rng.randrange(len(g))] = rng.randrange(256)
            elif op < 0.7 and g:
                del g[rng.randrange(len(g)):]
            else:
                g += os.urandom(rng.randint(1, 8))
        state = _RoundState(sr, 0, SID)
        srv._handle(state, set(), _inbound(0, bytes(g)))  # must not raise


def test_transport_frames_refuse_mutations_with_wire_error_only():
    sid = bytes(32)
    good = [encode_frame(Welcome(1, b"a" * 32, 2)),
            encode_frame(Result(sid, 1, (1, 2), np.arange(3, dtype=np.uint32))),
            encode_frame(Result(sid, 1, (), np.zeros(0))),
            encode_frame(Abort(sid, 1, "masked_input", "too-few-survivors")),
            encode_frame(Bye("z"))]
    rng = random.Random(11)
    for _ in range(5000):
        g = bytearray(rng.choice(good))
        op = rng.random()
        if op < 0.35:
            g[rng.randrange(len(g))] = rng.randrange(256)
        elif op < 0.7:
            g = g[:rng.randrange(len(g) + 1)]
        else:
            g += bytes(rng.randrange(256) for _ in range(rng.randint(1, 5)))
        with contextlib.suppress(WireError):
            decode_frame(bytes(g))
    with pytest.raises(WireError):
        decode_frame(bytearray(encode_frame(Bye("x"))))  # bytes only


def test_restarted_client_refuses_a_replayed_setup(tmp_path):
    d = _deploy(tmp_path)

    async def scenario():
        first, _ = _client(d, 0, 1)
        sent = _capture_sends(first)
        cohort, dim = first.s.registry.cohort, first.s.dim
        setup = next(m for m in ServerRound(first.round_config, cohort, dim, session_id=SID,
                                            round=0).start() if m.recipient == 0)
        await first._on_message(setup)
        assert len(sent) == 1
        await first.close()
        again, cap = _client(d, 0, 1)  # a restart: same state_dir
        sent = _capture_sends(again)
        await again._on_message(setup)
        assert [decode_frame(f)[0] for f in sent] == [DECLINE]  # a decline, nothing signed
        assert "replayed session" in cap.events("round-refused")[0]["reason"]
        fresh = next(m for m in ServerRound(again.round_config, cohort, dim,
                                            session_id=os.urandom(32), round=0).start()
                     if m.recipient == 0)
        await again._on_message(fresh)
        assert len(sent) == 2 and decode_frame(sent[1])[0] == PROTOCOL  # then its AdvertiseKeys
        await again.close()

    _run(scenario())


def test_client_holding_another_members_certificate_refuses_the_server(tmp_path):
    d = _deploy(tmp_path)

    async def scenario():
        srv, cap = _server(d, join_timeout=10.0)
        task = await _start(srv)
        c, _ = _client(d, 1, srv.port, cert=d / "client-0.pem", key=d / "client-0.key")
        with pytest.raises(ServerRefused, match="client 0, not 1"):
            await c.connect()
        await c.close()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        return cap

    cap = _run(scenario())
    assert [e["client"] for e in cap.events("client-connected")] == [0]  # the registry's id


def test_config_digest_ignores_spelling_but_not_content(tmp_path):
    d = _deploy(tmp_path, dp=True)
    base = load_client(d / "client-1.toml").digest()
    assert load_server(d / "server.toml").digest() == base
    # ints for floats, upper-case fingerprints, registry entries in another order: same digest
    reg = (d / "registry.toml").read_text()
    head, *blocks = reg.split("[[client]]")
    (d / "registry.toml").write_text(head + "".join(
        "[[client]]" + b.replace(b.split('cert_sha256 = "')[1][:64],
                                 b.split('cert_sha256 = "')[1][:64].upper())
        for b in reversed(blocks)))
    _edit(d / "client-1.toml", "epsilon = 8.0", "epsilon = 8")
    assert load_client(d / "client-1.toml").digest() == base
    # swapping two clients' certificates is another deployment
    fp0 = load_client(d / "client-1.toml").registry.members[0].cert_sha256
    fp1 = load_client(d / "client-1.toml").registry.members[1].cert_sha256
    text = (d / "registry.toml").read_text()
    text = text.replace(fp0.upper(), "@@").replace(fp1.upper(), fp0).replace("@@", fp1)
    (d / "registry.toml").write_text(text)
    assert load_client(d / "client-1.toml").digest() != base


@pytest.mark.parametrize("name,old,new,why", [
    ("server.toml", "port = 0", "port = true", "port must be int"),
    ("server.toml", "join_timeout = 60.0", "join_timeout = inf", "finite"),
    ("server.toml", "join_timeout = 60.0", "join_timeout = nan", "finite"),
    ("server.toml", "[deadlines]\n", "[deadlines]\nsetup = 1.0\n", "unknown keys"),
    ("server.toml", "[round]\n", "[round]\ncomplete_graph = 1\n", "complete_graph must be bool"),
    ("server.toml", "[round]\n", "[round]\nsalt = 1\n", "unknown keys"),
    ("server.toml", 'mechanism = "skellam"', 'mechanism = "laplace"', "mechanism"),
    ("server.toml", "delta = 1e-05", "delta = 1.5", "delta"),
    ("server.toml", 'ca = "ca.pem"', "ca = 5", "ca must be str"),
    ("client-0.toml", "id = 0", "id = -1", "outside"),
    ("client-0.toml", "connect_timeout = 30.0", 'connect_timeout = "30"', "must be float"),
])
def test_bad_settings_name_the_key(tmp_path, name, old, new, why):
    d = _deploy(tmp_path, dp=True)
    _edit(d / name, old, new)
    loader = load_server if name == "server.toml" else load_client
    with pytest.raises(SettingsError, match=why):
        loader(d / name)


@pytest.mark.parametrize("value", [np.uint64(7), np.int32(3), [1, True], (1, b"x"), {1: 2}])
def test_log_refuses_numpy_scalars_bools_in_id_lists_and_containers(value):
    with pytest.raises(TypeError, match="not loggable"):
        JsonLog(io.StringIO(), party="x")("event", field=value)


def test_decline_drops_at_once_and_foreign_declines_are_violations(tmp_path):
    """A DECLINE of the current round is a dropout at once (the connection stays); one late
    decline of the previous round is tolerated; a decline of any other session, or a second
    late one, is a violation (dropped, connection closed), so declines cannot be flooded."""
    srv, _, sr, state, ans = _direct_round(_deploy(tmp_path))
    previous = bytes([1]) * 32
    srv._previous_session = previous
    pending = set(srv.cohort)
    srv._handle(state, pending, _inbound(0, encode_frame(Decline(SID, 0, "over budget"))))
    assert state.dropped[0] == "declined: over budget" and srv.peers[0].status is None
    srv._handle(state, pending, _inbound(1, encode_frame(Decline(previous, 0, "late"))))
    assert 1 not in state.dropped and srv.peers[1].status is None
    srv._handle(state, pending, _inbound(1, encode_frame(Decline(previous, 0, "again"))))
    assert "not the current or previous" in state.dropped[1]
    assert srv.peers[1].status[0] is grpc.StatusCode.INVALID_ARGUMENT
    srv._handle(state, pending, _inbound(2, encode_frame(Decline(bytes(32), 0, "foreign"))))
    assert "not the current or previous" in state.dropped[2]
    assert pending == {3, 4}
