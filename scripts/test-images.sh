#!/usr/bin/env bash
# Build the test variants of the inference image (tests/images/*): fleet/inference-test:NAME.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export DOCKER_BUILDKIT=0
for dir in "$root"/tests/images/*/; do
  name=$(basename "$dir")
  out=$(docker build -q -t "fleet/inference-test:$name" --label fleet.test=1 "$dir" 2>&1) || { echo "$out" >&2; exit 1; }
done
# from the flaky variant: a canary that answers 80 ms slower, and one whose errors start 25 s in
build_variant() { local out; out=$(docker build -q -t "fleet/inference-test:$1" --label fleet.test=1 "${@:2}" \
  "$root/tests/images/flaky" 2>&1) || { echo "$out" >&2; exit 1; }; }
build_variant laggy --build-arg ERROR_RATE=0 --build-arg LATENCY_MS=80
build_variant late --build-arg ERROR_AFTER=0 --build-arg ERROR_AFTER_SECONDS=25
out=$(docker build -q -t fleet/inference-test:shift --label fleet.test=1 --build-arg MODE=shift \
  "$root/tests/images/nan" 2>&1) || { echo "$out" >&2; exit 1; }
echo "[images] test variants: $(ls "$root/tests/images" | tr '\n' ' ')laggy late shift" >&2
