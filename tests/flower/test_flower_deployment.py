"""Hardened secure aggregation on Flower's deployment engine, as real processes on loopback.

A SuperLink (TLS, SuperNode authentication) and four SuperNodes (TLS to the SuperLink and on
their own Runtime API, each with a P-384 key registered through ``flwr supernode register``
and its own settings file) run the known-update app in ``tests/flower/deploy_app`` through
``flwr run``. The node of partition 3 stalls when its MaskedInput message arrives (which the
server sends only after every node's ShareKeys answer is in) and the test kills its SuperNode,
with the SuperExec and ClientApp processes under it, by SIGKILL to its process group. The round
must complete through dropout recovery: the three survivors' weighted mean (to 1e-6), and the
killed node reported dropped in masked_input. (With ``--enable-supernode-auth`` the SuperLink
gives node ids only to registered keys: the four node ids the round reports are the ones
``flwr supernode register`` returned.)

Every process the test starts, and everything they spawn (ClientApp, SuperExec and ServerApp
processes), is killed in a ``finally`` block: each is started in a session of its own, and
every process of those sessions (and of the sessions their descendants open) is killed.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from protocol import RoundConfig  # noqa: E402

APP = Path(__file__).resolve().parent / "deploy_app"
BIN = Path(sys.executable).parent
N = 4
VICTIM = 3
if not (BIN / "flower-superlink").exists():
    pytest.skip("Flower's executables are not next to this Python", allow_module_level=True)
sys.path.insert(0, str(APP))
from secagg_deploy.known import SUM, expected_update  # noqa: E402

sys.path.remove(str(APP))


# -- certificates and keys ----------------------------------------------------------------------
def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_tls(d: Path) -> dict[str, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1 signed by it."""
    d.mkdir(parents=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secagg test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False),
                         critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    out = {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out["key"].write_bytes(_pem_key(key))
    out["key"].chmod(0o600)
    return out


def make_node_key(d: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's P-384 authentication key pair, OpenSSH format (private 0600)."""
    d.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    priv, pub = d / name, d / f"{name}.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    priv.chmod(0o600)
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                  serialization.PublicFormat.OpenSSH))
    return priv, pub


# -- processes ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _procs(zombies: bool = False) -> dict[int, tuple[int, int]]:
    """pid -> (ppid, session id) of every live process (and of zombies if ``zombies``: dead,
    their parent, or init, has yet to reap them)."""
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if zombies or fields[0] not in ("Z", "X"):
            out[int(p.name)] = (int(fields[1]), int(fields[3]))
    return out


def _sessions_of(roots: set[int]) -> set[int]:
    """The sessions of ``roots`` and of every descendant of theirs (SuperLink starts its
    SuperExec in a session of its own)."""
    table = _procs()
    sids, todo, seen = set(roots), list(roots), set()
    while todo:
        pid = todo.pop()
        seen.add(pid)
        if pid in table:
            sids.add(table[pid][1])
        todo.extend(c for c, (pp, _) in table.items() if pp == pid and c not in seen)
    return sids


class Processes:
    """The processes one test starts, each in a session of its own."""

    def __init__(self, logs: Path, env: dict) -> None:
        self.logs, self.env = logs, env
        self.started: dict[str, subprocess.Popen] = {}
        self.sessions: set[int] = set()
        self._files = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        f = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop_all
        self._files.append(f)
        p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=self.env,
                             start_new_session=True, cwd=self.logs)
        self.started[name] = p
        self.sessions.add(p.pid)
        return p

    def track(self) -> None:
        """Remember the sessions the started processes' descendants have opened so far."""
        self.sessions |= _sessions_of({p.pid for p in self.started.values()})

    def kill(self, name: str) -> None:
        """SIGKILL one started process and everything in its session."""
        p = self.started[name]
        sids = _sessions_of({p.pid})
        self._kill_sessions(sids)
        p.wait(timeout=10)
        deadline = time.monotonic() + 10
        while self._in(sids) and time.monotonic() < deadline:
            time.sleep(0.1)

    def _in(self, sids: set[int]) -> list[int]:
        mine = os.getsid(0)
        return [pid for pid, (_, sid) in _procs().items()
                if sid in sids and sid != mine and pid != os.getpid()]

    def alive(self) -> list[int]:
        return self._in(self.sessions)

    def _kill_sessions(self, sids: set[int]) -> None:
        mine = os.getsid(0)
        for sid in sids - {mine}:
            try:
                os.killpg(sid, signal.SIGKILL)  # the session leader's group
            except (ProcessLookupError, PermissionError):
                pass
        for pid, (_, sid) in _procs().items():
            if sid in sids and sid != mine and pid != os.getpid():
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def stop_all(self) -> None:
        for _ in range(20):
            self.track()
            if not self.alive():
                break
            self._kill_sessions(set(self.sessions))
            time.sleep(0.2)
        for p in self.started.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10  # give init a moment to reap the orphans
        while time.monotonic() < deadline and any(
                sid in self.sessions for _, sid in _procs(zombies=True).values()):
            time.sleep(0.2)
        for f in self._files:
            f.close()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"


def wait_for_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def flwr(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "flwr"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, start_new_session=True, check=False)


