"""Client of a factorize service, for every task type it serves: `Client`, `Job` and the
`factorize` command (factorize_client.cli). Needs only `requests`."""

from factorize_client.api import Client, Job, TaskInfo
from factorize_client.errors import ClientError, JobFailed, OutOfTime, ServiceError, Unreachable

__all__ = ["Client", "ClientError", "Job", "JobFailed", "OutOfTime", "ServiceError", "TaskInfo", "Unreachable"]
__version__ = "0.1.0"
