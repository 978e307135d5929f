#!/usr/bin/env bash
# Build fleet's images: fleet/inference:base (no model), :1 and :2 (model versions), fleet/gateway:1, fleet/consul:1.8.7,
# fleet/prometheus:2.42.
# Where a registry answers, the official bases are used (python:3.11-slim, haproxy:2.6); otherwise the
# local Debian base from scripts/base-image.sh, with Python wheels downloaded on the host.
# Docker's layer cache makes a second run take seconds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-.venv/bin/python}
export DOCKER_BUILDKIT=0  # the classic builder: the engine here has no buildx
log() { echo "[images] $*" >&2; }
build() { local out; out=$(docker build -q "$@" 2>&1) || { echo "$out" >&2; return 1; }; }

# 1. Models, reproducibly (skipped when the training script is unchanged).
stamp=$(sha256sum services/inference/train.py services/inference/fleet_inference/modeldef.py | sha256sum | cut -c1-16)
if [ "$(cat build/models/.stamp 2>/dev/null)" != "$stamp" ]; then
  log "training model versions"
  rm -rf build/models && "$py" services/inference/train.py --out build/models
  echo "$stamp" >build/models/.stamp
fi

# 2. Bases: pull where a registry answers, else the local offline base.
pulled() { timeout 120 docker pull -q "$1" >/dev/null 2>&1; }
if pulled python:3.11-slim && pulled haproxy:2.6; then
  py_base=python:3.11-slim; gw_base=haproxy:2.6
else
  bash scripts/base-image.sh
  py_base=${FLEET_LOCAL_BASE:-fleet/base:bookworm}; gw_base=$py_base
fi
# The service's wheels, exactly those of services/inference/requirements.lock, each checked against its
# hash here and again in the image (pip --require-hashes), which installs them without any index.
mkdir -p build/wheelhouse
pip_args="--no-index --find-links /wheelhouse"
req_stamp=$(sha256sum services/inference/requirements.lock | cut -c1-16)
if [ "$(cat build/wheelhouse/.stamp 2>/dev/null)" != "$req_stamp" ]; then
  log "downloading the locked wheels for the image"
  find build/wheelhouse -name '*.whl' -delete
  "$py" -m pip download -q --require-hashes --no-deps --only-binary=:all: -d build/wheelhouse \
    -r services/inference/requirements.lock 2> >(grep -v "is ignored: it is neither" >&2)
  echo "$req_stamp" >build/wheelhouse/.stamp
fi

# 3. Images.
log "fleet/inference:base (base $py_base): the service without a model"
build -t fleet/inference:base --build-arg "BASE=$py_base" --build-arg "PIP_ARGS=$pip_args" .
# The demo's versions, as users bring theirs: each model package on the base with `fleet build`, so they
# share every layer but their own model's.
for v in 1 2; do
  log "fleet/inference:$v: fleet build build/models/v$v"
  out=$("$py" -m fleet.cli build "build/models/v$v" --tag "fleet/inference:$v" --json 2>&1) || { echo "$out" >&2; exit 1; }
done
log "fleet/gateway:1 (base $gw_base)"
build -t fleet/gateway:1 --build-arg "BASE=$gw_base" stacks/gateway
if ! docker image inspect fleet/consul:1.8.7 >/dev/null 2>&1; then
  if pulled hashicorp/consul:1.8.7; then
    docker tag hashicorp/consul:1.8.7 fleet/consul:1.8.7
  else
    bash scripts/debian-binary.sh consul bullseye
    ctx=$(mktemp -d); trap 'rm -rf "$ctx"' EXIT
    cp stacks/consul/Dockerfile build/consul/consul "$ctx/"
    log "fleet/consul:1.8.7 (base ${FLEET_LOCAL_BASE:-fleet/base:bookworm})"
    build -t fleet/consul:1.8.7 --build-arg "BASE=${FLEET_LOCAL_BASE:-fleet/base:bookworm}" "$ctx"
  fi
fi
# Prometheus: Debian 12's build on the local base (its entrypoint writes the stack's scrape config).
bash scripts/debian-binary.sh prometheus bookworm
bash scripts/base-image.sh
prom_ctx=$(mktemp -d)
cp stacks/prometheus/* build/prometheus/prometheus "$prom_ctx/"
log "fleet/prometheus:2.42 (base ${FLEET_LOCAL_BASE:-fleet/base:bookworm})"
build -t fleet/prometheus:2.42 --build-arg "BASE=${FLEET_LOCAL_BASE:-fleet/base:bookworm}" "$prom_ctx"
rm -rf "$prom_ctx"
log "done: $(docker images --format '{{.Repository}}:{{.Tag}}' 'fleet/*' | sort | tr '\n' ' ')"
