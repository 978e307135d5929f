#!/bin/bash
# Write the scrape configuration for this stack (FLEET_STACK, which the stack file fills in from
# Swarm's template {{index .Service.Labels "com.docker.stack.namespace"}}) and run Prometheus.
# `fleet-prometheus check` is the container's health check: Prometheus answers /-/ready (with the user
# fleet's password where the web configuration asks for one).
# With the Swarm secret prometheus_web (a web configuration: TLS with the secrets prometheus_tls and
# prometheus_tls_key, and basic auth), Prometheus answers nobody without credentials, queries and remote
# writes alike, over HTTPS only; prometheus_password is fleet's password, for the check.
set -eu
web=/run/secrets/prometheus_web
if [ "${1:-}" = "check" ]; then
  auth=""
  [ -s /run/secrets/prometheus_password ] &&
    auth="Authorization: Basic $(printf 'fleet:%s' "$(cat /run/secrets/prometheus_password)" | base64 -w0)"
  request() { printf 'GET /-/ready HTTP/1.0\r\n%s\r\n\r\n' "$auth"; }
  if [ -s "$web" ] && grep -q '^tls_server_config:' "$web"; then  # its own certificate: nothing to verify
    request | timeout 4 openssl s_client -quiet -connect 127.0.0.1:9090 2>/dev/null |
      head -c 12 | grep -q " 200"
  else
    exec 3<>/dev/tcp/127.0.0.1/9090 && request >&3 && head -c 12 <&3 | grep -q " 200"
  fi
  exit
fi
config=()
[ -s "$web" ] && config=(--web.config.file="$web")
: "${FLEET_STACK:?set FLEET_STACK to the stack name}" "${FLEET_SCRAPE_INTERVAL:=1s}" "${FLEET_RETENTION:=1d}"
sed -e "s/@STACK@/$FLEET_STACK/g" -e "s/@INTERVAL@/$FLEET_SCRAPE_INTERVAL/g" /etc/fleet/prometheus.yml.in \
  >/etc/fleet/prometheus.yml
# The remote-write receiver takes fleet's own series (its rollouts' phase, share, verdict and outcomes:
# fleet/adapters/remote_write.py), so alerting on this Prometheus can page on a rollback.
exec prometheus --config.file=/etc/fleet/prometheus.yml --storage.tsdb.path=/prometheus \
  --storage.tsdb.retention.time="$FLEET_RETENTION" --web.listen-address=:9090 --web.enable-remote-write-receiver "${config[@]}" "$@"
