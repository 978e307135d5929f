#!/usr/bin/env bash
# Fetch Prometheus 2.42 from Debian 12's archive into build/prometheus/prometheus.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/build/prometheus"
[ -x "$out/prometheus" ] && exit 0
x=$(mktemp -d)
trap 'rm -rf "$x"' EXIT
bash "$root/scripts/debian-deb.sh" prometheus bookworm "$x"
mkdir -p "$out" && install -m 0755 "$x/usr/bin/prometheus" "$out/prometheus"
echo "[prometheus] $("$out/prometheus" --version 2>&1 | head -1)" >&2
