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

import contextlib
import json
import math
import os
import select
import shlex
import signal
import struct
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
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
#: A program frame larger than this is a failure of the program, not a message (the suite's
#: rounds carry 16 ring words: its largest honest message is a few kilobytes).
MAX_FRAME = 1 << 24
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

    def close(self) -> tuple[bytes, ...]:
        """End the session (the round is over for this client); return any message it sent
        after its last answer (none, for a conforming client)."""
        return ()


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
    speaking the stdin/stdout framing of docs/protocol.md. ``timeout`` (seconds, finite and
    positive) bounds each answer. The program runs in its own process group, killed whole when
    the session ends; its standard error is read as it comes and only its last lines kept."""

    def __init__(self, command: str | Sequence[str], *, timeout: float = 60.0,
                 env: Mapping[str, str] | None = None) -> None:
        self._argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not self._argv:
            raise ValueError("an empty program command")
        if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
            raise ValueError(f"the timeout must be a finite number of seconds > 0, got "
                             f"{timeout!r}")
        self._timeout, self._env = float(timeout), dict(env) if env is not None else None
        self.name = f"program {shlex.join(self._argv)}"

    def open(self, spec: ClientSpec) -> ClientSession:
        try:
            proc = subprocess.Popen(  # noqa: S603 - the operator's own program under test
                self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=self._env, start_new_session=True)
        except OSError as exc:
            raise TargetError(f"cannot start {self._argv[0]}: {exc}") from None
        session = _ProgramSession(proc, self._timeout)
        try:
            reply = session.send(spec.start_frame())
        except BaseException:
            session.kill()
            raise
        if reply.refused is not None or reply.messages:
            session.kill()
            raise TargetError(f"the program answered its start frame with "
                              f"{reply.refused or 'messages'}")
        return session


#: Lines of a program's standard error kept (the rest is read and dropped).
STDERR_LINES = 20
#: Seconds a program is given to exit once its input is closed.
EXIT_GRACE = 5.0


class _ProgramSession(ClientSession):
    def __init__(self, proc: subprocess.Popen, timeout: float) -> None:
        self._proc, self._timeout = proc, timeout
        self._buffer = bytearray()
        self._ended: str | None = None
        self._stderr: deque[bytes] = deque(maxlen=STDERR_LINES)
        self._stderr_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_reader.start()

    def _read_stderr(self) -> None:
        try:
            for line in self._proc.stderr:
                self._stderr.append(line[:500])
        except (OSError, ValueError):
            return

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

    def _frame(self, deadline: float, *, eof_ok: bool = False) -> bytes | None:
        head = self._read(4, deadline, eof_ok=eof_ok)
        if head is None:
            return None
        (n,) = _U32.unpack(head)
        if n > MAX_FRAME:
            self.kill()
            raise TargetError(f"the program wrote a frame of {n} bytes")
        return self._read(n, deadline)

    def _read(self, n: int, deadline: float, *, eof_ok: bool = False) -> bytes | None:
        fd = self._proc.stdout.fileno()
        while len(self._buffer) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise TargetError(f"no answer within {self._timeout:g} s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                if eof_ok and not self._buffer:
                    return None
                raise TargetError(self._exit_reason("ended in the middle of an answer"))
            self._buffer += chunk
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def _exit_reason(self, what: str) -> str:
        try:
            status = self._proc.wait(timeout=EXIT_GRACE)
        except subprocess.TimeoutExpired:
            status = "killed"
        self.kill()
        self._stderr_reader.join(timeout=1)
        err = [b.decode("utf-8", "replace").strip() for b in self._stderr]
        err = [e for e in err if e]
        tail = f": {err[-1][:200]}" if err else ""
        self._ended = f"exit status {status}"
        return f"the program {what} (exit status {status}){tail}"

    def kill(self) -> None:
        """Stop the program's whole process group (it may have started others)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=EXIT_GRACE)
        if self._ended is None:
            self._ended = "killed"

    def close(self) -> tuple[bytes, ...]:
        """Close the program's input and read what it still writes until it exits: a
        conforming program writes nothing more. Every wire message found is returned."""
        late: list[bytes] = []
        try:
            with contextlib.suppress(OSError, ValueError):
                self._proc.stdin.close()
            deadline = time.monotonic() + EXIT_GRACE
            while self._proc.stdout is not None:
                try:
                    frame = self._frame(deadline, eof_ok=True)
                except TargetError:
                    break
                if frame is None:
                    break
                if frame and frame[0] != REFUSED:
                    late.append(frame)
        finally:
            self.kill()
            for f in (self._proc.stdout, self._proc.stderr):
                with contextlib.suppress(OSError, ValueError):
                    f.close()
        return tuple(late)
