"""The transport's pieces without a network: frames, settings, logs, errors and exit codes,
key files, certificates, sessions."""

from __future__ import annotations

import contextlib
import io
import json
import random

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given
from hypothesis import strategies as st
from inprocess_harness import deploy_demo, edit_file

from protocol.errors import ProtocolError, WireError
from protocol.net.certs import DemoOptions, write_demo
from protocol.net.errors import (
    CertificateError,
    ConnectionLost,
    ExitCode,
    NetError,
    RoundFailed,
    ServerRefused,
    TransportError,
)
from protocol.net.frames import (
    ABORT,
    BYE,
    DECLINE,
    MAX_TEXT,
    PROTOCOL,
    RESULT,
    WELCOME,
    Abort,
    Bye,
    Decline,
    Result,
    Welcome,
    decode_frame,
    encode_frame,
    printable_ascii,
    protocol_frame,
)
from protocol.net.jsonlog import JsonLog
from protocol.net.keys import load_signing_key
from protocol.net.server import AggregationServer
from protocol.net.settings import SettingsError, load_client, load_registry, load_server
from protocol.net.tls import SERVER_NAME, fingerprint, make_ca, make_leaf
from protocol.sessions import FileSessionStore as SessionSet

SID = bytes(range(32))


# -- frames ------------------------------------------------------------------------------
def test_frame_known_answer():
    """Layout: version 1, kind, fields big-endian (hand-assembled from the frames.py spec)."""
    assert encode_frame(Bye("done")) == bytes([1, 5, 0, 0, 0, 4]) + b"done"
    assert encode_frame(Welcome(7, b"\xaa" * 32, 3)) == (
        bytes([1, 2, 0, 0, 0, 7]) + b"\xaa" * 32 + bytes([0, 0, 0, 3]))
    res = encode_frame(Result(SID, 2, (1, 4), np.array([5, 6], dtype=np.uint32)))
    assert res == (bytes([1, 3]) + SID + bytes([0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 4,
                                                 4, 32, 0, 0, 0, 2, 5, 0, 0, 0, 6, 0, 0, 0]))
    # the ring sum packed at the round's b: 5 and 6 at 12 bits are 0x006005, 3 bytes
    res = encode_frame(Result(SID, 2, (1, 4), np.array([5, 6], dtype=np.uint32), 12))
    assert res[-9:] == bytes([4, 12, 0, 0, 0, 2, 0x05, 0x60, 0x00])
    est = encode_frame(Result(SID, 2, (), np.array([1.5])))
    assert est[-13:] == bytes([3, 0, 0, 0, 1]) + np.array([1.5], "<f8").tobytes()
    assert protocol_frame(b"xyz") == bytes([1, 1]) + b"xyz"


@given(st.integers(0, 2**32 - 1), st.binary(min_size=32, max_size=32),
       st.integers(0, 2**32 - 1))
def test_welcome_round_trip(cid, digest, nxt):
    kind, w = decode_frame(encode_frame(Welcome(cid, digest, nxt)))
    assert kind == WELCOME and w == Welcome(cid, digest, nxt)


@given(st.sets(st.integers(0, 2**32 - 2), max_size=50),
       st.sampled_from(["u4", "u8", "f8"]), st.integers(0, 40), st.integers(0, 2**32 - 1))
def test_result_round_trip(survivors, dt, n, rnd):
    agg = np.arange(n).astype(dt) * 3
    kind, r = decode_frame(encode_frame(Result(SID, rnd, tuple(sorted(survivors)), agg)))
    assert kind == RESULT and r.round == rnd and r.survivors == tuple(sorted(survivors))
    assert r.aggregate.dtype == np.dtype(dt) and np.array_equal(r.aggregate, agg)
    assert r.bits == (None if dt == "f8" else 8 * np.dtype(dt).itemsize)


@given(st.integers(8, 64).flatmap(lambda b: st.tuples(st.just(b), st.lists(
    st.integers(0, 2**b - 1), max_size=60))))
