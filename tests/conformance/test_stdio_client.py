"""``python -m protocol.conformance.stdio_client``, our client as a program speaking the
stdin/stdout framing (docs/protocol.md section 18): a start frame it cannot use, whatever JSON
it holds, is answered with one refusal status frame (0x00 and the reason) and exit status 1,
never with a traceback; :func:`machine_from_start` raises ValueError for it."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.conformance.stdio_client import machine_from_start, parse_start

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = [sys.executable, "-m", "protocol.conformance.stdio_client"]
CONFIG = {"bits": 16, "mode": "semi-honest", "threshold": 2, "neighbours": 4,
          "min_survivors": None, "dropout_rate": 0.1, "corrupt_rate": 0.05,
          "complete_graph": False}


def start_doc(where: Path, **change) -> dict:
    return {"conformance": 1, "client_id": 0, "config": dict(CONFIG), "identity": None,
            "registry": None, "input": [1, 2, 3], "state_dir": str(where), **change}


def frames(*items: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(x)) + x for x in items)


def unframe(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        assert pos + 4 <= len(data), "output ended inside a frame header"
        (n,) = struct.unpack_from(">I", data, pos)
        assert pos + 4 + n <= len(data), "output ended inside a frame"
        out.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


def run(*items: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(PROGRAM, input=frames(*items), capture_output=True, cwd=ROOT,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)


#: name -> the start frame's bytes, given the state directory
UNUSABLE = {
    "a JSON array": lambda d: b"[1, 2]",
    "a JSON string": lambda d: b'"start"',
    "JSON null": lambda d: b"null",
    "a JSON number": lambda d: b"7",
    "JSON nested too deeply to parse": lambda d: b"[" * 100_000 + b"]" * 100_000,
    "not UTF-8": lambda d: b'{"conformance": 1, "x": "\xff"}',
    "a config key that is not a RoundConfig field": lambda d: json.dumps(
        start_doc(d, config={**CONFIG, "frobnicate": 1})).encode(),
    "a config that is not an object": lambda d: json.dumps(
        start_doc(d, config=[16, "semi-honest"])).encode(),
    "a registry that is not an object": lambda d: json.dumps(
        start_doc(d, registry=[1, 2])).encode(),
    "a negative input word": lambda d: json.dumps(start_doc(d, input=[-1, 0, 0])).encode(),
    "an identity that is not a string": lambda d: json.dumps(
        start_doc(d, identity=12)).encode(),
    "a state_dir that is not a string": lambda d: json.dumps(
        start_doc(d, state_dir=["x"])).encode(),
    "a state_dir below a file": lambda d: json.dumps(
        start_doc(d, state_dir=str(d / "file" / "state"))).encode(),
    "no client_id": lambda d: json.dumps(
        {k: v for k, v in start_doc(d).items() if k != "client_id"}).encode(),
    "another version": lambda d: json.dumps(start_doc(d, conformance=2)).encode(),
}


@pytest.mark.parametrize("case", UNUSABLE)
def test_an_unusable_start_frame_is_refused_with_exit_status_1(tmp_path, case):
    (tmp_path / "file").write_text("not a directory")
    proc = run(UNUSABLE[case](tmp_path), b"\x01\x01")  # a later frame is never read
    assert b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")
    assert proc.returncode == 1
    (status,) = unframe(proc.stdout)  # the refusal, and nothing else
    assert status[:1] == b"\x00"
    assert status[1:].decode().startswith("unusable start frame: ")


def test_a_usable_start_frame_is_answered_with_an_empty_status(tmp_path):
    proc = run(json.dumps(start_doc(tmp_path)).encode())
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert unframe(proc.stdout) == [b""]


@pytest.mark.parametrize("doc", [[1, 2], "start", None, 7, 1.5, True])
def test_machine_from_start_refuses_json_that_is_not_an_object(doc):
    with pytest.raises(ValueError, match="not an object") as e:
        machine_from_start(doc)
    assert type(e.value) is ValueError  # not a TypeError or AttributeError


def test_machine_from_start_refuses_unknown_config_keys(tmp_path):
    with pytest.raises(ValueError, match=r"config keys \['frobnicate'\]") as e:
        machine_from_start(start_doc(tmp_path, config={**CONFIG, "frobnicate": 1}))
    assert not isinstance(e.value, TypeError)
    assert not (tmp_path / "sessions").exists()  # refused before the state directory is used


@pytest.mark.parametrize("frame", [b"[]", b"null", b"\xff", b"[" * 100_000])
def test_parse_start_raises_value_error(frame):
    with pytest.raises(ValueError):
        parse_start(frame)
