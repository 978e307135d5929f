#!/usr/bin/env bash
# Build the local offline base image fleet/base:bookworm from Debian's packages (no registry here).
# It carries python3 (for the service), haproxy and dnsmasq (for the gateway). Skipped when an image
# with the same package list exists (the list is its label, so a change to it rebuilds the base).
set -euo pipefail
tag=${FLEET_LOCAL_BASE:-fleet/base:bookworm}
packages=python3,python3-venv,ca-certificates,haproxy,dnsmasq-base
[ "$(docker image inspect -f '{{index .Config.Labels "fleet.packages"}}' "$tag" 2>/dev/null)" = "$packages" ] && exit 0
command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "[base] debootstrap bookworm (about a minute)" >&2
debootstrap --variant=minbase --include=$packages bookworm "$dir" "$mirror" >/tmp/debootstrap.log 2>&1 \
  || { tail -20 /tmp/debootstrap.log >&2; exit 1; }
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
tar -C "$dir" -c . | docker import -c "LABEL fleet.packages=$packages" - "$tag" >/dev/null
echo "[base] built $tag" >&2
