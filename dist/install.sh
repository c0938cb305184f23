#!/bin/sh
# Installs faultline on one host: binaries, systemd units, configuration, certificates.
# The same script serves `cargo xtask install`, the Vagrant VMs and the systemd VM test.
#
#   install.sh --role agent --bin DIR --tls DIR --controller https://10.0.0.1:7080 \
#              --listen 0.0.0.0:7070 --advertise https://10.0.0.5:7070 --name db1 --label role=db
#   install.sh --role controller --bin DIR --tls DIR [--listen 0.0.0.0:7080]
#
# --bin: where faultline-agent and faultline are (target/release). --tls: a directory made
# by `faultline certs init` (ca.pem and the role's pair are copied; never ca-key.pem). An
# agent with --name NAME gets agent-NAME.pem when the directory has it (`faultline certs
# issue agent NAME --dir DIR`): a controller lets an agent register only under the name
# its certificate carries.
# --root DIR installs into DIR instead of / (packaging, tests) and starts nothing.
# Existing configuration files are kept unless --force. Safe to run again.
set -eu

role= bin= tls= root= controller= listen= advertise= name= labels= force= start=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --role) role=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --tls) tls=$2; shift 2 ;;
        --root) root=$2; start=no; shift 2 ;;
        --controller) controller=$2; shift 2 ;;
        --listen) listen=$2; shift 2 ;;
        --advertise) advertise=$2; shift 2 ;;
        --name) name=$2; shift 2 ;;
        --label) labels="$labels --label $2"; shift 2 ;;
        --force) force=yes; shift ;;
        --no-start) start=no; shift ;;
        *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$role" in
    agent|controller) ;;
    *) echo "install.sh: --role agent or --role controller" >&2; exit 2 ;;
esac
[ -n "$bin" ] || { echo "install.sh: --bin DIR (where faultline-agent and faultline are)" >&2; exit 2; }
[ -n "$tls" ] || { echo "install.sh: --tls DIR (made by: faultline certs init DIR)" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)

# Binaries: both on every host (the CLI is useful everywhere).
install -d "$root/usr/local/bin" "$root/etc/systemd/system" "$root/etc/faultline/tls" "$root/usr/local/share/doc/faultline"
for b in faultline-agent faultline; do
    [ -x "$bin/$b" ] || { echo "install.sh: $bin/$b missing (cargo build --release)" >&2; exit 1; }
    install -m 0755 "$bin/$b" "$root/usr/local/bin/$b"
done
install -m 0644 "$here/systemd/faultline-$role.service" "$root/etc/systemd/system/"
[ -f "$here/../README.md" ] && install -m 0644 "$here/../README.md" "$root/usr/local/share/doc/faultline/README.md"

# Certificates: the CA, this role's pair, and the CLI's pair for `faultline` on this host.
chmod 0755 "$root/etc/faultline"
chmod 0700 "$root/etc/faultline/tls"
install -m 0644 "$tls/ca.pem" "$root/etc/faultline/tls/ca.pem"
for who in "$role" cli; do
    from=$who
    if [ "$who" = agent ] && [ -n "$name" ] && [ -f "$tls/agent-$name.pem" ]; then
        from=agent-$name
    elif [ "$who" = agent ] && [ -n "$controller" ]; then
        echo "install.sh: warning: $tls/agent-$name.pem missing; agent.pem names no agent, so the controller will refuse to register it (faultline certs issue agent ${name:-NAME} --dir $tls)" >&2
    fi
    install -m 0644 "$tls/$from.pem" "$root/etc/faultline/tls/$who.pem"
    install -m 0600 "$tls/$from-key.pem" "$root/etc/faultline/tls/$who-key.pem"
done

write() { # write FILE CONTENT: keeps an existing file unless --force
    if [ -e "$1" ] && [ -z "$force" ]; then
        echo "install.sh: keeping $1 (--force replaces it)"
    else
        printf '%s\n' "$2" > "$1"
    fi
}
if [ "$role" = agent ]; then
    args="--listen ${listen:-127.0.0.1:7070}"
    [ -n "$controller" ] && args="$args --controller $controller"
    [ -n "$advertise" ] && args="$args --advertise $advertise"
    [ -n "$name" ] && args="$args --name $name"
    args="$args$labels"
    write "$root/etc/faultline/agent.env" "# faultline-agent's flags (see faultline-agent --help)
FAULTLINE_AGENT_ARGS=\"$args\""
else
    write "$root/etc/faultline/controller.toml" "# faultline controller (see README: Many agents through a controller)
listen = \"${listen:-0.0.0.0:7080}\"
state = \"/var/lib/faultline-controller/controller.db\"
heartbeat_ms = 1000"
fi

if [ "$start" = yes ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable "faultline-$role.service"
    systemctl restart "faultline-$role.service"
    echo "install.sh: faultline-$role started"
else
    echo "install.sh: installed into ${root:-/}; start with: systemctl enable --now faultline-$role"
fi
