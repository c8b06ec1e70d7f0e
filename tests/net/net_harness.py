"""Real processes on 127.0.0.1 for the transport's fault tests: one ``secagg server`` and
``secagg client`` processes (or the misbehaving ``fault_client.py``), every wait bounded, every
process killed when the test ends."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from protocol.net.certs import DemoOptions, write_demo
from protocol.net.settings import load_server

HERE = Path(__file__).resolve().parent
EXE = [sys.executable, "-m", "protocol.cli"]
FAULT = [sys.executable, str(HERE / "fault_client.py")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Deployment:
    dir: Path
    n: int
    procs: list[subprocess.Popen] = field(default_factory=list)
    server_proc: subprocess.Popen | None = None
    outs: dict[int, Path] = field(default_factory=dict)

    @property
    def settings(self):
        return load_server(self.dir / "server.toml")

    def edit(self, name: str, old: str, new: str) -> None:
        p = self.dir / name
        text = p.read_text()
        assert old in text, f"{old!r} not in {name}"
        p.write_text(text.replace(old, new, 1))

    def _spawn(self, argv: list[str], out: str) -> subprocess.Popen:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        f = open(self.dir / out, "wb")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=self.dir)
        f.close()
        self.procs.append(p)
        self.outs[p.pid] = self.dir / out
        return p

    def server(self) -> subprocess.Popen:
        self.server_proc = self._spawn([*EXE, "server", "--config", "server.toml"],
                                       f"server-{len(self.procs)}.out")
        return self.server_proc

    def client(self, u: int, *, config: str | None = None, fault: str | None = None,
               stage: str | None = None, delay: float = 0.0) -> subprocess.Popen:
        cfg = config or f"client-{u}.toml"
        if fault is None:
            argv = [*EXE, "client", "--config", cfg, "--input", f"update-{u}.npy"]
        else:
            argv = [*FAULT, "--config", cfg, "--input", f"update-{u}.npy", "--fault", fault,
                    "--stage", stage, "--delay", str(delay)]
        return self._spawn(argv, f"client-{u}-{len(self.procs)}.out")

    def output(self, p: subprocess.Popen) -> str:
        return self.outs[p.pid].read_text(errors="replace")

    def events(self, event: str | None = None) -> list[dict]:
        path = self.dir / "state" / "server.log.jsonl"
        if not path.exists():
            return []
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        return [r for r in rows if event is None or r["event"] == event]

    def client_events(self, u: int, event: str | None = None) -> list[dict]:
        path = self.dir / "state" / f"client-{u}" / "log.jsonl"
        if not path.exists():
            return []
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        return [r for r in rows if event is None or r["event"] == event]

    def wait_for(self, pred, timeout: float, what: str):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = pred()
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; server log:\n"
                             + "\n".join(json.dumps(e) for e in self.events()[-30:]))

    def wait_server(self, timeout: float = 90.0) -> int:
        try:
            return self.server_proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("server did not finish in time; log:\n" + "\n".join(
                json.dumps(e) for e in self.events()[-30:])) from None

    def wait(self, p: subprocess.Popen, timeout: float = 60.0) -> int:
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"process {p.args} did not finish in time") from None

    def start_all(self, skip=()) -> dict[int, subprocess.Popen]:
        srv = self.server()
        self.wait_for(lambda: self.events("listening") or srv.poll() is not None, 30,
                      "the server to listen")
        assert srv.poll() is None, (self.dir / "server-0.out").read_text()
        return {u: self.client(u) for u in range(self.n) if u not in skip}

    def kill(self, p: subprocess.Popen) -> None:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait(10)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass

    # -- checks --------------------------------------------------------------------------
    def completed(self) -> dict[int, list[int]]:
        return {e["round"]: e["survivors"] for e in self.events("round-complete")}

    def assert_sum(self, r: int) -> list[int]:
        """The published aggregate of round r equals the plain sum of its survivors' inputs
        (mod 2^b); returns the survivors."""
        survivors = self.completed()[r]
        agg = np.load(self.dir / "state" / "aggregates" / f"round-{r}.npy")
        inputs = [np.load(self.dir / f"update-{u}.npy").astype(object) for u in survivors]
        want = (np.sum(inputs, axis=0) % (1 << 32)).astype(np.uint32)
        assert agg.dtype == np.uint32
        np.testing.assert_array_equal(agg, want)
        return survivors

    def dropped(self, r: int) -> dict[int, str]:
        return {e["client"]: e["reason"] for e in self.events("client-dropped")
                if e["round"] == r}


def make_deployment(tmp: Path, n: int = 5, *, dp: bool = False, mode: str = "semi-honest",
                    rounds: int = 1, deadline: float = 10.0, dim: int = 64) -> Deployment:
    write_demo(tmp, DemoOptions(clients=n, port=free_port(), dim=dim, rounds=rounds, mode=mode,
                                dp=dp, deadline=deadline, seed=7, epsilon=8.0))
    d = Deployment(tmp, n)
    d.edit("server.toml", "between_rounds = 2.0", "join_timeout = 30.0\nbetween_rounds = 2.0")
    d.edit("server.toml", "between_rounds = 2.0", "between_rounds = 1.0")
    return d
