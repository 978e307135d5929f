#!/usr/bin/env bash
# The stack's Consul credentials, made once and kept in build/consul/secrets (FLEET_CONSUL_SECRETS, as
# docker-stack.yml reads it, names another directory; idempotent): a CA and a
# server certificate for HTTPS (valid for `consul`, localhost and 127.0.0.1), the gossip key, the management token and
# the secret IDs of the least-privilege tokens the stack's Consul creates (stacks/consul/entrypoint.sh).
# `docker stack deploy` hands them to the containers as Swarm secrets. build/consul/fleet.env holds the
# variables an operator (and the tests) use to reach that Consul as fleet:
#   . build/consul/fleet.env && .venv/bin/fleet status
# The consul binary comes from the stack's own Consul image, so this works where a registry answers too.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${FLEET_CONSUL_SECRETS:-$root/build/consul/secrets}
image=${FLEET_CONSUL_IMAGE:-fleet/consul:1.8.7}
mkdir -p "$dir"
for name in master agent dns fleet replica; do
  [ -s "$dir/$name.token" ] || (umask 077 && cat /proc/sys/kernel/random/uuid >"$dir/$name.token")
done
# the gossip encryption key every agent of the stack shares (as `consul keygen` makes one: 32 random bytes)
[ -s "$dir/gossip.key" ] || (umask 077 && head -c 32 /dev/urandom | base64 >"$dir/gossip.key")
if [ ! -s "$dir/server-key.pem" ]; then
  echo "[consul] a CA and a server certificate for HTTPS" >&2
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  consul=(docker run --rm --user "$(id -u):$(id -g)" -v "$tmp:/out" -w /out --entrypoint consul "$image")
  "${consul[@]}" tls ca create -days 3650 >/dev/null
  "${consul[@]}" tls cert create -server -days 3650 -additional-dnsname consul -additional-ipaddress 127.0.0.1 >/dev/null
  cp "$tmp/consul-agent-ca.pem" "$dir/ca.pem"
  cp "$tmp/dc1-server-consul-0.pem" "$dir/server.pem"
  (umask 077 && cp "$tmp/dc1-server-consul-0-key.pem" "$dir/server-key.pem")
fi
cat >"$(dirname "$dir")/fleet.env" <<ENV
# fleet (and the consul CLI) against the stack's Consul published on this host: HTTPS, fleet's token.
export CONSUL_HTTP_ADDR=https://127.0.0.1:\${FLEET_CONSUL_PORT:-8501}
export CONSUL_CACERT=$dir/ca.pem
export CONSUL_HTTP_TOKEN_FILE=$dir/fleet.token
ENV
