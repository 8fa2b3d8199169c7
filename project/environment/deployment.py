"""The settings of how the service runs: its logs, the web server (read by the start scripts), the
first admin login, and what the Compose files read (ports and containers' limits)."""

from project.environment.kinds import BOOL, INT, SIZE, TEXT, choice
from project.environment.setting import COMPOSE, DJANGO, SERVER, Section, Setting

LOGS = Section(
    "Logs and static files",
    DJANGO,
    "Every line a process writes (ours, RQ's, Django's, granian's and gunicorn's) in one format "
    "([Operations](operations.md)). The start scripts read `LOG_FORMAT` and `LOG_LEVEL` too.",
    (
        Setting("LOG_FORMAT", choice("json", "text"), "json", "`json`: every line one JSON object, for log "
                "shippers; `text`: all text."),
        Setting("LOG_LEVEL", TEXT, "INFO", "Log level of every logger (`DEBUG` also shows RQ's routine "
                "maintenance lines, every 10 s per idle worker)."),
        Setting("STATIC_COLLECTED", BOOL, "0", "On: static files were collected (`collectstatic`), and are "
                "served hashed and compressed with far-future caching; off: WhiteNoise serves them from the "
                "apps' folders. The image sets it, having collected them at build.", env_file=False),
    ),
)

SERVER_SECTION = Section(
    "The web server",
    SERVER,
    "Read by `scripts/serve.sh` (the image's and `make serve`'s server; `make serve` and `make run` "
    "use `127.0.0.1:8123`) and gunicorn's settings (`project/gunicorn_conf.py`).",
    (
        Setting("HOST", TEXT, "0.0.0.0", "The address the server listens on.", env_file=False),
        Setting("PORT", INT, "8080", "The port the server listens on.", env_file=False),
        Setting("WEB_SERVER", choice("granian", "gunicorn"), "granian", "`gunicorn` runs gunicorn's threaded "
                "worker instead."),
        Setting("WEB_CONCURRENCY", INT, "2", "Server processes."),
        Setting("WEB_THREADS", INT, "640", "Threads per server process: each serves one request at a time, "
                "held ones (long polls, event streams) included. `project/settings.py` reads it too, for the "
                "defaults of `MAX_HELD_REQUESTS` and `EVENT_STREAMS_MAX`."),
        Setting("WEB_TIMEOUT", INT, "120", "gunicorn only: seconds before a silent worker process is restarted."),
        Setting("WEB_KILL_TIMEOUT", INT, "10", "granian only: seconds a stopping process has to finish its "
                "requests before it is killed."),
        Setting("ACCESS_LOG", choice("0", "1"), "0", "`1`: one log line per request (it costs about a third of the hot "
                "poll's throughput; `/metrics` counts requests either way)."),
    ),
)

ADMIN = Section(
    "The admin login",
    "manage.py ensure_superuser",
    "Created when the web service starts (`scripts/start-web.sh`), only when both the name and the "
    "password are set.",
    (
        Setting("DJANGO_SUPERUSER_USERNAME", TEXT, "", "The admin's user name."),
        Setting("DJANGO_SUPERUSER_PASSWORD", TEXT, "", "Its password, used ONCE: a changed password here is "
                "ignored later. To set or reset it afterwards: "
                "`docker compose exec web python manage.py ensure_superuser --reset`.", secret=True),
        Setting("DJANGO_SUPERUSER_EMAIL", TEXT, "", "Its e-mail address."),
    ),
)

