"""The one settings module: every knob is an environment variable with a safe default.

Development works with nothing set (an insecure, loudly named SECRET_KEY and SQLite);
production mode (`PRODUCTION=1`) refuses to start without a real SECRET_KEY.
"""

import ipaddress
import warnings
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from project.env import (
    env_bool,
    env_host_ports,
    env_int,
    env_list,
    env_networks,
    env_str,
    redis_sentinel_connection,
    redis_url_with_options,
)
from project.log_format import logging_config
from project.task_discovery import discover_task_types

BASE_DIR = Path(__file__).resolve().parent.parent

INSECURE_DEV_SECRET_KEY = "django-insecure-development-only-do-not-deploy"
SECRET_KEY = env_str("SECRET_KEY", "") or INSECURE_DEV_SECRET_KEY
PRODUCTION = env_bool("PRODUCTION", False)


def _weak_secret_key(key: str) -> bool:
    """The test of Django's deploy check (security.W009): short, repetitive, or Django's dev prefix."""
    return len(key) < 50 or len(set(key)) < 5 or key.startswith("django-insecure-")


if PRODUCTION and _weak_secret_key(SECRET_KEY):
    raise ImproperlyConfigured(
        "PRODUCTION is on: SECRET_KEY is missing, the development default or weak (it needs 50+ characters, "
        "5+ distinct ones, no 'django-insecure-' prefix). Set it to a long random value, e.g. "
        '`python -c "import secrets; print(secrets.token_urlsafe(50))"`.'
    )

DEBUG = env_bool("DEBUG", False)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("PRODUCTION is on: DEBUG must be off (it shows settings and code to visitors).")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])


def _pod_address(raw: str) -> str | None:
    """POD_IP (Kubernetes' downward API status.podIP) as an ALLOWED_HOSTS entry: Prometheus's
    annotation-based discovery and the kubelet's probes send `<pod IP>:<port>` as Host. The
    pod's own address only, never a pattern: an IPv6 one in brackets, as the Host header has it."""
    if not raw.strip():
        return None
    try:
        address = ipaddress.ip_address(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"POD_IP must be an IP address (status.podIP), got {raw!r}.") from None
    return f"[{address}]" if address.version == 6 else str(address)


POD_IP = _pod_address(env_str("POD_IP", ""))
if POD_IP and POD_IP not in ALLOWED_HOSTS:
    ALLOWED_HOSTS.append(POD_IP)

# --- TLS and request limits ---------------------------------------------------------------
# For a deployment behind TLS (its own certificate or a TLS-terminating proxy). All default off,
# so that plain-http development (`docker compose up` on localhost, `make run`) keeps working;
# `manage.py check --deploy` passes once PRODUCTION=1, SECRET_KEY and all of them are set.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Probes (the Docker healthcheck, load balancers, Prometheus) speak plain http inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$", r"^readyz/?$", r"^metrics/?$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)


def _proxy_ssl_header(raw: str) -> tuple[str, str] | None:
    """`X-Forwarded-Proto` or `X-Forwarded-Proto,https` (or Django's `HTTP_X_FORWARDED_PROTO,https`)
    -> the (META key, value) pair Django wants; empty -> None. Opt-in: only behind a proxy that
    always sets (or strips) this header, or any client could claim https."""
    if not raw.strip():
        return None
    name, _, value = (part.strip() for part in raw.partition(","))
    key = name.upper().replace("-", "_")
    if not key or not key.replace("_", "").isalnum():
        raise ImproperlyConfigured(f"SECURE_PROXY_SSL_HEADER must be a header name [,value], got {raw!r}.")
    return (key if key.startswith("HTTP_") else f"HTTP_{key}", value or "https")


SECURE_PROXY_SSL_HEADER = _proxy_ssl_header(env_str("SECURE_PROXY_SSL_HEADER", ""))
# Origins (scheme://host[:port]) allowed to POST forms (the admin login) from another origin,
# e.g. the public https:// name when a proxy changes the Host the server sees.
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
if any("://" not in origin for origin in CSRF_TRUSTED_ORIGINS):
    raise ImproperlyConfigured("CSRF_TRUSTED_ORIGINS entries need a scheme, e.g. https://queue.example.com.")

