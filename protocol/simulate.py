"""One round in one process: the server and n clients exchanging real encoded bytes.

The in-process host of :class:`protocol.driver.RoundDriver` plays the network and the clock: it
encodes every message with :mod:`protocol.wire`, decodes it at the receiver, applies the
dropout schedule, and the stage closes once every live client has answered. A client listed
under a stage in ``dropouts`` sends nothing from that stage on (it may have sent its previous
message and then vanished). Clients are :class:`protocol.participant.Participant` objects, as
over the network, so a client's input is asked for (and, with DP, charged) only when its
machine needs it.
"""

from __future__ import annotations

import hashlib
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from dp.errors import BudgetExceeded
from secagg import SigningKey

from .config import Mode, RoundConfig
from .dp_plan import DPClient
from .driver import DropReason, Host, RoundDriver, StageRun
from .errors import ProtocolError, RemoteProtocolError
from .messages import Message, Setup
from .participant import Participant
from .server import ServerRound
from .sessions import store_for_identity
from .transitions import STAGES, stage_order
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
    server_retained_bytes: int = 0  # what the server held when the round ended
    server_peak_bytes: int | None = None  # measured only with track_memory=True
    declined: frozenset[int] = frozenset()  # clients that declined at Setup (own budget)
    server_retained_peak: int = 0  # the most the server held after any of its calls


