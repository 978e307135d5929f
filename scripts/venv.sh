#!/usr/bin/env bash
# Create or refresh .venv with fleet, the service's runtime (torch==2.13.0, CPU build) and the test tools.
# The locked wheels come first (scripts/wheels.sh), and the install takes torch from them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
stamp=$(cat pyproject.toml services/inference/requirements.txt | sha256sum | cut -c1-16)
[ "$(cat .venv/.stamp 2>/dev/null)" = "$stamp" ] && exit 0
echo "[venv] installing into .venv" >&2
[ -x .venv/bin/python ] || python3 -m venv .venv
bash scripts/wheels.sh
.venv/bin/pip install -q --find-links build/wheelhouse -r services/inference/requirements.txt -e ".[dev]" \
  2> >(grep -v "is ignored: it is neither" >&2)
echo "$stamp" >.venv/.stamp
