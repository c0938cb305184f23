#!/bin/bash
# faultline-lab-host.service: makes this VM one host of `faultline lab up --vm`. What
# differs between hosts comes from the seed disk (/dev/vdb, a tar the lab writes; the
# system under test is defined once, in controller/src/lab.rs): host.env (HOST, IP,
# CONTROLLER, LABELS), tls/ (the lab's certificates), site.conf (nginx: the balancer or a
# backend), and on backends index.html and redis.conf (settings appended to Debian's).
set -eu
seed=/run/faultline-seed
mkdir -p "$seed"
tar -xf /dev/vdb -C "$seed"
. "$seed/host.env"
install -d -m 0700 /etc/faultline/tls
install -m 0644 "$seed/tls/ca.pem" "$seed/tls/agent.pem" "$seed/tls/cli.pem" /etc/faultline/tls/
install -m 0600 "$seed/tls/agent-key.pem" "$seed/tls/cli-key.pem" /etc/faultline/tls/

hostname "$HOST"
ip link set lo up
ip addr add "$IP/24" dev eth0
ip link set eth0 up
echo "lab-host: $HOST at $IP"

cp "$seed/site.conf" /etc/nginx/sites-enabled/default
services=nginx.service
if [ -f "$seed/redis.conf" ]; then
    install -D -m 0644 "$seed/index.html" /var/www/faultline/index.html
    cat "$seed/redis.conf" >> /etc/redis/redis.conf
    services="$services redis-server.service"
fi
# shellcheck disable=SC2086
systemctl --no-block start $services
echo "FAULTLINE_AGENT_ARGS=\"--listen $IP:7070 --controller $CONTROLLER --name $HOST $LABELS\"" > /etc/faultline/agent.env
