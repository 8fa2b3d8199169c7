#!/usr/bin/env bash
# Replace every web container with one from the service's current image, one at a time, losing
# no request: for the web service behind the proxy (deploy/compose/proxy.yml).
#
# Usage: scripts/rolling-upgrade.sh [docker compose options]
#   e.g. docker compose -f docker-compose.yml -f deploy/compose/proxy.yml build web   # or pull
#        scripts/rolling-upgrade.sh -f docker-compose.yml -f deploy/compose/proxy.yml
#
# For each running web container, oldest first:
#   1. start one more replica (`up --no-recreate --scale web=N+1`: the new image, the old ones untouched);
#   2. wait until it is healthy (its /readyz answers: it reaches Redis) and the proxy sends it
#      requests (HAProxy's stats); if it never is, remove it and stop: the old ones keep serving;
#   3. stop the old one (SIGTERM: it answers its held polls and streams at once, with their state
#      and a Retry-After, and exits; the proxy sends anything it refuses to another replica),
#      then remove it.
# Migrations run as each new replica starts, while the old ones serve: keep them compatible
# with the code of the version before (add first, remove a release later).
#
# Environment: UPGRADE_SERVICE (web), UPGRADE_TIMEOUT (120 s for a replica to be ready),
# UPGRADE_STOP_TIMEOUT (30 s, then docker kills it).
# Exit codes: 0 done, 1 a new replica never became ready (nothing old was stopped for it),
# 2 usage error (no running web container).
set -euo pipefail
cd "$(dirname "$0")/.."

SERVICE="${UPGRADE_SERVICE:-web}"
TIMEOUT="${UPGRADE_TIMEOUT:-120}"
STOP_TIMEOUT="${UPGRADE_STOP_TIMEOUT:-30}"
compose=(docker compose "$@")

log() { printf 'rolling-upgrade: %s\n' "$*" >&2; }

running() { "${compose[@]}" ps -q "$SERVICE" | sort; }

health() { docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1"; }

# Whether the proxy's stats list the container's address as a server that is UP (asked from the
# container itself: the stats are reachable on the compose network only).
routed() {
    local address
    address="$(docker inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$1")"
    docker exec "$1" python -c '
import csv, io, sys, urllib.request
rows = csv.DictReader(io.StringIO(urllib.request.urlopen("http://proxy:8404/stats;csv", timeout=2).read().decode().lstrip("# ")))
addresses = set(sys.argv[1:])
sys.exit(0 if any(r["pxname"] == "web" and r["addr"].rsplit(":", 1)[0] in addresses and r["status"].startswith("UP") for r in rows) else 1)
' $address >/dev/null 2>&1
}

wait_ready() {
    local container="$1" waited=0
    until [[ "$(health "$container")" == healthy ]] && routed "$container"; do
        if ((waited >= TIMEOUT)); then
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

mapfile -t old < <(running)
if ((${#old[@]} == 0)); then
    log "no running $SERVICE container (start the project first)"
    exit 2
fi
# Oldest first.
mapfile -t old < <(docker inspect --format '{{.Created}} {{.ID}}' "${old[@]}" | sort | cut -d' ' -f2)
log "replacing ${#old[@]} $SERVICE container(s), one at a time"
for container in "${old[@]}"; do
    before="$(running)"
    count="$(printf '%s\n' "$before" | grep -c .)"
    "${compose[@]}" up -d --no-deps --no-recreate --scale "$SERVICE=$((count + 1))" "$SERVICE" >&2
    new="$(comm -13 <(printf '%s\n' "$before" | sort) <(running) | head -n1)"
    if [[ -z "$new" ]]; then
        log "no new $SERVICE container was started"
        exit 1
    fi
    started=$SECONDS
    if ! wait_ready "$new"; then
        log "the new container ${new:0:12} was not ready within ${TIMEOUT}s (health: $(health "$new")); removing it"
        docker logs --tail 20 "$new" >&2 || true
        docker rm -f "$new" >/dev/null
        exit 1
    fi
    log "new ${new:0:12} serves ($((SECONDS - started)) s); stopping old ${container:0:12}"
    started=$SECONDS
    docker stop --time "$STOP_TIMEOUT" "$container" >/dev/null
    docker rm "$container" >/dev/null
    log "old ${container:0:12} stopped and removed ($((SECONDS - started)) s)"
done
log "done: $(running | grep -c .) $SERVICE container(s) on the current image"
