"""One round in one process: the server and n clients exchanging real encoded bytes.

The driver plays the network and the clock: it encodes every message with
:mod:`protocol.wire`, decodes it at the receiver, applies the dropout schedule, and closes each
stage once every live client has answered. A client listed under a stage in ``dropouts`` sends
nothing from that stage on (it may have sent its previous message and then vanished).
"""

from __future__ import annotations

import hashlib
import time
import tracemalloc
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from secagg import SigningKey

from .client import ClientRound
from .config import RoundConfig
from .errors import ProtocolError, RemoteProtocolError
from .messages import Message
from .server import ServerRound
from .sessions import store_for_identity
from .transitions import STAGES
from .wire import decode, encode


@dataclass
class Traffic:
    """Messages and bytes one party sent and received in one stage."""

    sent_messages: int = 0
    sent_bytes: int = 0
    received_messages: int = 0
    received_bytes: int = 0
    seconds: float = 0.0  # time inside this party's protocol calls (encoding excluded)


@dataclass
class StageRecord:
    server: Traffic = field(default_factory=Traffic)
    clients: dict[int, Traffic] = field(default_factory=dict)
    seconds: float = 0.0
    refused: list[str] = field(default_factory=list)  # messages a receiver refused, and why

    def client(self, u: int) -> Traffic:
        return self.clients.setdefault(u, Traffic())


@dataclass
class Transcript:
    """Per stage (the names in STAGES): the server's messages that open the stage, the clients'
    replies, and the messages a receiver refused."""

    stages: dict[str, StageRecord] = field(default_factory=dict)

    def bytes_sent_by(self, u: int) -> int:
        return sum(s.clients[u].sent_bytes for s in self.stages.values() if u in s.clients)

    def bytes_received_by(self, u: int) -> int:
        return sum(s.clients[u].received_bytes for s in self.stages.values() if u in s.clients)

    def client_seconds(self, u: int) -> float:
        return sum(s.clients[u].seconds for s in self.stages.values() if u in s.clients)

    def server_seconds(self) -> float:
        return sum(s.server.seconds for s in self.stages.values())


@dataclass
class SimulationResult:
    aggregate: np.ndarray
    survivors: frozenset[int]
    transcript: Transcript
    params: object
    server_retained_bytes: int = 0
    server_peak_bytes: int | None = None  # measured only with track_memory=True


Hook = Callable[[str, list[Message]], list[Message]]


