"""The one settings module: every knob is an environment variable with a safe default, declared
with its kind, default and help in project/environment/ and read here through `env`.

Development works with nothing set (an insecure, loudly named SECRET_KEY and SQLite);
production mode (`PRODUCTION=1`) refuses to start without a real SECRET_KEY.
"""

import warnings
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from project.env import redis_sentinel_connection, redis_url_with_options
from project.environment import env
from project.files_storage import job_files_storage
from project.log_format import logging_config
from project.task_discovery import discover_task_types

BASE_DIR = Path(__file__).resolve().parent.parent

INSECURE_DEV_SECRET_KEY = "django-insecure-development-only-do-not-deploy"
SECRET_KEY = env.SECRET_KEY or INSECURE_DEV_SECRET_KEY
PRODUCTION = env.PRODUCTION


def _weak_secret_key(key: str) -> bool:
    """The test of Django's deploy check (security.W009): short, repetitive, or Django's dev prefix."""
    return len(key) < 50 or len(set(key)) < 5 or key.startswith("django-insecure-")


if PRODUCTION and _weak_secret_key(SECRET_KEY):
    raise ImproperlyConfigured(
        "PRODUCTION is on: SECRET_KEY is missing, the development default or weak (it needs 50+ characters, "
        "5+ distinct ones, no 'django-insecure-' prefix). Set it to a long random value, e.g. "
        '`python -c "import secrets; print(secrets.token_urlsafe(50))"`.'
    )

DEBUG = env.DEBUG
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("PRODUCTION is on: DEBUG must be off (it shows settings and code to visitors).")
ALLOWED_HOSTS = env.ALLOWED_HOSTS

# The pod's own address (Kubernetes' status.podIP): probes and scrapes by address send it as Host.
POD_IP = env.POD_IP
if POD_IP and POD_IP not in ALLOWED_HOSTS:
    ALLOWED_HOSTS.append(POD_IP)

# --- TLS and request limits (all off by default: plain-http development keeps working) ---------
SECURE_SSL_REDIRECT = env.SECURE_SSL_REDIRECT
# Probes (the Docker healthcheck, load balancers, Prometheus) speak plain http inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$", r"^readyz/?$", r"^metrics/?$"]
SESSION_COOKIE_SECURE = env.SESSION_COOKIE_SECURE
CSRF_COOKIE_SECURE = env.CSRF_COOKIE_SECURE
SECURE_HSTS_SECONDS = env.SECURE_HSTS_SECONDS
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.SECURE_HSTS_INCLUDE_SUBDOMAINS
SECURE_HSTS_PRELOAD = env.SECURE_HSTS_PRELOAD
SECURE_PROXY_SSL_HEADER = env.SECURE_PROXY_SSL_HEADER
CSRF_TRUSTED_ORIGINS = env.CSRF_TRUSTED_ORIGINS
if any("://" not in origin for origin in CSRF_TRUSTED_ORIGINS):
    raise ImproperlyConfigured("CSRF_TRUSTED_ORIGINS entries need a scheme, e.g. https://queue.example.com.")

# Bodies: above MAX_REQUEST_BYTES, 413 before it is read (api.bodies.RequestBodyLimitMiddleware);
# above LARGE_BODY_BYTES, counted against the process's BODY_MEMORY_BUDGET (api.bodies).
MAX_REQUEST_BYTES = env.MAX_REQUEST_BYTES
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES
BODY_MEMORY_BUDGET = env.BODY_MEMORY_BUDGET
LARGE_BODY_BYTES = env.LARGE_BODY_BYTES

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
# API keys, never passwords); django-axes locks a client address out of them, counting addresses
# exactly as the rate limits do (TRUSTED_PROXIES).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.ADMIN_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=env.ADMIN_LOGIN_LOCKOUT_MINUTES)
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
    "default": dj_database_url.parse(env.DATABASE_URL or f"sqlite:///{BASE_DIR / 'db.sqlite3'}", conn_max_age=60)
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
STATIC_COLLECTED = env.STATIC_COLLECTED
WHITENOISE_USE_FINDERS = not STATIC_COLLECTED
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_COLLECTED
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
    # Jobs' files (factorize_app/jobs/files.py): bytes referred to from Redis, kept out of it, in a
    # directory (FILES_STORAGE=filesystem, FILES_DIR) or an S3-compatible bucket (FILES_S3_*).
    "job_files": job_files_storage(env, base_dir=BASE_DIR),
}
JOB_FILES_STORAGE = "job_files"
FILES_SWEEP_INTERVAL = env.FILES_SWEEP_INTERVAL
FILES_SWEEP_LIMIT = env.FILES_SWEEP_LIMIT
# Uploads (POST /files, factorize_app/api/files.py): the largest, how long each lives, and the
# bytes of live uploads per client and in total (factorize_app/jobs/upload_budgets.py).
UPLOAD_MAX_BYTES = env.UPLOAD_MAX_BYTES
UPLOAD_TTL = env.UPLOAD_TTL
UPLOAD_CLIENT_BYTES = env.UPLOAD_CLIENT_BYTES
UPLOAD_TOTAL_BYTES = env.UPLOAD_TOTAL_BYTES

