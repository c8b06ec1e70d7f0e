"""Regenerate the whole-round known-answer transcripts in ``transcripts/`` (see its README.md).

Run from the repository root: ``.venv/bin/python tests/vectors/make_transcripts.py``.

Each scenario runs one round of Bonawitz et al. (CCS 2017) section 4 over the SecAgg+ graph of
Bell et al. (CCS 2020) section 3 with the real :class:`protocol.server.ServerRound` and real
:class:`protocol.client.ClientRound` objects, through :class:`protocol.driver.RoundDriver`,
every message passing through :mod:`protocol.wire` (wire version 2). Every value that would be
fresh is derived:

* client u's draws (its X25519 keys, b_u, Shamir dealing ids and coefficients, AEAD nonces;
  :mod:`secagg.randomness`) come from :class:`DerivedSource`, installed around each of u's
  calls with :func:`secagg.hazmat.fixed_randomness`: draw number i (0, 1, ... in the order u
  makes them) of n bytes is the first n bytes of
  ``SHA-256(f"{LABEL}/{scenario}/randomness/{u}/{i}/0") || SHA-256(".../{u}/{i}/1") || ...``,
  and a draw below m is the big-endian integer of the first ceil(bits(m) / 8) + 16 such bytes,
  reduced mod m;
* identities (malicious mode): client u's Ed25519 private key is the 32 bytes of the same
  stream with the label ``f"{LABEL}/{scenario}/identity"``, client u, counter 0;
* the session id is the 32 bytes of that stream with the label ``f"{LABEL}/{scenario}/session"``,
  client 0, counter 0, given to the server explicitly; the round number is :data:`ROUND`;
* inputs: coordinate i of client u is ``0x9E3779B9 * (u * dim + i + 1) mod 2^bits``; in the
  ``dp`` scenario the input is the ring vector :meth:`protocol.dp_plan.DPClient.prepare` makes
  from the update in :func:`dp_update`, its randomized rounding and noise drawn from
  :class:`dp.randomness.CryptoRandom` with the explicit seed of the stream labelled
  ``f"{LABEL}/dp/noise"``, client u, counter 0.

The server draws nothing through :mod:`secagg.randomness` (a draw outside a client's call
raises); its only other randomness, the dual-code checks of Shamir reconstruction, is the
verifier's and does not reach the wire. ``made`` is a constant, so regenerating leaves every
file byte-identical; ``tests/protocol/test_transcripts.py`` checks that, and replays each file
through a fresh client and server.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dp.randomness import CryptoRandom
from protocol import ClientRound, RoundConfig, ServerRound, decode, encode
from protocol.dp_plan import DPClient, DPConfig, DPPlan, plan_dp
from protocol.driver import DropReason, Host, RoundDriver, StageRun
from protocol.messages import Message
from protocol.transitions import Stage
from secagg.hazmat import ed25519_from_private_bytes, fixed_randomness

HERE = Path(__file__).parent
OUT = HERE / "transcripts"
LABEL = "secagg-transcripts/v1"
GENERATOR = "tests/vectors/make_transcripts.py"
MADE = "2026-12-02"
FORMAT = 1
ROUND = 7
DIM = 8
#: The DP deployment of the ``dp`` scenario (noise multiplier given: no accountant search).
DP_CONFIG = DPConfig(clip_norm=1.0, epsilon=8.0, delta=1e-5, rounds=1, noise_multiplier=1.0)

RANDOMNESS = (
    "client u's draw number i (counted from 0 over all its draws, in order) is taken from "
    "S(L, u, i) = SHA-256(f'{L}/{u}/{i}/0') || SHA-256(f'{L}/{u}/{i}/1') || ... (ASCII) with "
    f"L = '{LABEL}/<scenario>/randomness': a 'bytes' draw of n is the first n bytes, a "
    "'below' draw of m is the big-endian integer of the first ceil(bitlen(m)/8) + 16 bytes "
    f"mod m. Ed25519 identity of u: the first 32 bytes of S('{LABEL}/<scenario>/identity', u, "
    f"0). Session id: the first 32 bytes of S('{LABEL}/<scenario>/session', 0, 0). Input "
    "coordinate i of client u: 0x9E3779B9 * (u * dim + i + 1) mod 2^bits (except the dp "
    "scenario, see notes). Every value is also recorded under 'randomness'."
)


def stream(label: str, client: int, counter: int, n: int) -> bytes:
    """The first ``n`` bytes of S(label, client, counter) (see the module docstring)."""
    out, block = b"", 0
    while len(out) < n:
        out += hashlib.sha256(f"{label}/{client}/{counter}/{block}".encode()).digest()
        block += 1
    return out[:n]


class DerivedSource:
    """Client ``client``'s randomness source for :func:`secagg.hazmat.fixed_randomness`: every
    draw derived from (label, client, counter) and recorded as the transcript lists it."""

    def __init__(self, label: str, client: int) -> None:
        self.label, self.client = label, client
        self.draws: list[list] = []

    def __call__(self, purpose: str, kind: str, arg: int) -> bytes | int:
        i = len(self.draws)
        if kind == "bytes":
            value = stream(self.label, self.client, i, arg)
            self.draws.append([purpose, kind, arg, value.hex()])
            return value
        raw = stream(self.label, self.client, i, (arg.bit_length() + 7) // 8 + 16)
        below = int.from_bytes(raw, "big") % arg
        self.draws.append([purpose, kind, str(arg), str(below)])
        return below


def _server_draw(purpose: str, kind: str, arg: int) -> bytes | int:
    raise RuntimeError(f"a draw ({purpose}) outside a client's call: the transcript would not "
                       "be reproducible")


@dataclass(frozen=True)
class Scenario:
    name: str
    n: int
    bits: int
    mode: str = "semi-honest"
    neighbours: int = 4
    threshold: int = 3
    drops: Mapping[int, Stage] = field(default_factory=dict)  # client -> stage it drops at
    dp: bool = False
    notes: str = ""

    def round_config(self) -> RoundConfig:
        return RoundConfig(bits=self.bits, mode=self.mode, threshold=self.threshold,
                           neighbours=self.neighbours)


S = Stage
SCENARIOS = (
    Scenario("no-dropout", 6, 16, notes="semi-honest; every client answers every stage."),
    Scenario("drop-at-advertise-keys", 6, 16, drops={2: S.ADVERTISE_KEYS},
             notes="semi-honest; client 2 receives the Setup and sends nothing."),
    Scenario("drop-at-share-keys", 6, 16, drops={3: S.SHARE_KEYS},
             notes="semi-honest; client 3 advertises keys, receives its key broadcast and "
                   "sends nothing from then on (its neighbours still dealt it shares)."),
    Scenario("drop-at-masked-input", 6, 32, drops={1: S.MASKED_INPUT},
             notes="semi-honest; client 1 shares its keys, is sent its shares and sends no "
                   "masked input: its s_u^SK is reconstructed and its pairwise masks removed."),
    Scenario("drop-at-unmasking", 6, 32, drops={4: S.UNMASKING},
             notes="semi-honest; client 4's masked input is in the sum, it sends no unmasking "
                   "response: its b_u is reconstructed from its neighbours' shares."),
    Scenario("malicious", 8, 32, mode="malicious", drops={5: S.MASKED_INPUT},
             notes="malicious mode: signed keys, key commitment with inclusion proofs, "
                   "consistency check; Ed25519 identities and registry as recorded, a fresh "
                   "used-session store (a set) per identity; client 5 drops at masked input."),
    Scenario("drop-at-consistency-check", 8, 32, mode="malicious",
             drops={6: S.CONSISTENCY_CHECK},
             notes="malicious mode; client 6's masked input is in the sum, it receives the "
                   "consistency request and signs nothing; the others unmask it."),
    Scenario("dp", 6, 32, dp=True),
)


def inputs_for(sc: Scenario, dim: int) -> np.ndarray:
    """The plain ring inputs (not the dp scenario): 0x9E3779B9 (u dim + i + 1) mod 2^bits."""
    dtype = np.uint32 if sc.bits <= 32 else np.uint64
    return np.array([[(0x9E3779B9 * (u * dim + i + 1)) % (1 << sc.bits) for i in range(dim)]
                     for u in range(sc.n)], dtype=dtype)


def dp_update(u: int, dim: int) -> np.ndarray:
    """Client u's real-valued update in the dp scenario: ((3u + 5i) mod 11 - 5) / 16."""
    return np.array([((3 * u + 5 * i) % 11 - 5) / 16 for i in range(dim)], dtype=np.float64)


