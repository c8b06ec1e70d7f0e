"""Conformance suites that outsiders run against an implementation: ``secagg conformance
client`` (a scripted adversarial server against a client) and ``secagg conformance server``
(scripted malicious clients against a server). docs/protocol.md is the specification they
check; threat_model.md's attack table lists the attacks they play.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from .client_cases import CASES, ClientCase, run_case, select
from .common import MODES
from .report import CaseResult, as_json, table
from .scripted_server import Cohort, PlayedRound, play
from .targets import (
    ClientSession,
    ClientSpec,
    ClientTarget,
    InProcessClient,
    ProgramClient,
    Reply,
    TargetError,
)


def run_client_suite(target: ClientTarget, *, modes: Sequence[str] = MODES,
                     cases: Sequence[str] = (), workdir: Path | None = None,
                     on_result: Callable[[CaseResult], None] | None = None) -> list[CaseResult]:
    """Play every client case (or those named in ``cases``) in each mode against ``target``;
    return one result per (case, mode). ``workdir`` holds the client's per-identity directory
    (a temporary one by default). Raises ValueError for an unknown case or mode."""
    bad = sorted(set(modes) - set(MODES))
    if bad:
        raise ValueError(f"unknown mode(s): {', '.join(bad)}")
    chosen = select(CASES, tuple(modes), tuple(cases))
    with tempfile.TemporaryDirectory(prefix="secagg-conformance-") as tmp:
        base = Path(workdir) if workdir is not None else Path(tmp)
        cohorts = {}
        for mode in modes:
            d = base / f"client-{mode}"
            d.mkdir(parents=True, exist_ok=True)
            cohorts[mode] = Cohort.make(mode, d)
        results = []
        for case, mode in chosen:
            try:
                r = run_case(case, mode, cohorts[mode], target)
            except Exception as exc:  # noqa: BLE001 - a case that crashes the harness fails
                r = CaseResult(case.name, mode, case.expected,
                               f"the case could not be played: {type(exc).__name__}: {exc}",
                               False)
            results.append(r)
            if on_result is not None:
                on_result(r)
    return results


__all__ = [
    "CASES", "MODES", "CaseResult", "ClientCase", "ClientSession", "ClientSpec", "ClientTarget",
    "Cohort", "InProcessClient", "PlayedRound", "ProgramClient", "Reply", "TargetError",
    "as_json", "play", "run_client_suite", "table",
]
