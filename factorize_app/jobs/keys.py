"""Every Redis key the job service reads or writes, named in this one place.

RQ's own keys (job hashes, queue lists, registries, executions, workers, result streams) come
from RQ's classes, never retyped, so they follow RQ. Ours live under `factorize:`. The Redis
scripts build no key of their own: they get full keys as KEYS, or a prefix (written into them by
jobs/scripts.py) where the key depends on a job id the script reads from Redis. The field names
they use are here too.
"""

from __future__ import annotations

from types import SimpleNamespace

from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, Execution
from rq.job import Job
from rq.queue import Queue
from rq.registry import CanceledJobRegistry, FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.suspension import WORKERS_SUSPENDED
from rq.worker import Worker
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

# --- RQ's ---------------------------------------------------------------------------------

JOB_PREFIX = Job.redis_job_namespace_prefix  # the job hash: status, description, TTLs, ...
QUEUE_PREFIX = Queue.redis_queue_namespace_prefix  # the queue's list of job ids
STARTED_PREFIX = StartedJobRegistry.key_template.format("")  # running executions, scored by lease end
EXECUTION_PREFIX = Execution.key.fget(SimpleNamespace(composite_key=""))  # one hash per execution
WORKER_PREFIX = Worker.redis_worker_namespace_prefix  # a worker's hash: heartbeat, state, counters
ALL_WORKERS = REDIS_WORKER_KEYS  # the set of every registered worker's key
RESULTS_PREFIX = Result.get_key("")  # a job's result stream
SUSPENDED = WORKERS_SUSPENDED  # set by `rq suspend`: workers take nothing while it exists
CLEANING_PREFIX = Queue.registry_cleaning_key.fget(SimpleNamespace(name=""))  # one worker cleans a queue at a time
# Fields of RQ's hashes that the scripts read or write, by RQ's own names (RQ keeps no constants
# for them): a job's (rq.job.Job.to_dict), an execution's (rq.executions.Execution), a worker's.
RQ_JOB_FIELDS = (
    "status", "description", "timeout", "result_ttl", "failure_ttl", "worker_name", "enqueued_at", "started_at",
    "ended_at", "last_heartbeat",
)  # fmt: skip
RQ_EXECUTION_FIELDS = ("id", "job_id", "created_at", "last_heartbeat", "worker_name")
RQ_WORKER_FIELDS = (
    "state", "last_heartbeat", "death", "successful_job_count", "failed_job_count", "total_working_time",
)  # fmt: skip
RESULTS_MAXLEN = 10  # entries a job's result stream keeps, as RQ's Result.save trims it


def job(job_id: str) -> str:
    return JOB_PREFIX + job_id


def queue(name: str) -> str:
    return QUEUE_PREFIX + name


def started(name: str) -> str:
    return STARTED_PREFIX + name


def finished(name: str) -> str:
    return FinishedJobRegistry.key_template.format(name)


def failed(name: str) -> str:
    return FailedJobRegistry.key_template.format(name)


def canceled(name: str) -> str:
    return CanceledJobRegistry.key_template.format(name)


def aborted(name: str) -> str:
    """Jobs whose deadline passed before they started, scored by expiry, as RQ's registries."""
    return ABORTED_PREFIX + name


def stop_requests(worker_name: str) -> str:
    """The ids of the running jobs a worker is asked to stop (DELETE, a passed deadline)."""
    return STOP_PREFIX + worker_name


def execution(member: str) -> str:
    """An execution's hash, by its member in the StartedJobRegistry ("<job id>:<execution id>")."""
    return EXECUTION_PREFIX + member


def worker(worker_name: str) -> str:
    return WORKER_PREFIX + worker_name


def worker_executions(worker_name: str) -> str:
    """RQ's index of the executions a worker is running (whence RQ's tools name its current job)."""
    return WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker_name)


def cleaning_lock(name: str) -> str:
    """RQ's lock on cleaning a queue's registries (where dead workers' jobs are recovered)."""
    return CLEANING_PREFIX + name


def workers_of(name: str) -> str:
    """The set of the workers registered for a queue."""
    return WORKERS_BY_QUEUE_KEY % name


def results(job_id: str) -> str:
    return Result.get_key(job_id)


# --- ours ---------------------------------------------------------------------------------

