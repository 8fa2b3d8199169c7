"""The front page's live charts, as served: a chart per task type and series, the script that
draws them served as a static file, and the endpoints it reads (tests/browser/test_live_charts_ui.py
watches them move in a real browser)."""

import re

import requests

from factorize_app.api.front_page import LIVE_POLL_SECONDS, LIVE_SERIES, LIVE_WINDOW_SECONDS
from factorize_app.tasks import task_types
from tests.test_front_page import front_page


def test_the_page_has_a_chart_for_every_type_and_series(api):
    page = front_page(api)
    rows = re.findall(r'<tr data-type="([^"]+)">(.*?)</tr>', page, re.S)
    assert [name for name, _ in rows] == [t.name for t in task_types()]
    for _, row in rows:
        assert re.findall(r'figure class="chart" data-series="(\w+)"', row) == [name for name, _ in LIVE_SERIES]
        assert row.count("<svg") == row.count('<polyline class="line"') == len(LIVE_SERIES)


def test_the_charts_read_queues_and_metrics_every_few_seconds(api):
    page = front_page(api)
    (live,) = re.findall(r'<section id="live"[^>]*>', page)
    assert 'data-queues-url="/queues"' in live and 'data-metrics-url="/metrics"' in live
    assert f'data-poll-ms="{LIVE_POLL_SECONDS * 1000}"' in live
    assert f'data-samples="{LIVE_WINDOW_SECONDS // LIVE_POLL_SECONDS}"' in live
    for series, _ in LIVE_SERIES:  # every series but jobs/s is a field of /queues
        assert series == "throughput" or series in api.get("/queues").json()[0], series


def test_the_script_is_served_offline_from_the_apps_static_files(live_url):
    page = requests.get(f"{live_url}/", headers={"Accept": "text/html"}, timeout=10).text
    (src,) = re.findall(r'<script src="([^"]+live\.js)" defer>', page)
    script = requests.get(f"{live_url}{src}", timeout=10)
    assert script.ok and "javascript" in script.headers["Content-Type"]
    assert "factorize_job_duration_seconds_count" in script.text, "jobs/s from the counts that only grow"
    assert not re.search(r"https?://", script.text), "nothing fetched from elsewhere"
