#!/usr/bin/env bash
# Make sure headless Chromium and its matching chromedriver are installed for the browser tests
# (tests/browser, `pytest -m browser`). Already installed: do nothing. Missing and running as
# root on Debian/Ubuntu: install the distribution's packages. Otherwise say what to run.
#
# Usage: scripts/ensure-chromium.sh
# Exit codes: 0 installed (or already there), 3 missing and cannot install (not root / no apt).
set -euo pipefail

chromium=/usr/bin/chromium
chromedriver=/usr/bin/chromedriver
packages=(chromium chromium-driver fonts-liberation)

if [[ -x "$chromium" && -x "$chromedriver" ]]; then
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    echo "Chromium is missing ($chromium, $chromedriver): run 'sudo apt-get install -y --no-install-recommends ${packages[*]}' (or this script as root)." >&2
    exit 3
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "Chromium is missing ($chromium, $chromedriver) and there is no apt-get here: install Chromium and its chromedriver at those paths." >&2
    exit 3
fi

echo "Installing ${packages[*]} with apt-get (a few minutes on a fresh machine)..." >&2
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"

if [[ ! -x "$chromium" || ! -x "$chromedriver" ]]; then
    echo "apt-get finished but $chromium or $chromedriver is still missing." >&2
    exit 1
fi
echo "Installed: $("$chromium" --version 2>/dev/null || echo chromium), $("$chromedriver" --version 2>/dev/null || echo chromedriver)" >&2
