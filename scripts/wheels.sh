#!/usr/bin/env bash
# The service's wheels in build/wheelhouse: exactly those of services/inference/requirements.lock, each
# checked against its hash (skipped when the lock is unchanged). The image installs them without an index
# (scripts/images.sh) and .venv takes torch from them rather than downloading it twice (scripts/venv.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-.venv/bin/python}
stamp=$(sha256sum services/inference/requirements.lock | cut -c1-16)
[ "$(cat build/wheelhouse/.stamp 2>/dev/null)" = "$stamp" ] && exit 0
echo "[wheels] downloading the locked wheels" >&2
mkdir -p build/wheelhouse
find build/wheelhouse -name '*.whl' -delete
"$py" -m pip download -q --require-hashes --no-deps --only-binary=:all: -d build/wheelhouse \
  -r services/inference/requirements.lock 2> >(grep -v "is ignored: it is neither" >&2)
echo "$stamp" >build/wheelhouse/.stamp
