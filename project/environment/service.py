"""The settings `project/settings.py` reads: security and HTTP, API keys, the job queue, Redis."""

from project.environment.kinds import (
    BOOL,
    HOST_PORTS,
    INT,
    LIST,
    NETWORKS,
    NUMBER,
    POD_ADDRESS,
    PROXY_SSL_HEADER,
    RATE,
    TEXT,
    TYPE_URLS,
    URL,
    above,
    at_least,
    choice,
)
from project.environment.setting import DJANGO, Section, Setting

SECURITY = Section(
    "Security and hosts",
    DJANGO,
    "What to set for production is in [Security](security.md#production-settings). The `SECURE_*` "
    "settings are for a deployment behind TLS (its own certificate or a TLS-terminating proxy); all "
    "default off so that plain-http development keeps working, and `manage.py check --deploy` passes "
    "once `PRODUCTION=1`, `SECRET_KEY` and all of them are set.",
    (
        Setting("SECRET_KEY", TEXT, "", "Django's signing key: set a long random value in production, e.g. "
                '`python -c "import secrets; print(secrets.token_urlsafe(50))"`. Empty: an insecure, '
                "loudly named development key.", default_text="an insecure development key", secret=True),
        Setting("PRODUCTION", BOOL, "0", "On: refuse to start with a missing, development or weak `SECRET_KEY` "
                "(it needs 50+ characters, 5+ distinct ones), or with `DEBUG` on."),
        Setting("DEBUG", BOOL, "0", "Django's debug mode (it shows settings and code to visitors)."),
        Setting("ALLOWED_HOSTS", LIST, "localhost,127.0.0.1,[::1]", "Host names the server answers to."),
        Setting("POD_IP", POD_ADDRESS, "", "The pod's own IP address (Kubernetes' `status.podIP`), added to "
                "`ALLOWED_HOSTS` so that a scrape or a probe by address is answered "
                "([Metrics and probes](operations-metrics.md))."),
        Setting("DATABASE_URL", URL, None, "The database of the admin's users and the API keys (PostgreSQL, "
                "`postgres://...`, when several web hosts or pods must share the keys: add "
                "`psycopg[binary]==3.3.9` to the image's requirements; it is left out by default because Django "
                "REST framework then imports Django's PostgreSQL fields in every process, a tenth of a second "
                "more at each start). The image sets `sqlite:////data/db.sqlite3`.",
                default_text="SQLite `db.sqlite3` in the project", secret=True, env_file=False),
        Setting("SECURE_SSL_REDIRECT", BOOL, "0", "Redirect plain-http requests to https (`/healthz`, `/readyz` "
                "and `/metrics` are exempt, for probes)."),
        Setting("SESSION_COOKIE_SECURE", BOOL, "0", "Send the session (admin login) cookie over https only."),
        Setting("CSRF_COOKIE_SECURE", BOOL, "0", "Send the CSRF cookie over https only."),
        Setting("SECURE_HSTS_SECONDS", INT, "0", "HSTS: browsers use https only, for this many seconds (start low, "
                "e.g. 3600, then 31536000)."),
        Setting("SECURE_HSTS_INCLUDE_SUBDOMAINS", BOOL, "0", "HSTS for every subdomain too."),
        Setting("SECURE_HSTS_PRELOAD", BOOL, "0", "Only after submitting the domain to "
                "https://hstspreload.org; hard to undo."),
        Setting("SECURE_PROXY_SSL_HEADER", PROXY_SSL_HEADER, "", "Behind a TLS-terminating proxy: the header it "
                "sets for https requests, e.g. `X-Forwarded-Proto` (optionally `,value`; default value `https`). "
                "Only behind a proxy that always sets or strips it: any client could claim https otherwise. "
                "Empty: off."),
        Setting("CSRF_TRUSTED_ORIGINS", LIST, "", "Origins (`scheme://host[:port]`) allowed to post forms (the "
                "admin login) from another origin, e.g. `https://queue.example.com` when a proxy changes the "
                "Host the server sees."),
        Setting("CLIENT_IP_HEADER", TEXT, "", "Behind a reverse proxy: the request header carrying the client's "
                "address, as the proxy sets it (`X-Real-IP`, or `X-Forwarded-For`, to which each proxy appends "
                "the address it saw). Empty: the connection's address; a client's own `X-Forwarded-For` is "
                "ignored."),
        Setting("TRUSTED_PROXIES", NETWORKS, "", "Addresses or CIDR networks (e.g. `172.16.0.0/12`) whose "
                "connections may carry `CLIENT_IP_HEADER` (required with it). `deploy/compose/proxy.yml` sets "
                "both for its proxy."),
        Setting("ADMIN_LOGIN_FAILURE_LIMIT", INT, "5", "Failed logins (the admin's and the browsable API's login "
                "pages) from one client address before django-axes locks it out."),
        Setting("ADMIN_LOGIN_LOCKOUT_MINUTES", INT, "15", "How long such an address stays locked out."),
    ),
)

