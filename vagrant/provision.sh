#!/bin/sh
# Provisions one Vagrant VM: the system under test for its role, then faultline through
# dist/install.sh (the same install path as `cargo xtask install`).
#   provision.sh NAME IP NET LABELS     e.g. provision.sh h2 192.168.56.12 192.168.56 role=backend,zone=a
set -eu
name=$1 ip=$2 net=$3 labels=${4:-}
src=/tmp/faultline
export DEBIAN_FRONTEND=noninteractive

case "$name" in
h1)
    apt-get install -y -q nginx
    cat > /etc/nginx/sites-enabled/default <<CONF
upstream backends { server $net.12:8080 max_fails=1 fail_timeout=2s; server $net.13:8080 max_fails=1 fail_timeout=2s; keepalive 32; }
server {
    listen 80;
    location / {
        proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection "";
        proxy_connect_timeout 200ms; proxy_read_timeout 500ms; proxy_next_upstream error timeout;
        add_header X-Backend \$upstream_addr;
    }
}
CONF
    systemctl restart nginx
    ;;
h2|h3)
    apt-get install -y -q nginx redis-server
    mkdir -p /var/www/faultline
    { echo "$name"; head -c 2044 /dev/zero | tr '\0' x; echo; } > /var/www/faultline/index.html
    printf 'server { listen 8080; root /var/www/faultline; }\n' > /etc/nginx/sites-enabled/default
    sed -i "s/^bind .*/bind $ip 127.0.0.1/; s/^protected-mode yes/protected-mode no/" /etc/redis/redis.conf
    if [ "$name" = h3 ]; then
        grep -q "^replicaof" /etc/redis/redis.conf || echo "replicaof $net.12 6379" >> /etc/redis/redis.conf
    fi
    systemctl restart nginx redis-server
    ;;
esac

if [ "$name" = ctl ]; then
    sh $src/dist/install.sh --role controller --bin $src/bin --tls $src/tls --listen "$ip:7080"
else
    set -- --role agent --bin $src/bin --tls $src/tls --controller "https://$net.10:7080" \
        --listen "$ip:7070" --name "$name"
    for l in $(echo "$labels" | tr ',' ' '); do set -- "$@" --label "$l"; done
    sh $src/dist/install.sh "$@"
fi