def test_ring_sum_is_packed_at_b_bits(bv):
    b, values = bv
    agg = np.array(values, dtype=np.uint32 if b <= 32 else np.uint64)
    data = encode_frame(Result(SID, 1, (0, 2), agg, b))
    head = 2 + 32 + 4 + 4 + 8 + 1 + 1 + 4  # version, kind, sid, round, survivors, type, b, n
    assert len(data) == head + (len(values) * b + 7) // 8
    kind, r = decode_frame(data)
    assert r.bits == b and r.aggregate.dtype == agg.dtype and np.array_equal(r.aggregate, agg)
    assert r.aggregate.flags.writeable
    assert encode_frame(r) == data


def _ring_result(b: int, n: int, payload: bytes) -> bytes:
    return (bytes([1, RESULT]) + SID + bytes(8) + bytes([4, b]) + n.to_bytes(4, "big")
            + payload)


@pytest.mark.parametrize("data,why", [
    (_ring_result(0, 0, b""), "bit width"),
    (_ring_result(65, 0, b""), "bit width"),
    (_ring_result(13, 3, bytes(4)), "truncated"),
    (_ring_result(13, 3, bytes(6)), "trailing"),
    (_ring_result(13, 3, bytes(4) + b"\x80"), "padding"),
    (_ring_result(64, 2**28, b""), "too large"),
    (bytes([1, RESULT]) + SID + bytes(8) + bytes([1, 0, 0, 0, 1]) + bytes(4), "aggregate type"),
    (bytes([1, RESULT]) + SID + bytes(8) + bytes([2, 0, 0, 0, 1]) + bytes(8), "aggregate type"),
])
def test_bad_ring_sums_are_refused(data, why):
    with pytest.raises(WireError, match=why):
        decode_frame(data)


def test_ring_sum_encoding_is_strict():
    with pytest.raises(WireError, match="2\\^12"):
        encode_frame(Result(SID, 0, (), np.array([4096], dtype=np.uint32), 12))
    for bits, dt in ((0, np.uint32), (65, np.uint64), (40, np.uint32), (16, np.uint64)):
        with pytest.raises(WireError, match="bit width"):
            encode_frame(Result(SID, 0, (), np.zeros(2, dtype=dt), bits))
    with pytest.raises(WireError, match="estimate"):
        encode_frame(Result(SID, 0, (), np.zeros(2), 16))


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=256))
def test_abort_and_bye_round_trip(text):
    assert decode_frame(encode_frame(Abort(SID, 1, "unmasking", text))) == (
        ABORT, Abort(SID, 1, "unmasking", text))
    assert decode_frame(encode_frame(Bye(text))) == (BYE, Bye(text))


@pytest.mark.parametrize("data,why", [
    (b"", "too short"),
    (b"\x01", "too short"),
    (bytes([2, PROTOCOL]) + b"x", "unknown transport version"),
    (bytes([1, 9]), "unknown frame kind"),
    (bytes([1, WELCOME, 0, 0, 0]), "truncated"),
    (encode_frame(Bye("x")) + b"\0", "trailing"),
    (bytes([1, BYE, 0, 0, 1, 1]) + b"a" * 257, "too long"),
    (bytes([1, BYE, 0, 0, 0, 1]) + b"\x07", "printable"),
    (bytes([1, BYE, 0, 0, 0, 1]) + b"\xff", "printable"),
    (bytes([1, RESULT]) + SID + bytes([0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 1, 4,
                                       32, 0, 0, 0, 0]), "sorted"),
    (bytes([1, RESULT]) + SID + bytes([0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0]),
     "aggregate type"),
    (bytes([1, RESULT]) + SID + bytes([0, 0, 0, 0, 0, 0, 0, 0, 3, 0xFF, 0xFF, 0xFF, 0xFF]),
     "truncated"),
    (bytes([1, RESULT]) + SID + bytes([0, 0, 0, 0, 0, 0, 0, 0, 4, 32, 0, 0, 0xFF, 0xFF]),
     "truncated"),
    (bytes([1, RESULT]) + SID + bytes([0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]), "too long"),
])
def test_bad_frames_are_refused(data, why):
    with pytest.raises(WireError, match=why):
        decode_frame(data)


