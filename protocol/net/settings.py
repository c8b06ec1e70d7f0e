"""Deployment configuration: ``server.toml``, ``client.toml`` and the shared ``registry.toml``.

Strict TOML (unknown keys, wrong types and out-of-range values are refused with the key's
name); relative paths are relative to the file that names them. The registry lists every
cohort member: its id, the SHA-256 fingerprint of its TLS certificate and, in malicious mode,
its Ed25519 identity key (docs/architecture.md section 2). The server and every client must hold the
same registry, round parameters, DP parameters and dimension; :func:`config_digest` hashes them, the
server sends its digest in WELCOME and a client refuses a server whose digest differs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType

from secagg import VerifyKey

from ..config import ConfigError, Mode, RoundConfig
from ..dp_plan import DPConfig
from ..messages import MAX_CLIENT_ID, MAX_VECTOR_BYTES
from ..transitions import STAGES
from .errors import SettingsError

DEFAULT_PORT = 50051
#: Stage deadlines (seconds) of a cohort of up to BASE_COHORT clients and BASE_WORDS words.
DEFAULT_DEADLINES = {"advertise_keys": 30.0, "share_keys": 30.0, "masked_input": 60.0,
                     "consistency_check": 30.0, "unmasking": 30.0}
#: The server's wait for the cohort and a client's wait for its WELCOME, at the same sizes.
DEFAULT_JOIN_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 30.0
BASE_COHORT = 500
MAX_WORKERS = 64
BASE_WORDS = 100_000
#: Connections per second one server admits (TLS handshake, certificate lookup, WELCOME),
#: as the derived timeouts assume it: a fifth of the rate measured on a 2-core machine
#: (benchmarks/RESULTS.md, "Networked round at a thousand clients and beyond").
ADMISSION_RATE_FLOOR = 50.0
#: the stages whose server work grows with the vector as well as with the cohort
_VECTOR_STAGES = ("masked_input", "unmasking")


@dataclass(frozen=True)
class Timeouts:
    """The transport's time limits for a cohort, in seconds: ``connect`` (a client's wait for
    the server's WELCOME, retries included), ``join`` (the server's wait for the whole cohort
    before the first round) and the per-stage ``deadlines``."""

    connect: float
    join: float
    deadlines: dict[str, float]


def derived_timeouts(n: int, words: int) -> Timeouts:
    """The default time limits for ``n`` registered clients and vectors of ``words`` words.

    Up to BASE_COHORT clients and BASE_WORDS words the stage deadlines are the constants
    above. Beyond, every stage deadline grows in proportion to the cohort (the server handles
    one message per client and stage on one event loop), and MaskedInput's and Unmasking's
    also in proportion to the vector (the server sums and unmasks n vectors). The connect and
    join timeouts are the constants above plus the time the whole cohort takes to be admitted
    at ADMISSION_RATE_FLOOR, since a client may be the last of n connecting at once. Each is
    overridable in the settings files."""
    cohort = max(1.0, n / BASE_COHORT)
    vector = max(1.0, words / BASE_WORDS)
    admit = n / ADMISSION_RATE_FLOOR
    deadlines = {st: v * cohort * (vector if st in _VECTOR_STAGES else 1.0)
                 for st, v in DEFAULT_DEADLINES.items()}
    return Timeouts(connect=DEFAULT_CONNECT_TIMEOUT + admit, join=DEFAULT_JOIN_TIMEOUT + admit,
                    deadlines=deadlines)


@dataclass(frozen=True)
class Member:
    id: int
    cert_sha256: str
    ed25519: VerifyKey | None


@dataclass(frozen=True)
class Registry:
    members: Mapping[int, Member]  # read-only when loaded from a file (the load is shared)
    # certificate fingerprint -> member, for the server's lookup at every connection
    _by_fp: dict[str, Member] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_fp", {m.cert_sha256: m for m in self.members.values()})

    @property
    def cohort(self) -> tuple[int, ...]:
        return tuple(sorted(self.members))

    def by_fingerprint(self, fp: str) -> Member | None:
        return self._by_fp.get(fp)

    def verify_keys(self) -> dict[int, VerifyKey] | None:
        if any(m.ed25519 is None for m in self.members.values()):
            return None
        return {u: m.ed25519 for u, m in self.members.items()}


def _load(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None


class _Table:
    """Typed access to one TOML table; every key must be read, so typos are refused."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise SettingsError(f"{where} must be a table")
        self.data, self.where, self.used = data, where, set()

    def get(self, key: str, kind, default=..., *, lo=None, hi=None):
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise SettingsError(f"{self.where}: missing key {key!r}")
            return default
        v = self.data[key]
        ok = isinstance(v, kind) and not (isinstance(v, bool) and kind is not bool)
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v, ok = float(v), True
        if not ok:
            raise SettingsError(f"{self.where}: {key} must be {kind.__name__}, got {v!r}")
        if kind is float and not math.isfinite(v):
            raise SettingsError(f"{self.where}: {key} must be finite, got {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise SettingsError(f"{self.where}: {key} = {v!r} outside [{lo}, {hi}]")
        return v

    def table(self, key: str) -> _Table | None:
        self.used.add(key)
        if key not in self.data:
            return None
        return _Table(self.data[key], f"{self.where} [{key}]")

    def done(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise SettingsError(f"{self.where}: unknown keys {extra}")


def _path(base: Path, t: _Table, key: str, default=...) -> Path | None:
    v = t.get(key, str, default)
    return None if v is None else (base / v)


def load_registry(path: Path) -> Registry:
    """The cohort listed in ``registry.toml``. Raises SettingsError if the file cannot be
    read, a key is missing, unknown or of the wrong type, an id or certificate is listed
    twice, or fewer than 3 clients are registered.

    A process that loads many clients' settings (a load test, several clients in one
    program) parses a registry file once while its path, size and modification time stay
    the same; the Registry is immutable, so sharing it is safe."""
    try:
        st = Path(path).stat()
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror}") from None
    return _parsed_registry(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _parsed_registry(path: str, size: int, mtime_ns: int) -> Registry:
    """The registry at ``path`` (size and mtime_ns are the cache key's part)."""
    data = _Table(_load(Path(path)), path)
    rows = data.get("client", list)
    data.done()
    members: dict[int, Member] = {}
    certs: set[str] = set()
    for i, row in enumerate(rows):
        t = _Table(row, f"{path} client #{i}")
        u = t.get("id", int, lo=0, hi=MAX_CLIENT_ID)
        fp = t.get("cert_sha256", str).lower()
        ed = t.get("ed25519", str, None)
        t.done()
        if len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
            raise SettingsError(f"{path}: client {u}: cert_sha256 must be 64 hex digits")
        try:
            key = VerifyKey(bytes.fromhex(ed)) if ed is not None else None
        except ValueError as exc:
            raise SettingsError(f"{path}: client {u}: bad ed25519 key: {exc}") from None
        if u in members:
            raise SettingsError(f"{path}: client id {u} listed twice")
        if fp in certs:
            raise SettingsError(f"{path}: client {u}: certificate already registered")
        certs.add(fp)
        members[u] = Member(u, fp, key)
    if len(members) < 3:
        raise SettingsError(f"{path}: a cohort needs at least 3 registered clients")
    return Registry(MappingProxyType(members))


def _round_config(t: _Table | None) -> RoundConfig:
    if t is None:
        return RoundConfig()
    kw = {}
    for f in fields(RoundConfig):
        if f.name in t.data:
            kind = {"bits": int, "mode": str, "threshold": int, "neighbours": int,
                    "min_survivors": int, "dropout_rate": float, "corrupt_rate": float,
                    "complete_graph": bool}[f.name]
            kw[f.name] = t.get(f.name, kind)
    t.done()
    try:
        return RoundConfig(**kw)
    except ConfigError as exc:
        raise SettingsError(f"{t.where}: {exc}") from None


def _dp_config(t: _Table | None) -> DPConfig | None:
    if t is None:
        return None
    kinds = {"clip_norm": float, "epsilon": float, "delta": float, "rounds": int,
             "mechanism": str, "min_survivors": int, "noise_multiplier": float,
             "weighted": bool, "max_weight": float, "mean_weight": float,
             "wrap_bound": float, "bits": int, "max_inflation": float}
    kw = {k: t.get(k, kind) for k, kind in kinds.items() if k in t.data}
    t.done()
    try:
        return DPConfig(**kw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{t.where}: {exc}") from None


@dataclass(frozen=True)
class Common:
    """What server and clients must agree on, plus this party's TLS files."""

    dim: int
    registry: Registry
    round: RoundConfig
    dp: DPConfig | None
    ca: Path
    cert: Path
    key: Path

    def digest(self) -> bytes:
        return config_digest(self.dim, self.registry, self.round, self.dp)


def _common(base: Path, t: _Table) -> dict:
    dim = t.get("dim", int, lo=1, hi=MAX_VECTOR_BYTES // 8)
    reg = load_registry(_path(base, t, "registry"))
    rc = _round_config(t.table("round"))
    dp = _dp_config(t.table("dp"))
    if rc.mode == Mode.MALICIOUS and reg.verify_keys() is None:
        raise SettingsError("malicious mode: every registry entry needs an ed25519 key")
    words = runnable(rc, dp, len(reg.members), dim)
    timeouts = derived_timeouts(len(reg.members), words)
    return dict(dim=dim, registry=reg, round=rc, dp=dp, ca=_path(base, t, "ca"),
                cert=_path(base, t, "cert"), key=_path(base, t, "key")), timeouts


def runnable(rc: RoundConfig, dp: DPConfig | None, n: int, dim: int) -> int:
    """The words of the vector the protocol carries (the padded DP encoding, or dim).
    Raises SettingsError if no round over ``n`` clients can meet the round and DP
    parameters."""
    from dp.errors import DPError

    from ..dp_plan import plan_dp

    try:
        rc.resolve(n)
        if dp is None:
            return dim
        return plan_dp(dp, rc, n, dim).encoding.padded_dim
    except (ConfigError, DPError) as exc:
        raise SettingsError(f"no round can run with these parameters for the {n} registered "
                            f"clients: {exc}") from None


def config_digest(dim: int, registry: Registry, rc: RoundConfig, dp: DPConfig | None) -> bytes:
    doc = {"dim": dim,
           "registry": [[m.id, m.cert_sha256, m.ed25519.raw.hex() if m.ed25519 else None]
                        for m in (registry.members[u] for u in registry.cohort)],
           "round": {f.name: getattr(rc, f.name) for f in fields(rc)},
           "dp": None if dp is None else {f.name: getattr(dp, f.name) for f in fields(dp)}}
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(b"secagg-deployment-config\x00" + blob).digest()


@dataclass(frozen=True)
class ServerSettings(Common):
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    rounds: int = 1
    deadlines: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_DEADLINES))
    join_timeout: float = DEFAULT_JOIN_TIMEOUT
    between_rounds: float = 2.0
    round_gap: float = 0.0  # pause after each round (time for the clients' local training)
    max_aborts_in_a_row: int = 3  # the run stops (exit 3) after this many aborted rounds in a row
    max_message_bytes: int = 0  # 0: derived from the vector size
    max_connections: int = 0  # 0: 2 x cohort + 16
    workers: int = 0  # threads that remove masks and decode inputs; 0: one per core
    ledger: Path | None = None
    ledger_key: Path | None = None
    log: Path | None = None
    output_dir: Path | None = None

    def message_bound(self, vector_words: int) -> int:
        # a DP plan chooses its own b (at most 64): bound it by the widest word
        width = 4 if self.round.bits <= 32 and self.dp is None else 8
        auto = vector_words * width + 64 * 1024 + 300 * len(self.registry.members)
        return self.max_message_bytes or auto

    def connection_bound(self) -> int:
        return self.max_connections or 2 * len(self.registry.members) + 16

    def worker_threads(self) -> int:
        """The server's worker threads: ``workers``, or one per core (at most MAX_WORKERS)."""
        return self.workers or max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def load_server(path: str | Path) -> ServerSettings:
    """The settings in ``server.toml`` and the registry it names. Raises SettingsError if a
    file cannot be read, a key is missing, unknown, of the wrong type or out of range, or the
    parameters cannot run a round over the registered cohort."""
    path = Path(path)
    base = path.parent
    t = _Table(_load(path), str(path))
    kw, derived = _common(base, t)
    kw["host"] = t.get("host", str, "127.0.0.1")
    kw["port"] = t.get("port", int, DEFAULT_PORT, lo=0, hi=65535)
    kw["rounds"] = t.get("rounds", int, 1, lo=1, hi=1 << 31)
    kw["join_timeout"] = t.get("join_timeout", float, derived.join, lo=0.0)
    kw["between_rounds"] = t.get("between_rounds", float, 2.0, lo=0.0)
    kw["round_gap"] = t.get("round_gap", float, 0.0, lo=0.0, hi=86400.0)
    kw["max_aborts_in_a_row"] = t.get("max_aborts_in_a_row", int, 3, lo=1, hi=1 << 20)
    kw["max_message_bytes"] = t.get("max_message_bytes", int, 0, lo=0, hi=MAX_VECTOR_BYTES)
    kw["max_connections"] = t.get("max_connections", int, 0, lo=0, hi=1 << 20)
    kw["workers"] = t.get("workers", int, 0, lo=0, hi=MAX_WORKERS)
    for key in ("ledger", "ledger_key", "log", "output_dir"):
        kw[key] = _path(base, t, key, None)
    dl = dict(derived.deadlines)
    d = t.table("deadlines")
    if d is not None:
        for st in STAGES:
            dl[st] = d.get(st, float, dl[st], lo=0.001, hi=86400.0)
        d.done()
    kw["deadlines"] = dl
    t.done()
    if kw["dp"] is not None and kw["ledger"] is None:
        raise SettingsError(f"{path}: a [dp] deployment must name its privacy ledger")
    out = ServerSettings(**kw)
    if out.max_message_bytes:
        words = runnable(out.round, out.dp, len(out.registry.members), out.dim)
        need = ServerSettings.message_bound(dataclasses.replace(out, max_message_bytes=0), words)
        if out.max_message_bytes < need:
            raise SettingsError(f"{path}: max_message_bytes = {out.max_message_bytes} is below "
                                f"the largest message of a round ({need} bytes)")
    return out


DEFAULT_STATE_DIR = "state"


@dataclass(frozen=True)
class ClientSettings(Common):
    id: int = 0
    server: str = f"127.0.0.1:{DEFAULT_PORT}"
    server_name: str | None = None  # TLS name to verify; default: the host in ``server``
    identity: Path | None = None  # Ed25519 private key (hex), malicious mode
    # used session ids (replay protection across restarts); required in malicious mode, and
    # DEFAULT_STATE_DIR/client-<id> beside the configuration file when not given
    state_dir: Path | None = None
    ledger: Path | None = None
    ledger_key: Path | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    input_timeout: float = 120.0
    log: Path | None = None


def load_client(path: str | Path) -> ClientSettings:
    """The settings in ``client.toml`` and the registry it names. Raises SettingsError as
    :func:`load_server` does, and if the client's id is not registered or a file malicious
    mode or DP needs (identity key, state_dir, ledger) is not named."""
    path = Path(path)
    base = path.parent
    t = _Table(_load(path), str(path))
    kw, derived = _common(base, t)
    kw["id"] = t.get("id", int, lo=0, hi=MAX_CLIENT_ID)
    kw["server"] = t.get("server", str, f"127.0.0.1:{DEFAULT_PORT}")
    kw["server_name"] = t.get("server_name", str, None)
    kw["connect_timeout"] = t.get("connect_timeout", float, derived.connect, lo=0.1)
    kw["input_timeout"] = t.get("input_timeout", float, 120.0, lo=0.1)
    for key in ("identity", "state_dir", "ledger", "ledger_key", "log"):
        kw[key] = _path(base, t, key, None)
    t.done()
    if kw["id"] not in kw["registry"].members:
        raise SettingsError(f"{path}: client id {kw['id']} is not in the registry")
    if kw["round"].mode == Mode.MALICIOUS and kw["identity"] is None:
        raise SettingsError(f"{path}: malicious mode needs the client's identity key file")
    if kw["state_dir"] is None:
        if kw["round"].mode == Mode.MALICIOUS:
            raise SettingsError(f"{path}: malicious mode needs state_dir, where the sessions "
                                "this client took part in are kept across restarts")
        kw["state_dir"] = base / DEFAULT_STATE_DIR / f"client-{kw['id']}"
    if kw["dp"] is not None and kw["ledger"] is None:
        raise SettingsError(f"{path}: a [dp] deployment must name this client's ledger")
    return ClientSettings(**kw)
