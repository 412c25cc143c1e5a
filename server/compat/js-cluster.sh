#!/usr/bin/env bash
# The official JavaScript client's tests (js-client/) through each instance
# of a local cluster (server/cluster/run-local.sh): one instance owns each
# test's namespace, so most runs pass through a forwarding instance.
source "$(dirname "$0")/common.sh"
export SERVER_BASE="${SERVER_BASE:-9021}" ETCD_BASE="${ETCD_BASE:-33379}" LEASE_TTL="${LEASE_TTL:-2}"
cd "$ROOT/server/compat/js-client"
npm ci --no-audit --no-fund --loglevel=error
start_local_cluster
trap stop_local_cluster EXIT
for port in "$SERVER_BASE" $((SERVER_BASE + 1)) $((SERVER_BASE + 2)); do
    echo "--- the JS client through instance $port"
    SERVER_URL="ws://127.0.0.1:$port" node --test --test-timeout=20000 client.test.mjs
done
