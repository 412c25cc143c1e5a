#!/usr/bin/env bash
# A local shardlock cluster in one command: a 3-member etcd cluster and 3
# shardlock-server instances, all on loopback. Ctrl-C stops everything.
#
#   server/cluster/run-local.sh            # release build, TTL 5 s
#   LEASE_TTL=2 server/cluster/run-local.sh
#
# Needs `etcd` (Debian: apt-get install etcd-server) and, to build the
# server, `protoc` (apt-get install protobuf-compiler).
set -euo pipefail
cd "$(dirname "$0")/../.."

ETCD_BASE=${ETCD_BASE:-32379}   # client ports 32379, 32479, 32579; peers +1
SERVER_BASE=${SERVER_BASE:-9011} # instances on 9011, 9012, 9013
LEASE_TTL=${LEASE_TTL:-5}
DATA=$(mktemp -d "${TMPDIR:-/tmp}/shardlock-cluster.XXXXXX")

command -v etcd >/dev/null || { echo "etcd not found: apt-get install etcd-server" >&2; exit 1; }
cargo build --release -q -p shardlock-server
SERVER=${CARGO_TARGET_DIR:-target}/release/shardlock-server

pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT INT TERM

client() { echo "http://127.0.0.1:$((ETCD_BASE + 100 * $1))"; }
peer() { echo "http://127.0.0.1:$((ETCD_BASE + 100 * $1 + 1))"; }
initial="e0=$(peer 0),e1=$(peer 1),e2=$(peer 2)"
for i in 0 1 2; do
    etcd --name "e$i" --data-dir "$DATA/e$i" \
        --listen-client-urls "$(client $i)" --advertise-client-urls "$(client $i)" \
        --listen-peer-urls "$(peer $i)" --initial-advertise-peer-urls "$(peer $i)" \
        --initial-cluster "$initial" --initial-cluster-state new \
        --initial-cluster-token shardlock-local >"$DATA/etcd$i.log" 2>&1 &
    pids+=($!)
done
endpoints="$(client 0),$(client 1),$(client 2)"
for i in 0 1 2; do
    port=$((SERVER_BASE + i))
    "$SERVER" --port "$port" --etcd-endpoints "$endpoints" \
        --advertise-url "http://127.0.0.1:$port" --lease-ttl "$LEASE_TTL" \
        >"$DATA/server$i.log" 2>&1 &
    pids+=($!)
done

# Ready when every instance holds its lease.
for i in 0 1 2; do
    port=$((SERVER_BASE + i))
    for _ in $(seq 100); do
        curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        sleep 0.2
    done
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 ||
        { echo "instance $port did not become ready; see $DATA/server$i.log" >&2; tail "$DATA/server$i.log" >&2; exit 1; }
done

echo "etcd:      $endpoints"
for i in 0 1 2; do
    port=$((SERVER_BASE + i))
    echo "instance:  ws://127.0.0.1:$port/v1?namespace=default   (metrics: http://127.0.0.1:$port/metrics)"
done
echo "logs:      $DATA"
echo "Ctrl-C stops the cluster."
wait
