# Sourced by the compatibility scripts: build shardlock-server and run it on
# 127.0.0.1:$PORT for the length of the script ($LAUNCH, if set, prefixes
# the command, e.g. `taskset -c 0`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PORT="${PORT:-9009}"

start_shardlock_server() {
    cargo build --release -q -p shardlock-server --manifest-path "$ROOT/Cargo.toml"
    # shellcheck disable=SC2086
    ${LAUNCH:-} "$ROOT/target/release/shardlock-server" --port "$PORT" "$@" >"${TMPDIR:-/tmp}/shardlock-compat-$PORT.log" 2>&1 &
    SERVER_PID=$!
    trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return; fi
        kill -0 "$SERVER_PID" || { cat "${TMPDIR:-/tmp}/shardlock-compat-$PORT.log"; exit 1; }
        sleep 0.1
    done
    echo "shardlock-server did not start on port $PORT" >&2
    exit 1
}

# Starts server/cluster/run-local.sh in the background (its SERVER_BASE,
# ETCD_BASE and LEASE_TTL from the environment) and waits until it prints
# its URLs; sets CLUSTER_PID. `stop_local_cluster` stops it.
start_local_cluster() {
    CLUSTER_LOG=$(mktemp)
    "$ROOT/server/cluster/run-local.sh" >"$CLUSTER_LOG" 2>&1 &
    CLUSTER_PID=$!
    for _ in $(seq 600); do
        grep -q "Ctrl-C stops the cluster" "$CLUSTER_LOG" && return
        kill -0 "$CLUSTER_PID" 2>/dev/null || break
        sleep 0.5
    done
    cat "$CLUSTER_LOG"
    echo "the local cluster did not start" >&2
    exit 1
}

stop_local_cluster() {
    kill "$CLUSTER_PID" 2>/dev/null || true
    wait "$CLUSTER_PID" 2>/dev/null || true
    rm -f "$CLUSTER_LOG"
}

# Copies the source tree at $1 (a checkout, or a bare repository: its HEAD)
# to $2.
copy_source() {
    rm -rf "$2" && mkdir -p "$2"
    if [ "$(git -C "$1" rev-parse --is-bare-repository 2>/dev/null)" = true ]; then
        git -C "$1" archive HEAD | tar -x -C "$2"
    else
        cp -r "$1/." "$2"
    fi
}
