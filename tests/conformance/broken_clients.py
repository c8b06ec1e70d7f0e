"""A client that breaks the protocol on purpose (protocol.conformance.hostile.BothShareKinds)
as a stdin/stdout program, for the conformance suite's own tests."""

from __future__ import annotations

import sys

from protocol.conformance.hostile import BothShareKinds
from protocol.conformance.stdio_client import serve

if __name__ == "__main__":
    sys.exit(serve(sys.stdin.buffer, sys.stdout.buffer, BothShareKinds))
