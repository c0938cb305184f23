#!/usr/bin/env bash
# Apply and revert as a user sees them, from the shell: process start to the command's
# return (the agent answers only once the kernel change is in place), `faultline fault
# apply` beside the same change made by tc, iptables and nft. Alternating rounds in one
# network namespace (everything starts in it: no `ip netns exec` per command), medians.
#
#   cargo build --release -p faultline-agent -p faultline-controller
#   sudo bash xtask/scripts/bench-cli.sh [ROUNDS]
#
# faultline runs as root with no --agent, as a user on the agent's host would: through the
# agent's local socket. One more pair of rows gives the same bandwidth change over mutual
# TLS (--agent https://..., as from another host or without root).
#
# Warm: the interface has carried a fault within the last 2 s (or the classifier was
# attached when the agent started). Cold: the first fault on the interface after the
# agent has had it idle for 3 s.
set -euo pipefail
ROUNDS=${1:-200}
NS=flbench ADDR=10.251.0.1/24
source "$(dirname "$0")/bench-lab.sh"
export ROUNDS

ip netns exec $NS bash -s <<'EOF'
set -euo pipefail
FL=$BIN/faultline
OUT=$DIR/out
TLS_AGENT=$FAULTLINE_AGENT
unset FAULTLINE_AGENT
now() { echo "${EPOCHREALTIME/./}"; }
# ms between two microsecond stamps
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1000 }'; }
declare -A T
rec() { T[$1]+="$2 "; }
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
p90() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int(NR*0.9+0.5)]}'; }
nft add table inet flbench
nft add chain inet flbench out '{ type filter hook output priority 0; }'
for r in $(seq "$ROUNDS"); do
    # bandwidth 10mbit
    t=$(now); $FL fault apply bandwidth -i eth0 --rate 10mbit --lease 60s >"$OUT"; u=$(now); id=$(<"$OUT"); rec fl_bw_apply "$(ms $t $u)"
    t=$(now); $FL fault revert "$id" >/dev/null; u=$(now); rec fl_bw_revert "$(ms $t $u)"
    t=$(now); $FL --agent "$TLS_AGENT" fault apply bandwidth -i eth0 --rate 10mbit --lease 60s >"$OUT"; u=$(now); id=$(<"$OUT"); rec fl_tls_bw_apply "$(ms $t $u)"
    t=$(now); $FL --agent "$TLS_AGENT" fault revert "$id" >/dev/null; u=$(now); rec fl_tls_bw_revert "$(ms $t $u)"
    t=$(now); tc qdisc add dev eth0 root handle 1: htb default 1; tc class add dev eth0 parent 1: classid 1:1 htb rate 10mbit; u=$(now); rec tc_bw_apply "$(ms $t $u)"
    t=$(now); tc qdisc del dev eth0 root; u=$(now); rec tc_bw_revert "$(ms $t $u)"
    # drop 10 % (eBPF) against iptables and nft
    t=$(now); $FL fault apply drop -i eth0 --loss 10% --lease 60s >"$OUT"; u=$(now); id=$(<"$OUT"); rec fl_drop_apply "$(ms $t $u)"
    t=$(now); $FL fault revert "$id" >/dev/null; u=$(now); rec fl_drop_revert "$(ms $t $u)"
    t=$(now); iptables -A OUTPUT -o eth0 -m statistic --mode random --probability 0.1 -j DROP; u=$(now); rec ipt_apply "$(ms $t $u)"
    t=$(now); iptables -D OUTPUT -o eth0 -m statistic --mode random --probability 0.1 -j DROP; u=$(now); rec ipt_revert "$(ms $t $u)"
    t=$(now); nft add rule inet flbench out oifname eth0 numgen random mod 10 0 drop; u=$(now); rec nft_apply "$(ms $t $u)"
    t=$(now); nft flush chain inet flbench out; u=$(now); rec nft_revert "$(ms $t $u)"
    t=$(now); /bin/true; u=$(now); rec true "$(ms $t $u)"
    t=$(now); $FL --version >/dev/null; u=$(now); rec fl_version "$(ms $t $u)"
    t=$(now); $FL fault list >/dev/null; u=$(now); rec fl_list "$(ms $t $u)"
done
# Cold: the first fault on the interface once the agent has left it idle (a TCX link
# unused for 2 s is detached).
for r in $(seq $(( ROUNDS / 20 + 3 ))); do
    sleep 3
    t=$(now); $FL fault apply drop -i eth0 --loss 10% --lease 60s >"$OUT"; u=$(now); id=$(<"$OUT"); rec fl_drop_cold "$(ms $t $u)"
    $FL fault revert "$id" >/dev/null
    t=$(now); iptables -A OUTPUT -o eth0 -m statistic --mode random --probability 0.1 -j DROP; u=$(now); rec ipt_cold "$(ms $t $u)"
    iptables -D OUTPUT -o eth0 -m statistic --mode random --probability 0.1 -j DROP
done
nft delete table inet flbench
row() { printf '| %s | %s | %s | %s |\n' "$1" "$(median "${T[$2]}")" "$(p90 "${T[$2]}")" "${3:-}"; }
echo "| command (process start to return) | median ms | p90 ms | ratio to the alternative (medians) |"
echo "|---|---|---|---|"
ratio() { awk -v a="$(median "${T[$1]}")" -v b="$(median "${T[$2]}")" 'BEGIN { printf "%.2f", a / b }'; }
row "faultline fault apply bandwidth -i eth0 --rate 10mbit (local socket)" fl_bw_apply "$(ratio fl_bw_apply tc_bw_apply)× tc"
row "tc qdisc add ... htb + tc class add ... rate 10mbit" tc_bw_apply
row "faultline fault revert (bandwidth)" fl_bw_revert "$(ratio fl_bw_revert tc_bw_revert)× tc"
row "faultline --agent https://... fault apply bandwidth (mTLS)" fl_tls_bw_apply "$(ratio fl_tls_bw_apply tc_bw_apply)× tc"
row "faultline --agent https://... fault revert (mTLS)" fl_tls_bw_revert "$(ratio fl_tls_bw_revert tc_bw_revert)× tc"
row "tc qdisc del dev eth0 root" tc_bw_revert
row "faultline fault apply drop -i eth0 --loss 10% (warm)" fl_drop_apply "$(ratio fl_drop_apply ipt_apply)× iptables, $(ratio fl_drop_apply nft_apply)× nft"
row "iptables -A OUTPUT -o eth0 -m statistic --probability 0.1 -j DROP" ipt_apply
row "nft add rule ... numgen random mod 10 0 drop" nft_apply
row "faultline fault revert (drop)" fl_drop_revert "$(ratio fl_drop_revert ipt_revert)× iptables, $(ratio fl_drop_revert nft_revert)× nft"
row "iptables -D ..." ipt_revert
row "nft flush chain" nft_revert
row "faultline fault apply drop (cold: first on the interface)" fl_drop_cold "$(ratio fl_drop_cold ipt_cold)× iptables"
row "iptables -A ... (same moments)" ipt_cold
row "faultline fault list (local socket, no faults)" fl_list
row "faultline --version" fl_version
row "/bin/true" true
EOF
