#!/usr/bin/env bash
# The stack's Prometheus credentials, made once and kept in build/prometheus-auth (FLEET_PROMETHEUS_SECRETS, as
# docker-stack.yml reads it, names another directory; idempotent): a random password for the user `fleet`
# (`password`), a TLS certificate for Prometheus (`tls.pem`, `tls-key.pem`) signed by a CA of its own
# (`ca.pem`) whose key is thrown away once it signed (that CA can vouch for nothing else: fleet trusts it as
# the certificate's pin), and Prometheus's web configuration (`web.yml`, --web.config.file): TLS, and the
# password's bcrypt hash, so that every query and every remote write must carry it, encrypted: nobody else can
# read the canary's evidence, write series beside it, or read the password on the way.
# `docker stack deploy` hands them to the Prometheus container as Swarm secrets;
# build/prometheus-auth/fleet.env points fleet (and the tests) at the password and the CA:
#   . build/prometheus-auth/fleet.env && .venv/bin/fleet rollout ...
# The hash is made with the bcrypt package in .venv. Its cost is low (6) on purpose: Prometheus checks it on
# every request fleet makes (several a second during a rollout), and a random 32-character password is
# not one a cost factor protects.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${FLEET_PROMETHEUS_SECRETS:-$root/build/prometheus-auth}
mkdir -p "$dir"
[ -s "$dir/password" ] || (umask 077 && head -c 64 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9' | head -c 32 >"$dir/password")
if [ ! -s "$dir/tls-key.pem" ]; then
  echo "[prometheus] a CA and a TLS certificate for the stack's Prometheus" >&2
  command -v openssl >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; }
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && umask 077 &&
   openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=fleet prometheus CA $(date +%s)" \
     -keyout ca-key.pem -out ca.pem 2>/dev/null &&
   openssl req -newkey rsa:2048 -nodes -subj /CN=prometheus -keyout tls-key.pem -out tls.csr 2>/dev/null &&
   printf 'subjectAltName=DNS:prometheus,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >ext.cnf &&
   openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 -extfile ext.cnf \
     -out tls.pem 2>/dev/null)
  cp "$tmp/ca.pem" "$tmp/tls.pem" "$dir/" && chmod 0644 "$dir/ca.pem" "$dir/tls.pem"
  (umask 077 && cp "$tmp/tls-key.pem" "$dir/tls-key.pem.new") && mv "$dir/tls-key.pem.new" "$dir/tls-key.pem"
fi
if [ ! -s "$dir/web.yml" ] || [ "$dir/password" -nt "$dir/web.yml" ] || ! grep -q tls_server_config "$dir/web.yml"; then
  echo "[prometheus] credentials for the stack's Prometheus (user fleet)" >&2
  (umask 077 && "$root/.venv/bin/python" - "$dir/password" >"$dir/web.yml.new" <<'PY'
import sys

import bcrypt

password = open(sys.argv[1], "rb").read().strip()
print("# the stack's Prometheus: TLS, and basic auth on every endpoint (scripts/prometheus-secrets.sh)")
print("tls_server_config:")
print("  cert_file: /run/secrets/prometheus_tls")
print("  key_file: /run/secrets/prometheus_tls_key")
print("basic_auth_users:")
print(f"  fleet: {bcrypt.hashpw(password, bcrypt.gensalt(rounds=6)).decode()}")
PY
  ) && mv "$dir/web.yml.new" "$dir/web.yml"
fi
cat >"$dir/fleet.env" <<ENV
# fleet (and curl -u ... --cacert) against the stack's Prometheus: HTTPS with its CA, user fleet, the password in a file.
export FLEET_PROMETHEUS_USER=fleet
export FLEET_PROMETHEUS_PASSWORD_FILE=$dir/password
export FLEET_PROMETHEUS_CACERT=$dir/ca.pem
ENV
