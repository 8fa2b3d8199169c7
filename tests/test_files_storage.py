"""Jobs' files in each storage the settings can name: a real directory, and a real S3-compatible
server (moto's, a process of its own on a loopback port), through Django's STORAGES as
project/settings.py builds it from the FILES_* settings; settings that cannot work refuse the
start; a storage that is full, read-only or does not answer is StorageUnavailable naming it; and
expired files disappear once a real worker's maintenance sweeps them."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import boto3
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import storages
from storages.backends.s3 import S3Storage

from factorize_app.jobs import file_sweep, files, keys
from factorize_app.jobs.file_storage import PARTIAL_DIR, AtomicFileSystemStorage
from project.environment import SETTINGS, Environment
from project.files_storage import S3_MEMORY_SPOOL, job_files_storage
from tests.conftest import PYTHON, ROOT, free_port, service_env, wait_until
from tests.kubernetes_manifests import app_deployments, container, one
from tests.kubernetes_manifests import config as cluster_config
from tests.test_docker_files import app_services, compose_config

MIB = 1024 * 1024
S3_KEYS = {"FILES_S3_ACCESS_KEY_ID": "test-key-id", "FILES_S3_SECRET_ACCESS_KEY": "test-secret"}


def config(**environ: str) -> dict:
    """The `job_files` STORAGES entry project/settings.py builds from these variables."""
    return job_files_storage(Environment(SETTINGS, environ), base_dir=ROOT)


def use(settings, tmp_path: Path, **environ: str) -> None:
    """The storage these variables name, as the service's (Django drops its cached backends)."""
    settings.STORAGES = {**settings.STORAGES, "job_files": config(**environ)}
    settings.JOB_FILES_STORAGE = "job_files"
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)


def chunks_of(data: bytes, size: int = 64 * 1024):
    for start in range(0, len(data), size):
        yield data[start : start + size]


