"""How a server run ends, in this process: with an exit code (never a traceback) when the
ledger cannot be written or the output directory is unusable, and with a goodbye every
connected client hears, also after an abort."""

from __future__ import annotations

import pytest
from inprocess_harness import deploy_demo, local_client, local_server, play, run_bounded

from dp.ledger import Ledger
from protocol.net.errors import ExitCode

pytestmark = pytest.mark.timeout(60)


def test_ledger_write_failure_aborts_the_round_with_an_exit_code(tmp_path, monkeypatch):
    from protocol.net import server as net_server

    class FullDisk(Ledger):
        def record_round(self, **kw):
            raise OSError(28, "No space left on device")

    def full_disk_ledger(path, budget, *, key=None, owner):
        return FullDisk.create(path, budget, owner=owner, signing_key=key)

    monkeypatch.setattr(net_server, "open_ledger", full_disk_ledger)  # the server's only
    d = deploy_demo(tmp_path, dp=True)
    srv, _ = local_server(d)
    code, _, clients = run_bounded(play(srv, lambda port: [local_client(d, u, port)
                                                           for u in range(5)]))
    assert isinstance(code, int) and code != 0, f"escaped run(): {code!r}"
    assert all(cap.events("round-aborted") for _, cap in clients)


def test_unwritable_output_dir_gives_an_exit_code_not_a_traceback(tmp_path):
    d = deploy_demo(tmp_path / "d")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    srv, cap = local_server(d, output_dir=blocker)
    code, _, _ = run_bounded(play(srv, lambda port: [local_client(d, u, port)
                                                     for u in range(5)]))
    assert isinstance(code, int), f"escaped run(): {code!r}"
    assert cap.events("exit")


def test_clients_hear_goodbye_when_the_server_stops_after_an_abort(tmp_path):
    d = deploy_demo(tmp_path)
    srv, _ = local_server(d, join_timeout=0.3)  # only client 0 joins: too-few-clients
    code, served, _ = run_bounded(play(srv, lambda port: [local_client(d, 0, port)]))
    assert code == ExitCode.ABORTED
    assert isinstance(served[0], str), f"client saw {served[0]!r} instead of the server's BYE"
