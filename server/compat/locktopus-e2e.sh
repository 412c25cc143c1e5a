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
