"""Our messages inside Flower's: one wire frame per Flower Message, and nothing else of ours.

A protocol message (:mod:`protocol.wire`, docs/architecture.md section 3) travels as a raw
``uint8`` :class:`flwr.app.Array` (type ``secagg.wire.v1``) in the ArrayRecord
``secagg.frame``, which Flower chunks like any array; a small ConfigRecord ``secagg.meta``
says which stage it belongs to and, with a Setup, the length of the model update. The bytes are
read from the Array directly: no numpy or pickle decoding touches what a peer sent.
"""

from __future__ import annotations

from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from ..errors import WireError

FRAME_RECORD = "secagg.frame"
META_RECORD = "secagg.meta"
FRAME_STYPE = "secagg.wire.v1"
STATE_RECORD = "secagg.state"  # the node's sealed round, in context.state
IDENTIFY = "identify"  # the malicious-mode round trip that asks a node for its client id
META_VERSION = 1


def put_frame(content: RecordDict, frame: bytes, *, stage: str, **meta: int) -> RecordDict:
    """``content`` with ``frame`` and its metadata added (returned for chaining)."""
    content.array_records[FRAME_RECORD] = ArrayRecord(
        {"frame": Array(dtype="uint8", shape=(len(frame),), stype=FRAME_STYPE,
                        data=bytes(frame))})
    return put_meta(content, stage=stage, **meta)


def put_meta(content: RecordDict, *, stage: str, **meta: int) -> RecordDict:
    content.config_records[META_RECORD] = ConfigRecord({"v": META_VERSION, "stage": stage,
                                                        **meta})
    return content


def take_meta(content: RecordDict) -> dict:
    """The metadata record. Raises WireError if it is missing or of another version."""
    rec = content.config_records.get(META_RECORD) if content is not None else None
    if rec is None:
        raise WireError(f"no {META_RECORD} record: not a hardened secure-aggregation message")
    meta = dict(rec)
    if meta.get("v") != META_VERSION or not isinstance(meta.get("stage"), str):
        raise WireError(f"{META_RECORD} of an unknown version or without a stage")
    return meta


def take_frame(content: RecordDict) -> tuple[bytes, dict]:
    """(frame bytes, metadata). Raises WireError if either is missing or malformed."""
    meta = take_meta(content)
    rec = content.array_records.get(FRAME_RECORD)
    if rec is None or set(rec.keys()) != {"frame"}:
        raise WireError(f"no {FRAME_RECORD} record with exactly one frame")
    arr = rec["frame"]
    if arr.stype != FRAME_STYPE or arr.dtype != "uint8" or tuple(arr.shape) != (len(arr.data),):
        raise WireError(f"{FRAME_RECORD} is not a raw uint8 frame of type {FRAME_STYPE}")
    return bytes(arr.data), meta


def meta_int(meta: dict, key: str, *, lo: int = 0, hi: int = 1 << 62) -> int:
    v = meta.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise WireError(f"{META_RECORD}: {key} must be an int in [{lo}, {hi}], got {v!r}")
    return v
