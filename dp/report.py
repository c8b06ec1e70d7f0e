"""A self-contained HTML audit report of a privacy ledger (``secagg budget report``).

One file that an auditor opens in any browser without the project installed: no script, no
external style sheet, font or image, the plot an inline SVG drawn here; a
Content-Security-Policy meta tag forbids loading or running anything. The ledger is untrusted
input, so every value read from it goes through :func:`html.escape`.

The report holds:

* the result of :func:`dp.ledger.verify` with the same pins as ``secagg budget verify``: hash
  chain, signatures and the key they were checked against (pinned with ``public_key``, or the
  one recorded in the ledger itself), head file, ledger id, the ``expected_id`` and
  ``min_rounds`` pins, and the epsilons recomputed by the independent accountant
  :class:`dp.crosscheck.LibraryAccountant` (dp_accounting's ``RdpAccountant``);
* a plot of cumulative epsilon per round against the budget line;
* one table row per round entry (:meth:`dp.ledger.Ledger.record_round`): line, round, time,
  session, cohort, survivors and n_min, mechanism and its parameters, clip norm, the accounted
  event and sampler distance, the round's own epsilon, the cumulative epsilon recorded and
  recomputed, the cumulative delta, and the whole entry folded under it (an HTML ``details``
  element, which needs no script). Each column header says what the value is: *verified*
  (recorded, and checked by ``verify`` against the value recomputed from the recorded
  events), *recomputed* (computed here by the independent accountant), *accounted* (the
  recorded event and sampler distance those values are computed from) or *as recorded* (the
  writer's claim: ``verify`` binds round, time, session, cohort, survivors, n_min, the
  mechanism, its parameters and the clip norm to nothing it recomputes; a signature only
  shows they were not edited after signing);
* the deployment's parameters from the open entry (budget, owner, created, accountant, signing
  key) and the library versions the round entries record.

A ledger that does not verify gets a FAILED banner with the first bad line and its reason, as
:class:`dp.errors.LedgerError` gives them, and the rows read before that line (the bad line
itself is shown flagged, when it can be read).

The page is bounded whatever the ledger holds: each value shown is cut to ``_MAX_TEXT``
characters and each folded entry to ``_MAX_ENTRY``, each cut marked "… (N more characters)";
the open entry's extra fields and the runs of library versions are capped in number. Text
that cannot be written as UTF-8 (surrogate-escaped bytes of a file name, lone surrogates from
JSON escapes) is shown with U+FFFD in its place. The plot draws only finite values up to
``_PLOT_MAX`` and says in its caption which values it does not draw. Any failure while
rendering is a :class:`ReportError`; :func:`write_report` writes a page atomically (a
temporary file in the target's directory, then :func:`os.replace`), so a failure never leaves
a partial file.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .accounting import ACCOUNTANT_NAME, ORDERS
from .errors import DPError, LedgerError, ParameterError
from .events import from_json
from .ledger import (
    EPS_DIGITS,
    MAX_LINE,
    Budget,
    VerifyReport,
    delta_for_rdp,
    line_hash,
    round_up,
    verify,
)

#: Colours the report uses for one thing each (the browser test looks for them in a screenshot).
VALID_GREEN = "#0a7f3f"  # background of the VALID banner
FAILED_RED = "#c8102e"  # background of the FAILED banner
CURVE_BLUE = "#1d4ed8"  # cumulative epsilon per round
BUDGET_ORANGE = "#e8730c"  # the budget epsilon line

#: What recomputes every epsilon in ``verify`` (and in this report), named for the reader.
INDEPENDENT_ACCOUNTANT = (
    "dp.crosscheck.LibraryAccountant: dp_accounting's RdpAccountant "
    "(dp_accounting.rdp.rdp_privacy_accountant) at the integer orders of dp.accounting.ORDERS; "
    "composition and the RDP-to-(epsilon, delta) conversion are dp_accounting's own code, the "
    "Skellam and distributed discrete Gaussian RDP curves a second implementation in "
    "dp/crosscheck.py; for ledgers of the Gaussian-DP accountant also a second Skellam GDP "
    "certificate (Miller's recurrence for the pmf) converted by dp_accounting's "
    "GaussianPrivacyLoss"
)

_MAX_TEXT = 300  # characters of one ledger value shown (longer ones cut, the cut marked)
_MAX_ENTRY = 20_000  # characters of one whole entry shown folded under its row (likewise)
_MAX_FIELDS = 40  # extra fields of the open entry shown
_MAX_RUNS = 20  # runs of recorded library versions shown
_PLOT_MAX = 1e12  # the largest epsilon the plot draws (to keep its scale finite)
#: Nothing may be loaded or run: only the inline style sheet applies.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


class ReportError(DPError, RuntimeError):
    """The report could not be rendered or written (the ledger's verification is not in
    question: :class:`~dp.errors.LedgerError` reports that, inside the page)."""


@dataclass
class Audit:
    """The rendered report and what it found: ``error`` is None exactly when it verified."""

    html: str
    error: LedgerError | None
    report: VerifyReport | None


@dataclass
class _Row:
    line: int
    entry: dict[str, Any] | None  # None: the line is not a JSON object
    bad: bool = False  # the line the LedgerError names
    round_eps: float | None = None  # the round's event alone, recomputed
    cum_eps: float | None = None  # cumulative, recomputed
    note: str = ""
    raw: str = ""  # the line as text, when it is not a JSON object


@dataclass
class _Ledger:
    """The ledger file as read for display (independently of ``verify``)."""

    lines: list[bytes] = field(default_factory=list)
    torn: bytes = b""
    size: int = 0
    sha256: str = ""
    read_error: str | None = None
    head: dict[str, Any] | None = None
    head_error: str | None = None


@dataclass
class _Context:
    """Everything one report shows."""

    path: Path
    data: _Ledger
    opening: dict[str, Any] | None
    budget: Budget | None
    rows: list[_Row]
    report: VerifyReport | None
    error: LedgerError | None
    public_key: str | bytes | None
    expected_id: str | None
    min_rounds: int | None


def render_report(path: str | Path, public_key: str | bytes | None = None, *,
                  expected_id: str | None = None, min_rounds: int | None = None) -> str:
    """The HTML report of the ledger at ``path``, verified as :func:`dp.ledger.verify` does with
    ``public_key``, ``expected_id`` and ``min_rounds``. A ledger that does not verify still gets
    a report (with a FAILED banner); a malformed pin is a ParameterError."""
    return audit(path, public_key, expected_id=expected_id, min_rounds=min_rounds).html


def audit(path: str | Path, public_key: str | bytes | None = None, *,
          expected_id: str | None = None, min_rounds: int | None = None) -> Audit:
    """Verify the ledger and render its report; :func:`render_report` returns the HTML. A
    malformed pin is a ParameterError; any other failure while verifying or rendering (never
    expected, whatever the ledger holds) is a :class:`ReportError`."""
    path = Path(path)
    try:
        return _audit(path, public_key, expected_id, min_rounds)
    except ParameterError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes one typed error
        raise ReportError(f"cannot render the report of {_safe(path.name)}: "
                          f"{type(exc).__name__}: {_safe(str(exc))[:_MAX_TEXT]}") from exc


def _audit(path: Path, public_key: str | bytes | None, expected_id: str | None,
           min_rounds: int | None) -> Audit:
    data = _read(path)
    error: LedgerError | None = None
    report: VerifyReport | None = None
    try:
        report = verify(path, public_key, expected_id=expected_id, min_rounds=min_rounds)
    except LedgerError as exc:
        error = exc
    if report is not None and (len(data.lines) != report.lines or data.torn
                               or line_hash(data.lines[-1]) != report.last_hash):
        # The lines displayed must be the lines verified: a file that changed between the two
        # reads (an append, an edit) is not shown as verified.
        error = LedgerError("the ledger changed while the report was made; run it again")
        report = None
    opening = _entry(data.lines[0]) if data.lines else None
    budget = _budget(opening)
    rows = _rows(data, error)
    _recompute(rows, budget)
    page = _page(_Context(path, data, opening, budget, rows, report, error, public_key,
                          expected_id, min_rounds))
    return Audit(page, error, report)


def write_report(page: str, out: str | Path) -> None:
    """Write ``page`` to ``out`` atomically: a temporary file in the same directory, flushed
    to disk, then renamed over ``out`` (:func:`os.replace`). On any failure the temporary file
    is removed and ``out`` is as it was; the error is an OSError, or a :class:`ReportError`
    for a page that cannot be encoded."""
    out = Path(out)
    try:
        data = page.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ReportError(f"the page cannot be written as UTF-8: {exc.reason}") from None
    while True:  # a fresh name; mode 0o666 less the umask, as a plain open() gives
        tmp = out.with_name(f".{out.name}.{os.urandom(8).hex()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# -- reading -------------------------------------------------------------------------------


def _read(path: Path) -> _Ledger:
    out = _Ledger()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        out.read_error = exc.strerror or type(exc).__name__
        return out
    out.size, out.sha256 = len(raw), hashlib.sha256(raw).hexdigest()
    parts = raw.split(b"\n")
    out.lines, out.torn = parts[:-1], parts[-1]
    head = path.with_name(path.name + ".head")
    try:
        value = json.loads(head.read_bytes())
        out.head = value if isinstance(value, dict) else None
        if out.head is None:
            out.head_error = "not a JSON object"
    except FileNotFoundError:
        out.head_error = "missing"
    except (OSError, ValueError, RecursionError):
        out.head_error = "unreadable"
    return out


def _entry(line: bytes) -> dict[str, Any] | None:
    if len(line) > MAX_LINE:
        return None
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError
        return None
    return value if isinstance(value, dict) else None


def _budget(opening: dict[str, Any] | None) -> Budget | None:
    try:
        return Budget(**opening["budget"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError, ArithmeticError):
        # ArithmeticError: an integer too large for a float (verify refuses it as malformed)
        return None


def _rows(data: _Ledger, error: LedgerError | None) -> list[_Row]:
    """Round lines 2.. of the file: all of them for a verified ledger; for a failed one those
    before the line the error names, and that line flagged."""
    stop = len(data.lines)
    bad = None
    if error is not None:
        bad = error.line
        stop = 0 if bad is None else min(stop, bad)
    rows = []
    for no in range(2, stop + 1):
        row = _Row(no, _entry(data.lines[no - 1]), bad=no == bad)
        if row.entry is None:
            line = data.lines[no - 1]
            row.note = "not a JSON object: cannot be read"
            row.raw = line[:_MAX_ENTRY].decode("utf-8", errors="replace")
            if len(line) > _MAX_ENTRY:
                row.raw += f"\n\u2026 ({len(line) - _MAX_ENTRY} more bytes)"
        rows.append(row)
    return rows


def _recompute(rows: list[_Row], budget: Budget | None) -> None:
    """The cumulative epsilon after each row and each row's event alone, by the independent
    accountant, as ``verify`` computes them (cumulative values stop at the first row whose
    event cannot be accounted)."""
    if budget is None:
        return
    from .crosscheck import LibraryAccountant

    acc, tv, ok = LibraryAccountant(), 0.0, True
    alone: dict[str, float | None] = {}
    for row in rows:
        e = row.entry or {}
        try:
            event = from_json(e.get("event"))
            key = json.dumps(e.get("event"), sort_keys=True)
        except Exception:  # noqa: BLE001 - an unreadable event: nothing to recompute
            ok = False
            continue
        if key not in alone:
            alone[key] = _epsilon_alone(event, budget.delta)
        row.round_eps = alone[key]
        if not ok:
            continue
        try:
            tv += float(e["sampler_tv"])
            with np.errstate(all="ignore"):
                d = delta_for_rdp(budget, tv)
                acc.compose(event)
                eps = float(acc.get_epsilon(d))
            row.cum_eps = round_up(eps, EPS_DIGITS) if math.isfinite(eps) else eps
        except Exception:  # noqa: BLE001 - any failure ends the cumulative recomputation
            ok = False


def _epsilon_alone(event: Any, delta: float) -> float | None:
    from .crosscheck import LibraryAccountant

    acc = LibraryAccountant()
    try:
        with np.errstate(all="ignore"):
            acc.compose(event)
            eps = float(acc.get_epsilon(delta))
        return round_up(eps, EPS_DIGITS) if math.isfinite(eps) else eps  # up, as recorded
    except Exception:  # noqa: BLE001 - shown as "not computable"
        return None


# -- formatting ----------------------------------------------------------------------------


def _e(value: object) -> str:
    """Any value as escaped text, cut to _MAX_TEXT characters (the cut marked)."""
    text = value if isinstance(value, str) else _plain(value)
    return html.escape(_safe(_cut(text, _MAX_TEXT)), quote=True)


def _cut(text: str, limit: int, sep: str = " ") -> str:
    """``text`` cut to ``limit`` characters, the cut marked with the number of the others."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}{sep}\u2026 ({len(text) - limit} more characters)"


