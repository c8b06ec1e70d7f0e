"""The client's own refusals, in this process: an input the ring refuses ends the command
line's client with a failure (and the private value stays out of its log), a restarted client
refuses a replayed Setup, and a client holding another member's certificate refuses a server
that takes it for that member."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os

import numpy as np
import pytest
from inprocess_harness import (
    SID,
    LogCapture,
    capture_sends,
    deploy_demo,
    local_client,
    local_server,
    run_bounded,
    start_server,
)

from protocol.net.client import run_client
from protocol.net.errors import ServerRefused
from protocol.net.frames import DECLINE, PROTOCOL, decode_frame
from protocol.net.jsonlog import JsonLog
from protocol.net.settings import load_client
from protocol.server import ServerRound

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def refused_input_run(tmp_path_factory):
    """Client 0 runs the command line's run_client with an input the ring refuses (a value
    >= 2^32); clients 1..4 are honest. Returns (exit code, client 0's log, its results)."""
    d = deploy_demo(tmp_path_factory.mktemp("refused"), deadline=1.0)
    bad = np.zeros(16, dtype=np.uint64)
    bad[5] = 123456789012345

    async def scenario():
        srv, _ = local_server(d)
        task = await start_server(srv)
        good = [local_client(d, u, srv.port) for u in range(1, 5)]
        await asyncio.gather(*(c.connect() for c, _ in good))
        serving = [asyncio.create_task(c.serve()) for c, _ in good]
        cs = dataclasses.replace(load_client(d / "client-0.toml"),
                                 server=f"127.0.0.1:{srv.port}", log=None)
        cap, results = LogCapture(), []
        code = await run_client(cs, bad, log=JsonLog(cap, party="client-0"),
                                on_result=results.append)
        await task
        await asyncio.gather(*serving, return_exceptions=True)
        for c, _ in good:
            await c.close()
        return code, cap.getvalue(), results

    return run_bounded(scenario())


def test_cli_client_whose_input_is_refused_does_not_exit_0(refused_input_run):
    code, _, results = refused_input_run
    assert code != 0 or results, "exit 0, and no round result or failure was ever reported"


def test_refused_input_values_do_not_reach_the_log(refused_input_run):
    _, log, _ = refused_input_run
    assert "round-refused" in log or '"code":2' in log  # the refusal itself is logged ...
    assert "123456789012345" not in log  # ... but not the private value


def test_restarted_client_refuses_a_replayed_setup(tmp_path):
    d = deploy_demo(tmp_path)

    async def scenario():
        first, _ = local_client(d, 0, 1)
        sent = capture_sends(first)
        cohort, dim = first.s.registry.cohort, first.s.dim
        setup = next(m for m in ServerRound(first.round_config, cohort, dim, session_id=SID,
                                            round=0).start() if m.recipient == 0)
        await first._on_message(setup)
        assert len(sent) == 1
        await first.close()
        again, cap = local_client(d, 0, 1)  # a restart: same state_dir
        sent = capture_sends(again)
        await again._on_message(setup)
        assert [decode_frame(f)[0] for f in sent] == [DECLINE]  # a decline, nothing signed
        assert "replayed session" in cap.events("round-refused")[0]["reason"]
        fresh = next(m for m in ServerRound(again.round_config, cohort, dim,
                                            session_id=os.urandom(32), round=0).start()
                     if m.recipient == 0)
        await again._on_message(fresh)
        assert len(sent) == 2 and decode_frame(sent[1])[0] == PROTOCOL  # then its AdvertiseKeys
        await again.close()

    run_bounded(scenario())


def test_client_holding_another_members_certificate_refuses_the_server(tmp_path):
    d = deploy_demo(tmp_path)

    async def scenario():
        srv, cap = local_server(d, join_timeout=10.0)
        task = await start_server(srv)
        c, _ = local_client(d, 1, srv.port, cert=d / "client-0.pem", key=d / "client-0.key")
        with pytest.raises(ServerRefused, match="client 0, not 1"):
            await c.connect()
        await c.close()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        return cap

    cap = run_bounded(scenario())
    assert [e["client"] for e in cap.events("client-connected")] == [0]  # the registry's id