def test_encode_refuses_non_vectors():
    with pytest.raises(WireError):
        encode_frame(Result(SID, 0, (), np.zeros((2, 2), dtype=np.uint32)))
    with pytest.raises(WireError):
        encode_frame(Result(SID, 0, (), np.zeros(2, dtype=np.int32)))
    with pytest.raises(WireError):
        encode_frame("not a frame")


@pytest.mark.parametrize("frame", [
    Bye("line one\nline two"),
    Abort(SID, 0, "unmasking", "tab\there"),
    Result(SID, 0, (3, 1), np.zeros(2)),
    Result(SID, 0, (-1,), np.zeros(2)),
    Welcome(1, b"\xaa" * 31, 0),
    Welcome(-1, b"\xaa" * 32, 0),
    Abort(b"short", 0, "x", "y"),
], ids=["bye-newline", "abort-tab", "unsorted-survivors", "negative-survivor",
        "short-digest", "negative-id", "short-session"])
def test_encode_frame_is_strict(frame):
    try:
        data = encode_frame(frame)
    except WireError:
        return  # refused with the one error type: fine
    decode_frame(data)  # whatever the encoder emits, the decoder accepts


def test_transport_frames_refuse_mutations_with_wire_error_only():
    sid = bytes(32)
    good = [encode_frame(Welcome(1, b"a" * 32, 2)),
            encode_frame(Result(sid, 1, (1, 2), np.arange(3, dtype=np.uint32))),
            encode_frame(Result(sid, 1, (1, 2), np.arange(9, dtype=np.uint32), 13)),
            encode_frame(Result(sid, 1, (), np.zeros(0))),
            encode_frame(Abort(sid, 1, "masked_input", "too-few-survivors")),
            encode_frame(Bye("z"))]
    rng = random.Random(11)
    for _ in range(5000):
        g = bytearray(rng.choice(good))
        op = rng.random()
        if op < 0.35:
            g[rng.randrange(len(g))] = rng.randrange(256)
        elif op < 0.7:
            g = g[:rng.randrange(len(g) + 1)]
        else:
            g += bytes(rng.randrange(256) for _ in range(rng.randint(1, 5)))
        with contextlib.suppress(WireError):
            decode_frame(bytes(g))
    with pytest.raises(WireError):
        decode_frame(bytearray(encode_frame(Bye("x"))))  # bytes only


# -- settings ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    write_demo(d, DemoOptions(clients=4, port=50999, dim=16, rounds=2, seed=1, dp=True))
    return d


def test_demo_configs_load_and_agree(demo):
    s = load_server(demo / "server.toml")
    cs = [load_client(demo / f"client-{u}.toml") for u in range(4)]
    assert s.registry.cohort == (0, 1, 2, 3) and s.rounds == 2 and s.host == "127.0.0.1"
    assert s.dp is not None and s.ledger is not None
    assert {c.digest() for c in cs} == {s.digest()}
    for u, c in enumerate(cs):
        assert c.id == u and c.registry.members[u].cert_sha256 == fingerprint(
            (demo / f"client-{u}.pem").read_bytes())
    # private keys are owner-only
    for name in ("ca.key", "server.key", "client-0.key", "client-0.ed25519"):
        assert (demo / name).stat().st_mode & 0o077 == 0


def test_demo_directory_is_not_overwritten(demo):
    with pytest.raises(FileExistsError):
        write_demo(demo, DemoOptions(clients=5))


