"""The front page: `/` tells a person what the service serves; API clients still get the JSON index."""

import html
import json
import shlex

import pytest
import requests
from django.test import override_settings

from factorize_app.tasks import task_types

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def front_page(api, **headers) -> str:
    response = api.get("/", HTTP_ACCEPT=BROWSER_ACCEPT, **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/html")
    return response.content.decode()


def test_the_front_page_lists_every_registered_type_with_its_description_and_examples(api):
    page = front_page(api)
    assert {"factorization", "primes", "digits"} <= {t.name for t in task_types()}
    for task_type in task_types():
        assert f'<a href="/{task_type.path}">/{task_type.path}</a>' in page, task_type.name
        assert html.escape(task_type.description) in page, task_type.name
        for field in task_type.input_fields:
            assert f"<code>{field}</code>" in page, (task_type.name, field)
        assert task_type.examples or task_type.name not in {"factorization", "primes", "digits"}
        for example in task_type.examples:
            shown = json.dumps(example, separators=(", ", ": "))
            assert html.escape(shown) in page, (task_type.name, shown)


def test_each_curl_line_posts_the_first_example_to_the_types_path(api):
    page = front_page(api)
    lines = [html.unescape(line) for line in page.splitlines() if "curl -X POST" in line]
    by_url = {}
    for line in lines:
        words = shlex.split(line.split('<pre class="curl">', 1)[1].removesuffix("</pre>").strip())
        by_url[words[3]] = words
    for task_type in (t for t in task_types() if t.examples):
        words = by_url[f"http://testserver/{task_type.path}"]
        assert words[words.index("-H") + 1] == "Content-Type: application/json"
        assert json.loads(words[words.index("-d") + 1]) == task_type.examples[0]


def test_the_front_page_links_the_docs_dashboards_and_tools(api):
    page = front_page(api)
    for href in ("/api/docs/", "/api/redoc/", "/api/schema/", "/django-rq/", "/admin/", "/queues", "/metrics", "/docs"):
        assert f'href="{href}"' in page, href


def test_json_clients_still_get_the_api_index(api):
    for accept in ("application/json", "*/*", None):
        headers = {"HTTP_ACCEPT": accept} if accept else {}
        response = api.get("/", **headers)
        assert response.status_code == 200 and response["Content-Type"] == "application/json", accept
        index = response.json()
        assert set(index) == {t.path for t in task_types()} | {"queues"}, index
        assert index["queues"] == "http://testserver/queues"


def test_the_real_server_answers_curl_with_json_and_a_browser_with_the_page(live_url):
    assert requests.get(f"{live_url}/", timeout=10).json()["factorize"] == f"{live_url}/factorize"
    page = requests.get(f"{live_url}/", headers={"Accept": BROWSER_ACCEPT}, timeout=10)
    assert page.ok and page.headers["Content-Type"].startswith("text/html")
    assert f"curl -X POST {live_url}/factorize" in html.unescape(page.text)


@pytest.mark.parametrize("path", ["/docs", "/docs/"])
def test_docs_redirects_to_the_api_docs(api, path):
    response = api.get(path)
    assert response.status_code == 302 and response["Location"] == "/api/docs/"


@override_settings(REQUIRE_API_KEY=True)
def test_with_keys_required_the_page_stays_open_and_the_index_does_not(api):
    page = front_page(api)
    assert "Authorization: Bearer $FACTORIZE_TOKEN" in html.unescape(page)
    refused = api.get("/", HTTP_ACCEPT="application/json")
    assert refused.status_code == 401 and "detail" in refused.json()


def test_a_bad_key_is_a_json_401_even_for_a_browser(api):
    response = api.get("/", HTTP_ACCEPT=BROWSER_ACCEPT, HTTP_AUTHORIZATION="Bearer fzk_nope")
    assert response.status_code == 401 and response["Content-Type"] == "application/json"
    assert "detail" in response.json()


HOSTILE_ACCEPTS = [
    BROWSER_ACCEPT,
    "text/html;q=abc",
    "text/html;q=2, application/json;q=-1",
    "text/html" + ";a=b" * 2000,
    ",".join(["text/html"] * 2000),
    "image/png",
    "text/h\u00e9ml",  # (control characters are refused by the HTTP server itself, before the service)
    "",
]


def test_hostile_requests_to_the_front_page_get_json_errors_never_a_5xx(live_url):
    """Every method, odd Accept headers and format overrides, on the real server: a page, the
    JSON index, or a JSON 4xx."""
    paths = ("/", "/?format=html", "/?format=json", "/?format=api", "/?format=" + "x" * 5000, "/docs", "/.html")
    with requests.Session() as http:
        for path in paths:
            for accept in HOSTILE_ACCEPTS:
                for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"):
                    response = http.request(
                        method,
                        live_url + path,
                        headers={"Accept": accept},
                        data=b"{",
                        timeout=30,
                        allow_redirects=False,
                    )
                    what = (method, path[:40], accept[:40], response.status_code)
                    assert response.status_code < 500, what
                    if response.status_code >= 400 and method != "HEAD":
                        assert response.headers["Content-Type"].startswith("application/json"), what
                        assert "detail" in response.json(), what
