#!/usr/bin/env bash
# Build a local offline base image from Debian's packages (no registry here):
#   scripts/base-image.sh [TAG PACKAGES [CMD]]
# By default fleet/base:bookworm, with python3 (for the service), haproxy and dnsmasq (for the gateway);
# scripts/cluster.sh builds its node image with it. Skipped when an image with the same package list
# exists (the list is its label, so a change to it rebuilds the image).
set -euo pipefail
tag=${1:-${FLEET_LOCAL_BASE:-fleet/base:bookworm}}
packages=${2:-python3,python3-venv,ca-certificates,haproxy,dnsmasq-base}
changes=(-c "LABEL fleet.packages=$packages")
[ -z "${3:-}" ] || changes+=(-c "CMD $3")
[ "$(docker image inspect -f '{{index .Config.Labels "fleet.packages"}}' "$tag" 2>/dev/null)" = "$packages" ] && exit 0
command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "[base] $tag: debootstrap bookworm (about a minute)" >&2
debootstrap --variant=minbase --include=$packages bookworm "$dir" "$mirror" >/tmp/debootstrap.log 2>&1 \
  || { tail -20 /tmp/debootstrap.log >&2; exit 1; }
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
tar -C "$dir" -c . | docker import "${changes[@]}" - "$tag" >/dev/null
echo "[base] built $tag" >&2
