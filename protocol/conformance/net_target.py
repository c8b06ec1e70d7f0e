"""The conformance target of our networked client: :func:`protocol.net.client.run_client`
(what ``secagg client`` runs) against a scripted gRPC server on 127.0.0.1 with mutual TLS.

:class:`NetworkClient` holds one deployment CA, one server certificate and one gRPC server
(``/secagg.v1.Aggregation/Session``, :mod:`protocol.net.service`) for all its sessions, on an
event loop in a thread of its own. Each session is one client process's life in miniature:

* a client certificate of its own (so a connection is tied to its session by the certificate's
  fingerprint, as the real server ties it to a registry entry), and client settings with the
  spec's round configuration, input dimension and ``state_dir`` (no DP); in malicious mode the
  spec's Ed25519 identity in a key file and a registry of the spec's identities. Without a
  spec registry (semi-honest mode) the registry lists the client alone: there it only
  authenticates connections and enters the configuration digest;
* :func:`~protocol.net.client.run_client` with the spec's input, connecting; the server answers
  with the WELCOME our server sends (the certificate's client id, the digest of the
  configuration, round 0), and the session is open once the client has logged that it accepted
  it (a client that refuses the welcome or exits is a :class:`TargetError`).

:meth:`_NetSession.send` forwards one server message in a PROTOCOL frame and maps what comes
back on the stream:

* a PROTOCOL frame: the reply (its body, wire bytes). The networked client answers every
  honest server message with exactly one message, so the first one ends the wait;
* a DECLINE: the client gave up the round and told the server (its reason is the refusal);
* silence: the client gave up without a word. It does so when it cannot name the round it
  refuses (a Setup that does not decode: it declines only a session it can name). Once its log
  records the refusal of no named round (``round-refused`` without a round) the wait ends
  after :data:`DECLINE_GRACE`; otherwise after :data:`QUIET` seconds, reported as no answer;
* its BYE, a closed stream or its exit: the client left (a crash, an exception escaping
  ``run_client``, is a :class:`TargetError`).

:meth:`_NetSession.close` ends the run the way our server does: a BYE, upon which the client
says goodbye, closes its channel and ``run_client`` returns; a client that sent more messages
than were returned is a :class:`TargetError` there.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import queue
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import grpc
import numpy as np

from ..config import Mode
from ..errors import WireError
from ..net.client import run_client
from ..net.errors import ExitCode
from ..net.frames import (
    BYE,
    DECLINE,
    PROTOCOL,
    Bye,
    Welcome,
    decode_frame,
    encode_frame,
    protocol_frame,
)
from ..net.jsonlog import JsonLog
from ..net.service import handler, server_options
from ..net.settings import ClientSettings, Member, Registry
from ..net.tls import cert_pem, fingerprint, key_pem, make_ca, make_leaf, write_private
from .targets import ClientSession, ClientSpec, ClientTarget, Reply, TargetError

#: Seconds of silence after a server message before it counts as unanswered.
QUIET = 5.0
#: Seconds to wait on once the client logged the refusal of a round it cannot name.
DECLINE_GRACE = 0.5
#: Seconds for the client to connect and accept the WELCOME, and to exit after the BYE.
CONNECT_TIMEOUT = 15.0
EXIT_TIMEOUT = 10.0
#: The largest frame the scripted server takes from a client.
MAX_FRAME = 1 << 24
HOST = "127.0.0.1"


class NetworkClient(ClientTarget):
    """Our networked client, one :func:`run_client` per session, against a scripted gRPC
    server (see the module docstring). The CA, server certificate, gRPC server and event loop
    are made at the first :meth:`open` and kept until :meth:`close`."""

    name = "networked client (gRPC, mutual TLS)"

    def __init__(self) -> None:
        self._dir: Path | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: grpc.aio.Server | None = None
        self._port = 0
        self._ca = None
        self._sessions: dict[str, _NetSession] = {}  # client certificate fingerprint -> session
        self._count = itertools.count(1)

    # -- the shared server ------------------------------------------------------------------
    def _start(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="secagg-conformance-net-"))
        ca_key, ca = make_ca("secagg conformance CA")
        s_key, s_cert = make_leaf(ca_key, ca, "secagg-server", server=True, hosts=(HOST,))
        self._ca = ca_key, ca
        (self._dir / "ca.pem").write_bytes(cert_pem(ca))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="secagg-conformance-net")
        self._thread.start()
        creds = grpc.ssl_server_credentials([(key_pem(s_key), cert_pem(s_cert))],
                                            root_certificates=cert_pem(ca),
                                            require_client_auth=True)
        try:
            self._call(self._listen(creds), CONNECT_TIMEOUT)
        except BaseException:
            self.close()
            raise

    async def _listen(self, creds) -> None:
        server = grpc.aio.server(options=server_options(2 * MAX_FRAME))
        server.add_generic_rpc_handlers((handler(self._rpc),))
        self._port = server.add_secure_port(f"{HOST}:0", creds)
        await server.start()
        self._server = server

    def _call(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _rpc(self, request_iterator, context: grpc.aio.ServicerContext) -> None:
        pem = (context.auth_context().get("x509_pem_cert") or [b""])[0]
        try:
            fp = fingerprint(pem)
        except Exception:  # noqa: BLE001 - no usable client certificate
            fp = ""
        session = self._sessions.get(fp)
        if session is None or session.connected:
            if session is not None:
                session.events.put(("end", "the client connected a second time"))
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                "certificate of no open conformance session")
        await session.serve(context)

    # -- sessions ---------------------------------------------------------------------------
    def open(self, spec: ClientSpec) -> ClientSession:
        if self._loop is None:
            self._start()
        n = next(self._count)
        d = self._dir / f"session-{n}"
        d.mkdir()
        ca_key, ca = self._ca
        c_key, c_cert = make_leaf(ca_key, ca, f"secagg-client-{spec.client_id}", server=False)
        (d / "client.pem").write_bytes(cert_pem(c_cert))
        write_private(d / "client.key", key_pem(c_key))
        fp = fingerprint(c_cert)
        settings = self._settings(spec, d, fp, n)
        session = _NetSession(self, spec.client_id, fp, settings.digest(), d)
        self._sessions[fp] = session
        try:
            session.start(settings, spec.input.copy())
        except BaseException:
            session.close(check=False)
            raise
        return session

    def _settings(self, spec: ClientSpec, d: Path, fp: str, n: int) -> ClientSettings:
        """The client's settings: the spec's configuration, identity, registry and state."""
        me = spec.client_id
        keys = dict(spec.registry) if spec.registry is not None else {}
        if spec.config.mode == Mode.MALICIOUS and me not in keys:
            raise TargetError(f"malicious mode needs a registry naming client {me}")
        members = {me: Member(me, fp, keys.get(me))}
        for u, vk in keys.items():
            if u != me:  # peers never connect: a fingerprint no certificate has
                other = hashlib.sha256(f"conformance session {n} peer {u}".encode()).hexdigest()
                members[u] = Member(u, other, vk)
        identity = None
        if spec.identity is not None:
            identity = d / "identity.ed25519"
            write_private(identity, spec.identity.hex().encode() + b"\n")
        return ClientSettings(
            dim=int(spec.input.size), registry=Registry(members), round=spec.config, dp=None,
            ca=self._dir / "ca.pem", cert=d / "client.pem", key=d / "client.key", id=me,
            server=f"{HOST}:{self._port}", identity=identity, state_dir=spec.state_dir,
            connect_timeout=CONNECT_TIMEOUT, input_timeout=CONNECT_TIMEOUT)

    def _forget(self, session: _NetSession) -> None:
        if self._sessions.get(session.fingerprint) is session:
            del self._sessions[session.fingerprint]

    def close(self) -> None:
        for session in list(self._sessions.values()):
            session.close(check=False)
        if self._loop is not None:
            if self._server is not None:
                try:
                    self._call(self._server.stop(0.5), EXIT_TIMEOUT)
                except Exception:  # noqa: BLE001, S110 - stopping what is left, best effort
                    pass
                self._server = None
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(EXIT_TIMEOUT)
            if not self._thread.is_alive():
                self._loop.close()
            self._loop = self._thread = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class _LogSink:
    """A JsonLog stream that hands each event of the client's log to its session."""

    def __init__(self, events: queue.Queue) -> None:
        self._events = events

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self._events.put(("log", json.loads(line)))
        return len(text)

    def flush(self) -> None:
        pass


