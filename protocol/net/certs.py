"""``secagg certs``: a deployment CA, the server's and N clients' certificates, the registry and
the configuration files of a local demo (all on 127.0.0.1), plus example inputs.

Everything is written into one directory; private keys are created 0600. The CA key is kept
there so more clients can be added; in a real deployment it lives offline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .settings import Timeouts, derived_timeouts
from .tls import cert_pem, fingerprint, key_pem, make_ca, make_leaf, write_private


@dataclass(frozen=True)
class DemoOptions:
    clients: int = 8
    port: int = 50051
    dim: int = 1000
    rounds: int = 3
    mode: str = "semi-honest"
    dp: bool = True
    epsilon: float = 8.0
    delta: float = 1e-5
    clip_norm: float = 1.0
    bits: int = 32
    deadline: float | None = None  # every stage; None: the defaults
    seed: int | None = None  # example inputs only


def _q(s: str) -> str:
    return json.dumps(s)  # a TOML basic string for plain ASCII


def _ed25519_hex() -> tuple[str, str]:
    k = Ed25519PrivateKey.generate()
    priv = k.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                           serialization.NoEncryption())
    pub = k.public_key().public_bytes(serialization.Encoding.Raw,
                                      serialization.PublicFormat.Raw)
    return priv.hex(), pub.hex()


def _shared(o: DemoOptions) -> str:
    text = (f'dim = {o.dim}\nregistry = "registry.toml"\nca = "ca.pem"\n\n'
            f'[round]\nbits = {o.bits}\nmode = {_q(o.mode)}\ndropout_rate = 0.1\n'
            f'corrupt_rate = 0.05\n')
    if o.dp:
        text += (f"\n[dp]\nclip_norm = {o.clip_norm!r}\nepsilon = {o.epsilon!r}\n"
                 f"delta = {o.delta!r}\nrounds = {o.rounds}\nmechanism = \"skellam\"\n")
    return text


def _deadlines(o: DemoOptions, derived: Timeouts) -> str:
    """The body of server.toml's [deadlines]: ``o.deadline`` for every stage when given, else
    the derived defaults as comments (so they keep following the cohort)."""
    if o.deadline is not None:
        return "".join(f"{st} = {o.deadline!r}\n" for st in derived.deadlines)
    return ("# by default derived from the cohort and the vector; for this one:\n"
            + "".join(f"# {st} = {v:g}\n" for st, v in derived.deadlines.items()))


def write_demo(out: str | Path, o: DemoOptions) -> list[Path]:
    """Write the demo deployment into ``out`` (created; existing key files are refused).
    Raises ConfigError or a DPError if the round or DP options are invalid, SettingsError if
    no round over the clients can run with them, FileExistsError if ``out`` already holds a
    deployment, OSError if a file cannot be written."""
    from ..config import RoundConfig
    from ..dp_plan import DPConfig
    from .settings import runnable

    dp = DPConfig(clip_norm=o.clip_norm, epsilon=o.epsilon, delta=o.delta, rounds=o.rounds,
                  mechanism="skellam") if o.dp else None
    words = runnable(RoundConfig(bits=o.bits, mode=o.mode), dp, o.clients, o.dim)  # first
    derived = derived_timeouts(o.clients, words)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "ca.key").exists():
        raise FileExistsError(f"{out} already holds a deployment (ca.key); use a new directory")
    written: list[Path] = []

    def put(name: str, data: bytes | str, *, secret: bool = False) -> None:
        path = out / name
        raw = data.encode() if isinstance(data, str) else data
        if secret:
            write_private(path, raw)
        else:
            path.write_bytes(raw)
        written.append(path)

    ca_key, ca = make_ca()
    put("ca.pem", cert_pem(ca))
    put("ca.key", key_pem(ca_key), secret=True)
    s_key, s_cert = make_leaf(ca_key, ca, "secagg-server", server=True,
                              hosts=("127.0.0.1", "localhost"))
    put("server.pem", cert_pem(s_cert))
    put("server.key", key_pem(s_key), secret=True)
    ledger_priv, ledger_pub = _ed25519_hex()
    put("server-ledger.ed25519", ledger_priv + "\n", secret=True)
    put("server-ledger.pub", ledger_pub + "\n")
    registry = ["# The cohort: client id, SHA-256 of its TLS certificate (DER), Ed25519 "
                "identity key.\n"]
    rng = np.random.default_rng(o.seed)
    for u in range(o.clients):
        c_key, c_cert = make_leaf(ca_key, ca, f"secagg-client-{u}", server=False)
        put(f"client-{u}.pem", cert_pem(c_cert))
        put(f"client-{u}.key", key_pem(c_key), secret=True)
        id_priv, id_pub = _ed25519_hex()
        put(f"client-{u}.ed25519", id_priv + "\n", secret=True)
        registry.append(f"\n[[client]]\nid = {u}\ncert_sha256 = {_q(fingerprint(c_cert))}\n"
                        f"ed25519 = {_q(id_pub)}\n")
        put(f"client-{u}.toml",
            f"# secagg client {u}: secagg client --config client-{u}.toml --input "
            f"update-{u}.npy\nid = {u}\nserver = \"127.0.0.1:{o.port}\"\n"
            f'cert = "client-{u}.pem"\nkey = "client-{u}.key"\n'
            f'identity = "client-{u}.ed25519"\nstate_dir = "state/client-{u}"\n'
            + (f'ledger = "state/client-{u}/ledger.jsonl"\n' if o.dp else "")
            + f'log = "state/client-{u}/log.jsonl"\n'
            + "# connect_timeout: the wait for the server's welcome, retries included; by "
            f"default\n# derived from the cohort ({derived.connect:g} s for {o.clients} clients)"
            "\n" + _shared(o))
        if o.dp:  # a model delta of norm about the clip norm
            x = rng.normal(size=o.dim) * (o.clip_norm / np.sqrt(o.dim))
        else:
            x = rng.integers(0, 1 << min(o.bits, 20), size=o.dim,
                             dtype=np.uint64).astype(np.uint32 if o.bits <= 32 else np.uint64)
        np.save(out / f"update-{u}.npy", x)
        written.append(out / f"update-{u}.npy")
    put("registry.toml", "".join(registry))
    put("server.toml",
        "# secagg server --config server.toml\n"
        f'host = "127.0.0.1"\nport = {o.port}\nrounds = {o.rounds}\n'
        'cert = "server.pem"\nkey = "server.key"\n'
        + ('ledger = "state/server-ledger.jsonl"\nledger_key = "server-ledger.ed25519"\n'
           if o.dp else "")
        + 'log = "state/server.log.jsonl"\noutput_dir = "state/aggregates"\n'
        "# join_timeout: the wait for the whole cohort before the first round; by default\n"
        f"# derived from the cohort ({derived.join:g} s for {o.clients} clients)\n"
        "between_rounds = 2.0\n"
        + _shared(o) + "\n[deadlines]\n" + _deadlines(o, derived))
    (out / "state").mkdir(exist_ok=True)
    return written