# The largest request body accepted; a larger one is answered 413 before it is read
# (factorize_app.api.bodies.RequestBodyLimitMiddleware). 1 MiB holds a batch of 1000
# inputs of the longest numbers (about 120 bytes each) several times over.
MAX_REQUEST_BYTES = env_int("MAX_REQUEST_BYTES", 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES
# Per web process: bytes of request bodies above LARGE_BODY_BYTES (batches) read and parsed at
# once; a large body that does not fit is answered 503 (Retry-After: 1) before it is read, so a
# process's memory stays bounded however many large bodies arrive together (a 1 MB batch of 1,000
# items costs 12-15 MB while parsed, validated and answered). 0: no budget.
BODY_MEMORY_BUDGET = env_int("BODY_MEMORY_BUDGET", 4 * 1024 * 1024)
LARGE_BODY_BYTES = env_int("LARGE_BODY_BYTES", 64 * 1024)

INSTALLED_APPS = [
    # Listed before django_rq so that its `rqworker` command (all queues by default) wins.
    "factorize_app",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_rq",
]

MIDDLEWARE = [
    "factorize_app.api.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "factorize_app.api.bodies.RequestBodyLimitMiddleware",
    "factorize_app.api.bodies.LargeBodyBudgetMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "factorize_app.api.exceptions.RedisUnavailableMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks
]

# Passwords are tried only on the login pages (the admin's, the browsable API's; the API itself takes
# API keys, never passwords); django-axes locks a
# client address out of it for ADMIN_LOGIN_LOCKOUT_MINUTES after ADMIN_LOGIN_FAILURE_LIMIT
# failed logins, counting addresses exactly as the rate limits do (TRUSTED_PROXIES).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("ADMIN_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("ADMIN_LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False  # no banner at every start; failed logins are still logged
AXES_CLIENT_IP_CALLABLE = "factorize_app.api.identity.clients.request_client_address"

ROOT_URLCONF = "project.urls"
CSRF_FAILURE_VIEW = "factorize_app.api.exceptions.csrf_failure"
WSGI_APPLICATION = "project.wsgi.application"
# The seed's clients POST to /factorize: routes accept both spellings, so never redirect.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"), conn_max_age=60)
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# The Docker image runs collectstatic at build time (STATIC_COLLECTED=1): hashed, compressed
# files with far-future caching. Elsewhere WhiteNoise serves straight from the apps' folders.
STATIC_COLLECTED = env_bool("STATIC_COLLECTED", False)
WHITENOISE_USE_FINDERS = not STATIC_COLLECTED
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_COLLECTED
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
if not STATIC_COLLECTED:
    warnings.filterwarnings("ignore", message="No directory at")

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "factorize_app.api.parsers.BoundedJSONParser",
        # For the browsable API's HTML form; each field once (api/parsers.py), undocumented.
        "factorize_app.api.parsers.SingleValueFormParser",
        "factorize_app.api.parsers.SingleValueMultiPartParser",
    ],
    # API keys (Authorization: Bearer), and the session of a user logged in on the admin's or the
    # browsable API's login page (CSRF-checked). No Basic authentication: passwords are tried on
    # those login pages only, throttled by django-axes, never on every endpoint.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "factorize_app.api.identity.authentication.ApiKeyAuthentication",
        "factorize_app.api.identity.authentication.SessionCookieAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["factorize_app.api.identity.authentication.ApiKeyRequired"],
    "EXCEPTION_HANDLER": "factorize_app.api.exceptions.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# --- API keys (factorize_app.api.identity.api_keys) ---------------------------------------
# A presented key is always checked (a bad one is a 401). REQUIRE_API_KEY=1: every API request
# needs a valid key or a logged-in user (401 otherwise); /healthz and /readyz stay open, and
# /metrics needs a key or a staff login only with METRICS_REQUIRE_API_KEY=1.
REQUIRE_API_KEY = env_bool("REQUIRE_API_KEY", False)
METRICS_REQUIRE_API_KEY = env_bool("METRICS_REQUIRE_API_KEY", False)
# Each web process caches key lookups (valid and refused) this long: a revoked key keeps working
# for up to this many seconds. 0: every request with a key reads the database.
API_KEY_CACHE_SECONDS = env_int("API_KEY_CACHE_SECONDS", 5)
# Uses (use count, last used) are counted in memory and written per key at most this often.
API_KEY_USE_FLUSH_SECONDS = env_int("API_KEY_USE_FLUSH_SECONDS", 30)
if API_KEY_CACHE_SECONDS < 0 or API_KEY_USE_FLUSH_SECONDS < 1:
    raise ImproperlyConfigured("API_KEY_CACHE_SECONDS must be 0 or more, API_KEY_USE_FLUSH_SECONDS 1 or more.")

