"""Client implementations that break the protocol on purpose, for the conformance suite's own
tests: each must fail the case named after what it does wrong."""

from __future__ import annotations

import sys

from protocol import ClientRound
from protocol.messages import UnmaskRequest, UnmaskResponse


class BothShareKinds(ClientRound):
    """Answers an unmasking request that lists a neighbour both alive and dead with both of
    that neighbour's shares (in two responses, since one response cannot carry both kinds for
    one owner): the attack the alive-and-dead check refuses."""

    def _handle(self, m):
        if not isinstance(m, UnmaskRequest) or not set(m.alive) & set(m.dead):
            return super()._handle(m)
        held = self._shares.held
        alive = tuple((v, held[v][0].to_bytes()) for v in m.alive if v in held)
        dead = tuple((v, held[v][1].to_bytes()) for v in m.dead if v in held)
        return [UnmaskResponse(m.session_id, m.round, self.id, alive, ()),
                UnmaskResponse(m.session_id, m.round, self.id, (), dead)]


if __name__ == "__main__":  # the same machine as a stdin/stdout program
    from protocol.conformance.stdio_client import serve

    sys.exit(serve(sys.stdin.buffer, sys.stdout.buffer, BothShareKinds))
