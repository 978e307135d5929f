#!/usr/bin/env bash
# The service's wheels in build/wheelhouse: exactly those of services/inference/requirements.lock, each
# checked against its hash (skipped when the lock is unchanged). The image installs them without an index
# (scripts/images.sh) and .venv takes torch from them rather than downloading it twice (scripts/venv.sh).
# LOCK and WHEELHOUSE name another lock and folder (the CUDA image's: scripts/images.sh cuda).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-.venv/bin/python}
lock=${LOCK:-services/inference/requirements.lock}
dir=${WHEELHOUSE:-build/wheelhouse}
stamp=$(sha256sum "$lock" | cut -c1-16)
[ "$(cat "$dir/.stamp" 2>/dev/null)" = "$stamp" ] && exit 0
echo "[wheels] downloading the wheels of $lock" >&2
mkdir -p "$dir"
find "$dir" -name '*.whl' -delete
"$py" -m pip download -q --require-hashes --no-deps --only-binary=:all: -d "$dir" \
  -r "$lock" 2> >(grep -v "is ignored: it is neither" >&2)
echo "$stamp" >"$dir/.stamp"
