"""Jobs' files in real storage (a directory through Django's storage API) with their records in Redis."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from factorize_app.jobs import files, keys

MIB = 1024 * 1024


def use_directory(settings, location) -> None:
    """A real directory storage; Django drops its cached backends when STORAGES is set."""
    backend = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(location)}}
    settings.STORAGES = {**settings.STORAGES, "job_files": backend}


@pytest.fixture
def storage_dir(settings, tmp_path):
    use_directory(settings, tmp_path / "files")
    settings.JOB_FILES_STORAGE = "job_files"
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    return tmp_path / "files"


def chunks_of(data: bytes, size: int = 64 * 1024):
    for start in range(0, len(data), size):
        yield data[start : start + size]


def put(data: bytes, owner: str = "alice", ttl: int = 60, max_bytes: int = 10 * MIB) -> files.StoredFile:
    return files.store(
        chunks=chunks_of(data), content_type="image/png", name="digit.png", owner=owner, ttl=ttl, max_bytes=max_bytes
    )


def test_the_same_bytes_are_stored_once_under_their_digest_and_named_by_random_ids(storage_dir):
    data = b"\x89PNG" + bytes(range(256)) * 4000
    first, second = put(data), put(data, owner="bob")
    assert first.sha256 == second.sha256 == hashlib.sha256(data).hexdigest()
    assert first.id != second.id and files.valid_id(first.id) and files.valid_id(second.id)
    assert [path.name for path in (storage_dir / "blobs").iterdir()] == [first.sha256]
    assert files.lookup(file_id=second.id) == second
    with files.open_blob(sha256=first.sha256) as stored:
        assert stored.read() == data
    with files.local_path(sha256=first.sha256) as path:
        assert path.read_bytes() == data


def test_bytes_over_the_limit_are_refused_and_nothing_is_kept(storage_dir, redis_conn):
    with pytest.raises(files.FileTooLarge) as refused:
        put(b"x" * (2 * MIB + 1), max_bytes=2 * MIB)
    assert refused.value.limit == 2 * MIB
    assert not (storage_dir / "blobs").exists() and redis_conn.zcard(keys.FILE_BLOBS) == 0


@pytest.mark.parametrize(
    "file_id", ["", "file_", "file_" + "0" * 31, "file_" + "G" * 32, "../etc/passwd", "file_" + "a" * 32]
)
def test_unknown_or_malformed_ids_are_not_found(storage_dir, file_id):
    with pytest.raises(files.FileNotFound):
        files.lookup(file_id=file_id)


def test_expired_bytes_are_removed_and_bytes_kept_longer_stay(storage_dir):
    old, kept = put(b"old bytes", ttl=1), put(b"kept bytes", ttl=1)
    files.keep_blob(sha256=kept.sha256, until=time.time() + 3600)  # a queued job refers to them
    assert files.remove_expired(now=time.time() + 5) == 1
    assert not (storage_dir / "blobs" / old.sha256).exists()
    assert (storage_dir / "blobs" / kept.sha256).exists()
    with pytest.raises(files.FileNotFound):
        files.open_blob(sha256=old.sha256)


def test_a_removal_past_its_deadline_deletes_nothing_more_and_leaves_the_rest_for_later(storage_dir):
    old = put(b"bytes past their time", ttl=1)
    assert files.remove_expired(now=time.time() + 5, deadline=time.monotonic()) == 0
    assert (storage_dir / "blobs" / old.sha256).exists()  # still listed: the next sweep deletes it
    assert files.remove_expired(now=time.time() + 5) == 1
    assert not (storage_dir / "blobs" / old.sha256).exists()


def test_a_store_during_the_deletion_of_the_same_bytes_waits_and_writes_them_again(storage_dir, redis_conn):
    first = put(b"same bytes", ttl=1)
    redis_conn.zrem(keys.FILE_BLOBS, first.sha256)
    redis_conn.hset(keys.FILE_DELETING, first.sha256, time.time())  # a sweeper claimed them, is deleting
    stored = []
    writer = threading.Thread(target=lambda: stored.append(put(b"same bytes")))
    writer.start()
    writer.join(0.3)
    assert writer.is_alive(), "the store did not wait for the deletion"
    (storage_dir / "blobs" / first.sha256).unlink()  # the sweeper's delete...
    redis_conn.hdel(keys.FILE_DELETING, first.sha256)  # ...and its end
    writer.join(10)
    assert stored and (storage_dir / "blobs" / first.sha256).read_bytes() == b"same bytes"


def test_a_claim_left_by_a_dead_sweeper_does_not_block_stores(storage_dir, redis_conn):
    redis_conn.hset(keys.FILE_DELETING, hashlib.sha256(b"abc").hexdigest(), time.time() - files.DELETION_STALE - 1)
    assert put(b"abc").size == 3
    assert not redis_conn.hexists(keys.FILE_DELETING, hashlib.sha256(b"abc").hexdigest())


def test_a_failing_storage_is_unavailable_not_a_crash(storage_dir, settings, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the storage's directory should be")
    use_directory(settings, blocker)
    with pytest.raises(files.StorageUnavailable, match="the file storage failed"):
        put(b"some bytes")


def test_an_upload_pushed_piece_by_piece_keeps_nothing_unless_finished(storage_dir, tmp_path, redis_conn):
    data = bytes(range(256)) * 1000
    with files.Upload(max_bytes=MIB) as upload:
        for piece in chunks_of(data, 1000):
            upload.write(piece)
        assert (upload.size, upload.head) == (len(data), data[:16])
    assert list(tmp_path.glob("tmp*")) == [] and not (storage_dir / "blobs").exists()  # left without finish
    assert redis_conn.zcard(keys.FILE_BLOBS) == 0
    with files.Upload(max_bytes=MIB) as upload:
        upload.write(data)
        stored = upload.finish(content_type="application/octet-stream", name="d.bin", owner="alice", ttl=60)
    assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.size == len(data)
    assert (storage_dir / "blobs" / stored.sha256).read_bytes() == data
    with files.Upload(max_bytes=10) as upload, pytest.raises(files.FileTooLarge):
        upload.write(b"x" * 11)


def test_a_file_is_readable_by_its_uploader_or_its_jobs_owners_only(storage_dir, redis_conn):
    upload, output = put(b"mine", owner="alice"), files.store(
        chunks=[b"out"], content_type="text/plain", name="o.txt", owner="", job_id="j1", ttl=60, max_bytes=10
    )
    redis_conn.sadd(keys.owners("j1"), "bob", "carol")
    assert files.readable_by(upload, client="alice") and not files.readable_by(upload, client="bob")
    assert files.readable_by(output, client="bob") and files.readable_by(output, client="carol")
    assert not files.readable_by(output, client="alice") and not files.readable_by(output, client="")


@pytest.mark.parametrize(
    ("declared", "kept"),
    [("image/PNG", "image/png"), ("text/plain; charset=utf-8", "text/plain"), ("", "application/octet-stream"),
     ("text", None), ("a/b/c", None), ("text/<script>", None), ("x" * 200 + "/y", None)],
)  # fmt: skip
def test_content_types_are_kept_bare_and_only_when_valid(declared, kept):
    assert files.clean_content_type(declared) == kept


def test_known_formats_must_start_as_they_do():
    assert files.matches_content_type("image/png", b"\x89PNG\r\n\x1a\n....")
    assert not files.matches_content_type("image/png", b"<html><script>")
    assert files.matches_content_type("image/webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ")
    assert not files.matches_content_type("image/webp", b"RIFF\x00\x00\x00\x00WAVEfmt ")
    assert files.matches_content_type("text/html", b"anything at all")


def test_concurrent_uploads_cannot_pass_a_clients_budget_together(storage_dir, settings):
    from factorize_app import jobs

    settings.UPLOAD_CLIENT_BYTES, settings.UPLOAD_TOTAL_BYTES = 10_000, 0
    outcomes, start = [], threading.Barrier(20)

    def reserve():
        start.wait()
        try:
            outcomes.append(jobs.reserve_upload(client="alice", size=1000))
        except jobs.UploadBudgetExceeded as refused:
            outcomes.append(refused)

    threads = [threading.Thread(target=reserve) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    charges = [outcome for outcome in outcomes if isinstance(outcome, jobs.UploadCharge)]
    assert len(charges) == 10 and jobs.uploaded_bytes(client="alice") == 10_000
    jobs.release_upload(charges[0])
    jobs.settle_upload(charges[1], size=10, expires_at=time.time() + settings.UPLOAD_TTL)
    assert jobs.uploaded_bytes(client="alice") == 8_010
