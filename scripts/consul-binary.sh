#!/usr/bin/env bash
# Fetch Consul 1.8.7 from Debian 11's archive into build/consul/consul (Debian 12, PyPI and npm lack it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/build/consul"
[ -x "$out/consul" ] && exit 0
x=$(mktemp -d)
trap 'rm -rf "$x"' EXIT
bash "$root/scripts/debian-deb.sh" consul bullseye "$x"
mkdir -p "$out" && install -m 0755 "$x/usr/bin/consul" "$out/consul"
echo "[consul] $("$out/consul" version | head -1)" >&2
