"""Files and large results as outputs (issue 32): stored outside Redis by real workers, answered
as links, read back by the job's owners only, gone when the result expires, never a job lost to a
failing storage.

GET /files/<id> is the files API's (api/files.py); where it is not served, the tests that fetch by
URL check the stored bytes through the job service instead and skip only the fetch, saying so.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests

from factorize_app import jobs
from factorize_app.jobs import files, keys
from tests.conftest import ROOT, submit, wait_done, wait_until
from tests.processes import http_server
from tests.task_types import MIB, seeded_chunks

sys.path.insert(0, str(ROOT / "client"))
from factorize_client import downloads  # noqa: E402 (the checkout's copy)
from factorize_client.errors import ClientError  # noqa: E402
from factorize_client.transport import Transport  # noqa: E402

FILE_FIELDS = {"url", "id", "name", "size", "content_type", "sha256"}


def digest_of(seed: str, size: int) -> str:
    digest = hashlib.sha256()
    for chunk in seeded_chunks(seed, size):
        digest.update(chunk)
    return digest.hexdigest()


def stored_digest(sha256: str) -> str:
    digest = hashlib.sha256()
    with files.open_blob(sha256=sha256) as blob:
        while chunk := blob.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def keys_bytes(redis_conn) -> int:
    """What every key of the test database takes in Redis (MEMORY USAGE, summed)."""
    return sum(redis_conn.memory_usage(key, samples=0) or 0 for key in redis_conn.scan_iter(count=1000))


def used_memory(redis_conn) -> int:
    return int(redis_conn.info("memory")["used_memory"])


def test_a_100_mb_file_is_fetched_by_url_while_redis_memory_stays_flat(live_url, warm_worker, redis_conn):
    warm_worker("file_out")
    seed, size = uuid.uuid4().hex, 100 * MIB
    before_server, before_keys = used_memory(redis_conn), keys_bytes(redis_conn)
    body = {"size": size, "seed": seed}
    answer = requests.post(f"{live_url}/file-out", json=body, headers={"Prefer": "wait=60"}, timeout=90)
    assert answer.status_code == 200, answer.text  # the lean lane's answer: a plain API client
    done = answer.json()
    assert done["status"] == "finished", done
    made = done["file"]
    assert set(made) == FILE_FIELDS
    assert made["size"] == size and made["content_type"] == "application/x-test" and made["name"] == f"{seed}.bin"
    assert made["sha256"] == digest_of(seed, size)
    assert made["url"] == f"{live_url}/files/{made['id']}"
    # Redis holds the reference only: the job's keys take kilobytes, the server's memory is flat.
    assert keys_bytes(redis_conn) - before_keys < 64 * 1024
    assert used_memory(redis_conn) - before_server < 16 * MIB
    assert stored_digest(made["sha256"]) == made["sha256"]
    # The DRF view answers the same object.
    polled = requests.get(f"{live_url}/jobs/{done['job_id']}", headers={"Accept": "text/html"}, timeout=30)
    assert made["url"] in polled.text
    try:
        with requests.get(made["url"], stream=True, timeout=60) as response:
            assert response.status_code == 200
            assert response.headers["Content-Type"].startswith("application/x-test")
            digest, got = hashlib.sha256(), 0
            for chunk in response.iter_content(MIB):
                digest.update(chunk)
                got += len(chunk)
        assert (got, digest.hexdigest()) == (size, made["sha256"])
    finally:
        files.remove_expired(now=time.time() + 10**9)  # 100 MB less on this disk


def test_every_answer_shows_a_file_with_its_absolute_url(live_url, warm_worker):
    warm_worker("file_out")
    body = {"size": 2000, "seed": uuid.uuid4().hex, "given_as": "path"}
    waited = requests.post(f"{live_url}/file-out", json=body, headers={"Prefer": "wait=30"}, timeout=60).json()
    made = waited["file"]  # the lean lane's long poll
    assert made["url"] == f"{live_url}/files/{made['id']}" and made["name"] == f"{body['seed']}.bin"
    assert made["content_type"] == "application/octet-stream"  # the field's: a bare path says none
    job_id = waited["job_id"]
    assert requests.get(f"{live_url}/jobs/{job_id}", timeout=30).json()["file"] == made  # the lean lane's poll
    batch = requests.post(f"{live_url}/file-out/batch", json={"items": [body]}, timeout=30).json()  # DRF's
    assert batch["results"][0]["file"] == made
    streamed = {"Accept": "text/event-stream"}
    with requests.get(f"{live_url}/jobs/{job_id}", headers=streamed, stream=True, timeout=30) as stream:
        data = next(line for line in stream.iter_lines() if line.startswith(b"data: "))
    assert json.loads(data.removeprefix(b"data: "))["file"] == made  # the event stream's final event


def test_a_webhooks_file_urls_start_with_public_url_else_they_are_paths(settings):
    from factorize_app.tasks import get_task_type

    reference = {"id": "file_" + "ab" * 16, "name": "x.bin", "size": 3, "content_type": "text/plain"}
    reference["sha256"] = "0" * 64
    state = jobs.JobState("file_out-" + "0" * 32, "file_out", jobs.FINISHED, {}, {"file": reference, "batch_size": 1})
    file_out = get_task_type("file_out")
    assert jobs.status_body(file_out, state)["file"]["url"] == f"/files/{reference['id']}"  # a webhook's, unset
    settings.PUBLIC_URL = "https://queue.example.com"
    for base in ("", "http://internal:8000"):
        shown = jobs.status_body(file_out, state, base_url=base)["file"]
        assert shown == {"url": f"https://queue.example.com/files/{reference['id']}", **reference}


def test_a_large_json_result_is_stored_as_a_file_and_redis_keeps_a_link(api, warm_worker, redis_conn):
    warm_worker("large_json")
    done = wait_done(api, "/large-json", kilobytes=5 * 1024)
    assert done["status"] == "finished" and done["values"] is None
    linked = done["result_file"]
    assert set(linked) == FILE_FIELDS and linked["content_type"] == "application/json"
    assert linked["size"] > 5 * MIB - 64 * 1024 and linked["url"] == f"http://testserver/files/{linked['id']}"
    job = keys.job(done["job_id"])
    assert len(redis_conn.hget(job, keys.OUTCOME_FIELD) or b"") < 1024
    assert redis_conn.memory_usage(keys.results(done["job_id"])) < 16 * 1024  # RQ's result entry: the link too
    with files.open_blob(sha256=linked["sha256"]) as blob:
        values = json.load(blob)["values"]
    assert values[:2] == [1_000_000, 1_000_001] and len(values) == 5 * 1024 * 1024 // 9
    response = api.get(f"/files/{linked['id']}")
    assert response.status_code == 200
    assert json.loads(b"".join(response.streaming_content))["values"] == values


def test_only_the_jobs_owners_read_its_files(api, key, warm_worker, redis_conn):
    warm_worker("file_out")
    alice, bob = key("alice"), key("bob")
    body = {"size": 1000, "seed": uuid.uuid4().hex, "given_as": "bytes"}
    done = wait_until(lambda: (b := api.post("/file-out", body, format="json", **alice).json())["done"] and b)
    made = done["file"]
    assert made["size"] == 1000 and made["name"] == "file.bin" and made["sha256"] == digest_of(body["seed"], 1000)
    stored = files.lookup(file_id=made["id"])
    assert (stored.owner, stored.job_id) == ("", done["job_id"])
    (alice_name,) = [member.decode() for member in redis_conn.smembers(keys.owners(done["job_id"]))]
    assert files.readable_by(stored, client=alice_name)
    assert not files.readable_by(stored, client="bob")
    assert api.get(f"/files/{made['id']}", **alice).status_code == 200
    assert api.get(f"/files/{made['id']}", **bob).status_code == 404
    assert api.get(f"/files/{made['id']}").status_code == 404
    # The same input from bob is the same job: he becomes one of its owners, and reads it too.
    assert api.post("/file-out", body, format="json", **bob).json()["file"]["id"] == made["id"]
    assert redis_conn.scard(keys.owners(done["job_id"])) == 2
    assert api.get(f"/files/{made['id']}", **bob).status_code == 200


def test_a_jobs_file_expires_with_its_result(api, warm_worker, redis_conn):
    warm_worker("short_file_out")  # RESULT_TTL 2 s
    done = wait_done(api, "/short-file-out", size=5000, seed=uuid.uuid4().hex, given_as="path")
    made = done["file"]
    assert 0 < redis_conn.ttl(keys.file_record(made["id"])) <= 2
    assert stored_digest(made["sha256"]) == made["sha256"]
    wait_until(lambda: not redis_conn.exists(keys.job(done["job_id"])), timeout=10, what="the result to expire")
    wait_until(lambda: not redis_conn.exists(keys.file_record(made["id"])), timeout=5, what="the file's record")
    with pytest.raises(files.FileNotFound):
        files.lookup(file_id=made["id"])

    def bytes_gone() -> bool:
        files.remove_expired()  # the sweep, as the workers' maintenance runs it (it may have been first)
        try:
            files.open_blob(sha256=made["sha256"]).close()
            return False
        except files.FileNotFound:
            return True

    wait_until(bytes_gone, timeout=10, what="the bytes to be swept")
    assert api.get(f"/files/{made['id']}").status_code == 404


def test_a_batch_handler_returns_a_file_for_each_item(api, start_worker):
    seeds = [uuid.uuid4().hex for _ in range(4)]
    inputs = [{"size": 1000 * (index + 1), "seed": seed, "given_as": "bytes"} for index, seed in enumerate(seeds)]
    for body in inputs:
        submit(api, "/file-out", **body)
    start_worker("file_out")  # after the submits: one batch for the four
    done = [wait_done(api, "/file-out", **body) for body in inputs]
    assert max(body["batch_size"] for body in done) > 1
    for index, (seed, body) in enumerate(zip(seeds, done, strict=True)):
        made = body["file"]
        assert made["size"] == 1000 * (index + 1) and made["sha256"] == digest_of(seed, made["size"])
        assert files.lookup(file_id=made["id"]).job_id == body["job_id"]
        assert stored_digest(made["sha256"]) == made["sha256"]
    assert len({body["file"]["id"] for body in done}) == 4


def test_a_storage_failing_while_recording_hands_the_job_back_and_loses_nothing(api, start_worker, tmp_path):
    blocker = tmp_path / "storage"
    blocker.write_text("a file where the storage's directory should be: every save fails")
    worker = start_worker("file_out", FILES_DIR=str(blocker / "files"), OUTPUT_STORE_RETRY_SECONDS="1")
    body = {"size": 3000, "seed": uuid.uuid4().hex, "given_as": "bytes"}
    job_id = submit(api, "/file-out", **body).json()["job_id"]
    wait_until(lambda: "handed back" in worker.log, timeout=30, what="the job handed back")
    assert api.get(f"/jobs/{job_id}").json()["status"] in ("queued", "started")  # not failed
    blocker.unlink()  # the storage is back
    done = wait_done(api, "/file-out", **body)
    assert done["status"] == "finished"
    made = done["file"]
    assert made["sha256"] == digest_of(body["seed"], 3000)
    stored = blocker / "files" / files.blob_name(made["sha256"])
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == made["sha256"]


def test_a_result_the_service_cannot_keep_fails_its_job_naming_why(api, warm_worker, settings):
    warm_worker("file_out", OUTPUT_FILE_MAX_BYTES="2000")
    done = wait_done(api, "/file-out", size=3000, seed=uuid.uuid4().hex, given_as="bytes")
    assert done["status"] == "failed"
    assert done["error"] == "OutputRefused: an output file may hold at most 2000 bytes (OUTPUT_FILE_MAX_BYTES)"


@pytest.mark.parametrize(
    ("result", "refusal"),
    [
        ({"file": "not a file", "batch_size": 1}, "result field 'file' is a file: give a pathlib.Path, bytes or an "
                                                  "OutputFile, not str"),
        ({"file": Path("/nonexistent/x.bin"), "batch_size": 1}, "result field 'file': no file at /nonexistent/x.bin"),
        ({"file": None, "batch_size": {1, 2}}, "the result is not JSON: Object of type set is not JSON serializable"),
    ],
)  # fmt: skip
def test_a_result_the_service_cannot_keep_is_refused_naming_why(result, refusal):
    from factorize_app.tasks import get_task_type

    with pytest.raises(jobs.OutputRefused) as refused:
        jobs.store_outputs(task_type=get_task_type("file_out"), job_id="", result=result, ttl=60)
    assert str(refused.value) == refusal


def test_sync_mode_stores_a_file_for_the_client_that_asked(api, settings, redis_conn):
    settings.EXECUTION_MODE = "sync"
    response = api.post("/file-out", {"size": 2000, "seed": uuid.uuid4().hex, "given_as": "bytes"}, format="json")
    assert response.status_code == 200, response.content
    made = response.json()["file"]
    assert set(made) == FILE_FIELDS and made["url"] == f"http://testserver/files/{made['id']}"
    stored = files.lookup(file_id=made["id"])
    assert stored.job_id == "" and stored.owner  # no job: the client that asked owns it
    assert stored_digest(made["sha256"]) == made["sha256"]


# --- the client: `factorize ... --download DIR` ------------------------------------------------


def test_the_client_saves_file_results_streamed_checked_and_never_over_another(live_url, warm_worker, tmp_path):
    warm_worker("file_out")
    seed = uuid.uuid4().hex
    given = json.dumps({"size": 3 * MIB, "seed": seed})
    command = [sys.executable, "-m", "factorize_app.client", "--url", live_url, "--type", "file-out", "--json", given]
    for _ in range(2):  # the same job twice: the second download is saved beside the first
        result = subprocess.run(
            [*command, "--download", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [f"{seed}-1.bin", f"{seed}.bin"]
    for path in (tmp_path / "out").iterdir():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest_of(seed, 3 * MIB)
    assert f"saved {tmp_path / 'out' / (seed + '-1.bin')}" in result.stderr


@pytest.mark.parametrize(
    ("name", "saved_as"),
    [("../../etc/passwd", "passwd"), ("..\\..\\boot.ini", "boot.ini"), (".bashrc", "bashrc"), ("a b?.png", "a_b_.png"),
     ("", "file_" + "a" * 32), ("/", "file_" + "a" * 32), ("ünï.txt", "_n_.txt")],
)  # fmt: skip
def test_a_served_name_is_made_safe_to_save(name, saved_as):
    assert downloads.safe_name(name, "file_" + "a" * 32) == saved_as


def test_a_download_is_saved_only_inside_its_directory_and_only_when_its_digest_matches(tmp_path):
    data = b"the bytes of a file result" * 1000
    good, bad = "file_" + "1" * 32, "file_" + "2" * 32

    class Files(BaseHTTPRequestHandler):  # the service's GET /files/<id>, as the client sees it
        def do_GET(self) -> None:
            self.send_response(200 if self.path in (f"/files/{good}", f"/files/{bad}") else 404)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    with http_server(Files) as url:
        transport = Transport(url)
        digest = hashlib.sha256(data).hexdigest()
        body = {"done": True, "out": {"id": good, "sha256": digest, "name": "../../escape.txt", "url": "http://x/"}}
        (found,) = downloads.files_in(body)
        saved = downloads.download(transport, found, tmp_path / "out")
        assert saved == tmp_path / "out" / "escape.txt" and saved.read_bytes() == data
        with pytest.raises(ClientError, match="do not match its sha256"):
            downloads.download(transport, {"id": bad, "sha256": "0" * 64, "name": "bad.bin"}, tmp_path / "out")
        assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["escape.txt"]
        assert [path.name for path in tmp_path.iterdir()] == ["out"]
