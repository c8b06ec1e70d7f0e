"""Differential privacy over the network, in this process: the server's ledger holds a round
before any unmasking share is requested and each client is charged once, between
SharesDelivery and its MaskedInput; a refused SharesDelivery costs the client nothing; a
ledger created for another budget is refused, and the server exits with ExitCode.CONFIG."""

from __future__ import annotations

import pytest
from inprocess_harness import (
    SID,
    capture_sends,
    deploy_demo,
    local_client,
    local_server,
    play,
    run_bounded,
)

from dp.errors import BudgetMismatch
from dp.ledger import Budget, Ledger
from protocol.messages import MaskedInput, SharesDelivery, UnmaskRequest
from protocol.net.client import AsyncClient
from protocol.net.errors import ExitCode
from protocol.net.frames import DECLINE, PROTOCOL, decode_frame
from protocol.net.keys import load_signing_key
from protocol.server import ServerRound
from protocol.wire import decode

pytestmark = pytest.mark.timeout(60)


def test_dp_write_ahead_order_over_the_network(tmp_path):
    """The server's ledger holds the round before any UnmaskRequest reaches a client; each
    client is charged exactly once, after SharesDelivery arrives and before MaskedInput leaves."""
    d = deploy_demo(tmp_path, dp=True)
    srv, cap = local_server(d)
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

    code, served, _ = run_bounded(play(srv, lambda port: [local_client(d, u, port, cls=Probe)
                                                    for u in range(5)]))
    assert code == 0 and served == ["all rounds done"] * 5
    assert seen["server"] == [2] * 5  # open entry + this round, before the first request
    assert seen["at_shares"] == [0] * 5 and seen["at_masked"] == [1] * 5
    assert cap.events("ledger-committed")[0]["survivors"] == 5


def test_client_is_not_charged_for_a_shares_delivery_it_refuses(tmp_path):
    d = deploy_demo(tmp_path, dp=True)

    async def scenario():
        c, cap = local_client(d, 0, 1)
        sent = capture_sends(c)
        c._open_ledger()
        sr = ServerRound(c.round_config, c.s.registry.cohort, c.plan.encoding.padded_dim,
                         session_id=SID, round=0)
        await c._on_message(next(m for m in sr.start() if m.recipient == 0))
        assert [type(decode(f[2:])).__name__ for f in sent] == ["AdvertiseKeys"]
        await c._on_message(SharesDelivery(SID, 0, 0, ()))  # before any KeysBroadcast
        charged = c.ledger.rounds
        await c.close()
        return charged, sent, cap

    charged, sent, cap = run_bounded(scenario())
    # refused: no protocol message left the client, only its DECLINE of the round
    assert len(sent) == 2 and decode_frame(sent[1])[0] == DECLINE
    assert cap.events("round-refused")
    assert charged == 0


def test_existing_ledger_with_a_larger_budget_than_configured_is_refused(tmp_path):
    d = deploy_demo(tmp_path, dp=True)
    srv, _ = local_server(d)
    s = srv.s
    s.ledger.parent.mkdir(parents=True, exist_ok=True)
    Ledger.create(s.ledger, Budget(50.0, 1e-2), owner="server",
                  signing_key=load_signing_key(s.ledger_key)).close()
    with pytest.raises(BudgetMismatch, match="was created for the budget"):
        srv._open_ledger()


def test_server_exits_config_on_a_ledger_made_for_another_budget(tmp_path):
    d = deploy_demo(tmp_path, dp=True)
    srv, cap = local_server(d)
    s = srv.s
    s.ledger.parent.mkdir(parents=True, exist_ok=True)
    Ledger.create(s.ledger, Budget(50.0, 1e-2), owner="server",
                  signing_key=load_signing_key(s.ledger_key)).close()
    assert run_bounded(srv.run()) == ExitCode.CONFIG
    (exit_event,) = cap.events("exit")
    assert exit_event["code"] == 2 and "was created for the budget" in exit_event["reason"]
    assert not cap.events("listening")  # refused before any client could connect
