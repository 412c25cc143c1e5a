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