def dp_inputs(plan: DPPlan, n: int, session_id: bytes) -> np.ndarray:
    """The ring vectors the real DP client path makes (clip, rotate, scale, round, Skellam
    noise, wrap), each client's randomness an explicitly seeded CryptoRandom; no ledger."""
    rows = []
    for u in range(n):
        rng = CryptoRandom(stream(f"{LABEL}/dp/noise", u, 0, 32))
        rows.append(DPClient(u, plan).prepare(dp_update(u, plan.update_dim),
                                              session_id=session_id, round=ROUND, rng=rng))
    return np.array(rows)


def dp_notes(plan: DPPlan) -> str:
    c, e = plan.config, plan.encoding
    return (
        "the transcript starts at the ring vector: each client's input is the DP-encoded, "
        "noised ring vector made by protocol.dp_plan.DPClient.prepare (no ledger) from the "
        f"update ((3u + 5i) mod 11 - 5) / 16, i < {plan.update_dim}, with randomized rounding "
        "and noise from dp.randomness.CryptoRandom(seed = first 32 bytes of "
        f"S('{LABEL}/dp/noise', u, 0)) and the rotation from the public per-round seed. The "
        "round configuration is protocol.dp_plan.plan_dp(DPConfig(clip_norm="
        f"{c.clip_norm}, epsilon={c.epsilon}, delta={c.delta}, rounds={c.rounds}, "
        f"mechanism='{c.mechanism}', noise_multiplier={c.noise_multiplier}), "
        f"RoundConfig(bits=32, threshold=3, neighbours=4), {plan.cohort}, {plan.update_dim})"
        f".round_config: min_survivors raised to n_min = {plan.n_min}; encoding gamma = "
        f"{e.gamma}, padded dim {e.padded_dim}, local variance {plan.local_variance!r}. "
        "DPServer(plan).finish(aggregate, session_id=..., round=...) decodes the result."
    )


