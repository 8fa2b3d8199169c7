"""The files HTTP API: POST /files streams an upload to real storage (a directory), GET /files/<id>
streams it back to its owner only; limits, budgets, cut-short bodies and a failing storage answer
JSON. In process (Django's test client) and over the real server (scripts/serve.sh)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import time
import urllib.parse
from contextlib import contextmanager

import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile

from factorize_app import jobs
from factorize_app.jobs import files, keys
from tests.conftest import web_server
from tests.processes import RepeatedUpload, peak_resident_while, resident_bytes, server_pid, wait_until
from tests.test_files_store import use_directory

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
MIB = 1024 * 1024
OTHER = {"REMOTE_ADDR": "10.9.8.7"}  # another anonymous client


@pytest.fixture
def storage_dir(settings, tmp_path):
    use_directory(settings, tmp_path / "files")
    settings.JOB_FILES_STORAGE = "job_files"
    (tmp_path / "spool").mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "spool")
    return tmp_path / "files"


def upload(api, data: bytes = PNG, name: str = "digit.png", content_type: str = "image/png", **extra):
    part = SimpleUploadedFile(name, data, content_type=content_type)
    return api.post("/files", {"file": part}, format="multipart", **extra)


def left_on_disk(storage_dir) -> list[str]:
    """Every file in the storage and in the upload spool directory."""
    return sorted(str(path) for root in (storage_dir, storage_dir.parent / "spool") for path in root.rglob("*"))


def test_an_upload_round_trips_with_its_bytes_and_safe_headers(api, storage_dir):
    created = upload(api)
    assert created.status_code == 201, created.content
    body = created.json()
    assert set(body) == {"id", "url", "sha256", "size", "content_type", "name", "expires_at"}
    assert files.valid_id(body["id"]) and body["url"] == f"http://testserver/files/{body['id']}"
    assert created["Location"] == body["url"]
    assert (body["sha256"], body["size"]) == (hashlib.sha256(PNG).hexdigest(), len(PNG))
    assert (body["content_type"], body["name"]) == ("image/png", "digit.png")
    assert 86000 < time.mktime(time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%S+00:00")) - time.mktime(
        time.gmtime()
    ) <= 86400
    assert jobs.uploaded_bytes(client="address-127.0.0.1") == jobs.uploaded_bytes() == len(PNG)

    got = api.get(f"/files/{body['id']}", HTTP_ACCEPT="image/png")
    assert got.status_code == 200
    assert b"".join(got.streaming_content) == PNG
    assert got["Content-Type"] == "image/png" and got["Content-Length"] == str(len(PNG))
    assert got["Content-Disposition"] == 'attachment; filename="digit.png"'
    assert got["X-Content-Type-Options"] == "nosniff" and "sandbox" in got["Content-Security-Policy"]
    head = api.head(f"/files/{body['id']}/")
    assert head.status_code == 200 and head.content == b""
    assert (head["Content-Length"], head["Content-Type"]) == (str(len(PNG)), "image/png")


def test_only_the_uploader_reads_an_upload_and_others_get_the_same_404_as_for_no_file(api, storage_dir, key):
    file_id = upload(api).json()["id"]
    unknown = api.get("/files/file_" + "0" * 32)
    for other in (api.get(f"/files/{file_id}", **OTHER), api.get(f"/files/{file_id}", **key("other"))):
        assert other.status_code == 404 and other.json() == unknown.json() == {"detail": "No file with this id."}
    assert api.head(f"/files/{file_id}", **OTHER).status_code == 404
    with_key = key("owner")
    mine = upload(api, **with_key).json()["id"]
    got = api.get(f"/files/{mine}", **with_key)
    assert got.status_code == 200 and b"".join(got.streaming_content) == PNG
    assert api.get(f"/files/{mine}").status_code == 404  # the key's file: not its address's


def test_a_jobs_output_is_read_by_the_jobs_owners_only(api, storage_dir, redis_conn):
    stored = files.store(
        chunks=[b"a result"], content_type="text/plain", name="out.txt", owner="", job_id="job1", ttl=60, max_bytes=100
    )
    redis_conn.sadd(keys.owners("job1"), "address-127.0.0.1")
    assert files.readable_by(stored, client="address-127.0.0.1")
    assert not files.readable_by(stored, client="address-10.9.8.7") and not files.readable_by(stored, client="")
    assert b"".join(api.get(f"/files/{stored.id}").streaming_content) == b"a result"
    assert api.get(f"/files/{stored.id}", **OTHER).status_code == 404


@pytest.mark.parametrize(
    "file_id", ["file_", "file_" + "0" * 31, "file_" + "A" * 32, "..%2F..%2Fetc%2Fpasswd", "x" * 5000, "file_%00", "ü"]
)
def test_malformed_or_unknown_ids_are_404_json(api, storage_dir, file_id):
    response = api.get(f"/files/{file_id}")
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert "detail" in response.json()


def test_a_file_over_the_limit_is_413_naming_it_and_leaves_nothing(api, storage_dir, settings):
    settings.UPLOAD_MAX_BYTES = 5000
    refused = upload(api, b"\x89PNG\r\n\x1a\n" + b"x" * 4993)  # one byte over, within the body's framing allowance
    assert refused.status_code == 413, refused.content
    assert refused.json()["limit"] == "UPLOAD_MAX_BYTES" and refused.json()["max"] == 5000
    assert "5000 bytes" in refused.json()["detail"]
    declared = upload(api, b"y" * (5000 + 70 * 1024), content_type="text/plain")  # refused before it is read
    assert declared.status_code == 413 and declared.json()["max"] == 5000
    assert left_on_disk(storage_dir) == [] and jobs.uploaded_bytes() == 0
    assert upload(api, b"\x89PNG\r\n\x1a\n" + b"x" * 4992).status_code == 201  # exactly the limit


def multipart(data: bytes, name: str = "a.bin", content_type: str = "application/octet-stream") -> tuple[bytes, str]:
    boundary = "bOuNdArY1234"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_a_body_cut_short_is_400_and_nothing_is_kept_or_counted(api, storage_dir):
    body, content_type = multipart(b"z" * 200_000)
    sent = body[:120_000]  # the client went away: the server's stream ends early
    response = api.generic(
        "POST", "/files", b"", content_type, CONTENT_LENGTH=str(len(body)), **{"wsgi.input": io.BytesIO(sent)}
    )
    assert response.status_code == 400 and "cut short" in response.json()["detail"], response.content
    assert left_on_disk(storage_dir) == [] and jobs.uploaded_bytes() == 0


@pytest.mark.parametrize(
    ("data", "name", "content_type", "field"),
    [
        (b"not a png at all", "x.png", "image/png", "These bytes are not image/png"),
        (b"%PDF-", "x.pdf", "text plain", "not a valid MIME type"),
        (b"GIF89a....", "x.gif", "image/gif; charset=x/y", None),
    ],
)
def test_the_declared_content_type_is_checked(api, storage_dir, data, name, content_type, field):
    response = upload(api, data, name=name, content_type=content_type)
    if field is None:
        assert response.status_code == 201 and response.json()["content_type"] == "image/gif"
    else:
        assert response.status_code == 400 and field in response.json()["file"][0], response.content


def test_names_are_kept_without_path_parts_or_control_characters(api, storage_dir):
    hostile = "..\\..\\evil\x07\u202e/../etc/pass\x1bwd.txt"
    body, content_type = multipart(b"abc", name=hostile, content_type="text/plain")
    created = api.generic("POST", "/files", body, content_type)
    assert created.status_code == 201, created.content
    assert created.json()["name"] == "passwd.txt"
    long = upload(api, b"abc", name="n" * 500 + ".txt", content_type="text/plain").json()["name"]
    assert len(long) == files.MAX_NAME and long.endswith(".txt")
    assert files.clean_name('a"b;c\r\n.txt') == 'a"b;c.txt'
    quoted = upload(api, b"q", name='résumé "x".txt', content_type="text/plain").json()["id"]
    got = api.get(f"/files/{quoted}")
    assert b"".join(got.streaming_content) == b"q"
    assert got["Content-Disposition"] == "attachment; filename*=utf-8''" + urllib.parse.quote('résumé "x".txt')


def test_a_body_without_the_file_part_or_with_another_is_400_naming_it(api, storage_dir):
    empty = api.post("/files", {"note": "no file"}, format="multipart")
    assert empty.status_code == 400 and "part named `file`" in empty.json()["file"][0]
    two = api.post(
        "/files", {"file": SimpleUploadedFile("a", b"a"), "extra": SimpleUploadedFile("b", b"b")}, format="multipart"
    )
    assert two.status_code == 400 and "extra" in two.json()
    assert api.post("/files", {"file": "x"}, format="json").status_code == 415
    assert left_on_disk(storage_dir) == [] and jobs.uploaded_bytes() == 0


def test_a_clients_live_uploads_are_bounded_and_others_still_upload(api, storage_dir, settings):
    settings.UPLOAD_CLIENT_BYTES = 3000
    assert upload(api, b"a" * 1000, content_type="text/plain").status_code == 201
    assert upload(api, b"b" * 1000, content_type="text/plain").status_code == 201
    refused = upload(api, b"c" * 1000, content_type="text/plain")
    assert refused.status_code == 429, refused.content
    assert refused.json()["limit"] == "UPLOAD_CLIENT_BYTES" and refused.json()["max"] == 3000
    assert int(refused["Retry-After"]) >= 1
    assert jobs.uploaded_bytes(client="address-127.0.0.1") == 2000
    assert upload(api, b"d" * 1000, content_type="text/plain", **OTHER).status_code == 201


def test_all_clients_uploads_are_bounded_by_the_total_budget(api, storage_dir, settings):
    settings.UPLOAD_TOTAL_BYTES = 2500
    assert upload(api, b"a" * 2000, content_type="text/plain").status_code == 201
    refused = upload(api, b"b" * 1000, content_type="text/plain", **OTHER)
    assert refused.status_code == 507, refused.content
    assert refused.json()["limit"] == "UPLOAD_TOTAL_BYTES" and refused.json()["max"] == 2500
    assert jobs.uploaded_bytes() == 2000 and jobs.uploaded_bytes(client="address-10.9.8.7") == 0


def test_bytes_counted_come_back_when_the_uploads_expire(api, storage_dir, settings):
    settings.UPLOAD_TTL = 2
    file_id = upload(api, b"e" * 1000, content_type="text/plain").json()["id"]
    assert jobs.uploaded_bytes() == 1000
    wait_until(lambda: jobs.uploaded_bytes() == 0, timeout=10, what="the upload's bytes to be given back")
    assert api.get(f"/files/{file_id}").status_code == 404


def test_uploads_and_downloads_count_as_requests_held_open(api, storage_dir, settings):
    settings.MAX_HELD_PER_CLIENT = 1
    client = {"REMOTE_ADDR": "10.1.1.1"}
    file_id = upload(api, **client).json()["id"]
    first = api.get(f"/files/{file_id}", **client)  # its bytes not read yet: the request is held
    assert first.status_code == 200
    for refused in (api.get(f"/files/{file_id}", **client), upload(api, **client)):
        assert refused.status_code == 429 and refused.json()["limit"] == "MAX_HELD_PER_CLIENT", refused.content
        assert refused["Retry-After"] == "1"
    other = {"REMOTE_ADDR": "10.1.1.2"}
    assert upload(api, **other).status_code == 201  # another client: not held back
    assert b"".join(first.streaming_content) == PNG  # done: given back
    assert upload(api, **client).status_code == 201


def test_a_failing_storage_is_503_naming_it(api, storage_dir, settings, tmp_path):
    stored = upload(api).json()["id"]
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the storage's directory should be")
    use_directory(settings, blocker)
    response = upload(api)
    assert response.status_code == 503, response.content
    assert response.json()["reason"] == "JOB_FILES_STORAGE" and response.json()["storage"] == "job_files"
    assert str(tmp_path) not in response.content.decode()  # no server path in the answer
    assert jobs.uploaded_bytes() == len(PNG)  # the earlier upload's only
    download = api.get(f"/files/{stored}")
    assert download.status_code == 503 and download.json()["reason"] == "JOB_FILES_STORAGE"


def test_the_body_limits_let_uploads_through_and_nothing_else(api, storage_dir, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    settings.BODY_MEMORY_BUDGET, settings.LARGE_BODY_BYTES = 10_000, 1_000
    big = b"\x89PNG\r\n\x1a\n" + b"p" * 50_000
    assert upload(api, big).status_code == 201
    assert api.post("/factorize", {"number": "1" * 50_000}, format="json").status_code == 413


def test_a_logged_in_browser_uploads_with_its_csrf_header_and_not_without(storage_dir, django_user_model):
    from rest_framework.test import APIClient

    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(django_user_model.objects.create_user("alice", password="pw-for-alice"))
    browser.cookies["csrftoken"] = "c" * 32
    refused = upload(browser)
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    created = upload(browser, HTTP_X_CSRFTOKEN="c" * 32)
    assert created.status_code == 201, created.content
    user = django_user_model.objects.get(username="alice")
    assert files.lookup(file_id=created.json()["id"]).owner == f"user-{user.pk}"
    blob = storage_dir / "blobs" / hashlib.sha256(PNG).hexdigest()
    assert left_on_disk(storage_dir) == [str(blob.parent), str(blob)]  # the refused body was never read


# --- Over the real server ---------------------------------------------------------------------


@contextmanager
def served_with_storage(tmp_path, **env):
    """The real web server, its file storage a directory in `tmp_path`."""
    with web_server(FILES_DIR=str(tmp_path / "files"), **env) as url:
        yield url


def test_a_client_that_goes_away_mid_upload_leaves_nothing_on_the_real_server(tmp_path, redis_conn):
    with served_with_storage(tmp_path) as url:
        body, content_type = multipart(b"w" * 3 * MIB)
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            head = f"POST /files HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body[:MIB])
            wait_until(lambda: jobs.uploaded_bytes() > 0, what="the server to take the upload in")
        wait_until(lambda: jobs.uploaded_bytes() == 0, what="the cut upload's charge to be given back")
        assert not (tmp_path / "files" / "blobs").exists()
        ok = requests.post(f"{url}/files", files={"file": ("a.txt", b"fine", "text/plain")}, timeout=10)
        assert ok.status_code == 201, ok.text
        assert [path.name for path in (tmp_path / "files" / "blobs").iterdir()] == [ok.json()["sha256"]]
        assert jobs.uploaded_bytes() == 4


def test_a_100_mb_upload_streams_through_a_web_process_of_bounded_memory(tmp_path, redis_conn):
    size = 100 * MIB
    chunk = os.urandom(MIB)
    body = RepeatedUpload(chunk, size // MIB)
    with served_with_storage(tmp_path) as url:
        pid = server_pid(url)
        requests.get(f"{url}/files/file_{'0' * 32}", timeout=10)  # the view's modules imported
        idle = resident_bytes(pid)
        headers = {"Content-Type": body.content_type}
        created, peak = peak_resident_while(
            pid, lambda: requests.post(f"{url}/files", data=body, headers=headers, timeout=120), every=0.05
        )
        assert created.status_code == 201, created.text
        assert created.json()["size"] == size
        assert peak - idle < 40 * MIB, (idle, peak)  # far below the 100 MiB it carried
        digest = hashlib.sha256()
        with requests.get(created.json()["url"], stream=True, timeout=120) as got:
            assert got.headers["Content-Length"] == str(size)
            for piece in got.iter_content(MIB):
                digest.update(piece)
        assert digest.hexdigest() == created.json()["sha256"] == hashlib.sha256(chunk * 100).hexdigest()
        head = requests.head(created.json()["url"], timeout=10)
        assert head.status_code == 200 and head.headers["Content-Length"] == str(size) and not head.content
        assert json.loads(requests.get(f"{url}/files/{created.json()['id']}x", timeout=10).text)["detail"]
