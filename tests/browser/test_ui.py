"""The service's web pages in a real headless Chromium: the browsable API's form, the django-rq
dashboard behind the admin login, and the Swagger UI docs.

Run with `pytest tests/browser -m browser`; screenshots land in test-artifacts/screenshots/.
"""

from __future__ import annotations

import contextlib
import json
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import screenshot
from tests.conftest import wait_until

pytestmark = pytest.mark.browser

FACTORIZATION_408216 = "2^3 3^1 73^1 233^1"


def wait(browser, timeout: float = 15) -> WebDriverWait:
    return WebDriverWait(browser, timeout)


# --- The browsable API ----------------------------------------------------------------------


def response_shown(browser) -> tuple[str, dict]:
    """The HTTP status line and the JSON body the browsable API page shows."""
    text = browser.find_element(By.CSS_SELECTOR, ".response-info pre").text
    status_line = text.splitlines()[0]
    return status_line, json.loads(text[text.index("{") :])


def click_and_wait_for_new_page(browser, element) -> None:
    """Click something that loads a new page (a plain form submit) and wait until that page has loaded.

    A mark left on the old page's window tells the pages apart. (EC.staleness_of races with the
    navigation here: chromedriver 156 then fails with "Node with given id does not belong to the
    document" instead of reporting the element stale.)
    """
    browser.execute_script("window.__old_page = true")
    element.click()
    WebDriverWait(browser, 15, ignored_exceptions=(WebDriverException,)).until(
        lambda b: b.execute_script("return !window.__old_page && document.readyState === 'complete'"),
        message="the new page to load",
    )


def post_html_form(browser, number: int) -> tuple[str, dict]:
    """Fill the browsable API's HTML form (not the raw-data one), press POST, read the answer."""
    browser.find_element(By.CSS_SELECTOR, "a[name='html-tab']").click()
    form = wait(browser).until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#post-object-form form")))
    field = form.find_element(By.NAME, "number")
    field.clear()
    field.send_keys(str(number))
    click_and_wait_for_new_page(browser, form.find_element(By.CSS_SELECTOR, ".form-actions button"))
    request_line = browser.find_element(By.CSS_SELECTOR, ".request-info pre").text
    assert request_line == "POST /factorize", request_line
    return response_shown(browser)


def test_factorize_through_the_browsable_api_form(fresh_browser, staff_server, start_worker):
    browser, url = fresh_browser, staff_server.url
    browser.get(f"{url}/")  # the front page links each task type's form
    form_link = (By.CSS_SELECTOR, "#type-factorization a[href='/factorize']")
    link = wait(browser).until(EC.element_to_be_clickable(form_link))
    link.click()
    wait(browser).until(EC.url_to_be(f"{url}/factorize"))
    wait(browser).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, ".page-header h1"), "Factorization"))
    assert browser.find_element(By.NAME, "number").get_attribute("type") == "text"
    screenshot(browser, "a1-factorize-form")

    status_line, body = post_html_form(browser, 408216)
    assert status_line == "HTTP 202 Accepted", status_line
    assert body["done"] is False and body["status"] == "queued", body
    screenshot(browser, "a2-factorize-pending")

    start_worker("factorization", DATABASE_URL=staff_server.database_url)

    def done() -> bool:
        status_line, body = post_html_form(browser, 408216)
        return status_line == "HTTP 200 OK" and body["done"]

    wait_until(done, timeout=60, interval=0.3, what="the form's answer to say done")
    _, body = response_shown(browser)
    assert body["factorization_str"] == FACTORIZATION_408216, body
    assert FACTORIZATION_408216 in browser.find_element(By.CSS_SELECTOR, ".response-info").text
    screenshot(browser, "a3-factorize-done")


# --- The django-rq dashboard ----------------------------------------------------------------