def _variant(demo, tmp_path, name, old, new):
    text = (demo / name).read_text()
    assert old in text
    for f in demo.iterdir():
        if f.is_file():
            (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / name).write_text(text.replace(old, new, 1))
    return tmp_path / name


@pytest.mark.parametrize("old,new,why", [
    ("rounds = 2", "rounds = 0", "rounds"),
    ("rounds = 2", 'rounds = "2"', "rounds must be int"),
    ("port = 50999", "port = 70000", "port"),
    ("host =", "hots =", "unknown keys"),
    ("dim = 16", "dim = 0", "dim"),
    ('mode = "semi-honest"', 'mode = "paranoid"', "mode"),
    ("epsilon = 8.0", "epsilon = -1.0", "epsilon"),
    ("[deadlines]\n", "[deadlines]\nmasked_input = 0.0\n", "masked_input"),
    ("[deadlines]\n", "[deadlines]\nmasked_inptu = 60.0\n", "unknown keys"),
    ('ledger = "state/server-ledger.jsonl"\n', "", "must name its privacy ledger"),
    ('registry = "registry.toml"', 'registry = "nope.toml"', "cannot read"),
    ("dim = 16", "dim = [", "not valid TOML"),
])
def test_bad_server_settings_name_the_problem(demo, tmp_path, old, new, why):
    with pytest.raises(SettingsError, match=why):
        load_server(_variant(demo, tmp_path, "server.toml", old, new))


@pytest.mark.parametrize("old,new,why", [
    ("id = 1", "id = 9", "not in the registry"),
    ('ledger = "state/client-1/ledger.jsonl"\n', "", "must name this client's ledger"),
    ('mode = "semi-honest"', 'mode = "malicious"\n#', "no round can run"),
    ("\ndim = ", "\nconnect_timeout = 0.0\ndim = ", "connect_timeout"),
])
def test_bad_client_settings_name_the_problem(demo, tmp_path, old, new, why):
    path = _variant(demo, tmp_path, "client-1.toml", old, new)
    with pytest.raises(SettingsError, match=why):
        load_client(path)


def test_digest_changes_with_every_shared_parameter(demo, tmp_path):
    base = load_client(demo / "client-1.toml").digest()
    for old, new in (("dim = 16", "dim = 17"), ("bits = 32", "bits = 31"),
                     ("epsilon = 8.0", "epsilon = 7.0"), ("dropout_rate = 0.1",
                                                          "dropout_rate = 0.2")):
        sub = tmp_path / old.split()[0]
        sub.mkdir()
        assert load_client(_variant(demo, sub, "client-1.toml", old, new)).digest() != base


@pytest.mark.parametrize("body,why", [
    ("[[client]]\nid = 0\ncert_sha256 = 'ab'\n", "64 hex"),
    ("".join(f"[[client]]\nid = 0\ncert_sha256 = '{c * 64}'\n" for c in "abc"), "twice"),
    ("".join(f"[[client]]\nid = {i}\ncert_sha256 = '{'a' * 64}'\n" for i in range(3)),
     "already registered"),
    ("[[client]]\nid = 0\ncert_sha256 = '" + "a" * 64 + "'\n", "at least 3"),
    ("".join(f"[[client]]\nid = {i}\ncert_sha256 = '{c * 64}'\ned25519 = 'zz'\n"
             for i, c in enumerate("abc")), "ed25519"),
    ("".join(f"[[client]]\nid = {i}\ncert_sha256 = '{c * 64}'\nnick = 'x'\n"
             for i, c in enumerate("abc")), "unknown keys"),
])
def test_bad_registry(tmp_path, body, why):
    (tmp_path / "r.toml").write_text(body)
    with pytest.raises(SettingsError, match=why):
        load_registry(tmp_path / "r.toml")


