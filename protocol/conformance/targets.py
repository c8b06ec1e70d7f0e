"""What the conformance suites drive: a client (or server) implementation behind one small
interface, whatever it is written in and however it is reached.

A client target is opened once per client session (:meth:`ClientTarget.open`) with a
:class:`ClientSpec` (its id, the deployment's configuration, its identity and registry, its
input, and a directory kept for that identity across the sessions of one suite run); the session
then takes one server message at a time in wire format (:meth:`ClientSession.send`) and answers
with a :class:`Reply`: the wire messages it sends back, or its refusal. Targets here:

* :class:`InProcessClient`: :class:`protocol.client.ClientRound` in this process;
* :class:`ProgramClient`: any program speaking the stdin/stdout framing of docs/protocol.md
  ("Conformance over stdin/stdout"): u32 big-endian length-prefixed frames, a JSON start frame,
  then one frame per server message; the program answers each with its messages and a status
  frame (empty: done; ``0x00`` + text: refused).

The networked client and the Flower mod are reached through the same interface
(:mod:`protocol.conformance.net_target`, :mod:`protocol.conformance.flower_target`).
"""

from __future__ import annotations

import json
import os
import select
import shlex
import struct
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from secagg import SigningKey, VerifyKey

from ..client import ClientRound
from ..config import RoundConfig
from ..errors import ProtocolError, RemoteProtocolError
from ..sessions import FileSessionStore
from ..wire import decode, encode

#: The version of the stdin/stdout start frame (its ``conformance`` field).
STDIO_VERSION = 1
_U32 = struct.Struct(">I")
#: A program frame larger than this is a failure of the program, not a message.
MAX_FRAME = 1 << 28
#: Status frame: the program refused the message (followed by UTF-8 text).
REFUSED = 0x00


class TargetError(Exception):
    """The target did not behave as the interface requires (it crashed, hung, or answered
    outside the framing). A case in which this happens fails, naming it."""


@dataclass(frozen=True)
class ClientSpec:
    """What a client under test is given for one session."""

    client_id: int
    config: RoundConfig
    identity: bytes | None  # Ed25519 private key (32 bytes); malicious mode
    registry: Mapping[int, VerifyKey] | None
    input: np.ndarray  # x_u, ring words of the round's bit width
    state_dir: Path  # kept for this identity across the sessions of one suite run

    @property
    def signing_key(self) -> SigningKey | None:
        return SigningKey.from_private_bytes(self.identity) if self.identity else None

    def start_frame(self) -> bytes:
        """The JSON start frame of the stdin/stdout framing."""
        c = self.config
        doc = {
            "conformance": STDIO_VERSION, "client_id": self.client_id,
            "config": {"bits": c.bits, "mode": str(c.mode), "threshold": c.threshold,
                       "neighbours": c.neighbours, "min_survivors": c.min_survivors,
                       "dropout_rate": c.dropout_rate, "corrupt_rate": c.corrupt_rate,
                       "complete_graph": c.complete_graph},
            "identity": self.identity.hex() if self.identity else None,
            "registry": ({str(u): k.raw.hex() for u, k in sorted(self.registry.items())}
                         if self.registry is not None else None),
            "input": [int(v) for v in self.input],
            "state_dir": str(self.state_dir),
        }
        return json.dumps(doc, sort_keys=True).encode()


@dataclass(frozen=True)
class Reply:
    """A client's answer to one server message: what it sent, and its refusal (None if it
    accepted the message)."""

    messages: tuple[bytes, ...] = ()
    refused: str | None = None


class ClientSession(ABC):
    """One client session of a target."""

    @abstractmethod
    def send(self, data: bytes) -> Reply:
        """Hand the client one server message (wire bytes); return its reply. Raises
        TargetError if the client breaks the interface."""

    def close(self) -> None:  # noqa: B027 - a session may hold nothing to release
        """End the session (the round is over for this client)."""


class ClientTarget(ABC):
    """A client implementation the suite can open sessions of."""

    name: str = "client"

    @abstractmethod
    def open(self, spec: ClientSpec) -> ClientSession:
        """Start one client session."""

    def close(self) -> None:  # noqa: B027 - a target may hold nothing to release
        """Release whatever the target holds across sessions."""


