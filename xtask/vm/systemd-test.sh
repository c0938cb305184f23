#!/bin/bash
# Runs inside the systemd VM as faultline-vm-test.service, after the agent and controller
# units that dist/install.sh installed. Each check prints "vm-test: ok ..." or
# "vm-test: FAIL ..." on the console; the host counts them.
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export FAULTLINE_CONTROLLER=https://127.0.0.1:7080
F=faultline

check() { # check NAME COMMAND...
    local name=$1
    shift
    if "$@"; then echo "vm-test: ok $name"; else echo "vm-test: FAIL $name"; fi
}
wait_for() { # wait_for SECONDS COMMAND...: polls until the command succeeds
    local tries=$(($1 * 10))
    shift
    for _ in $(seq "$tries"); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}
rtt() { ping -c 5 -i 0.2 -q 10.9.0.2 | awk -F/ '/^rtt|^round-trip/ {print int($5)}'; }
has_netem() { tc qdisc show dev v0 | grep -q netem; }
no_netem() { ! has_netem; }
# The agent's log may carry colour codes: strip them before reading fields.
cleanup_undid() { journalctl -u faultline-agent -o cat | sed 's/\x1b\[[0-9;]*m//g' | grep 'cleanup done' | grep -qv 'undone=0'; }

echo "vm-test: kernel $(uname -r), $(systemctl --version | head -1)"
# Type=notify: a unit is active only once its daemon sent READY=1.
check "agent unit active (Type=notify, READY=1)" wait_for 90 systemctl is-active -q faultline-agent
check "controller unit active (Type=notify, READY=1)" wait_for 90 systemctl is-active -q faultline-controller
check "the agent registered with the controller" wait_for 30 sh -c "$F agents list --json | grep -q '\"healthy\":true'"

apid=$(systemctl show -p MainPID --value faultline-agent)
cpid=$(systemctl show -p MainPID --value faultline-controller)
bnd=$(awk '/^CapBnd/ {print $2}' "/proc/$apid/status")
# CAP_KILL 5, CAP_NET_ADMIN 12, CAP_SYS_PTRACE 19, CAP_SYS_ADMIN 21, CAP_PERFMON 38, CAP_BPF 39.
check "agent's bounding set is KILL NET_ADMIN SYS_PTRACE SYS_ADMIN PERFMON BPF (CapBnd $bnd)" test "$bnd" = 000000c000281020
echo "vm-test: kernel.perf_event_paranoid = $(cat /proc/sys/kernel/perf_event_paranoid)"
cbnd=$(awk '/^CapBnd/ {print $2}' "/proc/$cpid/status")
check "controller has no capabilities (CapBnd $cbnd)" test "$cbnd" = 0000000000000000
info=$(env -u FAULTLINE_CONTROLLER $F --agent https://127.0.0.1:7070 info --json)
check "sandboxed agent loads eBPF" grep -q '"ebpf":true' <<<"$info"
check "sandboxed agent has netem (sch_netem loadable)" grep -q '"netem":true' <<<"$info"
check "sandboxed agent has its kernel metrics (tracepoints): $(grep -o '"kernel_metrics_detail":"[^"]*"' <<<"$info")" grep -q '"kernel_metrics":true' <<<"$info"
echo "vm-test: tracefs: $(grep tracefs /proc/mounts | tr '\n' ' ')"

ip netns add peer
ip link add v0 type veth peer name v1 netns peer
ip addr add 10.9.0.1/24 dev v0
ip link set v0 up
ip -n peer link set lo up
ip -n peer addr add 10.9.0.2/24 dev v1
ip -n peer link set v1 up
base=$(rtt)
echo "vm-test: baseline rtt ${base} ms"

id=$($F fault apply netem -i v0 --delay 100ms --lease 120s --on vm)
r=$(rtt)
check "netem 100 ms through the controller: ping avg ${r} ms" test "${r:-0}" -ge 100

# A killed agent cannot revert: the unit's ExecStopPost (faultline-agent --cleanup) does.
systemctl kill -s SIGKILL --kill-whom=main faultline-agent
check "after SIGKILL the netem qdisc is gone" wait_for 30 no_netem
check "ExecStopPost's cleanup undid it (journal: cleanup done)" wait_for 10 cleanup_undid
r=$(rtt)
check "ping back to normal: ${r} ms" test "${r:-999}" -lt 50
check "Restart=on-failure brought the agent back" wait_for 60 systemctl is-active -q faultline-agent
check "it registered again" wait_for 30 sh -c "$F agents list --json | grep -q '\"healthy\":true'"

id=$($F fault apply drop -i v0 --loss 100% --lease 60s --on vm)
check "eBPF drop 100% under the sandbox: ping fails" sh -c '! ping -c 3 -W 1 -q 10.9.0.2 >/dev/null'
$F fault revert "$id" >/dev/null
check "reverted: ping works" ping -c 2 -W 2 -q 10.9.0.2

setpriv --reuid=65534 --regid=65534 --clear-groups sleep 1000 &
spid=$!
sleep 0.2
id=$($F fault apply freeze --pid "$spid" --lease 60s --on vm)
state=$(awk '{print $3}' "/proc/$spid/stat")
check "CAP_KILL: another user's process frozen (state $state)" test "$state" = T
$F fault revert "$id" >/dev/null
state=$(awk '{print $3}' "/proc/$spid/stat")
check "thawed (state $state)" test "$state" != T
kill "$spid"

$F fault apply netem -i v0 --delay 100ms --lease 120s --on vm >/dev/null
systemctl stop faultline-agent
check "systemctl stop: the agent reverted its fault itself" no_netem
check "the stop was clean (inactive, not failed)" sh -c "systemctl show -p ActiveState --value faultline-agent | grep -qx inactive"
echo "vm-test: done"
systemctl poweroff
