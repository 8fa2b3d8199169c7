"""The one settings module: every knob is an environment variable with a safe default.

Development works with nothing set (an insecure, loudly named SECRET_KEY and SQLite);
production mode (`PRODUCTION=1`) refuses to start without a real SECRET_KEY.
"""

import warnings
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from project.env import env_bool, env_int, env_list, env_str, redis_url_with_options

BASE_DIR = Path(__file__).resolve().parent.parent

INSECURE_DEV_SECRET_KEY = "django-insecure-development-only-do-not-deploy"
SECRET_KEY = env_str("SECRET_KEY", "") or INSECURE_DEV_SECRET_KEY
PRODUCTION = env_bool("PRODUCTION", False)
if PRODUCTION and SECRET_KEY == INSECURE_DEV_SECRET_KEY:
    raise ImproperlyConfigured("PRODUCTION is on: set SECRET_KEY to a long random value.")

DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    # Listed before django_rq so that its `rqworker` command (all queues by default) wins.
    "factorize_app",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_rq",
]

MIDDLEWARE = [
    "factorize_app.api.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "factorize_app.api.middleware.RedisUnavailableMiddleware",
]

ROOT_URLCONF = "project.urls"
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
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "factorize_app.api.exceptions.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

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
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "factorize_app.api.schema.document_paths_without_slash",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "project.log_format.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "structured": {"class": "logging.StreamHandler", "formatter": "json"},
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # The service's own events (one line per job start, finish and failure) as JSON lines.
    "loggers": {
        "factorize_app": {"handlers": ["structured"], "level": env_str("LOG_LEVEL", "INFO"), "propagate": False}
    },
}

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

# Registered task types: dotted paths to `TaskType` objects. Their names are the RQ queue names.
DEFAULT_TASK_TYPES = ["factorize_app.tasks.factorization.TASK_TYPE", "factorize_app.tasks.primes.TASK_TYPE"]
TASK_TYPES = env_list("TASK_TYPES", DEFAULT_TASK_TYPES)
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
# Most items in one `POST /<type>/batch`.
MAX_BATCH = env_int("MAX_BATCH", 1000)
# fair: workers serve the clients of a task type in turn (a client is its API token, else its
# address), so one client's 10,000 jobs do not hold up everyone else's; fifo: first come, first served.
QUEUE_ORDER = env_str("QUEUE_ORDER", "fair")
if QUEUE_ORDER not in ("fair", "fifo"):
    raise ImproperlyConfigured(f"QUEUE_ORDER must be fair or fifo, got {QUEUE_ORDER!r}.")
# Requests per client address (DRF's rate syntax: "N/second", "N/minute", ...; empty: no limit).
# Submits are POSTs (a repeated POST is also the seed's poll); polls are GETs of jobs and queues.
THROTTLE_SUBMIT = env_str("THROTTLE_SUBMIT", "100/second")
THROTTLE_POLL = env_str("THROTTLE_POLL", "200/second")
# Behind a reverse proxy, the request header carrying the client's address, as the proxy sets it
# (e.g. X-Real-IP, or X-Forwarded-For whose last entry the proxy appends). Empty: the connection's
# address, and any X-Forwarded-For a client sends is ignored.
CLIENT_IP_HEADER = env_str("CLIENT_IP_HEADER", "")
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


# django-rq: one connection for every queue; the queues themselves are derived from TASK_TYPES
# when the app loads (factorize_app.apps), so a task type is declared in one place only.
RQ_CONNECTION = {
    "URL": redis_url_with_options(REDIS_URL, timeout=REDIS_SOCKET_TIMEOUT, max_connections=REDIS_MAX_CONNECTIONS)
}
RQ_QUEUES: dict = {}
RQ = {"WORKER_CLASS": "factorize_app.worker.WarmWorker"}
RQ_SHOW_ADMIN_LINK = True
