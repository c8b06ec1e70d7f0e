"""The in-process round on several cores: the clients split over forked worker processes.

The same round as :class:`protocol.simulate._InProcessHost` plays (real encoded bytes, the
dropout schedule as the network, every live client answering at once), but the clients'
work runs in ``workers`` child processes while the server stays in this one, so a machine's
cores share the clients' key agreements, share dealing and masking.

Each worker is forked when the round starts and inherits its share of the
:class:`~protocol.participant.Participant` objects and the input provider (nothing is pickled).
The processes exchange only the protocol's own wire bytes and a fixed binary framing
(:func:`_reply_frame`); a worker answers each message as soon as it has handled it, and the
server accepts replies as they arrive. Per stage, one sender thread per worker writes that
worker's messages, so the server can read replies while a worker's pipe is still filling.
The workers exit when the round ends, however it ends.

Fork is POSIX-only and copies the parent's memory copy-on-write: a simulation tool for a
machine's cores, not a deployment host (that is :mod:`protocol.net`).
"""

from __future__ import annotations

import multiprocessing
import struct
import threading
import time
from collections.abc import Callable, Mapping
from enum import IntEnum
from multiprocessing.connection import Connection, wait

from .driver import DropReason, StageRun
from .errors import ProtocolError, RemoteProtocolError
from .messages import Message, Setup
from .participant import Participant
from .server import ServerRound
from .simulate import Hook, InputProvider, SimulatedHost, StageRecord
from .transitions import Stage
from .wire import decode, encode

#: A reply record: client id, status, seconds inside the client's calls, answer count.
_REPLY = struct.Struct("<IBdI")
_LEN = struct.Struct("<I")
_END_OF_STAGE = b""  # sent to a worker after its last message of a stage, and echoed back


class _Status(IntEnum):
    OK = 0  # the answers follow (possibly none)
    REFUSED = 1  # the client refused the message; the reason follows
    NO_INPUT = 2  # the provider had no input for this client
    FAILED = 3  # the client raised something no check anticipated; its repr follows


def _reply_frame(u: int, status: _Status, seconds: float, parts: list[bytes]) -> bytes:
    out = [_REPLY.pack(u, status, seconds, len(parts))]
    for p in parts:
        out += [_LEN.pack(len(p)), p]
    return b"".join(out)


def _read_reply(frame: bytes) -> tuple[int, _Status, float, list[bytes]]:
    u, status, seconds, count = _REPLY.unpack_from(frame)
    pos, parts = _REPLY.size, []
    for _ in range(count):
        (size,) = _LEN.unpack_from(frame, pos)
        pos += _LEN.size
        parts.append(frame[pos:pos + size])
        pos += size
    if pos != len(frame):
        raise ProtocolError("a simulation worker sent a malformed reply frame")
    return u, _Status(status), seconds, parts


def _worker(conn: Connection, participants: Mapping[int, Participant],
            provide: InputProvider, inherited: list[Connection]) -> None:
    """A worker's loop: answer each server message for one of its clients, in order.
    ``inherited``: the parent's ends of the pipes, copied by fork; closed here so that a
    worker sees the end of its pipe when the parent closes it."""
    for c in inherited:
        c.close()
    try:
        while True:
            data = conn.recv_bytes()
            if data == _END_OF_STAGE:
                conn.send_bytes(_END_OF_STAGE)
                continue
            msg = decode(data)
            conn.send_bytes(_answer(participants[msg.recipient], msg, provide))
    except EOFError:  # the server side closed: the round is over
        pass
    finally:
        conn.close()


def _answer(p: Participant, msg: Message, provide: InputProvider) -> bytes:
    """Client ``p``'s reply record to ``msg`` (its input asked for if its machine needs it)."""
    t0 = time.perf_counter()
    try:
        answers = p.join(msg) if isinstance(msg, Setup) else p.receive(msg)
        if p.needs_input:
            got = provide(p.id, p.round.setup)
            if got is None:
                return _reply_frame(p.id, _Status.NO_INPUT, time.perf_counter() - t0, [])
            update, weight = got
            answers = answers + p.give_input(update, weight=weight)
    except RemoteProtocolError as exc:
        return _reply_frame(p.id, _Status.REFUSED, time.perf_counter() - t0,
                            [str(exc).encode()])
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
        return _reply_frame(p.id, _Status.FAILED, time.perf_counter() - t0,
                            [repr(exc).encode()])
    return _reply_frame(p.id, _Status.OK, time.perf_counter() - t0,
                        [encode(a) for a in answers])