REQUESTS = Section(
    "Requests and rate limits",
    DJANGO,
    "What one client, and all of them together, may ask of a web process "
    "([Security and fairness](security.md)). A client is its API key, else its address.",
    (
        Setting("MAX_REQUEST_BYTES", INT, "1048576", "The largest request body; a larger one is answered 413 "
                "JSON before it is read. The default, 1 MiB, holds a batch of 1000 of the longest inputs."),
        Setting("BODY_MEMORY_BUDGET", INT, "4194304", "Per web process: bytes of bodies larger than "
                "`LARGE_BODY_BYTES` (batches) read and parsed at once; a large body past it gets 503 JSON "
                "naming it (`Retry-After: 1`) before it is read, so memory stays bounded (a 1 MB batch costs "
                "12-15 MB while handled). `0`: no budget."),
        Setting("LARGE_BODY_BYTES", INT, "65536", "The size from which a body counts against "
                "`BODY_MEMORY_BUDGET`."),
        Setting("THROTTLE_SUBMIT", RATE, "6000/minute", "Submits per client (POSTs and DELETEs; each batch item "
                "counts as one; empty: no limit); beyond, 429. A minute's window, so that a batch of "
                "`MAX_BATCH` fits (6000/minute is the 100 a second of a steady client)."),
        Setting("THROTTLE_POLL", RATE, "200/second", "Polls per client (GETs of jobs and queues; empty: no "
                "limit); beyond, 429."),
        Setting("THROTTLE_AUTH_FAILURES", RATE, "20/minute", "Failed authentications (unknown, revoked or "
                "malformed API keys) per client address (an IPv6 /64 counts as one) and web process; beyond, "
                "429 without a database lookup until the window ends (a key already verified still works). "
                "Empty: no limit."),
        Setting("MAX_HELD_PER_CLIENT", INT, "32", "Per client and web process: requests held open at once (long "
                "polls, waiting submits, event streams); beyond, a request answers at once (its `Prefer: wait` "
                "is not applied; a stream sends its state and ends)."),
        Setting("MAX_HELD_REQUESTS", INT, None, "Per web process, all clients together: the same held "
                "requests, below `WEB_THREADS` so that health probes and ordinary polls always find a thread; "
                "beyond, a request answers at once.",
                default_text="`WEB_THREADS` − 64 (¾ of fewer than 256)"),
    ),
)

API_KEYS = Section(
    "API keys",
    DJANGO,
    "Keys are made with `manage.py create_api_key NAME` ([Security](security.md)). A presented key "
    "is always checked: a bad one is a 401.",
    (
        Setting("REQUIRE_API_KEY", BOOL, "0", "On: every API request needs a valid key or a logged-in user "
                "(401 otherwise); `/healthz` and `/readyz` stay open."),
        Setting("METRICS_REQUIRE_API_KEY", BOOL, "0", "On: `/metrics` needs a valid key or a staff login."),
        Setting("API_KEY_CACHE_SECONDS", at_least(INT, 0), "5", "How long a web process trusts a key lookup "
                "(valid or refused): a revoked key keeps working this long. `0`: every request with a key "
                "reads the database."),
        Setting("API_KEY_USE_FLUSH_SECONDS", at_least(INT, 1), "30", "How often a web process writes the keys' "
                "use counts and last use (counted in memory meanwhile)."),
    ),
)

