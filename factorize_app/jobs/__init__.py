"""The job service: the one package that talks to RQ and Redis.

The API and the worker call these functions with plain values and get plain values back; the
names below are the whole of what they use. One room per side:

- `submit`: submit-or-poll, one input or a batch (the web's submit side);
- `status`: a job's status, the poll of many, the long poll (the web's status side);
- `control`: cancel, retry, owners (what a job's owners may do);
- `monitoring`: load, queue stats, durations, memory, admission of new jobs;
- `probes`: whether each Redis answers: the ping, the readiness probe;
- `worker_side`: what a worker does to Redis: take, lease, finish, wait for work;
- `maintenance`: the workers' sweep of jobs lost in outages, and of dead workers;
- `file_sweep`: the workers' sweep of expired files;
- `reconcile`: what RQ's own tools did to jobs (cleanup, requeue, empty), made good;
- `diagnostics`: workers' failed model setups, failed jobs' tracebacks;
- `outputs`: a job's files and large results, stored outside Redis, and who may read them;
- `events`: each job's event stream (appended on every change) and the web's one reader of them;
- `release`: every wait of a web process ended at once, when its server stops;
- `sync`: sync mode's process pool (no Redis);
- `keys`: every Redis key and field name; `connection`: the Redis connections;
- `scripts`: every Redis script (`*.lua`), its keys and arguments by name, and the words it shares;
- `errors`, `states`, `ids`: what can go wrong, the values handed out, job ids and inputs;
- `files`: jobs' files (uploads, file inputs and outputs) in the file storage, their records in
  Redis; `upload_budgets`: the disk that live uploads may take, per client and in total.
"""

from factorize_app.jobs import files
from factorize_app.jobs.addresses import non_public
from factorize_app.jobs.connection import HOME, describe_server, one_server, serve_queues, server_of, servers
from factorize_app.jobs.control import cancel, is_owner, retry
from factorize_app.jobs.diagnostics import (
    SETUP_FAILURE_STALE,
    clear_setup_failures,
    failure_traceback,
    record_setup_failure,
    setup_error,
    setup_failures,
)
from factorize_app.jobs.errors import (
    FULL,
    PERSISTENCE,
    READ_ONLY,
    REFUSAL_DETAILS,
    ClientLimitExceeded,
    JobNotCancellable,
    JobNotFound,
    JobNotRetryable,
    QueueRefusesWrites,
    QueueUnavailable,
    SubmitRefused,
    Throttled,
    queue_error,
    write_refusal,
)
from factorize_app.jobs.events import (
    EventWatch,
    JobEvent,
    event_id_key,
    events_after,
    is_new_output,
    latest_event,
    open_events,
    state_after,
    valid_event_id,
)
from factorize_app.jobs.events import watch as watch_events
from factorize_app.jobs.file_sweep import sweep_files
from factorize_app.jobs.ids import job_id_for
from factorize_app.jobs.maintenance import (
    clean_stale_workers,
    recount_running,
    sweep_queue,
    take_cleaning_lock,
    upgrade_statuses,
)
from factorize_app.jobs.monitoring import (
    LostWorker,
    admit_new_jobs,
    drop_lost_workers,
    job_durations,
    load,
    queue_stats,
    redis_memory,
    worker_liveness,
)
from factorize_app.jobs.outputs import OutputCount, OutputLimitExceeded, OutputNotJSON, Pieces, write_outputs
from factorize_app.jobs.probes import ping, probe, probe_task_servers, unreachable_types
from factorize_app.jobs.reconcile import RECONCILE_SECONDS, reconcile
from factorize_app.jobs.recording import finish_jobs
from factorize_app.jobs.release import release_waits, released
from factorize_app.jobs.result_files import RESULT_FILE, OutputRefused, OutputsNotStored, store_outputs
from factorize_app.jobs.states import (
    ABORTED,
    ABORTED_ERROR,
    CANCELED,
    CANCELED_ERROR,
    DEADLINE_CANCELED_ERROR,
    DONE_STATUSES,
    DURATION_BUCKETS,
    FAILED,
    FINISHED,
    QUEUED,
    RETRYABLE,
    STARTED,
    ClientLimits,
    JobState,
    RateLimit,
    describe_error,
    fair_order,
    status_body,
)
from factorize_app.jobs.status import count_request, get_status, open_status
from factorize_app.jobs.submit import submit, submit_many
from factorize_app.jobs.sync import compute
from factorize_app.jobs.upload_budgets import (
    FileStorageFull,
    UploadBudgetExceeded,
    UploadCharge,
    release_upload,
    reserve_upload,
    settle_upload,
    uploaded_bytes,
)
from factorize_app.jobs.worker_side import (
    JobOutcome,
    TakenJob,
    extend_lease,
    job_deadlines,
    report_progress,
    take_jobs,
    take_stop_requests,
    wait_for_work,
    yield_worker,
)

__all__ = [
    "HOME",
    "describe_server",
    "one_server",
    "serve_queues",
    "server_of",
    "servers",
    "ABORTED",
    "ABORTED_ERROR",
    "CANCELED",
    "CANCELED_ERROR",
    "DEADLINE_CANCELED_ERROR",
    "DONE_STATUSES",
    "RETRYABLE",
    "DURATION_BUCKETS",
    "FAILED",
    "FINISHED",
    "FULL",
    "PERSISTENCE",
    "QUEUED",
    "READ_ONLY",
    "REFUSAL_DETAILS",
    "STARTED",
    "ClientLimitExceeded",
    "ClientLimits",
    "EventWatch",
    "JobEvent",
    "JobNotCancellable",
    "JobNotRetryable",
    "JobNotFound",
    "JobOutcome",
    "OutputRefused",
    "RESULT_FILE",
    "OutputsNotStored",
    "JobState",
    "QueueRefusesWrites",
    "QueueUnavailable",
    "RateLimit",
    "SubmitRefused",
    "TakenJob",
    "Throttled",
    "admit_new_jobs",
    "drop_lost_workers",
    "LostWorker",
    "cancel",
    "is_owner",
    "non_public",
    "recount_running",
    "upgrade_statuses",
    "reconcile",
    "RECONCILE_SECONDS",
    "yield_worker",
    "clean_stale_workers",
    "compute",
    "count_request",
    "describe_error",
    "event_id_key",
    "events_after",
    "is_new_output",
    "OutputCount",
    "OutputLimitExceeded",
    "OutputNotJSON",
    "Pieces",
    "write_outputs",
    "latest_event",
    "open_events",
    "open_status",
    "state_after",
    "valid_event_id",
    "watch_events",
    "extend_lease",
    "fair_order",
    "finish_jobs",
    "report_progress",
    "take_stop_requests",
    "job_deadlines",
    "get_status",
    "job_durations",
    "job_id_for",
    "load",
    "ping",
    "probe",
    "probe_task_servers",
    "unreachable_types",
    "queue_error",
    "queue_stats",
    "retry",
    "redis_memory",
    "release_waits",
    "released",
    "submit",
    "submit_many",
    "status_body",
    "sweep_files",
    "sweep_queue",
    "take_cleaning_lock",
    "take_jobs",
    "wait_for_work",
    "worker_liveness",
    "write_refusal",
    "store_outputs",
    "SETUP_FAILURE_STALE",
    "clear_setup_failures",
    "failure_traceback",
    "record_setup_failure",
    "setup_error",
    "setup_failures",
    "files",
    "FileStorageFull",
    "UploadBudgetExceeded",
    "UploadCharge",
    "release_upload",
    "reserve_upload",
    "settle_upload",
    "uploaded_bytes",
]
