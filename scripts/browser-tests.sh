#!/usr/bin/env bash
# The dashboard's browser suite: headless Chromium (Debian's chromium + chromium-driver) driven over
# WebDriver by Selenium (pinned below), against the real `comfyvn-obs serve` on loopback. Used by
# .ci/run after the build. Installs what is missing; unlike the OpenAPI check it never skips: a machine
# that cannot run the suite fails it.
#
# Screenshots of every view and the timing figures (figures.json) go to $ARTIFACTS
# (default target/browser-artifacts); the folder is printed at the end.
#
#   bash scripts/browser-tests.sh                 # everything
#   bash scripts/browser-tests.sh reconnect xss   # the checks whose names contain these words
set -euo pipefail
cd "$(dirname "$0")/.."
SELENIUM_VERSION=4.51.0
export BIN=${BIN:-$PWD/target/debug/comfyvn-obs}
export ARTIFACTS=${ARTIFACTS:-$PWD/target/browser-artifacts}
# Selenium must not look for (or download) a browser or driver of its own.
export SE_OFFLINE=true

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('selenium') != '$SELENIUM_VERSION')" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "selenium==$SELENIUM_VERSION" >/dev/null
fi
[[ -x $BIN ]] || cargo build --locked
echo "browser suite: $(chromium --version 2>/dev/null | head -1), $(chromedriver --version | cut -d' ' -f1-2), selenium $SELENIUM_VERSION"
timeout "${BROWSER_TESTS_TIMEOUT:-300}" python3 tests/browser/dashboard.py "$@"
