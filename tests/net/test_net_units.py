"""The transport's pieces without a network: frames, settings, logs, certificates, sessions."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import WireError
from protocol.net.certs import DemoOptions, write_demo
from protocol.net.frames import (
    ABORT,
    BYE,
    DECLINE,
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
    protocol_frame,
)
from protocol.net.jsonlog import JsonLog
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
                                                 1, 0, 0, 0, 2, 5, 0, 0, 0, 6, 0, 0, 0]))
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
    (bytes([1, RESULT]) + SID + bytes([0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 1, 1,
                                       0, 0, 0, 0]), "sorted"),
    (bytes([1, RESULT]) + SID + bytes([0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0]),
     "aggregate type"),
    (bytes([1, RESULT]) + SID + bytes([0, 0, 0, 0, 0, 0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF]),
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
    ("masked_input = 60.0", "masked_input = 0.0", "masked_input"),
    ("masked_input = 60.0", "masked_inptu = 60.0", "unknown keys"),
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
    ("connect_timeout = 30.0", "connect_timeout = 0.0", "connect_timeout"),
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
