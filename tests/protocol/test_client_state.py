"""A client's round kept between processes: export, seal, open, restore (protocol.client_state).

Every client below leaves its process after every message (its machine is exported, sealed,
opened and restored before the next one), and the round still gives the exact sum. The sealed
blob is bound to the node key, client, session, round and sequence number: a tampered blob, one
of another node or client, a rollback to an earlier stage and a blob of a finished session are
refused with their own error types.
"""

from __future__ import annotations

import numpy as np
import pytest

from protocol import ClientRound, RoundConfig, ServerRound
from protocol.client_state import ProgressStore, StateSealer, load_node_key
from protocol.errors import (
    ForeignState,
    LocalProtocolError,
    RemoteProtocolError,
    StateError,
    StateRolledBack,
    StateTampered,
)
from protocol.messages import MaskedInput
from protocol.sessions import FileSessionStore
from secagg import SigningKey

N, DIM = 6, 16
KEY = bytes(range(32))


class Node:
    """One client that keeps nothing in memory between messages but its node's files."""

    def __init__(self, u: int, tmp, config, **kw) -> None:
        self.u, self.config, self.kw = u, config, kw
        self.sealer = StateSealer(KEY if u == 1 else bytes([u]) * 32,
                                  ProgressStore(tmp / f"progress-{u}.json"))
        self.used = FileSessionStore(tmp / f"sessions-{u}")
        self.blob: bytes | None = None
        self.blobs: list[bytes] = []

    def handle(self, m) -> list:
        if self.blob is None:
            c = ClientRound(self.u, config=self.config, used_sessions=self.used, **self.kw)
        else:
            plain = self.sealer.open(self.blob, client_id=self.u, session_id=m.session_id,
                                     round=m.round)
            c = ClientRound.restore_state(plain, config=self.config, used_sessions=self.used,
                                          **self.kw)
        out = c.receive(m)
        if c.needs_input:
            out = c.set_input(np.full(DIM, self.u + 1, dtype=np.uint32))
        if c.state.value in ("done", "error"):
            self.sealer.end(m.session_id)
            self.blob = None
        else:
            self.blob = self.sealer.seal(self.u, c.setup, c.state, c.export_state())
            self.blobs.append(self.blob)
        return out


def run_round(nodes: dict[int, Node], server: ServerRound, drop_at: dict[str, set[int]]):
    out = server.start()
    while server.stage is not None:
        stage = str(server.stage)
        for m in out:
            if m.recipient in drop_at.get(stage, ()):
                nodes.pop(m.recipient, None)
            if m.recipient in nodes:
                for reply in nodes[m.recipient].handle(m):
                    server.receive(reply)
        out = server.close_stage()
    return server


@pytest.mark.parametrize("mode", ["semi-honest", "malicious"])
def test_a_round_whose_clients_restart_after_every_message_gives_the_exact_sum(tmp_path, mode):
    cfg = RoundConfig(mode=mode)
    registry = None
    if mode == "malicious":
        ids = {u: SigningKey.generate() for u in range(N)}
        registry = {u: k.verify_key for u, k in ids.items()}
    nodes = {u: Node(u, tmp_path, cfg, **({"identity": ids[u], "registry": registry}
                                         if registry else {})) for u in range(N)}
    server = ServerRound(cfg, range(N), DIM, round=3, registry=registry)
    run_round(nodes, server, {"masked_input": {4}})
    survivors = sorted(server.survivors)
    assert 4 not in survivors
    assert np.array_equal(server.aggregate, np.full(DIM, sum(u + 1 for u in survivors),
                                                    dtype=np.uint32))


def sealed_node(tmp_path) -> tuple[Node, ServerRound, list]:
    """Node 1 after ShareKeys, with its blobs; the server's next message for it."""
    cfg = RoundConfig()
    nodes = {u: Node(u, tmp_path, cfg) for u in range(N)}
    server = ServerRound(cfg, range(N), DIM, round=1)
    out = server.start()
    for _ in range(2):  # Setup -> AdvertiseKeys, KeysBroadcast -> ShareKeys
        for m in out:
            for reply in nodes[m.recipient].handle(m):
                server.receive(reply)
        out = server.close_stage()
    return nodes[1], server, [m for m in out if m.recipient == 1]


def test_a_tampered_state_blob_is_refused(tmp_path):
    node, _, (m,) = sealed_node(tmp_path)
    blob = bytearray(node.blob)
    blob[-5] ^= 1
    with pytest.raises(StateTampered):
        node.sealer.open(bytes(blob), client_id=1, session_id=m.session_id, round=m.round)
    head = bytearray(node.blob)
    head[60] ^= 1  # inside the authenticated header (the session id)
    with pytest.raises(StateError):
        node.sealer.open(bytes(head), client_id=1, session_id=m.session_id, round=m.round)
    with pytest.raises(StateTampered):
        node.sealer.open(node.blob[:20], client_id=1, session_id=m.session_id, round=m.round)


