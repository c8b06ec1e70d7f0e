"""The transport at scale: time limits derived from the cohort, admission logged while the
cohort fills, clients that retry within their connect timeout, the inbox's byte budget and
masked inputs decoded off the event loop (docs/architecture.md section 4)."""

from __future__ import annotations

import asyncio
import hashlib
import threading

import numpy as np
import pytest

from protocol.net import server as server_module
from protocol.net.client import AsyncClient, ConnectionLost
from protocol.net.errors import ExitCode, SettingsError
from protocol.net.frames import Bye, Welcome, encode_frame
from protocol.net.server import INBOX_BYTES, _decode
from protocol.net.settings import (
    ADMISSION_RATE_FLOOR,
    BASE_COHORT,
    BASE_WORDS,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DEADLINES,
    DEFAULT_JOIN_TIMEOUT,
    Member,
    Registry,
    derived_timeouts,
    load_client,
    load_registry,
    load_server,
)
from protocol.transitions import OPENS
from tests.net.inprocess_harness import (
    deploy_demo,
    edit_file,
    local_client,
    local_server,
    play,
    run_bounded,
    start_server,
)

pytestmark = pytest.mark.timeout(120)


# -- time limits -----------------------------------------------------------------------------
def test_derived_timeouts_are_the_constants_for_a_small_cohort():
    t = derived_timeouts(8, 1000)
    assert t.deadlines == DEFAULT_DEADLINES
    assert t.connect == DEFAULT_CONNECT_TIMEOUT + 8 / ADMISSION_RATE_FLOOR
    assert t.join == DEFAULT_JOIN_TIMEOUT + 8 / ADMISSION_RATE_FLOOR


@pytest.mark.parametrize("n,words", [(1000, 10_000), (2000, 10_000), (1000, 100_000),
                                     (4000, 1_000_000)])
def test_derived_timeouts_grow_with_the_cohort_and_the_vector(n, words):
    t = derived_timeouts(n, words)
    cohort, vector = n / BASE_COHORT, max(1.0, words / BASE_WORDS)
    for st, base in DEFAULT_DEADLINES.items():
        scale = cohort * (vector if st in ("masked_input", "unmasking") else 1.0)
        assert t.deadlines[st] == pytest.approx(base * scale)
    # the last of n clients connecting at once is admitted within its timeout at the floor
    assert t.connect >= n / ADMISSION_RATE_FLOOR + DEFAULT_CONNECT_TIMEOUT
    assert t.join >= n / ADMISSION_RATE_FLOOR + DEFAULT_JOIN_TIMEOUT


def test_settings_derive_the_time_limits_unless_the_file_sets_them(tmp_path):
    d = deploy_demo(tmp_path, deadline=None)
    server, client = load_server(d / "server.toml"), load_client(d / "client-0.toml")
    want = derived_timeouts(5, 16)
    assert server.deadlines == want.deadlines and server.join_timeout == want.join
    assert client.connect_timeout == want.connect
    edit_file(d / "server.toml", "[deadlines]\n", "[deadlines]\nmasked_input = 7.5\n")
    edit_file(d / "server.toml", "between_rounds = 2.0", "join_timeout = 3.0\nbetween_rounds = 2.0")
    edit_file(d / "client-0.toml", "\ndim = ", "\nconnect_timeout = 4.0\ndim = ")
    server, client = load_server(d / "server.toml"), load_client(d / "client-0.toml")
    assert server.deadlines == {**want.deadlines, "masked_input": 7.5}
    assert server.join_timeout == 3.0 and client.connect_timeout == 4.0


def test_demo_files_leave_the_time_limits_to_the_derivation(tmp_path):
    d = deploy_demo(tmp_path, deadline=None)
    for name in ("server.toml", "client-0.toml"):
        live = [ln for ln in (d / name).read_text().splitlines() if not ln.startswith("#")]
        assert not any(ln.split("=")[0].strip() in ("join_timeout", "connect_timeout",
                                                    *DEFAULT_DEADLINES) for ln in live), name


# -- the registry ----------------------------------------------------------------------------
def _row(u: int, fp: str) -> str:
    return f'\n[[client]]\nid = {u}\ncert_sha256 = "{fp}"\n'


