"""``secagg budget show|verify|plot|report LEDGER``: inspect, verify, plot or report on a
privacy ledger.

``secagg budget verify LEDGER --public-key K --ledger-id HEX --min-rounds N`` pins what an
earlier audit saw (``secagg budget show`` prints the id and the round count to record): another
ledger signed with the same key, or a truncated history, exits 1 like any failed verification.

``secagg budget report LEDGER -o report.html`` writes one self-contained HTML file
(:mod:`dp.report`) with the verification result, a table of the rounds, a plot of cumulative
epsilon against the budget and the deployment's parameters; it is written for a ledger that
fails verification too (with a FAILED banner naming the first bad line), and the command then
exits 1. The file is written atomically (a temporary file beside it, then renamed over it): a
report that cannot be rendered or written leaves no partial file, and the command says why and
exits 1, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from dp.errors import LedgerError
from dp.ledger import LEDGER_ID_HEX, verify
from secagg.version import package_version


def _ledger_id(text: str) -> str:
    if len(text) != LEDGER_ID_HEX or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise argparse.ArgumentTypeError(f"a ledger id is {LEDGER_ID_HEX} hex digits "
                                         "(as printed by `secagg budget show`)")
    return text.lower()


def _rounds(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError("an integer >= 0")
    return n


def add_budget_parser(sub) -> None:
    """Add ``budget`` and its subcommands ``show``, ``verify``, ``plot`` and ``report`` to
    ``sub``."""
    bud = sub.add_parser("budget", help="inspect, verify, plot or report on a privacy ledger")
    bsub = bud.add_subparsers(dest="budget_command", required=True)
    for name, text in (("show", "print the ledger id, the rounds and the cumulative epsilon"),
                       ("verify", "check chain, signatures and every epsilon (independent "
                                  "accountant), and the pins; exit 1 naming the first bad "
                                  "line"),
                       ("plot", "write a PNG of cumulative epsilon per round"),
                       ("report", "write a self-contained HTML audit report (verification, "
                                  "rounds, plot, parameters), also for a ledger that fails; "
                                  "exit 1 if it does not verify")):
        p = bsub.add_parser(name, help=text, description=text)
        p.add_argument("ledger", type=Path, help="the ledger file (JSON Lines; LEDGER.head "
                                                 "beside it)")
        p.add_argument("--public-key", default=None,
                       help="the signer's Ed25519 public key (hex) to pin signatures to "
                            "(default: the key recorded in the ledger, with a warning)")
        p.add_argument("--ledger-id", type=_ledger_id, default=None, metavar="HEX",
                       help="pin the ledger id recorded at an earlier audit: another ledger "
                            "signed with the same key (a rollback) is refused (default: not "
                            "pinned)")
        p.add_argument("--min-rounds", type=_rounds, default=None, metavar="N",
                       help="pin the round count recorded at an earlier audit: a history "
                            "truncated below N rounds (even with a re-signed head) is refused "
                            "(default: not pinned)")
        if name == "plot":
            p.add_argument("--output", "-o", type=Path, default=None,
                           help="PNG path (default: LEDGER.png)")
        if name == "report":
            p.add_argument("--output", "-o", type=Path, default=None,
                           help="HTML path (default: LEDGER.html, beside the ledger)")
        if name in ("show", "verify"):
            p.add_argument("--json", action="store_true",
                           help="print JSON instead of text (default: text)")


def budget(args: argparse.Namespace) -> int:
    """Verify the ledger (with the pins), then show, verify, plot or report on it; exit 1 if it
    does not verify (``report`` writes its file either way) or the report cannot be rendered
    or written (no file is then left), 2 for an output path that would overwrite the
    ledger."""
    if args.budget_command == "report":
        return _report(args)
    try:
        with _line_progress() as progress:
            report = verify(args.ledger, args.public_key, expected_id=args.ledger_id,
                            min_rounds=args.min_rounds, progress=progress)
    except LedgerError as exc:
        print(f"secagg budget: {args.ledger}: INVALID: {exc}", file=sys.stderr)
        return 1
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.budget_command == "plot":
        from dp.plot import plot_epsilon

        out = args.output or args.ledger.with_suffix(args.ledger.suffix + ".png")
        plot_epsilon(report, out, title=args.ledger.name)
        print(f"wrote {out}")
        return 0
    summary = {"secagg_version": package_version(), "ledger": str(args.ledger),
               "ledger_id": report.ledger_id, "valid": True,
               "rounds": report.entries, "epsilon": report.epsilon, "delta": report.delta,
               "budget": {"epsilon": report.budget.epsilon, "delta": report.budget.delta},
               "signed": report.signed,
               "pinned": {"ledger_id": args.ledger_id, "min_rounds": args.min_rounds}}
    if args.budget_command == "verify":
        _print_verified(args, report, summary)
    elif args.json:
        print(json.dumps({**summary, "rows": report.rows}))
    else:
        _print_rows(report)
    return 0


@contextlib.contextmanager
def _line_progress():
    """A tqdm bar over the ledger's lines on a terminal (rate and time left for a long ledger),
    nothing otherwise; yields the ``progress(done, total)`` callback for ``verify``."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="verifying", unit="line", file=sys.stderr, leave=False)
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


