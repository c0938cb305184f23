#!/usr/bin/env bash
# A partition between two containers as a user runs it, process start to exit, beside a
# Pumba-style sidecar doing the same cut: a helper container run in each target's network
# namespace, one after the other (Pumba runs tc there; this kernel lacks the prio qdisc and
# tc actions, so the helper adds a blackhole route to the peer with busybox `ip`: the same
# shape of cost, one `docker run` per container). Run as root with dockerd running, after
# `cargo build --release -p faultline-agent -p faultline-controller` and once a container
# test has built the busybox test image (`cargo test -p faultline-agent --test container`).
# Prints one line per measured step, then p50/max per step. N rounds (default 20); PAUSE
# seconds between rounds (default 0.5; 2.5 makes every round a first partition).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-20}
BIN=target/release
IMAGE=faultline-test/busybox:latest
dir=$(mktemp -d)
cleanup() {
    kill "${agent:-}" "${controller:-}" 2>/dev/null || true
    docker rm -f bench-web bench-db >/dev/null 2>&1 || true
    docker network rm benchnet >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
docker image inspect "$IMAGE" >/dev/null
docker network create --subnet 10.78.99.0/24 benchnet >/dev/null
for c in web db; do docker run -d --name bench-$c --network benchnet --label app=bench "$IMAGE" sleep 3600 >/dev/null; done
db=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' bench-db)
web=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' bench-web)

$BIN/faultline --insecure controller serve --listen 127.0.0.1:7180 --state "$dir/c.db" >"$dir/c.log" 2>&1 &
controller=$!
$BIN/faultline-agent --insecure --listen 127.0.0.1:7170 --controller http://127.0.0.1:7180 --name b1 --state-dir "$dir/a" >"$dir/a.log" 2>&1 &
agent=$!
cli() { $BIN/faultline --insecure --controller http://127.0.0.1:7180 "$@"; }
for _ in $(seq 100); do cli agents list 2>/dev/null | grep -q b1 && break; sleep 0.1; done
# An agent that has been running a while: its spare classifiers are loaded.
sleep 3
ms() { local d=$(( $(date +%s%N) - $1 )); printf "%d.%03d\n" $((d / 1000000)) $((d / 1000 % 1000)); }
cut() { ! docker exec bench-web ping -c 1 -W 1 "$db" >/dev/null 2>&1; }

for i in $(seq "$N"); do
    t=$(date +%s%N); id=$(cli partition groups --container-select app=bench --group bench-web --group bench-db --lease 30s); echo "faultline-apply $(ms "$t")"
    cut || { echo "partition not in place" >&2; exit 1; }
    t=$(date +%s%N); cli fault revert "$id" >/dev/null; echo "faultline-revert $(ms "$t")"
    t=$(date +%s%N)
    docker run --rm --network container:bench-web --cap-add NET_ADMIN "$IMAGE" ip route add blackhole "$db/32"
    docker run --rm --network container:bench-db --cap-add NET_ADMIN "$IMAGE" ip route add blackhole "$web/32"
    echo "sidecar-apply $(ms "$t")"
    cut || { echo "sidecar partition not in place" >&2; exit 1; }
    t=$(date +%s%N)
    docker run --rm --network container:bench-web --cap-add NET_ADMIN "$IMAGE" ip route del blackhole "$db/32"
    docker run --rm --network container:bench-db --cap-add NET_ADMIN "$IMAGE" ip route del blackhole "$web/32"
    echo "sidecar-revert $(ms "$t")"
    # PAUSE=2.5: the containers' places (kept 2 s after their last fault) are closed again,
    # so every round is a first partition; the default measures back-to-back partitions.
    sleep "${PAUSE:-0.5}"
done | tee "$dir/times"
echo "--- $N rounds (p50 / max, ms)"
for step in faultline-apply faultline-revert sidecar-apply sidecar-revert; do
    grep "^$step " "$dir/times" | awk '{print $2}' | sort -n | awk -v s="$step" '{v[NR]=$1} END {printf "%-18s %8.1f %8.1f\n", s, v[int((NR+1)/2)], v[NR]}'
done
