#!/usr/bin/env bash
# One fault applied and reverted through the controller, as a user's tools do it: the Web
# API with curl, and gRPC with the faultline CLI, each timed from process start to exit,
# alternating. Run as root after `cargo build --release -p faultline-agent -p
# faultline-controller`. One agent on this host (plaintext on loopback), a drop fault on one
# end of a veth pair. Prints p50/p99/max per step (ms). N rounds (default 50).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-50}
# shellcheck source=xtask/scripts/web-bench-lab.sh
. xtask/scripts/web-bench-lab.sh
cli() { $BIN/faultline --insecure --controller http://127.0.0.1:7181 "$@"; }
ms() { local d=$(( $(date +%s%N) - $1 )); printf "%d.%03d\n" $((d / 1000000)) $((d / 1000 % 1000)); }
body='{"kind": "drop", "lease": "60s", "settings": {"interface": "flbench0", "loss": "1%"}, "all": true}'

for i in $(seq "$N"); do
    t=$(date +%s%N); id=$(api -H 'Content-Type: application/json' -d "$body" http://127.0.0.1:7182/api/faults | sed 's/.*"id":"\([^"]*\)".*/\1/'); echo "rest-apply $(ms "$t")"
    t=$(date +%s%N); api -X DELETE "http://127.0.0.1:7182/api/faults/$id" >/dev/null; echo "rest-revert $(ms "$t")"
    t=$(date +%s%N); id=$(cli fault apply drop -i flbench0 --loss 1% --lease 60s --all); echo "cli-apply $(ms "$t")"
    t=$(date +%s%N); cli fault revert "$id" >/dev/null; echo "cli-revert $(ms "$t")"
done >"$dir/times"
echo "--- $N rounds (p50 / p99 / max, ms)"
for step in rest-apply rest-revert cli-apply cli-revert; do
    grep "^$step " "$dir/times" | awk '{print $2}' | sort -n | awk -v s="$step" '{v[NR]=$1} END {printf "%-12s %8.2f %8.2f %8.2f\n", s, v[int((NR+1)/2)], v[int(NR*0.99+0.999)], v[NR]}'
done