# Files in jobs' inputs (factorize_app/jobs/file_inputs.py).
FILE_INPUT_MAX_BYTES = env.FILE_INPUT_MAX_BYTES
FILE_URL_ALLOWED_HOSTS = env.FILE_URL_ALLOWED_HOSTS
FILE_URL_TIMEOUT = env.FILE_URL_TIMEOUT
FILE_INPUTS_PER_REQUEST = env.FILE_INPUTS_PER_REQUEST
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

# --- API keys (factorize_app.api.identity.api_keys) ---------------------------------
REQUIRE_API_KEY = env.REQUIRE_API_KEY
METRICS_REQUIRE_API_KEY = env.METRICS_REQUIRE_API_KEY
API_KEY_CACHE_SECONDS = env.API_KEY_CACHE_SECONDS
API_KEY_USE_FLUSH_SECONDS = env.API_KEY_USE_FLUSH_SECONDS

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

# Every line a process writes, in one format (project/log_format.py).
LOG_FORMAT = env.LOG_FORMAT
LOG_LEVEL = env.LOG_LEVEL
try:
    LOGGING = logging_config(LOG_FORMAT, LOG_LEVEL)
except ValueError as exc:
    raise ImproperlyConfigured(str(exc)) from None

# --- The job queue -------------------------------------------------------------------------
EXECUTION_MODE = env.EXECUTION_MODE
# Registered task types: every package under factorize_app/tasks/ that declares a TASK_TYPE, in
# order of name (the order of the queues a worker for several takes from); TASK_TYPES narrows or
# extends the set, `*` standing for these.
DEFAULT_TASK_TYPES = discover_task_types(BASE_DIR / "factorize_app" / "tasks")
TASK_TYPES = env.TASK_TYPES or DEFAULT_TASK_TYPES  # empty: as unset
MODEL_DIR = env.MODEL_DIR or str(BASE_DIR / ".run" / "models")
JOB_TTL = env.JOB_TTL
RESULT_TTL = env.RESULT_TTL
FAILURE_TTL = env.FAILURE_TTL
JOB_TIMEOUT = env.JOB_TIMEOUT
JOB_MAX_RETRIES = env.JOB_MAX_RETRIES
JOB_ID_KEY = env.JOB_ID_KEY
MAX_NUMBER_DIGITS = env.MAX_NUMBER_DIGITS
MAX_WAIT = env.MAX_WAIT
POLL_RETRY_AFTER = env.POLL_RETRY_AFTER
SYNC_PROCESSES = env.SYNC_PROCESSES
MAX_BATCH = env.MAX_BATCH
QUEUE_ORDER = env.QUEUE_ORDER
MAX_QUEUED_PER_CLIENT = env.MAX_QUEUED_PER_CLIENT
MAX_RUNNING_PER_CLIENT = env.MAX_RUNNING_PER_CLIENT
# Files a handler returns and results too large for Redis (factorize_app/jobs/result_files.py).
RESULT_MAX_INLINE_BYTES = env.RESULT_MAX_INLINE_BYTES
OUTPUT_FILE_MAX_BYTES = env.OUTPUT_FILE_MAX_BYTES
OUTPUT_STORE_RETRY_SECONDS = env.OUTPUT_STORE_RETRY_SECONDS
PUBLIC_URL = env.PUBLIC_URL.rstrip("/")

