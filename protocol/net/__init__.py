"""The networked transport: gRPC with mutual TLS around the sans-IO protocol.

* :mod:`.server` - :class:`AggregationServer`, the ``secagg server`` process;
* :mod:`.client` - :class:`AsyncClient`, :class:`SecAggClient` (a training loop's API) and the
  ``secagg client`` process;
* :mod:`.settings` - ``server.toml`` / ``client.toml`` / ``registry.toml``;
* :mod:`.errors` - the transport's errors (:class:`NetError` and its subclasses, none of them
  a :class:`protocol.errors.ProtocolError`) and the processes' :class:`ExitCode`;
* :mod:`.frames`, :mod:`.service` - the frames on the stream and the gRPC method;
* :mod:`.tls`, :mod:`.certs` - certificates and ``secagg certs``;
* :mod:`.keys` - Ed25519 private key files (identity and ledger signing keys);
* :mod:`.jsonlog` - structured logs that cannot carry a secret.
"""

from .client import AsyncClient, RoundResult, SecAggClient
from .errors import (
    CertificateError,
    ConnectionLost,
    ExitCode,
    NetError,
    RoundFailed,
    ServerRefused,
    SettingsError,
    TransportError,
)
from .server import AggregationServer
from .settings import ClientSettings, ServerSettings, load_client, load_server

__all__ = [
    "AggregationServer",
    "AsyncClient",
    "CertificateError",
    "ClientSettings",
    "ConnectionLost",
    "ExitCode",
    "NetError",
    "RoundFailed",
    "RoundResult",
    "SecAggClient",
    "ServerRefused",
    "ServerSettings",
    "SettingsError",
    "TransportError",
    "load_client",
    "load_server",
]
