"""A client process (or a training loop) connected to the aggregation server over mutual TLS.

The sans-IO :class:`protocol.client.ClientRound`, held by a
:class:`protocol.participant.Participant` as in every host, does the protocol; this module moves
its messages over one gRPC stream and keeps what must outlive a round:

* the set of session ids already taken part in, on disk (``state_dir/sessions``, a
  :class:`protocol.sessions.FileSessionStore`), so a Setup that replays an old session is
  refused even after a restart of the client (``state_dir`` is required in malicious mode);
* the client's own privacy ledger with its budget filter: a round over this client's budget
  is refused at Setup (the client sends nothing, so it is a dropout at AdvertiseKeys), and a
  round taken part in is charged before the masked input leaves the client (write-ahead);
* the configuration digest: a server whose WELCOME digest differs from this client's
  configuration (registry, round and DP parameters, dimension) is refused before any round.

The server's certificate is checked by TLS against the deployment CA and the server name.

Two interfaces: :class:`AsyncClient` (asyncio; the command line and the load benchmark run
many of them in one process) and :class:`SecAggClient`, a blocking API for training loops::

    with SecAggClient("client.toml") as client:
        for epoch in range(rounds):
            delta = train_one_round(model)
            result = client.round(delta)        # numpy vector, list, state dict or tensor
            apply(model, result.update)         # the published aggregate, same structure
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from dp.errors import BudgetExceeded, DPError
from dp.ledger import Ledger, open_ledger
from dp.update import UpdateSpec, flatten, unflatten
from secagg import Ring, SecAggError, SigningKey

from ..client import ClientRound, InputError
from ..config import Mode
from ..dp_plan import DPClient, plan_dp
from ..errors import ProtocolError, RemoteProtocolError, WireError
from ..messages import Setup
from ..participant import Participant
from ..sessions import FileSessionStore
from ..wire import decode, encode
from .errors import (
    CertificateError,
    ConnectionLost,
    ExitCode,
    NetError,
    RoundFailed,
    ServerRefused,
    SettingsError,
)
from .frames import (
    ABORT,
    BYE,
    PROTOCOL,
    RESULT,
    WELCOME,
    Bye,
    Decline,
    decode_frame,
    encode_frame,
    printable_ascii,
    protocol_frame,
)
from .jsonlog import JsonLog
from .keys import load_signing_key
from .service import PATH, client_options
from .settings import ClientSettings, load_client
from .tls import read_pem

__all__ = ["AsyncClient", "ConnectionLost", "NetError", "RoundFailed", "RoundResult",
           "SecAggClient", "ServerRefused", "run_client"]

#: A failed connection attempt is retried after RETRY_FIRST seconds (times a jitter in
#: [0.5, 1.5)), doubling up to RETRY_MAX, within the connect timeout.
RETRY_FIRST = 0.2
RETRY_MAX = 5.0

InputProvider = Callable[[bytes, int], Awaitable[tuple[object, float | None] | None]]


@dataclass(frozen=True)
class RoundResult:
    session_id: bytes
    round: int
    survivors: tuple[int, ...]
    aggregate: np.ndarray  # ring sum (no DP) or the decoded DP estimate
    included: bool  # this client's input is in the aggregate
    update: object = None  # the aggregate in the structure of the update handed in (DP)


class AsyncClient:
    """One client's connection; :meth:`serve` answers rounds until the server says goodbye.

    Raises SettingsError if the identity key cannot be loaded or malicious mode has no
    ``state_dir``, and a DPError if the DP parameters cannot be planned for the cohort."""

    def __init__(self, settings: ClientSettings, *, log: JsonLog | None = None,
                 provider: InputProvider | None = None) -> None:
        s = self.s = settings
        self.log = log or JsonLog(settings.log, party=f"client-{settings.id}")
        self.provider = provider
        self.identity = None
        if s.round.mode == Mode.MALICIOUS:
            self.identity = SigningKey(load_signing_key(s.identity))
        self.registry = s.registry.verify_keys() if s.round.mode == Mode.MALICIOUS else None
        self.plan = plan_dp(s.dp, s.round, len(s.registry.members), s.dim) if s.dp else None
        self.round_config = self.plan.round_config if self.plan else s.round
        if s.state_dir is None and s.round.mode == Mode.MALICIOUS:
            raise SettingsError("malicious mode needs state_dir: the sessions this client took "
                                "part in must outlive a restart")
        if s.state_dir is not None:
            s.state_dir.mkdir(parents=True, exist_ok=True)
        self.used = FileSessionStore(s.state_dir / "sessions" if s.state_dir else None)
        self.ledger: Ledger | None = None
        self.dp: DPClient | None = None
        # this identity's side of each round (a fresh machine per Setup); made at connect,
        # once the DP ledger is open
        self.participant: Participant | None = None
        self.spec: UpdateSpec | None = None
        self.bytes_sent = self.bytes_received = 0
        self.channel = self.call = None
        self.on_result: Callable[[RoundResult | RoundFailed], None] | None = None
        self._consumed: bytes | None = None  # session that took the last input
        self._queue: asyncio.Queue | None = None  # SecAggClient's inputs
        self._waiting: concurrent.futures.Future | None = None  # the input in this round

    # -- connection ----------------------------------------------------------------------
    def _open_ledger(self) -> None:
        s = self.s
        if self.plan is None or self.ledger is not None:
            return
        key = load_signing_key(s.ledger_key) if s.ledger_key is not None else None
        self.ledger = open_ledger(s.ledger, s.dp.budget, key=key, owner=f"client-{s.id}")
        self.dp = DPClient(s.id, self.plan, self.ledger)
        self.participant = None  # the next one is made with this ledger

    def _participant(self) -> Participant:
        if self.participant is None:
            self.participant = Participant(self.s.id, config=self.round_config,
                                           identity=self.identity, registry=self.registry,
                                           used_sessions=self.used, dp=self.dp)
        return self.participant

    @property
    def current(self) -> ClientRound | None:
        """The machine of the round in progress here (None: no round, or it was given up)."""
        return self.participant.round if self.participant is not None else None

    async def connect(self) -> None:
        """Open this client's ledger (with DP), then the stream, and check the server's
        WELCOME. An attempt that fails while the cohort is still filling (the server not yet
        listening, too busy to answer, the stream lost) is retried after a jittered,
        doubling pause (RETRY_FIRST to RETRY_MAX seconds) until ``connect_timeout`` has passed
        since the first. Raises ServerRefused if the server is refused or refuses this client,
        ConnectionLost if it cannot be reached within ``connect_timeout``, CertificateError
        if a TLS file cannot be used, SettingsError if the ledger key cannot be loaded, and a
        LedgerError (BudgetMismatch for a ledger made for another budget) if the ledger
        cannot be used."""
        s = self.s
        self._open_ledger()
        creds = grpc.ssl_channel_credentials(
            root_certificates=read_pem(s.ca, "CA certificate"),
            private_key=read_pem(s.key, "client key"),
            certificate_chain=read_pem(s.cert, "client certificate"))
        loop = asyncio.get_running_loop()
        end = loop.time() + s.connect_timeout
        pause, attempt = RETRY_FIRST, 1
        while True:
            try:
                data = await self._attempt(creds, end - loop.time())
                break
            except ConnectionLost as exc:
                left = end - loop.time()
                if left <= 0:
                    raise ConnectionLost(f"{exc} (gave up after {attempt} attempts in "
                                         f"{s.connect_timeout:g} s)") from None
                wait = min(left, pause * (0.5 + random.random()))  # noqa: S311 - jitter, no secret
                self.log("connect-retry", level="warning", attempt=attempt, reason=str(exc),
                         retry_in=wait)
                await asyncio.sleep(wait)
                pause, attempt = min(RETRY_MAX, 2 * pause), attempt + 1
        self.bytes_received += len(data)
        try:
            kind, welcome = decode_frame(data)
        except WireError as exc:
            raise ServerRefused(f"malformed welcome: {exc}") from None
        if kind != WELCOME:
            raise ServerRefused("the server did not start with a welcome")
        if welcome.client_id != s.id:
            raise ServerRefused(f"the server took this certificate for client "
                                f"{welcome.client_id}, not {s.id}")
        if welcome.config_digest != s.digest():
            raise ServerRefused("the server's configuration (registry, round or DP "
                                "parameters, dimension) differs from this client's")
        self.log("connected", server=s.server, next_round=welcome.next_round,
                 attempts=attempt)

    async def _attempt(self, creds, timeout: float) -> bytes:
        """Open a channel and the stream, and read the server's first frame within
        ``timeout`` seconds. Raises ServerRefused if the server refused this client's
        certificate, ConnectionLost for any other failure (the channel is closed then)."""
        s = self.s
        words = self.plan.encoding.padded_dim if self.plan else s.dim
        self.channel = grpc.aio.secure_channel(
            s.server, creds, options=client_options(s.server_name, 16 * words + (1 << 22)))
        self.call = self.channel.stream_stream(PATH)()
        try:
            data = await asyncio.wait_for(self.call.read(), max(timeout, 0.001))
        except TimeoutError:
            await self._close_channel()
            raise ConnectionLost(f"no answer from {s.server}") from None
        except grpc.aio.AioRpcError as exc:
            await self._close_channel()
            if exc.code() is grpc.StatusCode.PERMISSION_DENIED:
                raise ServerRefused(f"the server refused this client: {exc.details()}") \
                    from None
            raise ConnectionLost(f"cannot connect to {s.server}: {exc.code().name}: "
                                 f"{exc.details()}") from None
        if data is grpc.aio.EOF:
            await self._close_channel()
            raise ConnectionLost("the server closed the stream before its welcome")
        return data

    async def _close_channel(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        self.channel = self.call = None

    async def close(self, reason: str = "client closing") -> None:
        if self.call is not None and not self.call.done():
            try:
                bye = encode_frame(Bye(printable_ascii(reason)))
                await asyncio.wait_for(self.call.write(bye), 2.0)
                await asyncio.wait_for(self.call.done_writing(), 2.0)
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError,
                    asyncio.CancelledError, TimeoutError):
                pass  # the call is over already: nothing to say goodbye to
        await self._close_channel()
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None

    async def _send(self, frame: bytes) -> None:
        """Send one frame. A failed write is logged, not raised: whatever the server sent
        before it closed (its goodbye, say) is still read, and a dead connection shows up
        there as ConnectionLost."""
        self.bytes_sent += len(frame)
        try:
            await self.call.write(frame)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            self.log("send-failed", level="warning", reason=type(exc).__name__)

    # -- the rounds ----------------------------------------------------------------------
    async def serve(self) -> str:
        """Answer rounds until the server's BYE (its reason is returned); raises
        ConnectionLost if the stream breaks. Frames are read by a separate task while this
        one computes, so what the server sent before closing is still handled in order."""
        frames: asyncio.Queue[bytes | ConnectionLost] = asyncio.Queue()
        reader = asyncio.create_task(self._read_frames(frames))
        try:
            while True:
                data = await frames.get()
                if isinstance(data, ConnectionLost):
                    raise data
                try:
                    kind, body = decode_frame(data)
                    if kind == PROTOCOL:
                        await self._on_message(decode(body))
                    elif kind == RESULT:
                        self._on_result(body)
                    elif kind == ABORT:
                        self._on_abort(body)
                    elif kind == BYE:
                        self.log("server-goodbye", reason=body.reason)
                        self._reader = reader  # ends by itself when the server closes
                        return body.reason
                    else:
                        raise WireError(f"unexpected frame kind {kind}")
                except WireError as exc:
                    await self._abandon(f"malformed frame from the server: {exc}")
        except BaseException:
            reader.cancel()  # cancels the call: only when the stream is given up
            raise

    async def _read_frames(self, frames: asyncio.Queue) -> None:
        while True:
            try:
                data = await self.call.read()
            except grpc.aio.AioRpcError as exc:
                frames.put_nowait(ConnectionLost(f"{exc.code().name}: {exc.details()}"))
                return
            if data is grpc.aio.EOF:
                frames.put_nowait(ConnectionLost("the server closed the stream"))
                return
            self.bytes_received += len(data)
            frames.put_nowait(data)

    async def _abandon(self, reason: str, *, level: str = "warning",
                       public: str | None = None) -> None:
        """Give up the current round and tell the server at once (DECLINE), so it counts this
        client as a dropout without waiting for the deadline. ``public`` is the reason sent to
        the server when ``reason`` may describe the private input."""
        cr = self.current
        r = cr.setup.round if cr and cr.setup else None
        self.log("round-refused", level=level, round=r, reason=reason)
        self._participant().leave()
        if cr is not None and cr.setup is not None:
            await self._decline(cr.setup.session_id, cr.setup.round, public or reason)

    async def _decline(self, session_id: bytes, rnd: int, reason: str) -> None:
        await self._send(encode_frame(Decline(session_id, rnd, printable_ascii(reason))))

    async def _on_message(self, msg) -> None:
        if isinstance(msg, Setup):
            await self._on_setup(msg)
            return
        p = self._participant()
        if p.round is None:
            return  # no round in progress here (refused or abandoned): stay silent
        try:
            out = p.receive(msg)
        except RemoteProtocolError as exc:
            await self._abandon(str(exc))
            return
        except InputError as exc:  # may quote the private input: not sent to the server
            await self._abandon(str(exc), public="this client's input does not fit the round")
            return
        if p.needs_input:
            masked = await self._give_input(p)
            if masked is None:
                return
            out = out + masked
        for m in out:
            await self._send(protocol_frame(encode(m)))

    async def _on_setup(self, msg: Setup) -> None:
        p = self._participant()
        if p.round is not None:
            self.log("round-abandoned", level="warning", round=p.round.setup.round,
                     reason="a new round started")
        try:
            out = p.join(msg)
        except BudgetExceeded as exc:
            self.log("round-refused", level="warning", round=msg.round,
                     reason=f"over this client's own privacy budget: {exc}")
            self._fail_input(RoundFailed(f"over this client's own budget: {exc}"))
            await self._decline(msg.session_id, msg.round, "over this client's own "
                                "privacy budget")
            return
        except RemoteProtocolError as exc:
            self.log("round-refused", level="warning", round=msg.round, reason=str(exc))
            await self._decline(msg.session_id, msg.round, str(exc))
            return
        self.log("round-joined", round=msg.round, session=msg.session_id.hex())
        for m in out:
            await self._send(protocol_frame(encode(m)))

    async def _give_input(self, p: Participant) -> list | None:
        """The machine holds its shares and needs this client's input: ask the provider,
        give it (with DP the ledger is charged there, just before the masked input leaves),
        and return the MaskedInput; None if there is no input or it was refused."""
        s = p.round.setup
        provider = self.provider or self._queued_input
        try:
            got = await asyncio.wait_for(provider(s.session_id, s.round), self.s.input_timeout)
        except TimeoutError:
            got = None
        if got is None:
            await self._abandon("no input for this round")
            return None
        update, weight = got
        try:
            if self.dp is not None:
                flat, self.spec = flatten(update)
                out = p.give_input(flat, weight=weight)
            else:
                out = p.give_input(np.asarray(update))
        except (DPError, SecAggError, ProtocolError, OSError, TypeError, ValueError) as exc:
            # the detail can quote a value of the private input: it goes to the caller only
            await self._abandon(f"this client's input was refused ({type(exc).__name__})",
                                level="error", public="this client's input was refused")
            failed = RoundFailed(f"input refused: {exc}")
            self._fail_input(failed)
            if self.provider is not None and self.on_result is not None:
                self.on_result(failed)
            return None
        self._consumed = s.session_id
        return out

    def _on_result(self, res) -> None:
        mine = res.session_id == self._consumed
        included = self.s.id in res.survivors
        update = None
        if mine and self.spec is not None and res.aggregate.dtype == np.float64:
            update = unflatten(res.aggregate, self.spec)
        result = RoundResult(res.session_id, res.round, res.survivors, res.aggregate,
                             included and mine, update)
        self.log("round-result", round=res.round, included=result.included,
                 survivors=len(res.survivors))
        if self.current is not None and self.current.setup.session_id == res.session_id:
            self._participant().leave()
        if mine and self.on_result is not None:
            self._consumed = None
            self.on_result(result)

    def _on_abort(self, ab) -> None:
        self.log("round-aborted", level="warning", round=ab.round, stage=ab.stage,
                 reason=ab.reason)
        if self.current is not None and self.current.setup.session_id == ab.session_id:
            self._participant().leave()
        if ab.session_id == self._consumed and self.on_result is not None:
            self._consumed = None
            self.on_result(RoundFailed(f"round {ab.round} aborted in {ab.stage}: {ab.reason}"))

    def check_input(self, update: object, weight: float | None = None) -> str | None:
        """Why ``update`` cannot be this client's input (None if it can), without a charge:
        the flattened size must be the configured dimension (with DP; NaN and infinities
        refused), or the vector must be ring integers of the right length (without DP)."""
        try:
            if self.plan is not None:
                vec, _ = flatten(update)
                if vec.size != self.s.dim:
                    return f"{vec.size} coordinates, the deployment has {self.s.dim}"
                if self.plan.config.weighted and weight is None:
                    return "weighted aggregation needs --weight"
            else:
                Ring(self.round_config.bits).validate(np.asarray(update), length=self.s.dim,
                                                      name="input")
        except (DPError, SecAggError, TypeError, ValueError) as exc:
            return str(exc)
        return None

    # -- the queued inputs of SecAggClient ------------------------------------------------
    def _queue_get(self) -> asyncio.Queue:
        if self._queue is None:
            self._queue = asyncio.Queue()
        return self._queue

    async def _queued_input(self, session: bytes, rnd: int):
        update, weight, fut = await self._queue_get().get()
        self._waiting = fut
        return update, weight

    def _fail_input(self, exc: RoundFailed) -> None:
        """Fail the input this round took, or else the next queued one."""
        fut, self._waiting = self._waiting, None
        if fut is None and self._queue is not None and not self._queue.empty():
            fut = self._queue.get_nowait()[2]
        if fut is not None and not fut.done():
            fut.set_exception(exc)


async def run_client(settings: ClientSettings, update: object, *, weight: float | None = None,
                     log: JsonLog | None = None,
                     on_result: Callable[[RoundResult | RoundFailed], None] | None = None,
                     factory: Callable[..., AsyncClient] | None = None) -> ExitCode:
    """The command line's client: the same update every round until the server's BYE;
    reconnects if the stream breaks (:meth:`AsyncClient.connect` retries within
    ``connect_timeout``).
    Returns the exit code: OK after the server's goodbye, SERVER_REFUSED if the server is
    refused or refuses this client, UNREACHABLE if it cannot be reached, CONFIG for a bad
    configuration, certificate, key or ledger, or an input that does not fit."""

    async def provider(session: bytes, rnd: int):
        return update, weight

    try:
        client = (factory or AsyncClient)(settings, log=log, provider=provider)
    except (SettingsError, CertificateError, DPError) as exc:
        (log or JsonLog(None, party="client"))("exit", level="error", code=ExitCode.CONFIG,
                                               reason=str(exc))
        return ExitCode.CONFIG
    problem = client.check_input(update, weight)
    if problem is not None:  # refused before connecting: the same input goes to every round
        print(f"secagg client: the input does not fit the deployment: {problem}",
              file=sys.stderr)
        client.log("exit", level="error", code=ExitCode.CONFIG,
                   reason="the input does not fit the deployment (details on stderr)")
        return ExitCode.CONFIG
    client.on_result = on_result
    try:
        while True:
            try:
                await client.connect()  # retries within connect_timeout
            except ConnectionLost as exc:
                client.log("exit", level="error", code=ExitCode.UNREACHABLE, reason=str(exc))
                return ExitCode.UNREACHABLE
            except ServerRefused as exc:
                client.log("exit", level="error", code=ExitCode.SERVER_REFUSED,
                           reason=str(exc))
                return ExitCode.SERVER_REFUSED
            try:
                reason = await client.serve()
            except ConnectionLost as exc:
                await client._close_channel()
                client.log("reconnecting", level="warning", reason=str(exc))
                continue
            client.log("exit", code=ExitCode.OK, reason=reason)
            return ExitCode.OK
    except (SettingsError, CertificateError, DPError) as exc:
        client.log("exit", level="error", code=ExitCode.CONFIG, reason=str(exc))
        return ExitCode.CONFIG
    finally:
        await client.close()


class SecAggClient:
    """Blocking client for a training loop: ``round(update)`` gives this client's update to
    the next round that needs an input and returns that round's published aggregate.

    ``settings`` is a :class:`ClientSettings` or the path of ``client.toml``; raises
    SettingsError if that file cannot be used, as :class:`AsyncClient` does otherwise."""

    def __init__(self, settings: ClientSettings | str | Path, *,
                 log: JsonLog | None = None) -> None:
        if not isinstance(settings, ClientSettings):
            settings = load_client(settings)
        self._client = AsyncClient(settings, log=log)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"secagg-client-{settings.id}")
        self._serving: concurrent.futures.Future | None = None

    def __enter__(self) -> SecAggClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def connect(self) -> SecAggClient:
        """Connect and start answering rounds in the background; raises what
        :meth:`AsyncClient.connect` raises."""
        self._thread.start()
        c = self._client
        self._run(c.connect())
        c.on_result = self._deliver
        self._serving = asyncio.run_coroutine_threadsafe(c.serve(), self._loop)
        return self

    def _deliver(self, result) -> None:
        fut, self._client._waiting = self._client._waiting, None
        if fut is None or fut.done():
            return
        if isinstance(result, Exception):
            fut.set_exception(result)
        else:
            fut.set_result(result)

    def round(self, update: object, *, weight: float | None = None,
              timeout: float | None = None) -> RoundResult:
        """Hand ``update`` to the next round and wait for its aggregate. Raises RoundFailed
        if that round aborted or this client refused it, ConnectionLost if the server went
        away, TimeoutError if no aggregate came within ``timeout`` seconds."""
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def put() -> None:
            self._client._queue_get().put_nowait((update, weight, fut))

        self._loop.call_soon_threadsafe(put)
        serving = self._serving
        done, _ = concurrent.futures.wait([fut, serving], timeout,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        if fut in done:
            return fut.result()
        if serving in done:
            exc = serving.exception()
            raise exc if exc is not None else ConnectionLost(
                f"the server finished: {serving.result()}")
        raise TimeoutError("no aggregate within the timeout")

    def close(self) -> None:
        if self._thread.is_alive():
            try:
                self._run(self._client.close(), timeout=10)
            finally:
                if self._serving is not None:
                    self._serving.cancel()
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)
