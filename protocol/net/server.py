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
import hashlib
import itertools
import secrets
import time
from dataclasses import dataclass

import grpc
import numpy as np

from dp.errors import BudgetExceeded, BudgetMismatch, DPError
from dp.ledger import open_ledger

from ..dp_plan import DPServer, plan_dp
from ..errors import ProtocolError, RemoteProtocolError, RoundAborted, WireError
from ..server import ServerRound
from ..transitions import STAGES
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


@dataclass
class _Inbound:
    client: int
    conn: int
    data: bytes | None  # None: the connection ended (reason says how)
    reason: str = ""


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
        self._conn_ids = itertools.count(1)
        self._joined = asyncio.Event()
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
        self.log("client-connected", client=member.id, connections=len(self.peers))
        self._joined.set()
        reader = asyncio.create_task(self._read(peer, context))
        try:
            await context.write(encode_frame(Welcome(member.id, self.digest, self.next_round)))
            while (item := await peer.outbox.get()) is not None:
                await context.write(item)
                peer.bytes_out += len(item)
        except Exception as exc:  # noqa: BLE001 - any write failure means the peer is gone
            peer.close(grpc.StatusCode.UNAVAILABLE, f"write failed: {type(exc).__name__}")
        finally:
            reader.cancel()
            if self.peers.get(member.id) is peer:
                del self.peers[member.id]
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
                peer.bytes_in += len(data)
                if len(data) > self.bound:
                    reason = f"oversize message: {len(data)} bytes > bound {self.bound}"
                    self.inbox.put_nowait(_Inbound(peer.id, peer.conn, None, reason))
                    peer.close(grpc.StatusCode.RESOURCE_EXHAUSTED, reason)
                    return
                peer.queued += 1
                if peer.queued > MAX_QUEUED:
                    reason = (f"flooding: more than {MAX_QUEUED} messages waiting to be "
                              "handled")
                    self.inbox.put_nowait(_Inbound(peer.id, peer.conn, None, reason))
                    peer.close(grpc.StatusCode.RESOURCE_EXHAUSTED, reason)
                    return
                self.inbox.put_nowait(_Inbound(peer.id, peer.conn, data))
                if len(data) >= 2 and data[1] == BYE:
                    reason = "goodbye"
                    break
        except Exception as exc:  # noqa: BLE001 - any read failure means the peer is gone
            reason = f"connection lost ({type(exc).__name__})"
        peer.close(grpc.StatusCode.OK, reason)

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
        try:
            ledger, dps = self._open_ledger()
            first = ledger.rounds if ledger is not None else 0
            self.next_round = first
            await grpc_server.start()
            self.log("listening", host=s.host, port=self.port, cohort=len(self.cohort),
                     rounds=s.rounds, first_round=first, message_bound=self.bound,
                     max_connections=s.connection_bound(),
                     mode=self.round_config.mode, dp=self.plan is not None)
            code, bye = await self._rounds(first, dps)
            return code
        except RoundAborted as exc:
            code = ExitCode.BUDGET if exc.reason.startswith("ledger") else ExitCode.ABORTED
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
            self._broadcast(encode_frame(Bye(printable_ascii(bye))))
            for p in list(self.peers.values()):
                p.close(grpc.StatusCode.OK, "server stopping")
            await asyncio.sleep(0.05)
            await grpc_server.stop(1.0)
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
                if exc.reason.startswith("ledger") or in_a_row >= s.max_aborts_in_a_row:
                    raise
        code = ExitCode.ABORTED if in_a_row else ExitCode.OK
        self.log("exit", level="error" if code else "info", code=code, rounds=s.rounds,
                 aborted=aborted, excluded=sorted(self.excluded))
        return code, "all rounds done" + (f", {aborted} aborted" if aborted else "")

    def _exclude(self, r: int, exc: RoundAborted) -> None:
        """A client that dealt a secret reconstructing to an invalid value (``bad-dealing``,
        raised only on evidence other holders cannot forge: see ServerRound._reconstruct)
        takes no part in the later rounds of this run. Other aborts blame no one with
        certainty, so they exclude no one."""
        if exc.reason != "bad-dealing":
            return
        for u in exc.clients:
            if u not in self.excluded:
                self.excluded.add(u)
                self.log("client-excluded", level="warning", round=r, client=u,
                         reason=f"{exc.reason}: {exc.detail}")

    async def _wait_for_clients(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while len(self.peers) < len(self.cohort) and (left := end - time.monotonic()) > 0:
            self._joined.clear()
            try:
                await asyncio.wait_for(self._joined.wait(), left)
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
        sid = session.hex()
        if dps is not None:
            dps.check_budget()  # refuse before any client is contacted
        registry = self.s.registry.verify_keys() if self.round_config.mode == "malicious" \
            else None
        cohort = [u for u in self.cohort if u not in self.excluded]
        try:
            sr = ServerRound(self.round_config, cohort, self.vector_words, session_id=session,
                             round=r, registry=registry)
        except ProtocolError as exc:  # the cohort left after exclusions cannot run a round
            self.log("round-aborted", level="error", round=r, stage="setup",
                     reason="cohort-too-small", detail=str(exc), session=sid, charged=False)
            raise RoundAborted("setup", "cohort-too-small", str(exc)) from None
        self.log("round-started", round=r, session=sid, connected=len(self.peers),
                 cohort=len(cohort))
        t_round = time.perf_counter()
        state = _RoundState(sr, r, session)
        try:
            outgoing = sr.start()
            for stage in [st for st in STAGES
                          if self.round_config.mode == "malicious" or st != "consistency_check"]:
                t0 = time.perf_counter()
                state.stage = stage
                if stage == "unmasking" and dps is not None:
                    dps.commit(session_id=session, round_=r, survivors=len(sr.survivors))
                    state.charged = True
                    self.log("ledger-committed", round=r, stage=stage,
                             survivors=len(sr.survivors))
                pending = self._send(state, outgoing)
                await self._collect(state, pending, self.s.deadlines[stage])
                outgoing = sr.close_stage()
                self.log("stage-closed", round=r, stage=stage,
                         seconds=time.perf_counter() - t0, dropped=len(state.dropped))
        except RoundAborted as exc:
            self._log_bad_shares(state)
            self._aborted(state, exc)
            raise
        except (DPError, OSError) as exc:  # the write-ahead record failed: nothing unmasked
            why = str(exc) if isinstance(exc, DPError) else f"I/O error: {exc.strerror or exc}"
            abort = RoundAborted(state.stage, "ledger-refused", why)
            self._aborted(state, abort)
            raise abort from None
        except ProtocolError as exc:
            abort = RoundAborted(state.stage, "protocol-error", str(exc))
            self._aborted(state, abort)
            raise abort from None
        self._log_bad_shares(state)
        aggregate = sr.aggregate
        if dps is not None:
            aggregate = dps.finish(aggregate, session_id=session, round_=r).astype(np.float64)
        survivors = tuple(sorted(sr.survivors))
        self._broadcast(encode_frame(Result(session, r, survivors, aggregate)))
        if self.s.output_dir is not None:
            self.s.output_dir.mkdir(parents=True, exist_ok=True)
            np.save(self.s.output_dir / f"round-{r}.npy", aggregate)
        self.log("round-complete", round=r, session=sid, survivors=list(survivors),
                 dropped=sorted(state.dropped), seconds=time.perf_counter() - t_round)

    def _aborted(self, state: _RoundState, exc: RoundAborted) -> None:
        """Log an aborted round (its typed reason, whom it blames, whether the ledger was
        charged: only past the write-ahead point) and tell every client."""
        self.log("round-aborted", level="error", round=state.round, stage=exc.stage,
                 reason=exc.reason, detail=exc.detail, session=state.session.hex(),
                 clients=list(exc.clients), charged=state.charged)
        self._broadcast(encode_frame(Abort(state.session, state.round, exc.stage, exc.reason)))

    def _log_bad_shares(self, state: _RoundState) -> None:
        """Holders whose unmasking shares robust reconstruction found wrong (a forged share,
        or an inconsistent dealing: the server cannot tell which, so no one is excluded)."""
        for holder, wrong in sorted(state.sr.bad_shares.items()):
            for kind in ("b", "s"):
                owners = [o for o, k in wrong if k == kind]
                if owners:
                    self.log("bad-shares", level="warning", round=state.round, client=holder,
                             secret=f"{kind}_u", owners=owners)

    # -- one stage -------------------------------------------------------------------------
    def _send(self, state: _RoundState, outgoing) -> set[int]:
        pending = set()
        for msg in outgoing:
            u = msg.recipient
            if u in state.dropped:
                continue
            peer = self.peers.get(u)
            if peer is None or peer.status is not None:
                self._drop(state, u, "not connected")
                continue
            peer.outbox.put_nowait(protocol_frame(encode(msg)))
            pending.add(u)
        return pending

    async def _collect(self, state: _RoundState, pending: set[int], deadline: float) -> None:
        end = time.monotonic() + deadline
        while pending and (left := end - time.monotonic()) > 0:
            try:
                ev = await asyncio.wait_for(self.inbox.get(), left)
            except TimeoutError:
                break
            self._handle(state, pending, ev)
        # what already arrived is handled first, so a message that beat the deadline counts
        while not self.inbox.empty():
            self._handle(state, pending, self.inbox.get_nowait())
        for u in sorted(pending):
            self._drop(state, u, "deadline missed", late=True)

    def _handle(self, state: _RoundState, pending: set[int], ev: _Inbound) -> None:
        u, peer = ev.client, self.peers.get(ev.client)
        current = peer is not None and peer.conn == ev.conn
        if current and ev.data is not None:
            peer.queued -= 1
        if ev.data is None:
            if u not in state.dropped and (current or peer is None):
                self._drop(state, u, ev.reason)
                pending.discard(u)
            return
        if not current or (u in state.dropped and state.dropped[u] != "deadline missed"):
            return  # from a closed connection, or from a client already thrown out
        msg, why = self._message(state, u, ev.data)
        if why is None and msg is not None:
            digest = hashlib.sha256(ev.data).digest()
            if digest in state.accepted:
                why = f"replayed message: a second copy of its {type(msg).__name__}"
            else:
                try:
                    state.sr.receive(msg)
                except RemoteProtocolError as exc:
                    why = f"refused: {exc}"
                else:
                    state.accepted.add(digest)
                    pending.discard(u)
        if why == "goodbye" or (why or "").startswith("declined"):
            self._drop(state, u, why)
            pending.discard(u)
        elif why is not None:
            self._violation(state, pending, peer, why)

    def _message(self, state: _RoundState, u: int, data: bytes):
        """(message, None) to process; (None, None) to ignore; (None, reason) to drop."""
        try:
            kind, body = decode_frame(data)
            if kind in (BYE, DECLINE):
                return None, self._leaving(state, u, kind, body)
            if kind != PROTOCOL:
                raise WireError(f"frame kind {kind} is not for the server")
            msg = decode(body)
        except WireError as exc:
            return None, f"garbage: {exc}"
        if getattr(msg, "sender", None) != u:
            return None, f"message in the name of client {getattr(msg, 'sender', None)}"
        if msg.session_id in self._late.get(u, ()):
            self.log("late-message-ignored", round=msg.round, stage=state.stage, client=u,
                     kind=type(msg).__name__)
            return None, None
        return msg, None

    def _leaving(self, state: _RoundState, u: int, kind: int, body) -> str | None:
        """The drop reason of a goodbye or of a decline of this round. One late decline of the
        previous round needs nothing (None); any other decline is a violation."""
        if kind == BYE:
            return "goodbye"
        if body.session_id == state.session:
            return f"declined: {body.reason}"
        if body.session_id == self._previous_session and u not in self._late_declines:
            self._late_declines.add(u)
            return None
        return "violation: a decline of a session that is not the current or previous round's"

    def _violation(self, state: _RoundState, pending: set[int], peer: _Peer, why: str) -> None:
        self._drop(state, peer.id, why)
        pending.discard(peer.id)
        peer.close(grpc.StatusCode.INVALID_ARGUMENT, f"dropped: {why}"[:200])

    def _drop(self, state: _RoundState, u: int, reason: str, *, late: bool = False) -> None:
        if u in state.dropped:
            return
        state.dropped[u] = reason
        if late:
            self._late.setdefault(u, set()).add(state.session)
        self.log("client-dropped", level="warning", round=state.round, stage=state.stage,
                 client=u, reason=reason)


@dataclass
class _RoundState:
    sr: ServerRound
    round: int
    session: bytes
    stage: str = "advertise_keys"
    charged: bool = False  # the DP write-ahead record of this round was written

    def __post_init__(self) -> None:
        self.dropped: dict[int, str] = {}
        self.accepted: set[bytes] = set()  # SHA-256 of each accepted message, to name replays


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