_UNSERVABLE = {
    "three-clients": (dict(n=3), None, None),
    "four-clients-malicious": (dict(n=4, mode="malicious"), None, None),
    "threshold-above-degree": ({}, "[round]\n", "[round]\nthreshold = 9\n"),
    "min-survivors-above-cohort": ({}, "[round]\n", "[round]\nmin_survivors = 9\n"),
    "dp-n-min-above-cohort": (dict(dp=True), "[dp]\n", "[dp]\nmin_survivors = 9\n"),
}


@pytest.mark.parametrize("case", sorted(_UNSERVABLE))
def test_settings_refuse_round_parameters_the_cohort_cannot_meet(tmp_path, case):
    opts, old, new = _UNSERVABLE[case]
    d = deploy_demo(tmp_path, **opts)
    if old is not None:
        for name in ("server.toml", "client-0.toml"):
            edit_file(d / name, old, new)
    with pytest.raises(SettingsError):
        load_server(d / "server.toml")
    with pytest.raises(SettingsError):
        load_client(d / "client-0.toml")


@pytest.mark.parametrize("party,opts,old,new", [
    ("server", dict(n=3), None, None),
    ("server", dict(n=3, dp=True), None, None),
    ("server", dict(dp=True), "[dp]\n", "[dp]\nmin_survivors = 9\n"),
    ("client", dict(n=3, dp=True), None, None),
])
def test_cli_exits_2_on_round_parameters_the_cohort_cannot_meet(tmp_path, party, opts, old, new):
    from protocol.cli import main

    d = deploy_demo(tmp_path, **opts)
    edit_file(d / "server.toml", "between_rounds = 2.0", "join_timeout = 0.0\nbetween_rounds = 2.0")
    edit_file(d / "client-0.toml", "\ndim = ", "\nconnect_timeout = 1.0\ndim = ")
    if old is not None:
        for name in ("server.toml", "client-0.toml"):
            edit_file(d / name, old, new)
    if party == "server":
        argv = ["server", "--config", str(d / "server.toml")]
    else:
        argv = ["client", "--config", str(d / "client-0.toml"), "--input",
                str(d / "update-0.npy")]
    assert main(argv) == 2


@pytest.mark.parametrize("name,old,new", [
    ("server.toml", "port = 0\n", "port = 0\nmax_message_bytes = 100\n"),
    ("client-0.toml", "\ndim = ", "\ninput_timeout = 0.0\ndim = "),
], ids=["message-bound-below-every-message", "input-timeout-zero"])
def test_settings_refuse_values_that_make_every_round_fail(tmp_path, name, old, new):
    d = deploy_demo(tmp_path)
    edit_file(d / name, old, new)
    with pytest.raises(SettingsError):
        if name == "server.toml":
            AggregationServer(load_server(d / name), JsonLog(io.StringIO(), party="server"))
        else:
            load_client(d / name)


def test_config_digest_ignores_spelling_but_not_content(tmp_path):
    d = deploy_demo(tmp_path, dp=True)
    base = load_client(d / "client-1.toml").digest()
    assert load_server(d / "server.toml").digest() == base
    # ints for floats, upper-case fingerprints, registry entries in another order: same digest
    reg = (d / "registry.toml").read_text()
    head, *blocks = reg.split("[[client]]")
    (d / "registry.toml").write_text(head + "".join(
        "[[client]]" + b.replace(b.split('cert_sha256 = "')[1][:64],
                                 b.split('cert_sha256 = "')[1][:64].upper())
        for b in reversed(blocks)))
    edit_file(d / "client-1.toml", "epsilon = 8.0", "epsilon = 8")
    assert load_client(d / "client-1.toml").digest() == base
    # swapping two clients' certificates is another deployment
    fp0 = load_client(d / "client-1.toml").registry.members[0].cert_sha256
    fp1 = load_client(d / "client-1.toml").registry.members[1].cert_sha256
    text = (d / "registry.toml").read_text()
    text = text.replace(fp0.upper(), "@@").replace(fp1.upper(), fp0).replace("@@", fp1)
    (d / "registry.toml").write_text(text)
    assert load_client(d / "client-1.toml").digest() != base


