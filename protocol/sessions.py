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

import os
import threading
from collections.abc import Iterator, MutableSet
from pathlib import Path

from secagg import VerifyKey

from .errors import LocalProtocolError


class FileSessionStore(MutableSet):
    """Used session ids at ``path``, one hex line each, appended and fsynced before use.

    ``path=None`` keeps them in memory only (for a host without disk state: semi-honest mode).
    Ids are never forgotten: :meth:`discard` raises.
    """

    def __init__(self, path: Path | None) -> None:
        self.path, self._ids = path, set()
        if path is not None and path.exists():
            for n, line in enumerate(path.read_text().split(), 1):
                try:
                    raw = bytes.fromhex(line)
                except ValueError:
                    raise LocalProtocolError(f"{path}: line {n} is not a hex session id") \
                        from None
                self._ids.add(raw)

    def __contains__(self, x: object) -> bool:
        return x in self._ids

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, value: bytes) -> None:
        if value in self._ids:
            return
        if self.path is not None:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, value.hex().encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
        self._ids.add(value)

    def discard(self, value: bytes) -> None:
        raise TypeError("used sessions are never forgotten")


_BY_IDENTITY: dict[bytes, set[bytes]] = {}
_LOCK = threading.Lock()


def store_for_identity(key: VerifyKey) -> MutableSet[bytes]:
    """The one in-process store of the identity ``key``: every ClientRound built for that
    identity in this process shares it, whichever host or call builds it."""
    if not isinstance(key, VerifyKey):
        raise LocalProtocolError("a session store is kept per identity: give its VerifyKey")
    with _LOCK:
        return _BY_IDENTITY.setdefault(key.raw, set())
