"""A server and clients in the test's own process: the real AggregationServer and AsyncClient
over gRPC + mutual TLS on 127.0.0.1 (port 0) in one asyncio loop, or their handlers called
directly. The process tests use :mod:`net_harness` instead."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from pathlib import Path

import numpy as np

from protocol.client import ClientRound
from protocol.driver import RoundDriver, StageRun
from protocol.net.certs import DemoOptions, write_demo
from protocol.net.client import AsyncClient
from protocol.net.jsonlog import JsonLog
from protocol.net.server import AggregationServer, _Inbound, _NetRound, _Peer
from protocol.net.settings import load_client, load_server
from protocol.server import ServerRound
from protocol.transitions import Stage

SID = bytes(range(32))


class LogCapture(io.StringIO):
    """A JsonLog target whose lines can be read back."""

    def events(self, event: str | None = None) -> list[dict]:
        rows = [json.loads(x) for x in self.getvalue().splitlines() if x.strip()]
        return [r for r in rows if event is None or r["event"] == event]


def deploy_demo(tmp: Path, n: int = 5, **kw) -> Path:
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


def edit_file(path: Path, old: str, new: str) -> None:
    """Replace the first ``old`` in the file (which must hold it) by ``new``."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def local_server(d: Path, **kw) -> tuple[AggregationServer, LogCapture]:
    """The deployment's server with short waits and its log captured; ``kw`` replaces its
    settings."""
    s = load_server(d / "server.toml")
    kw.setdefault("join_timeout", 5.0)
    kw.setdefault("between_rounds", 0.3)
    kw.setdefault("output_dir", None)
    kw.setdefault("log", None)
    cap = LogCapture()
    return AggregationServer(dataclasses.replace(s, **kw), JsonLog(cap, party="server")), cap


def local_client(d: Path, u: int, port, *, cls=AsyncClient, update=None, **kw
                 ) -> tuple[AsyncClient, LogCapture]:
    """Client u of the deployment, for a server on ``port``: an instance of ``cls`` whose
    input is ``update`` (default: its example input) and whose log is captured; ``kw``
    replaces its settings."""
    cs = load_client(d / f"client-{u}.toml")
    kw.setdefault("log", None)
    cs = dataclasses.replace(cs, server=f"127.0.0.1:{port}", **kw)
    x = np.load(d / f"update-{u}.npy") if update is None else update

    async def provider(session, rnd):
        return x, None

    cap = LogCapture()
    return cls(cs, log=JsonLog(cap, party=f"client-{u}"), provider=provider), cap


async def start_server(srv: AggregationServer) -> asyncio.Task:
    """Start ``srv.run()`` as a task and wait until it listens (or has already ended)."""
    task = asyncio.create_task(srv.run())
    while srv.port is None and not task.done():
        await asyncio.sleep(0.005)
    return task


async def play(srv: AggregationServer, make_clients) -> tuple[object, list, list]:
    """Run the server with the clients make_clients(port) gives; (exit code or the exception
    that escaped run(), what each client's serve() returned or raised, the clients)."""
    task = await start_server(srv)
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


def run_bounded(coro, timeout: float = 40.0):
    """Run a coroutine in a fresh event loop, failing after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def capture_sends(client: AsyncClient) -> list[bytes]:
    """Replace the client's sending by a list that collects the frames it sends."""
    sent: list[bytes] = []

    async def send(frame: bytes) -> None:
        sent.append(frame)

    client._send = send
    return sent


class DirectRound:
    """One open AdvertiseKeys stage of a started round on :func:`direct_round`'s server, with
    the server's own per-round host: frames go straight to its handler and collector."""

    def __init__(self, srv, sr, setups, deadline: float) -> None:
        self.srv, self.sr, self.setups, self.deadline = srv, sr, setups, deadline
        self.host = _NetRound(srv, sr, None, deadlines={st: deadline for st in Stage})
        self.driver = RoundDriver(sr, self.host)
        self.host.driver = self.driver
        self.run = StageRun(self.driver, Stage.ADVERTISE_KEYS, setups)

    def fresh(self) -> DirectRound:
        """The same stage with no client dropped yet."""
        return DirectRound(self.srv, self.sr, self.setups, self.deadline)

    def handle(self, ev) -> None:
        self.host._handle(self.run, ev)

    async def collect(self) -> None:
        await self.host.collect(self.run)

    @property
    def dropped(self) -> dict[int, str]:
        return {u: str(drop) for u, drop in self.driver.dropped.items()}

    @property
    def pending(self) -> frozenset[int]:
        return self.run.pending


def direct_round(d: Path, *, deadline: float = 30.0):
    """A server with five fake connected peers and a started round; each client's honest
    AdvertiseKeys, ready to be fed to the round's handler and collector (a DirectRound)."""
    srv, cap = local_server(d)
    sr = ServerRound(srv.round_config, srv.cohort, srv.vector_words, session_id=SID, round=0)
    setups = sr.start()
    by_id = {m.recipient: m for m in setups}
    for u in srv.cohort:
        srv.peers[u] = _Peer(u, 100 + u)
    answers = {u: ClientRound(u, config=srv.round_config).receive(by_id[u])[0]
               for u in srv.cohort}
    return srv, cap, sr, DirectRound(srv, sr, setups, deadline), answers


def inbound(u: int, data: bytes | None, reason: str = "") -> _Inbound:
    """What client u's connection in :func:`direct_round` delivers to the round loop."""
    return _Inbound(u, 100 + u, data, reason)
