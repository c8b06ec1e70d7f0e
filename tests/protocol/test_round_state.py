"""A round's state is explicit and private: every attribute of the client and server machines
exists from construction (no stage handler creates one), and no key, seed or share appears in
a repr of the machines or of what a stage hands on."""

from __future__ import annotations

import pytest
from round_harness import run_until

from protocol import ClientState, ServerState


@pytest.mark.parametrize("mode", ["semi-honest", "malicious"])
def test_no_attribute_is_created_inside_a_stage_handler(mode):
    r = run_until("advertise_keys", mode=mode)
    before = {u: set(vars(c)) for u, c in r.clients.items()}
    server_before = set(vars(r.server))
    stages = ["share_keys", "masked_input"] + (["consistency_check"] if mode == "malicious"
                                               else []) + ["unmasking"]
    out = r.outgoing
    for _ in stages + ["end"]:
        r.answer(out)
        out = r.server.close_stage()
    assert r.server.state is ServerState.DONE
    assert all(c.state is ClientState.DONE for c in r.clients.values())
    assert {u: set(vars(c)) for u, c in r.clients.items()} == before
    assert set(vars(r.server)) == server_before
    assert all(name.startswith("_") for name in server_before)
    assert all(name.startswith("_") for names in before.values() for name in names)


def _secrets(client) -> list[str]:
    keys, shares = client._keys, client._shares
    out = [keys.b_seed.hex(), keys.c_keys.private_bytes().hex(),
           keys.s_keys.private_bytes().hex(), repr(keys.b_seed), repr(keys.s_keys.private_bytes())]
    out += [repr(k) for k in client._peers.enc_keys.values()]
    for b, s in shares.held.values():
        out += [b.to_bytes().hex(), s.to_bytes().hex(), repr(b.to_bytes()), repr(s.to_bytes())]
    return out


def test_no_secret_is_in_a_repr():
    r = run_until("unmasking", mode="malicious")
    for client in r.clients.values():
        shown = " ".join(repr(x) for x in (client, client._keys, client._peers, client._shares,
                                           client._keys.ctx))
        leaked = [s for s in _secrets(client) if s in shown]
        assert not leaked, (client.id, leaked[:1])
        assert "b_seed=" not in shown and "enc_keys=" not in shown and "held=" not in shown