SPECTACULAR_SETTINGS = {
    "TITLE": "Factorize job queue",
    "DESCRIPTION": (
        "Submit work over HTTP to workers that keep their model loaded; poll by posting the same input "
        "again (or GET /jobs/{id}) until `done` is true."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc from the drf-spectacular-sidecar package: the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Request bodies are documented as JSON only. Listing the form and multipart parsers too made
    # generated clients (openapi-python-client) send every field in all three encodings at once.
    "PARSER_WHITELIST": ["factorize_app.api.parsers.BoundedJSONParser"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "factorize_app.api.schema.document_paths_without_slash",
        "factorize_app.api.schema.document_authentication_errors",
    ],
}

# Every line a process writes (ours, RQ's, Django's, granian's and gunicorn's) in one format:
# "json" (one object per line, for log shippers) or "text". RQ's routine maintenance lines (every
# 10 s per idle worker) are logged at DEBUG (project/log_format.py).
LOG_FORMAT = env_str("LOG_FORMAT", "json")
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
try:
    LOGGING = logging_config(LOG_FORMAT, LOG_LEVEL)
except ValueError as exc:
    raise ImproperlyConfigured(str(exc)) from None

# --- The job queue -------------------------------------------------------------------------

# "async": workers run jobs from Redis queues; "sync": the web process computes (no Redis).
EXECUTION_MODE = env_str("EXECUTION_MODE", "async")
if EXECUTION_MODE not in ("async", "sync"):
    raise ImproperlyConfigured("EXECUTION_MODE must be 'async' or 'sync'.")

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# A bounded socket timeout: with Redis down, requests fail fast with a 503 instead of hanging.
REDIS_SOCKET_TIMEOUT = env_int("REDIS_SOCKET_TIMEOUT", 5)
# Connections per process and pool: every server thread may hold one (a long poll holds two).
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 1000)
# New jobs are refused (503, "the job queue is full") once Redis uses this fraction of its
# maxmemory, leaving the rest for the results of jobs already queued or running; 1 or more leaves
# refusing to Redis itself. No maxmemory (0), no mark. Read from INFO at most once a second.
try:
    REDIS_MEMORY_HIGH_WATER = float(env_str("REDIS_MEMORY_HIGH_WATER", "0.9"))
except ValueError:
    raise ImproperlyConfigured("REDIS_MEMORY_HIGH_WATER must be a number (a fraction of maxmemory).") from None
if not REDIS_MEMORY_HIGH_WATER > 0:
    raise ImproperlyConfigured("REDIS_MEMORY_HIGH_WATER must be above 0 (a fraction of maxmemory, e.g. 0.9).")