OURS = "factorize:"
# Queued job ids of a type scored by expiry deadline: the live load without scanning.
PENDING_PREFIX = OURS + "pending:"
# Inputs of a type's queued jobs (id -> "<fair client> <input>"), kept without expiry until a
# worker takes them (outage recovery).
QUEUED_INPUTS_PREFIX = OURS + "queued:"
# Submits push a token here to wake an idle worker of the type.
WAKE_PREFIX = OURS + "wake:"
WAKE_TOKENS = 64  # the most tokens a wake-up list holds: more would wake no one
# A type's job duration histogram.
DURATION_PREFIX = OURS + "metrics:job_duration:"
# Fair order, per type: each client's list of queued job ids; the clients with jobs waiting,
# scored by the worker time they have used (their turn comes by least use); that use; the jobs
# each runs; their caps; and the workers running one long job (whose client may have to give one back).
FAIR_PREFIX = OURS + "fair:"
# The clients that submitted a job: its owners (who may cancel, retry and, with keys, read it),
# once it has several, or its files outlive it (a job with one owner names it in OWNER_FIELD).
OWNERS_PREFIX = OURS + "owners:"
# Each owner's Cancel-After deadline of a job (owner -> Unix time, or "none"), kept beside its
# owners' set: the job's own (DEADLINE_FIELD) is the latest of them, none while any owner set none.
DEADLINES_PREFIX = OURS + "deadlines:"
# A client's request counter for one rate-limit window.
THROTTLE_PREFIX = OURS + "throttle:"
BUDGET_PREFIX = OURS + "budget:"  # bytes a client's jobs hold, per expiry slot (jobs/budgets.py)
ABORTED_PREFIX = OURS + "aborted:"
STOP_PREFIX = OURS + "stop:"
# Fields of ours in RQ's job hash (fields, not keys; the scripts name them JOB.<name>: jobs/scripts.py).
STOP_FIELD = "factorize_stop"  # why the job is to stop: "canceled", or the deadline's reason
DEADLINE_FIELD = "factorize_deadline"  # Unix time after which it is cancelled (Cancel-After)
# Our finer state where RQ's status word has none (aborted: RQ's `status` says canceled), so that
# RQ's own tools (django-rq, rq-dashboard, `rq info`) only ever read statuses RQ knows.
STATE_FIELD = "factorize_state"
OUTCOME_FIELD = "factorize_outcome"  # once done, the JSON polls answer: {"result": ...} or {"error": ...}
CLIENT_FIELD = "factorize_client"  # the client whose turn it is taken in, in fair order
# A job's owner while it has only one (its submitter): the owners become a set (OWNERS_PREFIX) when
# a second one joins, and the field is then removed, so a job names its owners in one place.
OWNER_FIELD = "factorize_owner"
PROGRESS_FIELD = "factorize_progress"  # while it runs, the JSON its handler last reported
# A streaming job's output so far (a JSON array of its pieces, jobs/outputs.py) and, beside it,
# the event id of each piece (space-separated), whence a Last-Event-ID resumes past a trimmed stream.
OUTPUT_FIELD = "factorize_output"
OUTPUT_IDS_FIELD = "factorize_output_ids"
HANDED_BACK_FIELD = "factorize_handed_back"  # times it was handed back to the queue (rebalance.lua)
NO_DEADLINE = "none"  # an owner's entry in DEADLINES_PREFIX when it set no Cancel-After
# In a type's use hash (fair_used), the use of the client served last: where a client that starts
# waiting joins (no client is named so).
FAIR_CLOCK = ":clock"
STOP_REQUESTS_TTL = 3600  # seconds a worker's stop requests are kept for it
# Redis time of the last script that served the queue, and the outages ("<start> <end>") found.
CLOCK = OURS + "clock"
OUTAGES = OURS + "outages"
# Written by the readiness probe: refused exactly when submits would be.
PROBE = OURS + "probe"
# Per queue: workers whose process died without unregistering (found by the next worker on their host).
WORKERS_LOST = OURS + "workers-lost"
# Task type name -> JSON of its workers' last failed model setup, cleared by a successful one
# (jobs.diagnostics; shown in /queues and /readyz).
SETUP_FAILURES = OURS + "setup-failures"
# A job's event stream (a Redis Stream: one entry per change, read by event-stream responses),
# and a web process's wake-up stream (its dispatcher's blocking read returns when a stream is added).
EVENTS_PREFIX = OURS + "events:"
# An entry's fields (events.JobEvent); an `output` event also has the piece and its index.
EVENT_FIELDS = ("status", "outcome", "progress", "output", "index")
EVENTS_WAKE_PREFIX = OURS + "events-wake:"
# What RQ's tools did behind our back, looked for (jobs.reconcile).
RECONCILE_PREFIX = OURS + "reconcile:"
# The deployment's job id key (hex), stored once (jobs.ids), unless JOB_ID_KEY is set.
JOB_ID_KEY = OURS + "job-id-key"