@pytest.mark.parametrize("name,old,new,why", [
    ("server.toml", "port = 0", "port = true", "port must be int"),
    ("server.toml", "between_rounds = 2.0", "join_timeout = inf\nbetween_rounds = 2.0", "finite"),
    ("server.toml", "between_rounds = 2.0", "join_timeout = nan\nbetween_rounds = 2.0", "finite"),
    ("server.toml", "[deadlines]\n", "[deadlines]\nsetup = 1.0\n", "unknown keys"),
    ("server.toml", "[round]\n", "[round]\ncomplete_graph = 1\n", "complete_graph must be bool"),
    ("server.toml", "[round]\n", "[round]\nsalt = 1\n", "unknown keys"),
    ("server.toml", 'mechanism = "skellam"', 'mechanism = "laplace"', "mechanism"),
    ("server.toml", "delta = 1e-05", "delta = 1.5", "delta"),
    ("server.toml", 'ca = "ca.pem"', "ca = 5", "ca must be str"),
    ("client-0.toml", "id = 0", "id = -1", "outside"),
    ("client-0.toml", "\ndim = ", '\nconnect_timeout = "30"\ndim = ', "must be float"),
])
def test_bad_settings_name_the_key(tmp_path, name, old, new, why):
    d = deploy_demo(tmp_path, dp=True)
    edit_file(d / name, old, new)
    loader = load_server if name == "server.toml" else load_client
    with pytest.raises(SettingsError, match=why):
        loader(d / name)


# -- logs --------------------------------------------------------------------------------
def test_log_lines_are_json_with_the_fields():
    buf = io.StringIO()
    log = JsonLog(buf, party="server")
    log("client-dropped", level="warning", round=3, stage="share_keys", client=7,
        reason="deadline missed", survivors={3, 1, 2})
    row = json.loads(buf.getvalue())
    assert row["event"] == "client-dropped" and row["round"] == 3 and row["client"] == 7
    assert row["stage"] == "share_keys" and row["reason"] == "deadline missed"
    assert row["survivors"] == [1, 2, 3] and row["party"] == "server"


@pytest.mark.parametrize("value", [b"\x01" * 32, bytearray(4), np.zeros(3), [b"x"], {"a": 1},
                                   memoryview(b"ab")])
def test_log_refuses_anything_that_could_be_key_material(value):
    log = JsonLog(io.StringIO(), party="x")
    with pytest.raises(TypeError, match="not loggable"):
        log("event", secret=value)


def test_log_cuts_long_text():
    buf = io.StringIO()
    JsonLog(buf, party="x")("e", reason="r" * 5000)
    assert len(json.loads(buf.getvalue())["reason"]) == 300


@pytest.mark.parametrize("value", [np.uint64(7), np.int32(3), [1, True], (1, b"x"), {1: 2}])
def test_log_refuses_numpy_scalars_bools_in_id_lists_and_containers(value):
    with pytest.raises(TypeError, match="not loggable"):
        JsonLog(io.StringIO(), party="x")("event", field=value)


# -- errors, exit codes, key files -------------------------------------------------------
def test_transport_errors_are_not_protocol_errors():
    for cls in (NetError, SettingsError, CertificateError, TransportError, ConnectionLost,
                ServerRefused, RoundFailed):
        assert issubclass(cls, NetError) and not issubclass(cls, ProtocolError)
    assert issubclass(SettingsError, ValueError)  # a bad configuration value
    assert not issubclass(ConnectionLost, ValueError) and issubclass(ConnectionLost,
                                                                      TransportError)
    assert issubclass(ServerRefused, TransportError)
    assert not issubclass(RoundFailed, TransportError)


def test_exit_codes_of_server_and_client():
    assert [(c.name, int(c)) for c in ExitCode] == [
        ("OK", 0), ("ERROR", 1), ("CONFIG", 2), ("ABORTED", 3), ("BUDGET", 4),
        ("SERVER_REFUSED", 5), ("UNREACHABLE", 6)]
    buf = io.StringIO()
    JsonLog(buf, party="x")("exit", code=ExitCode.CONFIG)
    assert json.loads(buf.getvalue())["code"] == 2


