"""Wire format: canonical round trips, strict refusals, and a decoder fuzz test."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from round_harness import run_until

from protocol import WireError, decode, encode
from protocol.messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    KeysBroadcast,
    MaskedInput,
    Setup,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)
from protocol.wire import MAX_MESSAGE_BYTES

SID = bytes(range(32))
ids = st.lists(st.integers(0, 2**32 - 2), max_size=8, unique=True).map(lambda x: tuple(sorted(x)))
b32 = st.binary(min_size=32, max_size=32)
b64 = st.binary(min_size=64, max_size=64)
ct = st.binary(max_size=200)


def keyed(value):
    return st.lists(st.tuples(st.integers(0, 2**32 - 2), value), max_size=6,
                    unique_by=lambda e: e[0]).map(lambda xs: tuple(sorted(xs)))


messages = st.one_of(
    st.builds(AdvertiseKeys, st.just(SID), st.integers(0, 9), st.integers(0, 99), b32, b32, b32,
              st.sampled_from([b"", bytes(64)])),
    st.builds(KeysBroadcast, st.just(SID), st.just(1), st.integers(0, 99),
              keyed(st.tuples(b32, b32, b32, st.sampled_from([b"", bytes(64)]))).map(
                  lambda xs: tuple((i, *rest) for i, rest in xs))),
    st.builds(ShareKeys, st.just(SID), st.just(0), st.integers(0, 99), keyed(ct)),
    st.builds(SharesDelivery, st.just(SID), st.just(0), st.integers(0, 99), keyed(ct)),
    st.builds(MaskedInput, st.just(SID), st.just(0), st.integers(0, 99),
              st.lists(st.integers(0, 2**32 - 1), max_size=20).map(
                  lambda v: np.array(v, dtype=np.uint32))),
    st.builds(ConsistencyRequest, st.just(SID), st.just(0), st.integers(0, 99), ids),
    st.builds(ConsistencySignature, st.just(SID), st.just(0), st.integers(0, 99), b64),
    st.builds(UnmaskRequest, st.just(SID), st.just(0), st.integers(0, 99), ids, st.just(()),
              keyed(b64)),
    st.builds(UnmaskResponse, st.just(SID), st.just(0), st.integers(0, 99), keyed(ct.map(
        lambda b: b[:100])), st.just(())),
)


@given(messages)
def test_round_trip_is_canonical(m):
    data = encode(m)
    back = decode(data)
    assert back == m
    assert encode(back) == data


def real_messages():
    """One encoded message of every type, from a real malicious-mode round."""
    r = run_until("unmasking", mode="malicious", n=6, dim=8, dropout_rate=0.0)
    r.answer(r.outgoing)
    first: dict[int, bytes] = {}
    for data in r.log:
        first.setdefault(data[1], data)
    assert sorted(first) == list(range(1, 11))
    return list(first.values())


REAL = real_messages()


@pytest.mark.parametrize("data", REAL, ids=lambda d: f"type{d[1]}")
def test_strict_refusals(data):
    assert encode(decode(data)) == data
    for bad in (data + b"\x00",               # trailing bytes
                data[:-1],                     # truncated
                b"\x02" + data[1:],           # unknown version
                data[:1] + b"\x63" + data[2:],  # unknown type
                b"", b"\x01"):
        with pytest.raises(WireError):
            decode(bad)


def test_oversize_and_count_bounds():
    head = bytes([1, ConsistencyRequest.TYPE]) + SID + struct.pack(">II", 0, 1)
    with pytest.raises(WireError, match="count"):
        decode(head + struct.pack(">I", 2**31))  # a count that cannot fit
    with pytest.raises(WireError):
        decode(bytes(MAX_MESSAGE_BYTES + 1))
    with pytest.raises(WireError, match="sorted and distinct"):
        decode(head + struct.pack(">III", 2, 5, 5))  # a client twice
    with pytest.raises(WireError, match="sorted and distinct"):
        decode(head + struct.pack(">III", 2, 6, 5))
    with pytest.raises(WireError):
        encode("not a message")


def test_message_validation_refuses_bad_values():
    with pytest.raises(WireError):
        AdvertiseKeys(SID, 0, 1, bytes(31), bytes(32), bytes(32), b"")
    with pytest.raises(WireError):
        AdvertiseKeys(bytes(16), 0, 1, bytes(32), bytes(32), bytes(32), b"")
    with pytest.raises(WireError):
        AdvertiseKeys(SID, 0, 1, bytes(32), bytes(32), bytes(31), b"")  # short commitment
    with pytest.raises(WireError, match="5 fields"):
        KeysBroadcast(SID, 0, 1, ((2, bytes(32), bytes(32), b""),))  # an entry of 4 fields
    with pytest.raises(WireError, match="sorted and distinct"):  # a server duplicating keys
        KeysBroadcast(SID, 0, 1, ((2, bytes(32), bytes(32), bytes(32), b""),) * 2)
    with pytest.raises(WireError, match="sequence of entries"):
        ShareKeys(SID, 0, 1, 5)
    with pytest.raises(WireError):
        MaskedInput(SID, 0, 1, np.zeros(3, dtype=np.float32))
    with pytest.raises(WireError, match="both kinds"):
        UnmaskResponse(SID, 0, 1, ((2, b"a"),), ((2, b"b"),))
    with pytest.raises(WireError):
        Setup(SID, 0, 0, (1, 2, 3), 3, 2, 10, 32, "semi-honest", 2, bytes(32))  # k > n - 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_raise_only_wire_errors(data):
    try:
        decode(data)
    except WireError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(REAL), st.integers(0, 2**32), st.integers(1, 8))
def test_fuzz_mutated_messages_raise_only_wire_errors(data, seed, flips):
    rnd = random.Random(seed)
    buf = bytearray(data)
    for _ in range(flips):
        op = rnd.randrange(3)
        i = rnd.randrange(len(buf))
        if op == 0:
            buf[i] ^= 1 << rnd.randrange(8)
        elif op == 1:
            del buf[i]
        else:
            buf.insert(i, rnd.randrange(256))
    try:
        m = decode(bytes(buf))
    except WireError:
        return
    assert encode(m) == bytes(buf)  # anything accepted is canonical
