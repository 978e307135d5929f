#!/bin/sh
# Wait until Consul's DNS name resolves (HAProxy reads its nameserver's address once, at start), then
# run HAProxy in the foreground. `fleet-gateway check` is the container's health check.
set -eu
: "${CONSUL_DNS_HOST:=consul}" "${CONSUL_DNS_PORT:=8600}" "${FLEET_SERVICE:=inference}" "${GATEWAY_PORT:=8080}"
export CONSUL_DNS_HOST CONSUL_DNS_PORT FLEET_SERVICE GATEWAY_PORT
if [ "${1:-}" = "check" ]; then
  exec bash -c 'exec 3<>/dev/tcp/127.0.0.1/8404 && printf "GET /healthz HTTP/1.0\r\n\r\n" >&3 && head -c 12 <&3 | grep -q " 200"'
fi
i=0
until getent hosts "$CONSUL_DNS_HOST" >/dev/null; do
  i=$((i + 1)); [ "$i" -le 240 ] || { echo "gateway: $CONSUL_DNS_HOST does not resolve" >&2; exit 1; }
  sleep 0.5
done
CONSUL_DNS_ADDR=$(getent hosts "$CONSUL_DNS_HOST" | awk '{print $1; exit}')
export CONSUL_DNS_ADDR
echo "gateway: Consul DNS at $CONSUL_DNS_ADDR:$CONSUL_DNS_PORT, service $FLEET_SERVICE, port $GATEWAY_PORT" >&2
exec haproxy -W -db -f /etc/fleet/haproxy.cfg
