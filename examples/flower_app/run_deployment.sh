#!/usr/bin/env bash
# Run the digits app on Flower's deployment engine, all on loopback:
#   a SuperLink (TLS, SuperNode authentication) and NUM_NODES SuperNodes (TLS, each with its own
#   P-384 authentication key registered with `flwr supernode register`, its own secure-aggregation
#   settings file and partition), then `flwr run` against the SuperLink; waits for the run,
#   prints the result and stops every process it started (by pid, also on error or Ctrl-C).
#
#   examples/flower_app/run_deployment.sh                      # 3 nodes, 3 rounds, DP-FedAvg
#   NUM_NODES=4 ROUNDS=2 examples/flower_app/run_deployment.sh
#   KEEP=1 examples/flower_app/run_deployment.sh                # keep the work directory
#   examples/flower_app/run_deployment.sh 'dp=false'            # extra run-config overrides
#
# Everything (certificates, keys, FLWR_HOME, node settings and state, logs, result.json) is
# written to a fresh temporary directory. Needs the repository's virtualenv (PYTHON, default
# .venv/bin/python next to the repository root) and openssl.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
BIN="$(dirname "$PYTHON")"
NUM_NODES="${NUM_NODES:-3}"
ROUNDS="${ROUNDS:-3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/flower-deploy.XXXXXX")"
PIDS=()

export PATH="$BIN:$PATH"
export FLWR_HOME="$WORK/flwr-home" HOME="$WORK/home"
export FLWR_DISABLE_UPDATE_CHECK=1 FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1   # the app runs in this virtualenv
unset SECAGG_FLOWER_SETTINGS
mkdir -p "$FLWR_HOME" "$HOME" "$WORK/logs" "$WORK/tls" "$WORK/keys" "$WORK/nodes"

descendants() {  # every descendant pid of $1 (children first found, deepest last)
    local c
    for c in $(pgrep -P "$1" 2>/dev/null || true); do
        echo "$c"
        descendants "$c"
    done
}

cleanup() {
    local rc=$? pid all=()
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do  # collect the trees first: children outlive their parents
        all+=("$pid" $(descendants "$pid"))
    done
    for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for pid in "${all[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 2
    for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    for pid in "${all[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [[ "${KEEP:-0}" == 1 || $rc -ne 0 ]]; then
        echo "work directory kept: $WORK (logs in $WORK/logs)"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT INT TERM

start() {  # start "$@" in its own session (pgid = pid), output to logs/$NAME.log
    local name=$1
    shift
    setsid "$@" >"$WORK/logs/$name.log" 2>&1 &
    PIDS+=($!)
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# -- TLS: a self-signed CA and a certificate for 127.0.0.1 ----------------------------------
tls="$WORK/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj "/CN=secagg demo CA" -keyout "$tls/ca.key" -out "$tls/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
    >"$tls/server.ext"
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
    -CAcreateserial -days 1 -extfile "$tls/server.ext" -out "$tls/server.pem" 2>/dev/null

# -- SuperNode authentication keys (P-384, OpenSSH format) ----------------------------------
for ((k = 0; k < NUM_NODES; k++)); do
    ssh-keygen -q -t ecdsa -b 384 -N "" -C "node-$k" -f "$WORK/keys/node-$k"
done

# -- SuperLink --------------------------------------------------------------------------------
LINK_PORT="$(free_port)"
start superlink flower-superlink --host 127.0.0.1 --port "$LINK_PORT" \
    --ssl-ca-certfile "$tls/ca.pem" --ssl-certfile "$tls/server.pem" \
    --ssl-keyfile "$tls/server.key" --enable-supernode-auth \
    --database "$WORK/superlink.db" --disable-runtime-dependency-installation
cat >"$FLWR_HOME/config.toml" <<EOF
[superlink]
default = "deployment"

[superlink.deployment]
address = "127.0.0.1:$LINK_PORT"
root-certificates = "$tls/ca.pem"
EOF
for _ in $(seq 100); do
    if "$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', $LINK_PORT), 1)" \
        2>/dev/null; then break; fi
    sleep 0.3
done

# -- register the nodes' public keys (only these may connect) ---------------------------------
for ((k = 0; k < NUM_NODES; k++)); do
    for _ in $(seq 20); do  # the Control API answers a few moments after the port opens
        if flwr supernode register "$WORK/keys/node-$k.pub" deployment --name "node-$k" \
            >"$WORK/logs/register-$k.log" 2>&1; then break; fi
        sleep 1
    done
    grep -o "SuperNode [0-9]* registered" "$WORK/logs/register-$k.log" \
        || { cat "$WORK/logs/register-$k.log"; exit 1; }
done

# -- the run configuration and, from the same values, each node's pinned settings -------------
# A 3-node cohort needs an explicit SecAgg+ graph (k = 2 neighbours, threshold 2: one dropout).
OVERRIDES="num-server-rounds=$ROUNDS min-nodes=$NUM_NODES state-dir=\"$WORK/state\""
OVERRIDES+=" result-file=\"$WORK/result.json\" stage-timeout=90.0"
if ((NUM_NODES == 3)); then OVERRIDES+=" neighbours=2 threshold=2"; fi
OVERRIDES+="${1:+ $1}"
PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" - "$HERE/pyproject.toml" "$OVERRIDES" \
    "$WORK/nodes" "$NUM_NODES" <<'EOF'
import sys, tomllib
from pathlib import Path
from flwr.common.config import parse_config_args
from flower_app.secure import settings_toml

pyproject, overrides, out, n = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
rc = tomllib.loads(Path(pyproject).read_text())["tool"]["flwr"]["app"]["config"]
rc.update(parse_config_args([overrides]))
for pid in range(n):  # each node's own file; state_dir is relative to it
    (out / f"node-{pid}.toml").write_text(settings_toml(rc, pid))
EOF

# -- SuperNodes -------------------------------------------------------------------------------
for ((k = 0; k < NUM_NODES; k++)); do
    start "supernode-$k" flower-supernode --superlink "127.0.0.1:$LINK_PORT" \
        --root-certificates "$tls/ca.pem" --auth-supernode-private-key "$WORK/keys/node-$k" \
        --host 127.0.0.1 --port "$(free_port)" \
        --ssl-ca-certfile "$tls/ca.pem" --ssl-certfile "$tls/server.pem" \
        --ssl-keyfile "$tls/server.key" \
        --node-config "partition-id=$k num-partitions=$NUM_NODES secagg-settings=\"$WORK/nodes/node-$k.toml\""
done

# -- the run ------------------------------------------------------------------------------------
echo "SuperLink on 127.0.0.1:$LINK_PORT with $NUM_NODES SuperNodes; starting the run"
t0=$SECONDS
flwr run "$HERE" deployment --stream --run-config "$OVERRIDES" 2>&1 | tee "$WORK/logs/run.log"
if [[ ! -s "$WORK/result.json" ]]; then
    echo "the run wrote no result; see $WORK/logs" >&2
    exit 1
fi
echo "run finished in $((SECONDS - t0)) s; result ($WORK/result.json):"
cat "$WORK/result.json"
