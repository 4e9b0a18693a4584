#!/bin/sh
# Installs the headless browser the dashboard's browser test drives (tests/test_browser.py):
# Debian's chromium, with fonts. Does nothing when a browser is already there. Without root or
# apt-get it only says so and exits 0: the browser test then skips with the same advice.
#
#   deploy/install_browser.sh          (make test calls it)
#   CHROMIUM=/path/to/chrome make test (use a browser you already have)
set -eu

for candidate in "${CHROMIUM:-}" chromium chromium-browser google-chrome; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1; then
        exit 0
    fi
done

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: no chromium found and cannot install one (needs root and apt-get);" \
         "the browser test will be skipped. Install chromium or set CHROMIUM=/path/to/chrome." >&2
    exit 0
fi

echo "install_browser.sh: installing chromium for the dashboard's browser test" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        chromium fonts-dejavu-core fonts-liberation >/dev/null; }; then
    echo "install_browser.sh: installing chromium failed; the browser test will be skipped." >&2
fi
