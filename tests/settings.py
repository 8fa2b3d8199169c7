"""Test settings: the project's settings with a dedicated Redis database and test task types.

Worker and web subprocesses started by the tests inherit DJANGO_SETTINGS_MODULE, so they see
the same database and task types.
"""

import os


def _database_of_this_pytest_worker(url: str) -> str:
    """Under pytest-xdist (`make test` runs tests in parallel), worker gwN takes the database N below
    TEST_REDIS_URL's: each flushes only its own. Decided once, in the pytest worker; the processes
    it starts inherit the result (TEST_REDIS_WORKER_DB says it is decided)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker or "TEST_REDIS_WORKER_DB" in os.environ:
        return url
    base, _, db = url.rpartition("/")
    number = int(db or 0) - int(worker.removeprefix("gw"))
    if number < 1:
        raise RuntimeError(f"TEST_REDIS_URL {url}: not enough databases below it for pytest worker {worker}")
    os.environ["TEST_REDIS_WORKER_DB"] = str(number)
    return f"{base}/{number}"


# Always the test database, never a REDIS_URL left in the environment for the service.
os.environ["TEST_REDIS_URL"] = _database_of_this_pytest_worker(
    os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
)
os.environ["REDIS_URL"] = os.environ["TEST_REDIS_URL"]
# Jobs' files in a directory of this database's own: blobs are shared by content, so a sweep in
# one pytest worker's database must not delete bytes another database still refers to.
os.environ.setdefault(
    "FILES_DIR",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".run", "test-files",
                 os.environ["TEST_REDIS_URL"].rpartition("/")[2] or "0"),
)
# ...and never a Sentinel group configured for the service (test_sentinel.py starts its own).
os.environ["REDIS_SENTINELS"] = os.environ.get("TEST_REDIS_SENTINELS", "")
# Workers beat every second, so a killed worker's jobs are recovered within seconds, not minutes.
os.environ.setdefault("WORKER_HEARTBEAT", "1")
os.environ.setdefault("WORKER_MAINTENANCE_INTERVAL", "1")
# Every test client is 127.0.0.1: the rate limits are tested on their own (test_throttling).
os.environ.setdefault("THROTTLE_SUBMIT", "100000/second")
os.environ.setdefault("THROTTLE_POLL", "100000/second")
os.environ.setdefault("THROTTLE_AUTH_FAILURES", "100000/second")

from project.settings import *  # noqa: E402, F403
from project.settings import DEFAULT_TASK_TYPES  # noqa: E402

TASK_TYPES = DEFAULT_TASK_TYPES + [
    "tests.task_types.SLOW_SETUP",
    "tests.task_types.SLEEPY",
    "tests.task_types.FAILING",
    "tests.task_types.BATCHED",
    "tests.task_types.SLOW_BATCH",
    "tests.task_types.CRASHING",
]
