"""The lean poll lane answers exactly what the DRF views answer, and leaves everything else to them."""

import requests

from tests.conftest import wait_until

DJANGO = {"Cookie": "lane=off"}  # any cookie sends a request through Django and DRF


def both(method: str, url: str, headers: dict | None = None, **kwargs) -> tuple[requests.Response, requests.Response]:
    lean = requests.request(method, url, timeout=10, headers=headers, **kwargs)
    full = requests.request(method, url, timeout=10, headers={**(headers or {}), **DJANGO}, **kwargs)
    return lean, full


def assert_same(lean: requests.Response, full: requests.Response) -> None:
    assert (lean.status_code, lean.json()) == (full.status_code, full.json())
    assert lean.headers.get("Location") == full.headers.get("Location")
    assert lean.headers.get("Retry-After") == full.headers.get("Retry-After")
    assert "Allow" not in lean.headers and "Allow" in full.headers  # the lane answered, then DRF
    # Every header Django's middleware and DRF add, the lane adds too (the server's own aside).
    server_headers = {"allow", "content-length", "date", "server", "connection", "keep-alive"}
    assert {k.lower(): v for k, v in lean.headers.items() if k.lower() not in server_headers} == {
        k.lower(): v for k, v in full.headers.items() if k.lower() not in server_headers
    }


def test_pending_and_done_answers_match_drf(live_url, start_worker):
    lean, full = both("POST", f"{live_url}/factorize", json={"number": 408216})
    assert lean.status_code == 202
    assert_same(lean, full)
    assert_same(*both("GET", f"{live_url}/jobs/{lean.json()['job_id']}"))
    start_worker("factorization", "failing")
    wait_until(lambda: requests.post(f"{live_url}/factorize", json={"number": 408216}, timeout=10).status_code == 200)
    assert_same(*both("POST", f"{live_url}/factorize/", json={"number": 408216}))
    assert_same(*both("GET", f"{live_url}/jobs/{lean.json()['job_id']}/"))
    wait_until(lambda: requests.post(f"{live_url}/failing", json={"tag": "t"}, timeout=10).status_code == 200)
    assert_same(*both("POST", f"{live_url}/failing", json={"tag": "t"}))


def test_integers_beyond_64_bits_in_and_out(live_url, warm_worker):
    warm_worker("factorization")
    prime = 2**127 - 1
    wait_until(lambda: requests.post(f"{live_url}/factorize", json={"number": prime}, timeout=10).status_code == 200)
    lean, full = both("POST", f"{live_url}/factorize", json={"number": str(prime)})
    assert_same(lean, full)
    assert lean.json()["factorization"] == [[prime, 1]]


def test_errors_and_browsers_fall_through_to_django(live_url):
    bad = requests.post(f"{live_url}/factorize", json={"number": "abc"}, timeout=10)
    assert bad.status_code == 400 and "number" in bad.json()
    assert (
        requests.post(
            f"{live_url}/factorize", data="{", timeout=10, headers={"Content-Type": "application/json"}
        ).status_code
        == 400
    )
    assert requests.get(f"{live_url}/jobs/factorization-{'0' * 32}", timeout=10).status_code == 404
    html = requests.post(f"{live_url}/factorize", json={"number": 5}, headers={"Accept": "text/html"}, timeout=10)
    assert html.status_code == 202 and html.headers["Content-Type"].startswith("text/html")


def test_an_api_clients_event_stream_takes_the_lane_with_the_views_answer(live_url, warm_worker):
    """`Accept: text/event-stream` alone: the lane answers with the stream view's events and
    headers (a done job's stream: its one done event, then the end); errors stay DRF's."""
    warm_worker("factorization")
    done = requests.post(f"{live_url}/factorize", json={"number": 9_191_919}, headers={"Prefer": "wait=10"}, timeout=20)
    assert done.json()["done"], done.text
    stream = {"Accept": "text/event-stream"}
    lean, full = both("GET", f"{live_url}/jobs/{done.json()['job_id']}", headers=stream)
    assert lean.status_code == full.status_code == 200
    assert lean.content == full.content and lean.content.count(b"event: status") == 1
    assert "Allow" not in lean.headers and "Allow" in full.headers  # the lane answered, then DRF
    server_headers = {"allow", "date", "server", "connection", "keep-alive", "transfer-encoding"}
    assert {k.lower(): v for k, v in lean.headers.items() if k.lower() not in server_headers} == {
        k.lower(): v for k, v in full.headers.items() if k.lower() not in server_headers
    }
    unknown = requests.get(f"{live_url}/jobs/factorization-{'0' * 32}", headers=stream, timeout=10)
    assert unknown.status_code == 404 and unknown.json()
    job_url = f"{live_url}/jobs/{done.json()['job_id']}"
    bad_id = requests.get(job_url, headers={**stream, "Last-Event-ID": "x"}, timeout=10)
    assert bad_id.status_code == 400 and "Last-Event-ID" in bad_id.json()