def test_registry_finds_every_member_by_fingerprint_and_no_one_else(tmp_path):
    n = 3000
    fps = [hashlib.sha256(u.to_bytes(4, "big")).hexdigest() for u in range(n)]
    rows = "".join(_row(u, fps[u]) for u in range(n))
    (tmp_path / "registry.toml").write_text(rows)
    reg = load_registry(tmp_path / "registry.toml")
    assert len(reg.members) == n
    assert all(reg.by_fingerprint(fps[u]).id == u for u in range(n))
    assert reg.by_fingerprint("0" * 64) is None
    (tmp_path / "registry.toml").write_text(rows + _row(n, fps[1234]))
    with pytest.raises(SettingsError, match=f"client {n}: certificate already registered"):
        load_registry(tmp_path / "registry.toml")


def test_registry_built_in_code_is_indexed_too():
    reg = Registry({u: Member(u, f"{u:064x}", None) for u in range(3)})
    assert reg.by_fingerprint(f"{2:064x}").id == 2 and reg.by_fingerprint("x") is None


# -- connecting ------------------------------------------------------------------------------
def test_client_retries_until_the_server_listens(tmp_path):
    """A client started before its server retries with backoff and joins once it listens."""
    d = deploy_demo(tmp_path)
    port = _free_port()
    srv, cap = local_server(d, port=port)

    async def scenario():
        clients = [local_client(d, u, port, connect_timeout=20.0) for u in range(5)]
        early = asyncio.create_task(clients[0][0].connect())
        await asyncio.sleep(1.0)  # nothing listens yet: the first attempts fail
        task = await start_server(srv)
        await early
        await asyncio.gather(*(c.connect() for c, _ in clients[1:]))
        serving = [asyncio.create_task(c.serve()) for c, _ in clients]
        code = await task
        await asyncio.gather(*serving, return_exceptions=True)
        for c, _ in clients:
            await c.close()
        return code, clients

    code, clients = run_bounded(scenario(), 60)
    assert code == ExitCode.OK
    retries = clients[0][1].events("connect-retry")
    assert retries and all(r["retry_in"] > 0 for r in retries)
    assert clients[0][1].events("connected")[0]["attempts"] == len(retries) + 1
    assert cap.events("round-complete")[0]["survivors"] == [0, 1, 2, 3, 4]


def test_client_gives_up_after_its_connect_timeout(tmp_path):
    d = deploy_demo(tmp_path)
    c, cap = local_client(d, 0, _free_port(), connect_timeout=1.5)

    async def attempt():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(ConnectionLost, match="gave up after [0-9]+ attempts"):
            await c.connect()
        return loop.time() - t0

    took = run_bounded(attempt(), 30)
    assert 1.5 <= took < 10.0
    assert len(cap.events("connect-retry")) >= 2


def test_server_logs_admission_progress_while_the_cohort_fills(tmp_path, monkeypatch):
    monkeypatch.setattr(server_module, "ADMISSION_LOG_EVERY", 0.2)
    d = deploy_demo(tmp_path)
    srv, cap = local_server(d, join_timeout=20.0)

    async def scenario():
        task = await start_server(srv)
        clients = [local_client(d, u, srv.port) for u in range(5)]
        await asyncio.gather(*(c.connect() for c, _ in clients[:2]))
        await asyncio.sleep(1.0)
        await asyncio.gather(*(c.connect() for c, _ in clients[2:]))
        serving = [asyncio.create_task(c.serve()) for c, _ in clients]
        code = await task
        await asyncio.gather(*serving, return_exceptions=True)
        for c, _ in clients:
            await c.close()
        return code

    assert run_bounded(scenario(), 60) == ExitCode.OK
    filling = cap.events("admission")
    assert filling and {e["connected"] for e in filling} == {2}
    assert all(e["cohort"] == 5 and e["seconds"] > 0 for e in filling)
    joined = cap.events("cohort-joined")
    assert joined[0]["connected"] == 5 and joined[0]["per_second"] > 0


# -- the inbox's budget and decoding off the loop --------------------------------------------
def test_inbox_budget_makes_a_reader_wait_until_the_round_loop_drains(tmp_path, monkeypatch):
    monkeypatch.setattr(server_module, "INBOX_BYTES", 1000)
    d = deploy_demo(tmp_path)
    srv, _ = local_server(d)

    async def scenario():
        await srv._hold(800)
        second = asyncio.create_task(srv._hold(300))
        await asyncio.sleep(0.05)
        blocked = not second.done()
        srv.release(server_module._Inbound(0, 1, b"x", held=800))
        await asyncio.wait_for(second, 1.0)
        big = asyncio.create_task(srv._hold(5000))  # larger than the budget: waits for empty
        await asyncio.sleep(0.05)
        waited = not big.done()
        srv.release(server_module._Inbound(0, 1, b"x", held=300))
        await asyncio.wait_for(big, 1.0)
        return blocked, waited, srv._inbox_bytes

    assert run_bounded(scenario(), 10) == (True, True, 5000)
    assert INBOX_BYTES >= 16 << 20


