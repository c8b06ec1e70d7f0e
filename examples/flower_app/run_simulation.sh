#!/usr/bin/env bash
# Run the digits app in Flower's simulation engine (5 virtual SuperNodes, Ray on loopback) with
# `flwr run`, in a throw-away FLWR_HOME, then stop the local SuperLink `flwr run` started.
#
#   examples/flower_app/run_simulation.sh                              # hardened, DP-FedAvg
#   examples/flower_app/run_simulation.sh --run-config 'secagg="flower"'  # Flower's SecAgg+
#   examples/flower_app/run_simulation.sh --run-config 'dp=false num-server-rounds=3'
#
# Arguments are passed to `flwr run`. See README.md for what each variable below does.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

export PATH="$(dirname "$PYTHON"):$PATH"
export FLWR_HOME="$(mktemp -d "${TMPDIR:-/tmp}/flwr-home.XXXXXX")"
export FLWR_DISABLE_UPDATE_CHECK=1 FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1    # the app runs in this virtualenv
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0                # Ray's node address: 127.0.0.1
export FLWR_LOCAL_SUPERLINK_HTTP_API_PORT="${FLWR_LOCAL_SUPERLINK_HTTP_API_PORT:-$(free_port)}"
export FLWR_LOCAL_CONTROL_API_PORT="${FLWR_LOCAL_CONTROL_API_PORT:-$(free_port)}"
cp "$HERE/flwr-config.toml" "$FLWR_HOME/config.toml"

descendants() {
    local c
    for c in $(pgrep -P "$1" 2>/dev/null || true); do
        echo "$c"
        descendants "$c"
    done
}

cleanup() {
    local rc=$? link pid all=()
    trap - EXIT INT TERM
    # the SuperLink `flwr run` started (detached) is the one logging into this FLWR_HOME
    link="$(pgrep -f -- "--log-file $FLWR_HOME/local-superlink/superlink.log" || true)"
    for pid in $link; do all+=("$pid" $(descendants "$pid")); done
    for pid in "${all[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for pid in "${all[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 2
    for pid in "${all[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "FLWR_HOME kept: $FLWR_HOME"
    else
        rm -rf "$FLWR_HOME"
    fi
    exit "$rc"
}
trap cleanup EXIT INT TERM

flwr run "$HERE" --stream "$@"