def _safe(text: str) -> str:
    """``text`` as it can be written in UTF-8: surrogate-escaped bytes (of a file name) decoded
    with errors="replace", any other lone surrogate (from a JSON escape) replaced too: U+FFFD
    for each."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", errors="replace")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)


def _plain(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict | list):
        return _compact(value)
    return str(value)


def _num(x: object, digits: int = 4) -> str:
    """A number to ``digits`` significant digits (integers whole, trailing zeros dropped)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return _plain(x)
    if isinstance(x, int) or not math.isfinite(x):
        return str(x)
    if x == 0 or not 1e-3 <= abs(x) < 1e6:
        return f"{x:.{digits}g}"
    decimals = max(digits - 1 - math.floor(math.log10(abs(x))), 0)
    text = f"{x:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _eps(x: object) -> str:
    """An epsilon to the ledger's 6 decimals (as recorded)."""
    if isinstance(x, float) and math.isfinite(x) and abs(x) < 1e6:
        return f"{x:.6f}"
    return _plain(x)


def _compact(value: object, depth: int = 0) -> str:
    """A short one-line rendering of JSON: ``type(key=value, ...)`` for events."""
    if depth > 4:
        return "..."
    if isinstance(value, dict):
        name = value.get("type") if isinstance(value.get("type"), str) else ""
        inner = ", ".join(f"{k}={_compact(v, depth + 1)}" for k, v in value.items()
                          if not (k == "type" and name))
        return f"{name}({inner})" if name else "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_compact(v, depth + 1) for v in value[:8]) + (
            ", ..." if len(value) > 8 else "") + "]"
    return _plain(value)


