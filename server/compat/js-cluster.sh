#!/usr/bin/env bash
# The official JavaScript client's tests (js-client/) through each instance
# of a local cluster (server/cluster/run-local.sh): one instance owns each
# test's namespace, so most runs pass through a forwarding instance.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export SERVER_BASE="${SERVER_BASE:-9021}" ETCD_BASE="${ETCD_BASE:-33379}" LEASE_TTL="${LEASE_TTL:-2}"
LOG="${TMPDIR:-/tmp}/shardlock-js-cluster.log"
cd "$ROOT/server/compat/js-client"
npm ci --no-audit --no-fund --loglevel=error
"$ROOT/server/cluster/run-local.sh" >"$LOG" 2>&1 &
CLUSTER=$!
trap 'kill $CLUSTER 2>/dev/null || true; wait $CLUSTER 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    grep -q "Ctrl-C stops the cluster" "$LOG" && break
    kill -0 "$CLUSTER" 2>/dev/null || { cat "$LOG"; exit 1; }
    sleep 0.5
done
grep -q "Ctrl-C stops the cluster" "$LOG" || { cat "$LOG"; echo "the cluster did not start" >&2; exit 1; }
for port in "$SERVER_BASE" $((SERVER_BASE + 1)) $((SERVER_BASE + 2)); do
    echo "--- the JS client through instance $port"
    SERVER_URL="ws://127.0.0.1:$port" node --test --test-timeout=20000 client.test.mjs
done
