#!/usr/bin/env bash
# The stack's Prometheus credentials, made once and kept in build/prometheus-auth (FLEET_PROMETHEUS_SECRETS, as
# docker-stack.yml reads it, names another directory; idempotent): a random password for the user `fleet`
# (`password`) and Prometheus's web configuration with its bcrypt hash (`web.yml`, --web.config.file), so
# that every query and every remote write must carry them: nobody else can read the canary's evidence or
# write series beside it. `docker stack deploy` hands both to the Prometheus container as Swarm secrets;
# build/prometheus-auth/fleet.env points fleet (and the tests) at the password:
#   . build/prometheus-auth/fleet.env && .venv/bin/fleet rollout ...
# The hash is made with the bcrypt package in .venv. Its cost is low (6) on purpose: Prometheus checks it on
# every request fleet makes (several a second during a rollout), and a random 32-character password is
# not one a cost factor protects.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${FLEET_PROMETHEUS_SECRETS:-$root/build/prometheus-auth}
mkdir -p "$dir"
[ -s "$dir/password" ] || (umask 077 && head -c 64 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9' | head -c 32 >"$dir/password")
if [ ! -s "$dir/web.yml" ] || [ "$dir/password" -nt "$dir/web.yml" ]; then
  echo "[prometheus] credentials for the stack's Prometheus (user fleet)" >&2
  (umask 077 && "$root/.venv/bin/python" - "$dir/password" >"$dir/web.yml.new" <<'PY'
import sys

import bcrypt

password = open(sys.argv[1], "rb").read().strip()
print("# the stack's Prometheus: basic auth on every endpoint (scripts/prometheus-secrets.sh)")
print("basic_auth_users:")
print(f"  fleet: {bcrypt.hashpw(password, bcrypt.gensalt(rounds=6)).decode()}")
PY
  ) && mv "$dir/web.yml.new" "$dir/web.yml"
fi
cat >"$dir/fleet.env" <<ENV
# fleet (and curl -u) against the stack's Prometheus: user fleet, the password in a file.
export FLEET_PROMETHEUS_USER=fleet
export FLEET_PROMETHEUS_PASSWORD_FILE=$dir/password
ENV