# Where models that are trained or downloaded once keep their files (the digits classifier).
MODEL_DIR = env_str("MODEL_DIR", str(BASE_DIR / ".run" / "models"))
# Registered task types: every package under factorize_app/tasks/ that declares a TASK_TYPE, in
# order of name (the order of the queues a worker for several takes from). Their names are the RQ
# queue names. TASK_TYPES narrows or extends the set: dotted paths of TaskType objects or folder
# names ("digits,primes"), where `*` stands for every discovered one ("*,bench.task_types.NOOP").
DEFAULT_TASK_TYPES = discover_task_types(BASE_DIR / "factorize_app" / "tasks")
TASK_TYPES = env_list("TASK_TYPES", DEFAULT_TASK_TYPES) or DEFAULT_TASK_TYPES  # empty: as unset
# How long a queued job that nobody polls waits before it expires unrun; every poll extends it.
JOB_TTL = env_int("JOB_TTL", 60)
# How long a finished job's result answers a repeated POST without running again.
RESULT_TTL = env_int("RESULT_TTL", 86400)
FAILURE_TTL = env_int("FAILURE_TTL", 3600)
JOB_TIMEOUT = env_int("JOB_TIMEOUT", 300)
MAX_NUMBER_DIGITS = env_int("MAX_NUMBER_DIGITS", 100)
# Longest `Prefer: wait=N` a request may hold for its job to finish.
MAX_WAIT = env_int("MAX_WAIT", 60)
# Seconds a pending answer suggests waiting before the next poll.
POLL_RETRY_AFTER = env_int("POLL_RETRY_AFTER", 1)
# Sync mode: processes per web process that run handlers (each loads every model once).
SYNC_PROCESSES = env_int("SYNC_PROCESSES", 1)
# Most items in one `POST /<type>/batch`.
MAX_BATCH = env_int("MAX_BATCH", 1000)
# fair: workers serve the clients of a task type by least worker time used (a client is its API
# key, else its address), so one client's 10,000 jobs do not hold up everyone else's, and a client
# holding more than its share of workers (or the heaviest, when long jobs hold every worker and a
# client with nothing running waits) gives one back to a waiting client; fifo: first come, first served.
QUEUE_ORDER = env_str("QUEUE_ORDER", "fair")
if QUEUE_ORDER not in ("fair", "fifo"):
    raise ImproperlyConfigured(f"QUEUE_ORDER must be fair or fifo, got {QUEUE_ORDER!r}.")
# Per client (its API key, else its address) and task type, in fair order: at most this many
# jobs queued (a submit beyond it is a 429 naming the limit) and running (more wait their turn;
# 0: no cap of its own, the fair share of workers still applies). API keys may override both.
MAX_QUEUED_PER_CLIENT = env_int("MAX_QUEUED_PER_CLIENT", 10000)
MAX_RUNNING_PER_CLIENT = env_int("MAX_RUNNING_PER_CLIENT", 0)
# Per client (its API key, else its address): the Redis memory its jobs may hold at once, queued
# inputs and kept results together (factorize_app/jobs/budgets.py); a submit of new jobs beyond
# it is a 429 naming REDIS_CLIENT_SHARE, until its oldest jobs' records expire. The budget is
# REDIS_CLIENT_BYTES if above 0, else REDIS_CLIENT_SHARE of Redis's maxmemory (no maxmemory: no
# budget); each new job is charged REDIS_JOB_BYTES (measured: 11.8 KB for a finished
# factorization's job hash, registries, owners, events and result) plus twice its input's JSON.
try:
    REDIS_CLIENT_SHARE = float(env_str("REDIS_CLIENT_SHARE", "0.1"))
except ValueError:
    raise ImproperlyConfigured("REDIS_CLIENT_SHARE must be a number (a fraction of maxmemory).") from None