# --- What one client, and all together, may hold (docs/security.md) -------------------------
THROTTLE_SUBMIT = env.THROTTLE_SUBMIT
THROTTLE_POLL = env.THROTTLE_POLL
THROTTLE_AUTH_FAILURES = env.THROTTLE_AUTH_FAILURES
REDIS_CLIENT_SHARE = env.REDIS_CLIENT_SHARE
REDIS_CLIENT_BYTES = env.REDIS_CLIENT_BYTES
REDIS_JOB_BYTES = env.REDIS_JOB_BYTES
MAX_HELD_PER_CLIENT = env.MAX_HELD_PER_CLIENT
# Held requests and event streams stay below the server's threads (serve.sh's WEB_THREADS), so
# that health probes and ordinary polls always find one: 64 of them, or a quarter of fewer.
_WEB_THREADS = env.WEB_THREADS
MAX_HELD_REQUESTS = env.MAX_HELD_REQUESTS
if MAX_HELD_REQUESTS is None:
    MAX_HELD_REQUESTS = max(1, _WEB_THREADS - min(64, _WEB_THREADS // 4))
EVENT_STREAMS_MAX = env.EVENT_STREAMS_MAX
if EVENT_STREAMS_MAX is None:
    EVENT_STREAMS_MAX = max(1, _WEB_THREADS - 64)
EVENT_STREAM_KEEPALIVE = env.EVENT_STREAM_KEEPALIVE
EVENT_STREAM_RETENTION = env.EVENT_STREAM_RETENTION

# Streamed outputs: the limits of what one job streams (factorize_app/jobs/outputs.py).
OUTPUT_PIECE_MAX_BYTES = env.OUTPUT_PIECE_MAX_BYTES
OUTPUT_MAX_PIECES = env.OUTPUT_MAX_PIECES
OUTPUT_MAX_BYTES = env.OUTPUT_MAX_BYTES

# Completion webhooks, sent by the webhooks worker (factorize_app/webhooks).
WEBHOOK_SECRET = env.WEBHOOK_SECRET
WEBHOOK_ALLOWED_HOSTS = [host.lower() for host in env.WEBHOOK_ALLOWED_HOSTS]
WEBHOOK_TIMEOUT = env.WEBHOOK_TIMEOUT
WEBHOOK_RETRY_DELAYS = env.WEBHOOK_RETRY_DELAYS
WEBHOOK_CONCURRENCY = env.WEBHOOK_CONCURRENCY
WEBHOOK_RETENTION = env.WEBHOOK_RETENTION
WEBHOOK_CONCURRENCY_PER_RECEIVER = env.WEBHOOK_CONCURRENCY_PER_RECEIVER
WEBHOOK_CONCURRENCY_PER_CLIENT = env.WEBHOOK_CONCURRENCY_PER_CLIENT
if WEBHOOK_CONCURRENCY_PER_CLIENT is None:
    WEBHOOK_CONCURRENCY_PER_CLIENT = max(1, WEBHOOK_CONCURRENCY // 4)
WEBHOOK_MAX_PER_JOB = env.WEBHOOK_MAX_PER_JOB
WEBHOOK_MAX_PER_CLIENT = env.WEBHOOK_MAX_PER_CLIENT

# The client's address behind a reverse proxy, believed only from TRUSTED_PROXIES.
CLIENT_IP_HEADER = env.CLIENT_IP_HEADER
TRUSTED_PROXIES = env.TRUSTED_PROXIES
if CLIENT_IP_HEADER and not TRUSTED_PROXIES:
    raise ImproperlyConfigured(
        "CLIENT_IP_HEADER is set but TRUSTED_PROXIES is empty: name the proxy's address or network "
        "(e.g. TRUSTED_PROXIES=172.16.0.0/12), or the header would be believed from anyone."
    )

WORKER_BATCH_SIZE = env.WORKER_BATCH_SIZE
WORKER_BATCH_SECONDS = env.WORKER_BATCH_SECONDS
WORKER_HEARTBEAT = env.WORKER_HEARTBEAT
WORKER_MAINTENANCE_INTERVAL = env.WORKER_MAINTENANCE_INTERVAL

# --- Redis -----------------------------------------------------------------------------------
REDIS_URL = env.REDIS_URL
# A bounded socket timeout: with Redis down, requests fail fast with a 503 instead of hanging.
REDIS_SOCKET_TIMEOUT = env.REDIS_SOCKET_TIMEOUT
REDIS_MAX_CONNECTIONS = env.REDIS_MAX_CONNECTIONS
REDIS_MEMORY_HIGH_WATER = env.REDIS_MEMORY_HIGH_WATER
# django-rq: one connection for every queue; the queues themselves are derived from TASK_TYPES
# when the app loads (factorize_app.apps), so a task type is declared in one place only.
# High availability: with REDIS_SENTINELS ("host:port,host:port") set, the sentinels name the
# master (REDIS_SENTINEL_MASTER) and clients follow it through a failover; REDIS_URL then gives
# only the database number and password. Empty: a plain Redis at REDIS_URL.
REDIS_SENTINELS = env.REDIS_SENTINELS
REDIS_SENTINEL_MASTER = env.REDIS_SENTINEL_MASTER
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
# A type on a Redis of its own (docs/type-redis.md): its queue's django-rq connection is its URL
# (factorize_app.apps checks the names once the task types are known).
TASK_REDIS_URLS = env.TASK_REDIS_URLS
if TASK_REDIS_URLS and REDIS_SENTINELS:
    raise ImproperlyConfigured(
        "TASK_REDIS_URLS cannot be combined with REDIS_SENTINELS: a type's own Redis is a plain "
        "redis:// URL, and a failover of the home Redis would not move it. Unset one of them."
    )
TASK_RQ_CONNECTIONS = {
    name: {"URL": redis_url_with_options(url, timeout=REDIS_SOCKET_TIMEOUT, max_connections=REDIS_MAX_CONNECTIONS)}
    for name, url in TASK_REDIS_URLS.items()
}
RQ_QUEUES: dict = {}
RQ = {"WORKER_CLASS": "factorize_app.worker.WarmWorker"}
RQ_SHOW_ADMIN_LINK = True
