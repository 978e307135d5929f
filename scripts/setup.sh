#!/usr/bin/env bash
# Everything `make demo` and `make test` need, installed or started only when missing:
# Python environment, Docker engine in Swarm mode, Consul, the images. Safe to run again.
# Two paths at once, where a fresh machine spends its time: .venv installing (pip), then the demo's models
# trained with it; and the engine, the local Debian base and the images that need no .venv
# (scripts/images.sh bases). Then the models' images.
#   scripts/setup.sh [dev|demo]   demo: .venv without the test tools (scripts/venv.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ -x .venv/bin/python ] || python3 -m venv .venv
bash scripts/wheels.sh  # the locked wheels, which both paths use
(bash scripts/venv.sh "${1:-dev}" && bash scripts/images.sh train) &
venv=$!
bash scripts/engine.sh
bash scripts/images.sh bases || { kill "$venv" 2>/dev/null; exit 1; }
wait "$venv"
bash scripts/images.sh models
bash scripts/consul-secrets.sh
bash scripts/prometheus-secrets.sh
