#!/usr/bin/env bash
# Make sure promtool (Prometheus's own checker) is installed, so that the metrics test runs
# `promtool check metrics` on /metrics (tests/test_observability.py; without it that check is
# skipped). Already installed: do nothing. Missing and running as root on Debian/Ubuntu: install
# the distribution's `prometheus` package (about 20 MB; it ships promtool; its server is not
# started). Otherwise say what to run.
#
# Usage: scripts/ensure-promtool.sh
# Exit codes: 0 installed (or already there), 3 missing and cannot install (not root / no apt).
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    echo "promtool is missing: run 'sudo apt-get install -y --no-install-recommends prometheus' (or this script as root)." >&2
    exit 3
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "promtool is missing and there is no apt-get here: install Prometheus's promtool on the PATH." >&2
    exit 3
fi

echo "Installing prometheus (for promtool) with apt-get..." >&2
apt-get update -q
# policy-rc.d or no init system: the package's service is not started in a container; either way
# nothing here needs the server, only its promtool.
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus

if ! command -v promtool >/dev/null 2>&1; then
    echo "apt-get finished but promtool is still missing." >&2
    exit 1
fi
echo "Installed: $(promtool --version 2>&1 | head -n 1)" >&2
