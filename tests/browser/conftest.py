"""Fixtures for the real-browser tests: a headless Chromium driven by Selenium, and a server
with a staff login on its own temporary SQLite database.

Chromium and chromedriver come from the Debian packages (`scripts/ensure-chromium.sh`); they
are passed to Selenium explicitly so that Selenium Manager never tries to download a driver.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PYTHON, ROOT, service_env, web_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # we run as root in a container: the sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # No calls home: without these Chromium floods the closed network with refused connections.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
]

STAFF_USERNAME = "browser-staff"
STAFF_PASSWORD = "browser-staff-password-1"


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One headless Chromium for the whole run, with a fresh profile."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.skip(
            f"BROWSER TESTS SKIPPED: {', '.join(missing)} not installed; run scripts/ensure-chromium.sh (as root)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _forget_everything(browser) -> None:
    # Through DevTools: WebDriver's delete_all_cookies only reaches the current page's domain.
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})
    browser.execute_cdp_cmd("Network.clearBrowserCache", {})


@pytest.fixture
def fresh_browser(browser):
    """The session browser with no cookies (no login, no tab choice) left over from another test.

    Cookies ignore the port, so every test server on 127.0.0.1 would otherwise share them.
    """
    _forget_everything(browser)
    yield browser
    _forget_everything(browser)


def screenshot(browser, name: str, full_page: bool = False) -> Path:
    """Save a PNG of the current page under test-artifacts/screenshots/ and return its path.

    `full_page` captures the whole scrollable page (through DevTools), not just the window.
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    if full_page:
        size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = browser.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        path.write_bytes(base64.b64decode(shot["data"]))
    else:
        assert browser.save_screenshot(str(path)), f"could not save the screenshot {path}"
    return path


@dataclass(frozen=True)
class StaffServer:
    url: str
    database_url: str
    username: str
    password: str


def _manage(*args: str, env: dict[str, str]) -> None:
    result = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="session")
def staff_server(redis_conn, tmp_path_factory) -> Iterator[StaffServer]:
    """The real web server on a migrated temporary SQLite database holding one staff superuser."""
    database_url = f"sqlite:///{tmp_path_factory.mktemp('staff-db') / 'db.sqlite3'}"
    env = service_env(
        DATABASE_URL=database_url,
        DJANGO_SUPERUSER_USERNAME=STAFF_USERNAME,
        DJANGO_SUPERUSER_PASSWORD=STAFF_PASSWORD,
    )
    _manage("migrate", "--noinput", env=env)
    _manage("ensure_superuser", env=env)
    with web_server(DATABASE_URL=database_url) as url:
        yield StaffServer(url, database_url, STAFF_USERNAME, STAFF_PASSWORD)