def test_a_state_blob_of_another_node_or_client_is_refused(tmp_path):
    node, _, (m,) = sealed_node(tmp_path)
    other = StateSealer(bytes(32), ProgressStore(None))
    with pytest.raises(ForeignState, match="another node's key"):
        other.open(node.blob, client_id=1, session_id=m.session_id, round=m.round)
    with pytest.raises(ForeignState, match="client 1, not 3"):
        node.sealer.open(node.blob, client_id=3, session_id=m.session_id, round=m.round)
    with pytest.raises(ForeignState, match="another session"):
        node.sealer.open(node.blob, client_id=1, session_id=bytes(32), round=m.round)
    with pytest.raises(ForeignState, match="another session or round"):
        node.sealer.open(node.blob, client_id=1, session_id=m.session_id, round=m.round + 1)


def test_a_rollback_to_an_earlier_stage_is_refused(tmp_path):
    node, _, (m,) = sealed_node(tmp_path)
    first, last = node.blobs[0], node.blobs[-1]
    assert node.sealer.open(last, client_id=1, session_id=m.session_id, round=m.round)
    with pytest.raises(StateRolledBack, match="rollback"):
        node.sealer.open(first, client_id=1, session_id=m.session_id, round=m.round)


def test_the_progress_store_outlives_the_process_and_a_finished_session_stays_finished(
        tmp_path):
    node, _, (m,) = sealed_node(tmp_path)
    reopened = StateSealer(KEY, ProgressStore(tmp_path / "progress-1.json"))
    reopened.open(node.blob, client_id=1, session_id=m.session_id, round=m.round)
    reopened.end(m.session_id)
    again = StateSealer(KEY, ProgressStore(tmp_path / "progress-1.json"))
    with pytest.raises(StateRolledBack, match="ended"):
        again.open(node.blob, client_id=1, session_id=m.session_id, round=m.round)


def test_a_restored_client_still_refuses_a_replayed_setup(tmp_path):
    node, server, _ = sealed_node(tmp_path)
    setup = ClientRound.restore_state(
        node.sealer.open(node.blob, client_id=1, session_id=server.session_id,
                         round=server.round), config=RoundConfig(), used_sessions=node.used
    ).setup
    fresh = ClientRound(1, config=RoundConfig(), used_sessions=FileSessionStore(
        tmp_path / "sessions-1"))
    with pytest.raises(RemoteProtocolError, match="replayed session"):
        fresh.receive(setup)


def test_a_kept_round_is_checked_again_against_the_clients_configuration(tmp_path):
    node, server, _ = sealed_node(tmp_path)
    plain = node.sealer.open(node.blob, client_id=1, session_id=server.session_id,
                             round=server.round)
    with pytest.raises(LocalProtocolError, match="refused now"):
        ClientRound.restore_state(plain, config=RoundConfig(bits=16), used_sessions=set())


def test_export_refuses_a_round_that_is_not_kept():
    with pytest.raises(LocalProtocolError):
        ClientRound(0, config=RoundConfig()).export_state()


def test_malformed_plain_state_is_refused_as_tampered():
    for bad in (b"", b"{}", b'{"v": 2}', b"not json",
                b'{"v":1,"state":"await-keys","setup":"00","id":0,"keys":{}}'):
        with pytest.raises(StateTampered):
            ClientRound.restore_state(bad, config=RoundConfig(), used_sessions=set())


def test_the_node_key_file_is_created_private_and_checked(tmp_path):
    p = tmp_path / "k" / "state.key"
    key = load_node_key(p)
    assert len(key) == 32 and load_node_key(p) == key
    assert p.stat().st_mode & 0o777 == 0o600
    p.write_text("zz")
    with pytest.raises(LocalProtocolError, match="not hex"):
        load_node_key(p)


def test_masked_input_is_produced_once_per_restored_round(tmp_path):
    node, server, (m,) = sealed_node(tmp_path)
    out = node.handle(m)
    assert len(out) == 1 and isinstance(out[0], MaskedInput)


def test_the_progress_store_stays_small_and_a_new_round_ends_the_one_before(tmp_path):
    from protocol.client_state import KEEP_ENDED

    store = ProgressStore(tmp_path / "p.json")
    for i in range(KEEP_ENDED + 10):
        sid = i.to_bytes(32, "big")
        store.advance(sid)
        store.end(sid)
    reopened = ProgressStore(tmp_path / "p.json")
    assert reopened.get((0).to_bytes(32, "big")) is None  # pruned: a blob of it is foreign
    assert reopened.get((KEEP_ENDED + 9).to_bytes(32, "big")) == (1, True)
    a, b = b"a" * 32, b"b" * 32
    reopened.advance(a)
    reopened.end_all()
    assert reopened.get(a) == (1, True)
    reopened.advance(b)
    assert reopened.get(b) == (1, False)


def test_a_blob_opens_once(tmp_path):
    node, _, (m,) = sealed_node(tmp_path)
    node.sealer.open(node.blob, client_id=1, session_id=m.session_id, round=m.round)
    with pytest.raises(StateRolledBack, match="already opened"):
        node.sealer.open(node.blob, client_id=1, session_id=m.session_id, round=m.round)


def test_a_node_key_readable_by_others_is_refused(tmp_path):
    p = tmp_path / "state.key"
    load_node_key(p)
    p.chmod(0o644)
    with pytest.raises(LocalProtocolError, match="readable by others"):
        load_node_key(p)
