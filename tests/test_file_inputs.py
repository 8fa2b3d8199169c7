"""Files in jobs' inputs (`/digits` `image`): a data: URI, a URL the service fetches, an upload's id
or URL; the same bytes the same job, however given; hostile files and URLs refused naming the field."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import struct
import time
import zlib
from collections.abc import Iterator

import pytest

from factorize_app.jobs import file_inputs, files
from factorize_app.tasks import get_task_type
from tests.conftest import wait_done
from tests.processes import http_server

Image = pytest.importorskip("PIL.Image")

ANONYMOUS = "address-127.0.0.1"  # the in-process test client, as the API knows it


def digit_png(fmt: str = "PNG", size: int = 64) -> bytes:
    """A plain, legible 1: a dark bar on white paper."""
    image = Image.new("L", (size, size), 255)
    for y in range(size // 8, size - size // 8):
        for x in range(size // 2 - size // 16, size // 2 + size // 16):
            image.putpixel((x, y), 0)
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def data_uri(data: bytes, content_type: str = "image/png") -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


@pytest.fixture
def storage_dir(settings, tmp_path):
    """A directory of the test's own as the file storage (the web side only: no worker reads it)."""
    backend = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "f")}}
    settings.STORAGES = {**settings.STORAGES, "job_files": backend}
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    return tmp_path / "f"


class Files(http.server.BaseHTTPRequestHandler):
    """A file server on a loopback address: what a client's URL may point at."""

    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            for _ in range(100):  # a byte every 0.2 s: never done within the test's timeout
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.2)
            return
        status, headers, body = self.routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def file_server() -> Iterator[str]:
    Files.routes = {}
    with http_server(Files) as url:
        yield url.removeprefix("http://")


def serve(path: str, body: bytes, content_type: str = "image/png", status: int = 200, **headers: str) -> None:
    Files.routes[path] = (status, {"Content-Type": content_type, **headers}, body)


def post_digits(api, **body):
    return api.post("/digits", body, format="json")


def stored_input(api, job_id: str) -> dict:
    return api.get(f"/jobs/{job_id}").json()["image"]


# --- the three forms, one job -----------------------------------------------------------------


def test_the_same_image_by_data_uri_url_and_upload_is_the_same_job(api, storage_dir, settings, file_server):
    png = digit_png()
    settings.FILE_URL_ALLOWED_HOSTS = [file_server]
    serve("/one.png", png)
    upload = files.store(chunks=[png], content_type="image/png", name="mine.png", owner=ANONYMOUS, ttl=60,
                         max_bytes=1 << 20)  # fmt: skip
    answers = [
        post_digits(api, image=data_uri(png)),
        post_digits(api, image=f"http://{file_server}/one.png"),
        post_digits(api, image=upload.id),
        post_digits(api, image=f"http://testserver/files/{upload.id}"),  # the upload's URL on this service
    ]
    assert {answer.status_code for answer in answers} == {202}, [a.content for a in answers]
    assert len({answer.json()["job_id"] for answer in answers}) == 1
    image = answers[0].json()["image"]
    assert image == {"sha256": hashlib.sha256(png).hexdigest(), "size": len(png), "content_type": "image/png",
                     "name": ""}  # fmt: skip
    assert [path.name for path in (storage_dir / "blobs").iterdir()] == [image["sha256"]]


def test_a_queued_jobs_input_is_kept_past_the_job_and_its_result(api, storage_dir, redis_conn):
    png = digit_png(size=48)
    job_id = post_digits(api, image=data_uri(png)).json()["job_id"]
    kept_until = redis_conn.zscore(files.keys.FILE_BLOBS, hashlib.sha256(png).hexdigest())
    digits = get_task_type("digits")
    needed = digits.setting("job_ttl") + digits.setting("job_timeout") + digits.setting("result_ttl")
    assert kept_until >= time.time() + needed - 5, job_id


def test_a_percent_encoded_data_uri_is_read_as_its_bytes(api, storage_dir):
    jpeg = digit_png("JPEG")
    encoded = "".join(f"%{byte:02X}" for byte in jpeg)
    answer = post_digits(api, image=f"data:image/jpeg,{encoded}")
    assert answer.status_code == 202, answer.content
    assert answer.json()["image"]["sha256"] == hashlib.sha256(jpeg).hexdigest()


def test_exactly_one_of_pixels_and_image_is_taken(api, storage_dir):
    for body in ({}, {"pixels": [0] * 64, "image": data_uri(digit_png())}):
        answer = api.post("/digits", body, format="json")
        assert answer.status_code == 400
        assert set(answer.json()) == {"pixels", "image"}, answer.json()


def test_a_batch_takes_files_and_refuses_a_bad_one_alone(api, storage_dir):
    items = [{"image": data_uri(digit_png())}, {"image": data_uri(b"not an image")}, {"pixels": [0] * 64}]
    results = api.post("/digits/batch", {"items": items}, format="json").json()["results"]
    assert [item["status"] for item in results] == ["queued", "invalid", "queued"]
    assert "image" in results[1]["errors"]


