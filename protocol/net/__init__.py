"""The networked transport: gRPC with mutual TLS around the sans-IO protocol.

* :mod:`.server` - :class:`AggregationServer`, the ``secagg server`` process;
* :mod:`.client` - :class:`AsyncClient`, :class:`SecAggClient` (a training loop's API) and the
  ``secagg client`` process;
* :mod:`.settings` - ``server.toml`` / ``client.toml`` / ``registry.toml``;
* :mod:`.frames`, :mod:`.service` - the frames on the stream and the gRPC method;
* :mod:`.tls`, :mod:`.certs` - certificates and ``secagg certs``;
* :mod:`.jsonlog` - structured logs that cannot carry a secret.
"""

from .client import (
    AsyncClient,
    ConnectionLost,
    NetError,
    RoundFailed,
    RoundResult,
    SecAggClient,
    ServerRefused,
)
from .server import AggregationServer
from .settings import ClientSettings, ServerSettings, SettingsError, load_client, load_server

__all__ = [
    "AggregationServer",
    "AsyncClient",
    "ClientSettings",
    "ConnectionLost",
    "NetError",
    "RoundFailed",
    "RoundResult",
    "SecAggClient",
    "ServerRefused",
    "ServerSettings",
    "SettingsError",
    "load_client",
    "load_server",
]
