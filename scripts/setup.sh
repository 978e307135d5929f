#!/usr/bin/env bash
# Everything `make demo` and `make test` need, installed or started only when missing:
# Python environment, Docker engine in Swarm mode, Consul, the images. Safe to run again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/venv.sh"
bash "$root/scripts/engine.sh"
bash "$root/scripts/images.sh"
bash "$root/scripts/consul-secrets.sh"
