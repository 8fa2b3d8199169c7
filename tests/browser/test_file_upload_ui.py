"""The browsable API's file fields in a real headless Chromium: `/digits` has a file chooser whose
file is uploaded (POST /files) and whose id fills the `image` field; the form then submits JSON-shaped
input as before, and the worker classifies the image."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from tests.browser.conftest import screenshot
from tests.browser.test_ui import click_and_wait_for_new_page, response_shown, wait
from tests.conftest import poll_until_done

pytestmark = pytest.mark.browser


def digit_file(tmp_path, index: int = 3):
    pytest.importorskip("sklearn", reason="the digits requirements are not installed")
    from factorize_app.tasks.digits import model
    from tests.test_digit_images import RENDERINGS, rendered

    _, test_x, _, test_y = model.held_out_split()
    path = tmp_path / "digit.png"
    path.write_bytes(rendered(test_x[index], *RENDERINGS[0]).getvalue())
    return path, int(test_y[index])


class StandInFiles(BaseHTTPRequestHandler):
    """POST /files as the files API answers it (FILES_CONTRACT.md), storing into the same storage
    and Redis as the server: for a branch the files API is not merged into yet. It allows the
    page's origin (CORS), as the real route needs not (same origin)."""

    def _cors(self) -> None:
        self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin", "*"))
        self.send_header("Access-Control-Allow-Headers", "Accept, X-CSRFToken")
        self.send_header("Access-Control-Allow-Methods", "POST")

    def do_OPTIONS(self):  # noqa: N802
        self.send_response(204)
        self._cors()
        self.end_headers()

    def do_POST(self):  # noqa: N802
        from factorize_app.jobs import files

        body = self.rfile.read(int(self.headers["Content-Length"]))
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body
        )
        (part,) = list(message.iter_parts())
        data = part.get_payload(decode=True)
        stored = files.store(chunks=[data], content_type=part.get_content_type(), name=part.get_filename() or "",
                             owner="address-127.0.0.1", ttl=600, max_bytes=10 << 20)  # fmt: skip
        answer = {"id": stored.id, "url": f"/files/{stored.id}", "sha256": stored.sha256, "size": stored.size,
                  "content_type": stored.content_type, "name": stored.name}  # fmt: skip
        payload = json.dumps(answer).encode()
        self.send_response(201)
        self._cors()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@contextmanager
def files_route(url: str) -> Iterator[str]:
    """The service's POST /files, or a stand-in for it where the files API is not on this branch."""
    if requests.post(f"{url}/files", timeout=10).status_code != 404:
        yield "/files"
        return
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInFiles)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/files"
    finally:
        server.shutdown()
        server.server_close()


def test_a_digit_image_chosen_in_the_form_is_uploaded_and_classified(
    fresh_browser, staff_server, warm_worker, tmp_path
):
    browser, url = fresh_browser, staff_server.url
    path, expected = digit_file(tmp_path)
    browser.get(f"{url}/digits")
    browser.find_element(By.CSS_SELECTOR, "a[name='html-tab']").click()
    form = wait(browser).until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#post-object-form form")))
    chooser = form.find_element(By.CSS_SELECTOR, "input[type=file][data-upload-for='image']")
    assert chooser.get_attribute("accept") == "image/png,image/jpeg"
    assert chooser.get_attribute("data-upload-url") == "/files"
    assert form.find_element(By.NAME, "pixels").get_attribute("value")  # prefilled with the example
    with files_route(url) as upload_url:
        browser.execute_script("arguments[0].dataset.uploadUrl = arguments[1]", chooser, upload_url)
        chooser.send_keys(str(path))
        status = form.find_element(By.CSS_SELECTOR, "[data-upload-status='image']")
        wait(browser).until(lambda _: status.text.startswith(("Uploaded", "Upload refused", "Upload failed")))
    screenshot(browser, "f1-digits-file-chosen")
    assert status.text.startswith("Uploaded"), status.text
    upload_id = form.find_element(By.NAME, "image").get_attribute("value")
    assert upload_id.startswith("file_") and upload_id in status.text
    assert form.find_element(By.NAME, "pixels").get_attribute("value") == ""  # the example made way
    click_and_wait_for_new_page(browser, form.find_element(By.CSS_SELECTOR, ".form-actions button"))
    status_line, body = response_shown(browser)
    assert status_line.startswith("HTTP 202") and body["image"]["content_type"] == "image/png", body
    screenshot(browser, "f2-digits-image-submitted")
    warm_worker("digits")
    done = poll_until_done(lambda: requests.post(f"{url}/digits", json={"image": upload_id}, timeout=30), timeout=60)
    assert done["job_id"] == body["job_id"] and done["digit"] == expected, done


def test_a_data_uri_typed_in_the_form_is_taken(fresh_browser, staff_server, tmp_path):
    """The text field takes the other forms too (no upload needed): a data: URI of a PNG."""
    import base64

    browser, url = fresh_browser, staff_server.url
    path, _ = digit_file(tmp_path, 4)
    browser.get(f"{url}/digits")
    browser.find_element(By.CSS_SELECTOR, "a[name='html-tab']").click()
    form = wait(browser).until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#post-object-form form")))
    browser.execute_script(
        "arguments[0].value = arguments[1]; arguments[2].value = '';",
        form.find_element(By.NAME, "image"),
        "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode(),
        form.find_element(By.NAME, "pixels"),
    )
    click_and_wait_for_new_page(browser, form.find_element(By.CSS_SELECTOR, ".form-actions button"))
    status_line, body = response_shown(browser)
    assert status_line.startswith("HTTP 202") and body["image"]["size"] == path.stat().st_size, body
