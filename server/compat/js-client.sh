#!/usr/bin/env bash
# The official JavaScript client, @locktopus/client from npm, against
# shardlock-server: the tests in js-client/ (node:test).
source "$(dirname "$0")/common.sh"
PORT="${PORT:-9019}"
cd "$ROOT/server/compat/js-client"
npm ci --no-audit --no-fund --loglevel=error
start_shardlock_server
SERVER_URL="ws://127.0.0.1:$PORT" node --test --test-timeout=20000 client.test.mjs
