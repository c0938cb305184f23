# Sourced by the Web API benchmarks: one controller (plaintext on loopback, the Web API on
# 127.0.0.1:7182 with an operator token) and one agent, and a veth pair flbench0/flbench1 to
# fault; all removed on exit. Sets BIN, dir, token, controller, agent, and `api` (curl with
# the token). AGENT_ARGS: more agent flags. A script sourcing this may set `extra_pids`.
BIN=target/release
dir=$(mktemp -d)
token=bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
cleanup() {
    kill "${agent:-}" "${controller:-}" ${extra_pids:-} 2>/dev/null || true
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
# shellcheck disable=SC2086 # AGENT_ARGS is a list of flags
$BIN/faultline-agent --insecure --listen 127.0.0.1:7171 --controller http://127.0.0.1:7181 --name w1 --state-dir "$dir/a" ${AGENT_ARGS:-} >"$dir/a.log" 2>&1 &
agent=$!
for _ in $(seq 100); do $BIN/faultline --insecure --controller http://127.0.0.1:7181 agents list 2>/dev/null | grep -q w1 && break; sleep 0.1; done
sleep 1
api() { curl -sS -f -H "Authorization: Bearer $token" "$@"; }
