"""``secagg server``, ``secagg client`` and ``secagg certs``: the networked deployment."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import numpy as np

from ..errors import ProtocolError
from .common import positive


def add_net_parsers(sub) -> None:
    """Add ``server``, ``client`` and ``certs`` to ``sub``."""
    srv = sub.add_parser("server", help="run the aggregation server (gRPC, mutual TLS)")
    srv.add_argument("--config", type=Path, required=True, help="server.toml")
    cli = sub.add_parser("client", help="run one client until the server's last round")
    cli.add_argument("--config", type=Path, required=True, help="client.toml")
    cli.add_argument("--input", type=Path, required=True,
                     help="update.npy: this client's vector (ring integers without DP, "
                          "floats with DP), used in every round")
    cli.add_argument("--weight", type=float, default=None, help="FedAvg weight (weighted DP)")
    cli.add_argument("--output", type=Path, default=None,
                     help="write the last published aggregate here (.npy)")
    crt = sub.add_parser("certs", help="create a CA, certificates, registry and configs for a "
                                       "local demo of N clients")
    crt.add_argument("--clients", type=positive(int, 3, 10_000), default=8,
                     help="clients in the registry (one certificate and config each)")
    crt.add_argument("--out", type=Path, required=True,
                     help="directory for the CA, certificates, keys and TOML configs")
    crt.add_argument("--port", type=positive(int, 1, 65535), default=50051,
                     help="TCP port of the server on 127.0.0.1")
    crt.add_argument("--dim", type=positive(int, 1, 10_000_000), default=1000,
                     help="length of every client's input vector (coordinates)")
    crt.add_argument("--rounds", type=positive(int, 1, 100_000), default=3,
                     help="rounds the server runs (and the DP noise is planned for)")
    crt.add_argument("--mode", choices=["semi-honest", "malicious"], default="semi-honest",
                     help="threat model of the round (malicious: signatures, consistency check)")
    crt.add_argument("--no-dp", action="store_true",
                     help="plain secure aggregation of ring integers (exact sums, no ledger)")
    crt.add_argument("--epsilon", type=positive(float, 1e-3, 60.0), default=8.0,
                     help="total epsilon of the DP budget (unless --no-dp)")
    crt.add_argument("--delta", type=positive(float, 1e-12, 0.1), default=1e-5,
                     help="total delta of the DP budget (unless --no-dp)")
    crt.add_argument("--deadline", type=positive(float, 0.01, 86400.0), default=None,
                     help="seconds for every stage (default: 30 s, 60 s for MaskedInput)")
    crt.add_argument("--seed", type=int, default=None, help="seed for the example inputs")


def run_net(args: argparse.Namespace) -> int:
    """Run ``server``, ``client`` or ``certs``; exit 2 on a bad configuration, otherwise the
    party's own exit code (0 when every round completed)."""
    from ..net.jsonlog import JsonLog
    from ..net.settings import SettingsError, load_client, load_server

    if args.command == "certs":
        return _certs(args)
    party = "server" if args.command == "server" else "client"
    try:
        settings = load_server(args.config) if party == "server" else load_client(args.config)
    except (SettingsError, ProtocolError, ValueError) as exc:
        print(f"secagg {party}: bad configuration: {exc}", file=sys.stderr)
        return 2
    log = JsonLog(settings.log, party=party if party == "server" else f"client-{settings.id}")
    try:
        if party == "server":
            from ..net.server import serve

            code = serve(settings, log)
        else:
            code = _client(args, settings, log)
    finally:
        log.close()
    if code:
        print(f"secagg {party}: exit {code}: {log.last_error or 'see the log'}"
              + (f" (log: {settings.log})" if settings.log else ""), file=sys.stderr)
    return code


def _client(args, settings, log) -> int:
    from ..net.client import RoundFailed, run_client

    try:
        update = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as exc:
        print(f"secagg client: cannot read {args.input}: {exc}", file=sys.stderr)
        return 2
    last = []

    def on_result(r) -> None:
        if isinstance(r, RoundFailed):
            print(json.dumps({"client": settings.id, "failed": str(r)}), flush=True)
            return
        last[:] = [r.aggregate]
        print(json.dumps({"client": settings.id, "round": r.round,
                          "session": r.session_id.hex(), "included": r.included,
                          "survivors": len(r.survivors),
                          "aggregate_head": [float(v) for v in r.aggregate[:3]]}), flush=True)

    code = asyncio.run(run_client(settings, update, weight=args.weight, log=log,
                                  on_result=on_result))
    if args.output is not None and last:
        np.save(args.output, last[0])
    return code


def _certs(args: argparse.Namespace) -> int:
    from dp.errors import DPError

    from ..net.certs import DemoOptions, write_demo

    opts = DemoOptions(clients=args.clients, port=args.port, dim=args.dim, rounds=args.rounds,
                       mode=args.mode, dp=not args.no_dp, epsilon=args.epsilon,
                       delta=args.delta, deadline=args.deadline, seed=args.seed)
    try:
        files = write_demo(args.out, opts)
    except (OSError, ValueError, DPError) as exc:
        print(f"secagg certs: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(files)} files to {args.out}: CA, server and {args.clients} client "
          f"certificates, registry.toml, server.toml, client-*.toml, update-*.npy")
    print(f"run the demo: python examples/network_demo.py {args.out}")
    return 0
