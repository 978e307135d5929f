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
. build/prometheus-auth/fleet.env  # the stack's Prometheus's password (scripts/prometheus-secrets.sh)
.venv/bin/fleet deploy --stack "$stack" --timeout 5m
echo
echo "prediction through the gateway, for two held-out tumours (8 measurements each; README, \"The demo's model\"):"
curl -fsS -X POST "http://127.0.0.1:$gw/predict" -H 'content-type: application/json' \
  -d '{"inputs": [[11.94, 18.24, 75.71, 437.6, 0.0826, 0.0475, 0.0197, 0.0135],
                  [20.92, 25.09, 143.0, 1347.0, 0.1099, 0.2236, 0.3174, 0.1474]]}'
echo
prom=${FLEET_PROMETHEUS_PORT:-9090}
cat <<EOT

stack $stack is up: gateway http://127.0.0.1:$gw, Consul https://127.0.0.1:$cport, Prometheus http://127.0.0.1:$prom
(user fleet). From this checkout, in any shell, these work as printed (fleet finds the stack's Consul CA,
its token and the Prometheus password in build/ when nothing is set; . build/consul/fleet.env sets them):

  curl -fsS -X POST http://127.0.0.1:$gw/predict -H 'content-type: application/json' -d '{"inputs": [[11.94, 18.24, 75.71, 437.6, 0.0826, 0.0475, 0.0197, 0.0135]]}'
  .venv/bin/fleet status --stack $stack
  docker stack ps $stack
  docker tag fleet/inference:2 fleet/inference:2-demo && .venv/bin/fleet rollout --canary --image fleet/inference:2-demo --stack $stack --steps 50 --step-duration 10s
  .venv/bin/fleet history --stack $stack
  curl -fsS --cacert build/consul/secrets/ca.pem -H "X-Consul-Token: \$(cat build/consul/secrets/fleet.token)" https://127.0.0.1:$cport/v1/health/service/$stack-inference
  curl -fsS --cacert build/prometheus-auth/ca.pem -u "fleet:\$(cat build/prometheus-auth/password)" 'https://127.0.0.1:$prom/api/v1/query?query=up'
  docker stack rm $stack
EOT