class _Recorder(Host):
    """The driver's host: each client answers at once under its own source, every message is
    recorded in the order sent, a scheduled client is dropped when its stage opens."""

    def __init__(self, clients: Mapping[int, ClientRound], sources: Mapping[int, DerivedSource],
                 drops: Mapping[int, Stage]) -> None:
        self._clients, self._sources, self._drops = clients, sources, drops
        self.messages: list[dict] = []

    def deliver(self, run: StageRun) -> None:
        stage = str(run.stage)
        for m in run.outgoing:
            data = encode(m)
            self.messages.append({"stage": stage, "to": m.recipient, "from": None,
                                  "bytes": data.hex()})
            u = m.recipient
            if self._drops.get(u) == run.stage:
                run.drop(u, DropReason.SCHEDULED)
                continue
            with fixed_randomness(self._sources[u]):
                replies: list[Message] = self._clients[u].receive(decode(data))
            for reply in replies:
                raw = encode(reply)
                self.messages.append({"stage": stage, "from": u, "to": None, "bytes": raw.hex()})
                run.accept(decode(raw))


def run_scenario(sc: Scenario) -> dict:
    """Run ``sc``'s round and return its transcript (the JSON document)."""
    session_id = stream(f"{LABEL}/{sc.name}/session", 0, 0, 32)
    config, plan, notes = sc.round_config(), None, sc.notes
    if sc.dp:
        plan = plan_dp(DP_CONFIG, config, sc.n, DIM)
        config, dim = plan.round_config, plan.encoding.padded_dim
        inputs = dp_inputs(plan, sc.n, session_id)
        notes = dp_notes(plan)
    else:
        dim = DIM
        inputs = inputs_for(sc, dim)
    identities = registry = None
    if config.mode == "malicious":
        identities = {u: stream(f"{LABEL}/{sc.name}/identity", u, 0, 32) for u in range(sc.n)}
        registry = {u: ed25519_from_private_bytes(k).verify_key for u, k in identities.items()}
    clients = {u: ClientRound(u, config=config, input=inputs[u].copy(),
                              identity=(ed25519_from_private_bytes(identities[u])
                                        if identities else None),
                              registry=registry,
                              used_sessions=set() if registry else None)
               for u in range(sc.n)}
    sources = {u: DerivedSource(f"{LABEL}/{sc.name}/randomness", u) for u in range(sc.n)}
    server = ServerRound(config, range(sc.n), dim, session_id=session_id, round=ROUND,
                         registry=registry)
    host = _Recorder(clients, sources, sc.drops)
    with fixed_randomness(_server_draw):
        RoundDriver(server, host).run()
    survivors = sorted(server.survivors)
    expected = inputs[survivors].astype(np.uint64).sum(axis=0) % (1 << config.bits)
    assert [int(v) for v in server.aggregate] == [int(v) for v in expected], sc.name
    return {
        "format": FORMAT,
        "scenario": sc.name,
        "provenance": {"generator": GENERATOR, "randomness": RANDOMNESS, "made": MADE,
                       "notes": notes},
        "config": {k: (str(v) if k == "mode" else v) for k, v in asdict(config).items()},
        "cohort": list(range(sc.n)),
        "dim": dim,
        "session_id": session_id.hex(),
        "round": ROUND,
        "registry": ({str(u): k.raw.hex() for u, k in registry.items()} if registry else None),
        "clients": {str(u): {"identity": identities[u].hex() if identities else None,
                             "input": [int(v) for v in inputs[u]],
                             "dropped_at": str(sc.drops[u]) if u in sc.drops else None,
                             "randomness": sources[u].draws}
                    for u in range(sc.n)},
        "messages": host.messages,
        "result": {"aggregate": [int(v) for v in server.aggregate]},
    }


def dumps(value: object, indent: int = 0) -> str:
    """JSON with one line per message, draw and flat list: a container of scalars only is
    written on one line, any other container one item per line."""
    flat = json.dumps(value, separators=(", ", ": "))
    if not isinstance(value, dict | list) or not any(
            isinstance(v, dict | list) for v in (value.values() if isinstance(value, dict)
                                                  else value)):
        return flat
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {dumps(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    items = [f"{inner}{dumps(v, indent + 1)}" for v in value]
    return "[\n" + ",\n".join(items) + f"\n{pad}]"


def transcripts() -> dict[str, str]:
    """file name -> the file's text, for every scenario."""
    return {f"{sc.name}.json": dumps(run_scenario(sc)) + "\n" for sc in SCENARIOS}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, text in transcripts().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name} ({len(text)} bytes)")


if __name__ == "__main__":
    main()
