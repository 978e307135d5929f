#!/usr/bin/env bash
# Deploy the stack with `fleet deploy` (name FLEET_STACK, default fleet; it waits until the stack is
# healthy), send one prediction through the gateway and print where everything listens.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
stack=${FLEET_STACK:-fleet}
gw=${FLEET_GATEWAY_PORT:-8080}
cport=${FLEET_CONSUL_PORT:-8501}
. build/consul/fleet.env  # HTTPS with the stack's CA, fleet's own token (scripts/consul-secrets.sh)
.venv/bin/fleet deploy --stack "$stack" --timeout 5m
echo
echo "prediction through the gateway:"
curl -fsS -X POST "http://127.0.0.1:$gw/predict" -H 'content-type: application/json' \
  -d '{"inputs": [[0.5, -1.2, 0.3, 2.0, -0.7, 0.1, 1.5, -0.4]]}'
echo
cat <<EOT

stack $stack is up:
  gateway      http://127.0.0.1:$gw/predict   (POST {"inputs": [[8 numbers], ...]})
  consul       https://127.0.0.1:$cport (HTTPS, ACLs: . build/consul/fleet.env for fleet's token and the CA)
  tasks        docker stack ps $stack
  instances    curl -s --cacert build/consul/secrets/ca.pem https://127.0.0.1:$cport/v1/health/service/inference
  remove       docker stack rm $stack
EOT