def test_printable_ascii_fits_a_frame():
    text = printable_ascii("tab\there\nnewline \u00e9" + "x" * 400)
    assert text.startswith("tab?here?newline ?") and len(text) == MAX_TEXT
    assert decode_frame(encode_frame(Bye(text))) == (BYE, Bye(text))


def test_signing_key_files(tmp_path):
    key = tmp_path / "k.ed25519"
    key.write_text("11" * 32 + "\n")
    assert load_signing_key(key).private_bytes_raw() == bytes([0x11]) * 32
    for body in ("zz", "11" * 31):
        key.write_text(body)
        with pytest.raises(SettingsError, match="cannot load the Ed25519 key"):
            load_signing_key(key)
    with pytest.raises(SettingsError, match="cannot load"):
        load_signing_key(tmp_path / "missing")


# -- certificates ------------------------------------------------------------------------
def test_certificates_have_the_right_roles():
    ca_key, ca = make_ca()
    _, srv = make_leaf(ca_key, ca, "secagg-server", server=True, hosts=("127.0.0.1", "h.test"))
    _, cli = make_leaf(ca_key, ca, "secagg-client-3", server=False)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for leaf, eku in ((srv, ExtendedKeyUsageOID.SERVER_AUTH),
                      (cli, ExtendedKeyUsageOID.CLIENT_AUTH)):
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
            [eku]
        ca.public_key().verify(leaf.signature, leaf.tbs_certificate_bytes,
                               ec.ECDSA(leaf.signature_hash_algorithm))
    names = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert SERVER_NAME in names.get_values_for_type(x509.DNSName)
    assert "h.test" in names.get_values_for_type(x509.DNSName)
    with pytest.raises(x509.ExtensionNotFound):  # a client certificate names no host
        cli.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert fingerprint(cli) != fingerprint(srv) and len(fingerprint(cli)) == 64


# -- used sessions -----------------------------------------------------------------------
def test_session_set_persists_and_never_forgets(tmp_path):
    path = tmp_path / "sessions"
    s = SessionSet(path)
    s.add(b"\x01" * 32)
    s.add(b"\x01" * 32)
    s.add(b"\x02" * 32)
    assert path.read_text().split() == ["01" * 32, "02" * 32]
    again = SessionSet(path)
    assert b"\x01" * 32 in again and len(again) == 2
    with pytest.raises(TypeError):
        again.discard(b"\x01" * 32)


def test_malicious_client_without_state_dir_is_refused(tmp_path):
    """A malicious-mode client must keep its used sessions where a restart finds them."""
    d = tmp_path / "mal"
    write_demo(d, DemoOptions(clients=8, port=50998, dim=16, seed=2, dp=False,
                              mode="malicious"))
    assert load_client(d / "client-1.toml").state_dir == d / "state" / "client-1"
    text = (d / "client-1.toml").read_text().replace('state_dir = "state/client-1"\n', "")
    (d / "client-1.toml").write_text(text)
    with pytest.raises(SettingsError, match="malicious mode needs state_dir"):
        load_client(d / "client-1.toml")


def test_semi_honest_client_state_dir_defaults_beside_its_config(demo, tmp_path):
    path = _variant(demo, tmp_path, "client-1.toml", 'state_dir = "state/client-1"\n', "")
    assert load_client(path).state_dir == tmp_path / "state" / "client-1"


@given(st.binary(min_size=32, max_size=32), st.integers(0, 2**32 - 1),
       st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=256))
def test_decline_round_trip(sid, rnd, reason):
    kind, body = decode_frame(encode_frame(Decline(sid, rnd, reason)))
    assert kind == DECLINE and body == Decline(sid, rnd, reason)
