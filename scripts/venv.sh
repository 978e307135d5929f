#!/usr/bin/env bash
# Create or refresh .venv with fleet, the service's runtime (torch==2.13.0, CPU build) and the test tools.
#   scripts/venv.sh [dev|demo]   dev (the default): with the test tools (make test, make bench); demo: what
#   `make demo` runs only (fleet, the service's runtime, scikit-learn for training), faster to install.
# The locked wheels come first (scripts/wheels.sh), and the install takes torch from them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
kind=${1:-dev}
base=$(cat pyproject.toml services/inference/requirements.txt | sha256sum | cut -c1-16)
have=$(cat .venv/.stamp 2>/dev/null || true)
[ "$have" = "$base-$kind" ] && exit 0
[ "$kind" = demo ] && [ "$have" = "$base-dev" ] && exit 0  # the test tools' .venv has all the demo runs
echo "[venv] installing into .venv ($kind)" >&2
[ -x .venv/bin/python ] || python3 -m venv .venv
bash scripts/wheels.sh
target=".[train]"; [ "$kind" = dev ] && target=".[dev]"
.venv/bin/pip install -q --find-links build/wheelhouse -r services/inference/requirements.txt -e "$target" \
  2> >(grep -v "is ignored: it is neither" >&2)
echo "$base-$kind" >.venv/.stamp
