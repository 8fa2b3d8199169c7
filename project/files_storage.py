"""Django's STORAGES entry for jobs' files, built from the FILES_* settings (project/environment/storage.py).

A setting combination that cannot work refuses the start with ImproperlyConfigured naming the
setting, rather than failing at the first upload."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

FILESYSTEM_BACKEND = "factorize_app.jobs.file_storage.AtomicFileSystemStorage"
S3_BACKEND = "storages.backends.s3.S3Storage"
# A blob read from S3 is spooled in memory up to this size, then on disk (django-storages' own
# default, 0, keeps a whole object in memory).
S3_MEMORY_SPOOL = 1024 * 1024
S3_PART = 8 * 1024 * 1024
S3_PARTS_AT_ONCE = 2
_S3_ONLY = (
    "FILES_S3_BUCKET",
    "FILES_S3_ENDPOINT_URL",
    "FILES_S3_REGION",
    "FILES_S3_ACCESS_KEY_ID",
    "FILES_S3_SECRET_ACCESS_KEY",
    "FILES_S3_PREFIX",
)
# S3's bucket names, and the looser ones of S3-compatible services (MinIO, Ceph allow capitals, _).
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")


def job_files_storage(env: Any, *, base_dir: Path) -> dict[str, Any]:
    """The `job_files` STORAGES entry: a directory (FILES_STORAGE=filesystem) or a bucket (s3)."""
    for name in ("FILES_S3_ADDRESSING_STYLE", "FILES_S3_TIMEOUT", "FILES_S3_ATTEMPTS"):
        getattr(env, name)  # a malformed value refuses the start whichever storage is used
    if env.FILES_STORAGE == "s3":
        return _s3(env)
    given = [name for name in _S3_ONLY if getattr(env, name)]
    if given:
        raise ImproperlyConfigured(
            f"{given[0]} is set but FILES_STORAGE is `filesystem`: set FILES_STORAGE=s3 to keep jobs' files "
            "in the bucket, or unset the FILES_S3_* settings."
        )
    directory = env.FILES_DIR or str(base_dir / ".run" / "files")
    if not Path(directory).is_absolute():
        raise ImproperlyConfigured(f"FILES_DIR must be an absolute path, got {directory!r}.")
    return {"BACKEND": FILESYSTEM_BACKEND, "OPTIONS": {"location": directory}}


def _s3(env: Any) -> dict[str, Any]:
    from boto3.s3.transfer import TransferConfig  # only S3 deployments pay for importing boto3
    from botocore.config import Config

    bucket = env.FILES_S3_BUCKET.strip()
    if not bucket:
        raise ImproperlyConfigured("FILES_STORAGE is `s3`: FILES_S3_BUCKET (the bucket's name) is required.")
    if not _BUCKET.fullmatch(bucket):
        raise ImproperlyConfigured(f"FILES_S3_BUCKET must be a bucket name (a-z, 0-9, '.', '-'), got {bucket!r}.")
    endpoint = env.FILES_S3_ENDPOINT_URL.strip()
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImproperlyConfigured(f"FILES_S3_ENDPOINT_URL must be an http(s):// URL, got {endpoint!r}.")
    key_id, secret = env.FILES_S3_ACCESS_KEY_ID.strip(), env.FILES_S3_SECRET_ACCESS_KEY.strip()
    if bool(key_id) != bool(secret):
        missing = "FILES_S3_SECRET_ACCESS_KEY" if key_id else "FILES_S3_ACCESS_KEY_ID"
        raise ImproperlyConfigured(
            f"{missing} is missing: set both FILES_S3_ACCESS_KEY_ID and FILES_S3_SECRET_ACCESS_KEY, or neither "
            "(boto3's own credentials: AWS_* variables, an instance or pod role)."
        )
    style = env.FILES_S3_ADDRESSING_STYLE
    timeout = env.FILES_S3_TIMEOUT
    client_config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        # "standard" retries transient errors and throttling with jittered backoff (at most ~2 s
        # before a second attempt); a bucket that does not answer costs attempts x timeout.
        retries={"mode": "standard", "total_max_attempts": env.FILES_S3_ATTEMPTS},
        s3={"addressing_style": style},
    )
    return {
        "BACKEND": S3_BACKEND,
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": endpoint or None,
            "region_name": env.FILES_S3_REGION.strip() or None,
            "access_key": key_id or None,
            "secret_key": secret or None,
            "location": env.FILES_S3_PREFIX.strip("/ "),
            "addressing_style": style,
            "client_config": client_config,
            "transfer_config": _bounded_transfers(TransferConfig),
            "max_memory_size": S3_MEMORY_SPOOL,
            "file_overwrite": True,  # names are digests: the same name is the same bytes
            "default_acl": None,  # the bucket's own (private): files are served by the API, never by URL
            "querystring_auth": True,
        },
    }


def _bounded_transfers(transfer_config: type) -> Any:
    """At most two parts of a transfer in memory at once (about 16 MiB). With boto3's defaults (10
    parts of 8 MiB up; down, up to 1000 chunks of 256 KiB queued) a 100 MiB upload took 130 MB
    more; s3transfer has the bounds, boto3's TransferConfig does not take them as arguments."""
    config = transfer_config(multipart_chunksize=S3_PART, max_concurrency=S3_PARTS_AT_ONCE)
    config.max_in_memory_upload_chunks = S3_PARTS_AT_ONCE
    config.max_in_memory_download_chunks = S3_PART // config.io_chunksize
    return config
