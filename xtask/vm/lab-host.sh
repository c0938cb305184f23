#!/bin/bash
# faultline-lab-host.service: makes this VM host N of `faultline lab up --vm`. Everything
# that differs between hosts comes from the seed disk (/dev/vdb, a tar the lab writes):
# host.env (HOST, INDEX, HOSTS, CONTROLLER) and tls/ (the lab's certificates).
set -eu
seed=/run/faultline-seed
mkdir -p "$seed"
tar -xf /dev/vdb -C "$seed"
. "$seed/host.env"
install -d -m 0700 /etc/faultline/tls
install -m 0644 "$seed/tls/ca.pem" "$seed/tls/agent.pem" "$seed/tls/cli.pem" /etc/faultline/tls/
install -m 0600 "$seed/tls/agent-key.pem" "$seed/tls/cli-key.pem" /etc/faultline/tls/

net=10.77.0
ip=$net.$((10 + INDEX))
hostname "$HOST"
ip link set lo up
ip addr add "$ip/24" dev eth0
ip link set eth0 up
echo "lab-host: $HOST at $ip"

if [ "$INDEX" = 1 ]; then
    labels="--label role=web"
    upstream=""
    for i in $(seq 2 "$HOSTS"); do upstream="$upstream server $net.$((10 + i)):8080 max_fails=1 fail_timeout=2s;"; done
    # The same balancer as the namespace lab's (controller/src/lab.rs).
    cat > /etc/nginx/sites-enabled/default <<CONF
upstream backends {$upstream keepalive 32; }
server {
    listen $ip:80;
    location / {
        proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection "";
        proxy_connect_timeout 200ms; proxy_read_timeout 500ms; proxy_next_upstream error timeout;
        add_header X-Backend \$upstream_addr;
    }
}
CONF
    systemctl --no-block start nginx.service
else
    zone=$([ $((INDEX % 2)) = 0 ] && echo a || echo b)
    redis=$([ "$INDEX" = 2 ] && echo primary || echo replica)
    labels="--label role=backend --label zone=$zone --label redis=$redis"
    mkdir -p /var/www/faultline
    { echo "$HOST"; head -c $((2044 - ${#HOST})) /dev/zero | tr '\0' x; echo; } > /var/www/faultline/index.html
    printf 'server { listen %s:8080; root /var/www/faultline; }\n' "$ip" > /etc/nginx/sites-enabled/default
    {
        echo "bind $ip 127.0.0.1"
        echo "protected-mode no"
        echo 'save ""'
        [ "$INDEX" -gt 2 ] && echo "replicaof $net.12 6379"
    } >> /etc/redis/redis.conf
    systemctl --no-block start nginx.service redis-server.service
fi
echo "FAULTLINE_AGENT_ARGS=\"--listen $ip:7070 --controller $CONTROLLER --name $HOST $labels\"" > /etc/faultline/agent.env
