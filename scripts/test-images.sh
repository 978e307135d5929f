#!/usr/bin/env bash
# Build the test variants of the inference image (tests/images/*): fleet/inference-test:NAME.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export DOCKER_BUILDKIT=0
for dir in "$root"/tests/images/*/; do
  name=$(basename "$dir")
  out=$(docker build -q -t "fleet/inference-test:$name" --label fleet.test=1 "$dir" 2>&1) || { echo "$out" >&2; exit 1; }
done
echo "[images] test variants: $(ls "$root/tests/images" | tr '\n' ' ')" >&2