def _print_verified(args: argparse.Namespace, report, summary: dict) -> None:
    if args.json:
        print(json.dumps(summary))
        return
    print(f"{args.ledger}: valid; ledger id {report.ledger_id}; {report.entries} "
          f"rounds, epsilon {report.epsilon} delta {report.delta:.3g} of budget "
          f"({report.budget.epsilon}, {report.budget.delta:g}); "
          f"{'signed' if report.signed else 'unsigned'}")


def _print_rows(report) -> None:
    print(f"ledger id: {report.ledger_id}")
    print(f"record for the next audit: --ledger-id {report.ledger_id} --min-rounds "
          f"{report.entries}")
    print(f"{'line':>4} {'round':>5} {'session':<16} {'mechanism':<18} {'surv':>9} "
          f"{'epsilon':>10}")
    for r in report.rows:
        print(f"{r['line']:>4} {r['round']:>5} {str(r['session'])[:16]:<16} "
              f"{str(r['mechanism']):<18} {r['survivors']:>4}/{r['cohort']:<4} "
              f"{r['epsilon']:>10.6f}")
    print(f"spent: epsilon {report.epsilon} delta {report.delta:.3g}; budget "
          f"({report.budget.epsilon}, {report.budget.delta:g})")


def _shown(path: Path) -> str:
    """A path as printable text: bytes that are not UTF-8 (surrogate-escaped) replaced."""
    text = str(path)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", errors="replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="replace").decode("utf-8")


def _report(args: argparse.Namespace) -> int:
    from dp.report import ReportError, audit, write_report

    ledger = args.ledger
    if not ledger.name:
        print(f"secagg budget report: error: {_shown(ledger)} is not a file name",
              file=sys.stderr)
        return 2
    out = args.output or ledger.with_name(ledger.name + ".html")
    own = {ledger.resolve(), *(ledger.with_name(ledger.name + x).resolve()
                              for x in (".head", ".lock", ".new"))}
    if out.resolve() in own:
        print(f"secagg budget report: error: --output {_shown(out)} would overwrite the ledger "
              "or its head file", file=sys.stderr)
        return 2
    try:
        result = audit(ledger, args.public_key, expected_id=args.ledger_id,
                       min_rounds=args.min_rounds)
        write_report(result.html, out)
    except ReportError as exc:
        print(f"secagg budget report: error: {exc}; {_shown(out)} not written",
              file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"secagg budget report: cannot write {_shown(out)}: "
              f"{exc.strerror or type(exc).__name__}", file=sys.stderr)
        return 1
    if result.error is not None:
        print(f"secagg budget: {_shown(ledger)}: INVALID: {result.error}", file=sys.stderr)
        print(f"wrote {_shown(out)} (FAILED report)")
        return 1
    for w in result.report.warnings if result.report else ():
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {_shown(out)}")
    return 0
