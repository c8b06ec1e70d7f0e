"""protocol: sans-IO SecAgg / SecAgg+ rounds, wire format, simulation and command line.

The round state machines are not built yet (the protocol issue builds them, DESIGN.md
section 4). So far the package holds its base exception and the ``secagg`` command line,
whose ``demo`` command exercises the cryptographic core end to end.
"""


class ProtocolError(Exception):
    """Base class of every error raised by :mod:`protocol`."""


__all__ = ["ProtocolError"]
