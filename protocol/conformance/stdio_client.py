"""Our :class:`~protocol.client.ClientRound` as a program speaking the conformance framing
over stdin/stdout (docs/protocol.md, "Conformance over stdin/stdout"):
``python -m protocol.conformance.stdio_client``.

It is the reference point for ``secagg conformance client --program``: an implementation in
another language is run the same way and must pass the same cases.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np

from secagg import SigningKey, VerifyKey

from ..client import ClientRound
from ..config import RoundConfig
from ..errors import ProtocolError
from ..sessions import FileSessionStore
from ..wire import decode, encode
from .targets import MAX_FRAME, REFUSED, STDIO_VERSION

_U32 = struct.Struct(">I")


def _read(stream: BinaryIO) -> bytes | None:
    head = stream.read(4)
    if not head:
        return None
    if len(head) < 4:
        raise EOFError("input ended inside a frame header")
    (n,) = _U32.unpack(head)
    if n > MAX_FRAME:
        raise ValueError(f"a frame of {n} bytes")
    data = stream.read(n)
    if len(data) < n:
        raise EOFError("input ended inside a frame")
    return data


def _write(stream: BinaryIO, data: bytes) -> None:
    stream.write(_U32.pack(len(data)) + data)


def machine_from_start(doc: dict, machine: type[ClientRound] = ClientRound) -> ClientRound:
    """The client the start frame describes (a ``machine``). Raises ValueError for a frame it
    cannot use."""
    if doc.get("conformance") != STDIO_VERSION:
        raise ValueError(f"start frame version {doc.get('conformance')!r}, expected "
                         f"{STDIO_VERSION}")
    config = RoundConfig(**doc["config"])
    bits = config.bits
    x = np.array(doc["input"], dtype=np.uint64).astype(np.uint32 if bits <= 32 else np.uint64)
    identity = (SigningKey.from_private_bytes(bytes.fromhex(doc["identity"]))
                if doc.get("identity") else None)
    registry = ({int(u): VerifyKey(bytes.fromhex(k)) for u, k in doc["registry"].items()}
                if doc.get("registry") is not None else None)
    state = Path(doc["state_dir"])
    state.mkdir(parents=True, exist_ok=True)
    return machine(int(doc["client_id"]), config=config, input=x, identity=identity,
                       registry=registry, used_sessions=FileSessionStore(state / "sessions"))


def serve(stdin: BinaryIO, stdout: BinaryIO, machine: type[ClientRound] = ClientRound) -> int:
    """Answer frames with a ``machine`` until the input ends; 0 at a clean end, 1 if the start
    frame is unusable."""
    start = _read(stdin)
    if start is None:
        return 0
    try:
        client = machine_from_start(json.loads(start), machine)
    except (ValueError, KeyError, TypeError) as exc:
        _write(stdout, bytes([REFUSED]) + f"unusable start frame: {exc}".encode())
        stdout.flush()
        return 1
    _write(stdout, b"")
    stdout.flush()
    while (frame := _read(stdin)) is not None:
        try:
            out = client.receive(decode(frame))
        except ProtocolError as exc:
            _write(stdout, bytes([REFUSED]) + str(exc).encode())
        else:
            for m in out:
                _write(stdout, encode(m))
            _write(stdout, b"")
        stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.stdin.buffer, sys.stdout.buffer))