QUEUE = Section(
    "The job queue",
    DJANGO,
    "Durations are in seconds.",
    (
        Setting("EXECUTION_MODE", choice("async", "sync"), "async", "`async`: workers run jobs from Redis "
                "queues; `sync`: the web process computes, with no Redis ([The API](api.md#sync-mode))."),
        Setting("TASK_TYPES", LIST, None, "Narrows or extends the served task types (their names are the RQ "
                "queues): comma-separated dotted paths of `TaskType` objects or folder names "
                "(`digits,primes`); `*` stands for every discovered one (`*,bench.task_types.NOOP`). Empty: "
                "as unset.", default_text="every package under `factorize_app/tasks/` that declares a "
                "`TASK_TYPE`"),
        Setting("MODEL_DIR", TEXT, None, "Where models that are trained or downloaded once keep their files "
                "(the digits classifier). The image sets `/app/models`, where its models were prepared at "
                "build.", default_text="`.run/models` in the project", env_file=False),
        Setting("JOB_TTL", INT, "60", "Seconds a queued job lives without being polled; every poll extends it. "
                "Counted only while the queue is reachable: jobs that expire while nothing serves the queue (a "
                "Redis outage, or no worker running and no client polling for 5 s) are enqueued again, with a "
                "fresh `JOB_TTL`, by the next worker's maintenance, and `/queues` counts them meanwhile (see "
                "`factorize_app/jobs/maintenance.py`)."),
        Setting("RESULT_TTL", INT, "86400", "Seconds a result is kept and answers repeated submits without "
                "running again."),
        Setting("FAILURE_TTL", INT, "3600", "Seconds a failure is kept."),
        Setting("JOB_TIMEOUT", INT, "300", "Seconds a job may run before it fails with \"timed out\"."),
        Setting("JOB_MAX_RETRIES", INT, "2", "Times a job whose worker died (SIGKILL, lost node) is queued again "
                "before it fails as abandoned."),
        Setting("JOB_ID_KEY", TEXT, "", "The key of job ids' HMAC (ids no one can compute from a guessed "
                "input). Empty: the deployment's own, made once and kept in Redis (`factorize:job-id-key`), so "
                "`SECRET_KEY` can be rotated freely (see [Operations](operations.md#job-ids-and-secret_key)). "
                "Set, it overrides the stored key, and changing it changes every id (existing jobs then answer "
                "404).", secret=True),
        Setting("MAX_NUMBER_DIGITS", INT, "100", "Longest number `/factorize` accepts."),
        Setting("MAX_WAIT", INT, "60", "Longest `Prefer: wait=N` a request may hold for its job to finish."),
        Setting("POLL_RETRY_AFTER", INT, "1", "Seconds a pending answer's `Retry-After` suggests waiting before "
                "the next poll."),
        Setting("MAX_BATCH", INT, "1000", "Most items in one `POST /<type>/batch`."),
        Setting("SYNC_PROCESSES", INT, "1", "Sync mode: processes per web process that run handlers (each "
                "loads every model once)."),
        Setting("QUEUE_ORDER", choice("fair", "fifo"), "fair", "`fair`: workers serve the clients of a task "
                "type by least worker time used, so one client's 10,000 jobs do not hold up everyone else's, "
                "and a client holding more than its share of workers gives one back to a waiting client; "
                "`fifo`: RQ's first in, first out."),
        Setting("MAX_QUEUED_PER_CLIENT", INT, "10000", "Per client and task type, in fair order: jobs queued at "
                "most; a submit beyond is a 429 naming the limit. An API key may override it."),
        Setting("MAX_RUNNING_PER_CLIENT", INT, "0", "Per client and task type, in fair order: jobs running at "
                "most (more wait their turn); `0`: no cap of its own, the fair share of workers still applies. "
                "An API key may override it."),
    ),
)

