"""A real multi-process secure-aggregation run on 127.0.0.1 (the README's two-command demo).

    secagg certs --clients 8 --out demo          # CA, certificates, registry, configs, inputs
    python examples/network_demo.py demo         # 1 server + 8 client processes, mutual TLS

Starts ``secagg server --config DIR/server.toml`` and one ``secagg client`` process per
``DIR/client-*.toml`` (each with its ``update-*.npy``), waits for all of them, then checks every
published aggregate against the inputs of that round's survivors: equal to the plain sum mod
2^b without DP; with DP the error against the true sum, next to the noise the plan predicts.
With DP it finally verifies the server's ledger (signed) and each client's ledger.
``--drop N`` kills N clients with SIGKILL as soon as the first round starts, to watch dropout
recovery. N may be at most the cohort minus the round's ``min_survivors``, which with DP is at
least the plan's n_min (the noise is sized for n_min survivors, so a round with fewer aborts
rather than publish a sum with too little noise). A larger N is
refused before anything starts (exit 2). Exit status 0 when every check passes.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dp.ledger import verify
from protocol.dp_plan import plan_dp
from protocol.net.errors import ExitCode
from protocol.net.settings import load_server


def _log_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def round_minimum(settings) -> int:
    """Fewest live clients every round of this deployment needs, as the server computes it:
    the min_survivors of the round configuration it runs (with DP, the plan's, raised to at
    least n_min)."""
    n = len(settings.registry.members)
    rc = settings.round
    if settings.dp is not None:
        rc = plan_dp(settings.dp, rc, n, settings.dim).round_config
    return rc.resolve(n).min_survivors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, help="the directory `secagg certs` wrote")
    ap.add_argument("--drop", type=int, default=0, help="clients to kill -9 in round 0")
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args(argv)
    d = args.dir
    settings = load_server(d / "server.toml")
    n, need = len(settings.registry.members), round_minimum(settings)
    if not 0 <= args.drop <= n - need:
        why = ("the DP noise is planned for that many survivors" if settings.dp is not None
               else "the round's min_survivors")
        print(f"network_demo: --drop {args.drop} is outside [0, {n - need}]: every round needs "
              f"at least {need} of the {n} clients ({why}); make a larger demo with "
              f"`secagg certs --clients`", file=sys.stderr)
        return ExitCode.CONFIG
    exe = [sys.executable, "-m", "protocol.cli"]
    start_log = len(_log_events(settings.log)) if settings.log else 0
    server = subprocess.Popen([*exe, "server", "--config", str(d / "server.toml")])
    clients = {}
    for cfg in sorted(d.glob("client-*.toml"), key=lambda p: int(p.stem.split("-")[1])):
        u = int(cfg.stem.split("-")[1])
        clients[u] = subprocess.Popen(
            [*exe, "client", "--config", str(cfg), "--input", str(d / f"update-{u}.npy")],
            stdout=subprocess.DEVNULL)
    print(f"started 1 server and {len(clients)} client processes on "
          f"{settings.host}:{settings.port}", flush=True)
    end = time.monotonic() + args.timeout
    killed: list[int] = []
    try:
        while server.poll() is None and time.monotonic() < end:
            if args.drop and not killed and any(
                    e.get("event") == "round-started"
                    for e in _log_events(settings.log)[start_log:]):
                for u in list(clients)[: args.drop]:
                    clients[u].send_signal(signal.SIGKILL)
                    killed.append(u)
                print(f"killed clients {killed} with SIGKILL", flush=True)
            time.sleep(0.1)
        code = server.wait(max(1.0, end - time.monotonic()))
    finally:
        for p in [server, *clients.values()]:
            if p.poll() is None:
                p.kill()
            p.wait()
    events = _log_events(settings.log)[start_log:]
    ok = code == ExitCode.OK
    names = {c.value: c.name for c in ExitCode}
    print(f"server exit status {code}" + (f" ({names[code]})" if code in names else ""))
    inputs = {u: np.load(d / f"update-{u}.npy") for u in clients}
    bits = settings.round.bits
    for e in events:
        if e["event"] == "client-dropped":
            print(f"  round {e['round']} {e['stage']}: client {e['client']} dropped "
                  f"({e['reason']})")
        if e["event"] == "round-aborted":
            print(f"  round {e['round']} aborted in {e['stage']}: {e['reason']}")
        if e["event"] != "round-complete":
            continue
        r, surv = e["round"], e["survivors"]
        agg = np.load(settings.output_dir / f"round-{r}.npy")
        if settings.dp is None:
            want = (np.sum([inputs[u].astype(object) for u in surv], axis=0)
                    % (1 << bits)).astype(agg.dtype)
            same = bool(np.array_equal(agg, want))
            ok &= same
            print(f"round {r}: {len(surv)} survivors, aggregate equals the plain sum of their "
                  f"inputs: {'yes' if same else 'NO'}")
        else:
            want = np.sum([inputs[u] for u in surv], axis=0)
            rmse = float(np.sqrt(np.mean((agg - want) ** 2)))
            print(f"round {r}: {len(surv)} survivors, RMSE of the DP sum per coordinate "
                  f"{rmse:.4f} (the survivors' true sum has RMS "
                  f"{float(np.sqrt(np.mean(want ** 2))):.4f})")
    if settings.dp is not None:
        pub = settings.ledger_key.with_suffix(".pub") if settings.ledger_key else None
        key = pub.read_text().strip() if pub is not None and pub.exists() else None
        rep = verify(settings.ledger, key)
        print(f"server ledger verifies: {rep.entries} rounds, epsilon {rep.epsilon:.3f} of "
              f"{rep.budget.epsilon}" + (" (signed)" if rep.signed else ""))
        for led in sorted(d.glob("state/client-*/ledger.jsonl")):
            verify(led)
        print("client ledgers verify")
    print("demo " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
