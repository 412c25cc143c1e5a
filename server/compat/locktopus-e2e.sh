#!/usr/bin/env bash
# Locktopus's own end-to-end tests (cmd/server, through its Go client
# pkg/client/v1) against shardlock-server, and a Locktopus binary for the
# side-by-side benchmark.
#
#   server/compat/locktopus-e2e.sh LOCKTOPUS_SOURCE_DIR (a checkout or a bare clone)
#
# Builds with Debian's Go and Go library packages (no module proxy): apt-get
# install golang-go golang-github-gorilla-{handlers,mux,websocket}-dev
# golang-github-jessevdk-go-flags-dev golang-golang-x-{sys,term,crypto}-dev.
# Debian lacks github.com/withmandala/go-log, Locktopus's logger; go-log/
# here is a stand-in with the six methods it calls. The binary lands at
# target/locktopus-server.
source "$(dirname "$0")/common.sh"
PORT="${PORT:-9029}"
SRC="${1:-${LOCKTOPUS_SRC:-}}"
[ -n "$SRC" ] && [ -d "$SRC" ] || { echo "usage: $0 LOCKTOPUS_SOURCE_DIR" >&2; exit 2; }
GOPATH_DIR="$ROOT/target/locktopus-gopath"
rm -rf "$GOPATH_DIR"
mkdir -p "$GOPATH_DIR/src/github.com/locktopus-project" "$GOPATH_DIR/src/github.com/withmandala"
copy_source "$SRC" "$GOPATH_DIR/src/github.com/locktopus-project/locktopus"
cp -r "$ROOT/server/compat/go-log" "$GOPATH_DIR/src/github.com/withmandala/go-log"
export GOPATH="$GOPATH_DIR:/usr/share/gocode" GO111MODULE=off GOFLAGS= GOCACHE="$GOPATH_DIR/cache"
cd "$GOPATH_DIR/src/github.com/locktopus-project/locktopus"
go build -o "$ROOT/target/locktopus-server" ./cmd/server
echo "built $ROOT/target/locktopus-server"
start_shardlock_server
SERVER_ADDRESS="127.0.0.1:$PORT" go test -count=1 -v ./cmd/server/

# The same tests through each instance of a local cluster, a fresh cluster
# for each (the tests use fixed namespace names and expect them new): most
# of their sessions pass through a forwarding instance.
kill "$SERVER_PID" 2>/dev/null || true
export SERVER_BASE="${CLUSTER_BASE:-9051}" ETCD_BASE="${CLUSTER_ETCD_BASE:-36379}" LEASE_TTL=2
for i in 0 1 2; do
    port=$((SERVER_BASE + i))
    start_local_cluster
    echo "--- Locktopus's e2e tests through cluster instance $port"
    status=0
    SERVER_ADDRESS="127.0.0.1:$port" go test -count=1 -v ./cmd/server/ || status=$?
    stop_local_cluster
    [ "$status" = 0 ] || exit "$status"
done
