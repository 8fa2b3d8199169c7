"""The browsable API's file fields in a real headless Chromium: `/digits` has a file chooser whose
file is uploaded (POST /files) and whose id fills the `image` field; the form then submits JSON-shaped
input as before, and the worker classifies the image."""

from __future__ import annotations

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
