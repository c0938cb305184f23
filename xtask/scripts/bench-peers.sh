#!/usr/bin/env bash
# A partition from many peers, as the user sees it (process start to return): `faultline
# fault apply partition --peers-file` beside an nft set of the same addresses loaded with
# `nft -f`, at 10k and 100k peers (and 1M, which faultline refuses: an agent's peer table
# holds 131072). Three alternating rounds each, in one network namespace.
#
#   cargo build --release -p faultline-agent -p faultline-controller
#   sudo bash xtask/scripts/bench-peers.sh
set -euo pipefail
NS=flpeers ADDR=10.252.0.1/24
source "$(dirname "$0")/bench-lab.sh"
for n in 10000 100000 1000000; do
    awk -v n=$n 'BEGIN { for (i = 0; i < n; i++) printf "- 10.%d.%d.%d\n", 64 + int(i / 65536), int(i / 256) % 256, i % 256 }' >"$DIR/peers-$n.yaml"
    awk -v n=$n 'BEGIN { printf "table inet flpeers {\n set p { type ipv4_addr; elements = { "; for (i = 0; i < n; i++) printf "%s10.%d.%d.%d", (i ? ", " : ""), 64 + int(i / 65536), int(i / 256) % 256, i % 256; printf " } }\n chain fl_out {\n  type filter hook output priority 0;\n  ip daddr @p drop\n }\n chain fl_in {\n  type filter hook input priority 0;\n  ip saddr @p drop\n }\n}\n" }' >"$DIR/nft-$n.conf"
done

ip netns exec $NS bash -s <<'EOF'
set -uo pipefail
FL=$BIN/faultline
now() { echo "${EPOCHREALTIME/./}"; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }
echo "| peers | faultline apply ms | faultline revert ms | nft -f (set + 2 rules) ms | nft delete table ms |"
echo "|---|---|---|---|---|"
for n in 10000 100000 1000000; do
    for r in 1 2 3; do
        t=$(now); $FL fault apply partition -i eth0 --direction both --peers-file "$DIR/peers-$n.yaml" --lease 60s >"$DIR/id" 2>"$DIR/err"; ok=$?; u=$(now)
        if [[ $ok == 0 ]]; then
            fa=$(ms $t $u); t=$(now); $FL fault revert "$(<"$DIR/id")" >/dev/null; u=$(now); fr=$(ms $t $u)
        else
            fa="refused ($(ms $t $u) ms): $(head -c 160 "$DIR/err")"; fr=""
        fi
        t=$(now); nft -f "$DIR/nft-$n.conf"; u=$(now); na=$(ms $t $u)
        t=$(now); nft delete table inet flpeers; u=$(now); nr=$(ms $t $u)
        echo "| $n | $fa | $fr | $na | $nr |"
    done
done
EOF