@dataclass(frozen=True)
class SeededInputs:
    """``clients`` uniform vectors of ``dim`` ``bits``-bit ring elements, client u's generated
    from the public ``seed`` only when it is asked for: a round over large vectors then holds
    one client's input at a time, not the whole (n, d) matrix. Not secret (test inputs)."""

    clients: int
    dim: int
    bits: int
    seed: int

    def __post_init__(self) -> None:
        for name, lo in (("clients", 3), ("dim", 1), ("bits", 8), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ProtocolError(f"{name} must be an int of at least {lo}, got {v!r}")
        if self.bits > 64:
            raise ProtocolError(f"bits must be at most 64, got {self.bits}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.clients, self.dim

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint32 if self.bits <= 32 else np.uint64)

    def row(self, u: int) -> np.ndarray:
        """Client u's input (the same array for the same u, every time)."""
        if isinstance(u, bool) or not isinstance(u, int) or not 0 <= u < self.clients:
            raise ProtocolError(f"no client {u!r} among {self.clients}")
        dtype = self.dtype
        raw = np.random.default_rng([self.seed, u]).bytes(self.dim * dtype.itemsize)
        row = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
        shift = 8 * dtype.itemsize - self.bits  # keep the top bits: still uniform
        if shift:
            np.right_shift(row, dtype.type(shift), out=row)
        return row

    def sum_of(self, clients: Iterable[int]) -> np.ndarray:
        """The plain sum of the listed clients' inputs in Z_{2^bits} (one row at a time)."""
        acc = np.zeros(self.dim, dtype=np.uint64)
        for u in clients:
            acc += self.row(u)  # wraps modulo 2^64, a multiple of 2^bits
        if self.bits < 64:
            acc &= np.uint64((1 << self.bits) - 1)
        return acc.astype(self.dtype)


Hook = Callable[[str, list[Message]], list[Message]]
#: (client, Setup) -> the client's input for that round (and its FedAvg weight), or None
InputProvider = Callable[[int, Setup], tuple[object, float | None] | None]


def simulate_round(
    inputs: np.ndarray | SeededInputs,
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
    workers: int = 1,
) -> SimulationResult:
    """Run one round over the rows of ``inputs``: an (n, d) array of integers in [0, 2^bits),
    or :class:`SeededInputs`, whose rows are generated one client at a time.

    ``seed`` fixes only public values (the session id, hence the graph ordering); every key,
    mask seed and Shamir coefficient still comes from the operating system's CSPRNG.
    ``server_hook(stage, messages)`` may rewrite the server's outgoing messages (tests use it
    to play an adversarial server). ``session_id`` and ``round`` fix the session (a given
    ``session_id`` overrides the one ``seed`` would derive). ``track_memory`` measures the
    server's peak memory with tracemalloc: its retained state plus what each of its calls
    allocates (slower). In malicious mode ``identities`` (client -> SigningKey; fresh ones if
    omitted) are the clients' long-term keys, and each identity's used sessions are kept in
    its one in-process store (:func:`protocol.sessions.store_for_identity`), so a session id
    run again with the same identities is refused, whichever call runs it. ``workers`` > 1
    runs the clients in that many forked processes (:mod:`protocol.simulate_workers`).
    Raises a :class:`ProtocolError` subclass on abort or bad arguments.
    """
    config = config if config is not None else RoundConfig()
    if isinstance(inputs, SeededInputs):
        if inputs.bits != config.bits:
            raise ProtocolError(f"inputs of {inputs.bits} bits for a {config.bits}-bit round")
        row = inputs.row
    elif isinstance(inputs, np.ndarray) and inputs.ndim == 2:
        def row(u: int) -> np.ndarray:
            return np.ascontiguousarray(inputs[u])
    else:
        raise ProtocolError("inputs must be a 2-D (n, d) integer numpy array or SeededInputs")
    n, d = inputs.shape
    session = session_id
    if session is None and seed is not None:
        session = hashlib.sha256(b"simulate" + str(seed).encode()).digest()
    participants, registry = cohort_participants(config, n, identities)
    server = server_factory(config, range(n), d, session_id=session, round=round,
                            registry=registry)
    return run_simulated_round(server, participants,
                               lambda u, setup: (row(u), None),
                               dropouts, server_hook=server_hook, progress=progress,
                               track_memory=track_memory, workers=workers)


def cohort_participants(config: RoundConfig, n: int,
                        identities: Mapping[int, SigningKey] | None = None,
                        dp: Mapping[int, DPClient] | None = None
                        ) -> tuple[dict[int, Participant], dict | None]:
    """Clients 0..n-1 for one in-process round, and the registry of their identities
    (malicious mode; fresh identities if none are given)."""
    registry = stores = None
    if config.mode == Mode.MALICIOUS:
        if identities is None:
            identities = {u: SigningKey.generate() for u in range(n)}
        elif sorted(identities) != list(range(n)) or not all(
                isinstance(k, SigningKey) for k in identities.values()):
            raise ProtocolError(f"identities must map every client 0..{n - 1} to a SigningKey")
        registry = {u: k.verify_key for u, k in identities.items()}
        stores = {u: store_for_identity(registry[u]) for u in range(n)}
    participants = {u: Participant(u, config=config,
                                   identity=identities[u] if stores else None,
                                   registry=registry, used_sessions=stores[u] if stores else None,
                                   dp=(dp or {}).get(u))
                    for u in range(n)}
    return participants, registry


def run_simulated_round(server: ServerRound, participants: Mapping[int, Participant],
                        provide: InputProvider,
                        dropouts: Mapping[str, Iterable[int]] | None = None, *,
                        server_hook: Hook | None = None,
                        progress: Callable[[str, int, int], None] | None = None,
                        track_memory: bool = False,
                        on_survivors_known: Callable[[frozenset[int]], None] | None = None,
                        workers: int = 1) -> SimulationResult:
    """Run ``server``'s round in this process through :class:`protocol.driver.RoundDriver`.

    ``provide(u, setup)`` is called when client u's machine needs its input (never for a client
    that dropped before MaskedInput); None means the client has no input and drops.
    ``workers`` > 1 runs the clients in that many forked processes
    (:mod:`protocol.simulate_workers`; not for DP clients, whose ledgers live here).
    Raises RoundAborted if the round aborts."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ProtocolError(f"workers must be a positive int, got {workers!r}")
    schedule = _schedule(dropouts, len(participants))
    hooks = dict(server_hook=server_hook, progress=progress,
                 on_survivors_known=on_survivors_known)
    if workers == 1:
        host: SimulatedHost = _InProcessHost(server, participants, provide, schedule, **hooks)
    else:
        from .simulate_workers import WorkerHost

        host = WorkerHost(server, participants, provide, schedule, workers=workers, **hooks)
    meter = host.memory_meter if track_memory else host.retained_meter
    if track_memory:
        tracemalloc.start()
    try:
        RoundDriver(server, host, meter=meter).run()
    finally:
        if track_memory:
            tracemalloc.stop()
        host.close()
    assert server.aggregate is not None
    return SimulationResult(server.aggregate.copy(), server.survivors, host.transcript,
                            server.params, server.retained_bytes(),
                            host.peak if track_memory else None, host.declined,
                            host.retained_peak)


class SimulatedHost(Host):
    """What the simulation's hosts share: the server, the dropout schedule, the adversarial
    server hook, the transcript and the server's memory meters."""

    def __init__(self, server: ServerRound, schedule: Mapping[str, set[int]], *,
                 server_hook: Hook | None, progress: Callable[[str, int, int], None] | None,
                 on_survivors_known: Callable[[frozenset[int]], None] | None) -> None:
        self._server, self._schedule, self._hook = server, schedule, server_hook
        self._progress, self._survivors_hook = progress, on_survivors_known
        self.transcript = Transcript()
        self.declined: set[int] = set()  # clients that declined at Setup (their own budget)
        self.peak = 0
        self.retained_peak = 0

    @contextmanager
    def retained_meter(self):
        """The server's retained state after one of its calls (as counted by
        :meth:`ServerRound.retained_bytes`): free, so it is always on."""
        try:
            yield
        finally:
            self.retained_peak = max(self.retained_peak, self._server.retained_bytes())

    @contextmanager
    def memory_meter(self):
        """Peak of the server's retained state plus what one of its calls allocates."""
        before = tracemalloc.get_traced_memory()[0]
        retained = self._server.retained_bytes()
        tracemalloc.reset_peak()
        try:
            yield
        finally:
            during = tracemalloc.get_traced_memory()[1] - before
            after = self._server.retained_bytes()
            self.peak = max(self.peak, retained + during, after)
            self.retained_peak = max(self.retained_peak, after)

    def close(self) -> None:
        """Release what the host holds once the round has ended (nothing here)."""

    def to_clients(self, run: StageRun, *, progress: bool
                   ) -> Iterator[tuple[int, StageRecord, Traffic, bytes]]:
        """The stage's messages as the network delivers them: the server hook applied, each
        message encoded (one at a time) and counted, a client the schedule drops at this
        stage dropped; yields (recipient, stage record, its traffic, bytes) for each client
        still in the round. ``progress`` reports every message sent."""
        stage = run.stage
        rec = self.transcript.stages.setdefault(stage, StageRecord())
        outgoing = list(run.outgoing)
        if self._hook is not None:
            outgoing = self._hook(stage, outgoing)
        gone = self._schedule.get(stage, ())
        for i, msg in enumerate(outgoing):
            if progress and self._progress:
                self._progress(stage, i + 1, len(outgoing))
            data = encode(msg)
            rec.server.sent_messages += 1
            rec.server.sent_bytes += len(data)
            u = msg.recipient
            if u in gone:
                run.drop(u, DropReason.SCHEDULED)
            if run.has_left(u):
                continue  # dropped: receives nothing more, sends nothing from here on
            t = rec.client(u)
            t.received_messages += 1
            t.received_bytes += len(data)
            yield u, rec, t, data

    @staticmethod
    def hand_to_server(run: StageRun, rec: StageRecord, t: Traffic,
                       replies: list[bytes]) -> None:
        """One client's replies (wire bytes) to the server, counted in the transcript; a reply
        the server refuses is noted in the stage's record."""
        for raw in replies:
            t.sent_messages += 1
            t.sent_bytes += len(raw)
            rec.server.received_messages += 1
            rec.server.received_bytes += len(raw)
            try:
                run.accept(decode(raw))
            except RemoteProtocolError as exc:
                rec.refused.append(str(exc))

    def on_survivors_known(self, survivors: frozenset[int]) -> None:
        if self._survivors_hook is not None:
            self._survivors_hook(survivors)

    def on_stage_closed(self, run: StageRun) -> None:
        rec = self.transcript.stages[run.stage]
        rec.seconds = run.seconds
        rec.server.seconds += run.server_seconds


class _InProcessHost(SimulatedHost):
    """The driver's host for one process: real encoded bytes, the dropout schedule as the
    network, and every live client answering at once (so a stage closes when all answered)."""

    def __init__(self, server: ServerRound, participants: Mapping[int, Participant],
                 provide: InputProvider, schedule: Mapping[str, set[int]], **hooks) -> None:
        super().__init__(server, schedule, **hooks)
        self._participants, self._provide = participants, provide

    def deliver(self, run: StageRun) -> None:
        """Server -> clients; each live client's replies go to the server as they are made, so
        the server sums masked inputs as they arrive."""
        for u, rec, t, data in self.to_clients(run, progress=True):
            answers = self._client_answers(run, rec, t, u, decode(data))
            self.hand_to_server(run, rec, t, [encode(a) for a in answers])

    def _client_answers(self, run: StageRun, rec: StageRecord, t: Traffic, u: int,
                        msg: Message) -> list[Message]:
        """Client u's replies to ``msg`` (its input given if its machine asks for it)."""
        p = self._participants[u]
        t0 = time.perf_counter()
        try:
            if isinstance(msg, Setup):
                try:
                    answers = p.join(msg)
                except BudgetExceeded:
                    self.declined.add(u)
                    run.drop(u, DropReason.DECLINED, "over this client's own privacy budget")
                    return []
            else:
                answers = p.receive(msg)
            if p.needs_input:
                answers = answers + self._input(run, p, msg)
        except RemoteProtocolError as exc:
            rec.refused.append(str(exc))
            run.drop(u, DropReason.REFUSED, str(exc))  # a refusing client is out of the round
            return []
        finally:
            t.seconds += time.perf_counter() - t0
        return answers

    def _input(self, run: StageRun, p: Participant, msg: Message) -> list[Message]:
        got = self._provide(p.id, p.round.setup)
        if got is None:
            run.drop(p.id, DropReason.DECLINED, "no input for this round")
            return []
        update, weight = got
        return p.give_input(update, weight=weight)


def spread_dropouts(dropped: Iterable[int], mode: str) -> dict[str, set[int]]:
    """A dropout schedule for :func:`simulate_round`: the clients ``dropped`` dealt round-robin
    over the stages a round of ``mode`` runs (:func:`protocol.transitions.stage_order`)."""
    stages = stage_order(mode)
    schedule: dict[str, set[int]] = {str(s): set() for s in stages}
    for i, u in enumerate(dropped):
        schedule[str(stages[i % len(stages)])].add(int(u))
    return schedule


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