class WorkerHost(SimulatedHost):
    """The driver's host with the clients in ``workers`` forked processes (see the module
    docstring). Use as a context manager, or call :meth:`close`, so the workers exit."""

    def __init__(self, server: ServerRound, participants: Mapping[int, Participant],
                 provide: InputProvider, schedule: Mapping[str, set[int]], *, workers: int,
                 server_hook: Hook | None = None,
                 progress: Callable[[str, int, int], None] | None = None,
                 on_survivors_known: Callable[[frozenset[int]], None] | None = None) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ProtocolError(f"workers must be a positive int, got {workers!r}")
        if any(p.dp is not None for p in participants.values()):
            raise ProtocolError("DP clients keep ledgers in this process: simulate them with "
                                "workers=1")
        super().__init__(server, schedule, server_hook=server_hook, progress=progress,
                         on_survivors_known=on_survivors_known)
        self._participants = participants
        ids = sorted(participants)
        self._owner = {u: i % workers for i, u in enumerate(ids)}
        ctx = multiprocessing.get_context("fork")
        self._conns: list[Connection] = []
        self._procs = []
        for w in range(min(workers, len(ids))):
            mine = {u: participants[u] for u in ids if self._owner[u] == w}
            parent, child = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=_worker, args=(child, mine, provide,
                                                     [*self._conns, parent]), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    def __enter__(self) -> WorkerHost:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self, *, kill: bool = False) -> None:
        """Close the pipes and wait for the workers (killed at once with ``kill``, or if they
        do not exit)."""
        if kill:
            for p in self._procs:
                p.kill()
        for c in self._conns:
            c.close()
        for p in self._procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
        self._conns, self._procs = [], []

    def deliver(self, run: StageRun) -> None:
        """Send each live client its message through its worker, and hand every reply to the
        server as it arrives."""
        stage = run.stage
        rec = self.transcript.stages.setdefault(stage, StageRecord())
        batches: list[list[bytes]] = [[] for _ in self._conns]
        for u, _, _, data in self.to_clients(run, progress=False):
            if u in self._owner:  # a hook may address a message to no client
                batches[self._owner[u]].append(data)
        total = sum(map(len, batches))
        senders = [threading.Thread(target=_send_all, args=(c, b), daemon=True)
                   for c, b in zip(self._conns, batches, strict=True)]
        for s in senders:
            s.start()
        try:
            self._receive(run, rec, stage, total)
        except BaseException:
            self.close(kill=True)  # a blocked sender thread fails on the closed pipe
            raise
        finally:
            for s in senders:
                s.join()

    def _receive(self, run: StageRun, rec: StageRecord, stage, total: int) -> None:
        open_conns, done = list(self._conns), 0
        while open_conns:
            for c in wait(open_conns):
                try:
                    frame = c.recv_bytes()
                except EOFError:
                    raise ProtocolError("a simulation worker exited during the round") from None
                if frame == _END_OF_STAGE:
                    open_conns.remove(c)
                    continue
                done += 1
                if self._progress:
                    self._progress(str(stage), done, total)
                self._handle(run, rec, _read_reply(frame))

    def _handle(self, run: StageRun, rec: StageRecord,
                reply: tuple[int, _Status, float, list[bytes]]) -> None:
        u, status, seconds, parts = reply
        t = rec.client(u)
        t.seconds += seconds
        if status is _Status.FAILED:
            raise ProtocolError(f"simulated client {u} failed: {parts[0].decode()}")
        if status is _Status.REFUSED:
            reason = parts[0].decode()
            rec.refused.append(reason)
            run.drop(u, DropReason.REFUSED, reason)
            return
        if status is _Status.NO_INPUT:
            run.drop(u, DropReason.DECLINED, "no input for this round")
            return
        if run.stage is Stage.ADVERTISE_KEYS:  # u's worker accepted its Setup
            self._participants[u].remember_session(self._server.session_id)
        self.hand_to_server(run, rec, t, parts)


def _send_all(conn: Connection, batch: list[bytes]) -> None:
    """One worker's messages for a stage, then the end-of-stage marker."""
    for data in batch:
        conn.send_bytes(data)
    conn.send_bytes(_END_OF_STAGE)
