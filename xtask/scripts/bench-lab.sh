# Sourced by the bench-*.sh scripts: one network namespace NS with a veth (eth0, address
# ADDR) and a release faultline-agent in it (mutual TLS, no kernel metrics), ready when this
# returns; everything is removed on exit. Sets BIN, DIR, AGENT and exports FAULTLINE_TLS_DIR,
# FAULTLINE_AGENT. Usage: NS=name ADDR=10.x.y.1/24 source bench-lab.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${FAULTLINE_BIN:-$ROOT/target/release}
DIR=$(mktemp -d "/tmp/faultline-$NS.XXXXXX")
cleanup() {
    [[ -n "${AGENT:-}" ]] && kill "$AGENT" 2>/dev/null && wait "$AGENT" 2>/dev/null
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT
ip netns del "$NS" 2>/dev/null || true
ip netns add "$NS"
ip -n "$NS" link add eth0 type veth peer name eth1
ip -n "$NS" addr add "$ADDR" dev eth0
ip -n "$NS" link set eth0 up
ip -n "$NS" link set eth1 up
ip -n "$NS" link set lo up
"$BIN/faultline" certs init "$DIR/tls" >/dev/null 2>&1
ip netns exec "$NS" "$BIN/faultline-agent" --tls-dir "$DIR/tls" --state-dir "$DIR/state" --no-kernel-metrics ${AGENT_FLAGS:-} >"$DIR/agent.log" 2>&1 &
AGENT=$!
export FAULTLINE_TLS_DIR=$DIR/tls FAULTLINE_AGENT=https://127.0.0.1:7070 BIN DIR
for _ in $(seq 100); do ip netns exec "$NS" "$BIN/faultline" fault list >/dev/null 2>&1 && break; sleep 0.1; done
