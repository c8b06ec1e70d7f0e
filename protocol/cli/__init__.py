"""The ``secagg`` command line: :func:`build_parser` and :func:`main` dispatch to the
subcommands, each in its own module.

- :mod:`protocol.cli.simulate`: ``secagg simulate``, one whole SecAgg+ round in this process,
  checked and summarised, with a progress bar per stage.
- :mod:`protocol.cli.dp`: ``secagg simulate --epsilon ...``, the DP options and R rounds of
  DP aggregation charged to a privacy ledger.
- :mod:`protocol.cli.budget`: ``secagg budget show|verify|plot|report``, a privacy ledger
  inspected, verified against pins, plotted, or reported on in one HTML page.
- :mod:`protocol.cli.net`: ``secagg server``, ``secagg client`` and ``secagg certs``, the
  networked deployment.
- :mod:`protocol.cli.conformance`: ``secagg conformance client|server``, the protocol
  conformance suites against an implementation.
- :mod:`protocol.cli.common`: argument types, the round configuration and the dropout schedule
  the subcommands share.

``python -m protocol.cli`` runs :func:`main`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from secagg.version import package_version

from .budget import add_budget_parser, budget
from .conformance import add_conformance_parser, conformance
from .dp import add_dp_arguments, simulate_dp
from .net import add_net_parsers, run_net
from .simulate import add_simulate_parser, progress, simulate

__all__ = ["build_parser", "main"]

#: The description ``secagg --help`` prints.
DESCRIPTION = "The ``secagg`` command line (the outermost layer, docs/architecture.md section 1)."


class _HelpWithDefaults(argparse.HelpFormatter):
    """Each option's help ends with its default, when it has one worth printing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or (
                not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """Every ``secagg`` parser and subparser prints the defaults in its help."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpWithDefaults)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``secagg`` subcommand."""
    parser = _Parser(prog="secagg", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"secagg {package_version()}",
                        help="print the installed package's version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    add_dp_arguments(add_simulate_parser(sub))
    add_budget_parser(sub)
    add_net_parsers(sub)
    add_conformance_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the subcommand; returns its exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "budget":
        return budget(args)
    if args.command == "conformance":
        return conformance(args)
    if args.command in ("server", "client", "certs"):
        return run_net(args)
    dp_bits, args.bits = args.bits, 32 if args.bits is None else args.bits
    if args.epsilon is not None:
        args.bits = dp_bits  # None: the DP plan chooses b
        if args.workers != 1:
            print("secagg: --workers runs plain rounds only: DP clients keep their ledgers in "
                  "this process", file=sys.stderr)
            return 2
        show, finish = progress(sys.stderr)
        return simulate_dp(args, show, finish)
    return simulate(args)
