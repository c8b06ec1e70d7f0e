"""Structured logs: one JSON object per line, with ``round``, ``stage``, ``client`` and
``reason`` where they apply.

Never a secret or a share in a log, by construction: a field value must be a bool, int,
float, None, short printable text, or a list of ints (client ids). Bytes, arrays and anything
else are refused with TypeError, so key material or a share cannot be logged by accident;
session ids, which are public, are logged as hex text by the caller. Reasons are cut to 300
characters.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import IO

MAX_TEXT = 300


def _clean(key: str, value: object) -> object:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)  # an IntEnum (an exit code) is logged as its number
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if isinstance(value, list | tuple | frozenset | set) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"log field {key!r}: {type(value).__name__} values are not loggable")


class JsonLog:
    """Append JSON lines to a file (or a stream); each line is flushed at once. Raises
    OSError if the file cannot be opened."""

    def __init__(self, target: str | Path | IO[str] | None = None, *, party: str) -> None:
        if target is None:
            self._stream, self._own = sys.stderr, False
        elif isinstance(target, str | Path):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            self._stream, self._own = open(target, "a", encoding="utf-8"), True  # noqa: SIM115
        else:
            self._stream, self._own = target, False
        self.party = party
        self.last_error: str | None = None  # the reason of the last error-level event

    def __call__(self, event: str, *, level: str = "info", **fields: object) -> None:
        """Log one event. Raises TypeError if a field value is not loggable."""
        line = {"ts": round(time.time(), 3), "level": level, "party": self.party,
                "event": event}
        line.update({k: _clean(k, v) for k, v in fields.items()})
        if level == "error":
            self.last_error = f"{event}: {line.get('reason', '')}"
        self._stream.write(json.dumps(line, separators=(",", ":")) + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._own:
            self._stream.close()
