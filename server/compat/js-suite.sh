#!/usr/bin/env bash
# The JavaScript client's own jest suite (locktopus-client-ts, tests/) against
# shardlock-server on 127.0.0.1:9009. The suite names its server host
# `server` (a Docker network name); the copy here points it at 127.0.0.1.
#
#   server/compat/js-suite.sh LOCKTOPUS_CLIENT_TS_SOURCE_DIR (a checkout or a bare clone)
source "$(dirname "$0")/common.sh"
SRC="${1:-${LOCKTOPUS_CLIENT_TS_SRC:-}}"
[ -n "$SRC" ] && [ -d "$SRC" ] || { echo "usage: $0 LOCKTOPUS_CLIENT_TS_SOURCE_DIR" >&2; exit 2; }
WORK="$ROOT/target/locktopus-client-ts"
copy_source "$SRC" "$WORK" && cd "$WORK"
sed -i "s/const SERVER_HOST = 'server';/const SERVER_HOST = '127.0.0.1';/" tests/client.test.ts
npm ci --no-audit --no-fund --loglevel=error
PORT=9009 start_shardlock_server
npx jest

# The same suite through a local cluster whose instance 0 listens on 9009
# (the suite's port): sessions for namespaces that another instance owns
# pass through 9009 as a forwarder.
kill "$SERVER_PID" 2>/dev/null || true
SERVER_BASE=9009 ETCD_BASE="${CLUSTER_ETCD_BASE:-37379}" LEASE_TTL=2 start_local_cluster
trap stop_local_cluster EXIT
echo "--- the suite through cluster instance 9009"
npx jest
forwarded=$(curl -s http://127.0.0.1:9009/metrics | awk '/^shardlock_cluster_forwarded_connections_total /{print $2}')
echo "sessions forwarded by 9009: $forwarded"