REDIS = Section(
    "Redis",
    DJANGO,
    "Sizing, outages and Sentinel: [Deployment](deployment.md#a-managed-redis-or-redis-sentinel) and "
    "[Operations](operations.md#redis-outages).",
    (
        Setting("REDIS_URL", URL, "redis://127.0.0.1:6379/0", "The Redis that holds the queues. With "
                "`REDIS_SENTINELS`, only its database number, user and password are used. The compose file "
                "sets `redis://redis:6379/0`.", secret=True, env_file=False),
        Setting("REDIS_SOCKET_TIMEOUT", INT, "5", "Seconds before a Redis call gives up (then 503): the connect, "
                "each read, and the lookup of Redis's host name."),
        Setting("REDIS_MAX_CONNECTIONS", INT, "1000", "Redis connections per process and pool: every server "
                "thread may hold one (a long poll holds two)."),
        Setting("REDIS_MEMORY_HIGH_WATER", above(NUMBER, 0), "0.9", "New jobs get 503 \"the job queue is full\" "
                "once Redis's used memory, plus the room reserved for the results and events of every job "
                "already queued or running (measured per type) and for the workers' heartbeats, plus the new "
                "jobs themselves, would pass this fraction of its `maxmemory` ([Operations](operations.md)); "
                "polls are never refused; `1` or more leaves refusing to Redis itself; no `maxmemory`, no mark."),
        Setting("REDIS_CLIENT_SHARE", NUMBER, "0.1", "Per client: the Redis memory its jobs may hold at once "
                "(queued inputs and kept results), as this share of `maxmemory` (none without one) unless "
                "`REDIS_CLIENT_BYTES` is set. A submit past it is a 429 naming `REDIS_CLIENT_SHARE`, until its "
                "oldest jobs' records expire. An API key may have its own "
                "([Security](security.md#budgets-what-one-client-can-take-from-everyone))."),
        Setting("REDIS_CLIENT_BYTES", INT, "0", "Above 0: the same per-client budget in bytes, instead of "
                "`REDIS_CLIENT_SHARE`."),
        Setting("REDIS_JOB_BYTES", INT, "12000", "What each new job is charged against that budget, plus twice "
                "its input's JSON (measured: 11.8 KB for a finished factorization's job hash, registries, "
                "owners, events and result)."),
        Setting("REDIS_SENTINELS", HOST_PORTS, "", "High availability: `host:port,host:port` of Redis "
                "Sentinels, which name the master; clients follow it through a failover. An IPv6 host goes in "
                "brackets (`[::1]:26379`). Empty: a plain Redis at `REDIS_URL`."),
        Setting("REDIS_SENTINEL_MASTER", TEXT, "mymaster", "The master's name the sentinels know."),
        Setting("TASK_REDIS_URLS", TYPE_URLS, "", "Task types whose jobs live on a Redis of their own: "
                "`digits=redis://redis-digits:6379/0,other=redis://...`; every type not named stays on "
                "`REDIS_URL`, which keeps clients, files, webhooks and the job id key. A worker serves the "
                "types of one Redis. Not with `REDIS_SENTINELS` ([A type on its own Redis](type-redis.md)).",
                secret=True),
    ),
)

FILE_OUTPUTS = Section(
    "File outputs",
    DJANGO,
    "Files a handler returns, and results too large for Redis, are kept in the job files' storage; "
    "Redis holds a reference ([Files](files.md#file-outputs)).",
    (
        Setting("RESULT_MAX_INLINE_BYTES", at_least(INT, 1024), "1048576", "A result whose JSON is larger is "
                "stored as a file (`application/json`) and answered as `result_file`, a link to it, instead of "
                "inside Redis."),
        Setting("OUTPUT_FILE_MAX_BYTES", at_least(INT, 1), "1073741824", "Largest file a job may return (and "
                "largest result stored as a file): a larger one fails the job, naming this setting."),
        Setting("OUTPUT_STORE_RETRY_SECONDS", at_least(NUMBER, 0), "60", "While the file storage fails, a "
                "worker retries storing a finished job's files this long (with backoff), then hands the job "
                "back to its queue to run again later: a job is never failed, nor its result lost, for it."),
        Setting("PUBLIC_URL", URL, "", "The service's address as clients reach it, e.g. "
                "`https://queue.example.com`: file URLs in answers and webhooks start with it. Empty: an "
                "answer's use the host the request came to; a webhook's are paths (`/files/<id>`)."),
    ),
)

SECTIONS = (SECURITY, REQUESTS, API_KEYS, QUEUE, REDIS, FILE_OUTPUTS)
