#!/usr/bin/env bash
# Headless Chromium, for the rollout report's PNG and the tests that open the report as a browser does.
# Installed from the machine's own Debian sources when missing.
set -euo pipefail
command -v chromium >/dev/null && exit 0
echo "[browser] installing chromium" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
