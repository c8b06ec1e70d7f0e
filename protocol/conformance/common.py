"""What both conformance suites name the same way: the modes and the stages."""

from __future__ import annotations

from ..transitions import Stage

MODES = ("semi-honest", "malicious")
BOTH, SEMI, MAL = MODES, ("semi-honest",), ("malicious",)
ADV, SHARE, MASK, CONS, UNMASK = (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT,
                                  Stage.CONSISTENCY_CHECK, Stage.UNMASKING)
