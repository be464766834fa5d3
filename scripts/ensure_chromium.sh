#!/bin/sh
# Headless Chromium for the HTML report test (tests/integration/test_report_html.py).
# Idempotent and quiet when it is already there; installs Debian's `chromium` otherwise.
set -eu
for bin in chromium chromium-browser; do
    if command -v "$bin" >/dev/null 2>&1; then exit 0; fi
done
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: no chromium and no apt-get: install Chromium (package 'chromium') by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "ensure_chromium: installing Debian's chromium (headless report test)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