# --- refusals, each a 400 naming the field (413 naming the limit) -----------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims the given size, with a few bytes of data: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + data + chunk(b"IEND", b"")


def gif() -> bytes:
    out = io.BytesIO()
    Image.new("L", (16, 16), 255).save(out, "GIF")
    return out.getvalue()


def blank_png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (40, 40), 200).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (data_uri(gif(), "image/gif"), "image/png or image/jpeg is expected, not image/gif"),
        (data_uri(gif()), "claims to be image/png but its bytes are image/gif"),
        (data_uri(digit_png("JPEG")), "claims to be image/png but its bytes are image/jpeg"),
        (data_uri(b"just text"), "not a readable one"),
        (data_uri(digit_png(size=300)[:-40]), "damaged"),
        (data_uri(digit_png("JPEG", size=300)[:-300], "image/jpeg"), "damaged"),
        (data_uri(png_claiming(100_000, 100_000)), "too large"),
        (data_uri(png_claiming(6_000, 5_000)), "too large: 6000x5000 pixels"),
        (data_uri(blank_png()), "blank"),
        ("data:image/png;base64,@@@@", "base64 is not valid"),
        ("data:image/png;base64", "Not a valid data: URI"),
        ("ftp://example.com/x.png", "A file is required"),
        (12, "A file is required"),
        ("file_" + "0" * 32, "No such file"),
    ],
    ids=[
        "gif-declared",
        "gif-as-png",
        "jpeg-as-png",
        "text",
        "truncated",
        "truncated-jpeg",
        "bomb",
        "bomb-6000",
        "blank",
        "base64",
        "no-comma",
        "ftp",
        "number",
        "unknown-upload",
    ],  # fmt: skip
)
def test_a_file_that_is_not_a_usable_image_is_refused_naming_the_field(api, storage_dir, value, says):
    answer = post_digits(api, image=value)
    assert answer.status_code == 400, answer.content
    (message,) = answer.json()["image"]
    assert says in message
    assert not (storage_dir / "blobs").exists()  # nothing refused was stored


def test_a_file_over_the_limit_is_a_413_naming_it(api, storage_dir, settings, file_server):
    settings.FILE_INPUT_MAX_BYTES = 1000
    settings.FILE_URL_ALLOWED_HOSTS = [file_server]
    big = digit_png(size=400) + b"\0" * 1000
    serve("/big.png", big)
    for value in (data_uri(big), f"http://{file_server}/big.png"):
        answer = post_digits(api, image=value)
        assert answer.status_code == 413, answer.content
        assert answer.json()["limit"] == "FILE_INPUT_MAX_BYTES" and "1000 bytes" in answer.json()["image"][0]


def test_an_upload_of_another_client_is_as_missing(api, storage_dir, key):
    png = digit_png()
    theirs = files.store(chunks=[png], content_type="image/png", name="x.png", owner="someone-else", ttl=60,
                         max_bytes=1 << 20)  # fmt: skip
    answer = api.post("/digits", {"image": theirs.id}, format="json", **key("me"))
    assert answer.status_code == 400 and "No such file" in answer.json()["image"][0]


# --- the handler's side ---------------------------------------------------------------------


def test_the_handler_receives_a_local_path_holding_the_bytes(storage_dir):
    png = digit_png()
    stored = files.store(chunks=[png], content_type="image/png", name="", owner="", ttl=60, max_bytes=1 << 20)
    identity = {"sha256": stored.sha256, "size": len(png), "content_type": "image/png", "name": ""}
    with file_inputs.local_inputs(get_task_type("digits"), [{"image": identity}]) as (data,):
        assert data["image"].read_bytes() == png


def test_an_image_is_classified_through_the_queue(api, warm_worker):
    """The worker reads the stored file by its path (the default storage, shared with the worker)."""
    pytest.importorskip("sklearn", reason="the digits requirements are not installed")
    from factorize_app.tasks.digits import model
    from tests.test_digit_images import RENDERINGS, rendered

    warm_worker("digits")
    _, test_x, _, test_y = model.held_out_split()
    for index in range(3):
        image = rendered(test_x[index], *RENDERINGS[1]).getvalue()  # a JPEG
        done = wait_done(api, "/digits", timeout=60, image=data_uri(image, "image/jpeg"))
        assert done["status"] == "finished" and done["digit"] == int(test_y[index]), done


def test_an_upload_through_post_files_is_classified(api, warm_worker):
    """POST /files (the files API) then /digits with the upload's id, end to end."""
    pytest.importorskip("sklearn", reason="the digits requirements are not installed")
    from factorize_app.tasks.digits import model
    from tests.test_digit_images import RENDERINGS, rendered

    _, test_x, _, test_y = model.held_out_split()
    image = rendered(test_x[5], *RENDERINGS[0]).getvalue()
    upload = api.post("/files", {"file": io.BytesIO(image)}, format="multipart")
    assert upload.status_code == 201, upload.content
    warm_worker("digits")
    done = wait_done(api, "/digits", timeout=60, image=upload.json()["id"])
    assert done["status"] == "finished" and done["digit"] == int(test_y[5]), done


