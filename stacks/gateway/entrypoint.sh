#!/bin/bash
# The gateway's supervisor. HAProxy asks a local dnsmasq (127.0.0.1:5353) for Consul's SRV records, and
# dnsmasq forwards them to Consul's DNS port at the address the name `consul` has *now*: this loop
# re-reads it every second and points dnsmasq at a new address when the consul task moved (HAProxy
# reads its nameserver's address only once, at start, so it is never given Consul's address itself).
# While Consul is away HAProxy keeps its last known-good servers (see `hold` in haproxy.cfg).
# `fleet-gateway check` is the container's health check, and it means alive: HAProxy answers its monitor,
# whether 200 (a usable server) or 503 (none yet: the replicas may still be pulling their image or loading
# their model on a cold start; Swarm must not kill a gateway for waiting on them). Ready is the monitor's 200.
set -u
: "${CONSUL_DNS_HOST:=consul}" "${CONSUL_DNS_PORT:=8600}" "${FLEET_SERVICE:=inference}" "${GATEWAY_PORT:=8080}"
: "${FLEET_ADMIN_PORT:=8001}"  # the replicas' probe server, which the health checks ask
: "${GATEWAY_OPS_PORT:=8081}"  # fleet's port: every path, and its per-role routes
export CONSUL_DNS_HOST CONSUL_DNS_PORT FLEET_SERVICE GATEWAY_PORT FLEET_ADMIN_PORT GATEWAY_OPS_PORT
if [ "${1:-}" = "check" ]; then
  exec 3<>/dev/tcp/127.0.0.1/8404 && printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3 && head -c 12 <&3 | grep -Eq " (200|503)"
  exit
fi
run=${FLEET_GATEWAY_RUN:-/tmp/fleet-gateway}
mkdir -p "$run"
servers=$run/dns-servers
consul_addr() { getent hosts "$CONSUL_DNS_HOST" | awk '{print $1; exit}'; }

i=0
until addr=$(consul_addr) && [ -n "$addr" ]; do
  i=$((i + 1)); [ "$i" -le 240 ] || { echo "gateway: $CONSUL_DNS_HOST does not resolve" >&2; exit 1; }
  sleep 0.5
done
echo "server=/consul/$addr#$CONSUL_DNS_PORT" >"$servers"
dnsmasq --keep-in-foreground --port=5353 --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts \
  --no-poll --cache-size=0 --edns-packet-max=8192 --servers-file="$servers" --pid-file= --user= &
dns=$!
echo "gateway: Consul DNS at $addr:$CONSUL_DNS_PORT (through dnsmasq), service $FLEET_SERVICE, port $GATEWAY_PORT, ops port $GATEWAY_OPS_PORT" >&2
haproxy -W -db -f /etc/fleet/haproxy.cfg &
proxy=$!
trap 'kill -USR1 "$proxy" 2>/dev/null' TERM INT   # soft stop: finish what is in flight
while kill -0 "$proxy" 2>/dev/null; do
  if ! kill -0 "$dns" 2>/dev/null; then
    echo "gateway: dnsmasq exited; exiting so that Swarm restarts the gateway" >&2
    kill -USR1 "$proxy"; break
  fi
  new=$(consul_addr)
  if [ -n "$new" ] && [ "$new" != "$addr" ]; then
    echo "server=/consul/$new#$CONSUL_DNS_PORT" >"$servers" && kill -HUP "$dns"
    echo "gateway: Consul DNS moved from $addr to $new" >&2
    addr=$new
  fi
  sleep 1 & wait $!
done
wait "$proxy"