def logs_of(d: Path) -> str:
    return "\n".join(f"===== {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted(d.glob("*.log")))


# -- the test -----------------------------------------------------------------------------------
@pytest.mark.timeout(360)
def test_round_survives_a_supernode_killed_mid_round(tmp_path):
    limit = time.monotonic() + 330  # before pytest-timeout, so the logs are shown
    params = RoundConfig(threshold=2).resolve(N)
    assert params.min_survivors <= N - 1 and params.threshold <= N - 1  # one dropout is fine

    logs, home, marks = tmp_path / "logs", tmp_path / "home", tmp_path / "marks"
    for d in (logs, home, marks, home / ".flwr"):
        d.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECAGG_", "FLWR_"))}
    env.update(HOME=str(home), FLWR_HOME=str(home / ".flwr"), PATH=f"{BIN}:{env['PATH']}",
               FLWR_DISABLE_UPDATE_CHECK="1", FLWR_TELEMETRY_ENABLED="0",
               FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", PYTHONUNBUFFERED="1")
    tls = make_tls(tmp_path / "tls")
    link_port = free_port()
    (home / ".flwr" / "config.toml").write_text(
        f'[superlink]\ndefault = "test"\n\n[superlink.test]\n'
        f'address = "127.0.0.1:{link_port}"\nroot-certificates = "{tls["ca"]}"\n')
    result = tmp_path / "result.json"
    procs = Processes(logs, env)
    try:
        procs.start("superlink", [
            str(BIN / "flower-superlink"), "--host", "127.0.0.1", "--port", str(link_port),
            "--ssl-ca-certfile", str(tls["ca"]), "--ssl-certfile", str(tls["cert"]),
            "--ssl-keyfile", str(tls["key"]), "--enable-supernode-auth",
            "--disable-runtime-dependency-installation", "--database",
            str(tmp_path / "superlink.db")])
        wait_for_port(link_port, min(limit, time.monotonic() + 60))

        node_ids = {}
        for p in range(N):
            priv, pub = make_node_key(tmp_path / "keys", f"node-{p}")
            for _ in range(30):  # the Control API answers moments after the port opens
                reg = flwr(env, "supernode", "register", str(pub), "test", "--format", "json")
                if reg.returncode == 0:
                    break
                time.sleep(1)
            assert reg.returncode == 0, reg.stdout + reg.stderr
            node_ids[p] = int(json.loads(reg.stdout[reg.stdout.index("{"):])["node-id"])
            settings = tmp_path / "nodes" / f"node-{p}.toml"
            settings.parent.mkdir(exist_ok=True)
            settings.write_text(
                f'state_dir = "state/node-{p}"\n\n[round]\nthreshold = 2\n\n[sum]\n'
                f"clip_norm = {SUM['clip_norm']!r}\nweighted = {str(SUM['weighted']).lower()}\n"
                f"max_weight = {SUM['max_weight']!r}\n")
            procs.start(f"supernode-{p}", [
                str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{link_port}",
                "--root-certificates", str(tls["ca"]), "--auth-supernode-private-key",
                str(priv), "--host", "127.0.0.1", "--port", str(free_port()),
                "--ssl-ca-certfile", str(tls["ca"]), "--ssl-certfile", str(tls["cert"]),
                "--ssl-keyfile", str(tls["key"]), "--node-config",
                f'partition-id={p} num-partitions={N} secagg-settings="{settings}"'])
        assert len(set(node_ids.values())) == N

        overrides = (f'min-nodes={N} threshold=2 stall-partition={VICTIM} '
                     f'marker-dir="{marks}" result-file="{result}" masked-input-timeout=45.0')
        run = procs.start("flwr-run", [str(BIN / "flwr"), "run", str(APP), "test", "--stream",
                                       "--run-config", overrides])
        stalled = marks / f"stalled-{VICTIM}-masked_input"
        while not stalled.exists():
            assert run.poll() is None, f"the run ended early\n{logs_of(logs)}"
            assert time.monotonic() < limit, f"node {VICTIM} never stalled\n{logs_of(logs)}"
            procs.track()
            time.sleep(0.2)
        # partition 3 answered ShareKeys (the server sent its MaskedInput message only after
        # collecting ShareKeys), and now sits inside its MaskedInput message: kill it
        assert (marks / f"replied-{VICTIM}-share_keys").exists()
        procs.track()
        procs.kill(f"supernode-{VICTIM}")
        assert not procs._in({procs.started[f"supernode-{VICTIM}"].pid})

        while run.poll() is None:
            assert time.monotonic() < limit, f"the run did not end\n{logs_of(logs)}"
            procs.track()
            time.sleep(0.5)
        assert result.exists(), f"no result\n{logs_of(logs)}"
        (rnd,) = json.loads(result.read_text())["rounds"]
        assert rnd["abort"] is None, rnd
        survivors = [p for p in range(N) if p != VICTIM]
        assert rnd["survivors"] == sorted(node_ids[p] for p in survivors), (rnd, node_ids)
        assert list(rnd["dropped"]) == [str(node_ids[VICTIM])], rnd
        assert rnd["dropped"][str(node_ids[VICTIM])].startswith("masked_input"), rnd
        got = np.array(rnd["params"])
        want = expected_update(survivors, 1)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert np.abs(got - expected_update(range(N), 1)).max() > 1e-3  # not all four
        for p in survivors:  # every survivor answered Unmasking
            assert (marks / f"replied-{p}-unmasking").exists()
        assert not (marks / f"replied-{VICTIM}-masked_input").exists()
    finally:
        procs.stop_all()
        left = {pid: _cmdline(pid) for pid in procs.alive()}
    assert not left, f"processes left behind: {left}"
