"""Errors of the networked transport, and the exit codes of ``secagg server`` / ``secagg client``.

These are failures of the deployment around the protocol: a bad configuration file, an
unusable certificate, a connection that broke or a server that cannot be trusted, a round that
gave this client no aggregate. They are not :class:`protocol.errors.ProtocolError`, which means
a party broke the protocol; a caller that handles one family does not catch the other.

* :class:`NetError` - the base class;
* :class:`SettingsError` - a configuration value that cannot be used (also a ValueError);
* :class:`CertificateError` - a certificate or key file that cannot be used;
* :class:`TransportError` - the connection to the server: :class:`ConnectionLost`,
  :class:`ServerRefused`;
* :class:`RoundFailed` - a round that produced no aggregate for this client's input.
"""

from __future__ import annotations

from enum import IntEnum


class NetError(Exception):
    """Base class of every error raised by :mod:`protocol.net`."""


class SettingsError(NetError, ValueError):
    """A configuration file (``server.toml``, ``client.toml``, ``registry.toml``) or a file it
    names that is missing, malformed, or holds a value no round can run with."""


class CertificateError(NetError):
    """A certificate or key file that is missing, malformed or not usable for its role."""


class TransportError(NetError):
    """The connection between a client and the server failed or was refused."""


class ConnectionLost(TransportError):
    """The stream to the server could not be opened, or ended without the server's goodbye."""


class ServerRefused(TransportError):
    """The server could not be trusted or would not have us: TLS failure, a refused
    certificate, a malformed welcome, or a configuration digest that differs from ours."""


class RoundFailed(NetError):
    """The round this client's input went to did not produce an aggregate for it: the round
    aborted, or this client refused the round or its input."""


class ExitCode(IntEnum):
    """The process exit status of ``secagg server`` and ``secagg client``."""

    OK = 0  # every round done (server), the server's goodbye received (client)
    ERROR = 1  # an I/O error outside any round
    CONFIG = 2  # a bad configuration, certificate, key or ledger, or an input that cannot fit
    ABORTED = 3  # the last round aborted, or too many rounds aborted in a row (server)
    BUDGET = 4  # the privacy budget or the ledger stopped the run (server)
    SERVER_REFUSED = 5  # the server could not be trusted or refused this client (client)
    UNREACHABLE = 6  # the server could not be reached within connect_timeout (client)
