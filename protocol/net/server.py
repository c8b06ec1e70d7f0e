"""The aggregation server process: gRPC with mutual TLS around the sans-IO :class:`ServerRound`.

The transport keeps the clock and the connections; :class:`protocol.server.ServerRound` keeps
the protocol (Bonawitz et al. CCS 2017 section 4, Bell et al. CCS 2020 section 3). Per round:
a fresh random session id, Setup to every registered client, then for each stage
(AdvertiseKeys, ShareKeys, MaskedInput, ConsistencyCheck in malicious mode, Unmasking) the
server sends the stage's messages and closes the stage when every recipient has answered or
its deadline has passed. A client that misses a deadline, loses its connection, or sends
anything the protocol refuses (garbage, oversize, a replay, a message in another client's
name) is a dropout for the rest of the round, with a logged reason; dropout recovery does the
rest. A refused message also closes that client's connection; a late one does not (the client
may take part in the next round).

With DP the server plans the round (:func:`protocol.dp_plan.plan_dp`), checks its budget before
contacting anyone, and records the round in its ledger after MaskedInput closes and before any
unmasking share is requested (write-ahead, as in :func:`protocol.dp_round.run_dp_round`).
A restarted server reopens (and so verifies) its ledger and continues with the rounds left.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import resource
import secrets
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import numpy as np

from dp.errors import BudgetExceeded, BudgetMismatch, DPError
from dp.ledger import open_ledger

from ..config import Mode
from ..dp_plan import DPServer, plan_dp
from ..driver import AsyncHost, Drop, DropReason, RoundDriver, StageRun
from ..errors import AbortReason, ProtocolError, RemoteProtocolError, RoundAborted, WireError
from ..messages import Message
from ..server import ServerRound
from ..stages.unmasking import set_mask_workers
from ..transitions import Stage
from ..wire import decode, encode
from .errors import CertificateError, ExitCode, SettingsError
from .frames import (
    BYE,
    DECLINE,
    PROTOCOL,
    Abort,
    Bye,
    Result,
    Welcome,
    decode_frame,
    encode_frame,
    printable_ascii,
    protocol_frame,
)
from .jsonlog import JsonLog
from .keys import load_signing_key
from .service import handler, server_options
from .settings import ServerSettings
from .tls import fingerprint, read_pem

# A client has at most one message per stage to send; more than this many unhandled frames
# from one connection (e.g. sent between rounds, when nothing drains them) is a flood.
MAX_QUEUED = 16
# The frames read from all connections and not yet handled hold at most this many bytes (or
# one frame, if a single frame is larger): past it a connection's reader waits before it
# reads on, and gRPC's flow control holds the client back. So a burst of n masked inputs
# costs the server this much memory, not n vectors.
INBOX_BYTES = 64 << 20
# At most this many frames of LARGE_FRAME_BYTES or more (published aggregates, mostly) are
# being written at once, over all connections: gRPC holds a copy of each frame in flight, so
# a broadcast to n clients costs this many copies, not n.
SENDING_LARGE = 32
LARGE_FRAME_BYTES = 64 << 10
# MaskedInput's requests go out paced: at most pace_credits() clients at once have been asked
# for their masked input and have neither answered nor dropped, so at most that many vectors
# (PACE_BYTES' worth) are on their way to the server, each of which the transport holds in
# several copies (TLS records, HTTP/2 frames, the received message, the frame read). A request
# unanswered for PACE_EXPIRY seconds stops counting, so hung clients delay the others by that
# much at most.
PACE_BYTES = 16 << 20
PACE_EXPIRY = 5.0
PACE_TICK = 0.25  # how often the collector looks for expired requests while pacing
MIN_PACE = 16
# A write to a client completes within WRITE_TIMEOUT seconds plus its size at WRITE_RATE_FLOOR
# bytes per second, or the client is taken for gone (it stopped reading): so a client that
# holds its stream open without reading cannot keep a large-write slot, or the server's exit,
# waiting. The end of a run waits at most DRAIN_MAX seconds for the last frames.
WRITE_TIMEOUT = 10.0
WRITE_RATE_FLOOR = 1 << 20
DRAIN_MAX = 120.0
# Admission progress is logged at most this often (seconds) while the cohort fills.
ADMISSION_LOG_EVERY = 1.0


@dataclass
class _Inbound:
    client: int
    conn: int
    data: bytes | None  # None: the connection ended (reason says how)
    reason: str = ""
    why: DropReason = DropReason.CONNECTION_LOST  # for data None: how to count the drop
    held: int = 0  # bytes of the inbox budget this frame holds until it is handled


# A decoded frame: (kind, body, SHA-256 of the frame) with a PROTOCOL frame's body decoded to
# its Message, or (None, the WireError's text, b"") for a frame the wire format or the server
# refuses.
_Decoded = tuple[int | None, object, bytes]
# Protocol frames at least this large (masked inputs) are decoded on a worker thread.
DECODE_OFF_LOOP_BYTES = 64 << 10


def peak_mib() -> float:
    """This process's peak resident memory so far, in MiB (logged at each stage's close):
    the high-water mark of its own address space where Linux reports it (VmHWM; getrusage's
    maxrss keeps the parent's peak across exec), else getrusage's."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _decode(data: bytes) -> _Decoded:
    """Decode one inbound frame, and hash a protocol frame (its digest names a replay);
    pure, so safe on a worker thread."""
    try:
        kind, body = decode_frame(data)
        if kind in (BYE, DECLINE):
            return kind, body, b""
        if kind != PROTOCOL:
            raise WireError(f"frame kind {kind} is not for the server")
        return kind, decode(body), hashlib.sha256(data).digest()
    except WireError as exc:
        return None, str(exc), b""


class _Peer:
    """One authenticated connection."""

    def __init__(self, client_id: int, conn: int) -> None:
        self.id, self.conn = client_id, conn
        self.outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.status: tuple[grpc.StatusCode, str] | None = None
        self.bytes_in = self.bytes_out = 0
        self.queued = 0  # frames read but not yet handled by the round loop

    def close(self, code: grpc.StatusCode, details: str) -> None:
        if self.status is None:
            self.status = (code, details)
            self.outbox.put_nowait(None)


class AggregationServer:
    """Runs ``settings.rounds`` rounds over the registered cohort; see the module docstring.
    Raises a DPError if the DP parameters cannot be planned for the cohort."""

    def __init__(self, settings: ServerSettings, log: JsonLog) -> None:
        self.s, self.log = settings, log
        self.cohort = settings.registry.cohort
        self.peers: dict[int, _Peer] = {}
        self.inbox: asyncio.Queue[_Inbound] = asyncio.Queue()
        self._inbox_bytes = 0  # held by queued frames; see INBOX_BYTES
        self._inbox_drained = asyncio.Event()
        # connections admitted this run: how many, the first's and the last's monotonic time
        self._admitted = 0
        self._admit_span: tuple[float, float] | None = None
        self._sending_large = asyncio.Semaphore(SENDING_LARGE)
        self._pool: ThreadPoolExecutor | None = None  # decodes large frames while running
        self._workers = settings.worker_threads()  # threads for masks and decoding
        self._conn_ids = itertools.count(1)
        self._joined = asyncio.Event()
        self._left = asyncio.Event()  # a connection ended (see _drain)
        self._bye: bytes | None = None  # the goodbye frame, once the server is stopping
        self.digest = settings.digest()
        self.plan = None
        rc = settings.round
        if settings.dp is not None:
            self.plan = plan_dp(settings.dp, rc, len(self.cohort), settings.dim)
            rc = self.plan.round_config
        self.round_config = rc
        self.vector_words = (self.plan.encoding.padded_dim if self.plan is not None
                             else settings.dim)
        self.bound = settings.message_bound(self.vector_words)
        self.next_round = 0
        self.port: int | None = None
        # per client: sessions in which it was dropped for lateness (its late messages are
        # ignored, not punished)
        self._late: dict[int, set[bytes]] = {}
        self.excluded: set[int] = set()  # clients left out of the run's later rounds
        self._previous_session: bytes | None = None  # a late DECLINE of it is tolerated once
        self._late_declines: set[int] = set()

    # -- connections ---------------------------------------------------------------------
    async def _session(self, request_iterator, context: grpc.aio.ServicerContext) -> None:
        member = self._authenticate(context)
        if member is None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                "certificate is not in the registry")
        peer = _Peer(member.id, next(self._conn_ids))
        old = self.peers.get(member.id)
        if old is not None:
            old.close(grpc.StatusCode.ABORTED, "replaced by a newer connection")
            self.log("connection-replaced", client=member.id)
        self.peers[member.id] = peer
        now = time.monotonic()
        self._admitted += 1
        self._admit_span = (self._admit_span or (now, now))[0], now
        self.log("client-connected", client=member.id, connections=len(self.peers))
        self._joined.set()
        if self._bye is not None:  # connected while the server stops: welcome, then goodbye
            peer.outbox.put_nowait(self._bye)
            peer.close(grpc.StatusCode.OK, "server stopping")
        reader = asyncio.create_task(self._read(peer, context))
        try:
            await context.write(encode_frame(Welcome(member.id, self.digest, self.next_round)))
            while (item := await peer.outbox.get()) is not None:
                slot = (self._sending_large if len(item) >= LARGE_FRAME_BYTES
                        else contextlib.nullcontext())
                async with slot:
                    await asyncio.wait_for(context.write(item),
                                           WRITE_TIMEOUT + len(item) / WRITE_RATE_FLOOR)
                peer.bytes_out += len(item)
        except TimeoutError:
            peer.close(grpc.StatusCode.UNAVAILABLE, "not reading: a write timed out")
        except Exception as exc:  # noqa: BLE001 - any write failure means the peer is gone
            peer.close(grpc.StatusCode.UNAVAILABLE, f"write failed: {type(exc).__name__}")
        finally:
            reader.cancel()
            if self.peers.get(member.id) is peer:
                del self.peers[member.id]
                self._left.set()
                reason = peer.status[1] if peer.status else "connection lost"
                self.inbox.put_nowait(_Inbound(member.id, peer.conn, None, reason))
        if peer.status is not None and peer.status[0] is not grpc.StatusCode.OK:
            await context.abort(*peer.status)

    def _authenticate(self, context):
        auth = context.auth_context()
        pem = (auth.get("x509_pem_cert") or [b""])[0]
        try:
            fp = fingerprint(pem)
        except CertificateError:
            self.log("connection-refused", level="warning", reason="no client certificate")
            return None
        member = self.s.registry.by_fingerprint(fp)
        if member is None:
            cn = (auth.get("x509_common_name") or [b"?"])[0].decode("ascii", "replace")
            self.log("connection-refused", level="warning",
                     reason="certificate not in the registry", subject=cn,
                     cert_sha256=fp[:16])
        return member

    async def _read(self, peer: _Peer, context) -> None:
        reason = "connection lost"
        try:
            while True:
                data = await context.read()
                if data is grpc.aio.EOF:
                    reason = "connection closed without a goodbye"
                    break
                if peer.status is not None:  # closed by the server: read nothing more
                    return
                peer.bytes_in += len(data)
                if len(data) > self.bound:
                    reason = f"oversize message: {len(data)} bytes > bound {self.bound}"
                    self.inbox.put_nowait(_Inbound(peer.id, peer.conn, None, reason,
                                                   DropReason.VIOLATION))
                    peer.close(grpc.StatusCode.RESOURCE_EXHAUSTED, reason)
                    return
                peer.queued += 1
                if peer.queued > MAX_QUEUED:
                    reason = (f"flooding: more than {MAX_QUEUED} messages waiting to be "
                              "handled")
                    self.inbox.put_nowait(_Inbound(peer.id, peer.conn, None, reason,
                                                   DropReason.VIOLATION))
                    peer.close(grpc.StatusCode.RESOURCE_EXHAUSTED, reason)
                    return
                await self._hold(len(data))
                self.inbox.put_nowait(_Inbound(peer.id, peer.conn, data, held=len(data)))
                if len(data) >= 2 and data[1] == BYE:
                    reason = "goodbye"
                    break
        except Exception as exc:  # noqa: BLE001 - any read failure means the peer is gone
            reason = f"connection lost ({type(exc).__name__})"
        peer.close(grpc.StatusCode.OK, reason)

    def pace_credits(self) -> int:
        """How many clients may owe the server a masked input at once: PACE_BYTES in messages
        of the bound's size, at least MIN_PACE."""
        return max(MIN_PACE, PACE_BYTES // self.bound)

    def decode_depth(self) -> int:
        """How many frames a stage's collector may have in decoding at once."""
        return self._workers if self._pool is not None else 1

    def decode_off_loop(self, ev: _Inbound) -> asyncio.Future | None:
        """A future of ``ev``'s decoded frame, computed on a worker thread, for a large
        protocol frame while the worker threads run; None: decode it on the loop."""
        data, peer = ev.data, self.peers.get(ev.client)
        if (self._pool is None or data is None or len(data) < DECODE_OFF_LOOP_BYTES
                or data[1:2] != bytes([PROTOCOL]) or peer is None or peer.conn != ev.conn
                or peer.status is not None):
            return None  # decoded on the loop if at all (a closed connection's is ignored)
        return asyncio.get_running_loop().run_in_executor(self._pool, _decode, data)

    async def _hold(self, size: int) -> None:
        """Wait until ``size`` more bytes fit in the inbox budget (INBOX_BYTES; a frame always
        fits an empty inbox), then hold them."""
        while self._inbox_bytes and self._inbox_bytes + size > INBOX_BYTES:
            self._inbox_drained.clear()
            await self._inbox_drained.wait()
        self._inbox_bytes += size

    def release(self, ev: _Inbound) -> None:
        """The round loop took ``ev`` off the inbox: its bytes leave the budget."""
        if ev.held:
            self._inbox_bytes -= ev.held
            ev.held = 0
            self._inbox_drained.set()

    # -- the run -------------------------------------------------------------------------
    async def run(self) -> ExitCode:
        """Listen, run the rounds and say goodbye to every client; returns the exit code.
        Raises CertificateError if a TLS file cannot be used and SettingsError if the ledger
        key cannot be loaded (:func:`serve` maps both to ExitCode.CONFIG)."""
        s = self.s
        hard = 2 * self.bound + (1 << 20)  # gRPC's own cap; the bound itself is checked above
        grpc_server = grpc.aio.server(options=server_options(hard),
                                      maximum_concurrent_rpcs=s.connection_bound())
        grpc_server.add_generic_rpc_handlers((handler(self._session),))
        creds = grpc.ssl_server_credentials(
            [(read_pem(s.key, "server key"), read_pem(s.cert, "server certificate"))],
            root_certificates=read_pem(s.ca, "CA certificate"), require_client_auth=True)
        try:
            self.port = grpc_server.add_secure_port(f"{s.host}:{s.port}", creds)
        except RuntimeError as exc:
            self.log("exit", level="error", reason=f"cannot listen on {s.host}:{s.port}: {exc}")
            return ExitCode.CONFIG
        ledger = None
        bye = "all rounds done"
        mask_workers = set_mask_workers(self._workers)
        if self._workers > 1:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="secagg-decode")
        try:
            ledger, dps = self._open_ledger()
            first = ledger.rounds if ledger is not None else 0
            self.next_round = first
            await grpc_server.start()
            self.log("listening", host=s.host, port=self.port, cohort=len(self.cohort),
                     rounds=s.rounds, first_round=first, message_bound=self.bound,
                     max_connections=s.connection_bound(), workers=self._workers,
                     mode=self.round_config.mode, dp=self.plan is not None)
            code, bye = await self._rounds(first, dps)
            return code
        except RoundAborted as exc:
            code = (ExitCode.BUDGET if exc.reason is AbortReason.LEDGER_REFUSED
                    else ExitCode.ABORTED)
            bye = f"round aborted in {exc.stage}: {exc.reason}"
            self.log("exit", level="error", code=code, stage=exc.stage,
                     reason=exc.reason, detail=exc.detail)
            return code
        except BudgetMismatch as exc:  # the configuration, not the budget, is at fault
            bye = "server stopped: its ledger was created for another budget"
            self.log("exit", level="error", code=ExitCode.CONFIG, reason=str(exc))
            return ExitCode.CONFIG
        except (BudgetExceeded, DPError) as exc:
            bye = f"server stopped: privacy budget or ledger: {exc}"
            self.log("exit", level="error", code=ExitCode.BUDGET, reason=str(exc))
            return ExitCode.BUDGET
        except OSError as exc:
            bye = "server stopped: an I/O error"
            self.log("exit", level="error", code=ExitCode.ERROR,
                     reason=f"I/O error: {exc.strerror or exc}")
            return ExitCode.ERROR
        finally:
            self._bye = encode_frame(Bye(printable_ascii(bye)))
            self._broadcast(self._bye)
            for p in list(self.peers.values()):
                p.close(grpc.StatusCode.OK, "server stopping")
            # what is queued (the last aggregate, the goodbye) is written before the streams
            # are cancelled, within the time a stage may take
            await self._drain(min(max(self.s.deadlines.values()), DRAIN_MAX))
            await grpc_server.stop(1.0)
            set_mask_workers(mask_workers)
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            if ledger is not None:
                ledger.close()

    def _open_ledger(self):
        """The server's ledger (opened and verified, or created) and its DPServer; (None,
        None) without DP. Raises SettingsError if the ledger key cannot be loaded,
        BudgetMismatch if the ledger was created for another budget, and LedgerError if it
        does not verify."""
        s = self.s
        if self.plan is None:
            return None, None
        key = load_signing_key(s.ledger_key) if s.ledger_key is not None else None
        existed = s.ledger.exists()
        ledger = open_ledger(s.ledger, s.dp.budget, key=key, owner="server")
        if existed:
            self.log("ledger-opened", rounds=ledger.rounds, epsilon=ledger.spent()[0])
        else:
            self.log("ledger-created")
        return ledger, DPServer(self.plan, ledger)

    async def _rounds(self, first: int, dps: DPServer | None) -> tuple[ExitCode, str]:
        """Rounds ``first`` .. ``rounds - 1``, each in a fresh session. An aborted round is
        logged (by :meth:`_round`) and the next one starts; the run stops (RoundAborted) after
        ``max_aborts_in_a_row`` aborts in a row, or at once when the ledger refused. Returns
        the exit code (ABORTED if the last round aborted, else OK) and the goodbye text."""
        s = self.s
        in_a_row = aborted = 0
        for r in range(first, s.rounds):
            self.next_round = r
            if r > first and s.round_gap:
                await asyncio.sleep(s.round_gap)
            await self._wait_for_clients(s.join_timeout if r == first else s.between_rounds)
            try:
                await self._round(r, dps)
                in_a_row = 0
            except RoundAborted as exc:
                in_a_row, aborted = in_a_row + 1, aborted + 1
                self._exclude(r, exc)
                if (exc.reason is AbortReason.LEDGER_REFUSED
                        or in_a_row >= s.max_aborts_in_a_row):
                    raise
        code = ExitCode.ABORTED if in_a_row else ExitCode.OK
        self.log("exit", level="error" if code else "info", code=code, rounds=s.rounds,
                 aborted=aborted, excluded=sorted(self.excluded), peak_mib=peak_mib())
        return code, "all rounds done" + (f", {aborted} aborted" if aborted else "")

    def _exclude(self, r: int, exc: RoundAborted) -> None:
        """A client that dealt a secret reconstructing to an invalid value (``bad-dealing``,
        raised only on evidence other holders cannot forge: see ServerRound._reconstruct)
        takes no part in the later rounds of this run. Other aborts blame no one with
        certainty, so they exclude no one."""
        if exc.reason is not AbortReason.BAD_DEALING:
            return
        for u in exc.clients:
            if u not in self.excluded:
                self.excluded.add(u)
                self.log("client-excluded", level="warning", round=r, client=u,
                         reason=f"{exc.reason}: {exc.detail}")

    async def _wait_for_clients(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the whole cohort to be connected, logging the
        admission's progress (connected of the cohort, the rate since the first connection)
        at most every ADMISSION_LOG_EVERY seconds while it fills."""
        start = time.monotonic()
        end, next_log = start + timeout, start + ADMISSION_LOG_EVERY
        want = len(self.cohort)
        while len(self.peers) < want and (left := end - time.monotonic()) > 0:
            self._joined.clear()
            try:
                await asyncio.wait_for(self._joined.wait(), min(left, ADMISSION_LOG_EVERY))
            except TimeoutError:
                pass
            if time.monotonic() >= next_log and len(self.peers) < want:
                self._log_admission("admission", start)
                next_log = time.monotonic() + ADMISSION_LOG_EVERY
        self._log_admission("cohort-joined" if len(self.peers) >= want else
                            "cohort-incomplete", start)

    def _log_admission(self, event: str, start: float) -> None:
        now, span = time.monotonic(), self._admit_span
        rate = ((self._admitted - 1) / (span[1] - span[0])
                if span is not None and span[1] > span[0] else None)
        self.log(event, level="warning" if event == "cohort-incomplete" else "info",
                 connected=len(self.peers), cohort=len(self.cohort), seconds=now - start,
                 per_second=rate, peak_mib=peak_mib())

    async def _drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for every connection's writer to finish its queue
        (closed peers leave ``self.peers`` when they have)."""
        end = time.monotonic() + timeout
        while self.peers and (left := end - time.monotonic()) > 0:
            self._left.clear()
            try:
                await asyncio.wait_for(self._left.wait(), left)
            except TimeoutError:
                break

    def _broadcast(self, frame: bytes) -> None:
        for p in self.peers.values():
            p.outbox.put_nowait(frame)

    async def _round(self, r: int, dps: DPServer | None) -> None:
        session = secrets.token_bytes(32)
        try:
            await self._run_round(r, session, dps)
        finally:
            self._previous_session, self._late_declines = session, set()

    async def _run_round(self, r: int, session: bytes, dps: DPServer | None) -> None:
        """One round through the shared :class:`~protocol.driver.RoundDriver`, with this
        process as its host (:class:`_NetRound`). Raises RoundAborted (logged, and sent to
        every client) if the round cannot complete."""
        sid = session.hex()
        if dps is not None:
            dps.check_budget()  # refuse before any client is contacted
        registry = (self.s.registry.verify_keys() if self.round_config.mode == Mode.MALICIOUS
                    else None)
        cohort = [u for u in self.cohort if u not in self.excluded]
        try:
            sr = ServerRound(self.round_config, cohort, self.vector_words, session_id=session,
                             round=r, registry=registry)
        except ValueError as exc:  # the cohort left after exclusions cannot run a round
            self.log("round-aborted", level="error", round=r, stage="setup",
                     reason=AbortReason.COHORT_TOO_SMALL, detail=str(exc), session=sid,
                     charged=False)
            raise RoundAborted("setup", AbortReason.COHORT_TOO_SMALL, str(exc)) from None
        self.log("round-started", round=r, session=sid, connected=len(self.peers),
                 cohort=len(cohort))
        t_round = time.perf_counter()
        host = _NetRound(self, sr, dps, deadlines=self.s.deadlines)
        driver = RoundDriver(sr, host)
        host.driver = driver
        try:
            await driver.run_async()
        except RoundAborted as exc:
            self._aborted(host, exc)
            raise
        except ProtocolError as exc:
            abort = RoundAborted(host.stage, AbortReason.PROTOCOL_ERROR, str(exc))
            self._aborted(host, abort)
            raise abort from None
        finally:
            self._log_bad_shares(sr)
        aggregate = sr.aggregate
        if dps is not None:
            aggregate = dps.finish(aggregate, session_id=session, round=r).astype(np.float64)
        survivors = tuple(sorted(sr.survivors))
        bits = None if dps is not None else self.round_config.bits  # the ring sum's b
        self._broadcast(encode_frame(Result(session, r, survivors, aggregate, bits)))
        if self.s.output_dir is not None:
            self.s.output_dir.mkdir(parents=True, exist_ok=True)
            np.save(self.s.output_dir / f"round-{r}.npy", aggregate)
        self.log("round-complete", round=r, session=sid, survivors=list(survivors),
                 dropped=sorted(driver.dropped), seconds=time.perf_counter() - t_round,
                 peak_mib=peak_mib())

    def _aborted(self, host: _NetRound, exc: RoundAborted) -> None:
        """Log an aborted round (its typed reason, whom it blames, whether the ledger was
        charged: only past the write-ahead point) and tell every client."""
        sr = host.sr
        self.log("round-aborted", level="error", round=sr.round, stage=exc.stage,
                 reason=exc.reason, detail=exc.detail, session=sr.session_id.hex(),
                 clients=list(exc.clients), charged=host.charged)
        self._broadcast(encode_frame(Abort(sr.session_id, sr.round, exc.stage, exc.reason)))

    def _log_bad_shares(self, sr: ServerRound) -> None:
        """Holders whose unmasking shares robust reconstruction found wrong (a forged share,
        or an inconsistent dealing: the server cannot tell which, so no one is excluded)."""
        for holder, wrong in sorted(sr.bad_shares.items()):
            for kind in ("b", "s"):
                owners = [o for o, k in wrong if k == kind]
                if owners:
                    self.log("bad-shares", level="warning", round=sr.round, client=holder,
                             secret=f"{kind}_u", owners=owners)


class _NetRound(AsyncHost):
    """The driver's host for one round over the network: frames out through each client's
    connection, frames in from the shared inbox until every recipient answered or the stage's
    deadline passed. Whatever a client sends that the protocol or the transport refuses drops
    it for the rest of the round and closes its connection; a late message of a round it
    missed the deadline of is ignored."""

    def __init__(self, server: AggregationServer, sr: ServerRound, dps: DPServer | None, *,
                 deadlines: Mapping[str, float]) -> None:
        self._srv, self.sr, self._dps, self._deadlines = server, sr, dps, deadlines
        self.driver: RoundDriver | None = None
        self.stage: Stage = Stage.ADVERTISE_KEYS
        self.charged = False  # the DP write-ahead record of this round was written
        self._accepted: set[bytes] = set()  # SHA-256 of each accepted message, to name replays
        # MaskedInput's requests not sent yet, and those sent and unanswered (client -> time)
        self._paced: deque[tuple[int, bytes]] = deque()
        self._asked: dict[int, float] = {}

    # -- the driver's hooks -----------------------------------------------------------------
    async def deliver(self, run: StageRun) -> None:
        """Send the stage's messages; MaskedInput's at the pace of :meth:`_top_up`."""
        self.stage = run.stage
        frames = [(m.recipient, protocol_frame(encode(m))) for m in run.outgoing]
        if run.stage is Stage.MASKED_INPUT:
            self._paced, self._asked = deque(frames), {}
            self._top_up(run)
            return
        for u, frame in frames:
            self._send(run, u, frame)

    def _send(self, run: StageRun, u: int, frame: bytes) -> bool:
        peer = self._srv.peers.get(u)
        if peer is None or peer.status is not None:
            run.drop(u, DropReason.NOT_CONNECTED)
            return False
        peer.outbox.put_nowait(frame)
        return True

    def _top_up(self, run: StageRun) -> None:
        """Send paced requests while fewer than ``pace_credits()`` clients owe an answer
        (answered, dropped and PACE_EXPIRY-old requests no longer count)."""
        now = time.monotonic()
        for u in [u for u, t in self._asked.items()
                  if not run.is_pending(u) or now - t >= PACE_EXPIRY]:
            del self._asked[u]
        credits = self._srv.pace_credits()
        while self._paced and len(self._asked) < credits:
            u, frame = self._paced.popleft()
            if run.is_pending(u) and self._send(run, u, frame):
                self._asked[u] = now

    async def collect(self, run: StageRun) -> None:
        """Hand the inbox's frames to the round in arrival order until the stage is done or
        its deadline passes. Large protocol frames (masked inputs) are decoded on the
        server's worker threads, up to one per thread at a time, while the event loop goes
        on reading; each is handled when its turn in the order comes."""
        inbox = self._srv.inbox
        end = time.monotonic() + self._deadlines[run.stage]
        window: deque[tuple[_Inbound, asyncio.Future | None]] = deque()
        try:
            await self._collect(run, inbox, end, window)
        finally:  # whatever escapes, frames taken off the inbox leave the budget
            for ev, _ in window:
                self._srv.release(ev)
        self._paced.clear()  # requests never sent: their clients missed the deadline
        self._asked.clear()

    async def _collect(self, run: StageRun, inbox: asyncio.Queue, end: float,
                       window: deque) -> None:
        depth = self._srv.decode_depth()
        while not run.done and (left := end - time.monotonic()) > 0:
            if window and (len(window) >= depth or inbox.empty()):
                await self._handle_first(run, window)
                if self._paced:
                    self._top_up(run)
                continue
            try:
                ev = await asyncio.wait_for(inbox.get(),
                                            min(left, PACE_TICK) if self._paced else left)
            except TimeoutError:
                self._top_up(run)  # a request may have expired; without pacing, the deadline
                continue
            window.append((ev, self._srv.decode_off_loop(ev)))
        # what already arrived is handled first, so a message that beat the deadline counts
        while window:
            await self._handle_first(run, window)
        while not inbox.empty():
            self._handle(run, inbox.get_nowait())

    async def _handle_first(self, run: StageRun, window: deque) -> None:
        """Handle the window's first frame once decoded; it leaves the window only then, so
        a failure leaves it to the collector's release."""
        ev, fut = window[0]
        decoded = await fut if fut is not None else None
        window.popleft()
        self._handle(run, ev, decoded)

    def on_survivors_known(self, survivors: frozenset[int]) -> None:
        if self._dps is None:
            return
        sr = self.sr
        self._dps.commit(session_id=sr.session_id, round=sr.round, survivors=len(survivors))
        self.charged = True
        self._srv.log("ledger-committed", round=sr.round, stage=Stage.UNMASKING,
                      survivors=len(survivors))

    def on_drop(self, client: int, drop: Drop) -> None:
        if drop.reason is DropReason.DEADLINE:
            self._srv._late.setdefault(client, set()).add(self.sr.session_id)
        self._srv.log("client-dropped", level="warning", round=self.sr.round, stage=drop.stage,
                      client=client, reason=str(drop))

    def on_stage_closed(self, run: StageRun) -> None:
        self._srv.log("stage-closed", round=self.sr.round, stage=run.stage,
                      seconds=run.seconds, dropped=len(self.driver.dropped),
                      peak_mib=peak_mib())

    # -- one inbound frame ------------------------------------------------------------------
    def _handle(self, run: StageRun, ev: _Inbound, decoded: _Decoded | None = None) -> None:
        """One inbound event: ``decoded`` is its frame already decoded off the loop (None:
        decoded here)."""
        self._srv.release(ev)
        u, peer = ev.client, self._srv.peers.get(ev.client)
        current = peer is not None and peer.conn == ev.conn
        if current and ev.data is not None:
            peer.queued -= 1
        gone = self.driver.dropped.get(u)
        if ev.data is None:
            if gone is None and (current or peer is None):
                run.drop(u, ev.why, ev.reason)
            return
        if not current or (gone is not None and gone.reason is not DropReason.DEADLINE):
            return  # from a closed connection, or from a client already thrown out
        decoded = decoded or _decode(ev.data)
        msg, verdict = self._message(u, decoded)
        if verdict is None and msg is not None:
            digest = decoded[2]
            if digest in self._accepted:
                verdict = (DropReason.VIOLATION,
                           f"replayed message: a second copy of its {type(msg).__name__}")
            else:
                try:
                    run.accept(msg)
                except RemoteProtocolError as exc:
                    verdict = DropReason.VIOLATION, f"refused: {exc}"
                else:
                    self._accepted.add(digest)
        if verdict is None:
            return
        reason, detail = verdict
        run.drop(u, reason, detail)
        if reason is DropReason.VIOLATION:
            peer.close(grpc.StatusCode.INVALID_ARGUMENT, f"dropped: {detail}"[:200])

    def _message(self, u: int, decoded: _Decoded) -> tuple[Message | None,
                                                            tuple[DropReason, str] | None]:
        """(message, None) to process; (None, None) to ignore; (None, verdict) to drop."""
        kind, body, _ = decoded
        if kind is None:
            return None, (DropReason.VIOLATION, f"garbage: {body}")
        if kind in (BYE, DECLINE):
            return None, self._leaving(u, kind, body)
        msg = body
        if getattr(msg, "sender", None) != u:
            return None, (DropReason.VIOLATION,
                          f"message in the name of client {getattr(msg, 'sender', None)}")
        if msg.session_id in self._srv._late.get(u, ()):
            self._srv.log("late-message-ignored", round=msg.round, stage=self.stage, client=u,
                          kind=type(msg).__name__)
            return None, None
        return msg, None

    def _leaving(self, u: int, kind: int, body) -> tuple[DropReason, str] | None:
        """The verdict on a goodbye or on a decline of this round. One late decline of the
        previous round needs nothing (None); any other decline is a violation."""
        srv = self._srv
        if kind == BYE:
            return DropReason.GOODBYE, ""
        if body.session_id == self.sr.session_id:
            return DropReason.DECLINED, f"declined: {body.reason}"
        if body.session_id == srv._previous_session and u not in srv._late_declines:
            srv._late_declines.add(u)
            return None
        return (DropReason.VIOLATION,
                "violation: a decline of a session that is not the current or previous round's")


def serve(settings: ServerSettings, log: JsonLog) -> ExitCode:
    """Run the server to completion; the process exit code (CONFIG for a bad certificate,
    key or ledger, BUDGET when the privacy budget or the ledger stops the run)."""
    try:
        return asyncio.run(AggregationServer(settings, log).run())
    except (SettingsError, CertificateError, BudgetMismatch) as exc:
        log("exit", level="error", code=ExitCode.CONFIG, reason=str(exc))
        return ExitCode.CONFIG
    except DPError as exc:
        log("exit", level="error", code=ExitCode.BUDGET, reason=str(exc))
        return ExitCode.BUDGET
