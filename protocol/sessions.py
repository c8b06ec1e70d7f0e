"""Used-session stores: the session ids an identity has already taken part in.

A client that takes part in the same session twice can be made to sign two survivor sets for
it (one per run), which is exactly the split view the malicious-mode ConsistencyCheck exists to
prevent (threat_model.md, "Split view through a replayed session"). So in malicious mode every
:class:`protocol.ClientRound` is given a store, and a host keeps one per identity that outlives
its objects: :class:`FileSessionStore` on disk for a process that can restart, and
:func:`store_for_identity` for an in-process host (the simulator) whose identities live as long
as the process.

A session id is claimed (and, on disk, fsynced) before the client sends anything for it, so a
crash after the claim loses at most a session the client never spoke in.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator, MutableSet
from pathlib import Path

from secagg import VerifyKey

from .errors import LocalProtocolError
from .messages import SESSION_ID_BYTES


class FileSessionStore(MutableSet):
    """Used session ids at ``path``, one hex line each, appended and fsynced before use.

    Several processes (or objects) may share one file: :meth:`add` takes an exclusive lock on
    it, reads what others appended since, and refuses (LocalProtocolError) an id another one
    claimed first, so the check and the claim are one atomic step. A torn last line (a crash
    mid-append, before the fsync that the claim waits for) is a claim that never completed:
    it is ignored and cut off by the next append. ``path=None`` keeps the ids in memory only
    (a host without disk state: semi-honest mode). Ids are never forgotten: :meth:`discard`
    raises.
    """

    def __init__(self, path: Path | None) -> None:
        self.path, self._ids, self._offset = path, set(), 0
        if path is not None and path.exists():
            with open(path, "rb") as f:
                self._read_from(f)

    def _read_from(self, f) -> int:
        """Take in the complete lines after ``self._offset``; return the file's size."""
        f.seek(self._offset)
        data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        for n, line in enumerate(complete.split(), 1):
            try:
                raw = bytes.fromhex(line.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                raise LocalProtocolError(f"{self.path}: entry {n} after byte {self._offset} is "
                                         "not a hex session id (the store is damaged)") from None
            if len(raw) != SESSION_ID_BYTES:
                raise LocalProtocolError(f"{self.path}: entry {n} after byte {self._offset} "
                                         f"is not a {SESSION_ID_BYTES}-byte session id")
            self._ids.add(raw)
        self._offset += len(complete)
        return self._offset + (len(data) - len(complete))

    def __contains__(self, x: object) -> bool:
        return x in self._ids

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, value: bytes) -> None:
        if value in self._ids:
            return
        if self.path is None:
            self._ids.add(value)
            return
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with os.fdopen(os.dup(fd), "rb") as f:
                size = self._read_from(f)
            if value in self._ids:
                raise LocalProtocolError("session already claimed for this identity by another "
                                         "process or object")
            if size != self._offset:  # a torn last line: that claim never completed
                os.ftruncate(fd, self._offset)
            os.lseek(fd, self._offset, os.SEEK_SET)
            line = value.hex().encode() + b"\n"
            os.write(fd, line)
            os.fsync(fd)
            self._offset += len(line)
        finally:
            os.close(fd)  # releases the lock
        if created:
            _fsync_dir(self.path.parent)
        self._ids.add(value)

    def discard(self, value: bytes) -> None:
        raise TypeError("used sessions are never forgotten")


def _fsync_dir(path: Path) -> None:
    """Make a newly created file's directory entry durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_BY_IDENTITY: dict[bytes, set[bytes]] = {}
_LOCK = threading.Lock()


def store_for_identity(key: VerifyKey) -> MutableSet[bytes]:
    """The one in-process store of the identity ``key``: every ClientRound built for that
    identity in this process shares it, whichever host or call builds it."""
    if not isinstance(key, VerifyKey):
        raise LocalProtocolError("a session store is kept per identity: give its VerifyKey")
    with _LOCK:
        return _BY_IDENTITY.setdefault(key.raw, set())
