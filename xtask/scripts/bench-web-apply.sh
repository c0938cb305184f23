#!/usr/bin/env bash
# One fault applied and reverted through the controller, as a user's tools do it: the Web
# API with curl, and gRPC with the faultline CLI, each timed from process start to exit,
# alternating. Run as root after `cargo build --release -p faultline-agent -p
# faultline-controller`. One agent on this host (plaintext on loopback), a drop fault on one
# end of a veth pair. Prints p50/p99/max per step (ms). N rounds (default 50).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-50}
BIN=target/release
dir=$(mktemp -d)
token=bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
cleanup() {
    kill "${agent:-}" "${controller:-}" 2>/dev/null || true
    ip link del flbench0 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
ip link add flbench0 type veth peer name flbench1
ip link set flbench0 up
ip link set flbench1 up
echo "operator $token" >"$dir/tokens"
$BIN/faultline --insecure controller serve --listen 127.0.0.1:7181 --state "$dir/c.db" --web-listen 127.0.0.1:7182 --web-token-file "$dir/tokens" >"$dir/c.log" 2>&1 &
controller=$!
$BIN/faultline-agent --insecure --listen 127.0.0.1:7171 --controller http://127.0.0.1:7181 --name w1 --state-dir "$dir/a" >"$dir/a.log" 2>&1 &
agent=$!
cli() { $BIN/faultline --insecure --controller http://127.0.0.1:7181 "$@"; }
for _ in $(seq 100); do cli agents list 2>/dev/null | grep -q w1 && break; sleep 0.1; done
sleep 1
ms() { local d=$(( $(date +%s%N) - $1 )); printf "%d.%03d\n" $((d / 1000000)) $((d / 1000 % 1000)); }
api() { curl -sS -f -H "Authorization: Bearer $token" "$@"; }
body='{"kind": "drop", "lease": "60s", "settings": {"interface": "flbench0", "loss": "1%"}}'

for i in $(seq "$N"); do
    t=$(date +%s%N); id=$(api -H 'Content-Type: application/json' -d "$body" http://127.0.0.1:7182/api/faults | sed 's/.*"id":"\([^"]*\)".*/\1/'); echo "rest-apply $(ms "$t")"
    t=$(date +%s%N); api -X DELETE "http://127.0.0.1:7182/api/faults/$id" >/dev/null; echo "rest-revert $(ms "$t")"
    t=$(date +%s%N); id=$(cli fault apply drop -i flbench0 --loss 1% --lease 60s); echo "cli-apply $(ms "$t")"
    t=$(date +%s%N); cli fault revert "$id" >/dev/null; echo "cli-revert $(ms "$t")"
done >"$dir/times"
echo "--- $N rounds (p50 / p99 / max, ms)"
for step in rest-apply rest-revert cli-apply cli-revert; do
    grep "^$step " "$dir/times" | awk '{print $2}' | sort -n | awk -v s="$step" '{v[NR]=$1} END {printf "%-12s %8.2f %8.2f %8.2f\n", s, v[int((NR+1)/2)], v[int(NR*0.99+0.999)], v[NR]}'
done
