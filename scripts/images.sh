#!/usr/bin/env bash
# Build fleet's images: fleet/inference:base (no model), :1 and :2 (model versions), fleet/gateway:1, fleet/consul:1.8.7,
# fleet/prometheus:2.42.
#   scripts/images.sh [bases|train|models|cuda]   (all but cuda by default)
# bases: everything that needs no .venv (scripts/setup.sh runs it while .venv installs), given the locked
# wheels (scripts/wheels.sh); train: the demo's model versions, trained with .venv (setup.sh: as soon as
# .venv is ready); models: their images (training them first where needed).
# cuda: fleet/inference:cuda-base, the same service on torch's CUDA build (requirements-cuda.lock), and the
# demo's versions on it, fleet/inference:1-cuda and :2-cuda. Never in CI: its wheels are several GB. It
# needs no GPU to build (each model's dry run in the image runs on the CPU); the NVIDIA driver comes from
# the node at run time (README, "GPUs").
# Where a registry answers, the official bases are used (python:3.11-slim, haproxy:2.6); otherwise the
# local Debian base from scripts/base-image.sh, with Python wheels downloaded on the host.
# Docker's layer cache makes a second run take seconds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-.venv/bin/python}
stage=${1:-all}
export DOCKER_BUILDKIT=0  # the classic builder: the engine here has no buildx
log() { echo "[images] $*" >&2; }
build() { local out; out=$(docker build -q "$@" 2>&1) || { echo "$out" >&2; return 1; }; }
pulled() { timeout 120 docker pull -q "$1" >/dev/null 2>&1; }

# An HTTP server on 127.0.0.1 for a wheelhouse (build/wheelhouse), for the build of a service image (on the host's
# network): pip installs the wheels from it, and they never become a layer of the image. On one port per lock
# where it is free: the port is in PIP_ARGS, a build argument of the pip layer, so a new port each build made
# the engine install every wheel again (55 s of every setup with nothing changed); else on any free port.
serve_wheels() {
  local dir=$1 port_file=$2 lock=$3
  python3 - "$root/$dir" "$port_file" "$((41000 + 0x$(sha256sum "$lock" | cut -c1-4) % 1000))" <<'PY' >/dev/null 2>&1 &
import functools, http.server, pathlib, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
try:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[3])), handler)
except OSError:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
pathlib.Path(sys.argv[2]).write_text(str(server.server_address[1]))
server.serve_forever()
PY
  echo $!
}

pick_bases() {
  # Bases: pull where a registry answers, else the local offline base.
  if pulled python:3.11-slim && pulled haproxy:2.6; then
    py_base=python:3.11-slim; gw_base=haproxy:2.6
  else
    bash scripts/base-image.sh
    py_base=${FLEET_LOCAL_BASE:-fleet/base:bookworm}; gw_base=$py_base
  fi
}

# The service without a model, TAG, from the wheels of LOCK (downloaded into WHEELHOUSE and checked).
service_image() {
  local tag=$1 lock=$2 wheelhouse=$3 port_file server
  LOCK=$lock WHEELHOUSE=$wheelhouse bash scripts/wheels.sh
  log "$tag (base $py_base, $lock): the service without a model"
  port_file=$(mktemp)
  server=$(serve_wheels "$wheelhouse" "$port_file" "$lock")
  for _ in $(seq 1 100); do [ -s "$port_file" ] && break; sleep 0.1; done
  build -t "$tag" --network host --build-arg "BASE=$py_base" --build-arg "LOCK=$lock" \
    --build-arg "PIP_ARGS=--no-index --find-links http://127.0.0.1:$(cat "$port_file")/" . \
    || { kill "$server"; rm -f "$port_file"; exit 1; }
  kill "$server"; rm -f "$port_file"
}

bases() {
  pick_bases
  service_image fleet/inference:base services/inference/requirements.lock build/wheelhouse
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
}

train() {
  # Models, reproducibly (skipped when the training script is unchanged).
  stamp=$(sha256sum services/inference/train.py | sha256sum | cut -c1-16)
  if [ "$(cat build/models/.stamp 2>/dev/null)" != "$stamp" ]; then
    log "training model versions"
    rm -rf build/models && "$py" services/inference/train.py --out build/models
    echo "$stamp" >build/models/.stamp
  fi
}

# The demo's versions, as users bring theirs: each model package on BASE with `fleet build`, tagged
# fleet/inference:<version><SUFFIX>, so they share every layer but their own model's.
models() {
  local base=${1:-fleet/inference:base} suffix=${2:-} pids=()
  train
  # Both at once: each mostly waits on the engine and its dry run in the image.
  for v in 1 2; do
    log "fleet/inference:$v$suffix: fleet build build/models/v$v on $base"
    (out=$("$py" -m fleet.cli build "build/models/v$v" --base "$base" --tag "fleet/inference:$v$suffix" --json 2>&1) \
      || { echo "$out" >&2; exit 1; }) &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
}

cuda() {
  pick_bases
  service_image fleet/inference:cuda-base services/inference/requirements-cuda.lock build/wheelhouse-cuda
  models fleet/inference:cuda-base -cuda
}

case $stage in
  bases) bases ;;
  train) train; exit 0 ;;
  models) models ;;
  all) bases; models ;;
  cuda) cuda ;;
  *) echo "usage: scripts/images.sh [bases|train|models|cuda]" >&2; exit 2 ;;
esac
log "done: $(docker images --format '{{.Repository}}:{{.Tag}}' 'fleet/*' | sort | tr '\n' ' ')"
