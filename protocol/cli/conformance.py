"""``secagg conformance client|server``: the conformance suites of :mod:`protocol.conformance`
against an implementation; a table (or ``--json``) and exit status 1 if any case fails.

Client targets: ``inprocess`` (our ClientRound), ``program`` (any program speaking the
stdin/stdout framing of docs/protocol.md, given with ``--program``), ``network`` (our
networked client against a scripted gRPC server) and ``flower`` (a Flower ClientApp with our
mod; the extra ``flower``). Server target: ``inprocess`` (our ServerRound).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

#: Client targets by name; each is built by :func:`client_target`.
CLIENT_TARGETS = ("inprocess", "program", "network", "flower")
SERVER_TARGETS = ("inprocess",)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds > 0")
    return value


def add_conformance_parser(sub) -> None:
    """Add ``conformance`` and its subcommands ``client`` and ``server`` to ``sub``."""
    conf = sub.add_parser("conformance", help="run the protocol conformance suites against a "
                                              "client or server implementation")
    csub = conf.add_subparsers(dest="conformance_command", required=True)
    cli = csub.add_parser("client", help="a scripted adversarial server against a client: "
                                         "every attack of threat_model.md's table")
    cli.add_argument("--target", choices=CLIENT_TARGETS, default="inprocess",
                     help="the client implementation to test (default: inprocess)")
    cli.add_argument("--program", default=None, metavar="COMMAND",
                     help="with --target program: the command line of a program speaking "
                          "the stdin/stdout framing of docs/protocol.md")
    cli.add_argument("--timeout", type=_seconds, default=60.0, metavar="SECONDS",
                     help="with --target program: seconds to wait for each answer "
                          "(default: 60)")
    srv = csub.add_parser("server", help="scripted malicious clients against a server: the "
                                         "honest clients' sum is right or the abort typed")
    srv.add_argument("--target", choices=SERVER_TARGETS, default="inprocess",
                     help="the server implementation to test (default: inprocess)")
    for p in (cli, srv):
        p.add_argument("--mode", choices=("semi-honest", "malicious", "both"), default="both",
                       help="the modes to play the cases in (default: both)")
        p.add_argument("--case", action="append", default=[], metavar="NAME",
                       help="play only this case (repeatable; default: every case)")
        p.add_argument("--list", action="store_true",
                       help="list the cases and what each requires, then exit")
        p.add_argument("--json", action="store_true",
                       help="print the results as one JSON document instead of a table")


def client_target(args: argparse.Namespace):
    """The client target ``args`` names. Raises ValueError for an unusable choice."""
    from ..conformance import InProcessClient, ProgramClient

    if args.target == "program":
        if not args.program:
            raise ValueError("--target program needs --program COMMAND")
        return ProgramClient(args.program, timeout=args.timeout)
    if args.program:
        raise ValueError("--program is for --target program")
    if args.target == "network":
        from ..conformance.net_target import NetworkClient

        return NetworkClient()
    if args.target == "flower":
        try:
            from ..conformance.flower_target import FlowerModClient
        except ImportError as exc:
            raise ValueError(f"--target flower needs the extra 'flower' "
                             f"(pip install 'secagg-hardened[flower]'): {exc}") from None
        return FlowerModClient()
    return InProcessClient()


def conformance(args: argparse.Namespace) -> int:
    """Run the suite; 0 if every case passed, 1 if one failed, 2 for bad usage. Output cut
    short by its reader (``| head``) ends the command quietly."""
    try:
        return _conformance(args)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _conformance(args: argparse.Namespace) -> int:
    from .. import conformance as conf

    modes = conf.MODES if args.mode == "both" else (args.mode,)
    if args.conformance_command == "server":
        from ..conformance import server_cases

        cases, run = server_cases.CASES, server_cases.run_server_suite
        suite, target, name = "server", None, "in-process ServerRound"
    else:
        cases, run, suite = conf.CASES, conf.run_client_suite, "client"
        try:
            target = client_target(args)
        except ValueError as exc:
            print(f"secagg conformance: {exc}", file=sys.stderr)
            return 2
        name = target.name
    if args.list:
        for c in cases:
            print(f"{c.name:<40} {'/'.join(c.modes):<24} {c.expected}")
        return 0
    done = []

    def show(r) -> None:
        done.append(r)
        if not args.json:
            print(f"[{len(done)}] {r.case} ({r.mode}): {'pass' if r.passed else 'FAIL'}",
                  file=sys.stderr, flush=True)

    try:
        results = (run(modes=modes, cases=args.case, on_result=show) if target is None
                   else run(target, modes=modes, cases=args.case, on_result=show))
    except ValueError as exc:
        print(f"secagg conformance: {exc}", file=sys.stderr)
        return 2
    finally:
        if target is not None:
            target.close()
    if args.json:
        print(conf.as_json(results, suite=suite, target=name))
    else:
        print(conf.table(results, title=f"secagg conformance {suite}: {name}"))
    return 0 if all(r.passed for r in results) else 1