def put(data: bytes, ttl: int = 60) -> files.StoredFile:
    return files.store(
        chunks=chunks_of(data), content_type="application/octet-stream", name="data.bin", owner="alice", ttl=ttl,
        max_bytes=100 * MIB,
    )  # fmt: skip


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory) -> str:
    """A real S3-compatible server (moto_server) on a free loopback port, for this module."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(PYTHON).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _listening(port) or process.poll() is not None, timeout=60, what="moto_server")
        assert process.poll() is None, log.read_text()
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


@pytest.fixture
def bucket(s3_server) -> dict[str, str]:
    """A fresh bucket on the S3 server; the variables that name it (and a key prefix)."""
    name = f"files-{uuid.uuid4().hex[:12]}"
    client(s3_server).create_bucket(Bucket=name)
    return {
        "FILES_STORAGE": "s3",
        "FILES_S3_BUCKET": name,
        "FILES_S3_ENDPOINT_URL": s3_server,
        "FILES_S3_REGION": "us-east-1",
        "FILES_S3_PREFIX": "deployment-a",
        "FILES_S3_ADDRESSING_STYLE": "path",
        **S3_KEYS,
    }


def client(endpoint: str):
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=S3_KEYS["FILES_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_KEYS["FILES_S3_SECRET_ACCESS_KEY"],
    )  # fmt: skip


def objects(bucket: dict[str, str]) -> list[str]:
    listed = client(bucket["FILES_S3_ENDPOINT_URL"]).list_objects_v2(Bucket=bucket["FILES_S3_BUCKET"])
    return sorted(item["Key"] for item in listed.get("Contents", []))


# --- the settings ------------------------------------------------------------------------------


def test_the_default_is_a_directory_in_the_project_and_files_dir_moves_it(tmp_path):
    assert config() == {
        "BACKEND": "factorize_app.jobs.file_storage.AtomicFileSystemStorage",
        "OPTIONS": {"location": str(ROOT / ".run" / "files")},
    }
    assert config(FILES_DIR=str(tmp_path))["OPTIONS"] == {"location": str(tmp_path)}


def test_the_s3_settings_give_django_storages_its_bucket_endpoint_credentials_and_bounded_calls():
    entry = config(
        FILES_STORAGE="s3", FILES_S3_BUCKET="jobs-files", FILES_S3_ENDPOINT_URL="http://minio:9000",
        FILES_S3_REGION="eu-west-3", FILES_S3_PREFIX="/factorize/prod/", FILES_S3_ADDRESSING_STYLE="path",
        FILES_S3_TIMEOUT="2.5", FILES_S3_ATTEMPTS="3", **S3_KEYS,
    )  # fmt: skip
    assert entry["BACKEND"] == "storages.backends.s3.S3Storage"
    storage = S3Storage(**entry["OPTIONS"])  # as Django's `storages` makes it
    assert (storage.bucket_name, storage.endpoint_url, storage.region_name, storage.location) == (
        "jobs-files", "http://minio:9000", "eu-west-3", "factorize/prod",
    )  # fmt: skip
    assert (storage.access_key, storage.secret_key) == ("test-key-id", "test-secret")
    assert storage.max_memory_size == S3_MEMORY_SPOOL and storage.default_acl is None
    transfers = storage.transfer_config  # a transfer holds about two parts (16 MiB) in memory at once
    assert (transfers.max_concurrency, transfers.max_in_memory_upload_chunks, transfers.multipart_chunksize) == (
        2, 2, 8 * MIB,
    )  # fmt: skip
    assert transfers.max_in_memory_download_chunks * transfers.io_chunksize == 8 * MIB
    s3 = storage.connection.meta.client  # the boto3 client it calls S3 with
    assert s3.meta.endpoint_url == "http://minio:9000" and s3.meta.region_name == "eu-west-3"
    assert s3._request_signer._credentials.access_key == "test-key-id"
    bounded = s3.meta.config
    assert (bounded.connect_timeout, bounded.read_timeout) == (2.5, 2.5)
    assert bounded.retries == {"mode": "standard", "total_max_attempts": 3}
    assert bounded.s3 == {"addressing_style": "path"}


def test_without_keys_boto3s_own_credentials_are_used():
    options = config(FILES_STORAGE="s3", FILES_S3_BUCKET="jobs-files")["OPTIONS"]
    assert options["access_key"] is None and options["secret_key"] is None and options["endpoint_url"] is None


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"FILES_STORAGE": "s3"}, "FILES_S3_BUCKET"),
        ({"FILES_STORAGE": "s3", "FILES_S3_BUCKET": "a/b"}, "FILES_S3_BUCKET"),
        ({"FILES_STORAGE": "s3", "FILES_S3_BUCKET": "bucket", "FILES_S3_ENDPOINT_URL": "minio:9000"},
         "FILES_S3_ENDPOINT_URL"),
        ({"FILES_STORAGE": "s3", "FILES_S3_BUCKET": "bucket", "FILES_S3_ACCESS_KEY_ID": "id"},
         "FILES_S3_SECRET_ACCESS_KEY"),
        ({"FILES_STORAGE": "s3", "FILES_S3_BUCKET": "bucket", "FILES_S3_SECRET_ACCESS_KEY": "secret"},
         "FILES_S3_ACCESS_KEY_ID"),
        ({"FILES_S3_BUCKET": "bucket"}, "FILES_S3_BUCKET is set but FILES_STORAGE is `filesystem`"),
        ({"FILES_DIR": "relative/files"}, "FILES_DIR must be an absolute path"),
        ({"FILES_STORAGE": "gcs"}, "FILES_STORAGE must be filesystem or s3"),
        ({"FILES_STORAGE": "s3", "FILES_S3_BUCKET": "bucket", "FILES_S3_TIMEOUT": "0"}, "FILES_S3_TIMEOUT"),
        ({"FILES_STORAGE": "s3", "FILES_S3_BUCKET": "bucket", "FILES_S3_ATTEMPTS": "0"}, "FILES_S3_ATTEMPTS"),
        ({"FILES_STORAGE": "s3", "FILES_S3_BUCKET": "bucket", "FILES_S3_ADDRESSING_STYLE": "dns"},
         "FILES_S3_ADDRESSING_STYLE"),
    ],
)  # fmt: skip
def test_settings_that_cannot_work_are_refused_naming_the_setting(environ, named):
    with pytest.raises(ImproperlyConfigured, match=named):
        config(**environ)


def test_the_service_refuses_to_start_with_s3_and_no_bucket():
    env = service_env(FILES_STORAGE="s3", FILES_S3_BUCKET="")
    result = subprocess.run([PYTHON, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "ImproperlyConfigured: FILES_STORAGE is `s3`: FILES_S3_BUCKET (the bucket's name) is required." in (
        result.stderr
    )


# --- the storages, real ------------------------------------------------------------------------


def test_files_in_a_directory_are_stored_whole_and_read_in_place(settings, tmp_path):
    use(settings, tmp_path, FILES_DIR=str(tmp_path / "files"))
    data = os.urandom(3 * MIB)
    stored = put(data)
    assert isinstance(storages["job_files"], AtomicFileSystemStorage)
    blob = tmp_path / "files" / "blobs" / stored.sha256
    assert blob.read_bytes() == data and stored.sha256 == hashlib.sha256(data).hexdigest()
    assert list((tmp_path / "files" / PARTIAL_DIR).iterdir()) == []  # the temporary file became the blob
    assert files.lookup(file_id=stored.id) == stored
    with files.open_blob(sha256=stored.sha256) as opened:
        assert opened.read() == data
    with files.local_path(sha256=stored.sha256) as path:
        assert path == blob  # the stored file itself: no copy


def test_files_in_an_s3_bucket_are_stored_under_the_prefix_read_copied_and_removed_when_expired(
    settings, tmp_path, bucket
):
    use(settings, tmp_path, **bucket)
    data, kept_data = os.urandom(3 * MIB), b"kept by a queued job"
    stored, kept = put(data, ttl=1), put(kept_data, ttl=1)
    files.keep_blob(sha256=kept.sha256, until=time.time() + 3600)
    assert objects(bucket) == sorted(f"deployment-a/blobs/{digest}" for digest in (stored.sha256, kept.sha256))
    assert files.lookup(file_id=stored.id) == stored
    with files.open_blob(sha256=stored.sha256) as opened:
        assert opened.read() == data
    with files.local_path(sha256=stored.sha256) as path:
        assert path.read_bytes() == data and path.parent == tmp_path  # a copy in FILE_UPLOAD_TEMP_DIR
    assert not path.exists()  # ...removed afterwards
    assert files.remove_expired(now=time.time() + 5) == 1
    assert objects(bucket) == [f"deployment-a/blobs/{kept.sha256}"]
    with pytest.raises(files.FileNotFound):
        files.open_blob(sha256=stored.sha256)


def test_a_bucket_that_does_not_answer_is_unavailable_within_its_timeouts(settings, tmp_path, bucket):
    """An endpoint that takes the connection and never answers: each call gives up after its read
    timeout, and the configured attempts (2) bound the wait."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections complete in the kernel; nothing ever reads or answers
    with silent:
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        use(settings, tmp_path, **{**bucket, "FILES_S3_ENDPOINT_URL": endpoint, "FILES_S3_TIMEOUT": "0.5"})
        started = time.monotonic()
        with pytest.raises(files.StorageUnavailable, match=f"the file storage failed: .*{endpoint}"):
            put(b"some bytes")
        print(f"a silent S3 endpoint: StorageUnavailable after {time.monotonic() - started:.2f} s")


