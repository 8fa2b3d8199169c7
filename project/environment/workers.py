"""The settings `project/settings.py` reads for what follows a submit: the workers, event streams
and completion webhooks."""

from project.environment.kinds import INT, LIST, NUMBER, SECONDS_LIST, WEBHOOK_SECRET
from project.environment.setting import DJANGO, Section, Setting

WORKERS = Section(
    "Workers",
    DJANGO,
    "How the warm workers take and hold jobs ([Architecture](architecture.md#workers)).",
    (
        Setting("WORKER_BATCH_SIZE", INT, "100", "Most jobs a worker takes of a queue per Redis round trip."),
        Setting("WORKER_BATCH_SECONDS", NUMBER, "0.2", "The work a batch aims at, in seconds: fewer jobs are "
                "taken when jobs are slow, so a warm stop or a fair turn is never far."),
        Setting("WORKER_HEARTBEAT", INT, "5", "Seconds between a running worker's renewals of its jobs' lease; a "
                "lease lasts three beats, so a dead worker's jobs are queued again (or failed) about 3 beats "
                "plus one maintenance interval after it died."),
        Setting("WORKER_MAINTENANCE_INTERVAL", INT, "10", "Seconds between a worker's maintenance rounds (among "
                "them, recovering dead workers' jobs)."),
    ),
)

EVENT_STREAMS = Section(
    "Event streams",
    DJANGO,
    "`GET /jobs/<id>` with `Accept: text/event-stream` ([The API](api.md)).",
    (
        Setting("EVENT_STREAM_KEEPALIVE", NUMBER, "15", "Seconds between keep-alive comments, which keep proxies "
                "from closing an idle stream and find clients that left."),
        Setting("EVENT_STREAM_RETENTION", INT, "600", "Seconds a finished job's events are kept (at most its "
                "result's TTL), for clients reconnecting with `Last-Event-ID` after the end."),
        Setting("EVENT_STREAMS_MAX", INT, None, "Open streams per web process; beyond, a stream is refused "
                "(503), so that ordinary polls always find one of the `WEB_THREADS` free.",
                default_text="`WEB_THREADS` − 64"),
    ),
)

WEBHOOKS = Section(
    "Webhooks",
    DJANGO,
    "Completion webhooks (`\"webhook\": \"<url>\"` on a submit), signed as Standard Webhooks specify and "
    "sent by the webhooks worker ([The API](api.md#webhooks)). Each new subscription counts as a submit "
    "against `THROTTLE_SUBMIT`, and none is made past `REDIS_MEMORY_HIGH_WATER`.",
    (
        Setting("WEBHOOK_SECRET", WEBHOOK_SECRET, "", "The signing key: `whsec_<base64 key, 16+ bytes>`, e.g. "
                "`whsec_$(openssl rand -base64 32)`. Empty: webhooks refused. A malformed one refuses to start.",
                secret=True),
        Setting("WEBHOOK_ALLOWED_HOSTS", LIST, "", "The receivers, `host` or `host:port`, comma-separated "
                "(compared in lower case). Empty: webhooks off."),
        Setting("WEBHOOK_TIMEOUT", NUMBER, "10", "Seconds for a whole attempt (look-up, connect, the answer's "
                "headers and body together)."),
        Setting("WEBHOOK_RETRY_DELAYS", SECONDS_LIST, "1,5,30,120,600", "Seconds before each retry "
                "(jittered); their count is the retries, after which the delivery is recorded failed."),
        Setting("WEBHOOK_CONCURRENCY", INT, "16", "Attempts at once per webhooks worker (threads): a slow "
                "receiver holds one."),
        Setting("WEBHOOK_RETENTION", INT, "86400", "Seconds subscriptions and delivery records are kept."),
        Setting("WEBHOOK_CONCURRENCY_PER_RECEIVER", INT, "2", "Attempts at once to one receiver (scheme, host, "
                "port)."),
        Setting("WEBHOOK_CONCURRENCY_PER_CLIENT", INT, None, "Attempts at once for one client's "
                "subscriptions.", default_text="`WEBHOOK_CONCURRENCY` / 4"),
        Setting("WEBHOOK_MAX_PER_JOB", INT, "5", "Webhook URLs one client may subscribe on one job."),
        Setting("WEBHOOK_MAX_PER_CLIENT", INT, "1000", "Live subscriptions per client (watching a job, or its "
                "`completed` delivery under way)."),
    ),
)

STREAMED_OUTPUTS = Section(
    "Streamed outputs",
    DJANGO,
    "Pieces a generator handler yields, kept with the job and sent as `output` events "
    "([Streamed outputs](streamed-outputs.md)). Past a limit the job fails with an error naming it.",
    (
        Setting("OUTPUT_PIECE_MAX_BYTES", INT, "16384", "Largest piece of a job's streamed output, as JSON."),
        Setting("OUTPUT_MAX_PIECES", INT, "1000", "Most pieces one job may stream."),
        Setting("OUTPUT_MAX_BYTES", INT, "262144", "Most bytes (JSON) of one job's streamed output in all, kept "
                "in Redis with the job until its result expires."),
    ),
)

FILE_INPUTS = Section(
    "File inputs",
    DJANGO,
    "Files in a job's input (a task type's file fields): a `data:` URI in the body, an upload's id or URL, "
    "or an http(s) URL the web server fetches ([The API](api.md)).",
    (
        Setting("FILE_INPUT_MAX_BYTES", INT, "10485760", "The most bytes of one file in an input, however it is "
                "given (a field may declare fewer; a `data:` URI is bounded by `MAX_REQUEST_BYTES` too): "
                "413 beyond."),
        Setting("FILE_URL_ALLOWED_HOSTS", LIST, "*", "The hosts a file URL may name, `host` or `host:port`, "
                "comma-separated; `*`: any host. An address that is not public (loopback, private, link-local) "
                "is refused unless that literal address is listed. Empty: file URLs refused."),
        Setting("FILE_URL_TIMEOUT", NUMBER, "10", "Seconds for fetching a request's file URLs, all of them "
                "together (look-ups, connects, every redirect and the whole bodies)."),
        Setting("FILE_INPUTS_PER_REQUEST", INT, "32", "Files one submit may name (a batch's items together): "
                "each may be a fetch of up to `FILE_URL_TIMEOUT` and an image check of up to 25 million pixels."),
    ),
)

SECTIONS = (WORKERS, EVENT_STREAMS, STREAMED_OUTPUTS, WEBHOOKS, FILE_INPUTS)
