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
from dataclasses import fields
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


#: The fields of the start frame's ``config`` object (those of :class:`RoundConfig`).
CONFIG_FIELDS = frozenset(f.name for f in fields(RoundConfig))


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
             float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def parse_start(frame: bytes) -> dict:
    """The start frame as a JSON object. Raises ValueError for bytes that are not UTF-8 JSON,
    JSON nested too deeply to parse, or JSON that is not an object."""
    try:
        doc = json.loads(frame)
    except RecursionError:
        raise ValueError("the start frame is nested too deeply") from None
    if not isinstance(doc, dict):
        raise ValueError(f"the start frame is a JSON {_json_type(doc)}, not an object")
    return doc


def machine_from_start(doc: object, machine: type[ClientRound] = ClientRound) -> ClientRound:
    """The client the start frame ``doc`` (the parsed JSON) describes, a ``machine``. Raises
    ValueError for a frame it cannot use: not a JSON object, another version, a missing field
    or one of the wrong type, a config with keys that are not RoundConfig fields, values the
    configuration, the keys or the ring refuse, or a state_dir that cannot be made."""
    if not isinstance(doc, dict):
        raise ValueError(f"the start frame is a JSON {_json_type(doc)}, not an object")
    if doc.get("conformance") != STDIO_VERSION:
        raise ValueError(f"start frame version {doc.get('conformance')!r}, expected "
                         f"{STDIO_VERSION}")
    try:
        return _machine(doc, machine)
    except ValueError:  # ConfigError, SecAggValueError, ProtocolError and the checks here
        raise
    except KeyError as exc:
        raise ValueError(f"the start frame has no field {exc}") from None
    except (TypeError, AttributeError, ArithmeticError) as exc:
        raise ValueError(f"a start frame field of the wrong type or range: {exc}") from None
    except OSError as exc:
        raise ValueError(f"state_dir cannot be used: {exc.strerror or exc}") from None


def _machine(doc: dict, machine: type[ClientRound]) -> ClientRound:
    config = doc["config"]
    if not isinstance(config, dict):
        raise ValueError(f"config is a JSON {_json_type(config)}, not an object")
    unknown = sorted(set(config) - CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"config keys {unknown} are not among {sorted(CONFIG_FIELDS)}")
    config = RoundConfig(**config)
    bits = config.bits
    x = np.array(doc["input"], dtype=np.uint64).astype(np.uint32 if bits <= 32 else np.uint64)
    identity = (SigningKey.from_private_bytes(bytes.fromhex(doc["identity"]))
                if doc.get("identity") else None)
    registry = doc.get("registry")
    if registry is not None and not isinstance(registry, dict):
        raise ValueError(f"registry is a JSON {_json_type(registry)}, not an object")
    registry = ({int(u): VerifyKey(bytes.fromhex(k)) for u, k in registry.items()}
                if registry is not None else None)
    if not isinstance(doc["state_dir"], str):
        raise ValueError("state_dir must be a path (a JSON string)")
    state = Path(doc["state_dir"])
    state.mkdir(parents=True, exist_ok=True)
    return machine(int(doc["client_id"]), config=config, input=x, identity=identity,
                   registry=registry, used_sessions=FileSessionStore(state / "sessions"))


def serve(stdin: BinaryIO, stdout: BinaryIO, machine: type[ClientRound] = ClientRound) -> int:
    """Answer frames with a ``machine`` until the input ends; 0 at a clean end, 1 if the start
    frame is unusable (answered with a refusal status frame naming why)."""
    start = _read(stdin)
    if start is None:
        return 0
    try:
        client = machine_from_start(parse_start(start), machine)
    except ValueError as exc:
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