def _short(text: object, n: int = 12) -> str:
    """A long identifier cut to ``n`` characters, the whole of it in the tooltip."""
    s = _plain(text)
    if len(s) <= n:
        return _e(s)
    return f'<span title="{_e(s)}">{_e(s[:n])}&hellip;</span>'


def _when(value: object) -> str:
    """A recorded ISO 8601 time on two lines (date, then time)."""
    text = _plain(value)
    date, sep, clock = text.partition("T")
    return f"{_e(date)}<br>{_e(clock)}" if sep else _e(text)


def _get(entry: dict[str, Any] | None, key: str) -> Any:
    return entry.get(key) if isinstance(entry, dict) else None


# -- the page ------------------------------------------------------------------------------


_STYLE = f"""
* {{ box-sizing: border-box; }}
body {{ margin: 0; padding: 0 24px 24px; font: 14px/1.4 "DejaVu Sans", Arial, sans-serif;
  color: #1f2328; background: #ffffff; }}
h1 {{ font-size: 20px; margin: 16px 0 8px; }}
h2 {{ font-size: 16px; margin: 22px 0 8px; border-bottom: 1px solid #d0d7de;
  padding-bottom: 4px; }}
.banner {{ margin: 0 -24px; padding: 18px 24px; color: #ffffff; font-size: 22px;
  font-weight: bold; }}
.banner .sub {{ font-size: 14px; font-weight: normal; margin-top: 4px; }}
.valid {{ background: {VALID_GREEN}; }}
.failed {{ background: {FAILED_RED}; }}
table {{ border-collapse: collapse; }}
table.kv td, table.kv th {{ text-align: left; vertical-align: top; padding: 3px 10px 3px 0; }}
table.kv th {{ white-space: nowrap; font-weight: bold; color: #3d444d; }}
table.rounds {{ font-size: 12px; width: 100%; }}
table.rounds th {{ background: #eef1f4; text-align: left; }}
table.rounds th .tag {{ display: block; font-weight: normal; font-size: 10px; color: #4d5560;
  font-style: italic; }}
table.rounds th, table.rounds td {{ border: 1px solid #d0d7de; padding: 3px 5px;
  vertical-align: top; }}
table.rounds td {{ overflow-wrap: anywhere; }}
table.rounds td.nw {{ white-space: nowrap; }}
table.rounds td.noise {{ min-width: 240px; }}
table.rounds td.n {{ text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }}
tr.bad td {{ background: #fdecee; color: #7a0d1c; }}
code, .mono {{ font-family: "DejaVu Sans Mono", monospace; font-size: 12px;
  word-break: break-all; }}
.small {{ font-size: 11px; color: #4d5560; }}
.warn {{ color: #7a4a00; }}
.badtext {{ color: #7a0d1c; font-weight: bold; }}
.flag {{ white-space: normal; overflow-wrap: normal; text-align: left; }}
figure {{ margin: 0; }}
details summary {{ cursor: pointer; color: #3d444d; }}
details pre {{ white-space: pre-wrap; overflow-wrap: anywhere; font-size: 11px; margin: 4px 0; }}
figcaption {{ font-size: 12px; color: #4d5560; }}
"""


