#!/usr/bin/env bash
# What forwarding costs: lock+release cycles per second through a single
# node, through a cluster namespace's owner, and through a forwarding
# instance, in interleaved rounds (the `load` example, one namespace).
#
#   server/cluster/bench.sh [rounds] [seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
SECONDS_EACH=${2:-3}
export SERVER_BASE=9031 ETCD_BASE=34379
cargo build --release -q -p shardlock-server --example load
LOG=$(mktemp)
server/cluster/run-local.sh >"$LOG" 2>&1 &
CLUSTER=$!
target/release/shardlock-server --port 9039 >/dev/null 2>&1 &
SINGLE=$!
trap 'kill $CLUSTER $SINGLE 2>/dev/null || true; wait 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 600); do grep -q "Ctrl-C stops" "$LOG" && break; sleep 0.5; done
load() { target/release/examples/load --url "$1" --namespace bench --connections 1,16 --seconds "$SECONDS_EACH" | tail -2; }
# Claim the namespace, then find its owner and a forwarder.
target/release/examples/load --url ws://127.0.0.1:9031/v1 --namespace bench --connections 1 --seconds 0.5 >/dev/null
owner=""; forwarder=""
for port in 9031 9032 9033; do
    owned=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^shardlock_cluster_namespaces_owned /{print $2}')
    if [ "$owned" = "1" ]; then owner=$port; else forwarder=$port; fi
done
echo "owner :$owner, forwarder :$forwarder"
for round in $(seq "$ROUNDS"); do
    echo "--- round $round"
    echo "single node";  load ws://127.0.0.1:9039/v1
    echo "owner";        load "ws://127.0.0.1:$owner/v1"
    echo "forwarder";    load "ws://127.0.0.1:$forwarder/v1"
done
