"""API keys in a real headless Chromium, on a server with REQUIRE_API_KEY=1: staff create a key
in the admin and see it once, revoke it there; the browsable API works for a logged-in user
(logged in on the admin's or the browsable API's own login page) and refuses an anonymous one.

Run with `pytest tests/browser -m browser`; screenshots land in test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from tests.browser.conftest import STAFF_PASSWORD, STAFF_USERNAME, StaffServer, _manage, screenshot
from tests.browser.test_ui import click_and_wait_for_new_page, post_html_form, response_shown, wait
from tests.conftest import service_env, wait_until, web_server

pytestmark = pytest.mark.browser

KEY_FORMAT = re.compile(r"fzk_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")


@pytest.fixture(scope="module")
def keyed_staff_server(redis_conn, tmp_path_factory) -> Iterator[StaffServer]:
    """The real web server requiring API keys, on a migrated SQLite database with one superuser."""
    database_url = f"sqlite:///{tmp_path_factory.mktemp('keyed-staff-db') / 'db.sqlite3'}"
    env = service_env(
        DATABASE_URL=database_url, DJANGO_SUPERUSER_USERNAME=STAFF_USERNAME, DJANGO_SUPERUSER_PASSWORD=STAFF_PASSWORD
    )
    _manage("migrate", "--noinput", env=env)
    _manage("ensure_superuser", env=env)
    with web_server(DATABASE_URL=database_url, REQUIRE_API_KEY="1", API_KEY_CACHE_SECONDS="1") as url:
        yield StaffServer(url, database_url, STAFF_USERNAME, STAFF_PASSWORD)


def log_in(browser, server: StaffServer, form_selector: str) -> None:
    form = wait(browser).until(EC.visibility_of_element_located((By.CSS_SELECTOR, form_selector)))
    form.find_element(By.NAME, "username").send_keys(server.username)
    form.find_element(By.NAME, "password").send_keys(server.password)
    click_and_wait_for_new_page(browser, form.find_element(By.CSS_SELECTOR, "[type=submit]"))


def submit_status(url: str, key: str | None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(f"{url}/factorize", json={"number": 408216}, headers=headers, timeout=10).status_code


def test_staff_create_a_key_see_it_once_and_revoke_it(fresh_browser, keyed_staff_server):
    browser, server = fresh_browser, keyed_staff_server
    browser.get(f"{server.url}/admin/factorize_app/apikey/add/")
    assert urlsplit(browser.current_url).path == "/admin/login/"
    log_in(browser, server, "#login-form")
    assert urlsplit(browser.current_url).path == "/admin/factorize_app/apikey/add/"
    browser.find_element(By.NAME, "name").send_keys("browser team")
    browser.find_element(By.NAME, "max_queued").send_keys("50")
    click_and_wait_for_new_page(browser, browser.find_element(By.NAME, "_save"))
    plaintext = browser.find_element(By.ID, "api-key-plaintext").text.strip()
    assert KEY_FORMAT.fullmatch(plaintext), plaintext
    assert "shown only this once" in browser.find_element(By.ID, "content-main").text
    screenshot(browser, "k1-api-key-created")

    assert submit_status(server.url, None) == 401
    assert submit_status(server.url, plaintext) == 202  # the key works (no worker: queued)

    browser.get(f"{server.url}/admin/factorize_app/apikey/")
    listing = browser.find_element(By.ID, "result_list").text
    prefix = plaintext.split("_")[1]
    assert "browser team" in listing and f"fzk_{prefix}_" in listing, listing
    assert plaintext not in browser.page_source, "the key is shown once, not in the list"
    screenshot(browser, "k2-api-key-list")

    browser.find_element(By.CSS_SELECTOR, "#result_list input.action-select").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("revoke")
    click_and_wait_for_new_page(browser, browser.find_element(By.CSS_SELECTOR, "button[name=index]"))
    assert "1 API key(s) revoked" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    screenshot(browser, "k3-api-key-revoked")
    wait_until(lambda: submit_status(server.url, plaintext) == 401, timeout=10, what="the revoked key to be refused")


def test_the_browsable_api_works_for_a_logged_in_user_when_keys_are_required(fresh_browser, keyed_staff_server):
    browser, server = fresh_browser, keyed_staff_server
    browser.get(f"{server.url}/factorize")
    status_line, body = response_shown(browser)
    assert status_line == "HTTP 401 Unauthorized", status_line
    assert "WWW-Authenticate: Bearer" in browser.find_element(By.CSS_SELECTOR, ".response-info").text
    screenshot(browser, "k4-browsable-api-refused")

    # The browsable API's own "Log in" link (DRF's login view at /api-auth/login/) brings the user back.
    click_and_wait_for_new_page(browser, browser.find_element(By.LINK_TEXT, "Log in"))
    assert urlsplit(browser.current_url).path == "/api-auth/login/"
    log_in(browser, server, "form#login-form, form[action*='login']")
    wait(browser).until(EC.url_to_be(f"{server.url}/factorize"))
    status_line, body = post_html_form(browser, 408216)  # a session POST, with the form's CSRF token
    assert status_line in ("HTTP 202 Accepted", "HTTP 200 OK"), (status_line, body)
    assert body["job_id"], body
    screenshot(browser, "k5-browsable-api-logged-in")