# -- our ClientRound, in process --------------------------------------------------------------
class InProcessClient(ClientTarget):
    """:class:`~protocol.client.ClientRound` in this process, its used sessions kept in a
    :class:`~protocol.sessions.FileSessionStore` in the identity's directory."""

    name = "in-process ClientRound"

    def __init__(self, machine: type[ClientRound] = ClientRound) -> None:
        self._machine = machine

    def open(self, spec: ClientSpec) -> ClientSession:
        store = FileSessionStore(spec.state_dir / "sessions")
        return _InProcessSession(self._machine(
            spec.client_id, config=spec.config, input=spec.input.copy(),
            identity=spec.signing_key, registry=spec.registry, used_sessions=store))


class _InProcessSession(ClientSession):
    def __init__(self, machine: ClientRound) -> None:
        self._machine = machine

    def send(self, data: bytes) -> Reply:
        try:
            out = self._machine.receive(decode(data))
        except RemoteProtocolError as exc:
            return Reply(refused=str(exc))
        except ProtocolError as exc:  # in ERROR already: it refuses everything
            return Reply(refused=str(exc))
        return Reply(tuple(encode(m) for m in out))


# -- any program over stdin/stdout --------------------------------------------------------------
class ProgramClient(ClientTarget):
    """A program started once per session (``command``, a shell-quoted string or an argv list)
    speaking the stdin/stdout framing of docs/protocol.md. ``timeout`` bounds each answer."""

    def __init__(self, command: str | Sequence[str], *, timeout: float = 60.0,
                 env: Mapping[str, str] | None = None) -> None:
        self._argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not self._argv:
            raise ValueError("an empty program command")
        self._timeout, self._env = timeout, dict(env) if env is not None else None
        self.name = f"program {shlex.join(self._argv)}"

    def open(self, spec: ClientSpec) -> ClientSession:
        try:
            proc = subprocess.Popen(  # noqa: S603 - the operator's own program under test
                self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=self._env)
        except OSError as exc:
            raise TargetError(f"cannot start {self._argv[0]}: {exc}") from None
        session = _ProgramSession(proc, self._timeout)
        reply = session.send(spec.start_frame())
        if reply.refused is not None or reply.messages:
            session.close()
            raise TargetError(f"the program answered its start frame with "
                              f"{reply.refused or 'messages'}")
        return session


class _ProgramSession(ClientSession):
    def __init__(self, proc: subprocess.Popen, timeout: float) -> None:
        self._proc, self._timeout = proc, timeout
        self._buffer = b""
        self._ended: str | None = None

    def send(self, data: bytes) -> Reply:
        if self._ended is not None:
            raise TargetError(f"the program already ended: {self._ended}")
        try:
            self._proc.stdin.write(_U32.pack(len(data)) + data)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise TargetError(self._exit_reason("stopped reading its input")) from None
        deadline = time.monotonic() + self._timeout
        messages = []
        while True:
            frame = self._frame(deadline)
            if not frame:
                return Reply(tuple(messages))
            if frame[0] == REFUSED:
                self._ended = "refused"
                return Reply(tuple(messages), frame[1:].decode("utf-8", "replace") or
                             "refused (no reason given)")
            messages.append(frame)

    def _frame(self, deadline: float) -> bytes:
        head = self._read(4, deadline)
        (n,) = _U32.unpack(head)
        if n > MAX_FRAME:
            raise TargetError(f"the program wrote a frame of {n} bytes")
        return self._read(n, deadline)

    def _read(self, n: int, deadline: float) -> bytes:
        fd = self._proc.stdout.fileno()
        while len(self._buffer) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill()
                raise TargetError(f"no answer within {self._timeout:g} s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise TargetError(self._exit_reason("ended in the middle of an answer"))
            self._buffer += chunk
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def _exit_reason(self, what: str) -> str:
        try:
            status = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill()
            status = "killed"
        err = self._proc.stderr.read().decode("utf-8", "replace").strip().splitlines()
        tail = f": {err[-1]}" if err else ""
        self._ended = f"exit status {status}"
        return f"the program {what} (exit status {status}){tail}"

    def _kill(self) -> None:
        self._proc.kill()
        self._proc.wait()
        self._ended = "killed"

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._kill()
        for f in (self._proc.stdout, self._proc.stderr):
            f.close()
