#!/usr/bin/env bash
# Download one Debian package of SUITE (bullseye, bookworm) and unpack it into OUT: the way fleet gets
# binaries PyPI lacks (Consul, Prometheus) with no registry. The mirror comes from this machine's own
# apt configuration; the system's apt sources and state are untouched.
#   scripts/debian-deb.sh PACKAGE SUITE OUT
set -euo pipefail
package=$1 suite=$2 out=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/parts" "$work/lists/partial" "$work/debs" "$out"
src=/etc/apt/sources.list.d/debian.sources
if [ -f "$src" ]; then
  awk 'BEGIN{RS=""} NR==1{print; exit}' "$src" | sed -E "s/^Suites:.*/Suites: $suite/" >"$work/parts/$suite.sources"
else
  mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
  echo "deb [trusted=yes] $mirror $suite main" >"$work/parts/$suite.list"
fi
opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/parts" -o "Dir::State::Lists=$work/lists"
      -o Debug::NoLocking=1 -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root)
apt-get "${opts[@]}" update -qq
(cd "$work/debs" && apt-get "${opts[@]}" download "$package" >/dev/null 2>&1)
dpkg -x "$work"/debs/"${package}"_*.deb "$out"
