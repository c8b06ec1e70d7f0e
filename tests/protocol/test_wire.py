"""Wire format: canonical round trips, strict refusals, and a decoder fuzz test."""

from __future__ import annotations

import dataclasses
import random
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from round_harness import run_until

from protocol import RemoteProtocolError, WireError, decode, encode
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
from protocol.wire import (
    MAX_MESSAGE_BYTES,
    WIRE_VERSION,
    pack_bits,
    packed_size,
    storage_dtype,
    unpack_bits,
)

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
    st.integers(8, 64).flatmap(lambda b: st.builds(
        MaskedInput, st.just(SID), st.just(0), st.integers(0, 99),
        st.lists(st.integers(0, 2**b - 1), max_size=20).map(
            lambda v, b=b: np.array(v, dtype=storage_dtype(b))), st.just(b))),
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
                bytes([WIRE_VERSION + 1]) + data[1:],  # unknown version
                bytes([WIRE_VERSION - 1]) + data[1:],  # the previous version
                data[:1] + b"\x63" + data[2:],  # unknown type
                b"", b"\x01"):
        with pytest.raises(WireError):
            decode(bad)


def test_oversize_and_count_bounds():
    head = bytes([WIRE_VERSION, ConsistencyRequest.TYPE]) + SID + struct.pack(">II", 0, 1)
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


# -- bit-packed vectors ---------------------------------------------------------------------
MI_HEAD = 2 + 32 + 4 + 4 + 1 + 4  # version, type, session, round, sender, b, count


def ring_vectors(max_size=300, min_bits=1):
    """(b, a vector of values below 2^b in b's storage dtype), b in min_bits..64."""
    return st.integers(min_bits, 64).flatmap(lambda b: st.tuples(st.just(b), st.lists(
        st.integers(0, 2**b - 1), max_size=max_size).map(
            lambda v, b=b: np.array(v, dtype=storage_dtype(b)))))


