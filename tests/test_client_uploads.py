"""`factorize --type digits --file image=digit.png`: the file uploaded (POST /files, multipart, streamed
with its length), then the input submitted with the upload's id; run as a user runs it."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler

import pytest

from tests.conftest import ROOT
from tests.processes import http_server
from tests.test_client import lines, run_client

UPLOAD_ID = "file_" + "ab" * 16


class Service(BaseHTTPRequestHandler):
    """A stand-in service that records what the client sent: the upload and the submit."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Service.seen.append((self.path, dict(self.headers), body))
        if self.path == "/files":
            answer, status = {"id": UPLOAD_ID, "url": f"http://x/files/{UPLOAD_ID}"}, 201
        else:  # a batch: each item answered done
            done = {"done": True, "status": "finished", "job_id": "digits-" + "0" * 32}
            answer, status = {"results": [{**done, **item} for item in json.loads(body)["items"]]}, 200
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def service() -> Iterator[str]:
    Service.seen = []
    with http_server(Service) as url:
        yield url


def multipart_file(headers: dict[str, str], body: bytes) -> tuple[str, bytes]:
    """The `file` part's file name and bytes, read as a server reads multipart/form-data."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body)
    (part,) = list(message.iter_parts())
    assert part.get_param("name", header="content-disposition") == "file"
    return part.get_filename(), part.get_payload(decode=True)


def test_a_file_field_is_uploaded_then_its_id_submitted(service, tmp_path):
    image = tmp_path / "digit.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 1000)
    result = run_client(service, "--type", "/digits", "--file", f"image={image}", "--no-progress")
    assert result.returncode == 0, result.stderr
    (upload_path, upload_headers, upload_body), (submit_path, _, submit_body) = Service.seen
    assert upload_path == "/files" and submit_path == "/digits/batch"
    assert upload_headers["Content-Length"] == str(len(upload_body))  # sent with its length, not chunked
    assert multipart_file(upload_headers, upload_body) == ("digit.png", image.read_bytes())
    assert json.loads(submit_body) == {"items": [{"image": UPLOAD_ID}]}
    assert json.loads(lines(result.stdout)[0])["image"] == UPLOAD_ID


def test_file_fields_join_each_json_input(service, tmp_path):
    image = tmp_path / "d.jpg"
    image.write_bytes(b"\xff\xd8\xff" + b"x" * 100)
    result = run_client(service, "--type", "/x", "--json", '{"a": 1}', "--json", '{"a": 2}', "--file",
                        f"image={image}", "--no-progress")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [path for path, _, _ in Service.seen].count("/files") == 1  # one upload for both inputs
    items = [item for path, _, body in Service.seen if path == "/x/batch" for item in json.loads(body)["items"]]
    assert sorted(items, key=lambda item: item["a"]) == [{"a": 1, "image": UPLOAD_ID}, {"a": 2, "image": UPLOAD_ID}]


def test_a_missing_file_is_a_usage_error(service, tmp_path):
    result = run_client(service, "--type", "/digits", "--file", f"image={tmp_path / 'nope.png'}")
    assert result.returncode == 2 and "no file" in result.stderr and not Service.seen


def test_the_upload_body_is_read_a_chunk_at_a_time_and_rewinds(tmp_path):
    sys.path.insert(0, str(ROOT / "client"))  # the package's checkout copy, as the shim finds it
    from factorize_client.uploads import MultipartFile

    path = tmp_path / "big.bin"
    path.write_bytes(b"z" * 300_000)
    with MultipartFile(path) as body:
        first = b"".join(iter(lambda: body.read(8192), b""))
        assert len(first) == len(body)
        body.seek(0)
        assert body.read() == first


def test_an_image_uploaded_by_the_command_is_classified(live_url, warm_worker, tmp_path):
    """End to end on the real service: the command uploads through POST /files, then submits."""
    pytest.importorskip("sklearn", reason="the digits requirements are not installed")
    from factorize_app.tasks.digits import model
    from tests.test_digit_images import RENDERINGS, rendered

    warm_worker("digits")
    _, test_x, _, test_y = model.held_out_split()
    image = tmp_path / "digit.png"
    image.write_bytes(rendered(test_x[7], *RENDERINGS[0]).getvalue())
    result = run_client(live_url, "--type", "digits", "--file", f"image={image}", "--no-progress", "--timeout", "60")
    assert result.returncode == 0, result.stderr
    assert json.loads(lines(result.stdout)[0])["digit"] == int(test_y[7])
