"""The conformance suites' output: one :class:`CaseResult` per case, as a table or JSON."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from secagg.version import package_version

#: What a result keeps of an observation (a target's refusal text may be anything).
MAX_OBSERVED = 400


def printable(text: str, limit: int = MAX_OBSERVED) -> str:
    """``text`` safe to print on a terminal: control characters (escape sequences included)
    shown as ``?``, cut to ``limit`` characters."""
    out = "".join(c if c.isprintable() else "?" for c in text)
    return out if len(out) <= limit else out[:limit] + f"... ({len(out) - limit} more)"


@dataclass(frozen=True)
class CaseResult:
    """One case as judged: what had to happen, what happened (made printable: it quotes the
    target), and the verdict."""

    case: str
    mode: str
    expected: str
    observed: str
    passed: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "observed", printable(self.observed))


def table(results: Sequence[CaseResult], *, title: str, width: int = 34) -> str:
    """A plain-text table: case, mode, what must happen, what happened, pass or fail; then the
    totals."""
    head = ("case", "mode", "what must happen", "what happened", "verdict")
    rows = [(r.case, r.mode, r.expected, r.observed, "pass" if r.passed else "FAIL")
            for r in results]
    w0 = max([len(head[0])] + [len(r[0]) for r in rows])
    w1 = max([len(head[1])] + [len(r[1]) for r in rows])
    lines = [title, ""]
    fmt = f"{{:<{w0}}}  {{:<{w1}}}  {{:<{width}}}  {{:<{width}}}  {{}}"
    lines.append(fmt.format(*head).rstrip())
    lines.append("-" * (w0 + w1 + 2 * width + 14))
    for case, mode, expected, observed, verdict in rows:
        exp = textwrap.wrap(expected, width) or [""]
        obs = textwrap.wrap(observed, width) or [""]
        for i in range(max(len(exp), len(obs))):
            lines.append(fmt.format(case if i == 0 else "", mode if i == 0 else "",
                                    exp[i] if i < len(exp) else "",
                                    obs[i] if i < len(obs) else "",
                                    verdict if i == 0 else "").rstrip())
    failed = [r for r in results if not r.passed]
    lines += ["", f"{len(results) - len(failed)} of {len(results)} cases passed" +
              (f"; failed: {', '.join(f'{r.case} ({r.mode})' for r in failed)}"
               if failed else "")]
    return "\n".join(lines)


def as_json(results: Sequence[CaseResult], *, suite: str, target: str) -> str:
    """The results as one JSON document."""
    return json.dumps({"secagg_version": package_version(), "suite": suite, "target": target,
                       "passed": sum(r.passed for r in results), "total": len(results),
                       "ok": all(r.passed for r in results),
                       "cases": [asdict(r) for r in results]}, indent=1)
