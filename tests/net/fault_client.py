"""A client process that misbehaves on purpose, for the fault tests (run as a script).

    python fault_client.py --config client.toml --input update.npy --fault KIND --stage STAGE

It is the real :class:`protocol.net.client.AsyncClient` with one fault injected in the first
round, when the message that opens STAGE arrives:

* ``kill``: print ``AT <stage>`` and hang (the test then sends SIGKILL);
* ``slow``: sleep ``--delay`` seconds (staying connected) before answering;
* ``garbage``: answer with random bytes in a protocol frame;
* ``oversize``: answer with a frame larger than the server's message bound;
* ``replay``: answer, then send the same answer again;
* ``impersonate``: answer in the name of another client;
* ``stale``: in the second round, send the first round's answer (a replay from an old session).
* ``short-seed``: in the first round, deal (and commit to) a 31-byte self-mask seed, so that
  the server's reconstruction yields an invalid seed (``--stage`` is ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

import protocol.participant as participant
from protocol.client import ClientRound
from protocol.messages import Setup
from protocol.net.client import AsyncClient, run_client
from protocol.net.frames import PROTOCOL, protocol_frame
from protocol.net.settings import load_client
from protocol.transitions import OPENS
from protocol.wire import decode, encode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "protocol"))
from hostile_clients import ShortSeedDealer  # noqa: E402 - the dealer the in-process tests use


class FaultyClient(AsyncClient):
    def __init__(self, settings, *, fault: str, stage: str, delay: float, **kw) -> None:
        super().__init__(settings, **kw)
        self.fault, self.stage, self.delay = fault, stage, delay
        self.now: str | None = None
        self.round_no = 0
        self.saved: bytes | None = None
        self.done = False

    async def _on_message(self, msg) -> None:
        self.now = OPENS[type(msg)]
        if isinstance(msg, Setup):
            self.round_no += 1
            if self.fault == "short-seed":  # the sans-IO round this client runs
                participant.ClientRound = ShortSeedDealer if self.round_no == 1 else ClientRound
        hit = self.now == self.stage and not self.done
        if hit and self.fault == "kill" and self.round_no == 1:
            print(f"AT {self.stage}", flush=True)
            await asyncio.sleep(3600)
        if hit and self.fault == "slow" and self.round_no == 1:
            self.done = True
            await asyncio.sleep(self.delay)
        await super()._on_message(msg)

    async def _send(self, frame: bytes) -> None:
        if frame[1] != PROTOCOL or self.now != self.stage or self.done:
            await super()._send(frame)
            return
        if self.fault == "stale":
            if self.round_no == 1:
                self.saved = frame
            else:
                self.done = True
                await super()._send(self.saved)
                return
        if self.round_no != 1 or self.fault not in ("garbage", "oversize", "replay",
                                                     "impersonate"):
            await super()._send(frame)
            return
        self.done = True
        if self.fault == "garbage":
            await super()._send(protocol_frame(os.urandom(300)))
        elif self.fault == "oversize":
            words = self.plan.encoding.padded_dim if self.plan else self.s.dim
            bound = words * 8 + 64 * 1024 + 300 * len(self.s.registry.members)
            await super()._send(frame + b"\0" * (bound + 1000 - len(frame)))
        elif self.fault == "replay":
            await super()._send(frame)
            await super()._send(frame)
        elif self.fault == "impersonate":
            msg = decode(frame[2:])
            other = next(u for u in self.s.registry.cohort if u != self.s.id)
            await super()._send(protocol_frame(encode(dataclasses.replace(msg, sender=other))))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--fault", required=True, choices=["kill", "slow", "garbage", "oversize",
                                                        "replay", "impersonate", "stale",
                                                        "short-seed"])
    ap.add_argument("--stage", required=True)
    ap.add_argument("--delay", type=float, default=0.0)
    args = ap.parse_args()
    settings = load_client(args.config)
    update = np.load(args.input)

    def factory(s, **kw):
        return FaultyClient(s, fault=args.fault, stage=args.stage, delay=args.delay, **kw)

    return asyncio.run(run_client(settings, update, factory=factory))


if __name__ == "__main__":
    sys.exit(main())
