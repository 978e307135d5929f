#!/usr/bin/env bash
# Fetch Consul 1.8.7 from Debian 11's archive into build/consul/consul (Debian 12, PyPI and npm lack it).
# The mirror comes from this machine's own apt configuration; the system's apt sources are untouched.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/build/consul"
[ -x "$out/consul" ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/parts" "$work/lists/partial" "$work/debs" "$out"
src=/etc/apt/sources.list.d/debian.sources
if [ -f "$src" ]; then
  awk 'BEGIN{RS=""} NR==1{print; exit}' "$src" | sed -E 's/^Suites:.*/Suites: bullseye/' >"$work/parts/bullseye.sources"
else
  mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
  echo "deb [trusted=yes] $mirror bullseye main" >"$work/parts/bullseye.list"
fi
opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/parts" -o "Dir::State::Lists=$work/lists"
      -o Debug::NoLocking=1 -o APT::Get::List-Cleanup=0)
apt-get "${opts[@]}" update -qq
(cd "$work/debs" && apt-get "${opts[@]}" download consul >/dev/null)
dpkg -x "$work"/debs/consul_*.deb "$work/x"
install -m 0755 "$work/x/usr/bin/consul" "$out/consul"
echo "[consul] $("$out/consul" version | head -1)" >&2