def test_a_storage_that_fails_is_a_503_naming_it(api, settings, tmp_path):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the storage's directory should be")
    backend = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(blocked)}}
    settings.STORAGES = {**settings.STORAGES, "job_files": backend}
    answer = post_digits(api, image=data_uri(digit_png()))
    assert answer.status_code == 503 and answer.json()["storage"] == "job_files", answer.content


def test_sync_mode_hands_the_handler_a_local_path(redis_conn):
    """EXECUTION_MODE=sync: the image is stored at submit and read by the pool's process."""
    pytest.importorskip("sklearn", reason="the digits requirements are not installed")
    import requests

    from tests.conftest import web_server

    with web_server(EXECUTION_MODE="sync") as url:
        answer = requests.post(f"{url}/digits", json={"image": data_uri(digit_png(size=96))}, timeout=120)
    assert answer.status_code == 200 and "error" not in answer.json(), answer.text
    assert answer.json()["digit"] == 1 and answer.json()["image"]["content_type"] == "image/png"


def test_polling_by_resubmitting_stores_the_bytes_once(api, storage_dir, redis_conn):
    body = {"image": data_uri(digit_png(size=72))}
    answers = [api.post("/digits", body, format="json").json() for _ in range(3)]
    assert len({answer["job_id"] for answer in answers}) == 1
    assert len(redis_conn.keys(files.keys.file_record("*"))) == 1  # one record, not one per poll


def test_a_field_for_any_file_takes_bytes_no_image_reader_claims(tmp_path):
    """Only formats with a signature are sniffed: arbitrary bytes stay what their sender declared."""
    from factorize_app.tasks.fields import FileInput

    field = FileInput(content_types=("application/octet-stream", "text/csv"))
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 40)
    assert file_inputs._checked("data", field, path, "") == "application/octet-stream"
    path.write_bytes(b"a,b\n1,2\n")
    assert file_inputs._checked("data", field, path, "text/csv") == "text/csv"
    path.write_bytes(digit_png())
    with pytest.raises(file_inputs.FileRefused, match="claims to be text/csv but its bytes are image/png"):
        file_inputs._checked("data", field, path, "text/csv")


def test_a_batch_names_at_most_the_files_a_request_may(api, storage_dir, settings):
    settings.FILE_INPUTS_PER_REQUEST = 2
    items = [{"image": data_uri(digit_png(size=40 + index))} for index in range(3)]
    results = api.post("/digits/batch", {"items": items}, format="json").json()["results"]
    assert [item["status"] for item in results] == ["queued", "queued", "invalid"]
    assert "At most 2 files per request" in results[2]["errors"]["image"][0]


def test_held_out_digits_as_image_files_are_recognised_through_the_service(api, warm_worker):
    """96 held-out digits drawn as PNG and JPEG files of their own sizes, sent as data: URIs in
    batches, checked and stored by the web, read from storage by the worker: at least 90% right."""
    pytest.importorskip("sklearn", reason="the digits requirements are not installed")
    from factorize_app.tasks.digits import model
    from tests.test_digit_images import RENDERINGS, rendered

    warm_worker("digits")
    _, test_x, _, test_y = model.held_out_split()
    items = []
    for index in range(96):
        rendering = RENDERINGS[index % len(RENDERINGS)]
        content_type = "image/png" if rendering[2] == "PNG" else "image/jpeg"
        items.append({"image": data_uri(rendered(test_x[index], *rendering).getvalue(), content_type)})
    chunks = [items[start : start + 32] for start in range(0, len(items), 32)]

    def all_done():
        answers = [api.post("/digits/batch", {"items": chunk}, format="json").json()["results"] for chunk in chunks]
        results = [result for answer in answers for result in answer]
        return results if all(result["done"] for result in results) else None

    from tests.conftest import wait_until

    results = wait_until(all_done, timeout=90, interval=0.5, what="96 digit images")
    correct = sum(result.get("digit") == int(expected) for result, expected in zip(results, test_y, strict=False))
    assert correct / len(results) >= 0.9, correct


def test_a_job_enqueued_again_keeps_its_input_file(storage_dir, redis_conn):
    """A retry submits the stored input again (jobs/control.py): its file is kept afresh."""
    from factorize_app import jobs

    png = digit_png(size=56)
    stored = files.store(chunks=[png], content_type="image/png", name="", owner="", ttl=5, max_bytes=1 << 20)
    identity = {"sha256": stored.sha256, "size": len(png), "content_type": "image/png", "name": ""}
    jobs.submit(task_type=get_task_type("digits"), data={"image": identity}, client="c")
    assert redis_conn.zscore(files.keys.FILE_BLOBS, stored.sha256) > time.time() + 3600


