#!/bin/bash
# The gateway's supervisor. HAProxy asks a local dnsmasq (127.0.0.1:5353) for Consul's SRV records, and
# dnsmasq forwards them to Consul's DNS port on the agents CONSUL_DNS_HOST names (the stack's servers and
# client agents), its own node's agent first (--strict-order): fleet-agents (agents.py) keeps that list
# true every second and sends dnsmasq SIGHUP when it changes (HAProxy reads its nameserver's address only
# once, at start, so it is never given Consul's address itself). While Consul is away HAProxy keeps its
# last known-good servers (see `hold` in haproxy.cfg).
set -u
: "${CONSUL_DNS_HOST:=consul}" "${CONSUL_DNS_PORT:=8600}" "${FLEET_NODE:=}" "${FLEET_SERVICE:=inference}" "${GATEWAY_PORT:=8080}"
: "${FLEET_ADMIN_PORT:=8001}"  # the replicas' probe server, which the health checks ask
: "${GATEWAY_OPS_PORT:=8081}"  # fleet's port: every path, and its per-role routes
export CONSUL_DNS_HOST CONSUL_DNS_PORT FLEET_NODE FLEET_SERVICE GATEWAY_PORT FLEET_ADMIN_PORT GATEWAY_OPS_PORT
if [ "${1:-}" = "check" ]; then
  exec 3<>/dev/tcp/127.0.0.1/8404 && printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3 && head -c 12 <&3 | grep -Eq " (200|503)"
  exit
fi
run=${FLEET_GATEWAY_RUN:-/tmp/fleet-gateway}
mkdir -p "$run"
servers=$run/dns-servers
fleet-agents "$servers" || { echo "gateway: no Consul agent found ($CONSUL_DNS_HOST)" >&2; exit 1; }
dnsmasq --keep-in-foreground --port=5353 --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts \
  --no-poll --strict-order --cache-size=0 --edns-packet-max=8192 --servers-file="$servers" --pid-file= --user= &
dns=$!
fleet-agents "$servers" "$dns" &
agents=$!
echo "gateway: service $FLEET_SERVICE, port $GATEWAY_PORT, ops port $GATEWAY_OPS_PORT" >&2
haproxy -W -db -f /etc/fleet/haproxy.cfg &
proxy=$!
trap 'kill -USR1 "$proxy" 2>/dev/null' TERM INT   # soft stop: finish what is in flight
# A helper gone: soft stop, then at most 10 s for what is in flight, then a hard stop, and exit 1 for Swarm to
# start a new gateway. Not `wait` alone: a SIGUSR1 that reaches HAProxy while it starts is lost (seen on a busy
# node: the gateway lived on without dnsmasq, answering 503 "No server is available" for good).
restart() {
  echo "gateway: $1 exited; exiting so that Swarm restarts the gateway" >&2
  kill -USR1 "$proxy" 2>/dev/null
  for _ in $(seq 1 10); do kill -0 "$proxy" 2>/dev/null || exit 1; sleep 1; done
  echo "gateway: HAProxy still runs 10 s after its soft stop; stopping it" >&2
  kill -KILL "$proxy" 2>/dev/null
  exit 1
}
while kill -0 "$proxy" 2>/dev/null; do
  kill -0 "$dns" 2>/dev/null || restart dnsmasq
  kill -0 "$agents" 2>/dev/null || restart fleet-agents
  sleep 1 & wait $!
done
wait "$proxy"
