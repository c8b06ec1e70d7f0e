"""The server's handling of what clients send, in this process: messages that beat the
deadline count, impersonation, replays, stale sessions, frames of the wrong kind and arbitrary
bytes are violations (never an exception), declines drop a client at once, and a flooding
client cannot grow the server's inbox without bound."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import time

import grpc
import numpy as np
import pytest
from inprocess_harness import (
    SID,
    deploy_demo,
    direct_round,
    inbound,
    local_client,
    local_server,
    run_bounded,
    start_server,
)

from protocol.net.frames import Decline, Result, encode_frame, protocol_frame
from protocol.net.server import _Inbound
from protocol.wire import encode

pytestmark = pytest.mark.timeout(60)


def test_messages_that_arrived_before_the_deadline_count(tmp_path):
    srv, cap, sr, state, answers = direct_round(deploy_demo(tmp_path), deadline=0.05)
    for u in srv.cohort:  # all five answers are in the inbox before the deadline ...
        srv.inbox.put_nowait(inbound(u, protocol_frame(encode(answers[u]))))
    receive = sr.receive

    def busy(m):  # ... but the loop is busy (large masked inputs, many clients)
        time.sleep(0.03)
        return receive(m)

    sr.receive = busy
    run_bounded(state.collect())
    assert state.dropped == {}, cap.events("late-message-ignored")
    assert sr.u1 == frozenset(srv.cohort)


def test_server_refuses_impersonation_replay_stale_and_foreign_frames(tmp_path):
    srv, _, sr, state, ans = direct_round(deploy_demo(tmp_path))
    state.handle(inbound(1, protocol_frame(encode(ans[2]))))  # in 2's name
    state.handle(inbound(2, protocol_frame(encode(ans[2]))))  # 2 itself
    state.handle(inbound(3, protocol_frame(encode(ans[3]))))
    state.handle(inbound(3, protocol_frame(encode(ans[3]))))  # second copy
    stale = dataclasses.replace(ans[4], session_id=bytes(32))
    state.handle(inbound(4, protocol_frame(encode(stale))))
    result = encode_frame(Result(SID, 0, (0,), np.zeros(16, np.uint32)))
    state.handle(inbound(0, result))  # a server-to-client kind
    assert sr.u1 == {2, 3} and state.pending == set()
    assert "in the name of client 2" in state.dropped[1]
    assert "replayed message" in state.dropped[3]
    assert "wrong session or round" in state.dropped[4]
    assert "garbage" in state.dropped[0]
    assert 2 not in state.dropped and srv.peers[2].status is None
    assert all(srv.peers[u].status[0] is grpc.StatusCode.INVALID_ARGUMENT for u in (0, 1, 3, 4))
    # a connection that is not the client's current one is ignored, not punished
    state.handle(_Inbound(2, 999, b"garbage"))
    assert 2 not in state.dropped


def test_server_handler_turns_any_bytes_into_a_violation_never_an_exception(tmp_path):
    srv, _, sr, state, ans = direct_round(deploy_demo(tmp_path))
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
        state.fresh().handle(inbound(0, bytes(g)))  # must not raise


def test_decline_drops_at_once_and_foreign_declines_are_violations(tmp_path):
    """A DECLINE of the current round is a dropout at once (the connection stays); one late
    decline of the previous round is tolerated; a decline of any other session, or a second
    late one, is a violation (dropped, connection closed), so declines cannot be flooded."""
    srv, _, sr, state, ans = direct_round(deploy_demo(tmp_path))
    previous = bytes([1]) * 32
    srv._previous_session = previous
    state.handle(inbound(0, encode_frame(Decline(SID, 0, "over budget"))))
    assert state.dropped[0] == "declined: over budget" and srv.peers[0].status is None
    state.handle(inbound(1, encode_frame(Decline(previous, 0, "late"))))
    assert 1 not in state.dropped and srv.peers[1].status is None
    state.handle(inbound(1, encode_frame(Decline(previous, 0, "again"))))
    assert "not the current or previous" in state.dropped[1]
    assert srv.peers[1].status[0] is grpc.StatusCode.INVALID_ARGUMENT
    state.handle(inbound(2, encode_frame(Decline(bytes(32), 0, "foreign"))))
    assert "not the current or previous" in state.dropped[2]
    assert state.pending == {3, 4}


def test_flooding_client_cannot_grow_the_server_inbox_without_bound(tmp_path):
    d = deploy_demo(tmp_path)

    async def scenario():
        srv, _ = local_server(d, join_timeout=20.0)  # waits for the other four: nobody drains
        task = await start_server(srv)
        c, _ = local_client(d, 0, srv.port)
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

    queued, closed = run_bounded(scenario())
    assert closed or queued <= 64, f"{queued} frames (~{queued * 20} KB) queued for one client"