def queue_counts(browser, queue: str) -> dict[str, int]:
    """One queue's row of the dashboard's table (django_rq/stats.html), by column heading."""
    table = browser.find_element(By.ID, "results_list")

    def text(element) -> str:  # textContent: the admin CSS upper-cases headings, and .text is what shows
        return " ".join(element.get_attribute("textContent").split())

    headings = [text(th) for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    for row in table.find_elements(By.CSS_SELECTOR, "tbody tr"):
        cells = [text(cell) for cell in row.find_elements(By.XPATH, "./th|./td")]
        if cells[0] == queue:
            return {
                heading: int(cell) for heading, cell in zip(headings[1:], cells[1:], strict=False) if cell.isdigit()
            }
    pytest.fail(f"no row for queue {queue!r} on the dashboard; rows: {table.text}")


def test_staff_watch_the_queue_drain_on_the_django_rq_dashboard(fresh_browser, staff_server, start_worker):
    browser, url = fresh_browser, staff_server.url
    browser.get(f"{url}/django-rq/")
    form = wait(browser).until(EC.visibility_of_element_located((By.ID, "login-form")))
    location = urlsplit(browser.current_url)
    assert location.path == "/admin/login/" and parse_qs(location.query) == {"next": ["/django-rq/"]}, location
    screenshot(browser, "b1-admin-login")

    form.find_element(By.NAME, "username").send_keys(staff_server.username)
    form.find_element(By.NAME, "password").send_keys(staff_server.password)
    click_and_wait_for_new_page(browser, form.find_element(By.CSS_SELECTOR, "input[type=submit]"))
    wait(browser).until(EC.url_to_be(f"{url}/django-rq/"))
    wait(browser).until(EC.presence_of_element_located((By.ID, "results_list")))
    names = {a.text.strip() for a in browser.find_elements(By.CSS_SELECTOR, "#results_list tbody tr > th:first-child")}
    assert {"factorization", "primes"} <= names, names

    numbers = [1001, 1002, 1003, 1004, 1005]
    for number in numbers:
        answer = requests.post(f"{url}/factorize", json={"number": number}, timeout=10)
        assert answer.status_code == 202, answer.text
    browser.refresh()
    before = queue_counts(browser, "factorization")
    assert before["Queued Jobs"] == len(numbers), before
    assert before["Finished Jobs"] == 0 and before["Workers"] == 0, before
    screenshot(browser, "b2-dashboard-queued")

    start_worker("factorization", DATABASE_URL=staff_server.database_url)

    def drained() -> dict[str, int] | None:
        browser.refresh()
        counts = queue_counts(browser, "factorization")
        return counts if counts["Queued Jobs"] == 0 and counts["Finished Jobs"] == len(numbers) else None

    after = wait_until(drained, timeout=60, interval=0.3, what="the dashboard to show the queue drained")
    assert after["Failed Jobs"] == 0 and after["Workers"] == 1, after
    screenshot(browser, "b3-dashboard-drained")


# --- The API docs (Swagger UI) --------------------------------------------------------------

EXPECTED_OPERATIONS = {
    ("POST", "/factorize"),
    ("POST", "/primes"),
    ("GET", "/jobs/{id}"),
    ("DELETE", "/jobs/{id}"),
    ("GET", "/queues"),
}


def operations_shown(browser) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation block Swagger UI rendered; a trailing slash is ignored."""
    shown = set()
    for block in browser.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock"):
        method = block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text.strip().upper()
        path_element = block.find_element(By.CSS_SELECTOR, ".opblock-summary-path")
        path = path_element.get_attribute("data-path") or path_element.text
        path = path.replace("\u200b", "").strip()  # Swagger UI puts zero-width spaces between segments
        shown.add((method, path.rstrip("/") or "/"))
    return shown


def test_api_docs_list_every_endpoint(fresh_browser, staff_server):
    browser, url = fresh_browser, staff_server.url
    browser.get(f"{url}/api/docs/")
    wait(browser, 30).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, ".swagger-ui .opblock-tag-section, .swagger-ui .opblock")),
        message="Swagger UI rendered no operations (is /api/docs/ served?)",
    )
    # With docExpansion "none" the tag sections start folded and render no operations: open them.
    for tag in browser.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock-tag[data-is-open='false']"):
        tag.click()

    with contextlib.suppress(TimeoutException):  # the assertion below says which operations are missing
        wait(browser, 15).until(lambda _: operations_shown(browser) >= EXPECTED_OPERATIONS)
    screenshot(browser, "c1-api-docs", full_page=True)
    shown = operations_shown(browser)
    assert shown >= EXPECTED_OPERATIONS, f"missing {sorted(EXPECTED_OPERATIONS - shown)}; shown {sorted(shown)}"
    # Served offline: every script and stylesheet comes from this server, none from a CDN.
    assets = browser.execute_script(
        "return [...document.querySelectorAll('script[src], link[rel=stylesheet]')].map(e => e.src || e.href)"
    )
    assert assets and all(asset.startswith(f"{url}/") for asset in assets), assets
