#!/usr/bin/env bash
# Debian's chromium for the dashboard's browser test (tests/e2e/test_dashboard_browser.py).
# Idempotent and quiet: does nothing when /usr/bin/chromium is already there. The test tools
# never download a browser of their own; they drive this one.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
/usr/bin/chromium --version
