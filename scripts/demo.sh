#!/usr/bin/env bash
# `make demo`: sluiced balancing real HTTP connections, on its embedded
# default configuration, in a topology of network namespaces it builds and
# removes itself (also on failure or Ctrl-C). Exits 0 only if every request
# succeeded.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SLUICE_BIN_DIR:-$ROOT/target/release}
REQUESTS=${DEMO_REQUESTS:-300}
MODE=${DEMO_MODE:-nat}
ID="sd$$"
WORK=$(mktemp -d /tmp/sluice-demo.XXXXXX)
SOCK="$WORK/sluiced.sock"
SLUICED_PID=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$SLUICED_PID" ] && kill -0 "$SLUICED_PID" 2>/dev/null; then
        kill -TERM "$SLUICED_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SLUICED_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SLUICED_PID" 2>/dev/null || true
    fi
    "$ROOT/scripts/topology.sh" down "$ID" || true
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "demo: interrupted"; exit 130' INT TERM

for b in sluiced sluicectl; do
    [ -x "$BIN/$b" ] || { echo "demo: $BIN/$b missing: run 'make demo' (it builds first)" >&2; exit 1; }
done

echo "== building the topology (namespaces ${ID}*: client, dispatcher, switch, 3 backends; mode $MODE)"
"$ROOT/scripts/topology.sh" up "$ID" "$MODE"

if [ "$MODE" = dr ]; then BPORT=80; else BPORT=8080; fi
sed -e "s|@PREFIX@|$ID|" -e "s|@SOCKET@|$SOCK|" -e "s|@MODE@|$MODE|" -e "s|@BPORT@|$BPORT|" \
    "$ROOT/scripts/netns.toml.in" >"$WORK/demo.toml"
"$BIN/sluicectl" config check "$WORK/demo.toml"

echo "== starting 3 HTTP backends (port $BPORT)"
for i in 1 2 3; do
    ip netns exec "${ID}b$i" python3 "$ROOT/tests/e2e/backend.py" --name "b$i" --port "$BPORT" \
        --log "$WORK/b$i.log" 2>"$WORK/b$i.err" &
    disown
done

echo "== starting sluiced"
ip netns exec "${ID}d" "$BIN/sluiced" --config "$WORK/demo.toml" >"$WORK/sluiced.log" 2>&1 &
SLUICED_PID=$!
disown
ready=""
for _ in $(seq 100); do
    if "$BIN/sluicectl" --socket "$SOCK" status >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "$SLUICED_PID" 2>/dev/null || break
    sleep 0.2
done
if [ -z "$ready" ]; then
    echo "demo: sluiced did not come up:" >&2; cat "$WORK/sluiced.log" >&2; exit 1
fi
"$BIN/sluicectl" --socket "$SOCK" status
for i in 1 2 3; do
    for _ in $(seq 50); do
        ip netns exec "${ID}b$i" python3 -c "import socket,sys; socket.create_connection(('198.18.2.1$i', $BPORT), 1)" 2>/dev/null && break
        sleep 0.1
    done
done

echo
echo "== sending $REQUESTS HTTP requests with curl from the client namespace to http://198.18.100.1/"
start=$(date +%s.%N)
ip netns exec "${ID}c" curl -s --max-time 5 --connect-timeout 3 --retry 0 \
    -o /dev/null -w '%{http_code}\n' "http://198.18.100.1/?req=[1-$REQUESTS]" >"$WORK/codes" || true
end=$(date +%s.%N)
ok=$(grep -c '^200$' "$WORK/codes" || true)
echo "$ok of $REQUESTS requests succeeded in $(awk -v s="$start" -v e="$end" 'BEGIN{printf "%.1f", e-s}') s"

echo
echo "== requests served, from each backend's own log"
printf '%-8s %-16s %8s %8s\n' BACKEND ADDRESS SERVED SHARE
for i in 1 2 3; do
    n=$(wc -l <"$WORK/b$i.log" 2>/dev/null || echo 0)
    printf '%-8s %-16s %8d %7.1f%%\n' "b$i" "198.18.2.1$i:$BPORT" "$n" "$(awk -v n="$n" -v t="$REQUESTS" 'BEGIN{print 100*n/t}')"
done
echo
echo "== sluicectl stats"
"$BIN/sluicectl" --socket "$SOCK" stats
echo
"$BIN/sluicectl" --socket "$SOCK" vip list

if [ "$ok" -ne "$REQUESTS" ]; then
    echo "demo: FAILED: $((REQUESTS - ok)) request(s) did not succeed" >&2
    exit 1
fi
echo
echo "demo: OK: all $REQUESTS requests succeeded through the VIP"