def _page(c: _Context) -> str:
    path, budget, rows, error = c.path, c.budget, c.rows, c.error
    verified = [r for r in rows if not r.bad and r.entry is not None]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        f"<title>Privacy ledger report: {_e(path.name)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        _banner(c.report, error),
        f"<h1>Privacy ledger report: <span class=\"mono\">{_e(path.name)}</span></h1>",
        "<h2>Verification</h2>",
        _verification(c),
        "<h2>Cumulative epsilon per round</h2>",
        _figure(verified, budget, error),
        "<h2>Rounds</h2>",
        _table(rows, error),
        "<h2>Deployment</h2>",
        _deployment(c.opening, rows, error),
        _footer(),
        "</body></html>",
    ]
    return _safe("\n".join(parts) + "\n")  # every value went through _e; this is the last net


def _banner(report: VerifyReport | None, error: LedgerError | None) -> str:
    if report is not None:
        b = report.budget
        ratio = report.epsilon / b.epsilon  # <= 1: verify checked it; the ratio first, so
        share = ""  # that 1000 * epsilon cannot overflow for a budget near the float limit
        if math.isfinite(ratio):
            pct = math.floor(1000 * ratio) / 10  # never rounded up to 100
            share = f" ({pct:.1f} % of the budget)"
        return (f'<div class="banner valid" id="status">VALID'
                f'<div class="sub">{report.entries} rounds; cumulative epsilon '
                f"{_eps(report.epsilon)}{share}, delta {report.delta:.3g}, budget "
                f"(epsilon {_num(b.epsilon)}, delta {b.delta:g}); "
                f"{'signed' if report.signed else 'unsigned'}</div></div>")
    assert error is not None
    title = "FAILED" if error.line is None else f"FAILED: first bad line: line {error.line}"
    return (f'<div class="banner failed" id="status">{title}'
            f'<div class="sub">{_e(error.reason)}</div></div>')