def stream(values, b: int) -> bytes:
    """The layout of docs/protocol.md section 6.2 with Python integers."""
    acc = 0
    for i, v in enumerate(values):
        acc |= int(v) << (i * b)
    return acc.to_bytes((len(values) * b + 7) // 8, "little")


@settings(max_examples=400, deadline=None)
@given(ring_vectors())
def test_packing_round_trips_and_matches_the_bit_stream(bv):
    b, v = bv
    raw = pack_bits(v, b)
    assert raw == stream(v.tolist(), b) and len(raw) == packed_size(len(v), b)
    back = unpack_bits(raw, len(v), b)
    assert back.dtype == storage_dtype(b) and np.array_equal(back, v)


@settings(max_examples=200, deadline=None)
@given(ring_vectors(min_bits=8), st.integers(0, 2**32 - 2))
def test_masked_input_round_trip_and_exact_length(bv, sender):
    b, v = bv
    m = MaskedInput(SID, 3, sender, v, bits=b)
    data = encode(m)
    assert len(data) == MI_HEAD + (len(v) * b + 7) // 8
    assert data[MI_HEAD - 5] == b and struct.unpack(">I", data[MI_HEAD - 4:MI_HEAD])[0] == len(v)
    back = decode(data)
    assert back == m and back.bits == b and back.vector.dtype == storage_dtype(b)
    assert not back.vector.flags.writeable
    assert encode(back) == data


@pytest.mark.parametrize("b", [8, 13, 16, 20, 32, 33, 64])
def test_large_vectors_round_trip(b):
    d = 100_003
    v = (np.random.default_rng(b).integers(0, 2**63, d, dtype=np.uint64) * np.uint64(2)
         & np.uint64(2**b - 1)).astype(storage_dtype(b))
    data = encode(MaskedInput(SID, 0, 1, v, bits=b))
    assert len(data) == MI_HEAD + (d * b + 7) // 8
    assert np.array_equal(decode(data).vector, v)
    k = 512 // b  # the first coordinates, compared in their whole bytes
    assert data[MI_HEAD:MI_HEAD + k * b // 8] == stream(v[:k].tolist(), b)[:k * b // 8]


def test_known_answer_packing():
    """Three 13-bit coordinates: 39 bits, 5 bytes, the last bit zero."""
    v = np.array([0x1ABC, 0x0123, 0x1FFF], dtype=np.uint32)
    assert pack_bits(v, 13) == bytes([0xBC, 0x7A, 0x24, 0xFC, 0x7F])
    data = encode(MaskedInput(SID, 1, 2, v, bits=13))
    assert data == (bytes([WIRE_VERSION, MaskedInput.TYPE]) + SID + struct.pack(">II", 1, 2)
                    + bytes([13]) + struct.pack(">I", 3) + bytes([0xBC, 0x7A, 0x24, 0xFC, 0x7F]))
    assert encode(MaskedInput(SID, 1, 2, v))[MI_HEAD - 5] == 32  # default: the word width


def masked(b: int, count: int, payload: bytes) -> bytes:
    return (bytes([WIRE_VERSION, MaskedInput.TYPE]) + SID + struct.pack(">II", 0, 1)
            + bytes([b]) + struct.pack(">I", count) + payload)


@pytest.mark.parametrize("data,why", [
    (masked(0, 0, b""), "bit width"),
    (masked(7, 8, bytes(7)), "bit width"),  # below a ring width: no 8x decoding amplification
    (masked(65, 0, b""), "bit width"),
    (masked(255, 1, bytes(32)), "bit width"),
    (masked(13, 3, bytes(4)), "truncated"),               # short payload
    (masked(13, 3, bytes(6)), "trailing"),                 # long payload
    (masked(13, 3, bytes(4) + b"\x80"), "padding"),        # bit 39 set
    (masked(12, 3, bytes(4) + b"\x10"), "padding"),        # bit 36 set: 36 bits, 5 bytes
    (masked(9, 1, b"\x00\x02"), "padding"),                # bit 9 set: 9 bits, 2 bytes
    (masked(64, 2**27 + 1, b""), "too large"),
    (masked(32, 2**28 + 1, b""), "too large"),
])
def test_bad_packed_vectors_are_refused(data, why):
    with pytest.raises(WireError, match=why):
        decode(data)


def test_padding_bits_are_the_only_freedom_and_are_refused():
    v = np.array([5, 1, 7], dtype=np.uint32)
    good = encode(MaskedInput(SID, 0, 1, v, bits=13))
    for bit in range(1, 8):  # bits 39.. of a 39-bit stream: only bit 7 of the last byte
        bad = bytearray(good)
        bad[-1] |= 1 << bit
        if bit >= 7:
            with pytest.raises(WireError, match="padding"):
                decode(bytes(bad))
        else:
            assert decode(bytes(bad)) != decode(good)  # a value bit: another message


def test_encode_refuses_values_and_widths_that_do_not_fit():
    with pytest.raises(WireError, match="2\\^13"):
        encode(MaskedInput(SID, 0, 1, np.array([0, 2**13], dtype=np.uint32), bits=13))
    with pytest.raises(WireError, match="2\\^40"):
        encode(MaskedInput(SID, 0, 1, np.array([2**40], dtype=np.uint64), bits=40))
    encode(MaskedInput(SID, 0, 1, np.array([2**13 - 1], dtype=np.uint32), bits=13))
    for b in (0, 65, -1, True, 13.0):
        with pytest.raises(WireError):
            MaskedInput(SID, 0, 1, np.zeros(2, dtype=np.uint64), bits=b)
        with pytest.raises(WireError):
            pack_bits(np.zeros(2, dtype=np.uint64), b)
    with pytest.raises(WireError, match="uint32 words"):
        MaskedInput(SID, 0, 1, np.zeros(2, dtype=np.uint64), bits=16)  # words of b <= 32
    with pytest.raises(WireError, match="uint32 words"):
        MaskedInput(SID, 0, 1, np.zeros(2, dtype=np.uint32), bits=40)
    with pytest.raises(WireError):
        unpack_bits(bytes(3), 2, 13)  # 26 bits are 4 bytes


@pytest.mark.parametrize("bits,other", [(16, 17), (16, 15), (20, 32), (32, 33), (40, 64)])
def test_the_server_refuses_a_masked_input_of_another_bit_width(bits, other):
    """Packed at another b (the same dimension): refused, typed, nothing added to the sum."""
    r = run_until("masked_input", bits=bits)
    s = r.server
    replies = [r.clients[m.recipient].receive(m)[0] for m in r.outgoing]
    assert all(m.bits == bits for m in replies)  # the honest client sends the round's b
    y = replies[0].vector.astype(np.uint64) & np.uint64(2**other - 1)
    forged = dataclasses.replace(replies[0], bits=other, vector=y.astype(storage_dtype(other)))
    with pytest.raises(RemoteProtocolError, match="bits" if (other <= 32) == (bits <= 32)
                       else "vector must be"):
        s.receive(decode(encode(forged)))
    assert s.u3 == frozenset() and s.masked_sum is None
    for m in replies:
        s.receive(decode(encode(m)))
    assert len(s.u3) == len(replies)


def test_a_buffer_of_any_shape_or_format_is_read_as_bytes_or_refused_typed():
    import array

    data = encode(MaskedInput(SID, 0, 1, np.arange(4, dtype=np.uint32), bits=16))
    two_d = memoryview(np.frombuffer(data, np.uint8).reshape(-1, 1))
    assert decode(two_d) == decode(data)
    assert decode(memoryview(array.array("B", data))) == decode(data)
    with pytest.raises(WireError):
        decode(memoryview(np.frombuffer(data, np.uint8)[::2]))  # not contiguous
