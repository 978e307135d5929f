#!/usr/bin/env bash
# Create or refresh .venv with fleet, the service's runtime (torch==2.13.0, CPU build) and the test tools.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
stamp=$(cat pyproject.toml services/inference/requirements.txt | sha256sum | cut -c1-16)
[ "$(cat .venv/.stamp 2>/dev/null)" = "$stamp" ] && exit 0
echo "[venv] installing into .venv" >&2
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -r services/inference/requirements.txt -e ".[dev]"
echo "$stamp" >.venv/.stamp