def simulate_round(  # noqa: PLR0915 - the driver reads best as one sequence of stages
    inputs: np.ndarray,
    config: RoundConfig | None = None,
    dropouts: Mapping[str, Iterable[int]] | None = None,
    seed: int | None = None,
    *,
    server_factory: Callable[..., ServerRound] = ServerRound,
    server_hook: Hook | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    track_memory: bool = False,
    session_id: bytes | None = None,
    round: int = 0,  # noqa: A002 - the protocol's round number
    identities: Mapping[int, SigningKey] | None = None,
) -> SimulationResult:
    """Run one round over the rows of ``inputs`` ((n, d) integers in [0, 2^bits)).

    ``seed`` fixes only public values (the session id, hence the graph ordering); every key,
    mask seed and Shamir coefficient still comes from the operating system's CSPRNG.
    ``server_hook(stage, messages)`` may rewrite the server's outgoing messages (tests use it
    to play an adversarial server). ``session_id`` and ``round`` fix the session (a given
    ``session_id`` overrides the one ``seed`` would derive). ``track_memory`` measures the
    server's peak memory with tracemalloc: its retained state plus what each of its calls
    allocates (slower). In malicious mode ``identities`` (client -> SigningKey; fresh ones if
    omitted) are the clients' long-term keys, and each identity's used sessions are kept in
    its one in-process store (:func:`protocol.sessions.store_for_identity`), so a session id
    run again with the same identities is refused, whichever call runs it.
    Raises a :class:`ProtocolError` subclass on abort.
    """
    config = config if config is not None else RoundConfig()
    if not isinstance(inputs, np.ndarray) or inputs.ndim != 2:
        raise ProtocolError("inputs must be a 2-D (n, d) integer numpy array")
    n, d = inputs.shape
    schedule = _schedule(dropouts, n)
    session = session_id
    if session is None and seed is not None:
        session = hashlib.sha256(b"simulate" + str(seed).encode()).digest()
    registry = stores = None
    if config.mode == "malicious":
        if identities is None:
            identities = {u: SigningKey.generate() for u in range(n)}
        elif sorted(identities) != list(range(n)) or not all(
                isinstance(k, SigningKey) for k in identities.values()):
            raise ProtocolError(f"identities must map every client 0..{n - 1} to a SigningKey")
        registry = {u: k.verify_key for u, k in identities.items()}
        stores = {u: store_for_identity(registry[u]) for u in range(n)}
    server = server_factory(config, range(n), d, session_id=session, round=round,
                            registry=registry)
    clients = {u: ClientRound(u, config=config, input=np.ascontiguousarray(inputs[u]),
                              identity=identities[u] if stores else None,
                              registry=registry, used_sessions=stores[u] if stores else None)
               for u in range(n)}
    transcript = Transcript()
    gone: set[int] = set()
    peak = [0]

    def on_server(rec: StageRecord, call, *args):
        """Run one server call, timing it and, when asked, tracking its memory."""
        t0 = time.perf_counter()
        if not track_memory:
            try:
                return call(*args)
            finally:
                rec.server.seconds += time.perf_counter() - t0
        before = tracemalloc.get_traced_memory()[0]
        retained = server.retained_bytes()
        tracemalloc.reset_peak()
        try:
            return call(*args)
        finally:
            rec.server.seconds += time.perf_counter() - t0
            during = tracemalloc.get_traced_memory()[1] - before
            peak[0] = max(peak[0], retained + during, server.retained_bytes())

    def deliver(stage: str, outgoing: list[Message]) -> None:
        """Server -> clients; each live client's replies go to the server as they are made, so
        the server sums masked inputs as they arrive."""
        rec = transcript.stages.setdefault(stage, StageRecord())
        if server_hook is not None:
            outgoing = server_hook(stage, outgoing)
        for i, msg in enumerate(outgoing):
            if progress:
                progress(stage, i + 1, len(outgoing))
            data = encode(msg)
            rec.server.sent_messages += 1
            rec.server.sent_bytes += len(data)
            u = msg.recipient
            if u in gone or u in schedule.get(stage, ()):
                gone.add(u)  # dropped: receives nothing more, sends nothing from here on
                continue
            t = rec.client(u)
            t.received_messages += 1
            t.received_bytes += len(data)
            decoded = decode(data)
            t0 = time.perf_counter()
            try:
                answers = clients[u].receive(decoded)
            except RemoteProtocolError as exc:
                rec.refused.append(str(exc))
                gone.add(u)  # a refusing client is out of the round
                continue
            finally:
                t.seconds += time.perf_counter() - t0
            for a in answers:
                raw = encode(a)
                t.sent_messages += 1
                t.sent_bytes += len(raw)
                rec.server.received_messages += 1
                rec.server.received_bytes += len(raw)
                try:
                    on_server(rec, server.receive, decode(raw))
                except RemoteProtocolError as exc:
                    rec.refused.append(str(exc))

    # Each stage is opened by the server's messages (Setup opens advertise_keys, the key
    # broadcast opens share_keys, ...) and closed after the live clients' replies.
    stages = [st for st in STAGES if config.mode == "malicious" or st != "consistency_check"]
    if track_memory:
        tracemalloc.start()
    try:
        outgoing = server.start()
        for stage in stages:
            t0 = time.perf_counter()
            deliver(stage, outgoing)
            outgoing = on_server(transcript.stages[stage], server.close_stage)
            transcript.stages[stage].seconds = time.perf_counter() - t0
    finally:
        if track_memory:
            tracemalloc.stop()
    assert server.aggregate is not None
    return SimulationResult(server.aggregate.copy(), server.survivors, transcript, server.params,
                            server.retained_bytes(), peak[0] if track_memory else None)


def _schedule(dropouts: Mapping[str, Iterable[int]] | None, n: int) -> dict[str, set[int]]:
    if dropouts is None:
        return {}
    if not isinstance(dropouts, Mapping):
        raise ProtocolError("dropouts must map stage names to sets of client indices")
    out: dict[str, set[int]] = {}
    for stage, listed in dropouts.items():
        if stage not in STAGES:
            raise ProtocolError(f"unknown dropout stage {stage!r}; stages are {STAGES}")
        try:
            ids = set(listed)
        except TypeError:
            raise ProtocolError(f"dropouts[{stage!r}] must be a set of client indices") from None
        bad = [u for u in ids if isinstance(u, bool) or not isinstance(u, int)
               or not 0 <= u < n]
        if bad:
            raise ProtocolError(f"dropouts[{stage!r}] names clients outside [0, {n}): {bad[:5]}")
        out[stage] = ids
    # "sends nothing from that stage on": a client dropped at a stage is gone in later ones
    acc: set[int] = set()
    for stage in STAGES:
        acc |= out.get(stage, set())
        out[stage] = set(acc)
    return out