def test_a_closed_endpoint_is_unavailable_naming_it(settings, tmp_path, bucket):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    use(settings, tmp_path, **{**bucket, "FILES_S3_ENDPOINT_URL": endpoint})
    started = time.monotonic()
    with pytest.raises(files.StorageUnavailable, match=f"Could not connect to the endpoint URL: \"{endpoint}/"):
        put(b"some bytes")
    with pytest.raises(files.StorageUnavailable, match=endpoint):
        files.open_blob(sha256=hashlib.sha256(b"some bytes").hexdigest())
    print(f"a closed S3 endpoint: StorageUnavailable after {time.monotonic() - started:.2f} s (two calls)")


@contextlib.contextmanager
def mounted_tmpfs(path: Path, *options: str):
    """A tmpfs of its own at `path` (root only: the test is skipped elsewhere)."""
    path.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_full_directory_is_unavailable_and_leaves_no_partial_blob(settings, tmp_path, redis_conn):
    with mounted_tmpfs(tmp_path / "small", "size=1m") as small:
        use(settings, tmp_path, FILES_DIR=str(small))
        data = os.urandom(2 * MIB)
        with pytest.raises(files.StorageUnavailable, match="No space left on device"):
            put(data)
        digest = hashlib.sha256(data).hexdigest()
        assert not (small / "blobs" / digest).exists() and list((small / PARTIAL_DIR).iterdir()) == []
        assert not redis_conn.keys(keys.FILE_RECORD_PREFIX + "*")  # no record of bytes not stored
        with pytest.raises(files.FileNotFound):  # never a truncated blob taken for the whole one
            files.open_blob(sha256=digest)
        assert put(b"small bytes fit").size == 15  # the storage works again for what fits


def test_a_read_only_directory_is_unavailable(settings, tmp_path):
    with mounted_tmpfs(tmp_path / "read-only", "ro", "size=1m") as read_only:
        use(settings, tmp_path, FILES_DIR=str(read_only))
        with pytest.raises(files.StorageUnavailable, match="Read-only file system"):
            put(b"some bytes")


# --- expired files swept -------------------------------------------------------------------------


def test_the_sweep_runs_at_most_once_per_interval_across_processes(settings, tmp_path, redis_conn):
    use(settings, tmp_path, FILES_DIR=str(tmp_path / "files"))
    settings.FILES_SWEEP_INTERVAL = 3600
    first = put(b"first", ttl=1)
    put(b"second", ttl=1)
    assert file_sweep.sweep_files(now=time.time() + 5) == 2
    assert 3590 < redis_conn.ttl(keys.FILE_SWEEP_LOCK) <= 3600
    third = put(b"third", ttl=1)
    assert file_sweep.sweep_files(now=time.time() + 5) == 0  # another sweep ran within the interval
    assert (tmp_path / "files" / "blobs" / third.sha256).exists()
    assert not (tmp_path / "files" / "blobs" / first.sha256).exists()


