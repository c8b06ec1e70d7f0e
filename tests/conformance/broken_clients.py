"""Clients that break the protocol on purpose, for the conformance suite's own tests; run as
a program, this module is protocol.conformance.hostile.BothShareKinds over stdin/stdout, or
with ``--status-first``, the same client writing its refusal status before both shares."""

from __future__ import annotations

import dataclasses
import sys

from protocol import ClientRound, ClientState
from protocol.conformance.hostile import BothShareKinds


class _ClaimedLater(set):
    """A used-session view that reads the real store but claims nothing itself."""

    def __init__(self, store) -> None:
        super().__init__()
        self.store = store

    def __contains__(self, session: object) -> bool:
        return session in self.store

    def add(self, session: bytes) -> None:
        return None


class ClaimsAtTheEnd(ClientRound):
    """Records a session as used only once its round is DONE: a server that cuts the round
    short and replays the session gets a second run (two consistency signatures)."""

    def __init__(self, *args, used_sessions, **kwargs) -> None:
        self._store = used_sessions
        super().__init__(*args, used_sessions=_ClaimedLater(used_sessions), **kwargs)

    def receive(self, message):
        out = super().receive(message)
        if self.state is ClientState.DONE:
            self._store.add(self.setup.session_id)
        return out


class SelfMaskOnly(ClientRound):
    """Masks its input with b_u alone (no pairwise masks): the server, which removes b_u of
    every survivor, reads the input."""

    def _give(self, x):
        self._shares = dataclasses.replace(self._shares, pairwise=())
        return super()._give(x)


def _status_first() -> int:
    """BothShareKinds that writes its refusal status frame and then both shares."""
    import json

    from protocol.conformance.stdio_client import _read, _write, machine_from_start
    from protocol.errors import ProtocolError
    from protocol.messages import UnmaskRequest
    from protocol.wire import decode, encode

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    client = machine_from_start(json.loads(_read(inp)), BothShareKinds)
    _write(out, b"")
    out.flush()
    while (frame := _read(inp)) is not None:
        m = decode(frame)
        try:
            msgs = client.receive(m)
        except ProtocolError as exc:
            _write(out, b"\x00" + str(exc).encode())
        else:
            if isinstance(m, UnmaskRequest) and set(m.alive) & set(m.dead):
                _write(out, b"\x00refused")
                for x in msgs:
                    _write(out, encode(x))
            else:
                for x in msgs:
                    _write(out, encode(x))
                _write(out, b"")
        out.flush()
    return 0


if __name__ == "__main__":
    if "--status-first" in sys.argv:
        sys.exit(_status_first())
    from protocol.conformance.stdio_client import serve

    sys.exit(serve(sys.stdin.buffer, sys.stdout.buffer, BothShareKinds))
