#!/usr/bin/env bash
# A probe as a user sees it: process start to the answer, `faultline probe` beside the
# tool one would otherwise script (curl for HTTP, bash's /dev/tcp for a TCP connect,
# redis-cli for PING when it is installed). nginx on loopback answers; alternating rounds,
# medians and p90 in ms.
#
#   cargo build --release -p faultline-controller
#   bash xtask/scripts/bench-probe.sh [ROUNDS] [FAULTLINE_BINARY]
set -euo pipefail
ROUNDS=${1:-200}
FL=${2:-target/release/faultline}
DIR=$(mktemp -d)
trap 'kill $(cat "$DIR/nginx.pid" 2>/dev/null) 2>/dev/null; rm -rf "$DIR"' EXIT
cat >"$DIR/nginx.conf" <<CONF
daemon on; worker_processes 1; pid $DIR/nginx.pid; error_log $DIR/error.log;
events { worker_connections 256; }
http { access_log off; client_body_temp_path $DIR; proxy_temp_path $DIR; fastcgi_temp_path $DIR; uwsgi_temp_path $DIR; scgi_temp_path $DIR;
  server { listen 127.0.0.1:18480; location / { return 200 "ok\n"; } } }
CONF
nginx -c "$DIR/nginx.conf" -e "$DIR/error.log"
sleep 0.3
now() { echo "${EPOCHREALTIME/./}"; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1000 }'; }
declare -A T
rec() { T[$1]+="$2 "; }
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
p90() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int(NR*0.9+0.5)]}'; }
URL=http://127.0.0.1:18480/
for r in $(seq "$ROUNDS"); do
    t=$(now); "$FL" probe http url=$URL match=ok >/dev/null; u=$(now); rec fl_http "$(ms $t $u)"
    t=$(now); curl -sf -o /dev/null $URL; u=$(now); rec curl_http "$(ms $t $u)"
    t=$(now); "$FL" probe tcp address=127.0.0.1:18480 >/dev/null; u=$(now); rec fl_tcp "$(ms $t $u)"
    t=$(now); bash -c 'exec 3<>/dev/tcp/127.0.0.1/18480' ; u=$(now); rec bash_tcp "$(ms $t $u)"
    t=$(now); "$FL" probe command run=true >/dev/null; u=$(now); rec fl_cmd "$(ms $t $u)"
    t=$(now); /bin/true; u=$(now); rec true "$(ms $t $u)"
done
printf '%-10s %8s %8s\n' what median p90
for k in fl_http curl_http fl_tcp bash_tcp fl_cmd true; do
    printf '%-10s %8s %8s\n' "$k" "$(median "${T[$k]}")" "$(p90 "${T[$k]}")"
done