def test_masked_inputs_decoded_on_worker_threads_give_the_exact_sum(tmp_path, monkeypatch):
    """Every protocol frame decoded on the server's worker threads (a threshold of 0), in a
    round with a dropout: the aggregate is the exact sum of the survivors' inputs."""
    monkeypatch.setattr(server_module, "DECODE_OFF_LOOP_BYTES", 0)
    calls = []
    real = server_module._decode
    monkeypatch.setattr(server_module, "_decode",
                        lambda data: calls.append(threading.current_thread().name) or real(data))
    d = deploy_demo(tmp_path)
    srv, cap = local_server(d, workers=2, join_timeout=2.0, output_dir=tmp_path / "out")

    def make(port):
        return [local_client(d, u, port) for u in range(4)]  # client 4 never connects

    code, _, _ = run_bounded(play(srv, make), 60)
    assert code == ExitCode.OK
    assert sum(name.startswith("secagg-decode") for name in calls) >= 4  # the masked inputs
    assert cap.events("round-complete")[0]["survivors"] == [0, 1, 2, 3]
    want = sum(np.load(d / f"update-{u}.npy").astype(np.uint64) for u in range(4))
    got = np.load(tmp_path / "out" / "round-0.npy")
    assert np.array_equal(got, (want % (1 << 32)).astype(np.uint32))
    assert cap.events("listening")[0]["workers"] == 2
    assert cap.events("cohort-incomplete")[0]["connected"] == 4


def test_decoding_a_refused_frame_names_the_problem():
    kind, why, _ = _decode(b"\x01\x01garbage")
    assert kind is None and isinstance(why, str) and why
    kind, why, _ = _decode(encode_frame(Welcome(0, bytes(32), 0)))
    assert kind is None and "not for the server" in why


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



# -- MaskedInput's requests, paced -----------------------------------------------------------
class _SilentAtMaskedInput(AsyncClient):
    """Stays connected but never answers the request for its masked input (a hung client)."""

    async def _on_message(self, msg) -> None:
        if OPENS.get(type(msg)) == "masked_input":
            return
        await super()._on_message(msg)


def _paced_round(tmp_path, monkeypatch, hung: set[int]):
    monkeypatch.setattr(server_module, "MIN_PACE", 1)
    monkeypatch.setattr(server_module, "PACE_BYTES", 1)  # one credit
    monkeypatch.setattr(server_module, "PACE_EXPIRY", 0.3)
    owed: list[int] = []
    real = server_module._NetRound._top_up

    def top_up(self, run):
        real(self, run)
        owed.append(len(self._asked))

    monkeypatch.setattr(server_module._NetRound, "_top_up", top_up)
    d = deploy_demo(tmp_path)
    srv, cap = local_server(d, output_dir=tmp_path / "out")

    def make(port):
        return [local_client(d, u, port, cls=_SilentAtMaskedInput if u in hung else AsyncClient)
                for u in range(5)]

    code, _, _ = run_bounded(play(srv, make), 60)
    return code, cap, owed, d


def test_masked_input_requests_are_paced_by_the_credits(tmp_path, monkeypatch):
    code, cap, owed, d = _paced_round(tmp_path, monkeypatch, hung=set())
    assert code == ExitCode.OK
    assert owed and max(owed) == 1  # never two clients owing a masked input at once
    assert cap.events("round-complete")[0]["survivors"] == [0, 1, 2, 3, 4]
    want = sum(np.load(d / f"update-{u}.npy").astype(np.uint64) for u in range(5))
    got = np.load(tmp_path / "out" / "round-0.npy")
    assert np.array_equal(got, (want % (1 << 32)).astype(np.uint32))


