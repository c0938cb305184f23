#!/usr/bin/env bash
# SSE fan-out: C console-like clients (default 100) follow GET /api/events/stream while N
# faults (default 50) are applied and reverted through the Web API, one after another. Every
# client must see every fault event (2 per fault); prints the delivery latency (arrival minus
# the event's time), and the controller's CPU time and peak RSS over the whole exercise beside
# the same exercise with no client following. Run as root after
# `cargo build --release -p faultline-agent -p faultline-controller`; needs python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
C=${C:-100}
N=${N:-50}
AGENT_ARGS=--no-kernel-metrics
# shellcheck source=xtask/scripts/web-bench-lab.sh
. xtask/scripts/web-bench-lab.sh
body='{"kind": "drop", "lease": "60s", "settings": {"interface": "flbench0", "loss": "1%"}}'
cpu() { awk '{print $14 + $15}' "/proc/$controller/stat"; }
faults() {
    for _ in $(seq "$N"); do
        id=$(api -H 'Content-Type: application/json' -d "$body" http://127.0.0.1:7182/api/faults | sed 's/.*"id":"\([^"]*\)".*/\1/')
        api -X DELETE "http://127.0.0.1:7182/api/faults/$id" >/dev/null
    done
}
seq_now=$(api "http://127.0.0.1:7182/api/events?last=1" | sed 's/.*"seq":\([0-9]*\).*/\1/')
hz=$(getconf CLK_TCK)
t0=$(cpu); s0=$(date +%s%N); faults; t1=$(cpu); s1=$(date +%s%N)
echo "no client:   $N faults applied+reverted in $(( (s1 - s0) / 1000000 )) ms, controller CPU $(( (t1 - t0) * 1000 / hz )) ms"
seq_now=$(api "http://127.0.0.1:7182/api/events?last=1" | sed 's/.*"seq":\([0-9]*\).*/\1/')
rss_alone=$(awk '/VmRSS/ {print $2}' "/proc/$controller/status")
python3 xtask/scripts/sse_clients.py 127.0.0.1 7182 "$token" "$C" $((2 * N)) 120 "$seq_now" >"$dir/clients" &
clients=$!
extra_pids=$clients
for _ in $(seq 600); do grep -q ready "$dir/clients" && break; sleep 0.1; done
rss0=$(awk '/VmRSS/ {print $2}' "/proc/$controller/status")
t0=$(cpu); s0=$(date +%s%N); faults; t1=$(cpu); s1=$(date +%s%N)
wait "$clients"
echo "$C clients: $N faults applied+reverted in $(( (s1 - s0) / 1000000 )) ms, controller CPU $(( (t1 - t0) * 1000 / hz )) ms; RSS $((rss_alone / 1024)) MiB alone, $((rss0 / 1024)) MiB with the clients connected, peak $(( $(awk '/VmHWM/ {print $2}' "/proc/$controller/status") / 1024 )) MiB"
tail -1 "$dir/clients"