CONTAINERS = Section(
    "Docker Compose",
    COMPOSE,
    "Read by `docker compose` from the shell or `.env` ([Deployment](deployment.md#limits)). Every "
    "container has a memory and a pids limit, and the workers and Redis a CPU limit, with defaults "
    "for a small host (2 GB).",
    (
        Setting("WEB_BIND", TEXT, "127.0.0.1", "The host address the web server is published on: loopback "
                "only by default (`0.0.0.0`: every interface)."),
        Setting("WEB_PORT", INT, "8123", "The host port the web server is published on."),
        Setting("REDIS_MAXMEMORY", SIZE, "256mb", "Redis's `maxmemory`: at this size Redis (`noeviction`) "
                "refuses new jobs, which clients get as a 503 JSON answer to retry."),
        Setting("REDIS_MEMORY", SIZE, "512m", "Redis's container memory: about twice `REDIS_MAXMEMORY` (an "
                "append-only rewrite forks, and the child's copied pages count too)."),
        Setting("WEB_MEMORY", SIZE, "512m", "The web container's memory."),
        Setting("WORKER_MEMORY", SIZE, "512m", "A worker container's memory: raise it for a bigger model."),
        Setting("WEB_CPUS", TEXT, "0", "CPUs of the web container (`0`: no limit)."),
        Setting("WORKER_CPUS", TEXT, "1", "CPUs of a worker container."),
        Setting("REDIS_CPUS", TEXT, "1", "CPUs of the Redis container (it uses one core for commands)."),
        Setting("WEB_PIDS", INT, "2048", "Processes and threads of the web container: above "
                "`WEB_CONCURRENCY` × `WEB_THREADS`."),
        Setting("WORKER_PIDS", INT, "128", "Processes and threads of a worker container."),
        Setting("REDIS_PIDS", INT, "64", "Processes and threads of the Redis container."),
        Setting("LOG_MAX_SIZE", SIZE, "10m", "Each container's log (`json-file`) rotates at this size..."),
        Setting("LOG_MAX_FILE", INT, "3", "...keeping this many files."),
    ),
)

PROXY = Section(
    "Behind the Compose proxy",
    "deploy/compose/proxy.yml",
    "The web service behind an HAProxy, the only way in "
    "([Deployment](deployment.md#behind-a-reverse-proxy)).",
    (
        Setting("WEB_REPLICAS", INT, "2", "Web replicas (one serves while the other is replaced)."),
        Setting("PROXY_BIND", TEXT, "0.0.0.0", "The host address the proxy is published on."),
        Setting("PROXY_PORT", INT, "8080", "The host port the proxy is published on."),
        Setting("PROXY_SUBNET", TEXT, "172.30.57.0/24", "The Compose network's subnet."),
        Setting("PROXY_ADDRESS", TEXT, "172.30.57.10", "The proxy's fixed address on it (the web's "
                "`TRUSTED_PROXIES`)."),
        Setting("PROXY_IMAGE", TEXT, "haproxy:2.8-alpine", "The proxy's image."),
        Setting("PROXY_MEMORY", SIZE, "128m", "The proxy container's memory."),
        Setting("PROXY_PIDS", INT, "64", "Processes and threads of the proxy container."),
    ),
)

PROMETHEUS = Section(
    "Prometheus (Compose profile `prometheus`)",
    COMPOSE,
    "`docker compose --profile prometheus up` adds a Prometheus with the alerting rules of "
    "`deploy/prometheus/`, scraping the web service ([Dashboards and alerts](operations-dashboards.md)).",
    (
        Setting("PROMETHEUS_IMAGE", TEXT, "prom/prometheus:v2.53.2", "Prometheus's image "
                "(`scripts/docker-offline-images.sh` builds a stand-in from Debian's package when it cannot be "
                "pulled)."),
        Setting("PROMETHEUS_BIND", TEXT, "127.0.0.1", "The host address Prometheus is published on."),
        Setting("PROMETHEUS_PORT", INT, "9090", "The host port Prometheus is published on."),
        Setting("PROMETHEUS_RETENTION", TEXT, "15d", "How long Prometheus keeps its samples."),
        Setting("PROMETHEUS_MEMORY", SIZE, "512m", "The Prometheus container's memory."),
        Setting("PROMETHEUS_CPUS", TEXT, "0.5", "CPUs of the Prometheus container."),
        Setting("PROMETHEUS_PIDS", INT, "128", "Processes and threads of the Prometheus container."),
    ),
)

SECTIONS = (LOGS, SERVER_SECTION, ADMIN, CONTAINERS, PROXY, PROMETHEUS)
