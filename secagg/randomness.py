"""The one labelled source of a client's randomness in a round.

Every secret value a client draws in Bonawitz et al. (CCS 2017) section 4 goes through the two
functions here, each draw named by its purpose:

=================  ====================================================================
purpose            drawn by
=================  ====================================================================
``c-key``          AdvertiseKeys: the X25519 private key c_u^SK (share encryption)
``s-key``          AdvertiseKeys: the X25519 private key s_u^SK (pairwise masks)
``x25519-key``     :meth:`secagg.KeyPair.generate` called without a role
``self-mask-seed`` AdvertiseKeys: the self-mask seed b_u
``dealing-id``     ShareKeys: the 16-byte id of one Shamir dealing (:func:`secagg.split`)
``coefficient``    ShareKeys: a coefficient a_1 .. a_{t-1} of one dealing, uniform in Z_P
``nonce``          ShareKeys: the 96-bit nonce of one AEAD share frame (:func:`secagg.encrypt`)
=================  ====================================================================

The same draws serve SecAgg+ (Bell et al. CCS 2020 section 3), which changes who holds shares,
not what is drawn. The randomness of a *verifier* (the random checks of the dual-code test in
:mod:`secagg.shamir`, drawn once the shares are set) is not a dealer's and stays with
:mod:`secrets`.

By default the draws are the operating system's CSPRNG (``os.urandom``, ``secrets.randbelow``)
and cost one function call over calling it directly. Known-answer transcripts replace the source
for the thread that asks, for the duration of a ``with`` block, through
:func:`secagg.hazmat.fixed_randomness` (docs/architecture.md section 8: dangerous knobs only in
hazmat); every value such a source returns is checked (length, range) before it is used.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable

#: Every purpose a draw may name.
PURPOSES = frozenset({"c-key", "s-key", "x25519-key", "self-mask-seed", "dealing-id",
                      "coefficient", "nonce"})
BYTES, BELOW = "bytes", "below"

#: ``source(purpose, kind, arg)``: kind ``"bytes"`` with arg n returns n bytes; kind ``"below"``
#: with arg m returns an int in [0, m).
Source = Callable[[str, str, int], bytes | int]

_local = threading.local()  # .sources: the stack of sources installed by this thread
_lock = threading.Lock()
_installed = 0  # sources installed in any thread: while 0, every draw is the OS's at once


def random_bytes(n: int, purpose: str) -> bytes:
    """``n`` uniformly random bytes for ``purpose`` (one of :data:`PURPOSES`)."""
    if _installed:
        return _drawn(purpose, BYTES, n)
    return os.urandom(n)


def random_below(m: int, purpose: str) -> int:
    """A uniformly random int in [0, ``m``) for ``purpose`` (one of :data:`PURPOSES`)."""
    if _installed:
        return _drawn(purpose, BELOW, m)
    return secrets.randbelow(m)


def _drawn(purpose: str, kind: str, arg: int) -> bytes | int:
    """A draw while some thread has a source installed: this thread's source if it has one
    (its value checked), the OS's otherwise. Raises ValueError for an unknown purpose or a
    value of the wrong type, length or range."""
    stack = getattr(_local, "sources", None)
    if not stack:
        return os.urandom(arg) if kind == BYTES else secrets.randbelow(arg)
    if purpose not in PURPOSES:
        raise ValueError(f"unknown randomness purpose {purpose!r}")
    if type(arg) is not int or arg < (0 if kind == BYTES else 1):
        raise ValueError(f"bad argument {arg!r} for a {kind} draw")
    value = stack[-1](purpose, kind, arg)
    if kind == BYTES:
        if not isinstance(value, bytes | bytearray) or len(value) != arg:
            raise ValueError(f"randomness source gave {_describe(value)} for {purpose!r}, "
                             f"expected {arg} bytes")
        return bytes(value)
    if type(value) is not int or not 0 <= value < arg:
        raise ValueError(f"randomness source gave {_describe(value)} for {purpose!r}, "
                         f"expected an int in [0, {arg})")
    return value


def _describe(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    if type(value) is int:
        return "an int out of range"
    return f"a {type(value).__name__}"


def _install(source: Source) -> None:
    """Make ``source`` this thread's source until :func:`_uninstall`. secagg.hazmat only."""
    global _installed  # noqa: PLW0603 - read on every draw: a module global is the fast path
    if not callable(source):
        raise TypeError("a randomness source must be callable as source(purpose, kind, arg)")
    stack = getattr(_local, "sources", None)
    if stack is None:
        stack = _local.sources = []
    with _lock:
        stack.append(source)
        _installed += 1


def _uninstall(source: Source) -> None:
    """Remove ``source``, the last one this thread installed. secagg.hazmat only."""
    global _installed  # noqa: PLW0603 - see _install
    stack = getattr(_local, "sources", None)
    if not stack or stack[-1] is not source:
        raise RuntimeError("randomness sources must be removed in the reverse order of "
                           "installation, by the thread that installed them")
    with _lock:
        stack.pop()
        _installed -= 1
