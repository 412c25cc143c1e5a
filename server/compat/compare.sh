#!/usr/bin/env bash
# Side by side, in one run: the load command (server/examples/load.rs)
# against Locktopus and shardlock-server, both on 127.0.0.1, in interleaved
# rounds; prints every round and then the median of each figure.
#
#   server/compat/compare.sh [ROUNDS] [SECONDS]
#
# PIN=1 puts every server on CPU 0 and the load command on CPU 1 (taskset;
# tokio and Go size their thread pools to that), so that a server's latency
# is not its scheduling against the load's threads.
#
# Needs target/locktopus-server (server/compat/locktopus-e2e.sh builds it)
# or LOCKTOPUS_BIN.
source "$(dirname "$0")/common.sh"
ROUNDS="${1:-3}"
SECONDS_EACH="${2:-4}"
LOCKTOPUS_BIN="${LOCKTOPUS_BIN:-$ROOT/target/locktopus-server}"
[ -x "$LOCKTOPUS_BIN" ] || { echo "no Locktopus binary at $LOCKTOPUS_BIN" >&2; exit 2; }
cargo build --release -q -p shardlock-server --example load --example null_server --manifest-path "$ROOT/Cargo.toml"
LOAD="$ROOT/target/release/examples/load"

PIN_SERVER=() PIN_LOAD=()
if [ "${PIN:-0}" = 1 ]; then PIN_SERVER=(taskset -c 0) PIN_LOAD=(taskset -c 1); fi
PORT="${PORT:-9041}" LAUNCH="${PIN_SERVER[*]}" start_shardlock_server
OURS=$PORT
THEIRS=$((PORT + 1))
# Locktopus logs every lock by default; `true` turns its logging *off* (the
# flags are inverted there), to match shardlock-server's default.
"${PIN_SERVER[@]}" "$LOCKTOPUS_BIN" --host 127.0.0.1 --port "$THEIRS" --log-clients true --log-locks true >/dev/null 2>&1 &
LOCKTOPUS_PID=$!
# The transport's ceiling: the same stack answering without locking.
NULL=$((PORT + 2))
"${PIN_SERVER[@]}" "$ROOT/target/release/examples/null_server" --port "$NULL" >/dev/null 2>&1 &
NULL_PID=$!
trap 'kill $SERVER_PID $LOCKTOPUS_PID $NULL_PID 2>/dev/null || true' EXIT
sleep 1

# Server CPU time (user + system) of a process, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# scenario name | load arguments (one connection count each, so that the
# server's CPU time can be divided by the cycles of one measurement)
SCENARIOS=(
    "write|--connections 1"
    "write|--connections 16"
    "read95|--connections 1 --read-percent 95"
    "read95|--connections 16 --read-percent 95"
    "long-held|--connections 16 --long-held"
)
RESULTS=$(mktemp)
for round in $(seq "$ROUNDS"); do
    for scenario in "${SCENARIOS[@]}"; do
        name="${scenario%%|*}"
        args="${scenario#*|}"
        for server in locktopus:$THEIRS:$LOCKTOPUS_PID shardlock:$OURS:$SERVER_PID null:$NULL:$NULL_PID; do
            IFS=: read -r who port pid <<<"$server"
            before=$(cpu_ticks "$pid")
            # shellcheck disable=SC2086
            line=$("${PIN_LOAD[@]}" "$LOAD" --url "ws://127.0.0.1:$port/v1" --seconds "$SECONDS_EACH" $args | grep connections:)
            after=$(cpu_ticks "$pid")
            echo "$line" | awk -v s="$who" -v n="$name" -v r="$round" -v t=$(((after - before) * TICK_US)) \
                '{ gsub(/\(/, "", $11); print r, n, s, $1, $3, $6, $9, t / $11 }' | tee -a "$RESULTS"
        done
    done
done
echo
echo "medians of $ROUNDS rounds, $SECONDS_EACH s each: cycles/s, p50 and p99 µs, server CPU µs per cycle; x = ÷ locktopus's cycles/s; null = the transport alone (locks nothing)"
sort -k2,2 -k4,4n -k3,3 "$RESULTS" | awk '
    function median(list,   n, a, i, j, t) {
        n = split(list, a, " ")
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { k = $2 " " $4 " " $3; c[k] = c[k] " " $5; p50[k] = p50[k] " " $6; p99[k] = p99[k] " " $7; cpu[k] = cpu[k] " " $8; if (!(k in seen)) { seen[k] = 1; order[++m] = k } }
    END {
        printf "%-10s %5s %-10s %10s %8s %8s %8s %7s\n", "scenario", "conns", "server", "cycles/s", "p50", "p99", "cpu/cyc", "x"
        for (i = 1; i <= m; i++) {
            split(order[i], f, " ")
            if (f[3] == "locktopus") base[f[1] " " f[2]] = median(c[order[i]])
        }
        for (i = 1; i <= m; i++) {
            split(order[i], f, " "); k = order[i]; med = median(c[k])
            ratio = (f[3] != "locktopus" && base[f[1] " " f[2]] > 0) ? sprintf("%.2fx", med / base[f[1] " " f[2]]) : ""
            printf "%-10s %5s %-10s %10.0f %8.0f %8.0f %8.1f %7s\n", f[1], f[2], f[3], med, median(p50[k]), median(p99[k]), median(cpu[k]), ratio
        }
    }'
rm -f "$RESULTS"
