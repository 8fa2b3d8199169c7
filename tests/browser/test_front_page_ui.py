"""The front page in a real headless Chromium: every task type shown, its links followed."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from factorize_app.tasks import task_types
from tests.browser.conftest import screenshot

pytestmark = pytest.mark.browser


def test_the_front_page_shows_every_task_type_and_leads_to_the_api_docs(fresh_browser, staff_server):
    browser, url = fresh_browser, staff_server.url
    browser.get(f"{url}/")
    WebDriverWait(browser, 15).until(EC.presence_of_element_located((By.CSS_SELECTOR, "section.task-type")))
    screenshot(browser, "f1-front-page", full_page=True)
    sections = {s.get_attribute("id"): s for s in browser.find_elements(By.CSS_SELECTOR, "section.task-type")}
    assert set(sections) == {f"type-{t.name}" for t in task_types()}
    for task_type in task_types():
        section = sections[f"type-{task_type.name}"]
        assert task_type.description in section.find_element(By.CSS_SELECTOR, ".description").text
        link = section.find_element(By.CSS_SELECTOR, "h3 a")
        assert link.get_attribute("href") == f"{url}/{task_type.path}"
        if task_type.examples:
            assert section.find_element(By.CSS_SELECTOR, "pre.curl").text.startswith(f"curl -X POST {url}/")
    browser.find_element(By.LINK_TEXT, "/docs").click()  # the short address, redirected
    WebDriverWait(browser, 15).until(EC.url_to_be(f"{url}/api/docs/"))
    WebDriverWait(browser, 30).until(EC.presence_of_element_located((By.CSS_SELECTOR, ".swagger-ui")))
