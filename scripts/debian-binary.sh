#!/usr/bin/env bash
# Put the binary /usr/bin/PACKAGE of Debian SUITE's package PACKAGE at build/PACKAGE/PACKAGE (skipped when
# there): Consul 1.8.7 from Debian 11 (Debian 12, PyPI and npm lack it), Prometheus 2.42 from Debian 12.
#   scripts/debian-binary.sh PACKAGE SUITE
set -euo pipefail
package=$1 suite=$2
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/build/$package"
[ -x "$out/$package" ] && exit 0
x=$(mktemp -d)
trap 'rm -rf "$x"' EXIT
bash "$root/scripts/debian-deb.sh" "$package" "$suite" "$x"
mkdir -p "$out" && install -m 0755 "$x/usr/bin/$package" "$out/$package"
echo "[$package] $("$out/$package" --version 2>&1 | head -1)" >&2