def _kv(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _verification(c: _Context) -> str:
    path, data, opening, rows, report, error = c.path, c.data, c.opening, c.rows, c.report, c.error
    ok = report is not None
    bad = error.line if error is not None else None
    if ok:
        result = "VALID: every check passed"
    else:
        assert error is not None
        result = (f'<span class="badtext">FAILED at {"line " + str(bad) if bad else "the ledger"}:'
                  f" {_e(error.reason)}</span>")
    if data.read_error is not None:
        file_text = f"{_e(str(path))}: cannot be read ({_e(data.read_error)})"
    else:
        torn = f", plus {len(data.torn)} bytes of an incomplete last line" if data.torn else ""
        file_text = (f"{_e(str(path))}: {data.size} bytes, {len(data.lines)} lines{torn}; "
                     f'SHA-256 <span class="mono">{data.sha256}</span>')
    ledger_id = _get(opening, "ledger_id")
    id_text = f'<span class="mono">{_e(ledger_id)}</span>' if ledger_id is not None else "-"
    upto = "" if ok else (f" (not established: verification stopped at line {bad})" if bad
                          else " (not established)")
    if ok:
        chain = (f"intact: {report.lines} lines (the open entry and {report.entries} rounds), "
                 "each in canonical JSON with its sequence number, each entry's prev the "
                 "SHA-256 of the line before it; last line's hash "
                 f'<span class="mono">{report.last_hash}</span>')
    elif bad and bad > 1:
        chain = f"lines 1 to {bad - 1} passed the line-by-line checks; line {bad} did not"
    else:
        chain = "not established" + (f": line {bad} did not pass" if bad else "")
    items = [
        ("Result", result),
        ("Ledger file", file_text),
        ("Ledger id", id_text),
        ("Hash chain", chain),
        ("Signatures", _signatures(opening, report, c.public_key, upto)),
        ("Head file", _head(path, data, report, upto)),
        ("Pins", _pins(report, c.expected_id, c.min_rounds, ok)),
        ("Epsilons", _epsilons(report, rows, ok)),
    ]
    if report is not None and report.warnings:
        items.append(("Warnings", "<br>".join(f'<span class="warn">{_e(w)}</span>'
                                              for w in report.warnings)))
    if report is not None:
        items.append(("Next audit", "record and pin: <code>--ledger-id "
                      f"{_e(report.ledger_id)} --min-rounds {report.entries}</code>"))
    return _kv(items)


def _key_hex(key: str | bytes | None) -> str:
    if isinstance(key, bytes):
        return key.hex()
    return "" if key is None else str(key)


def _signatures(opening: dict[str, Any] | None, report: VerifyReport | None,
                public_key: str | bytes | None, upto: str) -> str:
    recorded = _get(opening, "public_key")
    if public_key is not None:
        key = (f'the pinned key (<code>--public-key</code>) <span class="mono">'
               f"{_e(_key_hex(public_key))}</span>")
    elif recorded is not None:
        key = (f'the key recorded in the ledger\'s own open entry <span class="mono">'
               f"{_e(recorded)}</span>, not pinned (pass <code>--public-key</code> to pin the "
               "server's key)")
    else:
        key = None
    if report is not None and not report.signed:
        return ("unsigned ledger: no signatures to check (the hash chain shows edits, not who "
                "wrote it)")
    if report is not None:
        return f"Ed25519, every line and the head file verify against {key}"
    if key is None:
        return "unsigned ledger: the open entry records no signing key"
    return f"Ed25519, checked against {key}{upto}"


def _head(path: Path, data: _Ledger, report: VerifyReport | None, upto: str) -> str:
    name = _e(path.name + ".head")
    if data.head is None:
        return f"<code>{name}</code>: {_e(data.head_error or 'not read')}{upto}"
    h = data.head
    signed = "signed" if "signature" in h else "unsigned"
    seen = (f"<code>{name}</code> ({signed}) records {_e(h.get('entries'))} lines, last hash "
            f'<span class="mono">{_e(h.get("hash"))}</span>')
    if report is not None:
        return seen + ": consistent with the ledger"
    return seen + upto


def _pins(report: VerifyReport | None, expected_id: str | None, min_rounds: int | None,
          ok: bool) -> str:
    if expected_id is None:
        pin_id = "<code>--ledger-id</code> not given (another ledger signed with the same key " \
                 "would not be noticed)"
    else:
        pin_id = (f'<code>--ledger-id</code> <span class="mono">{_e(expected_id)}</span>'
                  + (": matches" if ok else ""))
    if min_rounds is None:
        pin_n = "<code>--min-rounds</code> not given (a truncated history would not be noticed)"
    else:
        pin_n = f"<code>--min-rounds</code> {_e(min_rounds)}" + (
            f": {report.entries} rounds found" if report is not None else "")
    return pin_id + "<br>" + pin_n


def _epsilons(report: VerifyReport | None, rows: list[_Row], ok: bool) -> str:
    try:
        version = metadata.version("dp-accounting")
    except metadata.PackageNotFoundError:
        version = "not installed"
    name = report.accountant.name if report is not None else ACCOUNTANT_NAME
    bounds = ("the smaller of Renyi DP and Gaussian DP (dp.gdp)" if name == ACCOUNTANT_NAME
              else "Renyi DP alone")
    who = (f"recomputed from the recorded events by {html.escape(INDEPENDENT_ACCOUNTANT)} "
           f"(dp-accounting {_e(version)}, {len(ORDERS)} orders from {ORDERS[0]} to "
           f"{ORDERS[-1]}, and its own Gaussian-DP certificate); the ledger was written by "
           f"{_e(name)} (dp.accounting.RdpAccountant: {bounds})")
    if ok:
        assert report is not None
        return (f"every recorded cumulative epsilon and delta matches, within the budget; "
                f"{who}")
    checked = len([r for r in rows if not r.bad])
    return (f"the {checked} round{'s' if checked != 1 else ''} before the first bad line "
            f"matched their recomputed epsilon and delta; {who}")


def _deployment(opening: dict[str, Any] | None, rows: list[_Row],
                error: LedgerError | None) -> str:
    if opening is None:
        return "<p>The open entry (line 1) cannot be read.</p>"
    b = opening.get("budget") if isinstance(opening.get("budget"), dict) else {}
    items = [
        ("Budget epsilon", _e(b.get("epsilon"))),
        ("Budget delta", _e(b.get("delta"))),
        ("Owner", _e(opening.get("owner"))),
        ("Created", _e(opening.get("created"))),
        ("Ledger id", f'<span class="mono">{_e(opening.get("ledger_id"))}</span>'),
        ("Accountant", _e(opening.get("accountant"))),
        ("Signing key", f'<span class="mono">{_e(opening.get("public_key"))}</span>'
         if opening.get("public_key") is not None else "none (unsigned ledger)"),
        ("Format version", _e(opening.get("v"))),
    ]
    known = {"budget", "owner", "created", "ledger_id", "accountant", "public_key", "v", "seq",
             "kind", "prev", "signature"}
    extra = sorted((k, v) for k, v in opening.items() if k not in known)
    items += [(_e(k), _e(v)) for k, v in extra[:_MAX_FIELDS]]
    if len(extra) > _MAX_FIELDS:
        items.append(("&hellip;", f"{len(extra) - _MAX_FIELDS} more fields, not shown"))
    items.append(("Libraries recorded", _versions(rows)))
    note = ('<p class="small">As recorded in line 1'
            + (", the first bad line: untrusted. " if error is not None and error.line == 1
               else ". ")
            + "The budget is the one every recorded epsilon and delta was checked against; "
            "owner, created, accountant and the library versions are as recorded (a signature "
            "shows they were not edited after signing, not that they are true).</p>")
    return _kv(items) + note


def _versions(rows: list[_Row]) -> str:
    """The accountant and library versions the round entries record, one line per run of
    consecutive rows that record the same ones."""
    runs: list[tuple[int, int, str]] = []
    for r in rows:
        acc = _get(r.entry, "accountant")
        if not isinstance(acc, dict):
            continue
        name, vers = acc.get("name"), acc.get("versions")
        if isinstance(vers, dict):
            text = ", ".join(f"{k} {_plain(v)}"
                             for k, v in sorted(vers.items(), key=lambda kv: kv[0]))
        else:
            text = _plain(vers)
        text = f"{_plain(name)}: {text}"
        if runs and runs[-1][2] == text:
            runs[-1] = (runs[-1][0], r.line, text)
        else:
            runs.append((r.line, r.line, text))
    if not runs:
        return "- (no round entries)"
    shown = "<br>".join(f"lines {a}&ndash;{b}: {_e(t)}" if a != b else f"line {a}: {_e(t)}"
                        for a, b, t in runs[:_MAX_RUNS])
    if len(runs) > _MAX_RUNS:
        shown += f"<br>&hellip; ({len(runs) - _MAX_RUNS} more runs, not shown)"
    return shown


_NOISE_KEYS = (("noise_multiplier", "z"), ("local_variance", "local variance"),
               ("planned_variance", "planned variance"), ("actual_variance", "actual variance"),
               ("gamma", "gamma"), ("bits", "bits"), ("weighted", "weighted"))


def _mechanism(entry: dict[str, Any]) -> str:
    """The mechanism's noise parameters and the record level, as recorded."""
    parts = []
    mech = entry.get("mechanism")
    if isinstance(mech, dict):
        extra = ", ".join(f"{label} {_plain(mech[k])}" for k, label in _NOISE_KEYS if k in mech)
        if extra:
            parts.append(_e(extra))
    if entry.get("record_level") is not None:
        parts.append(f"record level {_e(entry.get('record_level'))}")
    return "<br>".join(parts) or "-"


def _accounted(entry: dict[str, Any]) -> str:
    """The event and the sampler distance (what ``verify`` accounts), then the whole entry."""
    return (f"event {_e(_compact(entry.get('event')))}<br>"
            f"sampler distance {_e(_num(entry.get('sampler_tv'), 3))}" + _whole(_dump(entry)))


def _dump(entry: dict[str, Any]) -> str:
    for indent in (1, None):  # indent=1 is json's pure-Python encoder, None its C one
        try:
            return json.dumps(entry, indent=indent, sort_keys=True)
        except (RecursionError, ValueError):
            continue
    return "(the entry is nested too deeply to show)"


def _whole(text: str) -> str:
    """The whole entry (or line), folded: a details element opens without any script. Cut to
    _MAX_ENTRY characters, the cut marked."""
    text = _safe(_cut(text, _MAX_ENTRY, sep="\n"))
    return f"<details><summary>whole entry</summary><pre>{html.escape(text)}</pre></details>"


#: Each column of the rounds table and what it is: "verified", "recomputed", "accounted" or
#: "as recorded" (the legend under the table says what each means).
_RECORDED, _VERIFIED, _RECOMPUTED, _ACCOUNTED = ("as recorded", "verified", "recomputed",
                                                 "accounted")
_COLUMNS = (("line", None), ("round", _RECORDED), ("time (UTC)", _RECORDED),
            ("session", _RECORDED), ("cohort", _RECORDED), ("survivors", _RECORDED),
            ("n_min", _RECORDED), ("mechanism", _RECORDED),
            ("mechanism parameters", _RECORDED), ("clip norm", _RECORDED),
            ("accounted event", _ACCOUNTED), ("&epsilon; of the round alone", _RECOMPUTED),
            ("cumulative &epsilon; (recorded)", _VERIFIED),
            ("cumulative &epsilon; (recomputed)", _RECOMPUTED),
            ("cumulative &delta; (recorded)", _VERIFIED))


def _table(rows: list[_Row], error: LedgerError | None) -> str:
    head = "<tr>" + "".join(
        f"<th>{name}" + (f'<span class="tag">{tag}</span>' if tag else "") + "</th>"
        for name, tag in _COLUMNS) + "</tr>"
    width = len(_COLUMNS)
    body = []
    for r in rows:
        cls = ' class="bad"' if r.bad else ""
        flag = '<div class="flag badtext">first bad line</div>' if r.bad else ""
        if r.entry is None:
            body.append(f'<tr{cls}><td class="n">{r.line}{flag}</td>'
                        f'<td colspan="{width - 1}">{_e(r.note)}{_whole(r.raw)}</td></tr>')
            continue
        e = r.entry
        mech = e.get("mechanism")
        name = mech.get("name") if isinstance(mech, dict) else mech
        survivors = e.get("survivors")
        surv = "not known (client ledger)" if survivors is None and "survivors" in e else \
            _e(survivors)
        body.append(
            f"<tr{cls}><td class=\"n\">{r.line}{flag}</td><td class=\"n\">{_e(e.get('round'))}"
            f"</td><td class=\"nw\">{_when(e.get('time'))}</td>"
            f"<td class=\"mono nw\">{_short(e.get('session'), 8)}"
            f"</td><td class=\"n\">{_e(e.get('cohort'))}</td><td class=\"n\">{surv}</td>"
            f"<td class=\"n\">{_e(e.get('n_min'))}</td><td>{_e(name)}</td>"
            f"<td class=\"small\">{_mechanism(e)}</td>"
            f"<td class=\"n\">{_e(e.get('clip_norm'))}</td>"
            f"<td class=\"small noise\">{_accounted(e)}</td>"
            f"<td class=\"n\">{_e(_eps(r.round_eps))}</td>"
            f"<td class=\"n\">{_e(_eps(e.get('epsilon')))}</td>"
            f"<td class=\"n\">{_e(_eps(r.cum_eps))}</td>"
            f"<td class=\"n\">{_e(_num(e.get('delta'), 3))}</td></tr>")
    if not rows:
        body.append(f'<tr><td colspan="{width}">no round entries'
                    + (" could be read before the first bad line" if error is not None else "")
                    + "</td></tr>")
    note = ""
    if error is not None:
        note = ('<p class="small">The ledger did not verify: the rows are those read before the '
                "first bad line, which is flagged; none of them is a verified history.</p>")
    legend = (
        '<p class="small" id="columns">What each column is. <strong>verified</strong>: '
        "recorded by the ledger's writer and checked by <code>secagg budget verify</code> "
        "against the value the independent accountant recomputes from the recorded events "
        "(in a ledger that failed, only the rows before the first bad line passed the check). "
        "<strong>recomputed</strong>: computed here by the independent accountant from the "
        "recorded events. <strong>accounted</strong>: the recorded event and sampler "
        "distance, the input every verified and recomputed value is computed from. "
        "<strong>as recorded</strong>: the writer's claim, bound to nothing that is "
        "recomputed: <code>verify</code> does not check round, time, session, cohort, "
        "survivors, n_min, the mechanism, its parameters or the clip norm against the event "
        "(a signed ledger shows only that they were not edited after signing).</p>")
    return (f'{note}{legend}<table class="rounds"><thead>{head}</thead>'
            f'<tbody>{"".join(body)}</tbody></table>'
            '<p class="small">Epsilon of the round alone: its event by itself at the budget '
            "delta (independent accountant). Cumulative epsilon: after this round, at the "
            "budget delta, recorded by the ledger's writer and recomputed here by the "
            "independent accountant.</p>")


def _footer() -> str:
    try:
        version = metadata.version("secagg-hardened")
    except metadata.PackageNotFoundError:
        version = "not installed"
    made = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return (f'<p class="small">Made by <code>secagg budget report</code> (secagg-hardened '
            f"{_e(version)}) at {made}. Self-contained: no scripts, no external resources.</p>")


# -- the plot ------------------------------------------------------------------------------

_W, _H = 1100, 360
_LEFT, _RIGHT, _TOP, _BOTTOM = 80, 150, 20, 50


def _drawable(value: object) -> float | None:
    """``value`` as a float the plot can draw (a finite number in [0, _PLOT_MAX]), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        v = float(value)
    except OverflowError:  # an integer beyond the float range
        return None
    return v if math.isfinite(v) and 0 <= v <= _PLOT_MAX else None


def _figure(rows: list[_Row], budget: Budget | None, error: LedgerError | None) -> str:
    points: list[tuple[int, float]] = []  # (round number on the x axis, cumulative epsilon)
    skipped: list[str] = []
    for i, r in enumerate(rows, start=1):
        eps = _get(r.entry, "epsilon")
        v = _drawable(eps)
        if v is None:
            skipped.append(f"line {r.line} ({_cut(_plain(eps), 40)})")
        else:
            points.append((i, v))
    limit = budget.epsilon if budget else None
    line = _drawable(limit)
    caption = ("Blue staircase: cumulative epsilon recorded after each round; orange dashed "
               "line: the budget epsilon" + (f" ({_num(budget.epsilon)}, at delta "
                                             f"{budget.delta:g})" if budget else "") + ".")
    notes, marks = [], []
    if budget is not None and line is None:
        marks.append(f"budget epsilon {_num(budget.epsilon)} beyond the scale: not drawn")
        notes.append(f"the budget epsilon {_num(budget.epsilon)} is beyond the plot's scale "
                     f"(up to {_PLOT_MAX:g}) and is not drawn")
    if skipped:
        marks.append(f"{len(skipped)} round{'s' if len(skipped) != 1 else ''} beyond the "
                     "scale: not drawn (see the caption)")
        notes.append("not drawn (not a finite number up to the plot's scale, "
                     f"{_PLOT_MAX:g}): the cumulative epsilon of " + ", ".join(skipped[:5])
                     + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""))
    if notes:
        caption += "".join(f" {n[0].upper()}{n[1:]}." for n in notes)
    if error is not None:
        caption += " Only the rounds before the first bad line are drawn."
    return (f"<figure>{_svg(points, len(rows), line, '; '.join(marks))}"
            f"<figcaption>{_e_long(caption)}</figcaption></figure>")


def _e_long(text: str) -> str:
    """A caption of the report's own making (ledger values in it already cut) as escaped
    text."""
    return html.escape(_safe(_cut(text, 4 * _MAX_TEXT)), quote=False)


def _nice_step(span: float, ticks: int = 5) -> float:
    """A round grid step (1, 2, 2.5 or 5 times a power of ten) near ``span / ticks``; 1 for a
    span that is not a finite positive number."""
    raw = span / ticks
    if not (math.isfinite(raw) and raw > 0):
        return 1.0
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _svg(points: list[tuple[int, float]], n: int, budget: float | None,
         missing: str = "") -> str:
    """The plot: ``points`` (x, cumulative epsilon) of ``n`` rounds, ``budget`` the budget
    line (None: not drawn); ``missing``, shown in the plot, says what is not drawn. Every
    value drawn is finite and at most _PLOT_MAX."""
    eps = [v for _, v in points]
    top = max([*eps, budget or 0.0, 1e-9])
    step = _nice_step(top * 1.1)
    ymax = step * math.ceil(top * 1.1 / step)
    pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    xmax = max(n, 1)

    def x(i: float) -> float:
        return round(_LEFT + pw * i / xmax, 1)

    def y(v: float) -> float:
        return round(_TOP + ph * (1 - min(v, ymax) / ymax), 1)

    out = [f'<svg width="{_W}" height="{_H}" '
           f'viewBox="0 0 {_W} {_H}" role="img" aria-label="cumulative epsilon per round" '
           'font-family="DejaVu Sans, Arial, sans-serif" font-size="12">',
           f'<rect x="0" y="0" width="{_W}" height="{_H}" fill="#ffffff"/>']
    k = 0
    while k * step <= ymax + 1e-12:  # horizontal grid and y labels
        v = k * step
        out.append(f'<line x1="{_LEFT}" x2="{_LEFT + pw}" y1="{y(v)}" y2="{y(v)}" '
                   'stroke="#e3e6ea" stroke-width="1"/>')
        out.append(f'<text x="{_LEFT - 8}" y="{y(v) + 4}" text-anchor="end" fill="#3d444d">'
                   f"{v:g}</text>")
        k += 1
    xstep = max(1, math.ceil(_nice_step(xmax, 10))) if xmax > 10 else 1
    for i in range(0, xmax + 1, xstep):
        out.append(f'<text x="{x(i)}" y="{_TOP + ph + 18}" text-anchor="middle" '
                   f'fill="#3d444d">{i}</text>')
    out.append(f'<line x1="{_LEFT}" x2="{_LEFT + pw}" y1="{_TOP + ph}" y2="{_TOP + ph}" '
               'stroke="#3d444d" stroke-width="1"/>')
    out.append(f'<line x1="{_LEFT}" x2="{_LEFT}" y1="{_TOP}" y2="{_TOP + ph}" '
               'stroke="#3d444d" stroke-width="1"/>')
    out.append(f'<text x="{_LEFT + pw / 2}" y="{_H - 10}" text-anchor="middle" '
               'fill="#1f2328">round (number of round entries)</text>')
    out.append(f'<text x="18" y="{_TOP + ph / 2}" text-anchor="middle" fill="#1f2328" '
               f'transform="rotate(-90 18 {_TOP + ph / 2})">cumulative epsilon</text>')
    if budget is not None:
        out.append(f'<line x1="{_LEFT}" x2="{_LEFT + pw}" y1="{y(budget)}" y2="{y(budget)}" '
                   f'stroke="{BUDGET_ORANGE}" stroke-width="3" stroke-dasharray="14 6" '
                   'shape-rendering="crispEdges"/>')
        out.append(f'<text x="{_LEFT + pw + 8}" y="{y(budget) + 4}" fill="#1f2328">'
                   f"budget {budget:g}</text>")
    if points:
        d = [f"M{x(0)} {y(0)}"]
        for i, v in points:
            d.append(f"H{x(i)} V{y(v)}")
        out.append(f'<path d="{" ".join(d)}" fill="none" stroke="{CURVE_BLUE}" '
                   'stroke-width="3" shape-rendering="crispEdges"/>')
        for i, v in points:
            out.append(f'<circle cx="{x(i)}" cy="{y(v)}" r="4" fill="{CURVE_BLUE}"/>')
        ly = y(eps[-1]) + 4
        if budget is not None and abs(ly - y(budget) - 4) < 16:  # keep clear of the budget label
            ly = y(budget) + 20
        out.append(f'<text x="{_LEFT + pw + 8}" y="{ly}" fill="#1f2328">'
                   f"spent {eps[-1]:.4g}</text>")
    else:
        what = "no verified rounds to draw" if n == 0 else "no round's epsilon can be drawn"
        out.append(f'<text x="{_LEFT + pw / 2}" y="{_TOP + ph / 2}" text-anchor="middle" '
                   f'fill="#3d444d">{what}</text>')
    if missing:
        out.append(f'<text x="{_LEFT + 8}" y="{_TOP + 14}" fill="#7a4a00">'
                   f"{html.escape(missing)}</text>")
    out.append("</svg>")
    return "".join(out)