def _kind(data: bytes) -> int | None:
    """The kind of a transport frame (None: not a frame)."""
    try:
        return decode_frame(data)[0]
    except WireError:
        return None


class _NetSession(ClientSession):
    """One run of the networked client and its one connection to the scripted server."""

    def __init__(self, target: NetworkClient, client_id: int, fp: str, digest: bytes,
                 d: Path) -> None:
        self._target, self.client_id, self.fingerprint = target, client_id, fp
        self._digest, self._dir = digest, d
        self._loop = target._loop
        # ("frame", bytes) | ("end", reason) | ("exit", Future) | ("log", event), in order
        self.events: queue.Queue = queue.Queue()
        self.connected = False
        self._outbox: asyncio.Queue[bytes | None] | None = None
        self._run: Future | None = None  # run_client
        self._gone: str | None = None  # why the client can no longer be sent anything
        self._exit: Future | None = None
        self._refusals: list[str] = []  # reasons the client logged for refusing a round
        self._error = ""  # the last error the client logged
        self._closed = False

    # -- on the event loop -------------------------------------------------------------------
    async def serve(self, context: grpc.aio.ServicerContext) -> None:
        self.connected = True
        self._outbox = asyncio.Queue()
        reader = asyncio.create_task(self._read(context))
        try:
            await context.write(encode_frame(Welcome(self.client_id, self._digest, 0)))
            while (item := await self._outbox.get()) is not None:
                await context.write(item)
        except Exception as exc:  # noqa: BLE001 - a failed write: the client is gone
            self.events.put(("end", f"the stream broke ({type(exc).__name__})"))
        finally:
            reader.cancel()

    async def _read(self, context: grpc.aio.ServicerContext) -> None:
        try:
            while True:
                data = await context.read()
                if data is grpc.aio.EOF:
                    self.events.put(("end", "the client closed the stream"))
                    return
                if len(data) > MAX_FRAME:
                    self.events.put(("end", f"the client sent a frame of {len(data)} bytes"))
                    return
                self.events.put(("frame", data))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any read failure: the stream is over
            self.events.put(("end", f"the stream broke ({type(exc).__name__})"))

    def _put(self, item: bytes | None) -> None:
        """Queue ``item`` for the stream (from any thread); None ends the RPC."""
        def put() -> None:
            if self._outbox is not None:
                self._outbox.put_nowait(item)
        self._loop.call_soon_threadsafe(put)

    # -- the suite's side --------------------------------------------------------------------
    def start(self, settings: ClientSettings, update: np.ndarray) -> None:
        log = JsonLog(_LogSink(self.events), party=f"client-{self.client_id}")
        self._run = asyncio.run_coroutine_threadsafe(run_client(settings, update, log=log),
                                                     self._loop)
        self._run.add_done_callback(lambda f: self.events.put(("exit", f)))
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while True:
            kind, item = self._next(deadline)
            if kind is None:
                raise TargetError(f"the client did not connect within {CONNECT_TIMEOUT:g} s")
            if kind == "log" and item.get("event") == "connected":
                return
            if kind == "exit":
                raise TargetError(f"the client did not start its session: {self._left(item)}")
            if kind == "end":
                raise TargetError(f"the client did not start its session: {item}")
            if kind == "frame":
                if _kind(item) != BYE:
                    raise TargetError("the client sent a frame before accepting the welcome")
                bye = decode_frame(item)[1].reason
                raise TargetError("the client did not start its session: "
                                  f"{self._left(self._wait_exit(), bye=bye)}")

    def _next(self, deadline: float) -> tuple[str | None, object]:
        """The next event before ``deadline`` (a time.monotonic() value; one already past
        takes only what is queued), or (None, None). What the client's log says of a refused
        round or an error is kept as well as returned."""
        left = deadline - time.monotonic()
        try:
            kind, item = self.events.get(timeout=left) if left > 0 else self.events.get_nowait()
        except queue.Empty:
            return None, None
        if kind == "log" and item.get("event") == "round-refused":
            self._refusals.append(str(item.get("reason", "")))
        if kind == "log" and item.get("level") == "error":
            self._error = str(item.get("reason") or item.get("event"))
        if kind == "exit":
            self._exit = item
        return kind, item

    def send(self, data: bytes) -> Reply:
        if self._gone is not None:
            raise TargetError(f"the client already left: {self._gone}")
        extra = self._drain()
        if extra:
            raise TargetError(extra)
        refusals = len(self._refusals)
        self._put(protocol_frame(data))
        deadline = time.monotonic() + QUIET
        while True:
            kind, item = self._next(deadline)
            if kind is None:
                self._gone = "no answer"
                return Reply(refused=self._silence(refusals))
            if kind == "log" and item.get("event") == "round-refused" and \
                    item.get("round") is None:  # a round it cannot name: no DECLINE follows
                deadline = min(deadline, time.monotonic() + DECLINE_GRACE)
            elif kind == "frame":
                return self._frame(item)
            elif kind == "exit":
                self._gone = self._left(item)
                return Reply(refused=f"the client left: {self._gone}")
            elif kind == "end":  # its exit says whether it crashed
                self._gone = f"{item}; {self._left(self._wait_exit())}"
                return Reply(refused=f"the client left: {self._gone}")

    def _frame(self, data: bytes) -> Reply:
        """The reply a frame from the client makes."""
        try:
            kind, body = decode_frame(data)
        except WireError as exc:
            raise TargetError(f"the client sent a malformed frame: {exc}") from None
        if kind == PROTOCOL:
            return Reply((body,))
        if kind == DECLINE:
            self._gone = "declined"
            return Reply(refused=f"DECLINE of round {body.round}: {body.reason}")
        if kind == BYE:
            self._gone = self._left(self._wait_exit(), bye=body.reason)
            return Reply(refused=f"the client left: {self._gone}")
        raise TargetError(f"the client sent a frame of kind {kind}, which is the server's")

    def _silence(self, refusals: int) -> str:
        if len(self._refusals) > refusals:
            return ("no answer: the client gave the round up without a DECLINE (its log: "
                    f"{'; '.join(self._refusals[refusals:])})")
        return f"no answer within {QUIET:g} s"

    def _wait_exit(self) -> Future | None:
        deadline = time.monotonic() + EXIT_TIMEOUT
        while self._exit is None:
            kind, _ = self._next(deadline)
            if kind is None:
                return None
        return self._exit

    def _left(self, run: Future | None, *, bye: str | None = None) -> str:
        """How the client left: its exit code (and goodbye); a crash is a TargetError."""
        said = f"BYE ({bye}), " if bye is not None else ""
        if run is None:
            return f"{said}still running after {EXIT_TIMEOUT:g} s"
        if run.cancelled():
            return f"{said}cancelled"
        exc = run.exception()
        if exc is not None:
            raise TargetError(f"the client crashed: {type(exc).__name__}: {exc}")
        code = run.result()
        name = code.name if isinstance(code, ExitCode) else str(code)
        why = f": {self._error}" if code != ExitCode.OK and self._error else ""
        return f"{said}exit {int(code)} ({name}){why}"

    def _drain(self) -> str | None:
        """What the client sent beyond the replies returned (None: nothing)."""
        extra = []
        while True:
            kind, item = self._next(0.0)  # only what is queued
            if kind is None:
                break
            if kind == "frame" and (fk := _kind(item)) != BYE:
                extra.append("a message" if fk == PROTOCOL else f"a frame of kind {fk}")
        return (f"the client sent {', '.join(extra)} beyond its one answer to a message"
                if extra else None)

    def close(self, *, check: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        extra = self._drain()
        try:
            if self._run is not None and not self._run.done():
                self._put(encode_frame(Bye("conformance session over")))
                deadline = time.monotonic() + EXIT_TIMEOUT
                while not self._run.done():
                    kind, item = self._next(deadline)
                    if kind is None:
                        self._run.cancel()
                        break
                    if kind == "frame" and _kind(item) != BYE:
                        extra = extra or "the client sent a frame after its last answer"
            self._put(None)
        finally:
            self._target._forget(self)
            shutil.rmtree(self._dir, ignore_errors=True)
        if check and extra:
            raise TargetError(extra)