def test_a_hung_client_holds_its_credit_only_until_it_expires(tmp_path, monkeypatch):
    """Client 0 is asked first and never answers: the others are still asked (its request
    expires) and the round completes without it, at the stage's deadline."""
    code, cap, _, _ = _paced_round(tmp_path, monkeypatch, hung={0})
    assert code == ExitCode.OK
    assert cap.events("round-complete")[0]["survivors"] == [1, 2, 3, 4]
    dropped = cap.events("client-dropped")
    assert [(e["client"], e["stage"]) for e in dropped] == [(0, "masked_input")]


def test_a_registry_file_is_parsed_once_while_it_is_unchanged(tmp_path):
    fps = [hashlib.sha256(u.to_bytes(4, "big")).hexdigest() for u in range(5)]
    path = tmp_path / "registry.toml"
    path.write_text("".join(_row(u, fps[u]) for u in range(4)))
    first = load_registry(path)
    assert load_registry(path) is first
    with pytest.raises(TypeError):
        first.members[9] = first.members[0]  # shared, so read-only
    path.write_text("".join(_row(u, fps[u]) for u in range(5)))  # another size and mtime
    again = load_registry(path)
    assert again is not first and len(again.members) == 5
    path.unlink()
    with pytest.raises(SettingsError, match="cannot read"):
        load_registry(path)


def test_every_client_gets_the_aggregate_and_the_goodbye_before_the_server_stops(
        tmp_path, monkeypatch):
    """Writes of large frames one at a time (every frame counted large): the server still
    waits for each connection's queue before it cancels the streams."""
    monkeypatch.setattr(server_module, "SENDING_LARGE", 1)
    monkeypatch.setattr(server_module, "LARGE_FRAME_BYTES", 0)
    d = deploy_demo(tmp_path)
    srv, _ = local_server(d)
    results = []

    def make(port):
        clients = [local_client(d, u, port) for u in range(5)]
        for c, _ in clients:
            c.on_result = results.append
        return clients

    code, served, _ = run_bounded(play(srv, make), 60)
    assert code == ExitCode.OK
    assert served == ["all rounds done"] * 5  # the goodbye, not a cancelled stream
    assert len(results) == 5 and all(r.survivors == (0, 1, 2, 3, 4) for r in results)


def test_a_client_connecting_while_the_server_stops_is_told_goodbye(tmp_path):
    d = deploy_demo(tmp_path)
    srv, _ = local_server(d)

    async def scenario():
        task = await start_server(srv)
        srv._bye = encode_frame(Bye("server stopping"))  # as the run's end sets it
        c, _ = local_client(d, 0, srv.port)
        await c.connect()
        reason = await asyncio.wait_for(c.serve(), 10)
        await c.close()
        task.cancel()
        return reason

    assert run_bounded(scenario(), 30) == "server stopping"


def test_a_client_that_stops_reading_is_taken_for_gone_and_frees_its_write_slot(
        tmp_path, monkeypatch):
    """The attack: a registered client keeps its stream open and never reads, so gRPC's
    flow control blocks the server's writes to it; without a write timeout it would hold a
    large-write slot (and the server's exit) for ever."""
    import grpc

    from protocol.net.service import PATH, client_options
    from protocol.net.tls import read_pem

    monkeypatch.setattr(server_module, "WRITE_TIMEOUT", 0.5)
    monkeypatch.setattr(server_module, "WRITE_RATE_FLOOR", 1 << 40)
    monkeypatch.setattr(server_module, "SENDING_LARGE", 1)
    d = deploy_demo(tmp_path)
    srv, _ = local_server(d, join_timeout=30.0)
    cs = load_client(d / "client-0.toml")

    async def scenario():
        task = await start_server(srv)
        creds = grpc.ssl_channel_credentials(read_pem(cs.ca, "ca"), read_pem(cs.key, "key"),
                                             read_pem(cs.cert, "cert"))
        channel = grpc.aio.secure_channel(f"127.0.0.1:{srv.port}", creds,
                                          options=client_options(None, 1 << 24))
        call = channel.stream_stream(PATH)()
        await call.read()  # the WELCOME; then never read again
        peer = srv.peers[0]
        frame = b"\x01\x05" + bytes(1 << 20)
        for _ in range(40):
            peer.outbox.put_nowait(frame)
        for _ in range(200):
            if peer.status is not None:
                break
            await asyncio.sleep(0.05)
        status = peer.status
        free = srv._sending_large.locked() is False
        task.cancel()
        await channel.close()
        return status, free

    status, free = run_bounded(scenario(), 60)
    assert status is not None and status[1] == "not reading: a write timed out"
    assert free
