#!/bin/bash
# The Compose platform's faultline services. `controller`: on first start, a CA and the
# certificates (controller, CLI, viewer in /tls; the agent's, bound to its name, in
# /agent-tls) and an operator token (/tls/web-tokens), then the controller. `agent`:
# waits for its certificates, then the agent, registered with the controller and scoped to
# the containers labelled FAULTLINE_SCOPE_LABEL.
set -euo pipefail
AGENT_NAME=${FAULTLINE_AGENT_NAME:-faultline-agent}
case "${1:-controller}" in
controller)
    # Each step on its own, so a start interrupted half-way finishes on the next one.
    [ -f /tls/ca.pem ] || faultline certs init /tls --web-host localhost --web-host faultline-controller
    [ -f "/tls/agent-$AGENT_NAME.pem" ] || faultline certs issue --dir /tls agent "$AGENT_NAME"
    if [ ! -f /agent-tls/agent-key.pem ]; then
        # The key last: the agent starts once it is there, and the rest is then too.
        cp /tls/ca.pem /agent-tls/ca.pem
        cp "/tls/agent-$AGENT_NAME.pem" /agent-tls/agent.pem
        (umask 077 && cp "/tls/agent-$AGENT_NAME-key.pem" /agent-tls/.agent-key.pem)
        mv /agent-tls/.agent-key.pem /agent-tls/agent-key.pem
    fi
    if [ ! -f /tls/web-tokens ]; then
        (umask 077 && printf 'operator %s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" > /tls/.web-tokens)
        mv /tls/.web-tokens /tls/web-tokens
    fi
    args=(--tls-dir /tls controller serve --listen 0.0.0.0:7080 --state /var/lib/faultline/controller.db
        --metrics-listen 0.0.0.0:9464 --web-listen 0.0.0.0:5050 --web-token-file /tls/web-tokens)
    # The Web API is published on the host's loopback only (docker-compose.yml), in plain
    # HTTP; requests without a token read (FAULTLINE_WEB_ANONYMOUS=viewer; none: not even
    # that); acting takes the operator token above.
    args+=(--web-plaintext)
    anonymous=${FAULTLINE_WEB_ANONYMOUS:-viewer}
    [ "$anonymous" != none ] && args+=(--web-anonymous "$anonymous")
    exec faultline "${args[@]}"
    ;;
agent)
    for _ in $(seq 600); do [ -f /agent-tls/agent-key.pem ] && break; sleep 0.1; done
    # Scoped to the platform's containers (FAULTLINE_SCOPE_LABEL, KEY=VALUE; `none` for the
    # whole host): it shares the host's PID namespace and Docker's socket, and would
    # otherwise reach every process and container of the machine.
    scope=()
    [ "${FAULTLINE_SCOPE_LABEL:-none}" != none ] && scope=(--scope-label "$FAULTLINE_SCOPE_LABEL")
    exec faultline-agent --tls-dir /agent-tls --listen 0.0.0.0:7070 --name "$AGENT_NAME" \
        --advertise "https://$AGENT_NAME:7070" --controller https://faultline-controller:7080 \
        --metrics-listen 0.0.0.0:9465 --state-dir /var/lib/faultline --label compose=true "${scope[@]}"
    ;;
*)
    exec "$@"
    ;;
esac
