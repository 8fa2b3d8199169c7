#!/usr/bin/env bash
# Provide the base images the project needs, even without an image registry.
#
# Usage: scripts/docker-offline-images.sh [--env-file PATH] [--no-pull]
#
# For each of python:3.11-slim, redis:7-alpine, haproxy:2.8-alpine and
# prom/prometheus:v2.53.2: use the image if it is present locally or `docker
# pull` succeeds within PULL_TIMEOUT seconds; otherwise build a stand-in from
# Debian bookworm packages:
#   local/python:3.11-bookworm  python3 (3.11) + python3-venv, host CA bundle,
#                               PIP_CERT set, `python` -> python3; glibc, so pip
#                               installs manylinux wheels (scikit-learn, numpy)
#   local/redis:7-bookworm      Debian's redis-server/redis-tools, WORKDIR
#                               /data, protected mode off (like the official
#                               image), CMD redis-server
#   local/haproxy:2.6-bookworm  Debian's haproxy (2.6), laid out like the
#                               official image: user haproxy, configuration
#                               /usr/local/etc/haproxy/haproxy.cfg, -W -db,
#                               STOPSIGNAL SIGUSR1 (deploy/compose/proxy.yml)
#   local/prometheus:2.42-bookworm  Debian's prometheus (2.42), laid out like
#                               the official image: user nobody, entrypoint
#                               prometheus, configuration /etc/prometheus,
#                               data /prometheus (docker-compose.yml's
#                               `prometheus` profile)
# All are based on local/debian:bookworm (debootstrap --variant=minbase),
# which is created only if missing. Stand-ins are rebuilt only when their
# recipe (this script's Dockerfiles or the host CA bundle) changed.
#
# Progress goes to stderr. stdout gets exactly four lines, for eval or an env
# file:  PYTHON_IMAGE=...  REDIS_IMAGE=...  PROXY_IMAGE=...  PROMETHEUS_IMAGE=...
# (also written to --env-file PATH).
#
# Environment:
#   PULL_TIMEOUT     seconds allowed per `docker pull` (default 20)
#   DEBIAN_MIRROR    mirror for debootstrap (default http://deb.debian.org/debian)
#   HOST_CA_BUNDLE   CA bundle copied into the python stand-in
#                    (default /etc/ssl/certs/ca-certificates.crt)
#
# Exit codes: 0 ok, 1 build failure, 2 usage error, 3 no engine answers.
set -euo pipefail

PYTHON_UPSTREAM="python:3.11-slim"
REDIS_UPSTREAM="redis:7-alpine"
PROXY_UPSTREAM="haproxy:2.8-alpine"
PROMETHEUS_UPSTREAM="prom/prometheus:v2.53.2"
DEBIAN_BASE="local/debian:bookworm"
PYTHON_STANDIN="local/python:3.11-bookworm"
REDIS_STANDIN="local/redis:7-bookworm"
PROXY_STANDIN="local/haproxy:2.6-bookworm"
PROMETHEUS_STANDIN="local/prometheus:2.42-bookworm"
RECIPE_LABEL="org.project.standin-recipe"

PULL_TIMEOUT="${PULL_TIMEOUT:-20}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
HOST_CA_BUNDLE="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

ENV_FILE=""
TRY_PULL=1
WORK_DIR=""

log() { printf 'offline-images: %s\n' "$*" >&2; }

usage() { sed -n '2,39p' "$0" | sed 's/^# \{0,1\}//' >&2; }