REDIS_CLIENT_BYTES = env_int("REDIS_CLIENT_BYTES", 0)
REDIS_JOB_BYTES = env_int("REDIS_JOB_BYTES", 12_000)
# Per client and web process: requests held open at once (long polls, event streams); beyond
# it a request answers at once (its Prefer: wait is not applied; a stream sends its state and ends).
MAX_HELD_PER_CLIENT = env_int("MAX_HELD_PER_CLIENT", 32)
# Per web process, all clients together: requests held open at once (long polls, waiting submits,
# event streams), below the server's WEB_THREADS so that health probes and ordinary polls always
# find a thread (64 of them, or a quarter of a smaller server's); beyond it a request answers at
# once, as beyond the per-client cap.
_WEB_THREADS = env_int("WEB_THREADS", 640)  # serve.sh's default
MAX_HELD_REQUESTS = env_int("MAX_HELD_REQUESTS", max(1, _WEB_THREADS - min(64, _WEB_THREADS // 4)))
# The key of job ids' HMAC (ids no one can compute from a guessed input). Empty (the default): the
# deployment's own key, made once and kept in Redis beside the jobs (factorize:job-id-key), apart
# from SECRET_KEY, which can then be rotated freely. Set: it overrides the stored key; changing it
# changes every id (existing jobs then answer 404 and fail when they run).
JOB_ID_KEY = env_str("JOB_ID_KEY", "")
# Requests per client (DRF's rate syntax: "N/second", "N/minute", ...; empty: no limit).
# Submits are POSTs (a repeated POST is also the seed's poll); polls are GETs of jobs and queues.
# Each item of a batch counts as one submit: the default window is a minute, so that a batch of
# MAX_BATCH fits in it (6000/minute is the 100 a second of a steady client).
THROTTLE_SUBMIT = env_str("THROTTLE_SUBMIT", "6000/minute")
THROTTLE_POLL = env_str("THROTTLE_POLL", "200/second")
# Failed authentications (unknown, revoked or malformed API keys) per client address (an IPv6
# /64 counts as one) and web process; past it, that address's keys are answered 429 without a
# database lookup until the window ends (a key already verified still works). Empty: no limit.
THROTTLE_AUTH_FAILURES = env_str("THROTTLE_AUTH_FAILURES", "20/minute")
# Completion webhooks (`"webhook": "<url>"` on a submit). Deliveries are signed as Standard
# Webhooks specify with WEBHOOK_SECRET (`whsec_<base64 key>`; empty: webhooks are refused), sent
# only to the hosts of WEBHOOK_ALLOWED_HOSTS (comma-separated `host` or `host:port`; empty:
# webhooks are off), each attempt within WEBHOOK_TIMEOUT seconds, retried after the delays of
# WEBHOOK_RETRY_DELAYS (seconds, comma-separated, jittered) and then recorded failed. The webhooks
# worker sends up to WEBHOOK_CONCURRENCY at once; delivery records are kept WEBHOOK_RETENTION s.
# WEBHOOK_TIMEOUT bounds a whole attempt (look-up, connect, the answer's headers and body).
# Shares of the worker's threads: at most WEBHOOK_CONCURRENCY_PER_RECEIVER attempts at once to one
# receiver (scheme, host, port), WEBHOOK_CONCURRENCY_PER_CLIENT for one client's subscriptions.
# Caps: WEBHOOK_MAX_PER_JOB subscriptions (URLs) per client on one job, WEBHOOK_MAX_PER_CLIENT
# live at once per client (watching a job or its `completed` delivery under way); each new one
# counts as a submit against THROTTLE_SUBMIT, and none is made past REDIS_MEMORY_HIGH_WATER.


def _webhook_secret(raw: str) -> str:
    """A malformed secret refuses the start: every delivery would be signed with the wrong key."""
    import base64

    key = raw.removeprefix("whsec_")
    try:
        valid = raw.startswith("whsec_") and len(base64.b64decode(key + "=" * (-len(key) % 4), validate=True)) >= 16
    except ValueError:
        valid = False
    if raw and not valid:
        raise ImproperlyConfigured(
            "WEBHOOK_SECRET must be `whsec_` and a base64 key of 16+ bytes, e.g. whsec_$(openssl rand -base64 32)."
        )
    return raw


def _seconds_list(name: str, default: list[str]) -> list[float]:
    try:
        return [float(item) for item in env_list(name, default)]
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be comma-separated seconds, e.g. 1,5,30.") from None


WEBHOOK_SECRET = _webhook_secret(env_str("WEBHOOK_SECRET", ""))
WEBHOOK_ALLOWED_HOSTS = [host.lower() for host in env_list("WEBHOOK_ALLOWED_HOSTS", [])]
WEBHOOK_TIMEOUT = float(env_str("WEBHOOK_TIMEOUT", "10"))
WEBHOOK_RETRY_DELAYS = _seconds_list("WEBHOOK_RETRY_DELAYS", ["1", "5", "30", "120", "600"])
WEBHOOK_CONCURRENCY = env_int("WEBHOOK_CONCURRENCY", 16)
WEBHOOK_RETENTION = env_int("WEBHOOK_RETENTION", 86400)
WEBHOOK_CONCURRENCY_PER_RECEIVER = env_int("WEBHOOK_CONCURRENCY_PER_RECEIVER", 2)
WEBHOOK_CONCURRENCY_PER_CLIENT = env_int("WEBHOOK_CONCURRENCY_PER_CLIENT", max(1, WEBHOOK_CONCURRENCY // 4))
WEBHOOK_MAX_PER_JOB = env_int("WEBHOOK_MAX_PER_JOB", 5)
WEBHOOK_MAX_PER_CLIENT = env_int("WEBHOOK_MAX_PER_CLIENT", 1000)
# Behind a reverse proxy, the request header carrying the client's address, as the proxy sets it
# (e.g. X-Real-IP, or X-Forwarded-For to which each proxy appends the address it saw), believed
# only on connections from TRUSTED_PROXIES (addresses or CIDR networks, e.g. 172.16.0.0/12).
# Empty: the connection's address, and any X-Forwarded-For a client sends is ignored.
CLIENT_IP_HEADER = env_str("CLIENT_IP_HEADER", "")
TRUSTED_PROXIES = env_networks("TRUSTED_PROXIES")
if CLIENT_IP_HEADER and not TRUSTED_PROXIES:
    raise ImproperlyConfigured(
        "CLIENT_IP_HEADER is set but TRUSTED_PROXIES is empty: name the proxy's address or network "
        "(e.g. TRUSTED_PROXIES=172.16.0.0/12), or the header would be believed from anyone."
    )
# A job whose worker died (SIGKILL, lost node) is queued again this many times, then failed.
JOB_MAX_RETRIES = env_int("JOB_MAX_RETRIES", 2)

# Workers take up to WORKER_BATCH_SIZE jobs of a queue per Redis round trip, fewer when jobs are
# slow: a batch aims at WORKER_BATCH_SECONDS of work, so a warm stop or a fair turn is never far.
WORKER_BATCH_SIZE = env_int("WORKER_BATCH_SIZE", 100)
WORKER_BATCH_SECONDS = float(env_str("WORKER_BATCH_SECONDS", "0.2"))
# A running worker renews its jobs' lease every WORKER_HEARTBEAT seconds; a lease lasts three
# beats, so a dead worker's jobs are queued again (or failed) about 3 beats plus one maintenance
# interval after it died.
WORKER_HEARTBEAT = env_int("WORKER_HEARTBEAT", 5)
WORKER_MAINTENANCE_INTERVAL = env_int("WORKER_MAINTENANCE_INTERVAL", 10)

# Event streams (`GET /jobs/<id>` with `Accept: text/event-stream`): a comment at least this often
# keeps proxies from closing an idle stream and finds clients that left.
EVENT_STREAM_KEEPALIVE = float(env_str("EVENT_STREAM_KEEPALIVE", "15"))
# A finished job's events are kept this long (at most its result's TTL), for clients reconnecting
# with Last-Event-ID after the end.
EVENT_STREAM_RETENTION = env_int("EVENT_STREAM_RETENTION", 600)
# Each open stream holds one of a web process's WEB_THREADS threads: beyond this many per process,
# a stream is refused (503) so that ordinary polls always find a free thread.
EVENT_STREAMS_MAX = env_int("EVENT_STREAMS_MAX", max(1, env_int("WEB_THREADS", 640) - 64))  # serve.sh's default

# django-rq: one connection for every queue; the queues themselves are derived from TASK_TYPES
# when the app loads (factorize_app.apps), so a task type is declared in one place only.
# High availability: with REDIS_SENTINELS ("host:port,host:port") set, the sentinels name the
# master (REDIS_SENTINEL_MASTER) and clients follow it through a failover; REDIS_URL then gives
# only the database number and password. Empty: a plain Redis at REDIS_URL.
REDIS_SENTINELS = env_host_ports("REDIS_SENTINELS")
REDIS_SENTINEL_MASTER = env_str("REDIS_SENTINEL_MASTER", "mymaster")
if REDIS_SENTINELS:
    RQ_CONNECTION = redis_sentinel_connection(
        REDIS_URL,
        sentinels=REDIS_SENTINELS,
        master_name=REDIS_SENTINEL_MASTER,
        timeout=REDIS_SOCKET_TIMEOUT,
        max_connections=REDIS_MAX_CONNECTIONS,
    )
else:
    RQ_CONNECTION = {
        "URL": redis_url_with_options(REDIS_URL, timeout=REDIS_SOCKET_TIMEOUT, max_connections=REDIS_MAX_CONNECTIONS)
    }
RQ_QUEUES: dict = {}
RQ = {"WORKER_CLASS": "factorize_app.worker.WarmWorker"}
RQ_SHOW_ADMIN_LINK = True
