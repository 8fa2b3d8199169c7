#!/usr/bin/env bash
# `make test-docker`: build and run the Docker files on a real engine.
#
# Uses an engine that answers `docker info`; else starts one (as root, scripts/docker-engine.sh)
# and stops it afterwards; else skips with one loud line, or fails under REQUIRE_DOCKER=1.
# Base images: the official ones when they can be pulled, else stand-ins built from Debian
# packages (scripts/docker-offline-images.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${VENV:-.venv}/bin"

started_engine=0
if ! docker info >/dev/null 2>&1; then
    if PYTHON="$bin/python" scripts/docker-engine.sh start; then
        started_engine=1
    elif [[ "${REQUIRE_DOCKER:-0}" == 1 ]]; then
        echo "FAILED: REQUIRE_DOCKER=1 and no Docker engine answers or could be started." >&2
        exit 1
    else
        echo "SKIPPED: the Docker engine tests: no Docker engine answers or could be started (REQUIRE_DOCKER=1 fails instead)." >&2
        exit 0
    fi
fi
# A running engine's compose plugin may be a link into a virtualenv that is gone.
docker compose version >/dev/null 2>&1 || PYTHON="$bin/python" scripts/docker-engine.sh start >&2
if ((started_engine)); then
    trap 'scripts/docker-engine.sh stop' EXIT
fi

images="$(scripts/docker-offline-images.sh)"
eval "$images"
export PYTHON_IMAGE REDIS_IMAGE PROXY_IMAGE PROMETHEUS_IMAGE COMPOSE_BAKE=false
echo "Docker tests with PYTHON_IMAGE=$PYTHON_IMAGE REDIS_IMAGE=$REDIS_IMAGE PROXY_IMAGE=$PROXY_IMAGE" \
    "PROMETHEUS_IMAGE=$PROMETHEUS_IMAGE" >&2
"$bin/pytest" -m docker tests/docker -s "$@"