cleanup() {
    local mnt
    [[ -n "$WORK_DIR" && -d "$WORK_DIR" ]] || return 0
    # debootstrap normally unmounts what it mounted; make sure nothing under
    # the temp dir is still mounted before deleting it (deepest first).
    while read -r mnt; do
        umount -l "$mnt" 2>/dev/null || true
    done < <(awk -v d="$WORK_DIR/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r)
    rm -rf --one-file-system "$WORK_DIR"
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# Use an upstream image if present or pullable; returns 1 otherwise.
upstream_available() {
    local image="$1"
    if have_image "$image"; then
        log "using $image (present locally)"
        return 0
    fi
    if ((TRY_PULL)); then
        log "trying docker pull $image (up to ${PULL_TIMEOUT}s)"
        if timeout "$PULL_TIMEOUT" docker pull --quiet "$image" >/dev/null 2>&1; then
            log "using $image (pulled)"
            return 0
        fi
        # The upstream images live on the same registry: do not wait again.
        log "cannot pull $image; no more pull attempts this run"
        TRY_PULL=0
    fi
    return 1
}

ensure_debootstrap() {
    command -v debootstrap >/dev/null 2>&1 && return 0
    if [[ "$(id -u)" -ne 0 ]]; then
        log "debootstrap is missing and we are not root to install it"
        return 1
    fi
    log "installing debootstrap"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -q debootstrap >&2
}

ensure_debian_base() {
    local rootfs start
    if have_image "$DEBIAN_BASE"; then
        log "base $DEBIAN_BASE present"
        return 0
    fi
    ensure_debootstrap
    rootfs="$WORK_DIR/rootfs"
    mkdir -p "$rootfs"
    start=$SECONDS
    log "debootstrap --variant=minbase bookworm (mirror $DEBIAN_MIRROR)"
    debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >"$WORK_DIR/debootstrap.log" 2>&1 || {
        log "debootstrap failed; last lines:"
        tail -n 20 "$WORK_DIR/debootstrap.log" >&2
        return 1
    }
    # Keep the image small: no cached .debs or package lists.
    rm -rf "${rootfs:?}"/var/cache/apt/archives/*.deb "${rootfs:?}"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -c . \
        | docker import --change 'CMD ["bash"]' - "$DEBIAN_BASE" >/dev/null
    log "built $DEBIAN_BASE in $((SECONDS - start))s"
    rm -rf --one-file-system "$rootfs"
}

write_python_context() {
    local ctx="$1"
    mkdir -p "$ctx"
    cp -L "$HOST_CA_BUNDLE" "$ctx/ca-certificates.crt"
    cat >"$ctx/Dockerfile" <<'EOF'
# Stand-in for python:3.11-slim, from Debian bookworm packages (Python 3.11).
# Debian's system Python refuses `pip install` outside a venv: use
#   python -m venv /opt/venv && /opt/venv/bin/pip install ...
FROM local/debian:bookworm
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/python3 /usr/local/bin/python
# The host's CA bundle: pip reaches the package registry only with it.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV LANG=C.UTF-8 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
EOF
}

write_redis_context() {
    local ctx="$1"
    mkdir -p "$ctx"
    cat >"$ctx/redis-server" <<'EOF'
#!/bin/sh
# Run Debian's redis-server with protected mode off, as the official image
# does, unless the caller sets --protected-mode. A config file (first
# argument ending in .conf, an existing file, or "-" for stdin) stays first.
set -e
for arg in "$@"; do
    if [ "$arg" = "--protected-mode" ]; then
        exec /usr/bin/redis-server "$@"
    fi
done
if [ "$#" -gt 0 ]; then
    case "$1" in
        -) is_conf=1 ;;
        -*) is_conf=0 ;;
        *.conf) is_conf=1 ;;
        *) if [ -f "$1" ]; then is_conf=1; else is_conf=0; fi ;;
    esac
    if [ "$is_conf" = 1 ]; then
        conf="$1"
        shift
        exec /usr/bin/redis-server "$conf" --protected-mode no "$@"
    fi
fi
exec /usr/bin/redis-server --protected-mode no "$@"
EOF
    cat >"$ctx/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
# Like the official image: `docker run IMAGE --appendonly yes` and
# `docker run IMAGE /path/redis.conf` mean redis-server with those arguments.
set -e
case "${1:-}" in
    -*|*.conf) set -- redis-server "$@" ;;
esac
exec "$@"
EOF
    chmod 0755 "$ctx/redis-server" "$ctx/docker-entrypoint.sh"
    cat >"$ctx/Dockerfile" <<'EOF'
# Stand-in for redis:7-alpine, from Debian bookworm packages (Redis 7.0).
FROM local/debian:bookworm
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      redis-server redis-tools \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data
# Both scripts are mode 0755 in the build context; COPY keeps the mode.
COPY redis-server docker-entrypoint.sh /usr/local/bin/
WORKDIR /data
VOLUME /data
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
EOF
}

write_haproxy_context() {
    local ctx="$1"
    mkdir -p "$ctx"
    cat >"$ctx/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
# Like the official image: `docker run IMAGE -f CFG` means haproxy with those
# arguments, and haproxy runs in the foreground in master-worker mode.
set -e
if [ "${1#-}" != "$1" ]; then
    set -- haproxy "$@"
fi
if [ "$1" = haproxy ]; then
    shift
    set -- haproxy -W -db "$@"
fi
exec "$@"
EOF
    chmod 0755 "$ctx/docker-entrypoint.sh"
    cat >"$ctx/Dockerfile" <<'EOF'
# Stand-in for haproxy:2.8-alpine, from Debian bookworm packages (HAProxy 2.6).
FROM local/debian:bookworm
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /usr/local/etc/haproxy /var/lib/haproxy \
 && chown haproxy:haproxy /var/lib/haproxy
COPY docker-entrypoint.sh /usr/local/bin/
# SIGUSR1: a soft stop (connections under way finish), as in the official image.
STOPSIGNAL SIGUSR1
USER haproxy
WORKDIR /var/lib/haproxy
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
EOF
}

write_prometheus_context() {
    local ctx="$1"
    mkdir -p "$ctx"
    cat >"$ctx/Dockerfile" <<'EOF'
# Stand-in for prom/prometheus, from Debian bookworm packages (Prometheus 2.42).
FROM local/debian:bookworm
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus /etc/prometheus \
 && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
VOLUME /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
EOF
}

recipe_hash() {
    (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) \
        | sha256sum | cut -c1-16
}

# build_standin TAG CONTEXT_WRITER
build_standin() {
    local tag="$1" writer="$2" ctx hash current old_id start
    ctx="$WORK_DIR/ctx-${tag//[^A-Za-z0-9]/_}"
    "$writer" "$ctx"
    hash="$(recipe_hash "$ctx")"
    current="$(docker image inspect --format "{{ index .Config.Labels \"$RECIPE_LABEL\" }}" "$tag" 2>/dev/null || true)"
    if [[ "$current" == "$hash" ]]; then
        log "stand-in $tag present (recipe $hash)"
        return 0
    fi
    old_id="$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
    if [[ -n "$old_id" ]]; then
        log "stand-in $tag has recipe ${current:-unknown}, want $hash: rebuilding"
    fi
    ensure_debian_base
    start=$SECONDS
    log "building $tag"
    # Works with the classic builder and with BuildKit/buildx alike.
    if ! docker build --network host --quiet \
        --label "$RECIPE_LABEL=$hash" -t "$tag" "$ctx" >"$ctx.log" 2>&1; then
        log "building $tag failed; last lines:"
        tail -n 30 "$ctx.log" >&2
        return 1
    fi
    log "built $tag in $((SECONDS - start))s"
    # Drop the superseded image if nothing else uses it (best effort).
    if [[ -n "$old_id" && "$old_id" != "$(docker image inspect --format '{{.Id}}' "$tag")" ]]; then
        docker image rm "$old_id" >/dev/null 2>&1 || true
    fi
}

main() {
    local python_image redis_image proxy_image prometheus_image images
    while (($#)); do
        case "$1" in
            --env-file)
                [[ $# -ge 2 ]] || { usage; return 2; }
                ENV_FILE="$2"
                shift 2
                ;;
            --env-file=*)
                ENV_FILE="${1#*=}"
                shift
                ;;
            --no-pull)
                TRY_PULL=0
                shift
                ;;
            -h | --help)
                usage
                return 0
                ;;
            *)
                log "unknown argument: $1"
                usage
                return 2
                ;;
        esac
    done

    if ! docker info >/dev/null 2>&1; then
        log "no Docker engine answers (try scripts/docker-engine.sh start)"
        return 3
    fi

    WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/offline-images.XXXXXX")"
    trap cleanup EXIT

    if upstream_available "$PYTHON_UPSTREAM"; then
        python_image="$PYTHON_UPSTREAM"
    else
        build_standin "$PYTHON_STANDIN" write_python_context
        python_image="$PYTHON_STANDIN"
    fi
    if upstream_available "$REDIS_UPSTREAM"; then
        redis_image="$REDIS_UPSTREAM"
    else
        build_standin "$REDIS_STANDIN" write_redis_context
        redis_image="$REDIS_STANDIN"
    fi

    if upstream_available "$PROXY_UPSTREAM"; then
        proxy_image="$PROXY_UPSTREAM"
    else
        build_standin "$PROXY_STANDIN" write_haproxy_context
        proxy_image="$PROXY_STANDIN"
    fi

    if upstream_available "$PROMETHEUS_UPSTREAM"; then
        prometheus_image="$PROMETHEUS_UPSTREAM"
    else
        build_standin "$PROMETHEUS_STANDIN" write_prometheus_context
        prometheus_image="$PROMETHEUS_STANDIN"
    fi

    images="$(printf 'PYTHON_IMAGE=%s\nREDIS_IMAGE=%s\nPROXY_IMAGE=%s\nPROMETHEUS_IMAGE=%s' \
        "$python_image" "$redis_image" "$proxy_image" "$prometheus_image")"
    if [[ -n "$ENV_FILE" ]]; then
        mkdir -p "$(dirname "$ENV_FILE")"
        printf '%s\n' "$images" >"$ENV_FILE"
        log "wrote $ENV_FILE"
    fi
    printf '%s\n' "$images"
}

main "$@"
