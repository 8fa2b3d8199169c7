"""The front page's live charts in a real headless Chromium: every task type's charts drawn from
/queues and /metrics, and moving as jobs are submitted and then run by a worker."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from factorize_app.tasks import task_types
from tests.browser.conftest import SCREENSHOTS, screenshot

pytestmark = pytest.mark.browser

SERIES = ("queued", "started", "workers", "throughput")
JOBS = 6


def chart(browser, task_type: str, series: str):
    return browser.find_element(By.CSS_SELECTOR, f'#live tr[data-type="{task_type}"] figure[data-series="{series}"]')


def number(figure, attribute: str) -> float:
    return float(figure.get_attribute(f"data-{attribute}") or "nan")


def line(figure) -> list[tuple[float, float]]:
    points = figure.find_element(By.CSS_SELECTOR, "polyline.line").get_attribute("points").split()
    return [tuple(map(float, point.split(","))) for point in points]


def close_up(browser, element, name: str, scale: float = 3) -> Path:
    """A PNG of one element, enlarged `scale` times (through DevTools)."""
    rect = browser.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.x, r.y, r.width, r.height]", element
    )
    clip = dict(zip(("x", "y", "width", "height"), rect, strict=True)) | {"scale": scale}
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True}
    )
    path = SCREENSHOTS / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def test_the_live_charts_render_and_move_when_jobs_are_submitted(fresh_browser, staff_server, start_worker):
    browser, url = fresh_browser, staff_server.url
    browser.get(f"{url}/")
    wait = WebDriverWait(browser, 60, poll_frequency=0.2)
    figures = browser.find_elements(By.CSS_SELECTOR, "#live figure.chart")
    assert len(figures) == len(task_types()) * len(SERIES)
    # Drawn: every chart has samples (jobs/s from the second answer of /metrics on).
    wait.until(lambda _: all(number(f, "count") >= 2 for f in figures))
    assert "Updated at" in browser.find_element(By.ID, "live-status").text
    queued, workers = chart(browser, "factorization", "queued"), chart(browser, "factorization", "workers")
    throughput = chart(browser, "factorization", "throughput")
    assert (number(queued, "last"), number(workers, "last"), number(throughput, "peak")) == (0, 0, 0)
    assert queued.find_element(By.CSS_SELECTOR, ".value").text == "0"

    # No worker yet: the jobs wait, and the queued chart climbs to them.
    for n in range(JOBS):
        assert requests.post(f"{url}/factorize", json={"number": 1_000_003 + n}, timeout=10).status_code == 202
    wait.until(lambda _: number(queued, "last") == JOBS)
    assert queued.find_element(By.CSS_SELECTOR, ".value").text == str(JOBS)
    (first_x, first_y), (last_x, last_y) = line(queued)[0], line(queued)[-1]
    assert first_x < last_x and last_y < first_y, "the line rises to the right"
    assert chart(browser, "primes", "queued").get_attribute("data-last") == "0", "other types stay flat"

    # A worker starts: it shows, the queue empties and the jobs ended per second rise.
    start_worker("factorization")
    wait.until(lambda _: number(workers, "last") == 1 and number(queued, "last") == 0)
    wait.until(lambda _: number(throughput, "peak") > 0)
    assert len({y for _, y in line(throughput)}) > 1, "its line leaves the zero line"
    wait.until(lambda _: number(chart(browser, "factorization", "started"), "count") >= 2)
    screenshot(browser, "live-front-page")
    close_up(browser, queued, "live-chart-factorization-queued", scale=4)
    close_up(browser, browser.find_element(By.CSS_SELECTOR, '#live tr[data-type="factorization"]'), "live-row", scale=2)