def pending(name: str) -> str:
    return PENDING_PREFIX + name


def queued_inputs(name: str) -> str:
    return QUEUED_INPUTS_PREFIX + name


def wake(name: str) -> str:
    return WAKE_PREFIX + name


def durations(name: str) -> str:
    return DURATION_PREFIX + name


def fair_waiting(name: str) -> str:
    """Sorted set: the clients with queued jobs of a type, scored by worker seconds used."""
    return f"{FAIR_PREFIX}{name}:waiting"


def fair_used(name: str) -> str:
    """Hash: client -> worker seconds charged (a virtual clock: a returning client starts level)."""
    return f"{FAIR_PREFIX}{name}:used"


def fair_running(name: str) -> str:
    """Hash: client -> jobs of the type it has running."""
    return f"{FAIR_PREFIX}{name}:running"


def fair_caps(name: str) -> str:
    """Hash: client -> its own cap on running jobs (an API key's override)."""
    return f"{FAIR_PREFIX}{name}:caps"


def fair_holders(name: str) -> str:
    """Hash: worker name -> "<may be handed back: 1/0> <start> <client>" while it runs one of the
    client's jobs for long (rebalance.lua)."""
    return f"{FAIR_PREFIX}{name}:holders"


def owners(job_id: str) -> str:
    return OWNERS_PREFIX + job_id


def deadlines(job_id: str) -> str:
    return DEADLINES_PREFIX + job_id


def fair_clients_prefix(name: str) -> str:
    """The prefix of a type's per-client job lists (the take script appends the client)."""
    return f"{FAIR_PREFIX}{name}:client:"


def fair_client(name: str, client: str) -> str:
    return fair_clients_prefix(name) + client


def throttle(scope: str, client: str, slot: int) -> str:
    return f"{THROTTLE_PREFIX}{scope}:{client}:{slot}"


def events(job_id: str) -> str:
    return EVENTS_PREFIX + job_id


def reconcile_lock(name: str) -> str:
    """Held (for a second) by the process looking for what RQ changed in a type's jobs."""
    return f"{RECONCILE_PREFIX}{name}:lock"


def reconcile_running(name: str) -> str:
    """Set: the ids in the type's StartedJobRegistry at the last look (those gone since ended)."""
    return f"{RECONCILE_PREFIX}{name}:running"


def reconcile_cursors(name: str) -> str:
    """Hash: where the next look resumes in the pending set and in RQ's list."""
    return f"{RECONCILE_PREFIX}{name}:cursors"


def events_wake(process: str) -> str:
    return EVENTS_WAKE_PREFIX + process


def budget(client: str, slot: int) -> str:
    """Bytes charged to a client's jobs whose records expire within expiry slot `slot`."""
    return f"{BUDGET_PREFIX}{client}:{slot}"


# Jobs' files (jobs/files.py): each file id's record (expiring with it), every stored blob's
# digest scored by the latest expiry of anything referring to it, and the blobs being deleted.
FILE_RECORD_PREFIX = OURS + "file:"
FILE_BLOBS = OURS + "files:blobs"
FILE_DELETING = OURS + "files:deleting"
# Held by the process sweeping expired files, for FILES_SWEEP_INTERVAL (jobs/file_sweep.py).
FILE_SWEEP_LOCK = OURS + "files:sweep"


def file_record(file_id: str) -> str:
    return FILE_RECORD_PREFIX + file_id


# Bytes of live uploads (jobs/upload_budgets.py): per client and in total, one counter per expiry
# slot, each expiring once every upload charged to it has.
UPLOAD_BYTES_PREFIX = OURS + "files:bytes:"


def upload_bytes(client: str, slot: int) -> str:
    return f"{UPLOAD_BYTES_PREFIX}client:{client}:{slot}"


def upload_total(slot: int) -> str:
    return f"{UPLOAD_BYTES_PREFIX}total:{slot}"