def test_a_sweep_is_bounded_by_its_limit(settings, tmp_path, redis_conn):
    use(settings, tmp_path, FILES_DIR=str(tmp_path / "files"))
    settings.FILES_SWEEP_LIMIT = 100
    for number in range(150):
        put(f"file {number}".encode(), ttl=1)
    assert file_sweep.sweep_files(now=time.time() + 5) == 100
    assert redis_conn.zcard(keys.FILE_BLOBS) == 50
    redis_conn.delete(keys.FILE_SWEEP_LOCK)  # the interval passed
    assert file_sweep.sweep_files(now=time.time() + 5) == 50


def test_a_failing_storage_does_not_stop_the_sweep_or_lose_the_file(settings, tmp_path, redis_conn, bucket):
    use(settings, tmp_path, **bucket)
    stored = put(b"bytes", ttl=1)
    use(settings, tmp_path, **{**bucket, "FILES_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})
    assert file_sweep.sweep_files(now=time.time() + 5) == 0  # logged, not raised
    assert redis_conn.zscore(keys.FILE_BLOBS, stored.sha256) is not None  # tried again next time


def test_leftovers_of_a_writer_that_died_are_swept(settings, tmp_path):
    use(settings, tmp_path, FILES_DIR=str(tmp_path / "files"))
    partials = tmp_path / "files" / PARTIAL_DIR
    partials.mkdir(parents=True)
    (partials / "old").write_bytes(b"half a blob")
    os.utime(partials / "old", (time.time() - file_sweep.PARTIAL_AGE - 1,) * 2)
    (partials / "writing").write_bytes(b"a write under way")
    file_sweep.sweep_files()
    assert [path.name for path in partials.iterdir()] == ["writing"]


@pytest.mark.parametrize("storage", ["filesystem", "s3"])
def test_an_expired_file_disappears_once_a_real_worker_sweeps(storage, settings, tmp_path, start_worker, request):
    environ = {"FILES_DIR": str(tmp_path / "files")}
    if storage == "s3":
        environ = request.getfixturevalue("bucket")
    use(settings, tmp_path, **environ)
    stored, kept = put(b"expires in a second", ttl=1), put(b"kept", ttl=3600)

    def present() -> list[str]:
        if storage == "s3":
            return [key.rsplit("/", 1)[1] for key in objects(environ)]
        return sorted(path.name for path in (tmp_path / "files" / "blobs").iterdir())

    assert present() == sorted([stored.sha256, kept.sha256])
    start_worker("primes", FILES_SWEEP_INTERVAL="1", **environ)
    wait_until(lambda: present() == [kept.sha256], timeout=30, what="the worker's sweep")


# --- deployed: one shared directory ------------------------------------------------------------


def test_the_image_makes_the_files_directory_for_its_user_and_names_it():
    text = (ROOT / "Dockerfile").read_text()
    assert "FILES_DIR=/data/files" in text
    assert "mkdir -p /data/files" in text and "chown -R app:app /data" in text  # a new volume takes its owner


@pytest.mark.parametrize("profiles", [(), ("--profile", "distributed")], ids=["default", "distributed"])
def test_in_compose_the_web_and_every_worker_mount_one_volume_at_files_dir(profiles):
    services = app_services(compose_config(*profiles))
    assert {"web", "worker"} <= set(services)
    assert not profiles or {"webhooks", "worker-primes"} <= set(services)
    for name, service in services.items():
        directory = service["environment"]["FILES_DIR"]
        mounts = {volume["target"]: volume["source"] for volume in service["volumes"]}
        assert mounts.get(directory) == "job-files", f"{name} does not share the files volume at {directory}"


def test_in_kubernetes_a_shared_claim_is_mounted_at_files_dir_by_the_web_and_every_worker():
    name = "job-files"
    claim = one("PersistentVolumeClaim", name)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"] and claim["spec"]["resources"]["requests"]["storage"]
    assert cluster_config()["FILES_STORAGE"] == "filesystem"
    mounting = set()
    for deployment in app_deployments():
        pod = deployment["spec"]["template"]["spec"]
        claimed = {v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == name}
        mounts = {m["mountPath"] for m in container(deployment)["volumeMounts"] if m["name"] in claimed}
        assert mounts == {"/data/files"}, deployment["metadata"]["name"]
        mounting.add(deployment["metadata"]["name"])
    assert {"web", "webhooks", "worker-primes", "worker-digits"} <= mounting

